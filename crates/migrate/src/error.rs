//! The migration runner's error type.

use std::{io, path::PathBuf, time::Duration};

/// Everything that can go wrong while reading, applying, checking or reverting migrations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A migrations directory or file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A migration is malformed (name, missing or empty `up.sql`, bad `metadata.toml`).
    #[error("migration `{name}` is invalid: {reason}")]
    InvalidMigration {
        /// The migration's directory name.
        name: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Two migrations have the same version.
    #[error(
        "migrations `{first}` and `{second}` share version {version}; rename one so each version is unique"
    )]
    DuplicateVersion {
        /// The version both carry.
        version: String,
        /// The first migration.
        first: String,
        /// The second migration.
        second: String,
    },
    /// The `[lint]` table of `pgops.toml` is not valid.
    #[error("pgops.toml {0}")]
    LintConfig(String),
    /// A connection string is not valid.
    #[error(transparent)]
    Url(#[from] pgops_pg::Error),
    /// The server could not be reached.
    #[error("cannot connect to {target}; check that the server is up and the URL is right")]
    Connect {
        /// The server and database (its URL without password).
        target: String,
        /// The driver's message.
        source: diesel::ConnectionError,
    },
    /// A statement of the runner itself failed.
    #[error("{context}")]
    Database {
        /// What the runner was doing.
        context: String,
        /// The underlying error.
        source: diesel::result::Error,
    },
    /// A migration's SQL failed; the database is left as it was before that migration
    /// (transactional migrations) or as far as the statement got (non-transactional ones).
    #[error("{direction} of migration `{name}` failed: {message}")]
    MigrationFailed {
        /// The migration.
        name: String,
        /// `up.sql` or `down.sql`.
        direction: &'static str,
        /// The database's message.
        message: String,
    },
    /// Another migration run holds the advisory lock for longer than we were willing to wait.
    #[error(
        "another migration run{holder} has held the migration lock for {waited:?}; \
         wait for it to finish, or raise the lock wait"
    )]
    LockTimeout {
        /// How long we waited.
        waited: Duration,
        /// ` (backend pid N)` when known.
        holder: String,
    },
    /// The session that took the migration lock is not the one running the migration: a
    /// pooler in transaction mode sits between pgops and the server.
    #[error(
        "the migration lock is not held by the server session running the migration: a pooler \
         in transaction mode (PgBouncer pool_mode = transaction) sits in between; point \
         pgops migrate at the server or a session-pooled database (PGOPS_MIGRATE_DATABASE_URL)"
    )]
    LockNotHeld,
    /// An applied migration is not in the migration source, so it cannot be reverted.
    #[error(
        "migration version {version} is applied in the database but not in the migration source; revert it with the source it came from"
    )]
    UnknownApplied {
        /// Its version.
        version: String,
    },
    /// `revert` or `redo` was asked for but nothing is applied.
    #[error("no migration is applied; nothing to revert")]
    NothingToRevert,
    /// The migration check needs a database where none of the migrations is applied.
    #[error(
        "the migration check needs a scratch database with no migration applied, but {applied} are applied here; give an empty database, or let the check create one"
    )]
    NotFresh {
        /// How many are applied.
        applied: usize,
    },
}

/// Result type of the migration runner.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(diesel::result::Error) -> Self {
        let context = context.into();
        move |source| Error::Database { context, source }
    }
}
