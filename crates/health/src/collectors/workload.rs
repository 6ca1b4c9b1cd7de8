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
        &pgops_pg::catalog::largest_tables(10, 50),
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

/// Every user table's live and dead tuples, under postgres_exporter's `stat_user_tables`
/// names and labels: the community mixin's "table not vacuumed" alert compares the two with
/// the autovacuum settings. One series per table and family, so the collector is cached, keeps
/// to the two families the mixin reads, and calls the two statistics functions itself instead
/// of reading `pg_stat_user_tables`, which computes twenty per table (a third of the time at
/// 10,000 tables).
pub(super) fn stat_user_tables(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    #[derive(diesel::QueryableByName)]
    struct T {
        #[diesel(sql_type = diesel::sql_types::Text)]
        schemaname: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        relname: String,
        #[diesel(sql_type = diesel::sql_types::Double)]
        live: f64,
        #[diesel(sql_type = diesel::sql_types::Double)]
        dead: f64,
    }
    #[derive(Deserialize)]
    struct Db {
        datname: String,
    }
    let db: Vec<Db> = session.rows(
        "SELECT current_database()::text AS datname",
        "reading the database's name",
    )?;
    let datname = db.first().map_or("", |d| d.datname.as_str());
    // The tables pg_stat_user_tables lists.
    let found: Vec<T> = session.table(
        "SELECT n.nspname::text AS schemaname, c.relname::text AS relname,
                pg_stat_get_live_tuples(c.oid)::float8 AS live,
                pg_stat_get_dead_tuples(c.oid)::float8 AS dead
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 't', 'm', 'p')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'",
        "reading the user tables' tuple counts",
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
    for t in &found {
        let labels = [
            ("datname", datname),
            ("schemaname", &t.schemaname),
            ("relname", &t.relname),
            ("server", &ctx.server),
        ];
        live.push_text(&labels, t.live);
        dead.push_text(&labels, t.dead);
    }
    Ok(vec![live, dead])
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
