//! Finding PostgreSQL's programs: `PGOPS_PG_BINDIR`, then `pg_config --bindir`, then the
//! newest `/usr/lib/postgresql/*/bin`, then `PATH`. Server binaries ([`PgBinaries`]) must be
//! a complete set in one directory; a client program ([`find_program`]) is the first found.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{Error, Result};

/// The programs every cluster needs; a directory counts only if it holds all of them. Client
/// programs (`pg_basebackup`, `pgbench`, ...) may come from elsewhere: see
/// [`PgBinaries::program`].
const REQUIRED: &[&str] = &["initdb", "pg_ctl", "postgres"];

/// A directory holding a complete set of PostgreSQL server binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    bindir: PathBuf,
}

impl PgBinaries {
    /// Finds the server binaries in the documented order, or explains how to install them.
    pub fn discover() -> Result<Self> {
        let from_env = env::var_os("PGOPS_PG_BINDIR").map(PathBuf::from);
        discover_in(
            from_env,
            pg_config_bindir(),
            newest_debian_bindir(Path::new("/usr/lib/postgresql")),
            &path_dirs(),
        )
    }

    /// Uses the given directory, which must hold the server binaries.
    pub fn in_dir(bindir: impl Into<PathBuf>) -> Result<Self> {
        let bindir = bindir.into();
        if is_complete(&bindir) {
            Ok(PgBinaries { bindir })
        } else {
            Err(Error::BinariesNotFound {
                searched: bindir.display().to_string(),
            })
        }
    }

    /// The directory that holds the binaries.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The full path of one program, such as `pg_dump`.
    /// A server-only build (the server binaries of another major, say) has no client
    /// programs: those come from the installed PostgreSQL ([`find_installed_program`]), and
    /// work against servers of the same or an older major.
    pub fn program(&self, name: &str) -> PathBuf {
        let here = self.bindir.join(name);
        if here.is_file() {
            return here;
        }
        find_installed_program(name).unwrap_or(here)
    }

    /// Whether the server can load the shared library `name` (say `pg_stat_statements`,
    /// which Debian ships in `postgresql-contrib`).
    pub fn has_library(&self, name: &str) -> bool {
        let pkglibdir = Command::new(self.bindir.join("pg_config"))
            .arg("--pkglibdir")
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        let lib = self.bindir.parent().map(|p| p.join("lib"));
        let beside = lib
            .iter()
            .flat_map(|lib| [lib.clone(), lib.join("postgresql")]);
        pkglibdir
            .into_iter()
            .chain(beside)
            .any(|dir| dir.join(format!("{name}.so")).is_file())
    }

    /// The server's major version, from `postgres --version` (`postgres (PostgreSQL) 15.18 ...`).
    pub fn major_version(&self) -> Result<u32> {
        let out = Command::new(self.program("postgres"))
            .arg("--version")
            .output()
            .map_err(Error::io(format!(
                "running {}",
                self.program("postgres").display()
            )))?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse_major_version(&text).ok_or_else(|| Error::Program {
            program: "postgres --version".into(),
            status: out.status.to_string(),
            output: text.into_owned(),
        })
    }
}

/// Finds one PostgreSQL program (`pg_dump`, `pg_ctl`, ...): only in `PGOPS_PG_BINDIR` when it
/// is set; otherwise the first of `pg_config --bindir`, the newest `/usr/lib/postgresql/*/bin`
/// and `PATH` that has it.
pub fn find_program(program: &str) -> Result<PathBuf> {
    if let Some(dir) = env::var_os("PGOPS_PG_BINDIR") {
        // An explicit setting is obeyed, not second-guessed.
        let path = PathBuf::from(&dir).join(program);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::MissingProgram {
                program: program.to_owned(),
                searched: format!("PGOPS_PG_BINDIR ({})", PathBuf::from(dir).display()),
            })
        };
    }
    find_installed_program(program)
}

/// Finds an installed PostgreSQL program, ignoring `PGOPS_PG_BINDIR`: the first of
/// `pg_config --bindir`, the newest `/usr/lib/postgresql/*/bin` and `PATH` that has it.
pub fn find_installed_program(program: &str) -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = pg_config_bindir().into_iter().collect();
    dirs.extend(debian_bindirs(Path::new("/usr/lib/postgresql")));
    dirs.extend(path_dirs());
    dirs.iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::MissingProgram {
            program: program.to_owned(),
            searched: "pg_config --bindir, /usr/lib/postgresql/*/bin and PATH".into(),
        })
}

fn pg_config_bindir() -> Option<PathBuf> {
    Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn path_dirs() -> Vec<PathBuf> {
    env::var_os("PATH")
        .map(|paths| env::split_paths(&paths).collect())
        .unwrap_or_default()
}

/// Every `<root>/<major>/bin`, newest first, as laid out by Debian's packages.
fn debian_bindirs(root: &Path) -> Vec<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions.into_iter().rev().map(|(_, bin)| bin).collect()
}

/// The decision of [`PgBinaries::discover`] over its inputs, kept pure for tests.
fn discover_in(
    from_env: Option<PathBuf>,
    from_pg_config: Option<PathBuf>,
    newest_debian: Option<PathBuf>,
    path: &[PathBuf],
) -> Result<PgBinaries> {
    let mut searched = Vec::new();
    if let Some(dir) = from_env {
        // An explicit setting that is wrong is an error, not something to silently skip.
        return PgBinaries::in_dir(&dir).map_err(|_| Error::BinariesNotFound {
            searched: format!("PGOPS_PG_BINDIR={}", dir.display()),
        });
    }
    for dir in from_pg_config.into_iter().chain(newest_debian) {
        if is_complete(&dir) {
            return Ok(PgBinaries { bindir: dir });
        }
        searched.push(dir.display().to_string());
    }
    // On PATH the programs may be symlinks into the real bindir: resolve through `postgres`.
    for dir in path {
        if dir.join("postgres").is_file() && dir.join("initdb").is_file() {
            let real = std::fs::canonicalize(dir.join("postgres"))
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf));
            for candidate in real.into_iter().chain([dir.clone()]) {
                if is_complete(&candidate) {
                    return Ok(PgBinaries { bindir: candidate });
                }
            }
        }
    }
    searched.push("PATH".into());
    Err(Error::BinariesNotFound {
        searched: searched.join(", "),
    })
}

fn is_complete(dir: &Path) -> bool {
    REQUIRED.iter().all(|name| dir.join(name).is_file())
}

/// The highest-numbered `<root>/<major>/bin`, as laid out by Debian's packages.
fn newest_debian_bindir(root: &Path) -> Option<PathBuf> {
    debian_bindirs(root)
        .into_iter()
        .find(|bin| is_complete(bin))
}

/// The major version a PostgreSQL program reports (`pg_basebackup --version`), if it runs.
pub fn program_major_version(program: &Path) -> Option<u32> {
    let out = Command::new(program).arg("--version").output().ok()?;
    parse_major_version(&String::from_utf8_lossy(&out.stdout))
}

fn parse_major_version(text: &str) -> Option<u32> {
    let version = text.split_whitespace().nth(2)?;
    version
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bindir(root: &Path, name: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for program in REQUIRED {
            std::fs::write(dir.join(program), "").unwrap();
        }
        dir
    }

    #[test]
    fn explicit_setting_wins_and_must_be_complete() {
        let tmp = tempfile::tempdir().unwrap();
        let good = fake_bindir(tmp.path(), "good");
        let other = fake_bindir(tmp.path(), "other");
        let found = discover_in(Some(good.clone()), Some(other.clone()), None, &[]).unwrap();
        assert_eq!(found.bindir(), good);

        let err =
            discover_in(Some(tmp.path().join("missing")), Some(other), None, &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("PGOPS_PG_BINDIR="), "{msg}");
        assert!(msg.contains("postgresql-contrib"), "{msg}");
    }

    #[test]
    fn falls_through_incomplete_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let client_only = tmp.path().join("client");
        std::fs::create_dir_all(&client_only).unwrap();
        let server = fake_bindir(tmp.path(), "server");
        let found = discover_in(None, Some(client_only), Some(server.clone()), &[]).unwrap();
        assert_eq!(found.bindir(), server);
    }

    #[test]
    fn missing_everywhere_names_the_package() {
        let tmp = tempfile::tempdir().unwrap();
        let err =
            discover_in(None, Some(tmp.path().into()), None, &[tmp.path().into()]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("install Debian's `postgresql`"), "{msg}");
        assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
    }

    #[test]
    fn newest_debian_version_is_chosen() {
        let tmp = tempfile::tempdir().unwrap();
        for version in ["9", "15", "13"] {
            fake_bindir(&tmp.path().join(version), "bin");
        }
        std::fs::create_dir_all(tmp.path().join("17/bin")).unwrap(); // incomplete: skipped
        let found = newest_debian_bindir(tmp.path()).unwrap();
        assert_eq!(found, tmp.path().join("15/bin"));
    }

    #[test]
    fn reads_major_version() {
        assert_eq!(
            parse_major_version("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(
            parse_major_version("postgres (PostgreSQL) 17beta1"),
            Some(17)
        );
        assert_eq!(parse_major_version("nonsense"), None);
    }
}
