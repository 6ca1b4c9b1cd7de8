//! What the application does to the database: its tables' tuples and vacuums, the largest
//! tables, and the top statements of `pg_stat_statements`.

use serde::Deserialize;

use super::{Context, Session};
use crate::{
    Result,
    text::{Family, Kind},
};

pub(super) fn table_sizes(session: &mut Session<'_>, _ctx: &Context) -> Result<Vec<Family>> {
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

/// Every user table's live and dead tuples and last autovacuum, under postgres_exporter's
/// `stat_user_tables` names and labels: the community mixin's "table not vacuumed" alert
/// compares the two tuple counts with the autovacuum settings. One row per table, so the
/// collector is cached: at 10,000 tables it is the scrape's largest part.
pub(super) fn stat_user_tables(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    #[derive(Deserialize)]
    struct T {
        datname: String,
        schemaname: String,
        relname: String,
        n_live_tup: f64,
        n_dead_tup: f64,
        n_mod_since_analyze: f64,
        last_autovacuum: Option<f64>,
        autovacuum_count: f64,
    }
    let found: Vec<T> = session.rows(
        "SELECT current_database()::text AS datname, schemaname::text AS schemaname,
                relname::text AS relname, n_live_tup::float8 AS n_live_tup,
                n_dead_tup::float8 AS n_dead_tup, n_mod_since_analyze::float8 AS n_mod_since_analyze,
                extract(epoch FROM last_autovacuum)::float8 AS last_autovacuum,
                autovacuum_count::float8 AS autovacuum_count
         FROM pg_stat_user_tables ORDER BY 2, 3",
        "reading pg_stat_user_tables",
    )?;
    let mut live = Family::new(
        "pg_stat_user_tables_n_live_tup",
        "Estimated number of live rows",
        Kind::Gauge,
    );
    let mut dead = Family::new(
        "pg_stat_user_tables_n_dead_tup",
        "Estimated number of dead rows",
        Kind::Gauge,
    );
    let mut modified = Family::new(
        "pg_stat_user_tables_n_mod_since_analyze",
        "Estimated number of rows changed since last analyze",
        Kind::Gauge,
    );
    let mut vacuumed = Family::new(
        "pg_stat_user_tables_last_autovacuum",
        "Last time at which this table was vacuumed by the autovacuum daemon (epoch seconds; 0: never)",
        Kind::Gauge,
    );
    let mut vacuums = Family::new(
        "pg_stat_user_tables_autovacuum_count",
        "Number of times this table has been vacuumed by the autovacuum daemon",
        Kind::Counter,
    );
    for t in &found {
        let labels = [
            ("datname", t.datname.as_str()),
            ("schemaname", &t.schemaname),
            ("relname", &t.relname),
            ("server", &ctx.server),
        ];
        live.push(&labels, t.n_live_tup);
        dead.push(&labels, t.n_dead_tup);
        modified.push(&labels, t.n_mod_since_analyze);
        vacuumed.push(&labels, t.last_autovacuum.unwrap_or(0.0));
        vacuums.push(&labels, t.autovacuum_count);
    }
    Ok(vec![live, dead, modified, vacuumed, vacuums])
}

pub(super) fn top_queries(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
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
