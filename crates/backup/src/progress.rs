//! Progress of a backup as it streams, for a progress bar.

/// Reports bytes as they stream, for a progress bar.
pub trait Progress {
    /// `raw` bytes read from pg_dump so far, `stored` written after compression.
    fn bytes(&mut self, raw: u64, stored: u64);
}

/// No progress reporting.
#[derive(Debug, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn bytes(&mut self, _: u64, _: u64) {}
}
