//! The operating-system side of running PostgreSQL: the OS user the server runs as (never
//! root, which PostgreSQL refuses), whether that user can reach a path, and free ports.

use std::{
    ffi::OsStr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use nix::unistd::{Gid, Uid, User};

use crate::{Error, Result};

/// Who runs PostgreSQL programs: ourselves when unprivileged, or, when we are root, the
/// unprivileged `PGOPS_PG_USER` (default `postgres`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUser {
    user: Option<(String, Uid, Gid)>,
    /// Its home directory, which its programs see as `HOME` (libpq looks there for
    /// `~/.postgresql/` client certificates and `~/.pgpass`, and must not look in ours).
    home: Option<PathBuf>,
}

impl ServerUser {
    /// Ourselves when unprivileged; `PGOPS_PG_USER` (default `postgres`) when root. A root
    /// process without such a user gets an error naming the fix.
    pub fn detect() -> Result<Self> {
        if !Uid::effective().is_root() {
            return Ok(ServerUser {
                user: None,
                home: None,
            });
        }
        let name = std::env::var("PGOPS_PG_USER").unwrap_or_else(|_| "postgres".to_owned());
        let user = User::from_name(&name)
            .ok()
            .flatten()
            .filter(|u| !u.uid.is_root())
            .ok_or_else(|| Error::NoServerUser { user: name.clone() })?;
        Ok(ServerUser {
            home: Some(user.dir.clone()),
            user: Some((name, user.uid, user.gid)),
        })
    }

    /// The other user's name, when programs run as someone else than us.
    pub fn name(&self) -> Option<&str> {
        self.user.as_ref().map(|(name, _, _)| name.as_str())
    }

    /// A command that runs `program` as the server user in `cwd` (which that user can enter),
    /// with no stdin and without the caller's libpq environment.
    pub fn command(&self, program: impl AsRef<OsStr>, cwd: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd).stdin(Stdio::null());
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
        if let Some((_, uid, gid)) = &self.user {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        if let Some(home) = &self.home {
            cmd.env("HOME", home);
        }
        cmd
    }

    /// Gives `path` (not what is below it) to the server user.
    pub fn own(&self, path: &Path) -> Result<()> {
        if let Some((_, uid, gid)) = &self.user {
            nix::unistd::chown(path, Some(*uid), Some(*gid))
                .map_err(|e| Error::io(format!("chown {}", path.display()))(e.into()))?;
        }
        Ok(())
    }

    /// Gives `path` and everything below it to the server user.
    pub fn own_tree(&self, path: &Path) -> Result<()> {
        if self.user.is_none() {
            return Ok(());
        }
        let mut stack = vec![path.to_path_buf()];
        while let Some(p) = stack.pop() {
            self.own(&p)?;
            if p.is_dir() && !p.is_symlink() {
                for entry in std::fs::read_dir(&p)
                    .map_err(Error::io(format!("reading {}", p.display())))?
                    .flatten()
                {
                    stack.push(entry.path());
                }
            }
        }
        Ok(())
    }

    /// Checks that the server user can run the program at `path` (every directory above it
    /// must be enterable): a checkout under a 0700 home directory is the usual trap.
    pub fn check_can_run(&self, path: &Path) -> Result<()> {
        let Some((name, _, _)) = &self.user else {
            return Ok(());
        };
        let status = self
            .command("/bin/sh", Path::new("/"))
            .arg("-c")
            .arg(r#"test -x "$1""#)
            .arg("pgops-check")
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(Error::io(
                "checking what the server's OS user can run (/bin/sh)",
            ))?;
        if status.success() {
            return Ok(());
        }
        let blocking = path
            .ancestors()
            .skip(1)
            .filter(|dir| !dir.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .collect::<Vec<PathBuf>>()
            .into_iter()
            .rev()
            .find(|dir| !self.can_enter(dir))
            .map_or_else(|| path.display().to_string(), |d| d.display().to_string());
        Err(Error::Unreachable {
            user: name.clone(),
            path: path.to_path_buf(),
            blocking,
        })
    }

    fn can_enter(&self, dir: &Path) -> bool {
        self.command("/bin/sh", Path::new("/"))
            .arg("-c")
            .arg(r#"cd "$1""#)
            .arg("pgops-check")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// A TCP port on 127.0.0.1 that nobody listens on right now.
pub fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(Error::io("finding a free port on 127.0.0.1"))
}
