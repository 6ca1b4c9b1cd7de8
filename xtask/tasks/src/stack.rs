//! The dev stack's place on disk, shared by `cargo xtask dev` (which writes it) and
//! `cargo xtask seed` (which reads it): the directory and the env file for shells.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

/// The file, inside the stack's directory, with the stack's connection settings as shell
/// assignments (`set -a; . target/pgops-dev/env`); `cargo xtask seed` reads it too.
pub const ENV_FILE: &str = "env";

/// The stack's directory when none is given: `PGOPS_DEV_DIR`, else `target/pgops-dev`.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PGOPS_DEV_DIR") {
        return dir.into();
    }
    let root = crate::workspace_root();
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("pgops-dev")
}

/// The primary's URL recorded by the last `cargo xtask dev` in `dir`, if any.
pub fn recorded_database_url(dir: &Path) -> Option<String> {
    let text = fs::read_to_string(dir.join(ENV_FILE)).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("DATABASE_URL="))
        .map(|v| v.trim_matches('\'').to_owned())
}

/// Writes the stack's connection settings for shells and `cargo xtask seed`.
pub fn write_env(dir: &Path, url: &str, replica_url: &str, repo: &str) -> anyhow::Result<()> {
    let path = dir.join(ENV_FILE);
    let text = format!(
        "# written by cargo xtask dev: set -a; . {}; set +a\n\
         DATABASE_URL='{url}'\n\
         DATABASE_REPLICA_URLS='{replica_url}'\n\
         PGOPS_REPO='{repo}'\n\
         PGOPS_ENV='development'\n",
        path.display()
    );
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}
