//! The collectors: one query (or a few) each, turned into metric families. postgres_exporter's
//! names and labels wherever the quantity is the same, so its dashboards keep working; ours
//! under `pgops_`.

use std::collections::HashSet;

use diesel::{PgConnection, QueryableByName, RunQueryDsl, connection::SimpleConnection as _};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Map, Value};

use crate::{
    Error, Result,
    text::{Family, Kind, sanitize},
};

/// A collector's connection: each query is prepared once per connection (`PREPARE`), so a
/// scrape pays for execution only, not for parsing and planning the catalog views again.
pub struct Session<'a> {
    /// The connection.
    pub conn: &'a mut PgConnection,
    /// Names of the statements prepared on it.
    pub prepared: &'a mut HashSet<String>,
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
    /// Runs `query` (prepared on first use) and decodes its rows into `T`s.
    pub fn rows<T: DeserializeOwned>(&mut self, query: &str, context: &str) -> Result<Vec<T>> {
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
                .batch_execute(&format!(
                    "PREPARE {name} AS SELECT coalesce(json_agg(q), '[]'::json)::text AS rows FROM ({query}) AS q"
                ))
                .map_err(db)?;
            self.prepared.insert(name.clone());
        }
        let got = diesel::sql_query(format!("EXECUTE {name}"))
            .get_result::<JsonRows>(self.conn)
            .map_err(db)?;
        serde_json::from_str(&got.rows).map_err(|source| {
            Error::Query(pgops_pg::Error::Decode {
                context: context.to_owned(),
                source,
            })
        })
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
    /// Expensive: its result is reused for the cache interval.
    pub cached: bool,
    /// Runs it.
    pub run: fn(&mut Session<'_>, &Context) -> Result<Vec<Family>>,
}

/// Every collector, in output order.
pub const COLLECTORS: &[Collector] = &[
    Collector {
        name: "static",
        cached: true,
        run: static_info,
    },
    Collector {
        name: "database",
        cached: true,
        run: database_size,
    },
    Collector {
        name: "locks",
        cached: false,
        run: locks,
    },
    Collector {
        name: "stat_activity",
        cached: false,
        run: stat_activity,
    },
    Collector {
        name: "stat_archiver",
        cached: false,
        run: stat_archiver,
    },
    Collector {
        name: "stat_bgwriter",
        cached: false,
        run: stat_bgwriter,
    },
    Collector {
        name: "stat_database",
        cached: false,
        run: stat_database,
    },
    Collector {
        name: "stat_database_conflicts",
        cached: false,
        run: stat_database_conflicts,
    },
    Collector {
        name: "settings",
        cached: true,
        run: settings,
    },
    Collector {
        name: "replication",
        cached: false,
        run: replication,
    },
    Collector {
        name: "replication_slots",
        cached: false,
        run: replication_slots,
    },
    Collector {
        name: "transactions",
        cached: false,
        run: transactions,
    },
    Collector {
        name: "table_sizes",
        cached: true,
        run: table_sizes,
    },
    Collector {
        name: "top_queries",
        cached: true,
        run: top_queries,
    },
];

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

fn static_info(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    #[derive(Deserialize)]
    struct V {
        version: String,
        short: String,
        start: f64,
    }
    let v: Vec<V> = session.rows(
        "SELECT version() AS version, current_setting('server_version') AS short,
                extract(epoch FROM pg_postmaster_start_time())::float8 AS start",
        "reading the server version",
    )?;
    let mut fams = Vec::new();
    if let Some(v) = v.first() {
        let short = v.short.split_whitespace().next().unwrap_or("");
        let short = if short.matches('.').count() == 1 {
            format!("{short}.0")
        } else {
            short.to_owned()
        };
        fams.push(Family::single(
            "pg_static",
            "Version string as reported by postgres",
            Kind::Untyped,
            &[
                ("server", &ctx.server),
                ("short_version", &short),
                ("version", &v.version),
            ],
            1.0,
        ));
        fams.push(Family::single(
            "pg_postmaster_start_time_seconds",
            "Time at which postmaster started",
            Kind::Gauge,
            &[("server", &ctx.server)],
            v.start,
        ));
    }
    Ok(fams)
}

fn database_size(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    #[derive(Deserialize)]
    struct Db {
        datname: String,
        bytes: Option<f64>,
    }
    let dbs: Vec<Db> = session.rows(
        "SELECT datname::text AS datname,
                CASE WHEN has_database_privilege(oid, 'CONNECT') THEN pg_database_size(oid)::float8 END AS bytes
         FROM pg_database ORDER BY datname",
        "reading database sizes",
    )?;
    let mut fam = Family::new(
        "pg_database_size_bytes",
        "Disk space used by the database",
        Kind::Gauge,
    );
    for db in &dbs {
        fam.push(
            &[("datname", &db.datname), ("server", &ctx.server)],
            db.bytes.unwrap_or(f64::NAN),
        );
    }
    Ok(vec![fam])
}

fn locks(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    #[derive(Deserialize)]
    struct L {
        datname: String,
        mode: String,
        count: f64,
    }
    let found: Vec<L> = session.rows(
        "SELECT d.datname::text AS datname, m.mode, coalesce(l.count, 0)::float8 AS count
         FROM (VALUES ('accesssharelock'), ('rowsharelock'), ('rowexclusivelock'),
                      ('shareupdateexclusivelock'), ('sharelock'), ('sharerowexclusivelock'),
                      ('exclusivelock'), ('accessexclusivelock'), ('sireadlock')) AS m(mode)
         CROSS JOIN pg_database d
         LEFT JOIN (SELECT database, lower(mode) AS mode, count(*) AS count FROM pg_locks
                    WHERE database IS NOT NULL GROUP BY 1, 2) l
           ON l.mode = m.mode AND l.database = d.oid
         ORDER BY 1, 2",
        "reading pg_locks",
    )?;
    let mut fam = Family::new("pg_locks_count", "Number of locks", Kind::Gauge);
    for l in &found {
        fam.push(
            &[
                ("datname", &l.datname),
                ("mode", &l.mode),
                ("server", &ctx.server),
            ],
            l.count,
        );
    }
    Ok(vec![fam])
}

fn stat_activity(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    #[derive(Deserialize)]
    struct A {
        datname: String,
        state: String,
        count: f64,
        max_tx_duration: f64,
    }
    let found: Vec<A> = session.rows(
        "SELECT d.datname::text AS datname, s.state, coalesce(a.count, 0)::float8 AS count,
                coalesce(a.max_tx_duration, 0)::float8 AS max_tx_duration
         FROM (VALUES ('active'), ('idle'), ('idle in transaction'), ('idle in transaction (aborted)'),
                      ('fastpath function call'), ('disabled')) AS s(state)
         CROSS JOIN pg_database d
         LEFT JOIN (SELECT datname, state, count(*) AS count,
                           max(extract(epoch FROM now() - xact_start))::float8 AS max_tx_duration
                    FROM pg_stat_activity GROUP BY 1, 2) a
           ON a.state = s.state AND a.datname = d.datname
         ORDER BY 1, 2",
        "reading pg_stat_activity",
    )?;
    let mut count = Family::new(
        "pg_stat_activity_count",
        "number of connections in this state",
        Kind::Gauge,
    );
    let mut max = Family::new(
        "pg_stat_activity_max_tx_duration",
        "max duration in seconds any active transaction has been running",
        Kind::Gauge,
    );
    for a in &found {
        let labels = [
            ("datname", a.datname.as_str()),
            ("server", &ctx.server),
            ("state", &a.state),
        ];
        count.push(&labels, a.count);
        max.push(&labels, a.max_tx_duration);
    }
    Ok(vec![count, max])
}

fn stat_archiver(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    #[derive(Deserialize)]
    struct A {
        archived: f64,
        failed: f64,
        last_archive_age: Option<f64>,
        last_failure_age: Option<f64>,
        failing: bool,
    }
    let found: Vec<A> = session.rows(
        "SELECT archived_count::float8 AS archived, failed_count::float8 AS failed,
                extract(epoch FROM now() - last_archived_time)::float8 AS last_archive_age,
                extract(epoch FROM now() - last_failed_time)::float8 AS last_failure_age,
                coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false) AS failing
         FROM pg_stat_archiver",
        "reading pg_stat_archiver",
    )?;
    let Some(a) = found.first() else {
        return Ok(Vec::new());
    };
    let server = [("server", ctx.server.as_str())];
    Ok(vec![
        Family::single(
            "pg_stat_archiver_archived_count",
            "Number of WAL files that have been successfully archived",
            Kind::Counter,
            &server,
            a.archived,
        ),
        Family::single(
            "pg_stat_archiver_failed_count",
            "Number of failed attempts for archiving WAL files",
            Kind::Counter,
            &server,
            a.failed,
        ),
        Family::single(
            "pg_stat_archiver_last_archive_age",
            "Time in seconds since last WAL segment was successfully archived",
            Kind::Gauge,
            &server,
            a.last_archive_age.unwrap_or(f64::NAN),
        ),
        Family::single(
            "pgops_wal_archive_success_total",
            "WAL segments archived successfully since the statistics reset",
            Kind::Counter,
            &[],
            a.archived,
        ),
        Family::single(
            "pgops_wal_archive_failure_total",
            "Failed WAL archive attempts since the statistics reset",
            Kind::Counter,
            &[],
            a.failed,
        ),
        Family::single(
            "pgops_wal_archive_last_failure_age_seconds",
            "Seconds since the last failed archive attempt (NaN: none)",
            Kind::Gauge,
            &[],
            a.last_failure_age.unwrap_or(f64::NAN),
        ),
        Family::single(
            "pgops_wal_archive_failing",
            "1 when the last archive attempt failed (the newest failure is newer than the newest success)",
            Kind::Gauge,
            &[],
            f64::from(u8::from(a.failing)),
        ),
    ])
}

/// Columns of a one-row-per-object view, each as a family `prefix + column + suffix`.
fn columns_as_families(
    objects: &[Map<String, Value>],
    view: &str,
    prefix: &str,
    suffix: &str,
    label_columns: &[&str],
    ctx: &Context,
    kind: impl Fn(&str) -> Kind,
) -> Vec<Family> {
    let Some(first) = objects.first() else {
        return Vec::new();
    };
    let mut fams = Vec::new();
    for column in first
        .keys()
        .filter(|k| !label_columns.contains(&k.as_str()))
    {
        let mut fam = Family::new(
            format!("{prefix}{}{suffix}", sanitize(column)),
            format!("{column} from {view}"),
            kind(column),
        );
        for object in objects {
            let mut labels: Vec<(&str, String)> = label_columns
                .iter()
                .map(|l| (*l, object.get(*l).map(s).unwrap_or_default()))
                .collect();
            labels.push(("server", ctx.server.clone()));
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            fam.push(&labels, object.get(column).map_or(f64::NAN, f));
        }
        fams.push(fam);
    }
    fams
}

fn stat_bgwriter(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    let found: Vec<Map<String, Value>> = session.rows(
        "SELECT checkpoints_timed, checkpoints_req, checkpoint_write_time, checkpoint_sync_time,
                buffers_checkpoint, buffers_clean, maxwritten_clean, buffers_backend,
                buffers_backend_fsync, buffers_alloc,
                extract(epoch FROM stats_reset)::float8 AS stats_reset
         FROM pg_stat_bgwriter",
        "reading pg_stat_bgwriter",
    )?;
    Ok(columns_as_families(
        &found,
        "pg_stat_bgwriter",
        "pg_stat_bgwriter_",
        "_total",
        &[],
        ctx,
        |_| Kind::Counter,
    ))
}

fn stat_database(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    // Every numeric column the server has (they differ between versions), timestamps as
    // epoch seconds.
    let found: Vec<Map<String, Value>> = session.rows(
        "SELECT d.datid::int8::text AS datid, coalesce(d.datname::text, '') AS datname,
                to_jsonb(d) - 'datid' - 'datname' AS columns
         FROM pg_stat_database d ORDER BY d.datid",
        "reading pg_stat_database",
    )?;
    let flat: Vec<Map<String, Value>> = found
        .into_iter()
        .map(|mut row| {
            let columns = row.remove("columns");
            if let Some(Value::Object(columns)) = columns {
                row.extend(columns);
            }
            row
        })
        .collect();
    Ok(columns_as_families(
        &flat,
        "pg_stat_database",
        "pg_stat_database_",
        "",
        &["datid", "datname"],
        ctx,
        |c| match c {
            "numbackends" => Kind::Gauge,
            "checksum_last_failure"
            | "session_time"
            | "active_time"
            | "idle_in_transaction_time"
            | "sessions"
            | "sessions_abandoned"
            | "sessions_fatal"
            | "sessions_killed" => Kind::Untyped,
            _ => Kind::Counter,
        },
    ))
}

fn stat_database_conflicts(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    let found: Vec<Map<String, Value>> = session.rows(
        "SELECT datid::int8::text AS datid, datname::text AS datname, confl_tablespace,
                confl_lock, confl_snapshot, confl_bufferpin, confl_deadlock
         FROM pg_stat_database_conflicts ORDER BY datid",
        "reading pg_stat_database_conflicts",
    )?;
    Ok(columns_as_families(
        &found,
        "pg_stat_database_conflicts",
        "pg_stat_database_conflicts_",
        "",
        &["datid", "datname"],
        ctx,
        |_| Kind::Counter,
    ))
}

/// postgres_exporter's name and value for one `pg_settings` row: units converted to seconds
/// or bytes (with the suffix), booleans as 1/0, -1 kept as is. None for a unit it does not
/// know. Pure.
pub fn setting_metric(
    name: &str,
    setting: &str,
    unit: &str,
    vartype: &str,
) -> Option<(String, f64)> {
    let mut value = if vartype == "bool" {
        if setting == "on" { 1.0 } else { 0.0 }
    } else {
        setting.parse::<f64>().ok()?
    };
    let suffix = match unit {
        "" => "",
        "ms" | "s" | "min" | "h" | "d" => "_seconds",
        "B" | "kB" | "MB" | "GB" | "TB" | "1kB" | "2kB" | "4kB" | "8kB" | "16kB" | "32kB"
        | "64kB" | "16MB" | "32MB" | "64MB" => "_bytes",
        _ => return None,
    };
    if value != -1.0 {
        let factor = match unit {
            "ms" => 0.001,
            "min" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "kB" | "1kB" => 1024.0,
            "2kB" => 2048.0,
            "4kB" => 4096.0,
            "8kB" => 8192.0,
            "16kB" => 16_384.0,
            "32kB" => 32_768.0,
            "64kB" => 65_536.0,
            "MB" => 1_048_576.0,
            "16MB" => 16_777_216.0,
            "32MB" => 33_554_432.0,
            "64MB" => 67_108_864.0,
            "GB" => 1_073_741_824.0,
            "TB" => 1_099_511_627_776.0,
            _ => 1.0,
        };
        value *= factor;
    }
    Some((format!("pg_settings_{}{suffix}", sanitize(name)), value))
}

fn settings(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    #[derive(Deserialize)]
    struct S {
        name: String,
        setting: String,
        unit: String,
        short_desc: String,
        vartype: String,
    }
    let found: Vec<S> = session.rows(
        "SELECT name, setting, coalesce(unit, '') AS unit, short_desc, vartype FROM pg_settings
         WHERE vartype IN ('bool', 'integer', 'real') AND name <> 'sync_commit_cancel_wait'",
        "reading pg_settings",
    )?;
    Ok(found
        .iter()
        .filter_map(|s| {
            let (name, value) = setting_metric(&s.name, &s.setting, &s.unit, &s.vartype)?;
            let help = if name.ends_with("_seconds") && !s.unit.is_empty() {
                format!("{} [Units converted to seconds.]", s.short_desc)
            } else if name.ends_with("_bytes") && !s.unit.is_empty() {
                format!("{} [Units converted to bytes.]", s.short_desc)
            } else {
                s.short_desc.clone()
            };
            Some(Family::single(
                name,
                help,
                Kind::Gauge,
                &[("server", &ctx.server)],
                value,
            ))
        })
        .collect())
}

fn replication(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    #[derive(Deserialize)]
    struct R {
        is_replica: bool,
        lag: f64,
    }
    #[derive(Deserialize)]
    struct Standby {
        application_name: String,
        client_addr: String,
        state: String,
        lag_bytes: Option<f64>,
        replay_lag: Option<f64>,
    }
    let me: Vec<R> = session.rows(
        "SELECT pg_is_in_recovery() AS is_replica,
                CASE WHEN NOT pg_is_in_recovery() THEN 0
                     WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                     ELSE greatest(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp())) END::float8 AS lag",
        "reading the replication state",
    )?;
    let server = [("server", ctx.server.as_str())];
    let mut fams = Vec::new();
    if let Some(me) = me.first() {
        fams.push(Family::single(
            "pg_replication_lag_seconds",
            "Replication lag behind master in seconds",
            Kind::Gauge,
            &server,
            me.lag,
        ));
        fams.push(Family::single(
            "pg_replication_is_replica",
            "Indicates if the server is a replica",
            Kind::Gauge,
            &server,
            f64::from(u8::from(me.is_replica)),
        ));
        if me.is_replica {
            return Ok(fams);
        }
    }
    let standbys: Vec<Standby> = session.rows(
        "SELECT coalesce(application_name, '') AS application_name,
                coalesce(host(client_addr), 'local') AS client_addr, coalesce(state, '') AS state,
                pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 AS lag_bytes,
                extract(epoch FROM replay_lag)::float8 AS replay_lag
         FROM pg_stat_replication ORDER BY 1, 2",
        "reading pg_stat_replication",
    )?;
    let mut bytes = Family::new(
        "pgops_replication_lag_bytes",
        "WAL bytes a standby has yet to replay (from LSNs on the primary)",
        Kind::Gauge,
    );
    let mut seconds = Family::new(
        "pgops_replication_replay_lag_seconds",
        "The primary's measure of a standby's replay lag (0 while idle)",
        Kind::Gauge,
    );
    for s in &standbys {
        let labels = [
            ("application_name", s.application_name.as_str()),
            ("client_addr", &s.client_addr),
            ("state", &s.state),
        ];
        bytes.push(&labels, s.lag_bytes.unwrap_or(f64::NAN));
        seconds.push(&labels, s.replay_lag.unwrap_or(0.0));
    }
    fams.push(Family::single(
        "pgops_replication_standbys",
        "Standbys connected to the primary",
        Kind::Gauge,
        &[],
        standbys.len() as f64,
    ));
    fams.push(bytes);
    fams.push(seconds);
    Ok(fams)
}

fn replication_slots(session: &mut Session<'_>, _ctx: &Context) -> Result<Vec<Family>> {
    #[derive(Deserialize)]
    struct Slot {
        slot_name: String,
        slot_type: String,
        active: bool,
        retained: Option<f64>,
    }
    let slots: Vec<Slot> = session.rows(
        "SELECT slot_name::text AS slot_name, slot_type, active,
                pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()
                                     ELSE pg_current_wal_lsn() END, restart_lsn)::float8 AS retained
         FROM pg_replication_slots ORDER BY 1",
        "reading pg_replication_slots",
    )?;
    let mut active = Family::new(
        "pgops_replication_slot_active",
        "1 when a consumer is connected to the slot",
        Kind::Gauge,
    );
    let mut retained = Family::new(
        "pgops_replication_slot_retained_wal_bytes",
        "WAL the slot keeps on the primary's disk",
        Kind::Gauge,
    );
    for slot in &slots {
        let labels = [
            ("slot_name", slot.slot_name.as_str()),
            ("slot_type", &slot.slot_type),
        ];
        active.push(&labels, f64::from(u8::from(slot.active)));
        retained.push(&labels, slot.retained.unwrap_or(f64::NAN));
    }
    let inactive = slots.iter().filter(|s| !s.active).count() as f64;
    Ok(vec![
        Family::single(
            "pgops_replication_slots_inactive",
            "Replication slots with no consumer: they retain WAL until dropped",
            Kind::Gauge,
            &[],
            inactive,
        ),
        active,
        retained,
    ])
}

fn transactions(session: &mut Session<'_>, _ctx: &Context) -> Result<Vec<Family>> {
    #[derive(Deserialize)]
    struct T {
        oldest: f64,
        blocked: f64,
    }
    #[derive(Deserialize)]
    struct Db {
        datname: String,
        xid_age: f64,
        hit: f64,
        read: f64,
    }
    let t: Vec<T> = session.rows(
        "SELECT greatest(coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0), 0)::float8 AS oldest,
                count(*) FILTER (WHERE cardinality(pg_blocking_pids(pid)) > 0)::float8 AS blocked
         FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
        "reading transaction ages",
    )?;
    let dbs: Vec<Db> = session.rows(
        "SELECT d.datname::text AS datname, age(d.datfrozenxid)::float8 AS xid_age,
                coalesce(s.blks_hit, 0)::float8 AS hit, coalesce(s.blks_read, 0)::float8 AS read
         FROM pg_database d LEFT JOIN pg_stat_database s ON s.datid = d.oid
         WHERE d.datallowconn ORDER BY 1",
        "reading database ages",
    )?;
    let mut fams = Vec::new();
    if let Some(t) = t.first() {
        fams.push(Family::single(
            "pgops_oldest_transaction_age_seconds",
            "Age of the oldest open transaction of a client session",
            Kind::Gauge,
            &[],
            t.oldest,
        ));
        fams.push(Family::single(
            "pgops_blocked_queries",
            "Sessions waiting for a lock another session holds",
            Kind::Gauge,
            &[],
            t.blocked,
        ));
    }
    let mut age = Family::new(
        "pgops_xid_wraparound_age",
        "Transactions since the database's oldest unfrozen XID (wraparound at 2^31)",
        Kind::Gauge,
    );
    let mut hit = Family::new(
        "pgops_cache_hit_ratio",
        "Share of block reads served from shared buffers since the statistics reset",
        Kind::Gauge,
    );
    for db in &dbs {
        age.push(&[("datname", &db.datname)], db.xid_age);
        let total = db.hit + db.read;
        hit.push(
            &[("datname", &db.datname)],
            if total > 0.0 {
                db.hit / total
            } else {
                f64::NAN
            },
        );
    }
    let worst = dbs.iter().map(|d| d.xid_age).fold(0.0, f64::max);
    fams.push(Family::single(
        "pgops_xid_wraparound_ratio",
        "Oldest XID age of any database as a share of 2^31",
        Kind::Gauge,
        &[],
        worst / 2_147_483_648.0,
    ));
    fams.push(age);
    fams.push(hit);
    Ok(fams)
}

fn table_sizes(session: &mut Session<'_>, _ctx: &Context) -> Result<Vec<Family>> {
    #[derive(Deserialize)]
    struct T {
        schema: String,
        table: String,
        bytes: f64,
    }
    let found: Vec<T> = session.rows(
        // Exact sizes for the 50 largest by pg_class.relpages (kept by VACUUM and ANALYZE),
        // not a stat() of every file of every table.
        "SELECT schema, \"table\", bytes FROM (
           SELECT n.nspname::text AS schema, c.relname::text AS table,
                  pg_total_relation_size(c.oid)::float8 AS bytes
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'm', 'p')
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
           ORDER BY c.relpages DESC LIMIT 50) candidates
         ORDER BY 3 DESC, 1, 2 LIMIT 10",
        "reading table sizes",
    )?;
    let mut fam = Family::new(
        "pgops_table_size_bytes",
        "The ten largest tables of the database, with indexes and TOAST",
        Kind::Gauge,
    );
    for t in &found {
        fam.push(&[("schema", &t.schema), ("table", &t.table)], t.bytes);
    }
    Ok(vec![fam])
}

fn top_queries(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    if ctx.top_queries == 0 {
        return Ok(Vec::new());
    }
    #[derive(Deserialize)]
    struct Present {
        present: bool,
    }
    let present: Vec<Present> = session.rows(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements') AS present",
        "looking for pg_stat_statements",
    )?;
    if !present.first().is_some_and(|p| p.present) {
        return Ok(Vec::new());
    }
    #[derive(Deserialize)]
    struct Q {
        queryid: String,
        datname: String,
        calls: f64,
        seconds: f64,
        rows: f64,
    }
    let found: Vec<Q> = session.rows(
        &format!(
            "SELECT s.queryid::text AS queryid, coalesce(d.datname::text, '') AS datname,
                    sum(s.calls)::float8 AS calls, (sum(s.total_exec_time) / 1000)::float8 AS seconds,
                    sum(s.rows)::float8 AS rows
             FROM pg_stat_statements s LEFT JOIN pg_database d ON d.oid = s.dbid
             WHERE s.queryid IS NOT NULL
             GROUP BY 1, 2 ORDER BY 4 DESC LIMIT {}",
            ctx.top_queries
        ),
        "reading pg_stat_statements",
    )?;
    let mut calls = Family::new(
        "pgops_query_calls_total",
        "Calls of the top queries by total time (pg_stat_statements; see `pgops insights top` for the text)",
        Kind::Counter,
    );
    let mut seconds = Family::new(
        "pgops_query_exec_seconds_total",
        "Execution time of the top queries by total time",
        Kind::Counter,
    );
    let mut returned = Family::new(
        "pgops_query_rows_total",
        "Rows returned or affected by the top queries",
        Kind::Counter,
    );
    for q in &found {
        let labels = [("datname", q.datname.as_str()), ("queryid", &q.queryid)];
        calls.push(&labels, q.calls);
        seconds.push(&labels, q.seconds);
        returned.push(&labels, q.rows);
    }
    Ok(vec![calls, seconds, returned])
}

#[cfg(test)]
mod tests {
    use super::*;

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
