//! pgops-insights against real clusters: slow-log settings that take effect, top queries over a
//! snapshot window (through resets and evictions), EXPLAIN that never changes data, index
//! advice on a real catalog, HypoPG what-if, and checks that catch real offenders.
#![allow(clippy::unwrap_used)]

use std::{
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use diesel::{PgConnection, RunQueryDsl, connection::SimpleConnection};
use pgops_insights::{
    CheckThresholds, Error, ExplainOptions, Finding, IndexIssue, Order, SlowLog, TopOptions,
    advice, checks, explain, slowlog, statements, what_if,
};
use pgops_testkit::{Cluster, ClusterOptions, TestDatabase};

fn text(conn: &mut PgConnection, expression: &str) -> String {
    #[derive(diesel::QueryableByName)]
    struct T {
        #[diesel(sql_type = diesel::sql_types::Text)]
        t: String,
    }
    diesel::sql_query(format!("SELECT ({expression})::text AS t"))
        .get_result::<T>(conn)
        .unwrap()
        .t
}

fn top_options(since: Option<Duration>) -> TopOptions {
    TopOptions {
        order: Order::Calls,
        limit: 50,
        since,
        all_databases: false,
        queryid: None,
    }
}

/// A database from the migrated template: pg_stat_statements is created there.
fn schema_db() -> (TestDatabase, PgConnection) {
    let db = pgops_schema::testing::database().unwrap();
    let conn = db.connect().unwrap();
    (db, conn)
}

#[test]
fn slow_log_takes_effect_and_reset_undoes_it() {
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();
    let mut conn = cluster.connect("postgres").unwrap();

    // Without pg_stat_statements preloaded, `top` says exactly what to change.
    let err = statements::check_available(&mut conn).unwrap_err();
    assert!(matches!(err, Error::NotPreloaded { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"),
        "{err}"
    );

    let applied = slowlog::apply(
        &mut conn,
        &SlowLog {
            min_duration: Duration::from_millis(200),
            auto_explain: Some(Duration::from_millis(200)),
            ..SlowLog::default()
        },
    )
    .unwrap();
    assert!(
        applied
            .verified
            .iter()
            .any(|(s, shown)| s.name == "log_min_duration_statement" && shown == "200ms"),
        "{:?}",
        applied.verified
    );

    // A new session has auto_explain preloaded and logs a slow statement with its plan.
    let mut app = cluster.connect("postgres").unwrap();
    assert_eq!(
        text(&mut app, "current_setting('auto_explain.log_min_duration')"),
        "200ms"
    );
    assert_eq!(text(&mut app, "current_setting('log_lock_waits')"), "on");
    app.batch_execute("SELECT pg_sleep(0.3) /* slow-log-probe */")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = cluster.log_tail(200);
        if log.contains("duration:") && log.contains("slow-log-probe") && log.contains("Result") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no slow-query line with a plan in:\n{log}"
        );
        thread::sleep(Duration::from_millis(100));
    }

    // Every data-modifying statement is logged (an audit trail), but not its bound values.
    app.batch_execute("CREATE TABLE audit_probe (note text)")
        .unwrap();
    let update = |app: &mut PgConnection, value: &str| {
        diesel::sql_query("INSERT INTO audit_probe (note) VALUES ($1) /* audit-probe */")
            .bind::<diesel::sql_types::Text, _>(value)
            .execute(app)
            .unwrap();
    };
    update(&mut app, "patient-secret-1");
    let logged = wait_for_log(&cluster, "audit-probe");
    assert!(logged.contains("INSERT INTO audit_probe"), "{logged}");
    assert!(!logged.contains("patient-secret-1"), "{logged}");
    // Told otherwise, the value reaches the log: the check above can fail.
    slowlog::apply(
        &mut conn,
        &SlowLog {
            parameter_max_length: -1,
            ..SlowLog::default()
        },
    )
    .unwrap();
    let mut app = cluster.connect("postgres").unwrap();
    update(&mut app, "patient-secret-2");
    wait_for_log(&cluster, "patient-secret-2");

    slowlog::reset(&mut conn).unwrap();
    let mut after = cluster.connect("postgres").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while text(&mut after, "current_setting('log_min_duration_statement')") != "-1" {
        assert!(
            Instant::now() < deadline,
            "reset did not restore log_min_duration_statement"
        );
        thread::sleep(Duration::from_millis(50));
    }

    // A role without the privilege gets the GRANT that would allow it, and nothing changes.
    conn.batch_execute("CREATE ROLE app LOGIN").unwrap();
    let mut app = PgConnection::establish_as(&cluster, "app");
    let err = slowlog::apply(&mut app, &SlowLog::default()).unwrap_err();
    assert!(matches!(err, Error::Privilege(_)), "{err}");
    // PostgreSQL 15 can grant ALTER SYSTEM on one parameter; before it, only a superuser may.
    let expected = if text(
        &mut after,
        "current_setting('server_version_num')::int >= 150000",
    ) == "true"
    {
        "GRANT ALTER SYSTEM ON PARAMETER log_min_duration_statement TO app"
    } else {
        "Run this as a superuser"
    };
    assert!(err.to_string().contains(expected), "{err}");
    assert_eq!(
        text(&mut after, "current_setting('log_min_duration_statement')"),
        "-1"
    );
    assert_eq!(text(&mut after, "current_setting('log_statement')"), "none");
}

/// Waits until the server log holds `needle`; returns the log's tail.
fn wait_for_log(cluster: &Cluster, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = cluster.log_tail(400);
        if log.contains(needle) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{log}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

trait EstablishAs {
    fn establish_as(cluster: &Cluster, role: &str) -> PgConnection;
}

impl EstablishAs for PgConnection {
    fn establish_as(cluster: &Cluster, role: &str) -> PgConnection {
        use diesel::Connection;
        PgConnection::establish(&format!(
            "postgres://{role}@127.0.0.1:{}/postgres",
            cluster.port()
        ))
        .unwrap()
    }
}

#[test]
fn top_shows_normalized_queries_with_their_figures() {
    let (_db, mut conn) = schema_db();
    conn.batch_execute("CREATE TABLE top_probe (id int PRIMARY KEY, v text); INSERT INTO top_probe SELECT g, 'x' FROM generate_series(1, 100) g")
        .unwrap();
    for id in 1..=25 {
        conn.batch_execute(&format!("SELECT v FROM top_probe WHERE id = {id}"))
            .unwrap();
    }
    let top = statements::top(&mut conn, &top_options(None)).unwrap();
    let probe = top
        .queries
        .iter()
        .find(|q| q.query.contains("top_probe WHERE id ="))
        .unwrap_or_else(|| panic!("probe missing from {:#?}", top.queries));
    assert_eq!(probe.query, "SELECT v FROM top_probe WHERE id = $1");
    assert_eq!(probe.calls, 25);
    assert_eq!(probe.rows, 25);
    assert!(probe.total_ms > 0.0 && (probe.mean_ms - probe.total_ms / 25.0).abs() < 1e-9);
    assert!(probe.cache_hit_ratio.unwrap() > 0.5);
    // Other databases' queries are left out unless asked for.
    assert!(top.queries.iter().all(|q| q.database == probe.database));
}

#[test]
fn since_diffs_against_an_old_snapshot_and_names_what_is_missing() {
    let (_db, mut conn) = schema_db();
    let err = statements::top(&mut conn, &top_options(Some(Duration::from_secs(900)))).unwrap_err();
    assert!(matches!(err, Error::NoSnapshot(_)), "{err}");
    assert!(err.to_string().contains("pgops insights snapshot"), "{err}");

    conn.batch_execute("CREATE TABLE window_probe (id int PRIMARY KEY)")
        .unwrap();
    for id in 0..5 {
        conn.batch_execute(&format!("SELECT * FROM window_probe WHERE id = {id}"))
            .unwrap();
    }
    let snap = statements::record_snapshot(&mut conn, Duration::from_secs(86_400)).unwrap();
    let err = statements::top(&mut conn, &top_options(Some(Duration::from_secs(900)))).unwrap_err();
    assert!(err.to_string().contains("the oldest was taken"), "{err}");

    // Pretend the snapshot is 20 minutes old, then run the probe 7 more times.
    conn.batch_execute(&format!(
        "UPDATE pgops_stat_snapshots SET taken_at = taken_at - interval '20 minutes' WHERE id = {}",
        snap.id
    ))
    .unwrap();
    for id in 0..7 {
        conn.batch_execute(&format!("SELECT * FROM window_probe WHERE id = {id}"))
            .unwrap();
    }
    let top = statements::top(&mut conn, &top_options(Some(Duration::from_secs(900)))).unwrap();
    let probe = top
        .queries
        .iter()
        .find(|q| q.query.contains("window_probe WHERE id"))
        .unwrap();
    assert_eq!(probe.calls, 7, "only the calls inside the window count");
    assert_eq!(probe.origin, statements::Origin::Diff);
    assert!(top.seconds.unwrap() >= 1200.0);
    // The view itself was never reset: it still holds all 12 calls.
    let all = statements::top(&mut conn, &top_options(None)).unwrap();
    let lifetime = all
        .queries
        .iter()
        .find(|q| q.query.contains("window_probe WHERE id"))
        .unwrap();
    assert_eq!(lifetime.calls, 12);
}

#[test]
fn history_per_interval_and_table_sizes_from_the_snapshots() {
    let (_db, mut conn) = schema_db();
    conn.batch_execute(
        "CREATE TABLE history_probe (id int PRIMARY KEY, pad text);
         INSERT INTO history_probe SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g;",
    )
    .unwrap();
    let probe = |conn: &mut PgConnection, n: i32| {
        for id in 0..n {
            conn.batch_execute(&format!("SELECT pad FROM history_probe WHERE id = {id}"))
                .unwrap();
        }
    };
    let backdate = |conn: &mut PgConnection, id: i64, minutes: i32| {
        conn.batch_execute(&format!(
            "UPDATE pgops_stat_snapshots SET taken_at = taken_at - interval '{minutes} minutes' WHERE id = {id}"
        ))
        .unwrap();
    };
    // Before any snapshot: no sizes, no history.
    assert!(
        statements::table_sizes_at(&mut conn, Duration::from_secs(3600))
            .unwrap()
            .is_none()
    );
    let first = statements::record_snapshot(&mut conn, Duration::from_secs(86_400)).unwrap();
    backdate(&mut conn, first.id, 50);
    probe(&mut conn, 4);
    let second = statements::record_snapshot(&mut conn, Duration::from_secs(86_400)).unwrap();
    backdate(&mut conn, second.id, 20);
    probe(&mut conn, 6);
    let queryid: i64 = text(
        &mut conn,
        "(SELECT queryid FROM pg_stat_statements WHERE query = 'SELECT pad FROM history_probe WHERE id = $1')",
    )
    .parse()
    .unwrap();
    let now = statements::current(&mut conn).unwrap();
    let history =
        statements::history(&mut conn, Duration::from_secs(3600), &[queryid], &now).unwrap();
    let calls: Vec<i64> = history[&queryid].iter().map(|i| i.calls).collect();
    // Before the first snapshot the statement was not in the view at all (it ran first after
    // it): the first interval holds its 4 calls, the one to now the 6 after.
    assert_eq!(calls, [4, 6], "{history:?}");
    let minutes: Vec<i64> = history[&queryid]
        .iter()
        .map(|i| (i.end - i.start).num_minutes())
        .collect();
    assert_eq!(minutes, [30, 20]);
    // A window that holds only the newer snapshot.
    let recent =
        statements::history(&mut conn, Duration::from_secs(1500), &[queryid], &now).unwrap();
    assert_eq!(
        recent[&queryid].iter().map(|i| i.calls).collect::<Vec<_>>(),
        [6]
    );

    // Each snapshot recorded the largest tables' sizes; the one at least 40 minutes old is
    // the first.
    conn.batch_execute(
        "INSERT INTO history_probe SELECT g, repeat('y', 200) FROM generate_series(5001, 10000) g",
    )
    .unwrap();
    let recorded = statements::table_sizes_at(&mut conn, Duration::from_secs(2400))
        .unwrap()
        .unwrap();
    assert_eq!(
        recorded.taken_at,
        first.taken_at - chrono::Duration::minutes(50)
    );
    let sizes = recorded.sizes;
    let then = sizes[&("public".to_owned(), "history_probe".to_owned())];
    let now: i64 = text(&mut conn, "pg_total_relation_size('history_probe')")
        .parse()
        .unwrap();
    assert!(then > 1_000_000 && now > then, "{then} {now}");
    assert!(sizes.len() <= 100);
}

#[test]
fn since_survives_a_reset_and_an_eviction_between_snapshots() {
    let cluster = Cluster::start(ClusterOptions::default().preload("pg_stat_statements")).unwrap();
    cluster
        .execute("postgres", "CREATE EXTENSION pg_stat_statements")
        .unwrap();
    let mut conn = cluster.connect("postgres").unwrap();
    conn.batch_execute("CREATE TABLE evict_probe (id int); CREATE TABLE reset_probe (id int)")
        .unwrap();
    for _ in 0..10 {
        conn.batch_execute("SELECT * FROM evict_probe; SELECT * FROM reset_probe")
            .unwrap();
    }
    let backdate = |conn: &mut PgConnection| {
        conn.batch_execute(
            "UPDATE pgops_stat_snapshots SET taken_at = taken_at - interval '1 hour'",
        )
        .unwrap();
    };
    statements::record_snapshot(&mut conn, Duration::from_secs(86_400)).unwrap();
    backdate(&mut conn);

    // Evict one entry (as pg_stat_statements.max would) and let it come back with 3 calls.
    conn.batch_execute(
        "SELECT pg_stat_statements_reset(0, 0, queryid) FROM pg_stat_statements WHERE query LIKE '%evict_probe%'",
    )
    .unwrap();
    for _ in 0..3 {
        conn.batch_execute("SELECT * FROM evict_probe; SELECT * FROM reset_probe")
            .unwrap();
    }
    let top = statements::top(&mut conn, &top_options(Some(Duration::from_secs(1800)))).unwrap();
    let find = |top: &statements::Top, what: &str| {
        top.queries
            .iter()
            .find(|q| q.query.contains(what))
            .cloned()
            .unwrap_or_else(|| panic!("{what} missing from {:#?}", top.queries))
    };
    let evicted = find(&top, "evict_probe");
    assert_eq!(
        (evicted.calls, evicted.origin),
        (3, statements::Origin::Readded)
    );
    let kept = find(&top, "reset_probe");
    assert_eq!((kept.calls, kept.origin), (3, statements::Origin::Diff));
    assert!(!top.reset);

    // A full reset after the snapshot: counts start from the reset, never negative.
    conn.batch_execute("SELECT pg_stat_statements_reset()")
        .unwrap();
    conn.batch_execute("SELECT * FROM reset_probe").unwrap();
    let top = statements::top(&mut conn, &top_options(Some(Duration::from_secs(1800)))).unwrap();
    let kept = find(&top, "reset_probe");
    if text(
        &mut conn,
        "current_setting('server_version_num')::int >= 140000",
    ) == "true"
    {
        // pg_stat_statements_info (PostgreSQL 14) says when the view was reset.
        assert!(top.reset);
        assert_eq!(
            (kept.calls, kept.origin),
            (1, statements::Origin::SinceReset)
        );
    } else {
        // PostgreSQL 13 cannot tell a reset from evictions: the statement reads as re-added,
        // still counted from the reset.
        assert!(!top.reset);
        assert_eq!((kept.calls, kept.origin), (1, statements::Origin::Readded));
    }
    assert!(top.queries.iter().all(|q| q.calls > 0 && q.total_ms >= 0.0));
}

#[test]
fn explain_analyze_of_a_delete_leaves_every_row_in_place() {
    let db = TestDatabase::empty().unwrap();
    let mut conn = db.connect().unwrap();
    conn.batch_execute(
        "CREATE TABLE victims (id int PRIMARY KEY, v text);
         INSERT INTO victims SELECT g, md5(g::text) FROM generate_series(1, 5000) g;",
    )
    .unwrap();
    let explained = explain(
        &mut conn,
        "DELETE FROM victims WHERE id > 10",
        &ExplainOptions {
            analyze: true,
            buffers: true,
            ..ExplainOptions::default()
        },
    )
    .unwrap();
    assert!(explained.execution_ms.is_some());
    assert_eq!(explained.plan.node_type, "ModifyTable");
    let scan = &explained.plan.children[0];
    assert_eq!(scan.actual_rows, Some(4990.0), "{scan:?}");
    assert!(scan.shared_hit.is_some());
    assert_eq!(text(&mut conn, "(SELECT count(*) FROM victims)"), "5000");

    // Refused before reaching the server: more than one statement, transaction control.
    for sql in [
        "SELECT 1; DELETE FROM victims",
        "COMMIT",
        "DROP TABLE victims",
        "EXPLAIN ANALYZE DELETE FROM victims",
    ] {
        let err = explain(&mut conn, sql, &ExplainOptions::default()).unwrap_err();
        assert!(matches!(err, Error::Refused(_)), "{sql}: {err}");
    }
    assert_eq!(text(&mut conn, "(SELECT count(*) FROM victims)"), "5000");

    // The statement timeout applies, and the session is usable afterwards.
    let err = explain(
        &mut conn,
        "SELECT pg_sleep(10)",
        &ExplainOptions {
            analyze: true,
            statement_timeout: Duration::from_millis(200),
            ..ExplainOptions::default()
        },
    )
    .unwrap_err();
    assert!(
        pgops_pg::report(&err).contains("statement timeout"),
        "{}",
        pgops_pg::report(&err)
    );
    assert_eq!(text(&mut conn, "1"), "1");
}

#[test]
fn text_with_parameters_is_explained_with_values_or_as_the_generic_plan() {
    let db = TestDatabase::empty().unwrap();
    let mut conn = db.connect().unwrap();
    conn.batch_execute(
        "CREATE TABLE items (id bigint PRIMARY KEY, label text NOT NULL, at date);
         INSERT INTO items SELECT g, 'item ' || g, date '2026-01-01' + g % 300 \
           FROM generate_series(1, 5000) g;
         ANALYZE items;",
    )
    .unwrap();
    // Text as pg_stat_statements keeps it: each value is cast to the type the server infers.
    let sql = "DELETE FROM items WHERE id > $1 AND at < $2 AND label <> $3";
    let explained = explain(
        &mut conn,
        sql,
        &ExplainOptions {
            analyze: true,
            params: vec!["4000".into(), "2026-06-01".into(), "it's".into()],
            ..ExplainOptions::default()
        },
    )
    .unwrap();
    let types: Vec<&str> = explained
        .parameters
        .iter()
        .map(|p| p.type_name.as_str())
        .collect();
    assert_eq!(types, ["bigint", "date", "text"]);
    let scan = &explained.plan.children[0];
    assert_eq!(scan.index.as_deref(), Some("items_pkey"), "{scan:?}");
    assert!(scan.actual_rows.unwrap() > 0.0 && scan.actual_rows.unwrap() < 1000.0);
    assert_eq!(text(&mut conn, "(SELECT count(*) FROM items)"), "5000");
    // The prepared statement does not outlive the call: the connection may go back to a pool.
    assert_eq!(
        text(&mut conn, "(SELECT count(*) FROM pg_prepared_statements)"),
        "0"
    );

    // Too few values, none at all, or a value the type refuses: each says what to give.
    let err = explain(
        &mut conn,
        sql,
        &ExplainOptions {
            params: vec!["1".into()],
            ..ExplainOptions::default()
        },
    )
    .unwrap_err();
    let report = pgops_pg::report(&err);
    assert!(matches!(err, Error::Invalid(_)), "{report}");
    assert!(report.contains("$1 bigint, $2 date, $3 text"), "{report}");
    let err = explain(&mut conn, sql, &ExplainOptions::default()).unwrap_err();
    assert!(pgops_pg::report(&err).contains("--param"), "{err}");
    let err = explain(
        &mut conn,
        sql,
        &ExplainOptions {
            params: vec!["many".into(), "2026-06-01".into(), "x".into()],
            ..ExplainOptions::default()
        },
    )
    .unwrap_err();
    assert!(
        pgops_pg::report(&err).contains("invalid input syntax for type bigint"),
        "{}",
        pgops_pg::report(&err)
    );
    assert_eq!(
        text(&mut conn, "(SELECT count(*) FROM pg_prepared_statements)"),
        "0"
    );

    // The generic plan needs no values, on PostgreSQL 16 and later.
    let generic = ExplainOptions {
        generic_plan: true,
        ..ExplainOptions::default()
    };
    let version: u32 = text(&mut conn, "current_setting('server_version_num')")
        .parse()
        .unwrap();
    match explain(&mut conn, sql, &generic) {
        Ok(explained) if version >= 160_000 => {
            assert!(explained.generic_plan);
            assert_eq!(explained.plan.node_type, "ModifyTable");
            assert!(explained.execution_ms.is_none());
        }
        Err(Error::Invalid(why)) if version < 160_000 => {
            assert!(why.contains("needs PostgreSQL 16"), "{why}");
        }
        other => panic!("server {version}: {other:?}"),
    }
}

#[test]
fn explain_finds_misestimates_large_seq_scans_and_spills() {
    let db = TestDatabase::empty().unwrap();
    let mut conn = db.connect().unwrap();
    conn.batch_execute(&format!(
        "CREATE TABLE events (id int, kind int, payload text) WITH (autovacuum_enabled = off);
         INSERT INTO events SELECT g, 1, md5(g::text) FROM generate_series(1, 100) g;
         ANALYZE events;
         INSERT INTO events SELECT g, g % 10, md5(g::text) FROM generate_series(101, 60000) g;
         ALTER DATABASE {} SET work_mem = '64kB';",
        db.name()
    ))
    .unwrap();
    // The statistics still say 100 rows; the sort of 60,000 rows does not fit in 64 kB.
    let mut conn = db.connect().unwrap();
    let explained = explain(
        &mut conn,
        "SELECT * FROM events WHERE kind = 3 ORDER BY payload",
        &ExplainOptions {
            analyze: true,
            large_table_rows: 10_000.0,
            ..ExplainOptions::default()
        },
    )
    .unwrap();
    let f = &explained.findings;
    assert!(
        f.iter().any(|f| matches!(f, Finding::Misestimate { node, factor, .. } if node.contains("events") && *factor > 10.0)),
        "{f:#?}"
    );
    assert!(
        f.iter().any(|f| matches!(f, Finding::Spill { detail, .. } if detail.contains("external merge") || detail.contains("Disk"))),
        "{f:#?}"
    );
    // reltuples is stale too until ANALYZE: then the large scan shows.
    conn.batch_execute("ANALYZE events").unwrap();
    let explained = explain(
        &mut conn,
        "SELECT * FROM events WHERE kind = 3",
        &ExplainOptions::default(),
    )
    .unwrap();
    assert!(
        explained.findings.iter().any(|f| matches!(f, Finding::SeqScanOnLargeTable { table, table_rows, filter: Some(_) } if table == "public.events" && *table_rows > 50_000.0)),
        "{:#?}",
        explained.findings
    );
}

#[test]
fn index_advice_on_a_real_catalog() {
    let db = TestDatabase::empty().unwrap();
    let mut conn = db.connect().unwrap();
    conn.batch_execute(
        "CREATE TABLE authors (id int PRIMARY KEY);
         CREATE TABLE posts (id int PRIMARY KEY, author_id int REFERENCES authors, slug text, created_at timestamptz);
         CREATE INDEX posts_id_copy ON posts (id);
         CREATE INDEX posts_slug ON posts (slug);
         CREATE INDEX posts_slug_created ON posts (slug, created_at);
         INSERT INTO posts VALUES (1, NULL, 'a', now()), (2, NULL, 'a', now());",
    )
    .unwrap();
    // A failed CREATE UNIQUE INDEX CONCURRENTLY leaves an invalid index behind.
    let failed =
        conn.batch_execute("CREATE UNIQUE INDEX CONCURRENTLY posts_slug_unique ON posts (slug)");
    assert!(failed.is_err());

    let found = advice::advise(&mut conn, advice::Thresholds::default()).unwrap();
    let has = |issue: IndexIssue, index: Option<&str>, table: &str| {
        found
            .findings
            .iter()
            .any(|f| f.issue == issue && f.index.as_deref() == index && f.table == table)
    };
    assert!(
        has(
            IndexIssue::Invalid,
            Some("public.posts_slug_unique"),
            "public.posts"
        ),
        "{:#?}",
        found.findings
    );
    assert!(
        has(
            IndexIssue::Duplicate,
            Some("public.posts_id_copy"),
            "public.posts"
        ),
        "{:#?}",
        found.findings
    );
    assert!(
        has(
            IndexIssue::Overlapping,
            Some("public.posts_slug"),
            "public.posts"
        ),
        "{:#?}",
        found.findings
    );
    assert!(
        has(IndexIssue::MissingFkIndex, None, "public.posts"),
        "{:#?}",
        found.findings
    );
    assert!(has(
        IndexIssue::Unused,
        Some("public.posts_slug_created"),
        "public.posts"
    ));
    // The primary key is never advised against.
    assert!(
        !found
            .findings
            .iter()
            .any(|f| f.index.as_deref() == Some("public.posts_pkey"))
    );
    assert_eq!(found.findings[0].severity, advice::Severity::Fail);
    let fk = found
        .findings
        .iter()
        .find(|f| f.issue == IndexIssue::MissingFkIndex)
        .unwrap();
    assert_eq!(
        fk.fix,
        "CREATE INDEX CONCURRENTLY ON public.posts (author_id);"
    );

    // Applying the fixes clears the failures.
    conn.batch_execute(
        "DROP INDEX posts_slug_unique; DROP INDEX posts_id_copy; CREATE INDEX ON posts (author_id)",
    )
    .unwrap();
    let found = advice::advise(&mut conn, advice::Thresholds::default()).unwrap();
    assert!(
        found
            .findings
            .iter()
            .all(|f| f.severity == advice::Severity::Warn),
        "{:#?}",
        found.findings
    );
    assert!(
        !found
            .findings
            .iter()
            .any(|f| f.issue == IndexIssue::MissingFkIndex)
    );
}

/// On a server without HypoPG (a build of another major in the version matrix), what-if
/// must say so, naming what to install; returns whether that was the case.
fn hypopg_refused_where_missing(conn: &mut PgConnection, sql: &str, indexes: &[String]) -> bool {
    if text(
        conn,
        "EXISTS (SELECT FROM pg_available_extensions WHERE name = 'hypopg')",
    ) == "true"
    {
        return false;
    }
    let err = what_if(conn, sql, indexes, Duration::from_secs(30)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotInstalled {
                extension: "hypopg",
                ..
            }
        ),
        "{err}"
    );
    true
}

#[test]
fn a_suggestion_on_a_column_named_like_a_keyword_is_valid_sql() {
    // Once, a column named `order` was suggested bare: CREATE INDEX .. (order) is a syntax
    // error.
    let db = TestDatabase::empty().unwrap();
    let mut conn = db.connect().unwrap();
    conn.batch_execute(
        r#"CREATE TABLE lines ("order" int, "user" int, qty int);
           INSERT INTO lines SELECT g % 1000, g % 7, g FROM generate_series(1, 50000) g;
           ANALYZE lines;"#,
    )
    .unwrap();
    let sql = r#"SELECT * FROM lines WHERE "order" = 42"#;
    let suggested =
        pgops_insights::suggest(&mut conn, sql, 10_000.0, Duration::from_secs(30)).unwrap();
    assert_eq!(suggested, [r#"CREATE INDEX ON public.lines ("order")"#]);
    if !hypopg_refused_where_missing(&mut conn, sql, &suggested) {
        let result = what_if(&mut conn, sql, &suggested, Duration::from_secs(30)).unwrap();
        assert!(result.candidates[0].used, "{result:#?}");
    }
}

#[test]
fn identifier_quoting_knows_every_keyword_the_server_reserves() {
    // pgops_pg's keyword list against the running server's own: every keyword the server
    // quotes, we quote the same way (the list covers 13 to 18, so a word reserved only in
    // another major may be quoted too).
    let db = TestDatabase::empty().unwrap();
    let mut conn = db.connect().unwrap();
    #[derive(serde::Deserialize)]
    struct Word {
        word: String,
        quoted: String,
    }
    let words: Vec<Word> = pgops_pg::rows::rows(
        &mut conn,
        "SELECT word, quote_ident(word) AS quoted FROM pg_get_keywords()",
        "reading the server's keywords",
    )
    .unwrap();
    assert!(words.len() > 400);
    for w in words {
        let ours = pgops_pg::quote_ident(&w.word);
        if w.quoted != w.word {
            assert_eq!(ours, w.quoted, "{}", w.word);
        } else if ours != w.word {
            // Quoted for another major's sake (json is reserved from 17 on): harmless.
            assert!(pgops_pg::is_keyword(&w.word), "{}", w.word);
        }
    }
}

#[test]
fn what_if_costs_a_suggested_index_without_creating_it() {
    let db = TestDatabase::empty().unwrap();
    let mut conn = db.connect().unwrap();
    conn.batch_execute(
        "CREATE TABLE visits (id int PRIMARY KEY, clinic_id int, seen_at timestamptz, note text);
         INSERT INTO visits SELECT g, g % 500, now() - g * interval '1 minute', md5(g::text)
           FROM generate_series(1, 100000) g;
         ANALYZE visits;",
    )
    .unwrap();
    let sql = "SELECT * FROM visits WHERE clinic_id = 42 AND seen_at > now() - interval '1 day'";
    let suggested =
        pgops_insights::suggest(&mut conn, sql, 10_000.0, Duration::from_secs(30)).unwrap();
    assert_eq!(
        suggested,
        ["CREATE INDEX ON public.visits (clinic_id, seen_at)"]
    );
    if hypopg_refused_where_missing(&mut conn, sql, &suggested) {
        return;
    }

    let result = what_if(&mut conn, sql, &suggested, Duration::from_secs(30)).unwrap();
    assert!(result.candidates[0].used, "{result:#?}");
    assert!(result.cost_after * 10.0 < result.cost_before, "{result:#?}");
    assert!(result.candidates[0].estimated_bytes.unwrap() > 0);

    // Nothing was built and nothing stays installed.
    assert_eq!(
        text(
            &mut conn,
            "(SELECT count(*) FROM pg_indexes WHERE tablename = 'visits')"
        ),
        "1"
    );
    assert_eq!(
        text(
            &mut conn,
            "(SELECT count(*) FROM pg_extension WHERE extname = 'hypopg')"
        ),
        "0"
    );

    let err = what_if(
        &mut conn,
        sql,
        &["DROP TABLE visits".into()],
        Duration::from_secs(30),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
}

#[test]
fn checks_catch_idle_transactions_blocked_queries_and_sequences_near_max() {
    let db = TestDatabase::empty().unwrap();
    let mut conn = db.connect().unwrap();
    conn.batch_execute(
        "CREATE TABLE counters (id serial PRIMARY KEY, n int);
         INSERT INTO counters (n) VALUES (0);
         SELECT setval('counters_id_seq', 2000000000);",
    )
    .unwrap();

    // A session holding a row lock while idle in its transaction, and one waiting for it.
    let mut holder = db.connect().unwrap();
    holder
        .batch_execute("BEGIN; UPDATE counters SET n = n + 1 WHERE id = 1")
        .unwrap();
    let holder_pid = text(&mut holder, "pg_backend_pid()");
    let (tx, rx) = mpsc::channel();
    let waiter_db = db.url();
    let waiter = thread::spawn(move || {
        use diesel::Connection;
        let mut conn = PgConnection::establish(&waiter_db).unwrap();
        tx.send(text(&mut conn, "pg_backend_pid()")).unwrap();
        conn.batch_execute("UPDATE counters SET n = n + 1 WHERE id = 1")
            .unwrap();
    });
    let waiter_pid = rx.recv().unwrap();
    // Wait, with a deadline, until the waiter has been blocked (and the holder idle in its
    // transaction) for longer than the thresholds below.
    let deadline = Instant::now() + Duration::from_secs(10);
    while text(
        &mut conn,
        &format!(
            "EXISTS (SELECT FROM pg_stat_activity w, pg_stat_activity h
                      WHERE w.pid = {waiter_pid} AND w.wait_event_type = 'Lock'
                        AND now() - w.query_start > interval '200 ms'
                        AND h.pid = {holder_pid} AND h.state = 'idle in transaction'
                        AND now() - h.state_change > interval '200 ms')"
        ),
    ) != "true"
    {
        assert!(
            Instant::now() < deadline,
            "the waiter was never blocked by the holder"
        );
        thread::sleep(Duration::from_millis(20));
    }

    let tight = CheckThresholds {
        long_running: Duration::from_millis(100),
        idle_in_transaction: Duration::from_millis(100),
        blocked: Duration::from_millis(100),
        sequence_used: 0.75,
        wraparound_used: 0.5,
        min_cache_hit: 0.0,
    };
    let results = checks::run(&mut conn, &tight).unwrap();
    let get = |name: &str| results.iter().find(|c| c.name == name).unwrap().clone();
    let idle = get("idle_in_transaction");
    assert!(
        !idle.ok
            && idle
                .details
                .iter()
                .any(|d| d.starts_with(&format!("pid {holder_pid} "))),
        "{idle:?}"
    );
    let blocked = get("blocked_queries");
    assert!(
        blocked
            .details
            .iter()
            .any(|d| d.starts_with(&format!("pid {waiter_pid} "))
                && d.contains(&format!("blocked by pid {holder_pid}"))),
        "{blocked:?}"
    );
    let long = get("long_running_queries");
    assert!(
        long.details
            .iter()
            .any(|d| d.starts_with(&format!("pid {waiter_pid} "))),
        "{long:?}"
    );
    let seq = get("sequences_near_max");
    assert!(
        !seq.ok
            && seq.details[0].contains("counters_id_seq")
            && seq.details[0].contains("feeds counters.id"),
        "{seq:?}"
    );
    assert!(get("transaction_id_wraparound").ok);

    holder.batch_execute("COMMIT").unwrap();
    waiter.join().unwrap();
    let results = checks::run(&mut conn, &CheckThresholds::default()).unwrap();
    let get = |name: &str| results.iter().find(|c| c.name == name).unwrap().clone();
    assert!(
        !get("blocked_queries")
            .details
            .iter()
            .any(|d| d.starts_with(&format!("pid {waiter_pid} ")))
    );
    let wrap = checks::wraparound(&mut conn, 0.0).unwrap();
    assert!(
        !wrap.ok && wrap.value > 0.0,
        "any age is above a zero threshold: {wrap:?}"
    );
}
