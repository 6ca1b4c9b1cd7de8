//! Running `pgops-tasks`, the binary with the tasks that use pgops itself: built with cargo
//! (once what it links is installed), then run in place of this process, so Ctrl-C and
//! SIGTERM reach it directly.

use std::{
    ffi::OsString,
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Command, ExitCode},
};

use anyhow::Context as _;

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
    let mut executable = None;
    crate::cargo_artifacts(
        &[
            "build",
            "--package",
            "pgops-tasks",
            "--bin",
            "pgops-tasks",
            "--message-format=json-render-diagnostics",
        ],
        None,
        |message| {
            if message["target"]["name"] == "pgops-tasks"
                && let Some(path) = message["executable"].as_str()
            {
                executable = Some(PathBuf::from(path));
            }
        },
    )?;
    executable.context("cargo build did not name the pgops-tasks executable")
}
