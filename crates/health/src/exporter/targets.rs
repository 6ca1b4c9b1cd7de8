//! The servers a scrape reads: for each, its label, a small pool for readiness probes, and
//! two long-lived "lane" connections for the collectors (cheap ones on the first, expensive
//! ones on the second), each keeping its prepared statements.

use std::{
    collections::HashSet,
    sync::Mutex,
    time::{Duration, Instant},
};

use diesel::{PgConnection, connection::SimpleConnection as _};
use pgops_pool::{DatabaseUrl, Pool};

use crate::{Error, Result};

/// One server the exporter watches.
pub(super) struct Target {
    pub(super) server: String,
    pub(super) url: DatabaseUrl,
    /// For readiness probes.
    pub(super) pool: Pool,
    pub(super) primary: bool,
    /// A member of an HA cluster (one host of the primary's multi-host URL): either role is
    /// healthy.
    pub(super) member: bool,
    /// The collectors' own connections: cheap collectors on the first, expensive ones on the
    /// second and third (see [`crate::collectors::Collector::lane`]); each keeps its prepared
    /// statements.
    pub(super) lanes: [Mutex<Option<LaneConn>>; crate::collectors::LANES],
    /// `SET` statements for a new lane connection (timeouts, application_name).
    pub(super) session_sql: String,
    pub(super) connect_timeout: Duration,
}

pub(super) struct LaneConn {
    pub(super) conn: PgConnection,
    pub(super) prepared: HashSet<String>,
    /// The server's `server_version_num`, read once per connection: collectors choose their
    /// queries by it.
    pub(super) version: u32,
}

impl Target {
    /// The lane's connection, opened when missing.
    pub(super) fn lane_conn(
        &self,
        lane: usize,
        budget: Duration,
    ) -> Result<std::sync::MutexGuard<'_, Option<LaneConn>>> {
        // A lane still busy with the previous scrape (a query that outlived its deadline)
        // keeps its connection; this scrape waits for it at most the budget.
        let started = Instant::now();
        let mut guard = loop {
            match self.lanes[lane].try_lock() {
                Ok(guard) => break guard,
                Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) if started.elapsed() < budget => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    return Err(Error::Invalid(
                        "the previous scrape still holds the connection".into(),
                    ));
                }
            }
        };
        if guard.is_none() {
            let mut conn = connect(&self.url, budget.min(self.connect_timeout))?;
            conn.batch_execute(&self.session_sql)
                .map_err(|e| Error::Invalid(format!("setting up the session: {e}")))?;
            let version = pgops_pg::rows::server_version_num(&mut conn)?;
            // 15+ keeps every statistics entry a query reads in a per-transaction cache by
            // default; the collectors read each table's once, so the copy is pure cost (a
            // sixth of the tuple counts' time at 10,000 tables).
            if version >= 150_000 {
                conn.batch_execute("SET stats_fetch_consistency = none")
                    .map_err(|e| Error::Invalid(format!("setting up the session: {e}")))?;
            }
            *guard = Some(LaneConn {
                conn,
                prepared: HashSet::new(),
                version,
            });
        }
        Ok(guard)
    }
}

/// Connects with libpq's `connect_timeout` (whole seconds, at least 2, libpq's minimum),
/// unless the connection string sets its own.
fn connect(url: &DatabaseUrl, timeout: Duration) -> Result<PgConnection> {
    use diesel::Connection as _;
    let secs = timeout.as_secs().max(2).to_string();
    let with_timeout = url.with_default("connect_timeout", &secs)?;
    PgConnection::establish(with_timeout.expose())
        .map_err(|e| Error::Invalid(url.scrub(e.to_string().trim())))
}
