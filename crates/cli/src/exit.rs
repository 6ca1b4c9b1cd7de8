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
    /// The error and its causes, each once: our error types already put their source in their
    /// own message, so a cause the text already holds is not repeated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        for cause in self.error.chain() {
            let message = cause.to_string();
            if text.is_empty() {
                text = message;
            } else if !text.contains(&message) {
                text.push_str(": ");
                text.push_str(&message);
            }
        }
        f.write_str(&text)
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
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        #[derive(Debug, thiserror::Error)]
        #[error("writing wal/1.zst: {source}")]
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
