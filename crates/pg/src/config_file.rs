//! Where `pgops.toml` is: the path given, else `PGOPS_CONFIG`, else `./pgops.toml` when it
//! exists. Every part of pgops that reads the file finds it the same way.

use std::path::{Path, PathBuf};

/// The configuration file to read, if any.
pub fn config_path(given: Option<&Path>) -> Option<PathBuf> {
    match (given, std::env::var_os("PGOPS_CONFIG")) {
        (Some(path), _) => Some(path.to_path_buf()),
        (None, Some(path)) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => Some(PathBuf::from("pgops.toml")).filter(|p| p.is_file()),
    }
}
