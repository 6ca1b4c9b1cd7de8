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
    /// The error and each of its causes, once: our error types name what failed in their
    /// message and return why from `source()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let causes: Vec<String> = self
            .error
            .chain()
            .map(ToString::to_string)
            .filter(|m| !m.is_empty())
            .collect();
        f.write_str(&causes.join(": "))
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::Failure;

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        #[derive(Debug, thiserror::Error)]
        #[error("writing wal/1.zst")]
        struct Wrapped {
            source: std::io::Error,
        }
        let failure = Failure::problem(Wrapped { source: io });
        assert_eq!(failure.to_string(), "writing wal/1.zst: permission denied");
        let chained = Failure::usage(
            anyhow::anyhow!("connection refused").context("cannot reach 127.0.0.1:5432"),
        );
        assert_eq!(
            chained.to_string(),
            "cannot reach 127.0.0.1:5432: connection refused"
        );
    }
}
