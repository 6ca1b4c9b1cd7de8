//! The pool crate's error type. No variant ever holds a password: URLs are kept as
//! [`crate::DatabaseUrl`] and driver messages are scrubbed before they are stored.

use std::{path::PathBuf, time::Duration};

/// Everything that can go wrong configuring or using a pool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A connection string is malformed.
    #[error("{0}")]
    InvalidUrl(String),
    /// No database URL was given.
    #[error(
        "DATABASE_URL is not set; export it, pass --database-url, or set [database] url in pgops.toml"
    )]
    MissingUrl,
    /// A setting has a value outside its allowed range.
    #[error("{key} = {value:?} is invalid: {allowed}")]
    InvalidSetting {
        /// Where the value came from: an environment variable or `pool.<key>` in pgops.toml.
        key: String,
        /// The value as given.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// The configuration file is unreadable or malformed.
    #[error("{path}: {message}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The database could not be reached when the pool started.
    #[error(
        "cannot connect to {url} within {timeout:?}: {message}; check that the server is up and the URL is right"
    )]
    Connect {
        /// The redacted URL.
        url: String,
        /// The connection timeout that passed.
        timeout: Duration,
        /// The driver's last message, scrubbed of the password.
        message: String,
    },
    /// No connection became free within the connection timeout.
    #[error(
        "no connection available from pool `{pool}` within {waited:?} ({in_use} of {max} in use, {waiting} waiting){}",
        last_error.as_ref().map(|e| format!("; last connection error: {e}")).unwrap_or_default()
    )]
    Timeout {
        /// The pool's name.
        pool: String,
        /// How long the caller waited.
        waited: Duration,
        /// Connections checked out at the time.
        in_use: u32,
        /// The pool's maximum size.
        max: u32,
        /// Callers waiting at the time.
        waiting: u32,
        /// The last error while opening a connection, scrubbed.
        last_error: Option<String>,
    },
    /// A query failed.
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    /// Blocking work handed to tokio was cancelled (the runtime is shutting down).
    #[error("blocking database work was cancelled: the runtime is shutting down")]
    Cancelled,
}

/// Result type of the pool crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether this is a checkout that timed out with every connection open and in use: the
    /// server answers, the pool is saturated. A caller with somewhere else to go (a router
    /// with other replicas) goes there without holding it against the server.
    pub fn is_busy(&self) -> bool {
        matches!(self, Error::Timeout { in_use, max, .. } if in_use >= max)
    }
}

impl From<pgops_pg::Error> for Error {
    fn from(e: pgops_pg::Error) -> Self {
        match e {
            pgops_pg::Error::InvalidConnectionString(message) => Error::InvalidUrl(message),
            other => Error::InvalidUrl(pgops_pg::report(&other)),
        }
    }
}
