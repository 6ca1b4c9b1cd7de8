//! The backup error type: every variant says what to do.

/// What can stop a backup, restore, verification or prune.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The repository URL is not one we understand.
    #[error(
        "repository URL {url:?}: {reason}; use file:///var/backups/pgops or s3://bucket/prefix (--repo or PGOPS_REPO)"
    )]
    BadRepository {
        /// The URL as given (without credentials).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A PostgreSQL client program is missing.
    #[error(
        "{program} not found in {searched}; install the PostgreSQL client (Debian: postgresql-client) or set PGOPS_PG_BINDIR"
    )]
    MissingProgram {
        /// pg_dump, pg_restore, ...
        program: String,
        /// Where we looked.
        searched: String,
    },
    /// A program failed.
    #[error("{program} failed ({status}): {stderr}")]
    Program {
        /// Which one.
        program: String,
        /// Its exit status.
        status: String,
        /// The end of its stderr, password-free.
        stderr: String,
    },
    /// A program needs the replication protocol, and a pooler in between refused it.
    #[error(
        "{program} needs a direct connection to PostgreSQL (the replication protocol), and \
         {server} is a pooler (PgBouncer) that does not pass it on; point DATABASE_URL (or \
         --database-url) for backups and WAL at the server itself"
    )]
    NeedsDirectConnection {
        /// pg_basebackup, pg_receivewal, ...
        program: String,
        /// The host and port refused.
        server: String,
    },
    /// No backup with that id.
    #[error("no backup {0} in the repository; `pgops backup list` shows what there is")]
    NotFound(String),
    /// A file does not match its checksum or size.
    #[error(
        "backup {id}: {file} is corrupt ({detail}); restore another backup, this one cannot be trusted"
    )]
    Corrupt {
        /// The backup.
        id: String,
        /// The file.
        file: String,
        /// Expected against found.
        detail: String,
    },
    /// The target database exists.
    #[error(
        "database {0} already exists; restore into a new name, or pass --replace to drop it first"
    )]
    TargetExists(String),
    /// A setting is out of range or contradicts another.
    #[error("{0}")]
    Invalid(String),
    /// The storage failed.
    #[error("{context}")]
    Storage {
        /// What we were doing.
        context: String,
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Local I/O failed.
    #[error("{context}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The server could not be reached or refused us.
    #[error("{context}")]
    Connect {
        /// Which server (its URL without password).
        context: String,
        /// The driver's message, password-free.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A statement failed.
    #[error("{context}")]
    Database {
        /// What we were doing.
        context: String,
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Result type of pgops-backup.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    pub(crate) fn storage<E: std::error::Error + Send + Sync + 'static>(
        context: impl Into<String>,
    ) -> impl FnOnce(E) -> Self {
        let context = context.into();
        move |source| Error::Storage {
            context,
            source: Box::new(source),
        }
    }

    pub(crate) fn db<E: std::error::Error + Send + Sync + 'static>(
        context: impl Into<String>,
    ) -> impl FnOnce(E) -> Self {
        let context = context.into();
        move |source| Error::Database {
            context,
            source: Box::new(source),
        }
    }
}

impl From<pgops_pg::Error> for Error {
    fn from(e: pgops_pg::Error) -> Self {
        use pgops_pg::Error as E;
        match e {
            E::MissingProgram { program, searched } => Error::MissingProgram { program, searched },
            E::Query { context, source } => Error::Database {
                context,
                source: Box::new(source),
            },
            E::Decode { context, source } => Error::Database {
                context,
                source: Box::new(source),
            },
            E::Io { context, source } => Error::Io { context, source },
            other => Error::Invalid(pgops_pg::report(&other)),
        }
    }
}
