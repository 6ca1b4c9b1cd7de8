//! The health crate's error type.

/// What can go wrong while collecting or serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A query failed, or its rows could not be read.
    #[error(transparent)]
    Query(#[from] pgops_pg::Error),
    /// No connection could be had from the pool.
    #[error(transparent)]
    Pool(#[from] pgops_pool::Error),
    /// A setting is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The listener could not be bound or served.
    #[error("{context}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result type of pgops-health.
pub type Result<T, E = Error> = std::result::Result<T, E>;
