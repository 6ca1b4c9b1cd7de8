//! How a cluster is built: WAL level, archiving, preloaded libraries, extra settings, where it
//! lives and on which port. Plain data with builder methods; `config` turns it into the
//! server's settings.

use std::path::PathBuf;

/// How much WAL the server writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalLevel {
    /// Enough for crash recovery only; no replicas, no archiving.
    Minimal,
    /// Streaming replicas and archiving (PostgreSQL's default).
    Replica,
    /// Everything `replica` has, plus logical decoding.
    Logical,
}

/// Where finished WAL segments go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Archive {
    /// `archive_mode = off`.
    Off,
    /// `archive_mode = on` with this `archive_command` (`%p` and `%f` as in PostgreSQL).
    Command(String),
    /// `archive_mode = on`, copying segments into `archive/` inside the cluster's directory
    /// (see [`Cluster::archive_dir`]), atomically (copy, then rename) and never overwriting one.
    LocalDir,
}

/// How to build a cluster. The defaults suit tests: `wal_level = replica`, no archiving,
/// `fsync = off` (a crashed server still recovers; only an OS crash could lose data).
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub(crate) wal_level: WalLevel,
    pub(crate) archive: Archive,
    pub(crate) shared_preload_libraries: Vec<String>,
    pub(crate) settings: Vec<(String, String)>,
    pub(crate) fsync: bool,
    pub(crate) require_passwords: bool,
    pub(crate) tls: bool,
    pub(crate) base_dir: Option<PathBuf>,
    pub(crate) keep_in: Option<PathBuf>,
    pub(crate) port: Option<u16>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            wal_level: WalLevel::Replica,
            archive: Archive::Off,
            shared_preload_libraries: Vec::new(),
            settings: Vec::new(),
            fsync: false,
            require_passwords: false,
            tls: false,
            base_dir: None,
            keep_in: None,
            port: None,
        }
    }
}

impl ClusterOptions {
    /// Sets `wal_level`.
    pub fn wal_level(mut self, level: WalLevel) -> Self {
        self.wal_level = level;
        self
    }

    /// Turns WAL archiving on or off.
    pub fn archive(mut self, archive: Archive) -> Self {
        self.archive = archive;
        self
    }

    /// Adds a library to `shared_preload_libraries` (for example `pg_stat_statements`).
    pub fn preload(mut self, library: impl Into<String>) -> Self {
        self.shared_preload_libraries.push(library.into());
        self
    }

    /// Sets any server setting (GUC); later calls win over earlier ones and over the kit's defaults.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Keeps `fsync` on (off by default: tests do not survive OS crashes anyway).
    pub fn fsync(mut self, on: bool) -> Self {
        self.fsync = on;
        self
    }

    /// Requires a password (SCRAM) for every role but the kit's superuser on TCP, so tests can
    /// exercise authentication; the superuser keeps trust authentication.
    pub fn require_passwords(mut self, on: bool) -> Self {
        self.require_passwords = on;
        self
    }

    /// TLS on, and only TLS over TCP (`hostssl` lines; the unix socket stays open): a CA and
    /// a server certificate for `localhost` are made for the cluster ([`Cluster::tls`]).
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Creates the cluster's temp dir under `dir` instead of the system temp dir. When the kit
    /// runs as root, the server user must be able to enter `dir`.
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// Uses `dir` as the cluster's directory and keeps it: a data directory already there is
    /// started again (after stopping a server an earlier owner left running on it); dropping
    /// the cluster, or the death of its owner, stops the server with a fast shutdown and
    /// leaves the files. A data directory made by another major version is refused.
    pub fn keep_in(mut self, dir: impl Into<PathBuf>) -> Self {
        self.keep_in = Some(dir.into());
        self
    }

    /// Listens on this port on 127.0.0.1 instead of a free one the kit picks; a busy port is
    /// an error ([`Error::PortBusy`]) rather than a reason to move.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The options a streaming replica of a primary built with `self` gets: the same settings,
    /// no archiving of its own.
    pub(crate) fn for_replica(&self) -> Self {
        ClusterOptions {
            archive: Archive::Off,
            keep_in: None,
            port: None,
            ..self.clone()
        }
    }
}
