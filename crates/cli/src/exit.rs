//! Exit codes and the error that carries one: 0 ok, 1 a check found a problem (or an
//! operation on the database failed), 2 usage, configuration or connection error.

use std::{fmt, process::ExitCode};

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything worked and every check passed.
    Ok = 0,
    /// A check found a problem, or an operation on the database failed.
    Problem = 1,
    /// Bad usage or configuration, or the database could not be reached.
    Usage = 2,
}

/// An error with the exit code it ends the process with.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub exit: Exit,
    /// What went wrong, with context.
    pub error: anyhow::Error,
}

impl Failure {
    /// A usage, configuration or connection error (exit 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            exit: Exit::Usage,
            error: error.into(),
        }
    }

    /// A problem found or an operation that failed (exit 1).
    pub fn problem(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            exit: Exit::Problem,
            error: error.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}
