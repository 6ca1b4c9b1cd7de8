//! The seeder's error type.

/// Everything that can stop a seed run. After any of them the database is as it was: a run
/// is one transaction.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Seeding a production database is refused.
    #[error(
        "refusing to seed: {variable}=production; seeding writes sample data and is for development, test and staging databases only"
    )]
    Production {
        /// The variable that says production (`PGOPS_ENV` or `APP_ENV`).
        variable: &'static str,
    },
    /// The scale is not a positive, finite number in range.
    #[error(
        "--scale {0} is invalid: use a number from 0.001 to 100 (1.0 is the dataset's documented size)"
    )]
    InvalidScale(f64),
    /// The database was seeded before with other parameters.
    #[error(
        "the database was already seeded with {previous}; refusing to mix it with {requested}. \
         Pass --reset to empty the sample tables and seed again"
    )]
    SeededDifferently {
        /// What the ledger says.
        previous: String,
        /// What this run asked for.
        requested: String,
    },
    /// The sample tables hold rows that no seed run wrote.
    #[error(
        "table {table} already holds {rows} row(s) not written by pgops seed; pass --reset to empty the sample tables first"
    )]
    NotEmpty {
        /// The first non-empty table.
        table: String,
        /// How many rows it holds.
        rows: i64,
    },
    /// The sample schema is not migrated.
    #[error(
        "table {0} does not exist; migrate first (cargo xtask migrate run or pgops migrate run)"
    )]
    NotMigrated(String),
    /// A statement failed; the transaction was rolled back.
    #[error("{context}")]
    Database {
        /// What the seeder was doing.
        context: String,
        /// The underlying error.
        source: diesel::result::Error,
    },
    /// Writing the COPY stream failed.
    #[error("writing COPY data: {0}")]
    Io(#[from] std::io::Error),
}

/// Result type of the seeder.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<diesel::result::Error> for Error {
    fn from(source: diesel::result::Error) -> Self {
        Error::Database {
            context: "seeding".into(),
            source,
        }
    }
}

impl Error {
    pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(diesel::result::Error) -> Self {
        let context = context.into();
        move |source| Error::Database { context, source }
    }
}
