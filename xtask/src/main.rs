//! `cargo xtask`: the tasks developers and CI run. `cargo xtask ci` is exactly what CI runs.
//!
//! This binary is small on purpose: it builds on a fresh Debian or Ubuntu machine that has
//! only Rust, installs what the tasks need (`install`), then runs them. The tasks that use
//! pgops itself (the dev stack, seeding, benchmarks, migrations, the migration checks) live in
//! the `pgops-tasks` binary (`xtask/tasks`), which links libpq and PostgreSQL's parser and so
//! is built only once those are installed.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod ci;
mod install;
mod lanes;
mod tasks;

use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use clap::Parser;

/// The project's tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", max_term_width = 100)]
enum Task {
    /// Everything CI checks: installs what is missing, then formatting, clippy, the migration
    /// linter, the alert rules, the test suite (the runbooks' steps included), the migration
    /// round trip on a fresh cluster, the server-side suites on every other PostgreSQL major
    /// from 13 to 18, and that no PostgreSQL process or directory is left behind.
    Ci(ci::Args),
    /// The local stack: a primary and a streaming replica under target/pgops-dev, archiving
    /// WAL, migrated, seeded, backed up, with the health endpoint on 127.0.0.1:9187, until
    /// Ctrl-C. Installs PostgreSQL first when it is missing. `cargo xtask dev --help` for
    /// its options.
    #[command(disable_help_flag = true)]
    Dev(Passthrough),
    /// `pgops migrate` against DATABASE_URL, with this repository's migrations/ by default.
    #[command(disable_help_flag = true)]
    Migrate(Passthrough),
    /// Load a sample dataset into DATABASE_URL, or the dev stack when unset (never when
    /// PGOPS_ENV=production).
    #[command(disable_help_flag = true)]
    Seed(Passthrough),
    /// Benchmarks side by side with the existing tools; writes target/pgops-bench/<suite>.json,
    /// and after a full run of every suite, docs/benchmarks.md with its chart.
    #[command(disable_help_flag = true)]
    Bench(Passthrough),
    /// Writes docs/reference.md (every environment variable and pgops.toml key) from the code.
    #[command(disable_help_flag = true)]
    Reference(Passthrough),
    /// Only install what the tasks need (`--for ci`, the default, or `dev`, `bench`, `matrix`).
    Install(install::Args),
}

/// A task's own arguments, handed to `pgops-tasks` as they are.
#[derive(Debug, clap::Args)]
struct Passthrough {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

fn main() -> ExitCode {
    let task = Task::parse();
    let outcome = match task {
        Task::Ci(args) => return ci::run(&args),
        Task::Install(args) => install::ensure(args.target).map(|_| ExitCode::SUCCESS),
        Task::Dev(p) => tasks::exec(install::Need::Dev, "dev", &p.args),
        Task::Migrate(p) => tasks::exec(install::Need::Build, "migrate", &p.args),
        Task::Seed(p) => tasks::exec(install::Need::Dev, "seed", &p.args),
        Task::Bench(p) => tasks::exec(install::Need::Bench, "bench", &p.args),
        Task::Reference(p) => tasks::exec(install::Need::Build, "reference", &p.args),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The workspace root (where `Cargo.toml` and `migrations/` are).
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The cargo that runs xtask (`CARGO`), else the one on `PATH`.
fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Runs `cargo args` in the workspace root (with `PATH` set to `path` when given) and hands
/// each `compiler-artifact` message of its JSON output to `artifact`; `args` must ask for
/// `--message-format=json-render-diagnostics`, so diagnostics still reach the terminal.
/// Fails when cargo does.
fn cargo_artifacts(
    args: &[&str],
    path: Option<&OsString>,
    mut artifact: impl FnMut(&serde_json::Value),
) -> anyhow::Result<()> {
    use std::io::BufRead as _;

    use anyhow::Context as _;

    let mut cmd = std::process::Command::new(cargo());
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    let mut child = cmd
        .args(args)
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting cargo {}", args.join(" ")))?;
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.context("reading cargo's output")?;
            if let Ok(message) = serde_json::from_str::<serde_json::Value>(&line)
                && message["reason"] == "compiler-artifact"
            {
                artifact(&message);
            }
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for cargo {}", args.join(" ")))?;
    anyhow::ensure!(
        status.success(),
        "cargo {} failed ({status})",
        args.join(" ")
    );
    Ok(())
}

/// The target directory (`CARGO_TARGET_DIR`, else `target/` in the workspace).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}
