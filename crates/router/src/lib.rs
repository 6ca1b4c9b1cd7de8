//! Routing reads to PostgreSQL replicas without ever serving a caller data older than its own
//! last write.
//!
//! ```no_run
//! # fn main() -> Result<(), pgops_router::Error> {
//! use diesel::{RunQueryDsl, connection::SimpleConnection};
//! let config = pgops_pool::Config::load()?; // DATABASE_URL, DATABASE_REPLICA_URLS, pgops.toml
//! let pool = pgops_pool::Pool::connect(&config)?; // the service's primary pool
//! let router = pgops_router::Router::from_config(pool.clone(), &config); // shares it
//! let ((), token) = router.write(|conn| -> Result<(), pgops_router::Error> {
//!     Ok(conn.batch_execute("UPDATE patients SET status = 'inactive' WHERE id = 7")?)
//! })?;
//! // Served by a replica that has replayed the write, or else by the primary.
//! let n: i64 = router.read(Some(token), |conn| -> Result<i64, pgops_router::Error> {
//!     Ok(diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>("count(*) FROM patients")).get_result(conn)?)
//! })?;
//! # Ok(()) }
//! ```
//!
//! - `write` runs on the primary and returns a [`Token`]: the WAL position after the write.
//! - `read` with a token runs only where that position is replayed (checked on the very
//!   connection that will serve it), else waits up to `token_wait`, else uses the primary.
//!   Without a token, any replica whose lag is within `max_lag_bytes` and `max_lag` may serve.
//! - A monitor thread polls every replica; unreachable ones are banned with backoff, promoted
//!   ones leave the read set. A read that fails on a replica (in an HA cluster, on any member)
//!   with a connection error is retried once elsewhere; writes are never retried.
//!
//! ## An HA cluster (Patroni, or any manager that promotes standbys)
//!
//! Give `DATABASE_URL` as libpq's multi-host URL of every member with
//! `target_session_attrs=read-write` (`postgres://app@db1:5432,db2:5432,db3:5432/app?target_session_attrs=read-write&connect_timeout=2`),
//! and leave `DATABASE_REPLICA_URLS` empty: every member gets a pool of its own, read from
//! while it is a standby and written to while it is the primary (the monitor checks each
//! member's role every `monitor_interval`, and at once when a write finds none). The
//! service's own primary pool on that URL follows the primary too, through libpq.
//! With `[router] patroni_urls` the members come from Patroni's `/cluster` instead, and
//! Patroni's view explains a missing primary. Then:
//! - a write while no member accepts writes fails at once with [`Error::NoPrimary`]
//!   (never retried: the write did not run);
//! - a pooled connection whose write was refused as read-only (SQLSTATE 25006) is discarded,
//!   never reused, and that write reported as [`Error::NoPrimary`]; a member the monitor finds
//!   in recovery is no longer written to;
//! - a [`Token`] carries its timeline and system identifier: only a member on that timeline
//!   of that cluster, with the position replayed, may answer; after a failover, reads with an
//!   older token go to the primary.

mod patroni;
mod policy;

/// The README's example of a service using the pool and the router, compiled as a doctest so
/// it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeExample;

use std::{
    fmt,
    sync::{
        Arc, Condvar, Mutex, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use diesel::{
    PgConnection, QueryableByName, RunQueryDsl,
    connection::{AnsiTransactionManager, TransactionManager},
    dsl::sql,
    sql_types,
};
use pgops_pool::{Config, DatabaseUrl, Pool, PooledConnection, Pooler};

pub use patroni::PatroniMember;
pub use policy::{Candidate, Policy, ban_duration, choose, lag};

/// Errors of the router.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pool failed (configuration, connection, timeout).
    #[error(transparent)]
    Pool(#[from] pgops_pool::Error),
    /// A query failed.
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    /// No member of the HA cluster accepts writes now: a failover or switchover is under
    /// way, or the cluster manager demoted the primary (Patroni does when it loses its
    /// DCS). The write did not run and was not retried; try again later or fail the request.
    #[error("no primary right now: {detail}")]
    NoPrimary {
        /// What each member and Patroni said.
        detail: String,
    },
}

impl Error {
    /// Whether this is [`Error::NoPrimary`]: the write did not run because no member accepts
    /// writes right now.
    pub fn is_no_primary(&self) -> bool {
        matches!(self, Error::NoPrimary { .. })
    }
}

/// Result type of the router.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a write landed, returned by [`Router::write`]: pass it to [`Router::read`] to read
/// your write. The WAL position alone would not do across a failover: the new primary's
/// positions continue on a new timeline from where it was promoted, and a write the old
/// primary acknowledged past that point exists on no member of the new timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token {
    /// The WAL position after the write.
    pub lsn: u64,
    /// The timeline it was written on (0: unknown).
    pub timeline: u32,
    /// The cluster's system identifier (0: unknown).
    pub system: u64,
}

/// Routing settings.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// How to spread reads over replicas.
    pub policy: Policy,
    /// Untokened reads avoid replicas more than this many bytes of WAL behind the primary.
    pub max_lag_bytes: u64,
    /// ... or more than this far behind in time.
    pub max_lag: Duration,
    /// How long a tokened read waits for a replica to replay the token before using the
    /// primary (`0`: use the primary at once).
    pub token_wait: Duration,
    /// How often the monitor polls each replica.
    pub monitor_interval: Duration,
    /// The first ban of an unreachable replica; doubles with each ban in a row.
    pub ban: Duration,
    /// The longest ban.
    pub max_ban: Duration,
    /// How long a read waits for a replica connection before trying elsewhere.
    pub replica_checkout_timeout: Duration,
    /// The replicas are every member of an HA cluster, the primary among them: the member
    /// that is not in recovery is the primary, and when none is, writes fail at once with
    /// [`Error::NoPrimary`].
    pub ha: bool,
    /// Patroni REST API base URLs, asked every round for the cluster's leader.
    pub patroni_urls: Vec<String>,
}

/// A replica to route to.
#[derive(Debug, Clone)]
pub struct ReplicaSpec {
    /// Its name in metrics and logs.
    pub name: String,
    /// Its pool.
    pub pool: Pool,
    /// Relative share of reads.
    pub weight: u32,
}

/// A replica's state as the monitor last saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaStatus {
    /// Its name.
    pub name: String,
    /// Reachable, in recovery, not banned.
    pub serving: bool,
    /// Promoted: no longer a standby; out of the read set.
    pub promoted: bool,
    /// Banned after failures, until this long from now.
    pub banned_for: Option<Duration>,
    /// Lag behind the primary in bytes of WAL.
    pub lag_bytes: u64,
    /// Lag in seconds.
    pub lag_seconds: f64,
    /// Its timeline as last seen (the primary's, or the one a standby streams; `None` when
    /// unknown, as for a user without `pg_monitor` on a standby).
    pub timeline: Option<u32>,
}

/// The HA cluster's primary as the monitor last saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct PrimaryStatus {
    /// The member that accepts writes, if one does.
    pub member: Option<String>,
    /// Its timeline.
    pub timeline: Option<u32>,
    /// Times the primary changed (another member, or a new timeline) since the router started.
    pub changes: u64,
    /// Why there is none, when there is none.
    pub detail: Option<String>,
}

/// Routes reads and writes. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    primary: Pool,
    replicas: Vec<Replica>,
    config: RouterConfig,
    turn: AtomicU64,
    stopped: AtomicBool,
    primary_reads: metrics::Counter,
    polls: AtomicU64,
    /// The cluster's system identifier, as the members report it (0 until known).
    system: AtomicU64,
    primary_view: Mutex<PrimaryView>,
    agent: Option<ureq::Agent>,
    wake: Arc<Wake>,
}

#[derive(Debug, Default)]
struct PrimaryView {
    member: Option<usize>,
    timeline: u32,
    changes: u64,
    detail: Option<String>,
}

struct Replica {
    name: String,
    pool: Pool,
    weight: u32,
    /// Its pool goes through PgBouncer's transaction pooling: a tokened read must run in the
    /// transaction of its replay check to stay on that check's server connection.
    transaction_pooled: bool,
    outstanding: AtomicU32,
    /// Reachable, in recovery and not banned: what the read path checks, without a lock.
    serving: AtomicBool,
    /// Lag within the limits for reads without a token.
    fresh: AtomicBool,
    reads: metrics::Counter,
    /// The monitor's bookkeeping.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The monitor has seen it reachable and in recovery.
    healthy: bool,
    promoted: bool,
    lag_bytes: u64,
    lag_seconds: f64,
    /// 0: unknown.
    timeline: u32,
    system: u64,
    banned_until: Option<Instant>,
    /// Bans in a row; reset once it has stayed healthy for a while.
    episode: u32,
    healthy_since: Option<Instant>,
}

/// Where a read went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Replica(usize),
    Primary(&'static str),
}

#[derive(QueryableByName)]
struct Probe {
    #[diesel(sql_type = sql_types::Bool)]
    in_recovery: bool,
    #[diesel(sql_type = sql_types::BigInt)]
    replay: i64,
    #[diesel(sql_type = sql_types::BigInt)]
    receive: i64,
    #[diesel(sql_type = sql_types::Double)]
    since_replay: f64,
    #[diesel(sql_type = sql_types::Integer)]
    timeline: i32,
    #[diesel(sql_type = sql_types::BigInt)]
    system: i64,
    /// A primary's current WAL position (0 on a standby).
    #[diesel(sql_type = sql_types::BigInt)]
    current: i64,
}

#[derive(QueryableByName)]
struct Position {
    #[diesel(sql_type = sql_types::BigInt)]
    lsn: i64,
    #[diesel(sql_type = sql_types::Integer)]
    timeline: i32,
}

/// A standby's replay position and the timeline its WAL receiver streams (0 when no
/// receiver runs, or the user may not see it).
#[derive(QueryableByName)]
struct Replay {
    #[diesel(sql_type = sql_types::BigInt)]
    replay: i64,
    #[diesel(sql_type = sql_types::Integer)]
    timeline: i32,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            policy: Policy::RoundRobin,
            max_lag_bytes: 16 * 1024 * 1024,
            max_lag: Duration::from_secs(5),
            token_wait: Duration::ZERO,
            monitor_interval: Duration::from_secs(1),
            ban: Duration::from_secs(1),
            max_ban: Duration::from_secs(30),
            replica_checkout_timeout: Duration::from_millis(200),
            ha: false,
            patroni_urls: Vec::new(),
        }
    }
}

impl fmt::Display for Token {
    /// `timeline:LSN`, as in `2:0/3000148`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{:X}/{:X}",
            self.timeline,
            self.lsn >> 32,
            self.lsn & 0xFFFF_FFFF
        )
    }
}

impl Router {
    /// A router with its own primary pool from the configuration (`DATABASE_URL`,
    /// `pgops.toml`, `PGOPS_POOL_*`, `PGOPS_ROUTER_*`) and replicas from
    /// `DATABASE_REPLICA_URLS`. A service that has a primary pool already should use
    /// [`Router::from_config`] with it instead, so that it opens one primary pool, not two.
    pub fn from_env() -> Result<Self> {
        let config = Config::load()?;
        let primary = Pool::connect(&config)?;
        Ok(Self::from_config(primary, &config))
    }

    /// A router over the service's own primary pool and one pool per replica, sized by
    /// `[router]` (`replica_max_size`, `replica_min_idle`, `replica_idle_timeout`), with the
    /// lag budget, token wait and monitor interval of `[router]`. The replicas are:
    /// - `config.replica_urls` when given;
    /// - else, with `[router] patroni_urls`, every member Patroni's `/cluster` lists (HA);
    /// - else, when the primary's URL lists several hosts, every one of them (HA).
    pub fn from_config(primary: Pool, config: &Config) -> Self {
        let settings = config.replica_pool_settings();
        let mut router = RouterConfig {
            max_lag: config.router.max_lag,
            max_lag_bytes: config.router.max_lag_bytes,
            token_wait: config.router.token_wait,
            monitor_interval: config.router.monitor_interval,
            patroni_urls: config.router.patroni_urls.clone(),
            ..RouterConfig::default()
        };
        let members: Vec<(String, DatabaseUrl)> = if !config.replica_urls.is_empty() {
            config
                .replica_urls
                .iter()
                .enumerate()
                .map(|(index, url)| (format!("replica-{index}"), url.clone()))
                .collect()
        } else {
            router.ha = true;
            cluster_members(primary.url(), &router.patroni_urls)
        };
        if router.ha && members.len() < 2 {
            // One server: nothing to fail over to; route as before.
            router.ha = false;
        }
        let members = if router.ha || !config.replica_urls.is_empty() {
            members
        } else {
            Vec::new()
        };
        let replicas = members
            .into_iter()
            .map(|(name, url)| ReplicaSpec {
                pool: Pool::open_unchecked(&name, url, settings.clone()),
                name,
                weight: 1,
            })
            .collect();
        Self::new(primary, replicas, router)
    }

    /// A router over a primary pool and replica pools; starts the monitor thread.
    pub fn new(primary: Pool, replicas: Vec<ReplicaSpec>, config: RouterConfig) -> Self {
        let replicas = replicas
            .into_iter()
            .map(|spec| Replica {
                reads: metrics::counter!("pgops_router_reads_total", "target" => spec.name.clone()),
                transaction_pooled: spec.pool.settings().pooler == Pooler::Transaction,
                name: spec.name,
                pool: spec.pool,
                weight: spec.weight.max(1),
                outstanding: AtomicU32::new(0),
                serving: AtomicBool::new(false),
                fresh: AtomicBool::new(false),
                state: Mutex::new(State::default()),
            })
            .collect();
        let agent = (!config.patroni_urls.is_empty())
            .then(|| patroni::agent(config.monitor_interval.max(Duration::from_millis(500))));
        let inner = Arc::new(Inner {
            primary,
            replicas,
            config,
            turn: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            primary_reads: metrics::counter!("pgops_router_reads_total", "target" => "primary"),
            polls: AtomicU64::new(0),
            system: AtomicU64::new(0),
            primary_view: Mutex::new(PrimaryView::default()),
            agent,
            wake: Arc::new(Wake::default()),
        });
        // One poll before the first read, so replicas serve from the start.
        inner.poll_all();
        spawn_monitor(Arc::downgrade(&inner), inner.wake.clone());
        Router { inner }
    }

    /// Runs `work` on the primary and returns its value with the WAL position after it. Never
    /// retried. `work` must have committed when it returns (autocommit statements or its own
    /// `conn.transaction(..)`).
    #[track_caller]
    pub fn write<T, E>(
        &self,
        work: impl FnOnce(&mut PgConnection) -> Result<T, E>,
    ) -> Result<(T, Token), E>
    where
        E: From<Error>,
    {
        let inner = &self.inner;
        let mut conn = if inner.config.ha {
            inner.primary_connection().map_err(E::from)?
        } else {
            inner.primary.get().map_err(|e| E::from(Error::Pool(e)))?
        };
        let value = match work(&mut conn) {
            Ok(value) => value,
            Err(e) => {
                // A write refused as read-only (SQLSTATE 25006: the server is a standby now)
                // did not run: say so; the pool discards that connection. One whose connection
                // broke (the primary died) may or may not have committed: its own error stands.
                if conn.refused_as_read_only() {
                    inner.wake.poke();
                    return Err(E::from(inner.no_primary(Some(
                        "the connection's server is read-only now (demoted)".into(),
                    ))));
                }
                if conn.is_broken() {
                    inner.wake.poke();
                }
                return Err(e);
            }
        };
        let position = diesel::sql_query(
            "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS lsn,
                    ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS timeline",
        )
        .get_result::<Position>(&mut *conn)
        .map_err(|e| E::from(Error::Query(e)))?;
        Ok((
            value,
            Token {
                lsn: position.lsn as u64,
                timeline: position.timeline as u32,
                system: inner.system.load(Ordering::Relaxed),
            },
        ))
    }

    /// Runs read-only `work` on a replica when allowed (see the crate documentation), else on
    /// the primary. A replica connection error is retried once elsewhere.
    pub fn read<T, E>(
        &self,
        token: Option<Token>,
        mut work: impl FnMut(&mut PgConnection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<Error>,
    {
        let mut excluded = None;
        let mut retried = false;
        loop {
            let (target, mut conn) = self.inner.checkout(token, excluded).map_err(E::from)?;
            // Behind transaction pooling a tokened replica read runs in the transaction its
            // replay check opened, so both use one server connection; straight to the server
            // the connection is the same anyway, and no BEGIN/COMMIT is spent.
            let in_transaction = token.is_some()
                && target
                    .replica()
                    .is_some_and(|i| self.inner.replicas[i].transaction_pooled);
            let result = {
                // Only the least-outstanding policy reads the count.
                let _in_flight = target
                    .replica()
                    .filter(|_| self.inner.config.policy == Policy::LeastOutstanding)
                    .map(|i| InFlight::new(&self.inner.replicas[i].outstanding));
                work(&mut conn)
            };
            let result = if in_transaction {
                finish(&mut conn, result)
            } else {
                result
            };
            if result.is_err() && !retried && conn.is_broken() {
                retried = true;
                match target {
                    // The replica went away under the read: ban it and try once more elsewhere.
                    Target::Replica(index) => {
                        let replica = &self.inner.replicas[index];
                        tracing::warn!(replica = %replica.name, "read failed with a connection error; retrying elsewhere");
                        self.inner.ban(index);
                        metrics::counter!("pgops_router_retries_total", "replica" => replica.name.clone())
                            .increment(1);
                        excluded = Some(index);
                        continue;
                    }
                    // In an HA cluster the primary may have died under the read: once more,
                    // wherever the monitor now sends it (a standby, when there is no primary).
                    Target::Primary(_) if self.inner.config.ha => {
                        self.inner.wake.poke();
                        metrics::counter!("pgops_router_retries_total", "replica" => "primary")
                            .increment(1);
                        continue;
                    }
                    Target::Primary(_) => {}
                }
            }
            self.inner.count(target);
            return result;
        }
    }

    /// The replicas' state as last seen.
    pub fn replicas(&self) -> Vec<ReplicaStatus> {
        self.inner
            .replicas
            .iter()
            .map(|r| {
                let s = r.lock();
                let now = Instant::now();
                let banned_for = s
                    .banned_until
                    .filter(|until| *until > now)
                    .map(|until| until - now);
                ReplicaStatus {
                    name: r.name.clone(),
                    serving: s.healthy && !s.promoted && banned_for.is_none(),
                    promoted: s.promoted,
                    banned_for,
                    lag_bytes: s.lag_bytes,
                    lag_seconds: s.lag_seconds,
                    timeline: (s.timeline != 0).then_some(s.timeline),
                }
            })
            .collect()
    }

    /// The primary as the monitor last saw it, in an HA cluster (see the crate documentation);
    /// `None` otherwise.
    pub fn primary_status(&self) -> Option<PrimaryStatus> {
        if !self.inner.config.ha {
            return None;
        }
        let view = self.inner.view();
        Some(PrimaryStatus {
            member: view.member.map(|i| self.inner.replicas[i].name.clone()),
            timeline: (view.timeline != 0).then_some(view.timeline),
            changes: view.changes,
            detail: view.detail.clone(),
        })
    }

    /// How many monitor polls of all replicas have completed.
    pub fn monitor_polls(&self) -> u64 {
        self.inner.polls.load(Ordering::Relaxed)
    }

    /// The primary's pool.
    pub fn primary(&self) -> &Pool {
        &self.inner.primary
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("primary", &self.inner.primary.url())
            .field("replicas", &self.replicas())
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

impl Target {
    fn replica(self) -> Option<usize> {
        match self {
            Target::Replica(i) => Some(i),
            Target::Primary(_) => None,
        }
    }
}

/// Ends the transaction a tokened replica read ran in: commit after success, roll back after
/// an error (whose error is the one returned).
fn finish<T, E: From<Error>>(conn: &mut PgConnection, result: Result<T, E>) -> Result<T, E> {
    match result {
        Ok(value) => AnsiTransactionManager::commit_transaction(conn)
            .map(|()| value)
            .map_err(|e| E::from(Error::Query(e))),
        Err(e) => {
            let _ = AnsiTransactionManager::rollback_transaction(conn);
            Err(e)
        }
    }
}

impl Replica {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn view(&self) -> std::sync::MutexGuard<'_, PrimaryView> {
        self.primary_view
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// In an HA cluster, a connection from the pool of the member the monitor last found
    /// accepting writes (warm from reads). A checkout that is waiting when the monitor finds
    /// another primary moves to that one's pool (nothing has run yet); none: `NoPrimary` at
    /// once, waking the monitor.
    fn primary_connection(&self) -> Result<PooledConnection> {
        let current = || self.view().member;
        loop {
            let Some(index) = current() else {
                self.wake.poke();
                return Err(self.no_primary(None));
            };
            match self.replicas[index].pool.get_while(|| {
                // Still waiting: the member may be gone; have the monitor look now.
                self.wake.poke();
                current() == Some(index)
            }) {
                Ok(Some(conn)) => return Ok(conn),
                Ok(None) => continue,
                Err(e) => {
                    // A pool that is merely full is not a missing primary.
                    if e.is_busy() {
                        return Err(Error::Pool(e));
                    }
                    self.wake.poke();
                    return Err(self.no_primary(Some(e.to_string())));
                }
            }
        }
    }

    /// The error of a write that found no primary: what the last round saw, and `now`.
    fn no_primary(&self, now: Option<String>) -> Error {
        metrics::counter!("pgops_router_no_primary_total").increment(1);
        let seen = self.view().detail.clone();
        let detail = match (now, seen) {
            (Some(now), Some(seen)) => format!("{now}; last check: {seen}"),
            (Some(now), None) => now,
            (None, Some(seen)) => seen,
            (None, None) => "no member accepts writes".into(),
        };
        Error::NoPrimary { detail }
    }

    /// Picks where a read goes and checks out a connection there.
    fn checkout(
        &self,
        token: Option<Token>,
        excluded: Option<usize>,
    ) -> Result<(Target, PooledConnection)> {
        // Two atomics per replica, kept by the monitor under the replica's lock, which the
        // read path never takes: `serving` (healthy, in recovery, not banned) and `fresh`.
        let eligible = |(i, r): &(usize, &Replica)| {
            Some(*i) != excluded
                && r.serving.load(Ordering::Relaxed)
                // A token is checked on the connection itself below.
                && (token.is_some() || r.fresh.load(Ordering::Relaxed))
        };
        let mut found = self.replicas.iter().enumerate().filter(eligible);
        let chosen = match (found.next(), found.next()) {
            (None, _) => None,
            // The only one: no choice to make, so no shared counter to advance (each one every
            // read touches moves between the cores under load).
            (Some((index, _)), None) => Some(index),
            (Some(first), Some(second)) => {
                let candidates: Vec<Candidate> = [first, second]
                    .into_iter()
                    .chain(found)
                    .map(|(index, r)| Candidate {
                        index,
                        weight: r.weight,
                        outstanding: r.outstanding.load(Ordering::Relaxed),
                    })
                    .collect();
                let turn = self.turn.fetch_add(1, Ordering::Relaxed);
                choose(self.config.policy, &candidates, turn)
            }
        };
        let reason = match chosen {
            None if self.replicas.is_empty() => "no_replica",
            None if token.is_some() => "unavailable",
            None => "lag",
            Some(index) => {
                let replica = &self.replicas[index];
                match replica
                    .pool
                    .get_timeout(self.config.replica_checkout_timeout)
                {
                    Ok(mut conn) => match token {
                        None => return Ok((Target::Replica(index), conn)),
                        Some(token) => match self.replayed_on(replica, &mut conn, token) {
                            Ok(true) => return Ok((Target::Replica(index), conn)),
                            Ok(false) => "behind_token",
                            Err(_) => {
                                self.ban(index);
                                "replica_error"
                            }
                        },
                    },
                    // Every connection in use: the replica answers, its pool is
                    // saturated. This read goes elsewhere; the replica is not banned.
                    Err(e) if e.is_busy() => "replica_busy",
                    Err(_) => {
                        self.ban(index);
                        "replica_error"
                    }
                }
            }
        };
        metrics::counter!("pgops_router_fallbacks_total", "reason" => reason).increment(1);
        if !self.config.ha {
            return Ok((Target::Primary(reason), self.primary.get()?));
        }
        match self.primary_connection() {
            Ok(conn) => Ok((Target::Primary(reason), conn)),
            // No primary right now: a read without a token is still better served by any
            // standby that answers, whatever its lag, than refused.
            Err(e) if token.is_none() => self.any_standby(excluded).ok_or(e),
            Err(e) => Err(e),
        }
    }

    /// A connection to any reachable standby but `excluded`, lag notwithstanding.
    fn any_standby(&self, excluded: Option<usize>) -> Option<(Target, PooledConnection)> {
        self.replicas
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != excluded)
            .filter(|(_, r)| r.serving.load(Ordering::Relaxed))
            .find_map(|(index, r)| {
                r.pool
                    .get_timeout(self.config.replica_checkout_timeout)
                    .ok()
                    .map(|conn| (Target::Replica(index), conn))
            })
    }

    /// Whether the replica behind `conn` has replayed `token`. Behind transaction pooling the
    /// check opens a transaction that stays open for the read when it has, and is rolled back
    /// when not.
    fn replayed_on(
        &self,
        replica: &Replica,
        conn: &mut PgConnection,
        token: Token,
    ) -> diesel::QueryResult<bool> {
        let system = replica.lock().system;
        if token.system != 0 && system != 0 && token.system != system {
            return Ok(false);
        }
        if !replica.transaction_pooled {
            return self.replayed(conn, token);
        }
        AnsiTransactionManager::begin_transaction(conn)?;
        let replayed = self.replayed(conn, token);
        if !matches!(replayed, Ok(true)) {
            let _ = AnsiTransactionManager::rollback_transaction(conn);
        }
        replayed
    }

    /// Whether the replica behind `conn` has replayed `token` on the token's timeline,
    /// waiting up to `token_wait`. In an HA cluster a standby whose timeline cannot be seen
    /// never answers a token (the primary does).
    fn replayed(&self, conn: &mut PgConnection, token: Token) -> diesel::QueryResult<bool> {
        let deadline = Instant::now() + self.config.token_wait;
        loop {
            let Replay { replay, timeline } = diesel::sql_query(
                "SELECT coalesce((pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint, 0) AS replay,
                        coalesce((SELECT received_tli FROM pg_stat_wal_receiver), 0) AS timeline",
            )
            .get_result(conn)?;
            let timeline = timeline as u32;
            let same_timeline = if timeline == 0 || token.timeline == 0 {
                !self.config.ha
            } else {
                timeline == token.timeline
            };
            if !same_timeline {
                return Ok(false);
            }
            if replay as u64 >= token.lsn {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn count(&self, target: Target) {
        match target {
            Target::Replica(i) => self.replicas[i].reads.increment(1),
            Target::Primary(_) => self.primary_reads.increment(1),
        }
    }

    /// Bans a replica: the `episode`-th ban in a row lasts `ban_duration(..)`.
    fn ban(&self, index: usize) {
        let replica = &self.replicas[index];
        let mut s = replica.lock();
        let now = Instant::now();
        if s.banned_until.is_some_and(|until| until > now) {
            return;
        }
        s.episode += 1;
        let ban = ban_duration(self.config.ban, self.config.max_ban, s.episode);
        s.banned_until = Some(now + ban);
        s.healthy = false;
        s.healthy_since = None;
        replica.serving.store(false, Ordering::Relaxed);
        metrics::counter!("pgops_router_bans_total", "replica" => replica.name.clone())
            .increment(1);
        tracing::warn!(replica = %replica.name, ban_ms = ban.as_millis() as u64, "replica banned");
    }

    /// Polls the primary's position and every replica; in an HA cluster, works out which
    /// member is the primary.
    fn poll_all(&self) {
        // In an HA cluster a dead member must not hold up the round that finds the new
        // primary: members are probed side by side, each with a short checkout.
        let timeout = if self.config.ha {
            self.config.monitor_interval.min(Duration::from_millis(250))
        } else {
            self.config.monitor_interval
        };
        let probes: Vec<Result<Option<Probe>, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .replicas
                .iter()
                .map(|replica| scope.spawn(move || probe(replica, timeout)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("the probe panicked".into()))
                })
                .collect()
        });
        let primary_lsn = if self.config.ha {
            probes
                .iter()
                .flatten()
                .flatten()
                .filter(|p| !p.in_recovery)
                .map(|p| p.current as u64)
                .max()
        } else {
            self.primary
                .get_timeout(self.config.monitor_interval)
                .ok()
                .and_then(|mut conn| current_lsn(&mut conn).ok())
        };
        let mut writable = Vec::new();
        let mut seen = Vec::new();
        for ((index, replica), probe) in self.replicas.iter().enumerate().zip(probes) {
            match probe {
                // Every connection of its pool in use: it answers, and is left as it was
                // (a primary stays the primary; lag is read again at the next poll).
                Ok(None) => {
                    seen.push(format!("{} busy (every connection in use)", replica.name));
                    let view = self.view();
                    if view.member == Some(index) {
                        writable.push((index, view.timeline));
                    }
                }
                Ok(Some(p)) => {
                    seen.push(format!(
                        "{} {}",
                        replica.name,
                        if p.in_recovery {
                            "read-only (in recovery)"
                        } else {
                            "accepts writes"
                        }
                    ));
                    if !p.in_recovery {
                        writable.push((index, p.timeline as u32));
                    }
                    self.healthy_probe(index, p, primary_lsn)
                }
                Err(error) => {
                    tracing::debug!(replica = %replica.name, %error, "replica probe failed");
                    seen.push(format!("{} unreachable", replica.name));
                    self.ban_or_extend(index);
                }
            }
        }
        if self.config.ha {
            self.settle_primary(writable, seen);
        }
        self.polls.fetch_add(1, Ordering::Relaxed);
    }

    /// Records which member accepts writes after a round, counting changes of member or
    /// timeline; with none, what each member (and Patroni) said.
    fn settle_primary(&self, writable: Vec<(usize, u32)>, seen: Vec<String>) {
        // Two writable members is a split brain: the newer timeline is the promoted one.
        if writable.len() > 1 {
            tracing::error!(members = ?seen, "more than one member accepts writes (split brain?); following the newest timeline");
        }
        let primary = writable.into_iter().max_by_key(|(_, timeline)| *timeline);
        let patroni = self.agent.as_ref().map(|agent| {
            let view = patroni::members(agent, &self.config.patroni_urls);
            metrics::gauge!("pgops_router_patroni_up").set(if view.is_ok() { 1.0 } else { 0.0 });
            patroni::no_leader_reason(&view)
        });
        let mut view = self.view();
        match primary {
            Some((index, timeline)) => {
                if view.member.is_some_and(|m| m != index)
                    || (view.timeline != 0 && view.timeline != timeline)
                {
                    view.changes += 1;
                    metrics::counter!("pgops_router_primary_changes_total").increment(1);
                    tracing::warn!(primary = %self.replicas[index].name, timeline, "the primary changed");
                } else if view.member.is_none() {
                    tracing::info!(primary = %self.replicas[index].name, timeline, "a primary accepts writes");
                }
                view.member = Some(index);
                view.timeline = timeline;
                view.detail = None;
                metrics::gauge!("pgops_router_timeline").set(f64::from(timeline));
            }
            None => {
                if view.member.is_some() {
                    tracing::warn!(members = ?seen, "no member accepts writes");
                }
                view.member = None;
                let mut detail = seen.join(", ");
                if let Some(Some(reason)) = patroni {
                    detail = format!("{detail}; {reason}");
                }
                view.detail = Some(detail);
            }
        }
        let up = view.member.is_some();
        drop(view);
        metrics::gauge!("pgops_router_primary_up").set(if up { 1.0 } else { 0.0 });
        for (index, replica) in self.replicas.iter().enumerate() {
            metrics::gauge!("pgops_router_member_is_primary", "member" => replica.name.clone())
                .set(if primary.is_some_and(|(i, _)| i == index) {
                    1.0
                } else {
                    0.0
                });
        }
    }

    fn healthy_probe(&self, index: usize, p: Probe, primary_lsn: Option<u64>) {
        let replica = &self.replicas[index];
        let mut s = replica.lock();
        let now = Instant::now();
        s.timeline = p.timeline as u32;
        s.system = p.system as u64;
        if s.system != 0 {
            let known = self.system.swap(s.system, Ordering::Relaxed);
            if known != 0 && known != s.system {
                tracing::error!(replica = %replica.name, "members report different system identifiers: not one cluster");
            }
        }
        if !p.in_recovery {
            if !s.promoted && !self.config.ha {
                tracing::warn!(replica = %replica.name, "replica is no longer in recovery (promoted?); removed from the read set");
            }
            s.promoted = true;
            s.healthy = false;
            replica.serving.store(false, Ordering::Relaxed);
            return;
        }
        if s.promoted {
            tracing::info!(replica = %replica.name, "replica is a standby again; back in the read set");
        }
        s.promoted = false;
        let (lag_bytes, lag_seconds) = match primary_lsn {
            Some(primary) => lag(primary, p.replay as u64, p.receive as u64, p.since_replay),
            None => (s.lag_bytes, s.lag_seconds),
        };
        s.lag_bytes = lag_bytes;
        s.lag_seconds = lag_seconds;
        let fresh = lag_bytes <= self.config.max_lag_bytes
            && lag_seconds <= self.config.max_lag.as_secs_f64();
        replica.fresh.store(fresh, Ordering::Relaxed);
        if s.banned_until.is_some_and(|until| until > now) {
            return; // still serving its ban
        }
        if s.banned_until.take().is_some() {
            tracing::info!(replica = %replica.name, "replica healthy again; back in the read set");
        }
        if !s.healthy {
            s.healthy_since = Some(now);
        }
        s.healthy = true;
        replica.serving.store(true, Ordering::Relaxed);
        // Ten quiet intervals forgive earlier bans.
        if s.healthy_since
            .is_some_and(|since| now - since > self.config.monitor_interval * 10)
        {
            s.episode = 0;
        }
        let label = replica.name.clone();
        metrics::gauge!("pgops_router_replica_lag_bytes", "replica" => label.clone())
            .set(lag_bytes as f64);
        metrics::gauge!("pgops_router_replica_lag_seconds", "replica" => label).set(lag_seconds);
    }

    /// A failed probe bans a healthy replica, and keeps a banned one banned for the same
    /// length from now (the episode does not grow while it stays down).
    fn ban_or_extend(&self, index: usize) {
        let replica = &self.replicas[index];
        let mut s = replica.lock();
        if s.healthy || s.banned_until.is_none() {
            drop(s);
            self.ban(index);
            return;
        }
        let ban = ban_duration(self.config.ban, self.config.max_ban, s.episode.max(1));
        s.banned_until = Some(Instant::now() + ban);
    }
}

/// Counts a read in flight on a replica for the least-outstanding policy.
struct InFlight<'a>(&'a AtomicU32);

impl<'a> InFlight<'a> {
    fn new(counter: &'a AtomicU32) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One member's state: role, positions, timeline, system identifier; `None` when every
/// connection of its pool is in use (it answers, but has no connection to spare for the probe).
fn probe(replica: &Replica, timeout: Duration) -> Result<Option<Probe>, String> {
    let mut conn = match replica.pool.get_timeout(timeout) {
        Ok(conn) => conn,
        Err(e) if e.is_busy() => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    diesel::sql_query(
        "SELECT pg_is_in_recovery() AS in_recovery,
                coalesce((pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint, 0) AS replay,
                coalesce((pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::bigint, 0) AS receive,
                coalesce(extract(epoch FROM now() - coalesce(pg_last_xact_replay_timestamp(),
                                                              pg_postmaster_start_time()))::float8,
                         0) AS since_replay,
                CASE WHEN pg_is_in_recovery()
                     THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver), 0)
                     ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
                END AS timeline,
                (SELECT system_identifier FROM pg_control_system())::bigint AS system,
                CASE WHEN pg_is_in_recovery() THEN 0
                     ELSE (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint END AS current",
    )
    .get_result::<Probe>(&mut *conn)
    .map(Some)
    .map_err(|e| e.to_string())
}

/// The members of an HA cluster, as [`Router::from_config`] finds them when no replica URLs
/// are given: from Patroni's `/cluster` when `patroni_urls` are set (by their Patroni names),
/// else every host of the primary's multi-host URL (by `host:port`). Each member's URL is the
/// primary's with that one host and no `target_session_attrs`. Fewer than two: not an HA
/// cluster.
pub fn cluster_members(
    primary: &DatabaseUrl,
    patroni_urls: &[String],
) -> Vec<(String, DatabaseUrl)> {
    let from_url = || -> Vec<(String, String)> {
        primary
            .servers()
            .into_iter()
            .map(|s| (s.clone(), s))
            .collect()
    };
    let servers = if patroni_urls.is_empty() {
        from_url()
    } else {
        match patroni::members(&patroni::agent(Duration::from_secs(5)), patroni_urls) {
            Ok(members) => members
                .into_iter()
                .map(|m| (m.name, format!("{}:{}", m.host, m.port)))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "Patroni's /cluster did not answer; using the hosts of the primary's URL");
                from_url()
            }
        }
    };
    servers
        .into_iter()
        .filter_map(|(name, server)| match primary.for_server(&server) {
            Ok(url) => Some((name, url)),
            Err(e) => {
                tracing::warn!(member = %name, error = %e, "cannot build the member's URL; left out");
                None
            }
        })
        .collect()
}

fn current_lsn(conn: &mut PgConnection) -> diesel::QueryResult<u64> {
    diesel::select(sql::<sql_types::BigInt>(
        "(pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint",
    ))
    .get_result::<i64>(conn)
    .map(|v| v as u64)
}

/// Wakes the monitor before its interval is up: a write that found no primary asks for the
/// next round now, so a new primary is found as soon as it accepts writes.
#[derive(Debug, Default)]
struct Wake {
    poked: Mutex<bool>,
    cv: Condvar,
}

impl Wake {
    fn poke(&self) {
        *self.poked.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.cv.notify_one();
    }

    /// Sleeps `interval`, or less when poked (but at least `min` after the last round).
    fn sleep(&self, interval: Duration, min: Duration) {
        std::thread::sleep(min);
        let poked = self.poked.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut poked, _) = self
            .cv
            .wait_timeout_while(poked, interval.saturating_sub(min), |p| !*p)
            .unwrap_or_else(PoisonError::into_inner);
        *poked = false;
    }
}

fn spawn_monitor(inner: Weak<Inner>, wake: Arc<Wake>) {
    let spawned = std::thread::Builder::new()
        .name("pgops-router-monitor".into())
        .spawn(move || {
            loop {
                let interval = {
                    let Some(inner) = inner.upgrade() else { return };
                    if inner.stopped.load(Ordering::Relaxed) {
                        return;
                    }
                    inner.poll_all();
                    inner.config.monitor_interval
                };
                wake.sleep(interval, interval.min(Duration::from_millis(20)));
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the replica monitor; replicas will not be used");
    }
}
