//! One line for an error and its causes. pgops's error types say each thing once: a message
//! names what failed, and `source()` returns why; this joins the two for a log line, a stored
//! record or a report.

use std::error::Error;

/// `error`, then each of its causes, joined with `: `.
pub fn report(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let message = next.to_string();
        if !message.is_empty() {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = next.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("writing wal/1.zst")]
    struct Wrapped {
        source: std::io::Error,
    }

    #[test]
    fn every_cause_once() {
        let error = Wrapped {
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert_eq!(report(&error), "writing wal/1.zst: permission denied");
    }
}
