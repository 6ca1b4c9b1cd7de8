//! The library behind the `pgops` binary: argument definitions and command implementations,
//! shared with `cargo xtask` so both run the same code.

pub mod backup;
pub mod db;
pub mod exit;
pub mod health;
pub mod insights;
pub mod lint;
pub mod migrate;
pub mod migrate_check;
pub mod page;
pub mod pool;
pub mod reference;
pub mod repository_metrics;
pub mod wal;

use std::io::Write;

use clap::{Parser, Subcommand};

pub use exit::{Exit, Failure};

/// pgops: run PostgreSQL-backed services fast and safely.
#[derive(Debug, Parser)]
#[command(name = "pgops", version, propagate_version = true, max_term_width = 100, after_help = EXIT_CODES)]
pub struct Cli {
    /// The area to work on.
    #[command(subcommand)]
    pub area: Area,
    /// Log filter for messages on stderr (tracing's EnvFilter syntax).
    #[arg(long, env = "PGOPS_LOG", default_value = "info", global = true)]
    pub log: String,
}

/// The operators' areas.
#[derive(Debug, Subcommand)]
pub enum Area {
    /// Apply, revert and check schema migrations (diesel layout) under an advisory lock.
    Migrate(migrate::Args),
    /// Show the effective connection-pool configuration and check it against the server.
    Pool(pool::Args),
    /// Slow-query logging, top queries, safe EXPLAIN, index advice and health checks.
    Insights(insights::Args),
    /// The Prometheus endpoint (/metrics, /health, /ready) and a one-shot health check.
    Health(health::Args),
    /// Logical and physical backups in a file:// or s3:// repository: create, verify, restore
    /// (to a point in time), drills, retention.
    Backup(backup::Args),
    /// The WAL archive: push (archive_command), fetch (restore_command), setup, check.
    Wal(wal::Args),
}

/// The exit codes, as `--help` shows them.
pub const EXIT_CODES: &str = "Exit codes:
  0  ok
  1  a check found a problem, or an operation on the database failed
  2  usage, configuration or connection error";

/// The whole `pgops` program: parses the command line (clap exits with 2 on usage errors and
/// 0 for --help / --version), sets up logging on stderr, runs, and maps every outcome to the
/// documented exit code. The binary is this function; `cargo xtask dev` installs a copy that
/// calls it too.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|e| {
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "warning: PGOPS_LOG/--log `{}` is not a valid filter ({e}); using `info`",
                cli.log
            );
        }
        tracing_subscriber::EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();

    let mut stdout = std::io::stdout().lock();
    match run(&cli, &mut stdout) {
        Ok(exit) => exit.into(),
        Err(failure) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {failure}");
            }
            match failure.exit {
                Exit::Ok => Exit::Problem.into(),
                exit => exit.into(),
            }
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<Exit, Failure> {
    match &cli.area {
        Area::Migrate(args) => migrate::run(args, out),
        Area::Pool(args) => pool::run(args, out),
        Area::Insights(args) => insights::run(args, out),
        Area::Health(args) => health::run(args, out),
        Area::Backup(args) => backup::run(args, out),
        Area::Wal(args) => wal::run(args, out),
    }
}
