//! `pgops-tasks check <migration-lint|round-trip>`: the checks of `cargo xtask ci` that use
//! pgops itself. Each prints its detail as its last line and exits non-zero on failure.

use std::process::ExitCode;

use anyhow::Context as _;
use anyhow::ensure;
use pgops_migrate::{MigrationSet, Migrator};
use pgops_testkit::{Cluster, ClusterOptions, PgBinaries};

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

/// The repository's migrations through the linter: no statement that locks or rewrites a
/// big table may ship.
fn migration_lint() -> anyhow::Result<String> {
    let dir = crate::workspace_root().join("migrations");
    let set = MigrationSet::from_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
    let report = pgops_migrate::lint::lint_set(&set, &dir);
    let problems: Vec<String> = report
        .errors
        .iter()
        .map(ToString::to_string)
        .chain(report.findings.iter().map(ToString::to_string))
        .collect();
    for line in &problems {
        println!("{line}");
    }
    ensure!(
        problems.is_empty(),
        "{} lint problem(s) in migrations/",
        problems.len()
    );
    let detail = format!("{} migrations clean", set.migrations().len());
    println!("{detail}");
    Ok(detail)
}

/// The repository's migrations on a fresh cluster: up, down one by one, up again, with the
/// schema compared at every step.
fn round_trip() -> anyhow::Result<String> {
    let mut options = ClusterOptions::default();
    if PgBinaries::discover()?.has_library("pg_stat_statements") {
        options = options.preload("pg_stat_statements");
    }
    let cluster = Cluster::start(options).context("starting a fresh cluster")?;
    cluster.create_database("round_trip")?;
    let dir = crate::workspace_root().join("migrations");
    let set = MigrationSet::from_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut conn = cluster.connect("round_trip")?;
    let report = pgops_migrate::round_trip(&Migrator::new(&set), &mut conn)?;
    let detail = format!(
        "{} migrations, {} schema objects, {:.1}s",
        report.migrations,
        report.objects,
        report.elapsed.as_secs_f64()
    );
    println!("{detail}");
    Ok(detail)
}
