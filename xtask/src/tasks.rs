//! Running `pgops-tasks`, the binary with the tasks that use pgops itself: built with cargo
//! (once what it links is installed), then run in place of this process, so Ctrl-C and
//! SIGTERM reach it directly.

use std::{
    ffi::OsString,
    io::BufRead as _,
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Command, ExitCode, Stdio},
};

use anyhow::{Context as _, bail};

use crate::install::{self, Need};

/// Installs what `need` asks for, builds `pgops-tasks`, and becomes it with `task args`.
pub fn exec(need: Need, task: &str, args: &[OsString]) -> anyhow::Result<ExitCode> {
    let tools = install::ensure(need)?;
    let binary = build()?;
    let error = Command::new(&binary)
        .arg(task)
        .args(args)
        .env("PATH", tools.path())
        .exec();
    Err(error).with_context(|| format!("running {}", binary.display()))
}

/// Builds `pgops-tasks` and returns its path.
pub fn build() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(&cargo)
        .args([
            "build",
            "--package",
            "pgops-tasks",
            "--bin",
            "pgops-tasks",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(crate::workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo build --package pgops-tasks")?;
    let mut executable = None;
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.context("reading cargo's output")?;
            let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if message["reason"] == "compiler-artifact"
                && message["target"]["name"] == "pgops-tasks"
                && let Some(path) = message["executable"].as_str()
            {
                executable = Some(PathBuf::from(path));
            }
        }
    }
    let status = child.wait().context("waiting for cargo build")?;
    if !status.success() {
        bail!("cargo build --package pgops-tasks failed ({status})");
    }
    executable.context("cargo build did not name the pgops-tasks executable")
}
