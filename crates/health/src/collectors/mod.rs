//! The collectors: one query (or a few) each, turned into metric families. postgres_exporter's
//! names and labels wherever the quantity is the same, so its dashboards keep working; ours
//! under `pgops_`.

use std::collections::HashSet;

use diesel::{
    PgConnection, QueryableByName, RunQueryDsl, connection::SimpleConnection as _, pg::Pg,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Error, Result, text::Family};

mod replication;
mod server;
mod statistics;
mod workload;

use replication::{replication, replication_slots};
pub use server::setting_metric;
use server::{database_size, locks, settings, stat_activity, static_info};
use statistics::{
    stat_archiver, stat_bgwriter, stat_database, stat_database_conflicts, stat_io, stat_wal,
    transactions,
};
use workload::{stat_user_tables, table_sizes, top_queries};

/// A collector's connection: each query is prepared once per connection (`PREPARE`), so a
/// scrape pays for execution only, not for parsing and planning the catalog views again.
pub struct Session<'a> {
    /// The connection.
    pub conn: &'a mut PgConnection,
    /// Names of the statements prepared on it.
    pub prepared: &'a mut HashSet<String>,
    /// The server's `server_version_num` (170002 for 17.2): collectors choose their queries
    /// by it.
    pub version: u32,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("prepared", &self.prepared.len())
            .finish()
    }
}

#[derive(QueryableByName)]
struct JsonRows {
    #[diesel(sql_type = diesel::sql_types::Text)]
    rows: String,
}

impl Session<'_> {
    /// Runs `query` (prepared on first use) and decodes its rows into `T`s. The rows travel
    /// as one JSON array, so a collector reads any columns without declaring their SQL types;
    /// for queries with a row per table, [`Session::table`] avoids building it.
    pub fn rows<T: DeserializeOwned>(&mut self, query: &str, context: &str) -> Result<Vec<T>> {
        let got: Vec<JsonRows> = self.table(
            &format!("SELECT coalesce(json_agg(q), '[]'::json)::text AS rows FROM ({query}) AS q"),
            context,
        )?;
        let rows = got.first().map_or("[]", |r| r.rows.as_str());
        serde_json::from_str(rows).map_err(|source| {
            Error::Query(pgops_pg::Error::Decode {
                context: context.to_owned(),
                source,
            })
        })
    }

    /// Runs `query` (prepared on first use) and loads its rows as they come, in binary: for
    /// the queries with a row per table, where building the JSON array on the server and
    /// parsing it here would cost as much as the query itself.
    pub fn table<T: QueryableByName<Pg> + 'static>(
        &mut self,
        query: &str,
        context: &str,
    ) -> Result<Vec<T>> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        query.hash(&mut hasher);
        let name = format!("pgops_health_{:016x}", hasher.finish());
        let db = |source| {
            Error::Query(pgops_pg::Error::Query {
                context: context.to_owned(),
                source,
            })
        };
        if !self.prepared.contains(&name) {
            self.conn
                .batch_execute(&format!("PREPARE {name} AS {query}"))
                .map_err(db)?;
            self.prepared.insert(name.clone());
        }
        diesel::sql_query(format!("EXECUTE {name}"))
            .load::<T>(self.conn)
            .map_err(db)
    }
}

/// What a collector knows about where it runs.
#[derive(Debug, Clone)]
pub struct Context {
    /// The `server` label (`host:port`), as postgres_exporter 0.11 sets it.
    pub server: String,
    /// How many top queries to export from pg_stat_statements (0: none).
    pub top_queries: usize,
}

/// A collector.
#[derive(Debug, Clone, Copy)]
pub struct Collector {
    /// Its name, the `collector` label of `pgops_collector_*`.
    pub name: &'static str,
    /// The connection it runs on: 0 for the cheap collectors, run on every scrape one after
    /// another; 1 or 2 for the expensive ones, whose results are reused for the cache
    /// interval. The two expensive lanes run side by side, so the slowest (`database`, which
    /// sizes every file) does not wait for the per-table ones.
    pub lane: usize,
    /// Runs it.
    pub run: fn(&mut Session<'_>, &Context) -> Result<Vec<Family>>,
}

/// Every collector, in output order.
pub const COLLECTORS: &[Collector] = &[
    Collector {
        name: "static",
        lane: 1,
        run: static_info,
    },
    Collector {
        name: "database",
        lane: 2,
        run: database_size,
    },
    Collector {
        name: "locks",
        lane: 0,
        run: locks,
    },
    Collector {
        name: "stat_activity",
        lane: 0,
        run: stat_activity,
    },
    Collector {
        name: "stat_archiver",
        lane: 0,
        run: stat_archiver,
    },
    Collector {
        name: "stat_bgwriter",
        lane: 0,
        run: stat_bgwriter,
    },
    Collector {
        name: "stat_wal",
        lane: 0,
        run: stat_wal,
    },
    Collector {
        name: "stat_io",
        lane: 0,
        run: stat_io,
    },
    Collector {
        name: "stat_database",
        lane: 0,
        run: stat_database,
    },
    Collector {
        name: "stat_database_conflicts",
        lane: 0,
        run: stat_database_conflicts,
    },
    Collector {
        name: "settings",
        lane: 1,
        run: settings,
    },
    Collector {
        name: "replication",
        lane: 0,
        run: replication,
    },
    Collector {
        name: "replication_slots",
        lane: 0,
        run: replication_slots,
    },
    Collector {
        name: "transactions",
        lane: 0,
        run: transactions,
    },
    Collector {
        name: "stat_user_tables",
        lane: 1,
        run: stat_user_tables,
    },
    Collector {
        name: "table_sizes",
        lane: 1,
        run: table_sizes,
    },
    Collector {
        name: "top_queries",
        lane: 2,
        run: top_queries,
    },
];

/// The connections a server's collectors run on (see [`Collector::lane`]).
pub const LANES: usize = 3;

impl Collector {
    /// Expensive: its result is reused for the cache interval.
    pub const fn cached(&self) -> bool {
        self.lane > 0
    }
}

/// The collectors that also run against replicas (everything else describes the primary).
pub const REPLICA_COLLECTORS: &[&str] = &["replication"];

/// A JSON value as a sample value: numbers, booleans as 1/0, timestamps (as PostgreSQL writes
/// them in JSON) as epoch seconds, anything else NaN.
fn f(value: &Value) -> f64 {
    match value {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::String(text) => chrono::DateTime::parse_from_rfc3339(text)
            .map_or(f64::NAN, |t| t.timestamp_micros() as f64 / 1e6),
        _ => f64::NAN,
    }
}

fn s(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_collector_has_a_lane_and_the_expensive_ones_share_two() {
        assert!(COLLECTORS.iter().all(|c| c.lane < LANES));
        for lane in 1..LANES {
            assert!(
                COLLECTORS.iter().any(|c| c.lane == lane),
                "lane {lane} is empty"
            );
        }
        // `database` sizes every file: nothing per-table waits behind it.
        let lane_of = |name: &str| COLLECTORS.iter().find(|c| c.name == name).unwrap().lane;
        assert_ne!(lane_of("database"), lane_of("stat_user_tables"));
        assert_ne!(lane_of("database"), lane_of("table_sizes"));
    }

    #[test]
    fn timestamps_become_epoch_seconds() {
        let v = serde_json::json!("2026-11-26T19:29:47.5+00:00");
        assert_eq!(f(&v), 1_795_721_387.5);
        assert!(f(&serde_json::json!("not a time")).is_nan());
        assert!(f(&Value::Null).is_nan());
    }

    #[test]
    fn settings_follow_postgres_exporter_units() {
        assert_eq!(
            setting_metric("max_connections", "100", "", "integer"),
            Some(("pg_settings_max_connections".into(), 100.0))
        );
        // The archive alert reads archive_mode, an enum: archiving (on, always) is 1.
        for (setting, value) in [("on", 1.0), ("always", 1.0), ("off", 0.0)] {
            assert_eq!(
                setting_metric("archive_mode", setting, "", "enum"),
                Some(("pg_settings_archive_mode".into(), value))
            );
        }
        assert_eq!(
            setting_metric("shared_buffers", "16384", "8kB", "integer"),
            Some(("pg_settings_shared_buffers_bytes".into(), 134_217_728.0))
        );
        assert_eq!(
            setting_metric("statement_timeout", "1500", "ms", "integer"),
            Some(("pg_settings_statement_timeout_seconds".into(), 1.5))
        );
        assert_eq!(
            setting_metric("log_rotation_age", "1440", "min", "integer"),
            Some(("pg_settings_log_rotation_age_seconds".into(), 86_400.0))
        );
        assert_eq!(
            setting_metric("autovacuum_work_mem", "-1", "kB", "integer"),
            Some(("pg_settings_autovacuum_work_mem_bytes".into(), -1.0))
        );
        assert_eq!(
            setting_metric("fsync", "on", "", "bool"),
            Some(("pg_settings_fsync".into(), 1.0))
        );
        assert_eq!(
            setting_metric("pg_stat_statements.track_utility", "off", "", "bool"),
            Some(("pg_settings_pg_stat_statements_track_utility".into(), 0.0))
        );
        assert_eq!(setting_metric("x", "1", "parsecs", "integer"), None);
    }
}
