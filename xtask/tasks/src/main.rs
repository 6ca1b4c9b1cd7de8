//! `pgops-tasks`: the tasks behind `cargo xtask` that use pgops itself (the dev stack, seeding,
//! benchmarks, migrations and the migration checks of CI). Run it through `cargo xtask`, which
//! installs what it links first.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod check;
mod dev;
mod migrate;
mod seed;
mod stack;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::Parser;

/// The project's tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", max_term_width = 100)]
enum Task {
    /// The checks of `cargo xtask ci` that use pgops itself.
    Check(check::Args),
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
    /// Writes docs/reference.md (every environment variable and pgops.toml key) from the code.
    Reference,
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
        Task::Check(args) => check::run(&args),
        Task::Dev(args) => dev::run(&args),
        Task::Migrate(args) => migrate::run(args),
        Task::Bench(args) => bench::run(&args),
        Task::Seed(args) => seed::run(&args),
        Task::Reference => {
            let path = workspace_root().join("docs").join("reference.md");
            match std::fs::write(&path, pgops::reference::markdown()) {
                Ok(()) => {
                    println!("wrote {}", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: writing {}: {e}", path.display());
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// The workspace root (where `Cargo.toml` and `migrations/` are).
fn workspace_root() -> PathBuf {
    // This crate is xtask/tasks.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map_or_else(|| manifest.clone(), PathBuf::from)
}

/// Runs one `pgops` command in this process, as the binary would.
pub fn pgops_step(argv: &[&str]) -> anyhow::Result<()> {
    let cli = pgops::Cli::try_parse_from(std::iter::once("pgops").chain(argv.iter().copied()))
        .with_context(|| format!("pgops {}", argv.join(" ")))?;
    let mut stdout = std::io::stdout().lock();
    match pgops::run(&cli, &mut stdout) {
        Ok(pgops::Exit::Ok) => Ok(()),
        Ok(exit) => anyhow::bail!("`pgops {} ...` exited with {}", argv[0], exit as i32),
        Err(failure) => Err(failure
            .error
            .context(format!("pgops {} {}", argv[0], argv[1]))),
    }
}
