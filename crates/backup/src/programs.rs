//! Running the PostgreSQL client programs against a server: the connection string on the
//! command line without its password (which goes through `PGPASSWORD`, never a command line
//! other users can read in `ps`), and out of every message.

use std::{
    path::Path,
    process::{Command, Output},
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
