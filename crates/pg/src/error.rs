//! The error type of pgops-pg.

use std::{io, path::PathBuf};

/// What can go wrong in the plumbing: a string that is not what it claims, a program that is
/// missing, a query that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A connection string libpq cannot read (the message never echoes a password).
    #[error("{0}")]
    InvalidConnectionString(String),
    /// A simple-protocol connection or query failed.
    #[error("{context}: {message}")]
    Simple {
        /// What was being done (the URL without password).
        context: String,
        /// libpq's message, password-free.
        message: String,
    },
    /// A string is not a PostgreSQL LSN (`X/Y` in hexadecimal).
    #[error("`{0}` is not a WAL position; expected the form 16/B374D848")]
    InvalidLsn(String),
    /// A string is not the name of a file PostgreSQL archives.
    #[error(
        "{0:?} is not a WAL file name (24 hex digits, or a .history, .backup or .partial file)"
    )]
    InvalidWalName(String),
    /// No complete set of PostgreSQL server binaries was found.
    #[error(
        "PostgreSQL server binaries not found (looked in: {searched}); install Debian's `postgresql` \
         and `postgresql-contrib` packages, or set PGOPS_PG_BINDIR to the directory that holds initdb and postgres"
    )]
    BinariesNotFound {
        /// The places that were searched, in order.
        searched: String,
    },
    /// One PostgreSQL program is missing.
    #[error(
        "{program} not found in {searched}; install the PostgreSQL client (Debian: postgresql-client) or set PGOPS_PG_BINDIR"
    )]
    MissingProgram {
        /// `pg_dump`, `pg_ctl`, ...
        program: String,
        /// Where we looked.
        searched: String,
    },
    /// We run as root but the OS user that must run PostgreSQL does not exist.
    #[error(
        "running as root, but the OS user `{user}` that must run PostgreSQL does not exist; \
         create it (useradd --system {user}) or set PGOPS_PG_USER to an unprivileged user"
    )]
    NoServerUser {
        /// The user name that was looked up.
        user: String,
    },
    /// The server's OS user cannot reach a program the server must run.
    #[error(
        "the server runs as `{user}`, which cannot run {path} because it cannot enter {blocking}; \
         work from a directory {user} can enter (not under a private home directory), or give it \
         access (chmod o+x {blocking})"
    )]
    Unreachable {
        /// The server's OS user.
        user: String,
        /// The program.
        path: PathBuf,
        /// The first directory on the way that the user cannot enter.
        blocking: String,
    },
    /// A program ran and failed.
    #[error("{program} failed ({status}): {output}")]
    Program {
        /// The program and its telling arguments.
        program: String,
        /// How it exited.
        status: String,
        /// What it said.
        output: String,
    },
    /// A file or process operation failed.
    #[error("{context}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A statement failed.
    #[error("{context}")]
    Query {
        /// What was being done.
        context: String,
        /// The driver's error.
        source: diesel::result::Error,
    },
    /// The server returned rows we could not read.
    #[error("{context}")]
    Decode {
        /// What was being read.
        context: String,
        /// The decoder's error.
        source: serde_json::Error,
    },
}

/// Result type of pgops-pg.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
