//! The insights error type: every variant says what to change.

/// Everything that can stop an insights operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `pg_stat_statements` is not in `shared_preload_libraries`.
    #[error(
        "pg_stat_statements is not loaded: shared_preload_libraries is '{current}'. \
         Add it (ALTER SYSTEM SET shared_preload_libraries = '{suggested}'), restart the server, \
         then run CREATE EXTENSION pg_stat_statements in this database"
    )]
    NotPreloaded {
        /// The server's current `shared_preload_libraries`.
        current: String,
        /// The value to set.
        suggested: String,
    },
    /// The extension is loaded but not created in the database we are connected to.
    #[error(
        "the pg_stat_statements extension is not created in database {database}; \
         run CREATE EXTENSION pg_stat_statements there (it is loaded, no restart needed)"
    )]
    ExtensionMissing {
        /// The database we are connected to.
        database: String,
    },
    /// An optional extension is not installed on the server.
    #[error("{extension} is not installed on the server; install {package} and retry")]
    NotInstalled {
        /// The extension (`hypopg`, `auto_explain`).
        extension: &'static str,
        /// What to install.
        package: String,
    },
    /// The role lacks a privilege the operation needs.
    #[error("{0}")]
    Privilege(String),
    /// The statement given to EXPLAIN is refused before it reaches the server.
    #[error("refusing to explain: {0}")]
    Refused(String),
    /// No snapshot is old enough for the window asked for.
    #[error("{0}")]
    NoSnapshot(String),
    /// A value given by the user is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The server is older than the oldest version supported.
    #[error("PostgreSQL {0} is not supported by pgops insights; it needs PostgreSQL 13 or newer")]
    Unsupported(String),
    /// A statement failed.
    #[error("{context}")]
    Database {
        /// What we were doing.
        context: String,
        /// The underlying error.
        source: diesel::result::Error,
    },
    /// The server returned something we could not read.
    #[error("{context}")]
    Decode {
        /// What we were reading.
        context: String,
        /// The underlying error.
        source: serde_json::Error,
    },
}

/// Result type of pgops-insights.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(diesel::result::Error) -> Self {
        let context = context.into();
        move |source| Error::Database { context, source }
    }
}

impl From<pgops_pg::Error> for Error {
    fn from(e: pgops_pg::Error) -> Self {
        match e {
            pgops_pg::Error::Query { context, source } => Error::Database { context, source },
            pgops_pg::Error::Decode { context, source } => Error::Decode { context, source },
            other => Error::Invalid(pgops_pg::report(&other)),
        }
    }
}
