//! Running PostgreSQL programs as the right OS user, and the watchdog that removes a cluster
//! when the process that owns it goes away, however it goes.

use std::{
    ffi::OsStr,
    io::Write,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Output, Stdio},
};

use pgops_pg::ServerUser;

use crate::{Error, Result};

/// Who runs the server: the plumbing crate's [`ServerUser`] (ourselves, or under root an
/// unprivileged user).
pub(crate) type RunAs = ServerUser;

/// The last `lines` lines of a log file (empty when it cannot be read).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
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

/// A program that is not PostgreSQL's own (PgBouncer, Patroni, etcd): on `PATH`, or in
/// `fallback` (where Debian's `package` puts it).
pub(crate) fn find_tool(program: &str, package: &str, fallback: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .find(|p| p.is_file())
        })
        .or_else(|| Some(Path::new(fallback).join(program)).filter(|p| p.is_file()))
        .ok_or_else(|| Error::Tool {
            program: program.into(),
            status: "not found".into(),
            output: format!("install Debian's {package} package (cargo xtask ci installs it)"),
        })
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
    /// A watchdog that only removes `dir` (which the server user owns) when we go away.
    pub(crate) fn remove_dir(run_as: &RunAs, dir: &Path) -> Result<Self> {
        const SCRIPT: &str = "read -r _ignored\nrm -rf \"$1\"\n";
        Self::start(run_as, SCRIPT, &[dir.as_os_str()])
    }

    /// A watchdog that stops the daemon whose pid is in `dir/pid_file` (TERM, then KILL
    /// after 5 s), then removes `dir`: for PgBouncer and HAProxy.
    pub(crate) fn daemon(run_as: &RunAs, dir: &Path, pid_file: &str) -> Result<Self> {
        const SCRIPT: &str = r#"read -r _ignored
pidfile="$1/$2"
if [ -f "$pidfile" ]; then
  pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
  kill -KILL "$pid" 2>/dev/null
fi
rm -rf "$1"
"#;
        Self::start(run_as, SCRIPT, &[dir.as_os_str(), OsStr::new(pid_file)])
    }

    /// A watchdog for an HA cluster under `root`: kills every node's Patroni (so none
    /// restarts its server), stops every node's PostgreSQL, kills etcd, removes `root`.
    pub(crate) fn ha(run_as: &RunAs, root: &Path, pg_ctl: &Path) -> Result<Self> {
        const SCRIPT: &str = r#"read -r _ignored
for pidfile in "$1"/node*/patroni.pid; do
  [ -f "$pidfile" ] && kill -KILL "$(cat "$pidfile")" 2>/dev/null
done
for data in "$1"/node*/data; do
  [ -f "$data/postmaster.pid" ] && "$2" -D "$data" -m immediate -w -t 60 stop >/dev/null 2>&1
done
[ -f "$1/etcd/etcd.pid" ] && kill -KILL "$(cat "$1/etcd/etcd.pid")" 2>/dev/null
rm -rf "$1"
"#;
        Self::start(run_as, SCRIPT, &[root.as_os_str(), pg_ctl.as_os_str()])
    }

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
        let mode = OsStr::new(if remove { "remove" } else { "keep" });
        Self::start(
            run_as,
            SCRIPT,
            &[pg_ctl.as_os_str(), data.as_os_str(), root.as_os_str(), mode],
        )
    }

    /// Runs `script` (which begins by waiting for its stdin to close) in `sh` as the server
    /// user, with `args` as `$1`, `$2`, ...
    fn start(run_as: &RunAs, script: &str, args: &[&OsStr]) -> Result<Self> {
        let mut cmd = run_as.command("/bin/sh", Path::new("/"));
        cmd.arg("-c")
            .arg(script)
            .arg("pgops-testkit-watchdog")
            .args(args)
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
