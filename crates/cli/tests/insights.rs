//! `pgops insights` as an operator runs it: exit codes for cron and CI, JSON output, refusals
//! before connecting, and EXPLAIN that changes nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};

use diesel::connection::SimpleConnection;
use serde_json::Value;

fn pgops(args: &[&str], database_url: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgops"));
    cmd.arg("insights").args(args).env_remove("DATABASE_URL");
    if let Some(url) = database_url {
        cmd.env("DATABASE_URL", url);
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn bad_input_exits_2_before_connecting_and_never_prints_the_password() {
    // No DATABASE_URL: the statement is refused first.
    let out = pgops(&["explain", "SELECT 1; DROP TABLE notes"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("refusing to explain: the text holds 2 statements"));

    let out = pgops(&["checks", "--sequence-threshold", "75"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("use a number from 0 to 1"));

    let out = pgops(&["top"], Some("postgres://app:hunter2@127.0.0.1:1/app"));
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot connect to postgres://app:***@127.0.0.1:1/app"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"));
}

#[test]
fn top_lists_queries_and_since_needs_a_snapshot() {
    let db = pgops_schema::testing::database().unwrap();
    let mut conn = db.connect().unwrap();
    for id in 0..3 {
        conn.batch_execute(&format!("SELECT count(*) FROM notes WHERE id > {id}"))
            .unwrap();
    }
    let out = pgops(&["top", "--by", "calls", "--json"], Some(&db.url()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let top: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(top["order"], "calls");
    let notes = top["queries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["query"] == "SELECT count(*) FROM notes WHERE id > $1")
        .unwrap_or_else(|| panic!("{top:#}"));
    assert_eq!(notes["calls"], 3);

    let out = pgops(&["top", "--since", "15m"], Some(&db.url()));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("*/5 * * * * pgops insights snapshot"));

    let out = pgops(&["snapshot"], Some(&db.url()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("snapshot "));
}

#[test]
fn top_gives_the_queryid_that_explain_takes_with_its_parameter_values() {
    let db = pgops_schema::testing::database().unwrap();
    let mut conn = db.connect().unwrap();
    conn.batch_execute(
        "INSERT INTO organizations (name, slug) SELECT 'org ' || g, 'org-' || g FROM generate_series(1, 50) g;
         SELECT * FROM organizations WHERE slug = 'org-3' AND id > 1;
         SELECT * FROM organizations WHERE slug = 'org-4' AND id > 2;",
    )
    .unwrap();
    let out = pgops(&["top", "--by", "calls", "--json"], Some(&db.url()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let top: Value = serde_json::from_slice(&out.stdout).unwrap();
    let lookup = top["queries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["query"] == "SELECT * FROM organizations WHERE slug = $1 AND id > $2")
        .unwrap_or_else(|| panic!("{top:#}"));
    let queryid = lookup["queryid"].as_i64().unwrap().to_string();

    // The text list shows the queryid, and --full the whole text under the row.
    let out = pgops(&["top", "--queryid", &queryid, "--full"], Some(&db.url()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    let rows: Vec<&str> = shown.lines().filter(|l| l.contains(&queryid)).collect();
    assert_eq!(rows.len(), 1, "{shown}");
    assert!(
        shown.contains("\nSELECT * FROM organizations WHERE slug = $1 AND id > $2\n"),
        "{shown}"
    );

    // Without values the text cannot be planned: the error says how to give them.
    let out = pgops(&["explain", "--queryid", &queryid], Some(&db.url()));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr)
            .contains("has 2 parameter(s) ($1..$2); give a value for each with --param"),
        "{}",
        text(&out.stderr)
    );
    let out = pgops(
        &["explain", "--queryid", &queryid, "--param", "org-3"],
        Some(&db.url()),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("takes 2 parameter(s) ($1 text, $2 bigint)"),
        "{}",
        text(&out.stderr)
    );

    // With them, typed as the server infers, it runs and finds the row.
    let out = pgops(
        &[
            "explain",
            "--queryid",
            &queryid,
            "--param",
            "org-3",
            "--param",
            "1",
            "--analyze",
        ],
        Some(&db.url()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.starts_with("$1 text = 'org-3'\n$2 bigint = '1'\n"),
        "{shown}"
    );
    assert!(shown.contains("organizations_slug_key"), "{shown}");

    // The generic plan needs no values, on PostgreSQL 16 and later.
    let out = pgops(
        &["explain", "--queryid", &queryid, "--generic"],
        Some(&db.url()),
    );
    let version: u32 = db
        .cluster()
        .query_text(db.name(), "current_setting('server_version_num')")
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    if version >= 160_000 {
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(text(&out.stdout).starts_with("generic plan: parameters unknown\n"));
    } else {
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains("needs PostgreSQL 16 or later"));
    }
    // A generic plan cannot run, and an unknown queryid is named.
    let out = pgops(
        &["explain", "--queryid", &queryid, "--generic", "--analyze"],
        Some(&db.url()),
    );
    assert_eq!(out.status.code(), Some(2));
    let out = pgops(&["explain", "--queryid", "42"], Some(&db.url()));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no statement with queryid 42"));
}

#[test]
fn explain_analyze_rolls_back_and_shows_findings() {
    let db = pgops_schema::testing::database().unwrap();
    let mut conn = db.connect().unwrap();
    conn.batch_execute(
        "INSERT INTO organizations (name, slug) SELECT 'org ' || g, 'org-' || g FROM generate_series(1, 20) g",
    )
    .unwrap();
    let out = pgops(
        &[
            "explain",
            "--analyze",
            "--buffers",
            "DELETE FROM organizations",
        ],
        Some(&db.url()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("-> ModifyTable on public.organizations"),
        "{shown}"
    );
    assert!(shown.contains("(rolled back)"), "{shown}");
    let db_url = db.url();
    let count = Command::new(env!("CARGO_BIN_EXE_pgops"))
        .args([
            "insights",
            "explain",
            "--analyze",
            "--json",
            "SELECT * FROM organizations",
        ])
        .env("DATABASE_URL", &db_url)
        .output()
        .unwrap();
    let plan: Value = serde_json::from_slice(&count.stdout).unwrap();
    assert_eq!(
        plan["plan"]["actual_rows"], 20.0,
        "the rows are still there"
    );

    // A statement the server rejects is a failed operation (1), not a usage error.
    let out = pgops(&["explain", "SELECT * FROM no_such_table"], Some(&db.url()));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no_such_table"));
}

#[test]
fn indexes_and_checks_exit_1_on_failures_for_cron_and_ci() {
    let db = pgops_schema::testing::database().unwrap();
    // The sample schema itself has no invalid or duplicate index.
    let out = pgops(&["indexes"], Some(&db.url()));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let mut conn = db.connect().unwrap();
    conn.batch_execute("CREATE INDEX notes_dup ON notes (id)")
        .unwrap();
    let out = pgops(&["indexes", "--json"], Some(&db.url()));
    assert_eq!(out.status.code(), Some(1));
    let advice: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(advice["findings"][0]["issue"], "duplicate");
    assert_eq!(
        advice["findings"][0]["fix"],
        "DROP INDEX CONCURRENTLY public.notes_dup;"
    );

    let out = pgops(&["checks"], Some(&db.url()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    conn.batch_execute("CREATE SEQUENCE nearly_out MAXVALUE 100; SELECT setval('nearly_out', 90)")
        .unwrap();
    let out = pgops(&["checks", "--json"], Some(&db.url()));
    assert_eq!(out.status.code(), Some(1));
    let checks: Value = serde_json::from_slice(&out.stdout).unwrap();
    let seq = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sequences_near_max")
        .unwrap();
    assert_eq!(seq["ok"], false);
    assert!(
        seq["details"][0]
            .as_str()
            .unwrap()
            .contains("nearly_out at 90 of 100")
    );
}

#[test]
fn slow_log_dry_run_prints_the_sql_and_changes_nothing() {
    let db = pgops_testkit::TestDatabase::empty().unwrap();
    let out = pgops(
        &[
            "slow-log",
            "--min-duration",
            "250ms",
            "--auto-explain",
            "2s",
            "--dry-run",
        ],
        Some(&db.url()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sql = text(&out.stdout);
    assert!(
        sql.contains("ALTER SYSTEM SET log_min_duration_statement = '250ms';"),
        "{sql}"
    );
    assert!(
        sql.contains("ALTER SYSTEM SET auto_explain.log_min_duration = '2000ms';"),
        "{sql}"
    );
    assert!(sql.ends_with("SELECT pg_reload_conf();\n"), "{sql}");
    let mut conn = db.connect().unwrap();
    #[derive(diesel::QueryableByName)]
    struct S {
        #[diesel(sql_type = diesel::sql_types::Text)]
        s: String,
    }
    let shown: S = diesel::RunQueryDsl::get_result(
        diesel::sql_query("SELECT current_setting('log_min_duration_statement') AS s"),
        &mut conn,
    )
    .unwrap();
    assert_eq!(shown.s, "-1");
}

#[test]
fn passwords_in_query_text_never_leave_pgops() {
    let db = pgops_schema::testing::database().unwrap();
    let mut conn = db.connect().unwrap();
    let id = std::process::id();
    let role = format!("pgops_secret_{id}");
    let marker = format!("Marker{id}S3cret");
    conn.batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD 'first'"))
        .unwrap();
    conn.batch_execute(&format!("ALTER ROLE {role} PASSWORD '{marker}'"))
        .unwrap();
    // The server keeps the statement as written (so this test can fail).
    let kept: i64 = {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        use diesel::RunQueryDsl;
        diesel::sql_query(format!(
            "SELECT count(*) AS n FROM pg_stat_statements WHERE query LIKE '%{marker}%'"
        ))
        .get_result::<Count>(&mut conn)
        .unwrap()
        .n
    };
    assert!(kept > 0, "pg_stat_statements did not keep the ALTER ROLE");

    // insights top, plain and JSON, and over a window from a recorded snapshot.
    for args in [
        &["top", "--limit", "1000"][..],
        &["top", "--limit", "1000", "--json"],
    ] {
        let out = pgops(args, Some(&db.url()));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let shown = text(&out.stdout);
        assert!(!shown.contains(&marker), "{shown}");
        if args.contains(&"--json") {
            assert!(
                shown.contains(&format!("ALTER ROLE {role} PASSWORD '***'")),
                "{shown}"
            );
        }
    }
    let out = pgops(&["snapshot"], Some(&db.url()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    conn.batch_execute(&format!("ALTER ROLE {role} PASSWORD '{marker}'"))
        .unwrap();
    let out = pgops(
        &["top", "--since", "0s", "--limit", "1000", "--json"],
        Some(&db.url()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains(&marker));

    // insights checks, while the statement waits on a lock.
    conn.batch_execute(&format!("BEGIN; ALTER ROLE {role} PASSWORD 'holder'"))
        .unwrap();
    let url = db.url();
    let (waiting_role, waiting_marker) = (role.clone(), marker.clone());
    let waiter = std::thread::spawn(move || {
        let mut other = <diesel::PgConnection as diesel::Connection>::establish(&url).unwrap();
        other
            .batch_execute(&format!(
                "ALTER ROLE {waiting_role} PASSWORD '{waiting_marker}'"
            ))
            .unwrap();
    });
    let mut shown = String::new();
    for _ in 0..100 {
        let out = pgops(
            &["checks", "--blocked", "0s", "--long-running", "0s"],
            Some(&db.url()),
        );
        shown = text(&out.stdout);
        if shown.contains(&format!("ALTER ROLE {role} PASSWORD")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    conn.batch_execute("ROLLBACK").unwrap();
    waiter.join().unwrap();
    assert!(
        shown.contains(&format!("ALTER ROLE {role} PASSWORD '***'")),
        "{shown}"
    );
    assert!(!shown.contains(&marker), "{shown}");

    // The metrics of the top queries carry ids, never text.
    let metrics =
        common::HealthServer::start(&["--top-queries", "100"], &[("DATABASE_URL", &db.url())])
            .metrics();
    assert!(metrics.contains("pgops_query_calls_total{"), "{metrics}");
    assert!(!metrics.contains(&marker));
    conn.batch_execute(&format!("DROP ROLE {role}")).unwrap();
}
