//! A real HAProxy (Debian's `haproxy`) in front of an [`HaCluster`], set up the way Patroni's
//! documentation does: a primary listener whose servers are checked with `GET /primary` on
//! each node's REST API, and a replicas listener checked with `GET /replica`. Runs as the
//! server user; stopped and its directory removed when dropped, or by its watchdog when the
//! owning process goes away, however it goes.

use std::{
    fmt::Write as _,
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use diesel::{Connection, PgConnection};

use crate::{
    Error, HaCluster, Result, SUPERUSER,
    process::{self, RunAs, Watchdog},
};

/// HAProxy's health-check settings for every server.
pub const HAPROXY_CHECKS: &str = "inter 1s fall 2 rise 1 on-marked-down shutdown-sessions";

/// A running HAProxy.
#[derive(Debug)]
pub struct HaProxy {
    primary_port: u16,
    replica_port: u16,
    root: PathBuf,
    watchdog: Option<Watchdog>,
}

impl HaProxy {
    /// Starts HAProxy in front of `cluster`, and waits until it routes to the primary.
    pub fn start(cluster: &HaCluster) -> Result<HaProxy> {
        let program = process::find_tool("haproxy", "haproxy", "/usr/sbin")?;
        let run_as = RunAs::detect()?;
        run_as.check_can_run(&program)?;
        let root = tempfile::Builder::new()
            .prefix("pgops-haproxy-")
            .tempdir()
            .map_err(|e| Error::io("creating an HAProxy directory", e))?
            .keep();
        run_as.own(&root)?;
        let watchdog = Watchdog::daemon(&run_as, &root, "haproxy.pid")?;
        let (primary_port, replica_port) = (pgops_pg::free_port()?, pgops_pg::free_port()?);
        let mut cfg = String::from(
            "global\n  maxconn 2000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30m\n  timeout server 30m\n  timeout check 2s\n",
        );
        for (name, port, check) in [
            ("primary", primary_port, "/primary"),
            ("replicas", replica_port, "/replica"),
        ] {
            let _ = write!(
                cfg,
                "listen {name}\n  bind 127.0.0.1:{port}\n  balance roundrobin\n  option httpchk GET {check}\n  http-check expect status 200\n  default-server {HAPROXY_CHECKS}\n"
            );
            for node in cluster.nodes() {
                let _ = writeln!(
                    cfg,
                    "  server {} 127.0.0.1:{} check port {}",
                    node.name(),
                    node.pg_port(),
                    node.rest_port()
                );
            }
        }
        let path = root.join("haproxy.cfg");
        fs::write(&path, cfg).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        run_as.own(&path)?;
        let mut cmd = run_as.command(&program, &root);
        cmd.arg("-D")
            .arg("-p")
            .arg(root.join("haproxy.pid"))
            .arg("-f")
            .arg(&path);
        process::run(cmd, "haproxy")?;
        let haproxy = HaProxy {
            primary_port,
            replica_port,
            root,
            watchdog: Some(watchdog),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while PgConnection::establish(&haproxy.primary_url("postgres")).is_err() {
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: "HAProxy to route to the primary".into(),
                    waited: Duration::from_secs(30),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(haproxy)
    }

    /// A URL for database `db` through the primary listener.
    pub fn primary_url(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{db}",
            self.primary_port
        )
    }

    /// A URL for database `db` through the replicas listener.
    pub fn replica_url(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{db}",
            self.replica_port
        )
    }

    /// The directory it runs in (its configuration and pid file; removed on drop).
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// Its process id, from its pid file.
    pub fn pid(&self) -> Option<i32> {
        fs::read_to_string(self.root.join("haproxy.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            watchdog.finish();
        }
    }
}
