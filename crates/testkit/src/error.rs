//! The test kit's error type.

use std::{io, path::PathBuf, time::Duration};

/// Everything that can go wrong while starting, driving or stopping a test cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The plumbing failed: binaries or the server's OS user not found, a malformed LSN.
    #[error(transparent)]
    Pg(#[from] pgops_pg::Error),
    /// A file or directory operation failed.
    #[error("{context}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A PostgreSQL program exited with a failure.
    #[error("{program} failed ({status}): {output}")]
    Tool {
        /// The program and its most telling arguments.
        program: String,
        /// How it exited.
        status: String,
        /// Its standard error and output, and the tail of the server log when relevant.
        output: String,
    },
    /// Connecting to a test cluster failed.
    #[error("cannot connect to {url}")]
    Connect {
        /// The URL (test clusters use no password).
        url: String,
        /// The underlying error.
        source: diesel::ConnectionError,
    },
    /// A statement sent to a test cluster failed.
    #[error("query `{sql}` failed")]
    Query {
        /// The statement.
        sql: String,
        /// The underlying error.
        source: diesel::result::Error,
    },
    /// A wait did not finish in time.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the wait lasted.
        waited: Duration,
    },
    /// The initialisation function of a template database failed.
    #[error("initialising template database `{template}` failed: {message}")]
    TemplateInit {
        /// The template database.
        template: String,
        /// What the initialisation function reported.
        message: String,
    },
    /// The shared cluster failed to start earlier in this process; the first error is repeated.
    #[error("the shared test cluster could not be started: {0}")]
    SharedUnavailable(String),
    /// A kept data directory was made by another PostgreSQL major version.
    #[error(
        "{data} holds a PostgreSQL {found} cluster, but the binaries found ({bindir}) are PostgreSQL {expected}; \
         set PGOPS_PG_BINDIR to PostgreSQL {found}'s bin directory, or remove the directory to start over"
    )]
    VersionMismatch {
        /// The data directory.
        data: PathBuf,
        /// The major version in its `PG_VERSION`.
        found: String,
        /// The binaries' major version.
        expected: u32,
        /// Where the binaries are.
        bindir: PathBuf,
    },
    /// A kept cluster's data directory exists but holds no cluster.
    #[error(
        "{0} exists but is not a PostgreSQL data directory (no PG_VERSION); remove it to start over"
    )]
    NotADataDirectory(PathBuf),
    /// A fixed port is taken by another process.
    #[error(
        "port {port} on 127.0.0.1 is already in use by another process; stop that process or choose another port"
    )]
    PortBusy {
        /// The port.
        port: u16,
    },
    /// An operation needs a running cluster.
    #[error("cluster in {0} is not running; start() it first")]
    NotRunning(PathBuf),
}

/// Result type of the test kit.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
