//! `cargo xtask`: the tasks developers and CI run. `cargo xtask ci` is exactly what CI runs.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod ci;
mod dev;
mod migrate;
mod seed;

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;

/// The project's tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", max_term_width = 100)]
enum Task {
    /// Everything CI checks: formatting, clippy, the migration linter, the alert rules, the test
    /// suite (the runbooks' steps included), the migration round trip on a fresh cluster, and
    /// that no PostgreSQL process or directory is left behind.
    Ci(ci::Args),
    /// The local stack: a primary and a streaming replica under target/pgops-dev, archiving
    /// WAL, migrated, seeded, backed up, with the health endpoint on 127.0.0.1:9187, until
    /// Ctrl-C.
    Dev(dev::Args),
    /// `pgops migrate` against DATABASE_URL, with this repository's migrations/ by default.
    Migrate(migrate::Args),
    /// Load a sample dataset into DATABASE_URL (never when PGOPS_ENV=production).
    Seed(seed::Args),
    /// Benchmarks side by side with the existing tools; writes target/pgops-bench/<suite>.json,
    /// and after every suite, docs/benchmarks.md with its chart.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    // Installed as `bin/pgops` by `cargo xtask dev`, this binary is the pgops command.
    let invoked_as = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_os_string()));
    if invoked_as.as_deref() == Some(std::ffi::OsStr::new("pgops")) {
        return pgops::main();
    }
    match Task::parse() {
        Task::Ci(args) => ci::run(&args),
        Task::Dev(args) => dev::run(&args),
        Task::Migrate(args) => migrate::run(args),
        Task::Bench(args) => bench::run(&args),
        Task::Seed(args) => seed::run(&args),
    }
}

/// The workspace root (where `Cargo.toml` and `migrations/` are).
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
