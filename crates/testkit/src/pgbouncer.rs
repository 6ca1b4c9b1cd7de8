//! A real PgBouncer (the installed `pgbouncer`, Debian's package) in front of a test cluster:
//! session or transaction pooling, a given `default_pool_size`, on loopback, with its own
//! auth file. Stopped and its directory removed when dropped, or by its watchdog when the
//! owning process goes away, however it goes.

use std::{
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use diesel::{Connection, PgConnection};

use crate::{
    Cluster, Error, Result, SUPERUSER,
    process::{self, RunAs, Watchdog},
};

/// PgBouncer's `pool_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// A server connection per client for the client's whole session.
    Session,
    /// A server connection per transaction: clients share them between transactions.
    Transaction,
}

/// How to configure a PgBouncer.
#[derive(Debug, Clone)]
pub struct PgBouncerOptions {
    pub(crate) mode: PoolMode,
    pub(crate) default_pool_size: u32,
    pub(crate) max_client_conn: u32,
    pub(crate) settings: Vec<(String, String)>,
}

/// A running PgBouncer.
#[derive(Debug)]
pub struct PgBouncer {
    port: u16,
    root: PathBuf,
    password: String,
    watchdog: Option<Watchdog>,
}

/// The password clients give PgBouncer (its auth file holds it; the server trusts loopback).
const PASSWORD: &str = "pgops-bouncer";

impl PgBouncerOptions {
    /// `mode` pooling with `default_pool_size` server connections per database and user.
    pub fn new(mode: PoolMode, default_pool_size: u32) -> Self {
        PgBouncerOptions {
            mode,
            default_pool_size,
            max_client_conn: 1000,
            settings: Vec::new(),
        }
    }

    /// Most client connections PgBouncer accepts.
    pub fn max_client_conn(mut self, n: u32) -> Self {
        self.max_client_conn = n;
        self
    }

    /// Any other `[pgbouncer]` setting.
    pub fn set(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }
}

impl PgBouncer {
    /// Starts PgBouncer in front of `cluster` (every database of it), as the server's OS user.
    pub fn start(cluster: &Cluster, options: PgBouncerOptions) -> Result<PgBouncer> {
        Self::in_front_of(cluster.port(), options)
    }

    /// Starts PgBouncer in front of the server on 127.0.0.1:`port` (a cluster this process did
    /// not start, such as the dev stack's), whose loopback connections need no password.
    pub fn in_front_of(port: u16, options: PgBouncerOptions) -> Result<PgBouncer> {
        let program = process::find_tool("pgbouncer", "pgbouncer", "/usr/sbin")?;
        let run_as = RunAs::detect()?;
        let root = tempfile::Builder::new()
            .prefix("pgops-bouncer-")
            .tempdir()
            .map_err(|e| Error::io("creating a PgBouncer directory", e))?
            .keep();
        run_as.own(&root)?;
        let watchdog = Watchdog::daemon(&run_as, &root, "pgbouncer.pid")?;
        let server_port = port;
        let port = pgops_pg::free_port()?;
        let mode = match options.mode {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        };
        let mut ini = format!(
            "[databases]\n* = host=127.0.0.1 port={server}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = scram-sha-256\nauth_file = {root}/userlist.txt\n\
             admin_users = {SUPERUSER}\nstats_users = {SUPERUSER}\n\
             pool_mode = {mode}\ndefault_pool_size = {size}\nmax_client_conn = {clients}\n\
             logfile = {root}/pgbouncer.log\npidfile = {root}/pgbouncer.pid\n\
             ignore_startup_parameters = extra_float_digits\n",
            server = server_port,
            root = root.display(),
            size = options.default_pool_size,
            clients = options.max_client_conn,
        );
        for (name, value) in &options.settings {
            ini.push_str(&format!("{name} = {value}\n"));
        }
        let write = |name: &str, text: &str| -> Result<()> {
            let path = root.join(name);
            fs::write(&path, text)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            Ok(run_as.own(&path)?)
        };
        write("pgbouncer.ini", &ini)?;
        write("userlist.txt", &format!("\"{SUPERUSER}\" \"{PASSWORD}\"\n"))?;
        let mut cmd = run_as.command(&program, &root);
        cmd.arg("-d").arg(root.join("pgbouncer.ini"));
        process::run(cmd, "pgbouncer")?;
        let bouncer = PgBouncer {
            port,
            root,
            password: PASSWORD.to_owned(),
            watchdog: Some(watchdog),
        };
        bouncer.wait_ready(Duration::from_secs(10))?;
        Ok(bouncer)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for database `db` through PgBouncer (the superuser, with PgBouncer's password).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// The password clients give it (a throwaway one; the server behind trusts loopback).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The admin console's URL (database `pgbouncer`; simple query protocol only).
    pub fn admin_url(&self) -> String {
        self.url("pgbouncer")
    }

    /// The end of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        process::tail(&self.root.join("pgbouncer.log"), lines)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if PgConnection::establish(&self.url("postgres")).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    waited: timeout,
                    what: format!("PgBouncer on port {}: {}", self.port, self.log_tail(20)),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            watchdog.finish();
        }
    }
}
