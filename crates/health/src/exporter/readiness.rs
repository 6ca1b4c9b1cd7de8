//! Readiness: one probe per server (reachable, in the role expected, a replica within the lag
//! limit), for `/ready` and `pgops health check`.

use std::sync::Arc;

use diesel::{PgConnection, RunQueryDsl};
use serde::Serialize;
use tokio::time::timeout_at;

use super::{Exporter, Options, targets::Target};
use crate::{Error, Result};

/// The state of one server, for `/ready` and `pgops health check`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerState {
    /// `host:port`.
    pub server: String,
    /// It answered a query.
    pub up: bool,
    /// `pg_is_in_recovery()`, when it answered (for an HA member: `false` is the primary).
    pub in_recovery: Option<bool>,
    /// Replay lag in seconds (replicas).
    pub lag_seconds: Option<f64>,
    /// Up and in the role expected, and (replicas) within the lag limit.
    pub healthy: bool,
    /// What went wrong, password-free.
    pub error: Option<String>,
}

/// `/ready`'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// The primary is reachable and not in recovery.
    pub ready: bool,
    /// The primary's state.
    pub primary: ServerState,
    /// Each replica's state.
    pub replicas: Vec<ServerState>,
}

impl Exporter {
    /// Checks every server once: reachable, in the expected role, replicas within the lag
    /// limit.
    pub async fn readiness(&self) -> Readiness {
        let mut tasks = tokio::task::JoinSet::new();
        for (index, target) in self.targets.iter().enumerate() {
            let target = target.clone();
            let options = self.options.clone();
            tasks.spawn(async move { (index, probe(target, options).await) });
        }
        let mut states = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            if let Ok(state) = joined {
                states.push(state);
            }
        }
        states.sort_by_key(|(i, _)| *i);
        let mut states = states.into_iter().map(|(_, s)| s);
        let primary = states.next().unwrap_or(ServerState {
            server: self.targets[0].server.clone(),
            up: false,
            in_recovery: None,
            lag_seconds: None,
            healthy: false,
            error: Some("the probe did not finish".into()),
        });
        Readiness {
            ready: primary.healthy,
            primary,
            replicas: states.collect(),
        }
    }
}

async fn probe(target: Arc<Target>, options: Options) -> ServerState {
    let pool = target.pool.clone();
    let primary = target.primary;
    let budget = options.connect_timeout;
    #[derive(diesel::QueryableByName)]
    struct Probe {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        in_recovery: bool,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Double>)]
        lag: Option<f64>,
    }
    let deadline = tokio::time::Instant::now() + budget + options.collector_timeout;
    let result = timeout_at(
        deadline,
        tokio::task::spawn_blocking(move || -> Result<Probe> {
            let mut pooled: pgops_pool::PooledConnection = pool.get_timeout(budget)?;
            let conn: &mut PgConnection = &mut pooled;
            let probe = diesel::sql_query(
                "SELECT pg_is_in_recovery() AS in_recovery,
                        CASE WHEN NOT pg_is_in_recovery() THEN NULL
                             WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                             ELSE greatest(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp())) END::float8 AS lag",
            )
            .get_result::<Probe>(conn)
            .map_err(|e| Error::Invalid(e.to_string()))?;
            // A primary's connection that finds a standby (demoted under it): the next probe
            // connects afresh, to whichever host accepts writes now.
            if primary && probe.in_recovery {
                pooled.discard();
            }
            Ok(probe)
        }),
    )
    .await;
    let mut state = ServerState {
        server: target.server.clone(),
        up: false,
        in_recovery: None,
        lag_seconds: None,
        healthy: false,
        error: None,
    };
    match result {
        Ok(Ok(Ok(p))) => {
            state.up = true;
            state.in_recovery = Some(p.in_recovery);
            state.lag_seconds = p.lag;
            state.healthy = if target.primary {
                !p.in_recovery
            } else if target.member && !p.in_recovery {
                true
            } else {
                p.in_recovery && p.lag.unwrap_or(0.0) <= options.max_replica_lag.as_secs_f64()
            };
            if target.primary && p.in_recovery {
                state.error = Some(
                    "the primary is in recovery (a standby, or a failover in progress)".into(),
                );
            } else if !state.healthy {
                state.error = Some(if p.in_recovery {
                    format!(
                        "replay lag {:.1}s is above the limit of {}s",
                        p.lag.unwrap_or(0.0),
                        options.max_replica_lag.as_secs()
                    )
                } else {
                    "not in recovery: promoted, or not a replica".into()
                });
            }
        }
        Ok(Ok(Err(e))) => state.error = Some(target.url.scrub(&pgops_pg::report(&e))),
        Ok(Err(_)) | Err(_) => state.error = Some("no answer in time".into()),
    }
    state
}
