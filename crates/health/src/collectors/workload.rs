//! What the application does to the database: the largest tables and the top statements of
//! `pg_stat_statements`.

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
