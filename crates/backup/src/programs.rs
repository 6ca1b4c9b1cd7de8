//! Running the PostgreSQL client programs against a server: the connection string on the
//! command line without its password (which goes through `PGPASSWORD`, never a command line
//! other users can read in `ps`), and out of every message.

use std::{
    path::Path,
    process::{Child, Command, Output, Stdio},
};

use pgops_pg::DatabaseUrl;

use crate::{Error, Result};

/// A command for `program` against `url`: libpq's reading of the connection string, minus
/// the password, as `-d`; the password in `PGPASSWORD`.
pub fn command(program: &Path, url: &DatabaseUrl) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg("-d").arg(url.conninfo_without_password());
    match url.password() {
        Some(password) => cmd.env("PGPASSWORD", password),
        None => cmd.env_remove("PGPASSWORD"),
    };
    cmd
}

/// A program's `--version`, asked when a backup starts and read once it has run, so the
/// backup does not wait for it; a backup that fails first still reaps it.
pub(crate) struct Version(Option<Child>);

impl Version {
    pub(crate) fn ask(program: &Path) -> Self {
        Version(
            Command::new(program)
                .arg("--version")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .ok(),
        )
    }

    /// The line it printed; empty if it could not say.
    pub(crate) fn answer(mut self) -> String {
        self.0
            .take()
            .and_then(|child| child.wait_with_output().ok())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }
}

impl Drop for Version {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.wait();
        }
    }
}

/// Turns a finished program into a result; stderr is scrubbed of the password.
pub fn check(program: &str, url: &DatabaseUrl, output: &Output) -> Result<()> {
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    // PgBouncer refuses the replication protocol with this startup error.
    if stderr.contains("unsupported startup parameter: replication") {
        return Err(Error::NeedsDirectConnection {
            program: program.to_owned(),
            server: url.server(),
        });
    }
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join("; ");
    Err(Error::Program {
        program: program.to_owned(),
        status: output.status.to_string(),
        stderr: url.scrub(&tail),
    })
}
