//! A real high-availability cluster on loopback: one etcd member (Debian's `etcd-server`, v3
//! API) and Patroni nodes (Debian's `patroni`) that each manage a PostgreSQL server, with
//! their REST APIs. Operations the failover tests need: switchover, kill -9 of a node, etcd
//! stop and start, and waits for a leader and for a rejoined replica. Everything is stopped
//! and the directory removed when the handle is dropped, or by the watchdog when the owning
//! process goes away, however it goes.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Mutex,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use pgops_pg::PgBinaries;
use serde::Deserialize;

use crate::{
    Error, Result, SUPERUSER,
    process::{self, RunAs, Watchdog},
};

/// Patroni's timings: those of its own acceptance tests, so a failover takes about `ttl`.
pub const TTL: Duration = Duration::from_secs(20);
const LOOP_WAIT: u64 = 2;
const RETRY_TIMEOUT: u64 = 5;

/// The scope (cluster name) in etcd.
const SCOPE: &str = "pgops";

/// How to build an HA cluster.
#[derive(Debug, Clone)]
pub struct HaOptions {
    pub(crate) nodes: usize,
    pub(crate) synchronous_mode: bool,
    pub(crate) archive_command: Option<String>,
    pub(crate) settings: Vec<(String, String)>,
}

impl Default for HaOptions {
    fn default() -> Self {
        HaOptions {
            nodes: 3,
            synchronous_mode: false,
            archive_command: None,
            settings: Vec::new(),
        }
    }
}

impl HaOptions {
    /// How many Patroni nodes (default 3).
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n.max(1);
        self
    }

    /// Patroni's `synchronous_mode`: a commit is acknowledged once a synchronous standby has
    /// it, and only that standby may be promoted.
    pub fn synchronous_mode(mut self, on: bool) -> Self {
        self.synchronous_mode = on;
        self
    }

    /// Archives WAL with this `archive_command` (`%p` and `%f` as in PostgreSQL) on every node.
    pub fn archive_command(mut self, command: impl Into<String>) -> Self {
        self.archive_command = Some(command.into());
        self
    }

    /// Any other server setting, on every node.
    pub fn set(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }
}

/// One Patroni node: its PostgreSQL and REST ports and its directory.
#[derive(Debug, Clone)]
pub struct Node {
    name: String,
    pg_port: u16,
    rest_port: u16,
    dir: PathBuf,
}

impl Node {
    /// Its member name (`node0`, `node1`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its PostgreSQL port on 127.0.0.1.
    pub fn pg_port(&self) -> u16 {
        self.pg_port
    }

    /// Its REST API's port on 127.0.0.1.
    pub fn rest_port(&self) -> u16 {
        self.rest_port
    }

    /// Its REST API's base URL.
    pub fn rest_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rest_port)
    }

    /// A URL for database `db` on this node only.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.pg_port)
    }

    /// Its PostgreSQL data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Its postmaster's process id, while it runs.
    pub fn postmaster_pid(&self) -> Option<i32> {
        read_pid(&self.data_dir().join("postmaster.pid"), 0).filter(|pid| alive(*pid))
    }

    /// The timeline its PostgreSQL is on: the one a primary writes, or the one a standby's
    /// WAL receiver streams (not a checkpoint's, which lags after a promotion).
    pub fn timeline(&self) -> Result<u32> {
        use diesel::{Connection, PgConnection};
        let url = self.url("postgres");
        let mut conn = PgConnection::establish(&url).map_err(|source| Error::Connect {
            url: url.clone(),
            source,
        })?;
        let name = crate::cluster::query_text(
            &mut conn,
            "CASE WHEN pg_is_in_recovery() \
             THEN (SELECT lpad(to_hex(received_tli), 8, '0') FROM pg_stat_wal_receiver) \
             ELSE pg_walfile_name(pg_current_wal_lsn()) END",
        )?
        .unwrap_or_default();
        name.get(..8)
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .ok_or_else(|| Error::Tool {
                program: "timeline".into(),
                status: "unknown".into(),
                output: format!("{} reports no timeline (no WAL receiver?)", self.name),
            })
    }

    /// Its Patroni's process id, while it runs.
    pub fn patroni_pid(&self) -> Option<i32> {
        read_pid(&self.pid_file(), 0).filter(|pid| alive(*pid))
    }

    /// Its Patroni configuration file (what `patronictl -c` takes).
    pub fn config(&self) -> PathBuf {
        self.dir.join("patroni.yml")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("patroni.log")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("patroni.pid")
    }
}

/// A member as Patroni's `/cluster` reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Member {
    /// Its name.
    pub name: String,
    /// `leader`, `replica`, `sync_standby`, ...
    pub role: String,
    /// `running`, `streaming`, `stopped`, `starting`, `crashed`, ...
    pub state: String,
    /// Its PostgreSQL port.
    pub port: u16,
    /// Its timeline, when running.
    #[serde(default)]
    pub timeline: Option<u32>,
    /// Its lag in bytes, on replicas (Patroni reports `"unknown"` when it cannot tell).
    #[serde(default)]
    pub lag: Option<serde_json::Value>,
}

impl Member {
    /// Whether it is the leader (the primary).
    pub fn is_leader(&self) -> bool {
        self.role == "leader"
    }

    /// Whether it is a replica whose PostgreSQL runs (streaming or about to).
    pub fn is_running_replica(&self) -> bool {
        matches!(self.role.as_str(), "replica" | "sync_standby")
            && matches!(self.state.as_str(), "running" | "streaming")
    }
}

#[derive(Debug, Deserialize)]
struct ClusterView {
    #[serde(default)]
    members: Vec<Member>,
}

/// A running Patroni cluster.
pub struct HaCluster {
    root: PathBuf,
    run_as: RunAs,
    nodes: Vec<Node>,
    etcd_port: u16,
    etcd_peer_port: u16,
    agent: ureq::Agent,
    watchdog: Mutex<Option<Watchdog>>,
}

impl fmt::Debug for HaCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HaCluster")
            .field("root", &self.root)
            .field("nodes", &self.nodes)
            .field("etcd_port", &self.etcd_port)
            .finish_non_exhaustive()
    }
}

impl HaCluster {
    /// Starts etcd and the Patroni nodes, and waits until a leader accepts writes and every
    /// other node replicates (about 20 s on two cores).
    pub fn start(options: HaOptions) -> Result<HaCluster> {
        let patroni = process::find_tool("patroni", "patroni", "/usr/bin")?;
        let etcd = process::find_tool("etcd", "etcd-server", "/usr/bin")?;
        // Patroni also runs pg_rewind, pg_controldata and pg_basebackup: the installed
        // PostgreSQL has them all, the version matrix's server-only builds
        // (`PGOPS_PG_BINDIR`) do not, so an HA cluster always runs the installed one.
        let postgres = pgops_pg::find_installed_program("postgres")?;
        let bins = PgBinaries::in_dir(postgres.parent().unwrap_or(Path::new("/")))?;
        let run_as = RunAs::detect()?;
        for program in [&patroni, &etcd, &bins.program("postgres")] {
            run_as.check_can_run(program)?;
        }
        let root = tempfile::Builder::new()
            .prefix("pgops-ha-")
            .tempdir()
            .map_err(|e| Error::io("creating an HA cluster directory", e))?
            .keep();
        run_as.own(&root)?;
        let watchdog = Watchdog::ha(&run_as, &root, &bins.program("pg_ctl"))?;
        let mut cluster = HaCluster {
            etcd_port: pgops_pg::free_port()?,
            etcd_peer_port: pgops_pg::free_port()?,
            nodes: Vec::new(),
            root,
            run_as,
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(5)))
                .http_status_as_error(false)
                .build()
                .into(),
            watchdog: Mutex::new(Some(watchdog)),
        };
        for index in 0..options.nodes {
            let dir = cluster.root.join(format!("node{index}"));
            make_dir(&cluster.run_as, &dir)?;
            cluster.nodes.push(Node {
                name: format!("node{index}"),
                pg_port: pgops_pg::free_port()?,
                rest_port: pgops_pg::free_port()?,
                dir,
            });
        }
        make_dir(&cluster.run_as, &cluster.root.join("etcd"))?;
        cluster.start_etcd()?;
        for node in &cluster.nodes {
            let yaml = node_config(node, &cluster, &options, bins.bindir());
            fs::write(node.config(), yaml)
                .map_err(|e| Error::io(format!("writing {}", node.config().display()), e))?;
            cluster.run_as.own(&node.config())?;
        }
        // The first node bootstraps alone; the others then clone it, one at a time being
        // more than two cores can take at once.
        let first = cluster.nodes[0].name.clone();
        cluster.start_node(&first)?;
        cluster.wait_for_leader(Duration::from_secs(90), None)?;
        for name in cluster.names().into_iter().skip(1) {
            cluster.start_node(&name)?;
        }
        for name in cluster.names().into_iter().skip(1) {
            cluster.wait_for_replica(&name, Duration::from_secs(90))?;
        }
        if options.synchronous_mode && options.nodes > 1 {
            cluster.wait_for_sync_standby(Duration::from_secs(60))?;
        }
        Ok(cluster)
    }

    /// The directory everything lives in (removed on drop).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| Error::Tool {
                program: "patroni".into(),
                status: "no such member".into(),
                output: format!("no node named {name}"),
            })
    }

    /// The first node that is not `name` (a switchover candidate, say).
    pub fn node_other_than(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name != name)
            .unwrap_or(&self.nodes[0])
    }

    /// The libpq multi-host URL of every node for database `db`, with
    /// `target_session_attrs=read-write`: what a service would be given.
    pub fn multi_host_url(&self, db: &str) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.pg_port))
            .collect();
        format!(
            "postgres://{SUPERUSER}@{}/{db}?target_session_attrs=read-write&connect_timeout=2",
            hosts.join(",")
        )
    }

    /// Every node's REST API base URL.
    pub fn rest_urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::rest_url).collect()
    }

    /// etcd's client URL.
    pub fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.etcd_port)
    }

    /// The cluster as the first node that answers sees it (`GET /cluster`).
    pub fn members(&self) -> Result<Vec<Member>> {
        let mut last = String::from("no node answered");
        for node in &self.nodes {
            match self.get_json::<ClusterView>(&format!("{}/cluster", node.rest_url())) {
                Ok(view) => return Ok(view.members),
                Err(e) => last = e,
            }
        }
        Err(Error::Tool {
            program: "GET /cluster".into(),
            status: "failed".into(),
            output: last,
        })
    }

    /// The current leader, if the cluster has one that runs.
    pub fn leader(&self) -> Result<Option<Member>> {
        Ok(self
            .members()?
            .into_iter()
            .find(|m| m.is_leader() && m.state == "running"))
    }

    /// Waits until a running leader other than `not` is there and accepts writes.
    pub fn wait_for_leader(&self, timeout: Duration, not: Option<&str>) -> Result<Member> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(leader)) = self.leader()
                && Some(leader.name.as_str()) != not
                && let Ok(node) = self.node(&leader.name)
                && writable(&node.url("postgres"))
            {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                return Err(self.timeout(
                    format!(
                        "a Patroni leader{}",
                        not.map(|n| format!(" other than {n}")).unwrap_or_default()
                    ),
                    timeout,
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the cluster is steady: a leader that accepts writes and has completed a
    /// checkpoint on its own timeline (until then its control file still holds its standby
    /// days' recovery point, and a node killed in that window may not rewind), and every other
    /// node streaming from it.
    pub fn wait_until_settled(&self, timeout: Duration) -> Result<Member> {
        let deadline = Instant::now() + timeout;
        let leader = self.wait_for_leader(timeout, None)?;
        let node = self.node(&leader.name)?;
        loop {
            let checkpointed = node.timeline().ok().is_some_and(|current| {
                use diesel::{Connection, PgConnection};
                PgConnection::establish(&node.url("postgres")).is_ok_and(|mut conn| {
                    crate::cluster::query_text(
                        &mut conn,
                        "(SELECT timeline_id FROM pg_control_checkpoint())",
                    )
                    .ok()
                    .flatten()
                        == Some(current.to_string())
                })
            });
            if checkpointed {
                break;
            }
            if Instant::now() >= deadline {
                return Err(self.timeout(
                    format!("a checkpoint of {} on its timeline", leader.name),
                    timeout,
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        for other in self.nodes.iter().filter(|n| n.name != leader.name) {
            self.wait_for_replica(
                &other.name,
                deadline.saturating_duration_since(Instant::now()),
            )?;
        }
        Ok(leader)
    }

    /// Waits until `name` is a running replica that streams from the leader.
    pub fn wait_for_replica(&self, name: &str, timeout: Duration) -> Result<Member> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(members) = self.members()
                && let Some(member) = members.into_iter().find(|m| m.name == name)
                && member.is_running_replica()
                && self.streams(name)
            {
                return Ok(member);
            }
            if Instant::now() >= deadline {
                return Err(self.timeout(format!("{name} to run as a replica"), timeout));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until a member is the synchronous standby (`synchronous_mode`): the only one a
    /// switchover or failover may promote.
    pub fn wait_for_sync_standby(&self, timeout: Duration) -> Result<Member> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(members) = self.members()
                && let Some(member) = members
                    .into_iter()
                    .find(|m| m.role == "sync_standby" && m.is_running_replica())
            {
                return Ok(member);
            }
            if Instant::now() >= deadline {
                return Err(self.timeout("a synchronous standby".into(), timeout));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Planned switchover from the current leader to `candidate`; returns once `candidate`
    /// leads and accepts writes.
    pub fn switchover(&self, candidate: &str) -> Result<Member> {
        let leader = self.wait_for_leader(Duration::from_secs(60), None)?;
        let node = self.node(&leader.name)?;
        let body = serde_json::json!({"leader": leader.name, "candidate": candidate}).to_string();
        // Patroni answers 503, "failed to write switchover key into DCS", when its write to
        // etcd fails (times out on a busy machine); nothing was started, so ask again.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.post(&format!("{}/switchover", node.rest_url()), &body) {
                Err(Error::Tool { status, output, .. })
                    if status == "503"
                        && output.contains("failed to write switchover key")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(500));
                }
                other => break other.map(|_| ())?,
            }
        }
        let new = self.wait_for_leader(Duration::from_secs(60), Some(&leader.name))?;
        if new.name != candidate {
            return Err(Error::Tool {
                program: "switchover".into(),
                status: "wrong leader".into(),
                output: format!("asked for {candidate}, {} leads", new.name),
            });
        }
        Ok(new)
    }

    /// Rebuilds `name`'s data directory from the leader (Patroni's reinitialize: a fresh
    /// base backup), for a node that cannot rejoin by itself, as after a failed rewind.
    pub fn reinit(&self, name: &str) -> Result<()> {
        let node = self.node(name)?;
        let url = format!("{}/reinitialize", node.rest_url());
        self.post(&url, &serde_json::json!({"force": true}).to_string())
            .map(|_| ())
    }

    /// Waits until `name` runs as a replica; if it has not after a minute (a rewind that
    /// failed), rebuilds it with [`HaCluster::reinit`] and waits again. Whether it had to.
    pub fn rejoin(&self, name: &str) -> Result<bool> {
        if self.wait_for_replica(name, Duration::from_secs(60)).is_ok() {
            return Ok(false);
        }
        tracing::warn!(
            node = name,
            "the node did not rejoin by itself; reinitializing it"
        );
        self.reinit(name)?;
        self.wait_for_replica(name, Duration::from_secs(120))?;
        Ok(true)
    }

    /// Puts the cluster in maintenance mode (Patroni's pause: no failover, and Patroni leaves
    /// each PostgreSQL alone) or takes it out again; waits until every node says so.
    pub fn pause(&self, on: bool) -> Result<()> {
        let leader = self.wait_for_leader(Duration::from_secs(60), None)?;
        let url = format!("{}/config", self.node(&leader.name)?.rest_url());
        let body = serde_json::json!({ "pause": on }).to_string();
        let mut response = self
            .agent
            .patch(&url)
            .header("Content-Type", "application/json")
            .send(body.as_str())
            .map_err(|e| Error::Tool {
                program: format!("PATCH {url}"),
                status: "failed".into(),
                output: e.to_string(),
            })?;
        if response.status().as_u16() != 200 {
            return Err(Error::Tool {
                program: format!("PATCH {url}"),
                status: response.status().to_string(),
                output: response.body_mut().read_to_string().unwrap_or_default(),
            });
        }
        #[derive(serde::Deserialize)]
        struct Status {
            #[serde(default)]
            pause: bool,
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &self.nodes {
            loop {
                let status = self.get_json::<Status>(&format!("{}/patroni", node.rest_url()));
                if status.is_ok_and(|s| s.pause == on) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(Error::Tool {
                        program: "pause".into(),
                        status: "timeout".into(),
                        output: format!("{} did not report pause = {on}", node.name),
                    });
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(())
    }

    /// Promotes `name`'s PostgreSQL with `pg_ctl promote`, behind Patroni's back (in a paused
    /// cluster): what an operator does by hand during a network partition, the way to a
    /// split brain.
    pub fn promote_directly(&self, name: &str) -> Result<()> {
        let node = self.node(name)?;
        let pg_ctl = pgops_pg::find_installed_program("pg_ctl")?;
        let mut cmd = self.run_as.command(&pg_ctl, &self.root);
        cmd.arg("promote")
            .arg("--pgdata")
            .arg(node.data_dir())
            .arg("--wait");
        process::run(cmd, "pg_ctl promote").map(|_| ())
    }

    /// kill -9 of a node: its Patroni, then its postmaster (so the leader key stays in etcd
    /// until its TTL runs out, as when a machine dies).
    pub fn kill_node(&self, name: &str) -> Result<()> {
        let node = self.node(name)?;
        for pid in [node.patroni_pid(), node.postmaster_pid()]
            .into_iter()
            .flatten()
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            wait_gone(pid);
        }
        Ok(())
    }

    /// Starts a node's Patroni (again): after [`HaCluster::kill_node`], it rejoins, rewinding
    /// its PostgreSQL if it was ahead of the new timeline.
    pub fn start_node(&self, name: &str) -> Result<()> {
        let node = self.node(name)?;
        if node.patroni_pid().is_some() {
            return Ok(());
        }
        let patroni = process::find_tool("patroni", "patroni", "/usr/bin")?;
        self.spawn(
            &patroni,
            &[node.config().as_os_str()],
            &node.log(),
            &node.pid_file(),
        )
    }

    /// Writes a shell script that starts `name`'s Patroni as [`HaCluster::start_node`] does
    /// (detached, as the server user, its pid where the watchdog finds it), for a runbook's
    /// "start Patroni on that host" step; returns its path.
    pub fn start_script(&self, name: &str) -> Result<PathBuf> {
        let node = self.node(name)?;
        let patroni = process::find_tool("patroni", "patroni", "/usr/bin")?;
        let as_user = match self.run_as.name() {
            Some(user) => format!("runuser -u {user} -- "),
            None => String::new(),
        };
        let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
        let script = format!(
            "#!/bin/sh\n# Starts {name}'s Patroni in the background (its pid in patroni.pid).\n\
             cd {root}\n{as_user}sh -c 'HOME=\"$1\" \"$2\" \"$3\" >>\"$4\" 2>&1 </dev/null & echo $! >\"$5\"' \
             start-patroni {root} {patroni} {config} {log} {pid}\n",
            root = quote(&self.root),
            patroni = quote(&patroni),
            config = quote(&node.config()),
            log = quote(&node.log()),
            pid = quote(&node.pid_file()),
        );
        let path = node.dir.join("start-patroni.sh");
        fs::write(&path, script)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io(format!("chmod {}", path.display()), e))?;
        Ok(path)
    }

    /// Stops etcd (SIGKILL): the DCS is gone; Patroni demotes the leader after `ttl`.
    pub fn stop_etcd(&self) -> Result<()> {
        if let Some(pid) = read_pid(&self.etcd_pid_file(), 0) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            wait_gone(pid);
        }
        Ok(())
    }

    /// Starts etcd (again) on the same data and ports.
    pub fn start_etcd(&self) -> Result<()> {
        if read_pid(&self.etcd_pid_file(), 0).is_some_and(alive) {
            return Ok(());
        }
        let etcd = process::find_tool("etcd", "etcd-server", "/usr/bin")?;
        let (client, peer) = (
            format!("http://127.0.0.1:{}", self.etcd_port),
            format!("http://127.0.0.1:{}", self.etcd_peer_port),
        );
        let data = self.root.join("etcd/data");
        let args: Vec<String> = vec![
            "--name".into(),
            "etcd0".into(),
            "--data-dir".into(),
            data.display().to_string(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer.clone(),
            "--initial-cluster".into(),
            format!("etcd0={peer}"),
            "--initial-cluster-state".into(),
            "new".into(),
        ];
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        self.spawn(
            &etcd,
            &args,
            &self.root.join("etcd/etcd.log"),
            &self.etcd_pid_file(),
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let health = format!("{}/health", self.etcd_url());
        while !self
            .get_text(&health)
            .is_ok_and(|t| t.contains("\"health\":\"true\""))
        {
            if Instant::now() >= deadline {
                return Err(self.timeout("etcd to answer".into(), Duration::from_secs(30)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The end of a node's Patroni log (which includes its PostgreSQL's startup lines).
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        self.node(name)
            .map(|n| process::tail(&n.log(), lines))
            .unwrap_or_default()
    }

    fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    fn etcd_pid_file(&self) -> PathBuf {
        self.root.join("etcd/etcd.pid")
    }

    /// Whether `name`'s PostgreSQL is in recovery with a WAL receiver streaming.
    fn streams(&self, name: &str) -> bool {
        use diesel::{Connection, PgConnection};
        let Ok(node) = self.node(name) else {
            return false;
        };
        let Ok(mut conn) = PgConnection::establish(&node.url("postgres")) else {
            return false;
        };
        crate::cluster::query_text(
            &mut conn,
            "pg_is_in_recovery() AND EXISTS (SELECT FROM pg_stat_wal_receiver WHERE status = 'streaming')",
        )
        .is_ok_and(|v| v.as_deref() == Some("true"))
    }

    /// Starts `program` in the background as the server user, detached from us (so its
    /// death is not ours to reap), its output into `log`, its pid into `pid_file`.
    fn spawn(
        &self,
        program: &Path,
        args: &[&std::ffi::OsStr],
        log: &Path,
        pid_file: &Path,
    ) -> Result<()> {
        const SCRIPT: &str = r#"log=$1; pidfile=$2; shift 2
"$@" >>"$log" 2>&1 </dev/null &
echo $! >"$pidfile"
"#;
        let mut cmd = self.run_as.command("/bin/sh", &self.root);
        cmd.arg("-c")
            .arg(SCRIPT)
            .arg("pgops-testkit-ha")
            .arg(log)
            .arg(pid_file)
            .arg(program)
            .args(args)
            .env("HOME", &self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        process::run(cmd, &program.display().to_string())?;
        Ok(())
    }

    /// `POST url` with a JSON body, which must answer 200; the answer's text.
    fn post(&self, url: &str, body: &str) -> Result<String> {
        let failed = |status: String, output: String| Error::Tool {
            program: format!("POST {url}"),
            status,
            output,
        };
        let mut response = self
            .agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(body)
            .map_err(|e| failed("failed".into(), e.to_string()))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        if status != 200 {
            return Err(failed(status.to_string(), text));
        }
        Ok(text)
    }

    fn get_text(&self, url: &str) -> std::result::Result<String, String> {
        let mut response = self.agent.get(url).call().map_err(|e| e.to_string())?;
        response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())
    }

    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> std::result::Result<T, String> {
        let text = self.get_text(url)?;
        serde_json::from_str(&text).map_err(|e| format!("{url}: {e}: {text}"))
    }

    fn timeout(&self, what: String, waited: Duration) -> Error {
        // Patroni's and PostgreSQL's own lines (timestamped), not the tracebacks its REST API
        // prints when a health checker hangs up early.
        let logs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| {
                let text = process::tail(&n.log(), 400);
                let lines: Vec<&str> = text
                    .lines()
                    .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
                    .collect();
                format!(
                    "--- {}:\n{}",
                    n.name,
                    lines[lines.len().saturating_sub(20)..].join("\n")
                )
            })
            .collect();
        Error::Timeout {
            what: format!("{what}\n{}", logs.join("\n")),
            waited,
        }
    }
}

impl Drop for HaCluster {
    fn drop(&mut self) {
        let watchdog = self
            .watchdog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(mut watchdog) = watchdog {
            watchdog.finish();
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// The YAML of one node (JSON is YAML, and serde_json writes it without a YAML library).
fn node_config(node: &Node, cluster: &HaCluster, options: &HaOptions, bindir: &Path) -> String {
    let mut parameters = serde_json::Map::new();
    let mut set = |k: &str, v: serde_json::Value| {
        parameters.insert(k.to_owned(), v);
    };
    set("wal_level", "replica".into());
    set("hot_standby", "on".into());
    set("wal_log_hints", "on".into());
    set("max_wal_senders", 10.into());
    set("max_replication_slots", 10.into());
    set("wal_keep_size", "128MB".into());
    set("fsync", "off".into());
    set("full_page_writes", "on".into());
    set("log_min_messages", "warning".into());
    match &options.archive_command {
        Some(command) => {
            set("archive_mode", "on".into());
            set("archive_command", command.clone().into());
        }
        None => set("archive_mode", "off".into()),
    }
    for (name, value) in &options.settings {
        set(name, value.clone().into());
    }
    let hba = serde_json::json!([
        "local all all trust",
        "host all all 127.0.0.1/32 trust",
        "host replication all 127.0.0.1/32 trust",
    ]);
    let user = serde_json::json!({"username": SUPERUSER, "password": "pgops-ha"});
    let config = serde_json::json!({
        "scope": SCOPE,
        "name": node.name,
        "log": {"level": "INFO"},
        "restapi": {
            "listen": format!("127.0.0.1:{}", node.rest_port),
            "connect_address": format!("127.0.0.1:{}", node.rest_port),
        },
        "etcd3": {"hosts": [format!("127.0.0.1:{}", cluster.etcd_port)]},
        "bootstrap": {
            "dcs": {
                "ttl": TTL.as_secs(),
                "loop_wait": LOOP_WAIT,
                "retry_timeout": RETRY_TIMEOUT,
                "primary_start_timeout": 0,
                "synchronous_mode": options.synchronous_mode,
                "postgresql": {
                    "use_pg_rewind": true,
                    "use_slots": true,
                    "parameters": parameters,
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"auth-local": "trust"}, {"auth-host": "trust"}],
            "pg_hba": hba,
        },
        "postgresql": {
            "listen": format!("127.0.0.1:{}", node.pg_port),
            "connect_address": format!("127.0.0.1:{}", node.pg_port),
            "data_dir": node.data_dir(),
            "bin_dir": bindir,
            "pgpass": node.dir.join("pgpass"),
            // Rebuilding a node must not wait for a spread checkpoint of minutes.
            "basebackup": [{"checkpoint": "fast"}],
            "authentication": {"superuser": user, "replication": user, "rewind": user},
            "parameters": {"unix_socket_directories": node.dir},
            "pg_hba": hba,
        },
        "tags": {"nofailover": false, "noloadbalance": false, "clonefrom": false, "nosync": false},
    });
    serde_json::to_string_pretty(&config).expect("a JSON value always serializes")
}

fn make_dir(run_as: &RunAs, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    Ok(run_as.own(dir)?)
}

/// Whether a connection to `url` accepts writes.
fn writable(url: &str) -> bool {
    use diesel::{Connection, PgConnection};
    PgConnection::establish(url).is_ok_and(|mut conn| {
        crate::cluster::query_text(&mut conn, "NOT pg_is_in_recovery()")
            .is_ok_and(|v| v.as_deref() == Some("true"))
    })
}

/// The pid on line `line` of a pid file.
fn read_pid(path: &Path, line: usize) -> Option<i32> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .nth(line)?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}
