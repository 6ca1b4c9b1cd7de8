//! PgBouncer's admin console as a `pgops health` collector: `SHOW POOLS`, `SHOW STATS_TOTALS`,
//! `SHOW DATABASES`, `SHOW LISTS`, `SHOW CONFIG` and `SHOW VERSION`, under the metric names
//! and labels of the community `pgbouncer_exporter` (`pgbouncer_pools_*`,
//! `pgbouncer_stats_totals_*`, `pgbouncer_databases_*`, `pgbouncer_up`), so its dashboards
//! and alerts work unchanged. The console speaks only the simple query protocol, so this
//! goes through `pgops_pg::simple`.

use std::sync::Mutex;

use pgops_pg::{
    DatabaseUrl,
    simple::{Rows, SimpleConnection},
};

use crate::{
    Collector,
    text::{Family, Kind},
};

/// Reports one PgBouncer.
#[derive(Debug)]
pub struct PgBouncerCollector {
    url: DatabaseUrl,
    conn: Mutex<Option<SimpleConnection>>,
}

/// How a column of a `SHOW` becomes a metric: (column, metric suffix, kind, factor, help).
type Column = (&'static str, &'static str, Kind, f64, &'static str);

/// `SHOW POOLS`, labelled by `database` and `user`.
const POOLS: &[Column] = &[
    (
        "cl_active",
        "client_active_connections",
        Kind::Gauge,
        1.0,
        "Client connections linked to a server connection and able to process queries",
    ),
    (
        "cl_active_cancel_req",
        "client_active_cancel_connections",
        Kind::Gauge,
        1.0,
        "Client connections that have forwarded query cancellations to the server and wait for its response",
    ),
    (
        "cl_waiting",
        "client_waiting_connections",
        Kind::Gauge,
        1.0,
        "Client connections waiting for a server connection",
    ),
    (
        "cl_waiting_cancel_req",
        "client_waiting_cancel_connections",
        Kind::Gauge,
        1.0,
        "Client connections that have not forwarded query cancellations to the server yet",
    ),
    (
        "sv_active",
        "server_active_connections",
        Kind::Gauge,
        1.0,
        "Server connections linked to a client connection",
    ),
    (
        "sv_active_cancel",
        "server_active_cancel_connections",
        Kind::Gauge,
        1.0,
        "Server connections currently forwarding a cancel request",
    ),
    (
        "sv_being_canceled",
        "server_being_canceled_connections",
        Kind::Gauge,
        1.0,
        "Server connections waiting for in-flight cancel requests before they can become idle",
    ),
    (
        "sv_idle",
        "server_idle_connections",
        Kind::Gauge,
        1.0,
        "Server connections idle and ready for a client query",
    ),
    (
        "sv_used",
        "server_used_connections",
        Kind::Gauge,
        1.0,
        "Server connections idle longer than server_check_delay, needing server_check_query",
    ),
    (
        "sv_tested",
        "server_testing_connections",
        Kind::Gauge,
        1.0,
        "Server connections running server_reset_query or server_check_query",
    ),
    (
        "sv_login",
        "server_login_connections",
        Kind::Gauge,
        1.0,
        "Server connections logging in",
    ),
];

/// `SHOW STATS_TOTALS`, labelled by `database` (times are in microseconds).
const STATS_TOTALS: &[Column] = &[
    (
        "query_count",
        "queries_pooled_total",
        Kind::Counter,
        1.0,
        "SQL queries pooled",
    ),
    (
        "query_time",
        "queries_duration_seconds_total",
        Kind::Counter,
        1e-6,
        "Seconds spent by PgBouncer connected to PostgreSQL executing queries",
    ),
    (
        "bytes_received",
        "received_bytes_total",
        Kind::Counter,
        1.0,
        "Bytes of network traffic received by PgBouncer",
    ),
    (
        "requests",
        "queries_total",
        Kind::Counter,
        1.0,
        "SQL requests pooled by PgBouncer",
    ),
    (
        "bytes_sent",
        "sent_bytes_total",
        Kind::Counter,
        1.0,
        "Bytes of network traffic sent by PgBouncer",
    ),
    (
        "wait_time",
        "client_wait_seconds_total",
        Kind::Counter,
        1e-6,
        "Seconds clients spent waiting for a server connection",
    ),
    (
        "xact_count",
        "sql_transactions_pooled_total",
        Kind::Counter,
        1.0,
        "SQL transactions pooled",
    ),
    (
        "xact_time",
        "server_in_transaction_seconds_total",
        Kind::Counter,
        1e-6,
        "Seconds spent by PgBouncer connected to PostgreSQL in a transaction",
    ),
    (
        "client_parse_count",
        "client_parses_total",
        Kind::Counter,
        1.0,
        "Prepared-statement Parse messages received from clients",
    ),
    (
        "server_parse_count",
        "server_parses_total",
        Kind::Counter,
        1.0,
        "Prepared-statement Parse messages sent to PostgreSQL",
    ),
    (
        "bind_count",
        "binds_total",
        Kind::Counter,
        1.0,
        "Prepared statements readied for execution with a Bind message",
    ),
];

/// `SHOW DATABASES`, labelled by `name`, `host`, `port`, `database`, `force_user`, `pool_mode`.
const DATABASES: &[Column] = &[
    (
        "pool_size",
        "pool_size",
        Kind::Gauge,
        1.0,
        "Maximum number of server connections",
    ),
    (
        "reserve_pool",
        "reserve_pool",
        Kind::Gauge,
        1.0,
        "Maximum number of additional connections for this database",
    ),
    (
        "max_connections",
        "max_connections",
        Kind::Gauge,
        1.0,
        "Maximum number of allowed connections for this database",
    ),
    (
        "current_connections",
        "current_connections",
        Kind::Gauge,
        1.0,
        "Current number of connections for this database",
    ),
    (
        "paused",
        "paused",
        Kind::Gauge,
        1.0,
        "1 if this database is paused, else 0",
    ),
    (
        "disabled",
        "disabled",
        Kind::Gauge,
        1.0,
        "1 if this database is disabled, else 0",
    ),
];

/// `SHOW LISTS`: list name -> metric.
const LISTS: &[(&str, &str, &str)] = &[
    ("databases", "pgbouncer_databases", "Count of databases"),
    ("users", "pgbouncer_users", "Count of users"),
    ("pools", "pgbouncer_pools", "Count of pools"),
    (
        "free_clients",
        "pgbouncer_free_clients",
        "Count of free clients",
    ),
    (
        "used_clients",
        "pgbouncer_used_clients",
        "Count of used clients",
    ),
    (
        "login_clients",
        "pgbouncer_login_clients",
        "Count of clients in login state",
    ),
    (
        "free_servers",
        "pgbouncer_free_servers",
        "Count of free servers",
    ),
    (
        "used_servers",
        "pgbouncer_used_servers",
        "Count of used servers",
    ),
    (
        "dns_names",
        "pgbouncer_cached_dns_names",
        "Count of DNS names in the cache",
    ),
    (
        "dns_zones",
        "pgbouncer_cached_dns_zones",
        "Count of DNS zones in the cache",
    ),
    (
        "dns_queries",
        "pgbouncer_in_flight_dns_queries",
        "Count of in-flight DNS queries",
    ),
];

/// `SHOW CONFIG`: setting -> metric.
const CONFIG: &[(&str, &str, &str)] = &[
    (
        "max_client_conn",
        "pgbouncer_config_max_client_connections",
        "Config maximum number of client connections",
    ),
    (
        "max_user_connections",
        "pgbouncer_config_max_user_connections",
        "Config maximum number of server connections per user",
    ),
];

impl PgBouncerCollector {
    /// A collector for the admin console at `url` (database `pgbouncer`).
    pub fn new(url: DatabaseUrl) -> Self {
        PgBouncerCollector {
            url,
            conn: Mutex::new(None),
        }
    }

    /// Every family; `pgbouncer_up` is 0 (and nothing else reported) when the console cannot
    /// be read.
    pub fn families(&self) -> Vec<Family> {
        let mut slot = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let read = |slot: &mut Option<SimpleConnection>| -> pgops_pg::Result<Vec<Family>> {
            let conn = match slot {
                Some(conn) => conn,
                None => slot.insert(SimpleConnection::connect(&self.url)?),
            };
            read_all(conn)
        };
        let (mut families, up) = match read(&mut slot) {
            Ok(families) => (families, 1.0),
            Err(e) => {
                tracing::warn!(pgbouncer = %self.url, error = %pgops_pg::report(&e), "PgBouncer scrape failed");
                *slot = None;
                (Vec::new(), 0.0)
            }
        };
        families.push(Family::single(
            "pgbouncer_up",
            "The PgBouncer scrape succeeded",
            Kind::Gauge,
            &[],
            up,
        ));
        families
    }
}

impl Collector for PgBouncerCollector {
    fn name(&self) -> &'static str {
        "pgbouncer"
    }

    fn target(&self) -> String {
        self.url.server()
    }

    fn collect(&self) -> Result<Vec<Family>, String> {
        Ok(self.families())
    }
}

fn read_all(conn: &mut SimpleConnection) -> pgops_pg::Result<Vec<Family>> {
    let mut families = Vec::new();
    let version = conn.query("SHOW VERSION")?;
    let mut info = Family::new(
        "pgbouncer_version_info",
        "The PgBouncer version",
        Kind::Gauge,
    );
    if let Some(Some(v)) = version.rows.first().and_then(|r| r.first()) {
        info.push(&[("version", v.as_str())], 1.0);
    }
    families.push(info);
    families.extend(keyed(&conn.query("SHOW LISTS")?, LISTS));
    families.extend(keyed(&conn.query("SHOW CONFIG")?, CONFIG));
    let pools = conn.query("SHOW POOLS")?;
    families.extend(mapped(
        &pools,
        "pgbouncer_pools",
        &["database", "user"],
        POOLS,
    ));
    families.push(maxwait(&pools));
    families.extend(mapped(
        &conn.query("SHOW STATS_TOTALS")?,
        "pgbouncer_stats_totals",
        &["database"],
        STATS_TOTALS,
    ));
    families.extend(mapped(
        &conn.query("SHOW DATABASES")?,
        "pgbouncer_databases",
        &[
            "name",
            "host",
            "port",
            "database",
            "force_user",
            "pool_mode",
        ],
        DATABASES,
    ));
    Ok(families)
}

/// A `SHOW` with one row per object: one family per known column, labelled by `labels`.
fn mapped(rows: &Rows, prefix: &str, labels: &[&str], columns: &[Column]) -> Vec<Family> {
    columns
        .iter()
        .filter(|(column, ..)| rows.columns.iter().any(|c| c == column))
        .map(|(column, suffix, kind, factor, help)| {
            let mut family = Family::new(format!("{prefix}_{suffix}"), *help, *kind);
            for record in rows.records() {
                let Some(value) = record.number(column) else {
                    continue;
                };
                let label_values: Vec<(&str, &str)> = labels
                    .iter()
                    .map(|l| (*l, record.get(l).unwrap_or("")))
                    .collect();
                family.push(&label_values, value * factor);
            }
            family
        })
        .collect()
}

/// `SHOW POOLS`' oldest waiting client, in seconds (`maxwait` plus `maxwait_us`).
fn maxwait(pools: &Rows) -> Family {
    let mut family = Family::new(
        "pgbouncer_pools_client_maxwait_seconds",
        "Age of the oldest unserved client connection",
        Kind::Gauge,
    );
    for record in pools.records() {
        let seconds = record.number("maxwait").unwrap_or(0.0)
            + record.number("maxwait_us").unwrap_or(0.0) * 1e-6;
        family.push(
            &[
                ("database", record.get("database").unwrap_or("")),
                ("user", record.get("user").unwrap_or("")),
            ],
            seconds,
        );
    }
    family
}

/// A `SHOW` of (key, value, ..) rows: one gauge per known key.
fn keyed(rows: &Rows, known: &[(&str, &str, &str)]) -> Vec<Family> {
    let mut out = Vec::new();
    for row in &rows.rows {
        let (Some(Some(key)), Some(Some(value))) = (row.first(), row.get(1)) else {
            continue;
        };
        if let Some((_, metric, help)) = known.iter().find(|(k, ..)| k == key)
            && let Ok(value) = value.parse::<f64>()
        {
            out.push(Family::single(*metric, *help, Kind::Gauge, &[], value));
        }
    }
    out
}
