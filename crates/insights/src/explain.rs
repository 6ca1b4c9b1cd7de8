//! Safe EXPLAIN: the statement runs in a transaction that is always rolled back, under a
//! statement timeout; the JSON plan becomes a tree and a summary of what deserves a look.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use diesel::{Connection, PgConnection, RunQueryDsl, connection::SimpleConnection};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use pgops_pg::{
    quote_literal,
    rows::{row, rows},
};

use crate::{
    Error, Result,
    sql::{check_explainable, server_version},
};

/// How to explain.
#[derive(Debug, Clone)]
pub struct ExplainOptions {
    /// Run the statement (EXPLAIN ANALYZE); its effects are rolled back.
    pub analyze: bool,
    /// Report buffer usage (needs `analyze` for actual figures).
    pub buffers: bool,
    /// `SET LOCAL statement_timeout` for the statement.
    pub statement_timeout: Duration,
    /// A table with at least this many rows is "large" for the sequential-scan finding.
    pub large_table_rows: f64,
    /// Values for `$1`, `$2`, ... in order, as text: the server casts each to the type it
    /// infers for that parameter (what `PREPARE` without types does).
    pub params: Vec<String>,
    /// Plan with the parameters left unknown (`EXPLAIN (GENERIC_PLAN)`, PostgreSQL 16+):
    /// the plan a prepared statement falls back to, for text straight from
    /// `pg_stat_statements`. Excludes `analyze` and `params`.
    pub generic_plan: bool,
}

impl Default for ExplainOptions {
    fn default() -> Self {
        ExplainOptions {
            analyze: false,
            buffers: false,
            statement_timeout: Duration::from_secs(30),
            large_table_rows: 10_000.0,
            params: Vec::new(),
            generic_plan: false,
        }
    }
}

/// One plan node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    /// `Seq Scan`, `Index Scan`, `Hash Join`, ...
    pub node_type: String,
    /// The table scanned, schema-qualified, for scan nodes.
    pub relation: Option<String>,
    /// The index used, for index scans.
    pub index: Option<String>,
    /// The planner's total cost.
    pub total_cost: f64,
    /// Rows the planner expected per loop.
    pub plan_rows: f64,
    /// Rows produced per loop (ANALYZE).
    pub actual_rows: Option<f64>,
    /// Times the node ran (ANALYZE).
    pub loops: Option<f64>,
    /// Milliseconds for one loop of this node and its children (ANALYZE).
    pub actual_total_ms: Option<f64>,
    /// The filter applied to rows, as the server prints it.
    pub filter: Option<String>,
    /// Rows removed by the filter per loop (ANALYZE).
    pub rows_removed_by_filter: Option<f64>,
    /// Shared buffers hit (BUFFERS).
    pub shared_hit: Option<i64>,
    /// Shared blocks read (BUFFERS).
    pub shared_read: Option<i64>,
    /// Why this node spilled to disk, when it did (ANALYZE).
    pub spill: Option<String>,
    /// Child nodes.
    pub children: Vec<Node>,
}

/// What deserves a look in a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Finding {
    /// The planner's row estimate is off by more than 10x: statistics are stale or the
    /// planner cannot see a correlation (ANALYZE the table, raise its statistics target, or
    /// CREATE STATISTICS).
    Misestimate {
        /// The node, e.g. `Seq Scan on public.notes`.
        node: String,
        /// Rows expected per loop.
        estimated: f64,
        /// Rows produced per loop.
        actual: f64,
        /// max/min of the two.
        factor: f64,
    },
    /// A sequential scan reads a large table: an index on the filtered columns may help.
    SeqScanOnLargeTable {
        /// The table.
        table: String,
        /// Rows in the table (from `pg_class.reltuples`).
        table_rows: f64,
        /// The filter, when there is one.
        filter: Option<String>,
    },
    /// A sort, hash or aggregate spilled to disk: raise `work_mem` for this query, or make
    /// the input smaller.
    Spill {
        /// The node.
        node: String,
        /// What the server reported.
        detail: String,
    },
}

/// An explained statement.
#[derive(Debug, Clone, Serialize)]
pub struct Explained {
    /// The root of the plan.
    pub plan: Node,
    /// The planner's total cost estimate.
    pub total_cost: f64,
    /// Planning time in ms (ANALYZE).
    pub planning_ms: Option<f64>,
    /// Execution time in ms (ANALYZE).
    pub execution_ms: Option<f64>,
    /// What deserves a look.
    pub findings: Vec<Finding>,
    /// The parameters the statement was explained with, typed as the server inferred them.
    pub parameters: Vec<Parameter>,
    /// Whether this is the generic plan (parameters unknown).
    pub generic_plan: bool,
    /// The server's JSON plan, unchanged.
    pub raw: Value,
}

/// One `$n` and the value it was given.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Parameter {
    /// 1 for `$1`.
    pub position: usize,
    /// The type the server inferred (`bigint`, `text`, ...).
    pub type_name: String,
    /// The value given, as text.
    pub value: String,
}

/// Explains `sql` safely: one explainable statement only, in a transaction that is rolled
/// back whatever happens, with `statement_timeout` and `lock_timeout` set locally.
///
/// Text with `$1`, `$2`, ... (as `pg_stat_statements` records it) needs a value for each in
/// `options.params`, or `options.generic_plan` on PostgreSQL 16 and later.
pub fn explain(conn: &mut PgConnection, sql: &str, options: &ExplainOptions) -> Result<Explained> {
    let wanted = check_explainable(sql)?.parameters;
    let statement = sql.trim().trim_end_matches(';');
    let (raw, parameters) = if options.generic_plan {
        check_generic_plan(conn, options)?;
        let raw = in_rolled_back_transaction(conn, options.statement_timeout, |conn| {
            explain_generic_json(conn, statement)
        })?;
        (raw, Vec::new())
    } else if wanted > 0 || !options.params.is_empty() {
        if options.params.is_empty() {
            return Err(Error::Invalid(format!(
                "the statement has {wanted} parameter(s) ($1{}); give a value for each with \
                 --param, in order, or explain its generic plan with --generic (PostgreSQL 16+)",
                if wanted > 1 {
                    format!("..${wanted}")
                } else {
                    String::new()
                }
            )));
        }
        explain_prepared(conn, statement, options)?
    } else {
        let raw = in_rolled_back_transaction(conn, options.statement_timeout, |conn| {
            explain_json(conn, statement, &analyze_options(options))
        })?;
        (raw, Vec::new())
    };
    let mut explained = parse(&raw)?;
    explained.parameters = parameters;
    explained.generic_plan = options.generic_plan;
    let sizes = relation_sizes(conn, &explained.plan)?;
    explained.findings = findings(&explained.plan, &sizes, options.large_table_rows);
    Ok(explained)
}

/// The EXPLAIN options `analyze` and `buffers` ask for. Options are only named when on:
/// HypoPG treats any `ANALYZE` option, even `false`, as EXPLAIN ANALYZE and hides its
/// hypothetical indexes.
fn analyze_options(options: &ExplainOptions) -> Vec<&'static str> {
    let mut named = Vec::new();
    if options.analyze {
        named.push("ANALYZE");
    }
    if options.buffers {
        named.push("BUFFERS");
    }
    named
}

fn check_generic_plan(conn: &mut PgConnection, options: &ExplainOptions) -> Result<()> {
    if options.analyze || !options.params.is_empty() {
        return Err(Error::Invalid(
            "a generic plan is planned without values and cannot run: drop --analyze and \
             --param, or drop --generic and give the values"
                .into(),
        ));
    }
    let version = server_version(conn)?;
    if version < 160_000 {
        return Err(Error::Invalid(format!(
            "EXPLAIN (GENERIC_PLAN) needs PostgreSQL 16 or later and this server is {}.{}; \
             give a value for each parameter with --param instead",
            version / 10_000,
            version % 10_000
        )));
    }
    Ok(())
}

/// Counts the prepared statements this process names, so that two explains on one pooled
/// connection never collide.
static PREPARED: AtomicU64 = AtomicU64::new(0);

/// `PREPARE` lets the server infer each parameter's type; the plan is then explained with
/// `EXECUTE` and the values as literals of unknown type, cast to those types. The prepared
/// statement is always deallocated: it outlives transactions, and the connection may go
/// back to a pool.
fn explain_prepared(
    conn: &mut PgConnection,
    statement: &str,
    options: &ExplainOptions,
) -> Result<(Value, Vec<Parameter>)> {
    let name = format!(
        "pgops_explain_{}_{}",
        std::process::id(),
        PREPARED.fetch_add(1, Ordering::Relaxed)
    );
    diesel::sql_query(format!("PREPARE {name} AS {statement}"))
        .execute(conn)
        .map_err(|source| Error::Database {
            context: "preparing the statement to learn its parameter types".into(),
            source,
        })?;
    let result = (|| {
        #[derive(Deserialize)]
        struct Types {
            types: Vec<String>,
        }
        let types: Types = row(
            conn,
            &format!(
                "SELECT parameter_types::text[] AS types FROM pg_prepared_statements \
                 WHERE name = {}",
                quote_literal(&name)
            ),
            "reading the parameter types",
        )?;
        if types.types.len() != options.params.len() {
            return Err(Error::Invalid(format!(
                "the statement takes {} parameter(s) ({}) and {} --param value(s) were given; \
                 give one for each, in order",
                types.types.len(),
                types
                    .types
                    .iter()
                    .enumerate()
                    .map(|(i, t)| format!("${} {t}", i + 1))
                    .collect::<Vec<_>>()
                    .join(", "),
                options.params.len()
            )));
        }
        let values = options
            .params
            .iter()
            .map(|v| quote_literal(v))
            .collect::<Vec<_>>()
            .join(", ");
        let raw = in_rolled_back_transaction(conn, options.statement_timeout, |conn| {
            explain_json(
                conn,
                &format!("EXECUTE {name}({values})"),
                &analyze_options(options),
            )
        })?;
        let parameters = types
            .types
            .into_iter()
            .zip(&options.params)
            .enumerate()
            .map(|(i, (type_name, value))| Parameter {
                position: i + 1,
                type_name,
                value: value.clone(),
            })
            .collect();
        Ok((raw, parameters))
    })();
    let deallocated = diesel::sql_query(format!("DEALLOCATE {name}"))
        .execute(conn)
        .map_err(|source| Error::Database {
            context: "deallocating the prepared statement".into(),
            source,
        });
    let explained = result?;
    deallocated?;
    Ok(explained)
}

/// Runs `work` inside a transaction that is always rolled back, with local timeouts.
pub(crate) fn in_rolled_back_transaction<T>(
    conn: &mut PgConnection,
    statement_timeout: Duration,
    work: impl FnOnce(&mut PgConnection) -> Result<T>,
) -> Result<T> {
    enum Outcome<T> {
        Done(T),
        Failed(Error),
    }
    impl<T> From<diesel::result::Error> for Outcome<T> {
        fn from(source: diesel::result::Error) -> Self {
            Outcome::Failed(Error::Database {
                context: "running the statement".into(),
                source,
            })
        }
    }
    let millis = statement_timeout.as_millis().max(1);
    let result = conn.transaction::<(), Outcome<T>, _>(|conn| {
        for set in [
            format!(
                "SET LOCAL statement_timeout = {}",
                quote_literal(&format!("{millis}ms"))
            ),
            format!(
                "SET LOCAL lock_timeout = {}",
                quote_literal(&format!("{millis}ms"))
            ),
        ] {
            diesel::sql_query(set).execute(conn)?;
        }
        match work(conn) {
            Ok(value) => Err(Outcome::Done(value)),
            Err(e) => Err(Outcome::Failed(e)),
        }
    });
    match result {
        Err(Outcome::Done(value)) => Ok(value),
        Err(Outcome::Failed(e)) => Err(e),
        Ok(()) => Err(Error::Invalid("the transaction was not rolled back".into())),
    }
}

/// `EXPLAIN (FORMAT JSON, VERBOSE, <extra>)` of `sql` on `conn`, as the server returns it.
pub(crate) fn explain_json(conn: &mut PgConnection, sql: &str, extra: &[&str]) -> Result<Value> {
    let mut options = String::from("FORMAT JSON, VERBOSE");
    for option in extra {
        options.push_str(", ");
        options.push_str(option);
    }
    let statement = format!("EXPLAIN ({options}) {sql}");
    // Not through `rows()`: EXPLAIN cannot be a subquery.
    #[derive(diesel::QueryableByName)]
    struct Line {
        #[diesel(sql_type = diesel::sql_types::Text)]
        #[diesel(column_name = "QUERY PLAN")]
        plan: String,
    }
    let lines = diesel::sql_query(statement)
        .load::<Line>(conn)
        .map_err(|source| Error::Database {
            context: "EXPLAIN".into(),
            source,
        })?;
    let text: String = lines.into_iter().map(|l| l.plan).collect();
    serde_json::from_str(&text).map_err(|source| Error::Decode {
        context: "reading EXPLAIN output".into(),
        source,
    })
}

/// `EXPLAIN (GENERIC_PLAN, FORMAT JSON, VERBOSE)` of text with `$n` in it. The extended
/// protocol would declare the `$n` and then demand values for them, so the EXPLAIN runs
/// through the simple protocol, in a `DO` block that leaves the plan in a transaction-local
/// setting for the next query to read.
fn explain_generic_json(conn: &mut PgConnection, sql: &str) -> Result<Value> {
    let explain = quote_literal(&format!(
        "EXPLAIN (GENERIC_PLAN, FORMAT JSON, VERBOSE) {sql}"
    ));
    let mut tag = String::from("$pgops$");
    while explain.contains(&tag) {
        tag.insert(tag.len() - 1, '_');
    }
    let block = format!(
        "DO {tag} DECLARE plan text; BEGIN EXECUTE {explain} INTO plan; \
         PERFORM set_config('pgops.generic_plan', plan, true); END {tag}"
    );
    conn.batch_execute(&block)
        .map_err(|source| Error::Database {
            context: "EXPLAIN (GENERIC_PLAN)".into(),
            source,
        })?;
    #[derive(Deserialize)]
    struct Plan {
        plan: String,
    }
    let plan: Plan = row(
        conn,
        "SELECT current_setting('pgops.generic_plan') AS plan",
        "reading the generic plan",
    )?;
    serde_json::from_str(&plan.plan).map_err(|source| Error::Decode {
        context: "reading EXPLAIN output".into(),
        source,
    })
}

/// Reads the server's `FORMAT JSON` output into a plan tree (findings are left empty).
pub fn parse(raw: &Value) -> Result<Explained> {
    let top = raw
        .get(0)
        .ok_or_else(|| Error::Invalid("EXPLAIN returned an empty document".into()))?;
    let plan = top
        .get("Plan")
        .ok_or_else(|| Error::Invalid("EXPLAIN output has no Plan".into()))?;
    let root = node(plan);
    Ok(Explained {
        total_cost: root.total_cost,
        plan: root,
        planning_ms: top.get("Planning Time").and_then(Value::as_f64),
        execution_ms: top.get("Execution Time").and_then(Value::as_f64),
        findings: Vec::new(),
        parameters: Vec::new(),
        generic_plan: false,
        raw: raw.clone(),
    })
}

fn node(plan: &Value) -> Node {
    let s = |k: &str| plan.get(k).and_then(Value::as_str).map(str::to_owned);
    let f = |k: &str| plan.get(k).and_then(Value::as_f64);
    let i = |k: &str| plan.get(k).and_then(Value::as_i64);
    let relation = s("Relation Name").map(|r| match s("Schema") {
        Some(schema) => format!("{schema}.{r}"),
        None => r,
    });
    Node {
        node_type: s("Node Type").unwrap_or_default(),
        relation,
        index: s("Index Name"),
        total_cost: f("Total Cost").unwrap_or(0.0),
        plan_rows: f("Plan Rows").unwrap_or(0.0),
        actual_rows: f("Actual Rows"),
        loops: f("Actual Loops"),
        actual_total_ms: f("Actual Total Time"),
        filter: s("Filter"),
        rows_removed_by_filter: f("Rows Removed by Filter"),
        shared_hit: i("Shared Hit Blocks"),
        shared_read: i("Shared Read Blocks"),
        spill: spill(plan),
        children: plan
            .get("Plans")
            .and_then(Value::as_array)
            .map(|children| children.iter().map(node).collect())
            .unwrap_or_default(),
    }
}

fn spill(plan: &Value) -> Option<String> {
    let s = |k: &str| plan.get(k).and_then(Value::as_str);
    let f = |k: &str| plan.get(k).and_then(Value::as_f64);
    if s("Sort Space Type") == Some("Disk") {
        return Some(format!(
            "sort method {} used {} kB of disk",
            s("Sort Method").unwrap_or("?"),
            f("Sort Space Used").unwrap_or(0.0)
        ));
    }
    if let Some(batches) = f("Hash Batches").filter(|b| *b > 1.0) {
        return Some(format!(
            "hash used {batches} batches (planned {}); it did not fit in work_mem",
            f("Original Hash Batches").unwrap_or(1.0)
        ));
    }
    if let Some(kb) = f("Disk Usage").filter(|kb| *kb > 0.0) {
        return Some(format!(
            "aggregate spilled {kb} kB to disk in {} batches",
            f("HashAgg Batches").unwrap_or(0.0)
        ));
    }
    None
}

/// Names of all relations scanned sequentially, with their `reltuples`.
fn relation_sizes(conn: &mut PgConnection, plan: &Node) -> Result<Vec<(String, f64)>> {
    let mut names = Vec::new();
    walk(plan, &mut |n| {
        if n.node_type == "Seq Scan"
            && let Some(r) = &n.relation
        {
            names.push(r.clone());
        }
    });
    if names.is_empty() {
        return Ok(Vec::new());
    }
    #[derive(Deserialize)]
    struct Size {
        name: String,
        tuples: Option<f64>,
    }
    let list = names
        .iter()
        .map(|n| format!("({})", quote_literal(n)))
        .collect::<Vec<_>>()
        .join(",");
    let sizes: Vec<Size> = rows(
        conn,
        &format!(
            "SELECT v.name, c.reltuples::float8 AS tuples FROM (VALUES {list}) AS v(name) \
             LEFT JOIN pg_class c ON c.oid = to_regclass(v.name)"
        ),
        "reading table sizes",
    )?;
    Ok(sizes
        .into_iter()
        .map(|s| (s.name, s.tuples.unwrap_or(0.0)))
        .collect())
}

/// Visits every node, parents first.
pub fn walk<'a>(node: &'a Node, visit: &mut impl FnMut(&'a Node)) {
    visit(node);
    for child in &node.children {
        walk(child, visit);
    }
}

/// The findings of a plan, given the row counts of the tables it scans sequentially. Pure.
///
/// Below a `Limit` a node stops as soon as enough rows went up, so producing fewer rows than
/// estimated there is the plan working, not a misestimate; producing more still is one.
pub fn findings(plan: &Node, table_rows: &[(String, f64)], large_table_rows: f64) -> Vec<Finding> {
    let mut out = Vec::new();
    visit_findings(plan, false, table_rows, large_table_rows, &mut out);
    out
}

fn visit_findings(
    n: &Node,
    cut_short: bool,
    table_rows: &[(String, f64)],
    large_table_rows: f64,
    out: &mut Vec<Finding>,
) {
    let label = match &n.relation {
        Some(r) => format!("{} on {r}", n.node_type),
        None => n.node_type.clone(),
    };
    // A node that never ran (loops = 0) estimates nothing we can check.
    if let Some(actual) = n.actual_rows.filter(|_| n.loops.unwrap_or(1.0) > 0.0) {
        let (low, high) = if actual < n.plan_rows {
            (actual, n.plan_rows)
        } else {
            (n.plan_rows, actual)
        };
        let factor = high / low.max(1.0);
        let stopped_early = cut_short && actual < n.plan_rows;
        if factor > 10.0 && high >= 10.0 && !stopped_early {
            out.push(Finding::Misestimate {
                node: label.clone(),
                estimated: n.plan_rows,
                actual,
                factor,
            });
        }
    }
    if let (true, Some(relation)) = (n.node_type == "Seq Scan", &n.relation) {
        let rows = table_rows
            .iter()
            .find(|(name, _)| name == relation)
            .map_or(0.0, |(_, r)| *r);
        if rows >= large_table_rows {
            out.push(Finding::SeqScanOnLargeTable {
                table: relation.clone(),
                table_rows: rows,
                filter: n.filter.clone(),
            });
        }
    }
    if let Some(detail) = &n.spill {
        out.push(Finding::Spill {
            node: label,
            detail: detail.clone(),
        });
    }
    let cut_short = cut_short || n.node_type == "Limit";
    for child in &n.children {
        visit_findings(child, cut_short, table_rows, large_table_rows, out);
    }
}

/// Renders the plan as an indented tree, one line per node.
pub fn render(node: &Node) -> String {
    let mut out = String::new();
    render_into(node, 0, &mut out);
    out
}

fn render_into(node: &Node, depth: usize, out: &mut String) {
    let mut line = format!("{}-> {}", "   ".repeat(depth), node.node_type);
    if let Some(r) = &node.relation {
        line.push_str(&format!(" on {r}"));
    }
    if let Some(i) = &node.index {
        line.push_str(&format!(" using {i}"));
    }
    line.push_str(&format!(
        "  (cost={:.2} rows={:.0})",
        node.total_cost, node.plan_rows
    ));
    if let (Some(rows), Some(ms), Some(loops)) =
        (node.actual_rows, node.actual_total_ms, node.loops)
    {
        line.push_str(&format!(
            " (actual time={ms:.3} ms rows={rows:.0} loops={loops:.0})"
        ));
    }
    if let (Some(hit), Some(read)) = (node.shared_hit, node.shared_read) {
        line.push_str(&format!(" buffers hit={hit} read={read}"));
    }
    out.push_str(&line);
    out.push('\n');
    if let Some(filter) = &node.filter {
        out.push_str(&format!("{}   filter: {filter}\n", "   ".repeat(depth)));
    }
    for child in &node.children {
        render_into(child, depth + 1, out);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample() -> Value {
        json!([{
            "Plan": {
                "Node Type": "Sort", "Total Cost": 500.0, "Plan Rows": 10.0,
                "Actual Rows": 5000.0, "Actual Loops": 1.0, "Actual Total Time": 40.0,
                "Sort Method": "external merge", "Sort Space Type": "Disk", "Sort Space Used": 2048.0,
                "Plans": [{
                    "Node Type": "Seq Scan", "Schema": "public", "Relation Name": "notes",
                    "Total Cost": 400.0, "Plan Rows": 10.0, "Actual Rows": 5000.0,
                    "Actual Loops": 1.0, "Actual Total Time": 30.0,
                    "Filter": "(notes.author_id = 7)", "Rows Removed by Filter": 95000.0,
                    "Shared Hit Blocks": 10, "Shared Read Blocks": 90
                }, {
                    "Node Type": "Index Scan", "Schema": "public", "Relation Name": "users",
                    "Index Name": "users_pkey", "Total Cost": 8.0, "Plan Rows": 1.0,
                    "Actual Rows": 0.0, "Actual Loops": 0.0
                }]
            },
            "Planning Time": 0.2,
            "Execution Time": 41.5
        }])
    }

    #[test]
    fn parses_the_tree_and_timings() {
        let e = parse(&sample()).unwrap();
        assert_eq!(e.plan.node_type, "Sort");
        assert_eq!(e.plan.children[0].relation.as_deref(), Some("public.notes"));
        assert_eq!(e.plan.children[1].index.as_deref(), Some("users_pkey"));
        assert_eq!(e.execution_ms, Some(41.5));
        assert_eq!(e.total_cost, 500.0);
        let text = render(&e.plan);
        assert!(text.contains("-> Seq Scan on public.notes"), "{text}");
        assert!(text.contains("filter: (notes.author_id = 7)"), "{text}");
    }

    #[test]
    fn finds_misestimates_large_seq_scans_and_spills() {
        let e = parse(&sample()).unwrap();
        let found = findings(&e.plan, &[("public.notes".into(), 100_000.0)], 10_000.0);
        let kinds: Vec<String> = found
            .iter()
            .map(|f| {
                serde_json::to_value(f).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "misestimate",
                "spill",
                "misestimate",
                "seq_scan_on_large_table"
            ],
            "{found:?}"
        );
        // The index scan that never ran (loops = 0) is not a misestimate.
        assert!(!format!("{found:?}").contains("users"));
        // A small table is no finding.
        let small = findings(&e.plan, &[("public.notes".into(), 500.0)], 10_000.0);
        assert!(
            !small
                .iter()
                .any(|f| matches!(f, Finding::SeqScanOnLargeTable { .. }))
        );
    }

    #[test]
    fn stopping_early_under_a_limit_is_not_a_misestimate() {
        let plan = parse(&json!([{ "Plan": {
            "Node Type": "Limit", "Total Cost": 18.0, "Plan Rows": 50.0,
            "Actual Rows": 50.0, "Actual Loops": 1.0,
            "Plans": [{
                "Node Type": "Index Scan", "Schema": "public", "Relation Name": "patients",
                "Total Cost": 2415.0, "Plan Rows": 6528.0, "Actual Rows": 50.0, "Actual Loops": 1.0,
                "Plans": [{
                    "Node Type": "Seq Scan", "Schema": "public", "Relation Name": "x",
                    "Total Cost": 1.0, "Plan Rows": 1.0, "Actual Rows": 500.0, "Actual Loops": 1.0
                }]
            }]
        }}]))
        .unwrap();
        let found = findings(&plan.plan, &[], 10_000.0);
        // The scan cut short is fine; the one that produced 500x more than expected is not.
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            matches!(&found[0], Finding::Misestimate { node, .. } if node == "Seq Scan on public.x")
        );
    }

    #[test]
    fn estimates_within_10x_are_fine() {
        let mut e = parse(&sample()).unwrap();
        e.plan.actual_rows = Some(90.0);
        e.plan.children.clear();
        e.plan.spill = None;
        assert!(findings(&e.plan, &[], 10_000.0).is_empty());
    }
}
