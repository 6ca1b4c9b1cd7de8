//! The one place that installs what the tasks need, used by every task before it runs: on a
//! Debian or Ubuntu machine with only Rust, `cargo xtask dev` and `cargo xtask ci` are the
//! whole set-up. Debian packages go through `apt-get` (as root, or through `sudo`); Python
//! tools (moto's S3 server) into a virtual environment under `target/pgops-tools`, never into
//! the system's Python (PEP 668 refuses that on current Debian and Ubuntu). Where nothing can
//! be installed (no apt-get, neither root nor sudo) it stops with the exact command to run.
//! Every program a later feature needs (PgBouncer, Patroni, etcd, HAProxy, Chromium) is one
//! more [`Requirement`] here.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail, ensure};

/// Options of `cargo xtask install`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to install for.
    #[arg(long = "for", value_enum, default_value = "ci")]
    pub target: Need,
}

/// What a task needs installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Need {
    /// Building the workspace: libpq to link, libclang for PostgreSQL's parser bindings.
    Build,
    /// The dev stack and seeding: the build, and the PostgreSQL server with contrib and HypoPG.
    Dev,
    /// CI: the dev stack's needs, promtool, curl, and moto's S3 server.
    Ci,
    /// Benchmarks: the dev stack's needs, and the tools pgops is compared with.
    Bench,
}

/// What is installed where the tasks find it: the directories to put in front of `PATH`.
#[derive(Debug, Default)]
pub struct Tools {
    bin_dirs: Vec<PathBuf>,
}

impl Tools {
    /// `PATH` with the tools' directories first.
    pub fn path(&self) -> OsString {
        let mut dirs = self.bin_dirs.clone();
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        std::env::join_paths(dirs).unwrap_or_else(|_| std::env::var_os("PATH").unwrap_or_default())
    }
}

/// One thing a task needs: how to tell it is there, and the Debian package that brings it.
struct Requirement {
    /// What it is, for messages.
    what: &'static str,
    /// Which tasks need it.
    needed_by: &'static [Need],
    /// Whether it is there already.
    present: fn() -> bool,
    /// The Debian package(s).
    packages: fn() -> Vec<String>,
}

/// Everything, in install order: a requirement may depend on the ones before it (HypoPG's
/// package is named after the installed server's major version).
const REQUIREMENTS: &[Requirement] = &[
    Requirement {
        what: "libpq (to link diesel)",
        needed_by: &[Need::Build, Need::Dev, Need::Ci, Need::Bench],
        present: libpq_present,
        packages: || vec!["libpq-dev".into()],
    },
    Requirement {
        what: "libclang (PostgreSQL's parser bindings for the migration linter)",
        needed_by: &[Need::Build, Need::Dev, Need::Ci, Need::Bench],
        present: libclang_present,
        packages: || vec!["libclang-dev".into()],
    },
    Requirement {
        what: "the PostgreSQL server",
        needed_by: &[Need::Dev, Need::Ci, Need::Bench],
        present: || std::env::var_os("PGOPS_PG_BINDIR").is_some() || !server_majors().is_empty(),
        packages: || vec!["postgresql".into(), "postgresql-contrib".into()],
    },
    Requirement {
        what: "pg_stat_statements (postgresql-contrib)",
        needed_by: &[Need::Dev, Need::Ci, Need::Bench],
        present: || {
            std::env::var_os("PGOPS_PG_BINDIR").is_some()
                || server_majors()
                    .iter()
                    .any(|m| lib_dir(*m).join("pg_stat_statements.so").is_file())
        },
        packages: || vec!["postgresql-contrib".into()],
    },
    Requirement {
        what: "HypoPG (pgops insights what-if)",
        needed_by: &[Need::Dev, Need::Ci, Need::Bench],
        present: || match newest_major() {
            Some(major) => lib_dir(major).join("hypopg.so").is_file(),
            None => std::env::var_os("PGOPS_PG_BINDIR").is_some(),
        },
        packages: || {
            newest_major()
                .map(|major| vec![format!("postgresql-{major}-hypopg")])
                .unwrap_or_default()
        },
    },
    Requirement {
        what: "promtool (checks the alert rules)",
        needed_by: &[Need::Ci],
        present: || on_path("promtool"),
        packages: || vec!["prometheus".into()],
    },
    Requirement {
        what: "curl (the runbooks' steps)",
        needed_by: &[Need::Ci],
        present: || on_path("curl"),
        packages: || vec!["curl".into()],
    },
    Requirement {
        what: "Python's venv (for moto's S3 server)",
        needed_by: &[Need::Ci],
        present: || {
            Command::new("python3")
                .args(["-c", "import ensurepip, venv"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        },
        packages: || vec!["python3".into(), "python3-venv".into()],
    },
    Requirement {
        what: "pgBackRest (the backup benchmark's anchor)",
        needed_by: &[Need::Bench],
        present: || on_path("pgbackrest"),
        packages: || vec!["pgbackrest".into()],
    },
    Requirement {
        what: "postgres_exporter (the health benchmark's anchor)",
        needed_by: &[Need::Bench],
        present: || on_path("prometheus-postgres-exporter"),
        packages: || vec!["prometheus-postgres-exporter".into()],
    },
];

/// Installs whatever `need` requires and is missing; returns where the tools are.
pub fn ensure(need: Need) -> anyhow::Result<Tools> {
    let mut apt = Apt::default();
    for requirement in REQUIREMENTS.iter().filter(|r| r.needed_by.contains(&need)) {
        if (requirement.present)() {
            continue;
        }
        let packages = (requirement.packages)();
        ensure!(
            !packages.is_empty(),
            "{} is missing and there is no package to install it from",
            requirement.what
        );
        println!("installing {}: {}", requirement.what, packages.join(" "));
        apt.install(&packages)?;
        ensure!(
            (requirement.present)(),
            "installed {} but {} is still missing",
            packages.join(" "),
            requirement.what
        );
    }
    let mut tools = Tools::default();
    if need == Need::Ci {
        tools.bin_dirs.push(s3_server()?);
    }
    Ok(tools)
}

/// moto's S3 server, in a virtual environment under the target directory; returns the
/// environment's `bin/`.
fn s3_server() -> anyhow::Result<PathBuf> {
    let venv = crate::target_dir().join("pgops-tools").join("venv");
    let bin = venv.join("bin");
    if bin.join("moto_server").is_file() {
        return Ok(bin);
    }
    println!("installing moto's S3 server into {}", venv.display());
    run(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv",
    )?;
    run(
        Command::new(bin.join("pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "moto[server]",
        ]),
        "pip install moto[server]",
    )?;
    ensure!(
        bin.join("moto_server").is_file(),
        "pip installed moto but {} is missing",
        bin.join("moto_server").display()
    );
    Ok(bin)
}

/// apt-get, run as root or through sudo; `update` once per run.
#[derive(Debug, Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    fn install(&mut self, packages: &[String]) -> anyhow::Result<()> {
        let by_hand = format!(
            "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}",
            packages.join(" ")
        );
        if !on_path("apt-get") {
            bail!(
                "{} must be installed, and this machine has no apt-get; install the equivalent \
                 packages, or set PGOPS_PG_BINDIR to PostgreSQL's bin directory",
                packages.join(" ")
            );
        }
        if !is_root() && !on_path("sudo") {
            bail!(
                "{} must be installed; as root, run: {by_hand}",
                packages.join(" ")
            );
        }
        // The test kit starts its own clusters: Debian's default cluster would only take a
        // port and memory.
        let conf = "/etc/postgresql-common/createcluster.conf";
        if packages.iter().any(|p| p.starts_with("postgresql")) && !Path::new(conf).exists() {
            run(
                privileged("sh").args([
                    "-c",
                    "mkdir -p /etc/postgresql-common && echo 'create_main_cluster = false' > \"$1\"",
                    "sh",
                    conf,
                ]),
                "writing /etc/postgresql-common/createcluster.conf",
            )?;
        }
        if !self.updated {
            run(
                privileged("apt-get").args(["update", "-qq"]),
                "apt-get update",
            )
            .with_context(|| format!("to do it by hand: {by_hand}"))?;
            self.updated = true;
        }
        run(
            privileged("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            "apt-get install",
        )
        .with_context(|| format!("to do it by hand: {by_hand}"))
    }
}

/// `program` as root: itself when we are root, through sudo otherwise.
fn privileged(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut cmd = Command::new("sudo");
        // sudo drops the environment; keep apt-get non-interactive.
        cmd.args(["DEBIAN_FRONTEND=noninteractive", program]);
        cmd
    }
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    ensure!(status.success(), "{what} failed ({status})");
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Majors with a complete server under `/usr/lib/postgresql/<major>/bin`.
fn server_majors() -> Vec<u32> {
    let mut majors: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|m| Path::new(&format!("/usr/lib/postgresql/{m}/bin/initdb")).is_file())
        .collect();
    majors.sort_unstable();
    majors
}

fn newest_major() -> Option<u32> {
    server_majors().last().copied()
}

fn lib_dir(major: u32) -> PathBuf {
    PathBuf::from(format!("/usr/lib/postgresql/{major}/lib"))
}

fn libpq_present() -> bool {
    Command::new("pg_config")
        .arg("--libdir")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .is_some_and(|out| {
            Path::new(String::from_utf8_lossy(&out.stdout).trim())
                .join("libpq.so")
                .exists()
        })
}

fn libclang_present() -> bool {
    if std::env::var_os("LIBCLANG_PATH").is_some() {
        return true;
    }
    // bindgen looks for libclang.so or libclang-<version>.so(.N).
    Command::new("ldconfig")
        .arg("-p")
        .output()
        .or_else(|_| Command::new("/sbin/ldconfig").arg("-p").output())
        .is_ok_and(|out| {
            String::from_utf8_lossy(&out.stdout).lines().any(|line| {
                let name = line.split_whitespace().next().unwrap_or("");
                name.starts_with("libclang.so")
                    || name
                        .strip_prefix("libclang-")
                        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
        })
}
