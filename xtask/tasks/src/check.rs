//! `pgops-tasks check <migration-lint|round-trip>`: the checks of `cargo xtask ci` that use
//! pgops itself. Each prints its detail as its last line and exits non-zero on failure.

use std::process::ExitCode;

use anyhow::Context as _;

/// Options of `pgops-tasks check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The check to run.
    #[arg(value_enum)]
    pub check: Check,
}

/// The checks.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Check {
    /// The migration linter over migrations/.
    MigrationLint,
    /// Every migration up, down and up again on a fresh cluster.
    RoundTrip,
}

/// Runs one check.
pub fn run(args: &Args) -> ExitCode {
    let outcome = match args.check {
        Check::MigrationLint => migration_lint(),
        Check::RoundTrip => round_trip(),
    };
    match outcome {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The repository's migrations through `pgops migrate lint`: no statement that locks or
/// rewrites a big table may ship.
fn migration_lint() -> anyhow::Result<String> {
    let dir = crate::workspace_root().join("migrations");
    let dir = dir.to_str().context("the workspace path is not UTF-8")?;
    crate::pgops_step(&["migrate", "lint", "--dir", dir])?;
    Ok(String::new())
}

/// The repository's migrations through `pgops migrate check` on a throwaway cluster: every
/// migration up, down and up again, the whole history again, validate, with the schema
/// compared at every step. The same code a service's CI runs.
fn round_trip() -> anyhow::Result<String> {
    let dir = crate::workspace_root().join("migrations");
    let dir = dir.to_str().context("the workspace path is not UTF-8")?;
    crate::pgops_step(&["migrate", "check", "--dir", dir, "--throwaway-cluster"])?;
    Ok(String::new())
}
