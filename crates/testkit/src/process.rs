//! Running PostgreSQL programs as the right OS user, and the watchdog that removes a cluster
//! when the process that owns it goes away, however it goes.

use std::{
    io::Write,
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, ChildStdin, Command, Output, Stdio},
};

use nix::unistd::{Gid, Uid, User};

use crate::{Error, Result};

/// Who runs the server: ourselves, or (when we are root, which PostgreSQL refuses) an unprivileged user.
#[derive(Debug, Clone)]
pub(crate) struct RunAs {
    user: Option<(Uid, Gid)>,
}

impl RunAs {
    /// Ourselves when unprivileged; `PGOPS_PG_USER` (default `postgres`) when root.
    pub(crate) fn detect() -> Result<Self> {
        if !Uid::effective().is_root() {
            return Ok(RunAs { user: None });
        }
        let name = std::env::var("PGOPS_PG_USER").unwrap_or_else(|_| "postgres".to_owned());
        let user = User::from_name(&name)
            .ok()
            .flatten()
            .filter(|u| !u.uid.is_root())
            .ok_or_else(|| Error::NoServerUser { user: name.clone() })?;
        Ok(RunAs {
            user: Some((user.uid, user.gid)),
        })
    }

    /// A command that runs as the server user, in `cwd` (which that user can enter).
    pub(crate) fn command(&self, program: impl AsRef<std::ffi::OsStr>, cwd: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd).stdin(Stdio::null());
        // libpq in the tools must not pick up the caller's connection settings.
        for var in [
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGPASSWORD",
            "PGSERVICE",
            "PGOPTIONS",
        ] {
            cmd.env_remove(var);
        }
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        cmd
    }

    /// Gives a directory tree we created to the server user.
    pub(crate) fn own(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.user {
            nix::unistd::chown(path, Some(uid), Some(gid))
                .map_err(|e| Error::io(format!("chown {}", path.display()), e.into()))?;
        }
        Ok(())
    }
}

/// Runs a command to completion and turns a failure into an error carrying its output.
pub(crate) fn run(mut cmd: Command, what: &str) -> Result<Output> {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::io(format!("starting {what}"), e))?;
    if out.status.success() {
        Ok(out)
    } else {
        let mut output = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !stdout.trim().is_empty() {
            output.push('\n');
            output.push_str(stdout.trim());
        }
        Err(Error::Tool {
            program: what.to_owned(),
            status: out.status.to_string(),
            output,
        })
    }
}

/// A small `sh` process that waits for its stdin to close, then stops the cluster and (unless
/// the cluster is kept) removes its directory. We hold the only write end of that pipe, so it closes when we drop the
/// watchdog *or* when our process exits for any reason (panic, abort, SIGKILL): that is how a
/// cluster in a `static` that is never dropped is still cleaned up.
#[derive(Debug)]
pub(crate) struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    pub(crate) fn spawn(
        run_as: &RunAs,
        pg_ctl: &Path,
        data: &Path,
        root: &Path,
        remove: bool,
    ) -> Result<Self> {
        // A throwaway cluster stops at once; a kept one shuts down cleanly and stays.
        const SCRIPT: &str = r#"read -r _ignored
if [ "$4" = remove ]; then
  "$1" -D "$2" -m immediate -w -t 60 stop >/dev/null 2>&1
  rm -rf "$3"
else
  "$1" -D "$2" -m fast -w -t 120 stop >/dev/null 2>&1
fi
"#;
        let mut cmd = run_as.command("/bin/sh", Path::new("/"));
        cmd.arg("-c")
            .arg(SCRIPT)
            .arg("pgops-testkit-watchdog")
            .arg(pg_ctl)
            .arg(data)
            .arg(root)
            .arg(if remove { "remove" } else { "keep" })
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C that kills the tests must not kill the cleaner.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io("starting the cluster watchdog (/bin/sh)", e))?;
        let stdin = child.stdin.take();
        Ok(Watchdog { child, stdin })
    }

    /// Lets the watchdog run its cleanup now and waits for it.
    pub(crate) fn finish(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = self.child.wait();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.finish();
    }
}
