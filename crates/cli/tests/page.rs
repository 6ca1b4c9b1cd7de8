//! The operator page of `pgops health serve`, as an operator sees it: in a real headless
//! browser (Debian's Chromium through its WebDriver), against a primary with data, recorded
//! snapshots, a lagging replica, a failing WAL archive, a failing check, a blocked session and
//! a backup repository. Assertions read the DOM Chromium rendered; the screenshot the
//! monitoring guide shows is written to `target/pgops-page.png`.
#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

mod common;

use diesel::{Connection, PgConnection, RunQueryDsl, connection::SimpleConnection};
use pgops_testkit::{Archive, Browser, Cluster, ClusterOptions};

/// A table whose name is markup: the page must show it as text.
const MARKUP: &str = "<script>alert(1)</script>";
const TOKEN: &str = "page-token-7f3a";

/// `GET path` with an optional `Authorization` header: the status code and the response.
fn get(addr: &str, path: &str, authorization: Option<&str>) -> (u16, String) {
    let response = common::http_get(addr, path, authorization);
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    (code, response)
}

fn run(cluster: &Cluster, sql: &str) {
    cluster.execute("postgres", sql).unwrap();
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    )
}

/// Polls `f` until it returns true or `limit` passes.
fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_page_in_a_browser_shows_each_section_and_what_is_wrong() {
    // A primary whose WAL archiving fails, with pg_stat_statements.
    let primary = Cluster::start(
        ClusterOptions::default()
            .preload("pg_stat_statements")
            .archive(Archive::Command("false".into())),
    )
    .unwrap();
    let table = pgops_testkit::quote_ident(MARKUP);
    run(
        &primary,
        &format!(
            "CREATE EXTENSION pg_stat_statements;
             CREATE TABLE {table} (id int PRIMARY KEY, pad text);
             INSERT INTO {table} SELECT g, repeat('x', 400) FROM generate_series(1, 20000) g;
             CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES {table});
             CREATE TABLE accounts (id int PRIMARY KEY, note text);
             INSERT INTO accounts VALUES (1, 'first');
             CREATE SEQUENCE nearly_done MAXVALUE 100;
             SELECT setval('nearly_done', 90);
             ANALYZE;"
        ),
    );
    let url = primary.url("postgres");
    let snapshot = |age: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgops"))
            .args(["insights", "snapshot"])
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        common::ok(&out);
        run(
            &primary,
            &format!(
                "UPDATE pgops_stat_snapshots SET taken_at = taken_at - interval '{age}'
                 WHERE id = (SELECT max(id) FROM pgops_stat_snapshots)"
            ),
        );
    };
    // Two snapshots, two and a half hours and half an hour ago, with work between and after.
    snapshot("150 minutes");
    let lookups = |n: usize| {
        let mut conn = PgConnection::establish(&url).unwrap();
        for i in 0..n {
            // A sequential scan each time: the costliest statement of the windows.
            diesel::sql_query(format!("SELECT count(*) FROM {table} WHERE pad <> 'z{i}'"))
                .execute(&mut conn)
                .unwrap();
        }
    };
    lookups(40);
    run(
        &primary,
        &format!(
            "INSERT INTO {table} SELECT g, repeat('y', 400) FROM generate_series(20001, 40000) g"
        ),
    );
    snapshot("30 minutes");
    lookups(20);

    let replica = primary.create_replica().unwrap();
    replica.catch_up(&primary, Duration::from_secs(30)).unwrap();

    // A logical backup in a repository.
    let repo = tempfile::tempdir().unwrap();
    common::ok(&common::pgops(
        &["backup", "create", "--kind", "logical"],
        repo.path(),
        &url,
    ));

    // The archiver fails on the next segment.
    run(&primary, "SELECT pg_switch_wal()");
    eventually(Duration::from_secs(30), "the archiver never failed", || {
        primary
            .query_text(
                "postgres",
                "(SELECT failed_count > 0 FROM pg_stat_archiver)::text",
            )
            .unwrap()
            .as_deref()
            == Some("true")
    });

    // A session holding a row lock, and one waiting for it with a value in its statement.
    let mut holder = PgConnection::establish(&url).unwrap();
    holder
        .batch_execute("BEGIN; UPDATE accounts SET note = 'held' WHERE id = 1")
        .unwrap();
    let holder_pid = primary
        .query_text(
            "postgres",
            "(SELECT pid::text FROM pg_stat_activity WHERE query LIKE 'BEGIN; UPDATE accounts%')",
        )
        .unwrap()
        .unwrap();
    let waiter_url = url.clone();
    let waiter = std::thread::spawn(move || {
        let mut conn = PgConnection::establish(&waiter_url).unwrap();
        conn.batch_execute("UPDATE accounts SET note = 'secret-value-42' WHERE id = 1")
    });
    eventually(Duration::from_secs(10), "the update never waited", || {
        primary
            .query_text(
                "postgres",
                "(SELECT count(*)::text FROM pg_stat_activity WHERE wait_event_type = 'Lock')",
            )
            .unwrap()
            .as_deref()
            == Some("1")
    });

    // The replica falls behind: replay paused (after it replayed a commit, whose time the lag
    // is measured from) while the primary writes.
    run(&primary, "CREATE TABLE before_the_pause AS SELECT 1 AS x");
    replica.catch_up(&primary, Duration::from_secs(30)).unwrap();
    replica.pause_replay().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    run(&primary, "CREATE TABLE after_the_pause AS SELECT 1 AS x");

    let repo_url = format!("file://{}", repo.path().display());
    let replica_url = replica.url("postgres");
    let server = common::HealthServer::start(
        &["--max-replica-lag", "1s", "--cache", "1s"],
        &[
            ("DATABASE_URL", url.as_str()),
            ("DATABASE_REPLICA_URLS", replica_url.as_str()),
            ("PGOPS_REPO", repo_url.as_str()),
            ("PGOPS_METRICS_TOKEN", TOKEN),
        ],
    );
    let addr = server.listen.clone();

    // The token: refused where /metrics is refused, accepted as a bearer token or as the
    // password of HTTP Basic, which a browser asks for.
    for path in ["/", "/metrics"] {
        let (code, response) = get(&addr, path, None);
        assert_eq!(code, 401, "{path}: {response}");
        assert!(response.contains("Basic realm=\"pgops\""), "{response}");
        assert_eq!(get(&addr, path, Some("Bearer wrong")).0, 401, "{path}");
        assert_eq!(
            get(&addr, path, Some(&format!("Bearer {TOKEN}"))).0,
            200,
            "{path}"
        );
    }
    let (code, html) = get(&addr, "/", Some("Basic b3BlcmF0b3I6cGFnZS10b2tlbi03ZjNh"));
    assert_eq!(code, 200, "{html}");
    // No script may run on it, whatever the database holds.
    assert!(
        html.to_lowercase()
            .contains("content-security-policy: default-src 'none'"),
        "{html}"
    );
    assert!(
        !html.contains(MARKUP),
        "the markup name reached the HTML unescaped"
    );

    let browser = Browser::start(1280, 4000).unwrap();
    let port = addr.rsplit(':').next().unwrap();
    let page = format!("http://operator:{TOKEN}@127.0.0.1:{port}/");
    // The replica reports lag once it has received WAL it has not replayed.
    eventually(Duration::from_secs(20), "the replica never lagged", || {
        browser.open(&page).unwrap();
        browser.count("#up tr.server.lagging").unwrap() == 1
    });
    assert_eq!(
        browser.title().unwrap(),
        format!("pgops: 127.0.0.1:{}", primary.port())
    );
    // Each section, with its heading.
    for (id, heading) in [
        ("up", "Is it up"),
        ("slow", "What is slow"),
        ("fix", "What to fix"),
        ("connections", "Connections"),
        ("backups", "Backups"),
    ] {
        assert_eq!(
            browser.texts(&format!("section#{id} > h2")).unwrap(),
            [heading],
            "section {id}"
        );
    }
    // Is it up: the primary up, the replica lagging, the failing check.
    let servers = browser.texts("#up tr.server").unwrap();
    assert_eq!(servers.len(), 2, "{servers:?}");
    assert!(
        servers[0].contains("primary") && servers[0].contains(" up"),
        "{servers:?}"
    );
    let lagging = browser.texts("#up tr.server.lagging").unwrap();
    assert_eq!(lagging.len(), 1, "{servers:?}");
    assert!(
        lagging[0].contains("replica") && lagging[0].contains("lagging:"),
        "{lagging:?}"
    );
    let check = browser
        .texts("#up li.check.failing[data-check=\"sequences_near_max\"]")
        .unwrap();
    assert_eq!(check.len(), 1, "{:?}", browser.texts("#up").unwrap());
    assert!(check[0].contains("nearly_done"), "{check:?}");
    // What is slow: the lookups over the last hour and day, normalized, each with a chart of
    // its time per interval; the table's name shown as text.
    let queries = browser.texts("#slow tr.query").unwrap();
    let lookup = format!("SELECT count(*) FROM \"{MARKUP}\" WHERE pad <> $1");
    let calls = browser.texts("#slow tr.query td:nth-child(2)").unwrap();
    let lookup_calls: Vec<&str> = queries
        .iter()
        .zip(&calls)
        .filter(|(q, _)| q.contains(&lookup))
        .map(|(_, c)| c.as_str())
        .collect();
    // Both windows reach back to the older snapshot (the oldest is younger than a day): the
    // 40 calls before the newer snapshot and the 20 after.
    assert_eq!(
        lookup_calls,
        ["60", "60"],
        "one row per window: {queries:?}"
    );
    // Its chart: one bar per interval, before and after the newer snapshot, in each window.
    let queryid = primary
        .query_text(
            "postgres",
            "(SELECT queryid::text FROM pg_stat_statements WHERE query LIKE '%WHERE pad <> $1')",
        )
        .unwrap()
        .unwrap();
    for window in ["last hour", "last day"] {
        let bars = format!(
            "#slow div[data-window=\"{window}\"] tr.query[data-queryid=\"{queryid}\"] svg.history rect"
        );
        assert_eq!(browser.count(&bars).unwrap(), 2, "{window}");
    }
    // What to fix: the foreign key without an index, the largest table and its growth.
    let findings = browser
        .texts("#fix tr.finding[data-issue=\"missing_fk_index\"]")
        .unwrap();
    assert!(
        findings.iter().any(|f| f.contains("public.child")),
        "{findings:?}"
    );
    let tables = browser.texts("#fix tr.table").unwrap();
    let grown = tables
        .iter()
        .find(|t| t.contains(&format!("public.{MARKUP}")))
        .unwrap_or_else(|| panic!("{tables:?}"));
    assert!(grown.contains("+"), "{grown}");
    // Connections: the waiting update, blocked by the holder, under its normalized text.
    let blocked = browser.texts("#connections tr.session.blocked").unwrap();
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert!(
        blocked[0].contains(&format!("pid {holder_pid}")),
        "{blocked:?}"
    );
    if primary.major_version() >= 14 {
        assert!(
            blocked[0].contains("UPDATE accounts SET note = $1 WHERE id = $2"),
            "{blocked:?}"
        );
    }
    assert_eq!(
        browser.count("#connections tr.session.blocking").unwrap(),
        1
    );
    assert!(
        browser
            .texts("#connections table.pools")
            .unwrap()
            .iter()
            .any(|t| t.contains("pgops-health")),
        "the exporter's own pools report here"
    );
    // Backups: the failing archive, the logical backup.
    let archive = browser.texts("#backups p.archive.failing").unwrap();
    assert_eq!(archive.len(), 1, "{:?}", browser.texts("#backups").unwrap());
    let logical = browser
        .texts("#backups tr.backup[data-kind=\"logical\"]")
        .unwrap();
    assert!(!logical[0].contains("none"), "{logical:?}");
    assert!(
        browser.texts("#backups tr.reach").unwrap()[0].contains("about "),
        "a restore can reach the newest backup"
    );

    // Nothing ran, nothing failed to load, no literal value is shown, and the page reloads
    // itself.
    let dom = browser.dom().unwrap();
    assert_eq!(browser.count("script").unwrap(), 0);
    assert!(!dom.contains("secret-value-42"));
    assert!(dom.contains("http-equiv=\"refresh\""));
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    let console = browser.console().unwrap();
    assert!(console.is_empty(), "console: {console:?}");
    let shot = target_dir().join("pgops-page.png");
    browser.screenshot(&shot).unwrap();
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);

    holder.batch_execute("COMMIT").unwrap();
    waiter.join().unwrap().unwrap();
    replica.resume_replay().unwrap();

    // The primary stopped: the page still answers, and says so.
    drop(holder);
    primary.stop().unwrap();
    let (code, html) = get(&addr, "/", Some(&format!("Bearer {TOKEN}")));
    assert_eq!(code, 200, "{html}");
    assert!(html.contains("The primary does not answer."), "{html}");
    assert!(html.contains("class=\"server down\""), "{html}");
}
