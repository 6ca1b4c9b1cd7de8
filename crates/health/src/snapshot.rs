//! A typed snapshot of the database's health, for services that want the numbers in code
//! rather than on an HTTP endpoint.

use std::collections::BTreeMap;

use diesel::PgConnection;
use pgops_pg::rows::rows;
use pgops_pool::PoolStats;
use serde::{Deserialize, Serialize};

use crate::Result;

/// One table's size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSize {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Bytes with indexes and TOAST.
    pub bytes: i64,
}

/// One standby as the primary sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StandbyLag {
    /// Its `application_name`.
    pub application_name: String,
    /// WAL bytes it has yet to replay.
    pub lag_bytes: Option<i64>,
}

/// The health of the connected database.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// `server_version`.
    pub server_version: String,
    /// The server is a standby.
    pub in_recovery: bool,
    /// Size of the connected database in bytes.
    pub database_size_bytes: i64,
    /// Client sessions by state (`active`, `idle`, `idle in transaction`, ...), all databases.
    pub connections_by_state: BTreeMap<String, i64>,
    /// `max_connections`.
    pub max_connections: i64,
    /// The ten largest tables of the connected database.
    pub largest_tables: Vec<TableSize>,
    /// Age in seconds of the oldest open transaction of a client session.
    pub oldest_transaction_seconds: f64,
    /// Sessions waiting for a lock another session holds.
    pub blocked_queries: i64,
    /// Oldest unfrozen XID age of any database, as a share of 2^31.
    pub xid_wraparound_ratio: f64,
    /// Share of the connected database's block reads served from shared buffers.
    pub cache_hit_ratio: Option<f64>,
    /// Standbys streaming from this server.
    pub standbys: Vec<StandbyLag>,
    /// The service's pool, when it passed one.
    pub pool: Option<PoolStats>,
}

/// Reads a snapshot on `conn`; `pool` is reported as given.
pub fn snapshot(conn: &mut PgConnection, pool: Option<PoolStats>) -> Result<Snapshot> {
    #[derive(Deserialize)]
    struct Head {
        server_version: String,
        in_recovery: bool,
        database_size_bytes: i64,
        max_connections: i64,
        oldest_transaction_seconds: f64,
        blocked_queries: i64,
        xid_wraparound_ratio: f64,
        cache_hit_ratio: Option<f64>,
    }
    let head: Head = pgops_pg::rows::row(
        conn,
        "SELECT current_setting('server_version') AS server_version,
                pg_is_in_recovery() AS in_recovery,
                pg_database_size(current_database()) AS database_size_bytes,
                current_setting('max_connections')::int8 AS max_connections,
                (SELECT greatest(coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0), 0)::float8
                 FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend')
                   AS oldest_transaction_seconds,
                (SELECT count(*) FROM pg_stat_activity WHERE cardinality(pg_blocking_pids(pid)) > 0)
                   AS blocked_queries,
                (SELECT max(age(datfrozenxid))::float8 / 2147483648 FROM pg_database WHERE datallowconn)
                   AS xid_wraparound_ratio,
                (SELECT blks_hit::float8 / nullif(blks_hit + blks_read, 0) FROM pg_stat_database
                 WHERE datname = current_database()) AS cache_hit_ratio",
        "reading the health snapshot",
    )?;
    #[derive(Deserialize)]
    struct State {
        state: String,
        count: i64,
    }
    let states: Vec<State> = rows(
        conn,
        "SELECT coalesce(state, 'unknown') AS state, count(*) AS count FROM pg_stat_activity
         WHERE backend_type = 'client backend' GROUP BY 1",
        "counting sessions",
    )?;
    let largest_tables: Vec<TableSize> = rows(
        conn,
        "SELECT n.nspname::text AS schema, c.relname::text AS table, pg_total_relation_size(c.oid) AS bytes
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'm', 'p')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
         ORDER BY 3 DESC, 1, 2 LIMIT 10",
        "reading table sizes",
    )?;
    let standbys: Vec<StandbyLag> = if head.in_recovery {
        Vec::new()
    } else {
        rows(
            conn,
            "SELECT coalesce(application_name, '') AS application_name,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::int8 AS lag_bytes
             FROM pg_stat_replication ORDER BY 1",
            "reading pg_stat_replication",
        )?
    };
    Ok(Snapshot {
        server_version: head.server_version,
        in_recovery: head.in_recovery,
        database_size_bytes: head.database_size_bytes,
        connections_by_state: states.into_iter().map(|s| (s.state, s.count)).collect(),
        max_connections: head.max_connections,
        largest_tables,
        oldest_transaction_seconds: head.oldest_transaction_seconds,
        blocked_queries: head.blocked_queries,
        xid_wraparound_ratio: head.xid_wraparound_ratio,
        cache_hit_ratio: head.cache_hit_ratio,
        standbys,
        pool,
    })
}
