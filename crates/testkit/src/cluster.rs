//! One PostgreSQL cluster: its own temp dir, port and socket dir; started, driven (restart,
//! crash, kill a backend) and removed when dropped, or by its watchdog when the owning process
//! dies without dropping it. A kept cluster ([`ClusterOptions::keep_in`]) lives in a fixed
//! directory instead: started again on the data it holds, and only stopped, never removed.

use std::{
    fmt, fs,
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard, PoisonError},
    thread,
    time::{Duration, Instant},
};

use diesel::{
    Connection, PgConnection, RunQueryDsl,
    connection::SimpleConnection,
    dsl::sql,
    sql_types::{Nullable, Text},
};

use crate::{
    Error, Lsn, PgBinaries, Result, config,
    options::{Archive, ClusterOptions},
    process::{self, RunAs, Watchdog},
};

/// The superuser every test cluster is created with (trust authentication on loopback).
pub const SUPERUSER: &str = "postgres";

/// A running (or stopped) PostgreSQL cluster owned by this process.
pub struct Cluster {
    bins: PgBinaries,
    /// The server's major version, read once.
    major: u32,
    run_as: RunAs,
    root: PathBuf,
    port: u16,
    options: ClusterOptions,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    running: bool,
    watchdog: Option<Watchdog>,
}

impl Cluster {
    /// Creates (initdb) and starts a new primary cluster.
    /// With [`ClusterOptions::keep_in`], starts the data directory found there instead, if any.
    pub fn start(options: ClusterOptions) -> Result<Self> {
        let mut cluster = Self::prepare(options)?;
        if !cluster.reopen()? {
            cluster.initdb()?;
        }
        cluster.start_on_a_free_port(None)?;
        cluster.wait_until_writable()?;
        Ok(cluster)
    }

    /// Starts a cluster on a data directory that `fill` lays out (a restored backup, say):
    /// `fill` gets the empty data directory's path; the kit then hands it to the server user,
    /// writes its own settings (port, socket dir, archiving from `options`) and starts it.
    /// Returns once the server accepts connections (a server still in recovery, or paused at
    /// its target, answers read-only).
    pub fn start_restored(
        options: ClusterOptions,
        fill: impl FnOnce(&Path) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>,
    ) -> Result<Self> {
        let mut cluster = Self::prepare(options)?;
        let data = cluster.data_dir();
        fill(&data).map_err(|e| {
            Error::io(
                format!("laying out {}", data.display()),
                std::io::Error::other(e.to_string()),
            )
        })?;
        let mut stack = vec![data.clone()];
        while let Some(path) = stack.pop() {
            cluster.run_as.own(&path)?;
            if path.is_dir() && !path.is_symlink() {
                let entries = fs::read_dir(&path)
                    .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
                for entry in entries.flatten() {
                    stack.push(entry.path());
                }
            }
        }
        cluster.include_kit_settings(&data)?;
        cluster.start_on_a_free_port(None)?;
        Ok(cluster)
    }

    /// Stops a server left running on the kept cluster directory `dir` (by a process that was
    /// killed along with its watchdog, say), with a fast shutdown. `true` when there was one.
    pub fn stop_left_over(dir: &Path) -> Result<bool> {
        let data = dir.join("data");
        if !data.join("postmaster.pid").exists() {
            return Ok(false);
        }
        stop_if_running(&PgBinaries::discover()?, &RunAs::detect()?, &data)
    }

    /// Creates `dir` (and its parents) owned by the server user, for files the server writes
    /// outside its data directory (a WAL archive, say).
    pub fn make_server_dir(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        Ok(self.run_as.own(dir)?)
    }

    /// Creates and starts a streaming replica of this running cluster (`pg_basebackup -R`).
    pub fn create_replica(&self) -> Result<crate::Replica> {
        self.create_replica_with(self.options.for_replica())
    }

    /// Creates and starts a streaming replica with its own options (a kept directory or a
    /// fixed port, say; archiving is always off). A kept replica whose data directory exists
    /// is started again and streams from this primary.
    pub fn create_replica_with(&self, options: ClusterOptions) -> Result<crate::Replica> {
        self.ensure_running()?;
        let options = ClusterOptions {
            archive: Archive::Off,
            ..options
        };
        let mut replica = Self::prepare(options)?;
        let name = replica.application_name();
        let conninfo = format!(
            "host=127.0.0.1 port={} user={SUPERUSER} application_name={name}",
            self.port
        );
        if replica.reopen()? {
            replica.start_on_a_free_port(Some(&conninfo))?;
            return Ok(crate::Replica::new(replica));
        }
        let partial = replica.fresh_partial_dir()?;
        // An installed pg_basebackup older than the server (a server-only build of a newer
        // major) refuses it: copy through the low-level backup API instead.
        let pg_basebackup = replica.bins.program("pg_basebackup");
        if pgops_pg::program_major_version(&pg_basebackup).is_none_or(|m| m < self.major) {
            let mut conn = self.connect("postgres")?;
            crate::basebackup::copy(&mut conn, self.major, &self.data_dir(), &partial)?;
            replica.run_as.own_tree(&partial)?;
            replica.complete(&partial)?;
            replica.start_on_a_free_port(Some(&conninfo))?;
            return Ok(crate::Replica::new(replica));
        }
        let mut cmd = replica.pg_command("pg_basebackup");
        cmd.arg("--pgdata")
            .arg(&partial)
            .arg("--dbname")
            .arg(&conninfo)
            .args([
                "--write-recovery-conf",
                "--wal-method=stream",
                "--checkpoint=fast",
            ]);
        if !replica.options.fsync {
            cmd.arg("--no-sync");
        }
        process::run(cmd, "pg_basebackup")?;
        replica.complete(&partial)?;
        replica.start_on_a_free_port(Some(&conninfo))?;
        Ok(crate::Replica::new(replica))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's own directory (data, log, socket dir and archive live inside it).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The directory holding the server's unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("sock")
    }

    /// The server log.
    pub fn log_file(&self) -> PathBuf {
        self.root.join("log").join("postgres.log")
    }

    /// The client side of a TLS cluster ([`ClusterOptions::tls`]): the CA that signed the
    /// server's certificate and an unrelated one.
    pub fn tls(&self) -> Option<crate::TlsFiles> {
        self.options.tls.then(|| crate::TlsFiles {
            root_cert: self.tls_dir().join("root.crt"),
            other_root_cert: self.tls_dir().join("other-root.crt"),
        })
    }

    /// A URL for database `db` that verifies the server fully: `host=localhost` (the name in
    /// its certificate), `sslmode=verify-full` and the cluster's CA. `None` without TLS.
    pub fn tls_url(&self, db: &str) -> Option<String> {
        self.tls().map(|files| {
            format!(
                "postgres://{SUPERUSER}@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}",
                self.port,
                files.root_cert.display()
            )
        })
    }

    fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }

    /// Where [`Archive::LocalDir`] puts WAL segments.
    pub fn archive_dir(&self) -> PathBuf {
        self.root.join("archive")
    }

    /// The server's major version (13, ..., 18).
    pub fn major_version(&self) -> u32 {
        self.major
    }

    /// The binaries this cluster runs.
    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    /// The options it was built with.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// A connection URL for database `db` (superuser, no password: trust on loopback).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Connects to database `db`.
    pub fn connect(&self, db: &str) -> Result<PgConnection> {
        let url = self.url(db);
        PgConnection::establish(&url).map_err(|source| Error::Connect { url, source })
    }

    /// Runs one or more statements in database `db`.
    pub fn execute(&self, db: &str, statements: &str) -> Result<()> {
        let mut conn = self.connect(db)?;
        batch(&mut conn, statements)
    }

    /// Evaluates one SQL expression in database `db` and returns it as text (`NULL` as `None`).
    pub fn query_text(&self, db: &str, expression: &str) -> Result<Option<String>> {
        let mut conn = self.connect(db)?;
        query_text(&mut conn, expression)
    }

    /// Creates an empty database (from `template0`).
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.execute(
            "postgres",
            &format!(
                "CREATE DATABASE {} TEMPLATE template0",
                pgops_pg::quote_ident(name)
            ),
        )
    }

    /// Whether the server is running, as far as this handle knows.
    pub fn is_running(&self) -> bool {
        self.state().running
    }

    /// The postmaster's process id, from `postmaster.pid`.
    pub fn postmaster_pid(&self) -> Result<i32> {
        let path = self.data_dir().join("postmaster.pid");
        let text = fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        text.lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .ok_or_else(|| {
                Error::io(
                    format!("parsing {}", path.display()),
                    std::io::ErrorKind::InvalidData.into(),
                )
            })
    }

    /// The current WAL insert position (`pg_current_wal_lsn()`); on a primary only.
    pub fn current_wal_lsn(&self) -> Result<Lsn> {
        self.lsn_of("pg_current_wal_lsn()")
    }

    /// Starts a stopped server again, on the same port.
    pub fn start_again(&self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        self.start_server()
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`).
    pub fn stop(&self) -> Result<()> {
        self.pg_ctl_stop("fast")
    }

    /// Stops the server the way a crash would (`pg_ctl stop -m immediate`): no checkpoint,
    /// crash recovery on the next start.
    pub fn crash(&self) -> Result<()> {
        self.pg_ctl_stop("immediate")
    }

    /// Stops cleanly and starts again.
    pub fn restart(&self) -> Result<()> {
        self.stop()?;
        self.start_server()
    }

    /// Ends one backend gracefully (`pg_terminate_backend`).
    pub fn terminate_backend(&self, pid: i32) -> Result<bool> {
        let value = self.query_text("postgres", &format!("pg_terminate_backend({pid})"))?;
        Ok(value.as_deref() == Some("true"))
    }

    /// Kills one backend with SIGKILL, as the OOM killer would: the postmaster then resets
    /// every session and runs crash recovery.
    pub fn kill_backend(&self, pid: i32) -> Result<()> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|e| Error::io(format!("kill -9 {pid}"), e.into()))
    }

    /// The last lines of the server log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        process::tail(&self.log_file(), lines)
    }

    pub(crate) fn lsn_of(&self, expression: &str) -> Result<Lsn> {
        let text = self
            .query_text("postgres", expression)?
            .ok_or_else(|| Error::Pg(pgops_pg::Error::InvalidLsn("NULL".into())))?;
        Ok(text.parse()?)
    }

    /// Creates the directory, hands it to the server user and arms the watchdog.
    fn prepare(options: ClusterOptions) -> Result<Self> {
        let bins = PgBinaries::discover()?;
        let major = bins.major_version()?;
        let run_as = RunAs::detect()?;
        let root = match &options.keep_in {
            Some(dir) => std::path::absolute(dir)
                .map_err(|e| Error::io(format!("resolving {}", dir.display()), e))?,
            None => {
                let base = options.base_dir.clone().unwrap_or_else(std::env::temp_dir);
                tempfile::Builder::new()
                    .prefix("pgops-")
                    .tempdir_in(&base)
                    .map_err(|e| {
                        Error::io(
                            format!("creating a cluster directory in {}", base.display()),
                            e,
                        )
                    })?
                    .keep()
            }
        };
        let port = match options.port {
            Some(port) => port,
            None => pgops_pg::free_port()?,
        };
        let cluster = Cluster {
            port,
            state: Mutex::new(State {
                running: false,
                watchdog: None,
            }),
            bins,
            major,
            run_as,
            root,
            options,
        };
        for dir in [
            cluster.root.clone(),
            cluster.socket_dir(),
            cluster.root.join("log"),
            cluster.archive_dir(),
        ] {
            fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            cluster.run_as.own(&dir)?;
        }
        let watchdog = Watchdog::spawn(
            &cluster.run_as,
            &cluster.bins.program("pg_ctl"),
            &cluster.data_dir(),
            &cluster.root,
            cluster.options.keep_in.is_none(),
        )?;
        cluster.state().watchdog = Some(watchdog);
        Ok(cluster)
    }

    /// For a kept cluster whose data directory exists: checks that these binaries can run
    /// it, stops a server an earlier owner left running on it, and says `true`. `false` when
    /// there is nothing to reopen.
    fn reopen(&self) -> Result<bool> {
        if self.options.keep_in.is_none() {
            return Ok(false);
        }
        let data = self.data_dir();
        let version_file = data.join("PG_VERSION");
        let found = match fs::read_to_string(&version_file) {
            Ok(text) => text.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if data.exists() {
                    return Err(Error::NotADataDirectory(data));
                }
                return Ok(false);
            }
            Err(e) => return Err(Error::io(format!("reading {}", version_file.display()), e)),
        };
        let expected = self.bins.major_version()?;
        if found != expected.to_string() {
            return Err(Error::VersionMismatch {
                data,
                found,
                expected,
                bindir: self.bins.bindir().to_path_buf(),
            });
        }
        if stop_if_running(&self.bins, &self.run_as, &data)? {
            tracing::info!(data = %data.display(), "stopped a server an earlier run left behind");
        }
        self.include_kit_settings(&data)?;
        Ok(true)
    }

    /// Creates the data directory under a temporary name and renames it into place once it
    /// is complete, so a kept cluster whose owner died half-way never reopens half a cluster.
    fn initdb(&self) -> Result<()> {
        let partial = self.fresh_partial_dir()?;
        let mut cmd = self.pg_command("initdb");
        cmd.arg("--pgdata").arg(&partial).args([
            "--username",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
        ]);
        // initdb learned --no-instructions in PostgreSQL 14.
        if self.major >= 14 {
            cmd.arg("--no-instructions");
        }
        if !self.options.fsync {
            cmd.arg("--no-sync");
        }
        process::run(cmd, "initdb")?;
        self.include_kit_settings(&partial)?;
        if self.options.tls {
            let (_, server) = crate::tls::generate(&self.tls_dir())?;
            self.write_file(&partial.join("server.crt"), &server.cert)?;
            let key = partial.join("server.key");
            self.write_file(&key, &server.key)?;
            // PostgreSQL refuses a key that others may read.
            fs::set_permissions(&key, fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::io(format!("restricting {}", key.display()), e))?;
            let host = |kind: &str| {
                if self.options.require_passwords {
                    format!(
                        "hostssl {kind} {SUPERUSER} 127.0.0.1/32 trust\n\
                         hostssl {kind} all 127.0.0.1/32 scram-sha-256\n"
                    )
                } else {
                    format!("hostssl {kind} all 127.0.0.1/32 trust\n")
                }
            };
            let hba = format!(
                "# written by pgops-testkit: TLS only over TCP\n\
                 local all all trust\n\
                 local replication all trust\n{}{}\
                 hostnossl all all 0.0.0.0/0 reject\n\
                 hostnossl replication all 0.0.0.0/0 reject\n",
                host("all"),
                host("replication")
            );
            self.write_file(&partial.join("pg_hba.conf"), &hba)?;
        } else if self.options.require_passwords {
            let hba = format!(
                "# written by pgops-testkit\n\
                 local all all trust\n\
                 host all {SUPERUSER} 127.0.0.1/32 trust\n\
                 host replication {SUPERUSER} 127.0.0.1/32 trust\n\
                 host all all 127.0.0.1/32 scram-sha-256\n"
            );
            self.write_file(&partial.join("pg_hba.conf"), &hba)?;
        }
        self.complete(&partial)
    }

    /// Makes the `postgresql.conf` in `data` include the kit's `pgops.conf` (port, socket
    /// dir, archiving, settings), once.
    fn include_kit_settings(&self, data: &Path) -> Result<()> {
        let conf = data.join("postgresql.conf");
        let text = fs::read_to_string(&conf)
            .map_err(|e| Error::io(format!("reading {}", conf.display()), e))?;
        if !text.contains("include 'pgops.conf'") {
            self.write_file(&conf, &format!("{text}\ninclude 'pgops.conf'\n"))?;
        }
        Ok(())
    }

    /// `data.partial` in the cluster's directory, emptied of what a process that died while
    /// creating the data directory left there.
    fn fresh_partial_dir(&self) -> Result<PathBuf> {
        let partial = self.root.join("data.partial");
        if partial.exists() {
            fs::remove_dir_all(&partial)
                .map_err(|e| Error::io(format!("removing {}", partial.display()), e))?;
        }
        Ok(partial)
    }

    /// Renames a finished `data.partial` to the data directory.
    fn complete(&self, partial: &Path) -> Result<()> {
        let data = self.data_dir();
        fs::rename(partial, &data).map_err(|e| {
            Error::io(
                format!("renaming {} to {}", partial.display(), data.display()),
                e,
            )
        })
    }

    /// Writes `pgops.conf` (port, socket dir, WAL and archive settings, extra settings) into
    /// the data directory; a replica also gets its `primary_conninfo` there.
    fn write_config(&self, primary_conninfo: Option<&str>) -> Result<()> {
        let text = config::render(&config::settings(
            &self.options,
            &config::Place {
                port: self.port,
                socket_dir: &self.socket_dir(),
                archive_dir: &self.archive_dir(),
            },
            primary_conninfo,
        ));
        self.write_file(&self.data_dir().join("pgops.conf"), &text)?;
        if primary_conninfo.is_some() {
            // `pg_basebackup -R` also wrote one to postgresql.auto.conf, which would win over ours.
            let auto = self.data_dir().join("postgresql.auto.conf");
            let text = fs::read_to_string(&auto)
                .map_err(|e| Error::io(format!("reading {}", auto.display()), e))?;
            let kept: String = text
                .lines()
                .filter(|line| !line.trim_start().starts_with("primary_conninfo"))
                .map(|line| format!("{line}\n"))
                .collect();
            self.write_file(&auto, &kept)?;
        }
        Ok(())
    }

    /// Writes the configuration and starts; if another process took the port between our
    /// probe and the server's bind, tries again on another port.
    fn start_on_a_free_port(&mut self, primary_conninfo: Option<&str>) -> Result<()> {
        if self.options.port.is_some() && TcpListener::bind(("127.0.0.1", self.port)).is_err() {
            return Err(Error::PortBusy { port: self.port });
        }
        let mut attempts = 0;
        loop {
            self.write_config(primary_conninfo)?;
            match self.start_server() {
                Err(e)
                    if self.options.port.is_none()
                        && attempts < 5
                        && port_taken(&self.log_tail(20)) =>
                {
                    tracing::debug!(port = self.port, error = %pgops_pg::report(&e), "port taken, trying another");
                    attempts += 1;
                    self.port = pgops_pg::free_port()?;
                }
                other => return other,
            }
        }
    }

    fn start_server(&self) -> Result<()> {
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("--pgdata")
            .arg(self.data_dir())
            .arg("--log")
            .arg(self.log_file())
            .args(["--wait", "--timeout=120", "start"]);
        match process::run(cmd, "pg_ctl start") {
            Ok(_) => {
                self.state().running = true;
                Ok(())
            }
            Err(Error::Tool {
                program,
                status,
                output,
            }) => Err(Error::Tool {
                program,
                status,
                output: format!(
                    "{output}\nserver log ({}):\n{}",
                    self.log_file().display(),
                    self.log_tail(30)
                ),
            }),
            Err(other) => Err(other),
        }
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<()> {
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("--pgdata").arg(self.data_dir()).args([
            "--mode",
            mode,
            "--wait",
            "--timeout=120",
            "stop",
        ]);
        process::run(cmd, &format!("pg_ctl stop -m {mode}"))?;
        self.state().running = false;
        Ok(())
    }

    /// Waits until the new primary accepts writes (it may still be finishing startup).
    fn wait_until_writable(&self) -> Result<()> {
        wait_for(
            "the server to accept connections",
            Duration::from_secs(60),
            || {
                Ok(self
                    .query_text("postgres", "pg_is_in_recovery()")
                    .ok()
                    .flatten()
                    .as_deref()
                    == Some("false"))
            },
        )
    }

    fn ensure_running(&self) -> Result<()> {
        if self.is_running() {
            Ok(())
        } else {
            Err(Error::NotRunning(self.data_dir()))
        }
    }

    fn application_name(&self) -> String {
        let dir = self
            .root
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("replica");
        dir.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    }

    fn pg_command(&self, program: &str) -> std::process::Command {
        self.run_as.command(self.bins.program(program), &self.root)
    }

    fn write_file(&self, path: &Path, text: &str) -> Result<()> {
        fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(self.run_as.own(path)?)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("root", &self.root)
            .field("port", &self.port)
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The watchdog stops the server (immediate: the data is thrown away) and removes the
        // directory as the server user; we wait for it, then make sure nothing is left.
        let watchdog = self.state().watchdog.take();
        if let Some(mut watchdog) = watchdog {
            watchdog.finish();
        }
        if self.options.keep_in.is_none()
            && self.root.exists()
            && let Err(e) = fs::remove_dir_all(&self.root)
        {
            tracing::warn!(dir = %self.root.display(), error = %e, "could not remove test cluster directory");
        }
    }
}

/// Runs statements on a connection, naming them in the error.
pub(crate) fn batch(conn: &mut PgConnection, statements: &str) -> Result<()> {
    conn.batch_execute(statements)
        .map_err(|source| Error::Query {
            sql: statements.to_owned(),
            source,
        })
}

/// Evaluates one SQL expression and returns it as text.
pub(crate) fn query_text(conn: &mut PgConnection, expression: &str) -> Result<Option<String>> {
    diesel::select(sql::<Nullable<Text>>(&format!("({expression})::text")))
        .get_result(conn)
        .map_err(|source| Error::Query {
            sql: expression.to_owned(),
            source,
        })
}

/// Polls `done` every 10 ms until it says yes or `timeout` passes.
pub(crate) fn wait_for(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if done()? {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(Error::Timeout {
                what: what.to_owned(),
                waited: start.elapsed(),
            });
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Stops the server running on `data`, if one is (`pg_ctl status`, then `stop -m fast`);
/// `true` when there was one.
fn stop_if_running(bins: &PgBinaries, run_as: &RunAs, data: &Path) -> Result<bool> {
    let pg_ctl = |args: &[&str]| {
        let mut cmd = run_as.command(bins.program("pg_ctl"), Path::new("/"));
        cmd.arg("--pgdata").arg(data).args(args);
        cmd
    };
    if process::run(pg_ctl(&["status"]), "pg_ctl status").is_err() {
        return Ok(false);
    }
    process::run(
        pg_ctl(&["--mode", "fast", "--wait", "--timeout=120", "stop"]),
        "pg_ctl stop -m fast",
    )?;
    Ok(true)
}

/// Whether a server log says the listen port was taken: `bind` fails when another socket
/// listens already, `listen` when another one bound the port a moment before.
fn port_taken(log: &str) -> bool {
    log.contains("Address already in use")
        || log.contains("could not bind")
        || log.contains("could not listen on")
}

#[cfg(test)]
mod tests {
    use super::port_taken;

    #[test]
    fn both_ways_of_losing_the_port_are_recognised() {
        assert!(port_taken(
            "LOG:  could not listen on IPv4 address \"127.0.0.1\": Address already in use"
        ));
        assert!(port_taken(
            "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use"
        ));
        assert!(!port_taken(
            "FATAL:  data directory \"/tmp/x\" has invalid permissions"
        ));
    }
}
