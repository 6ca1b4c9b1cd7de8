//! pgops-health against real clusters: every documented family with sane values from a
//! primary with a streaming replica, a collector blocked on a lock that cannot hold up the
//! scrape, a stopped database that still gets a prompt answer, and the bearer token.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use common::{agent, get, parse, runtime, serve, value};
use diesel::connection::SimpleConnection;
use pgops_health::{Exporter, Options};
use pgops_pool::DatabaseUrl;
use pgops_testkit::{Cluster, ClusterOptions};

fn url(cluster: &Cluster) -> DatabaseUrl {
    DatabaseUrl::parse(&cluster.url("postgres")).unwrap()
}

/// The metric names the postgres_exporter mixin's `postgres-overview` dashboard reads
/// (`postgres_mixin/dashboards/postgres-overview.json`).
const MIXIN_DASHBOARD: &[&str] = &[
    "pg_up",
    "pg_stat_database_tup_fetched",
    "pg_stat_database_tup_returned",
    "pg_stat_database_tup_inserted",
    "pg_stat_database_tup_updated",
    "pg_stat_database_tup_deleted",
    "pg_stat_database_xact_commit",
    "pg_stat_database_xact_rollback",
    "pg_stat_database_deadlocks",
    "pg_stat_database_conflicts",
    "pg_stat_database_blks_hit",
    "pg_stat_database_blks_read",
    "pg_stat_database_numbackends",
    "pg_stat_bgwriter_buffers_alloc_total",
    "pg_stat_bgwriter_buffers_backend_fsync_total",
    "pg_stat_bgwriter_buffers_backend_total",
    "pg_stat_bgwriter_buffers_clean_total",
    "pg_stat_bgwriter_buffers_checkpoint_total",
];

/// The metric names the mixin's alert rules read (`postgres_mixin/alerts/postgres.libsonnet`).
const MIXIN_ALERTS: &[&str] = &[
    "pg_stat_activity_count",
    "pg_settings_max_connections",
    "pg_settings_superuser_reserved_connections",
    "pg_up",
    "pg_stat_activity_max_tx_duration",
    "pg_stat_database_xact_commit",
    "pg_stat_database_xact_rollback",
    "pg_stat_database_blks_hit",
    "pg_stat_database_blks_read",
    "pg_stat_database_deadlocks",
    "pg_locks_count",
    "pg_settings_max_locks_per_transaction",
    "pg_replication_lag",
    "pg_replication_is_replica",
    "pg_replication_slots_active",
    "pg_exporter_last_scrape_error",
    "pg_stat_user_tables_n_dead_tup",
    "pg_stat_user_tables_n_live_tup",
    "pg_settings_autovacuum_vacuum_scale_factor",
    "pg_settings_autovacuum_vacuum_threshold",
    "pg_stat_bgwriter_checkpoints_timed_total",
    "pg_stat_bgwriter_checkpoints_req_total",
];

#[test]
fn every_documented_family_from_a_primary_with_a_replica() {
    let primary = Cluster::start(ClusterOptions::default()).unwrap();
    let replica = primary.create_replica().unwrap();
    primary
        .execute(
            "postgres",
            "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g;
             SELECT pg_create_physical_replication_slot('forgotten', true);",
        )
        .unwrap();
    replica.catch_up(&primary, Duration::from_secs(30)).unwrap();
    // Before PostgreSQL 15 the statistics collector receives counters up to half a second
    // after the transactions that made them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while primary
        .query_text(
            "postgres",
            "(SELECT xact_commit::text FROM pg_stat_database WHERE datname = 'postgres')",
        )
        .unwrap()
        .as_deref()
        == Some("0")
    {
        assert!(Instant::now() < deadline, "no commit counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let exporter = Exporter::new(
        url(&primary),
        vec![DatabaseUrl::parse(&replica.url("postgres")).unwrap()],
        Options::default(),
        None,
    )
    .unwrap();
    let rt = runtime();
    let scrape = rt.block_on(exporter.scrape());
    assert!(scrape.up);
    let s = parse(&scrape.text());
    let server = format!("127.0.0.1:{}", primary.port());
    let replica_server = format!("127.0.0.1:{}", replica.port());
    let srv = [("server", server.as_str())];

    assert_eq!(value(&s, "pg_up", &[]), Some(1.0));
    assert_eq!(
        value(&s, "pgops_replica_up", &[("server", &replica_server)]),
        Some(1.0)
    );
    assert!(value(&s, "pg_static", &srv).is_some());
    assert!(
        value(
            &s,
            "pg_database_size_bytes",
            &[("datname", "postgres"), ("server", &server)]
        )
        .unwrap()
            > 1e6
    );
    // The primary's counters (the replica's own may still be zero).
    let primary_postgres = [("datname", "postgres"), ("server", server.as_str())];
    assert!(value(&s, "pg_stat_database_xact_commit", &primary_postgres).unwrap() > 0.0);
    assert!(value(&s, "pg_stat_database_blks_hit", &primary_postgres).unwrap() > 0.0);
    for name in [
        "pg_stat_database_deadlocks",
        "pg_stat_database_temp_bytes",
        "pg_stat_database_xact_rollback",
        "pg_stat_database_numbackends",
        "pg_stat_database_conflicts_confl_lock",
    ] {
        assert!(
            value(&s, name, &[("datname", "postgres")]).is_some(),
            "{name}"
        );
    }
    assert!(
        value(
            &s,
            "pg_locks_count",
            &[("datname", "postgres"), ("mode", "accesssharelock")]
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        value(
            &s,
            "pg_stat_activity_count",
            &[("datname", "postgres"), ("state", "active")]
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(value(&s, "pg_settings_max_connections", &srv), Some(100.0));
    assert!(value(&s, "pg_settings_shared_buffers_bytes", &srv).unwrap() >= 8192.0 * 16.0);
    assert!(value(&s, "pg_settings_statement_timeout_seconds", &srv).is_some());
    assert!(value(&s, "pg_stat_bgwriter_buffers_alloc_total", &srv).unwrap() > 0.0);
    // Checkpoints under the 0.11 names on every major; PostgreSQL 17 moved them to
    // pg_stat_checkpointer, which is also exported under its own names there.
    assert!(value(&s, "pg_stat_bgwriter_checkpoints_timed_total", &srv).is_some());
    assert!(value(&s, "pg_stat_bgwriter_checkpoint_write_time_total", &srv).is_some());
    let version: u32 = primary
        .query_text("postgres", "current_setting('server_version_num')")
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        value(&s, "pg_stat_checkpointer_num_timed_total", &srv).is_some(),
        version >= 170_000
    );
    if version >= 170_000 {
        // The 0.11 names carry the checkpointer's own counters.
        assert_eq!(
            value(&s, "pg_stat_bgwriter_checkpoints_timed_total", &srv),
            value(&s, "pg_stat_checkpointer_num_timed_total", &srv)
        );
        assert_eq!(
            value(&s, "pg_stat_bgwriter_buffers_checkpoint_total", &srv),
            value(&s, "pg_stat_checkpointer_buffers_written_total", &srv)
        );
    }
    // WAL generation from 14 on; on 18 its writes and syncs come from pg_stat_io.
    let wal_records = value(&s, "pg_stat_wal_wal_records_total", &srv);
    assert_eq!(wal_records.is_some(), version >= 140_000, "{wal_records:?}");
    if version >= 140_000 {
        assert!(wal_records.unwrap() > 0.0);
        assert!(value(&s, "pg_stat_wal_wal_bytes_total", &srv).unwrap() > 1e6);
        assert!(value(&s, "pg_stat_wal_wal_write_total", &srv).unwrap() > 0.0);
        assert!(value(&s, "pg_stat_wal_wal_sync_time_total", &srv).is_some());
    }
    // I/O per backend type, object and context from 16 on, without NaN for what cannot happen.
    let client_reads = value(
        &s,
        "pg_stat_io_hits_total",
        &[
            ("backend_type", "client backend"),
            ("object", "relation"),
            ("context", "normal"),
            ("server", server.as_str()),
        ],
    );
    assert_eq!(
        client_reads.is_some(),
        version >= 160_000,
        "{client_reads:?}"
    );
    if version >= 160_000 {
        assert!(client_reads.unwrap() > 0.0);
        let io: Vec<_> = s
            .iter()
            .filter(|(n, _, _)| n.starts_with("pg_stat_io_"))
            .collect();
        assert!(io.iter().all(|(_, _, v)| !v.is_nan()), "{io:?}");
        // A checkpointer never reads: the view's NULL is no series at all.
        assert!(
            value(
                &s,
                "pg_stat_io_reads_total",
                &[
                    ("backend_type", "checkpointer"),
                    ("object", "relation"),
                    ("context", "normal")
                ]
            )
            .is_none()
        );
    }
    assert!(value(&s, "pg_stat_archiver_archived_count", &srv).is_some());
    assert_eq!(value(&s, "pg_replication_is_replica", &srv), Some(0.0));
    assert_eq!(
        value(
            &s,
            "pg_replication_is_replica",
            &[("server", &replica_server)]
        ),
        Some(1.0)
    );
    let lag = value(
        &s,
        "pg_replication_lag_seconds",
        &[("server", &replica_server)],
    )
    .unwrap();
    assert!((0.0..60.0).contains(&lag), "{lag}");
    assert_eq!(value(&s, "pgops_replication_standbys", &[]), Some(1.0));
    assert!(value(&s, "pgops_replication_lag_bytes", &[]).unwrap() >= 0.0);
    assert_eq!(
        value(&s, "pgops_replication_slots_inactive", &[]),
        Some(1.0)
    );
    assert!(
        value(
            &s,
            "pgops_replication_slot_retained_wal_bytes",
            &[("slot_name", "forgotten")]
        )
        .unwrap()
            > 0.0
    );
    assert!(value(&s, "pgops_wal_archive_failure_total", &[]).is_some());
    assert!(value(&s, "pgops_oldest_transaction_age_seconds", &[]).unwrap() >= 0.0);
    assert_eq!(value(&s, "pgops_blocked_queries", &[]), Some(0.0));
    let wrap = value(&s, "pgops_xid_wraparound_ratio", &[]).unwrap();
    assert!(wrap > 0.0 && wrap < 0.01, "{wrap}");
    let hit = value(&s, "pgops_cache_hit_ratio", &[("datname", "postgres")]).unwrap();
    assert!(hit > 0.5 && hit <= 1.0, "{hit}");
    assert!(value(&s, "pgops_table_size_bytes", &[("table", "big")]).unwrap() > 1e6);
    // Every metric the documented alerts read from the database is served (on every major
    // the version matrix runs this against). Pool and backup metrics come from the service's
    // pools and the repository, not from here.
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/monitoring/alerts.yml"),
    )
    .unwrap();
    // Each rule's expression: its `expr:` line and the lines of a block that follow it.
    let mut exprs = Vec::new();
    let mut in_expr = false;
    for line in rules.lines().map(str::trim) {
        if let Some(expr) = line.strip_prefix("expr:") {
            exprs.push(expr);
            in_expr = true;
        } else if in_expr && (line.starts_with("for:") || line.starts_with("labels:")) {
            in_expr = false;
        } else if in_expr {
            exprs.push(line);
        }
    }
    let names: std::collections::BTreeSet<String> = exprs
        .into_iter()
        .flat_map(|expr| {
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("pg_") || w.starts_with("pgops_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|n| !n.starts_with("pgops_pool_") && !n.starts_with("pgops_backup_"))
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    for name in &names {
        assert!(
            s.iter().any(|(n, _, _)| n == name),
            "the alert rules read {name}, which the scrape lacks"
        );
    }
    // The postgres_exporter project's own mixin, unchanged, pointed at pgops: every name its
    // `postgres-overview` dashboard and its alert rules read is served.
    for name in MIXIN_DASHBOARD.iter().chain(MIXIN_ALERTS) {
        assert!(
            s.iter().any(|(n, _, _)| n == name),
            "the postgres_exporter mixin reads {name}, which the scrape lacks"
        );
    }
    // With the exporter's labels: per table, per slot.
    let big = [
        ("datname", "postgres"),
        ("schemaname", "public"),
        ("relname", "big"),
        ("server", server.as_str()),
    ];
    assert!(value(&s, "pg_stat_user_tables_n_dead_tup", &big).is_some());
    assert!(value(&s, "pg_stat_user_tables_n_live_tup", &big).is_some());
    assert_eq!(
        value(
            &s,
            "pg_replication_slots_active",
            &[("slot_name", "forgotten"), ("server", server.as_str())]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&s, "pg_replication_lag", &[("server", &replica_server)]),
        Some(lag)
    );
    // Every collector that ran succeeded.
    let collectors: Vec<_> = s
        .iter()
        .filter(|(n, _, _)| n == "pgops_collector_success")
        .collect();
    assert!(collectors.len() >= 12, "{collectors:?}");
    assert!(
        collectors.iter().all(|(_, _, v)| *v == 1.0),
        "{collectors:?}"
    );

    // Prometheus's own checker accepts the exposition (its lint notes about
    // postgres_exporter's naming, kept for compatibility, are not errors).
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is needed (Debian: apt-get install prometheus)");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(scrape.text().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let report =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!report.contains("error"), "{report}");
    assert!(
        report.contains("pg_locks_count"),
        "promtool read the families: {report}"
    );

    // The readiness of both servers.
    let ready = rt.block_on(exporter.readiness());
    assert!(ready.ready && ready.primary.healthy, "{ready:?}");
    assert!(
        ready.replicas[0].healthy && ready.replicas[0].in_recovery == Some(true),
        "{ready:?}"
    );
}

#[test]
fn a_collector_blocked_on_a_lock_fails_alone_and_concurrent_scrapes_share_one() {
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();
    cluster
        .execute("postgres", "CREATE TABLE held (id int)")
        .unwrap();
    let mut holder = cluster.connect("postgres").unwrap();
    holder
        .batch_execute("BEGIN; LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let options = Options {
        scrape_deadline: Duration::from_secs(3),
        collector_timeout: Duration::from_secs(1),
        ..Options::default()
    };
    let exporter = Arc::new(Exporter::new(url(&cluster), vec![], options, None).unwrap());
    let rt = runtime();
    let started = Instant::now();
    let scrapes: Vec<_> = rt.block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let exporter = exporter.clone();
                tokio::spawn(async move { exporter.scrape().await })
            })
            .collect();
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap());
        }
        out
    });
    let elapsed = started.elapsed();
    // The lock is held for the whole test: only the deadline machinery ends the wait.
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert!(
        scrapes.iter().all(|s| Arc::ptr_eq(s, &scrapes[0])),
        "four requests, one scrape"
    );
    let s = parse(&scrapes[0].text());
    assert_eq!(value(&s, "pg_up", &[]), Some(1.0));
    assert_eq!(
        value(
            &s,
            "pgops_collector_success",
            &[("collector", "table_sizes")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &s,
            "pgops_collector_success",
            &[("collector", "stat_database")]
        ),
        Some(1.0)
    );
    assert_eq!(value(&s, "pg_exporter_scrapes_total", &[]), Some(1.0));
    holder.batch_execute("COMMIT").unwrap();
}

#[test]
fn with_the_database_stopped_metrics_answer_promptly_and_ready_is_503() {
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();
    let options = Options {
        scrape_deadline: Duration::from_secs(2),
        collector_timeout: Duration::from_secs(1),
        cache_for: Duration::ZERO,
        ..Options::default()
    };
    let rt = runtime();
    let (addr, _stop) = serve(
        &rt,
        Exporter::new(url(&cluster), vec![], options, None).unwrap(),
        None,
    );
    let agent = agent();
    let (status, body) = get(&agent, &format!("http://{addr}/metrics"), None);
    assert_eq!(status, 200);
    let s = parse(&body);
    assert_eq!(value(&s, "pg_up", &[]), Some(1.0));
    // The expensive collectors' pieces follow the scrape's own families.
    assert!(value(&s, "pg_database_size_bytes", &[("datname", "postgres")]).is_some());
    // The pieces go out with their length known, not chunked.
    let mut response = agent.get(&format!("http://{addr}/metrics")).call().unwrap();
    let length: usize = response
        .headers()
        .get("content-length")
        .expect("a Content-Length")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(response.body_mut().read_to_vec().unwrap().len(), length);

    cluster.stop().unwrap();
    let started = Instant::now();
    let (status, body) = get(&agent, &format!("http://{addr}/metrics"), None);
    let took = started.elapsed();
    assert_eq!(status, 200);
    let s = parse(&body);
    assert_eq!(value(&s, "pg_up", &[]), Some(0.0));
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(value(&s, "pg_stat_database_xact_commit", &[]).is_none());

    let (status, body) = get(&agent, &format!("http://{addr}/ready"), None);
    assert_eq!(status, 503);
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["primary"]["up"], false);
    let (status, _) = get(&agent, &format!("http://{addr}/health"), None);
    assert_eq!(status, 200, "liveness does not depend on the database");

    cluster.start_again().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = get(&agent, &format!("http://{addr}/metrics"), None);
        if value(&parse(&body), "pg_up", &[]) == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pg_up stayed 0 after the restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_token_is_enforced_when_set() {
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();
    let rt = runtime();
    let (addr, _stop) = serve(
        &rt,
        Exporter::new(url(&cluster), vec![], Options::default(), None).unwrap(),
        Some("s3cret-token"),
    );
    let agent = agent();
    for path in ["metrics", "ready"] {
        let (status, body) = get(&agent, &format!("http://{addr}/{path}"), None);
        assert_eq!(status, 401, "{path}");
        assert!(body.contains("Authorization: Bearer"), "{body}");
        assert_eq!(
            get(&agent, &format!("http://{addr}/{path}"), Some("wrong")).0,
            401
        );
        assert_eq!(
            get(
                &agent,
                &format!("http://{addr}/{path}"),
                Some("s3cret-token")
            )
            .0,
            200
        );
    }
    let (status, body) = get(&agent, &format!("http://{addr}/health"), None);
    assert_eq!(status, 200);
    assert!(!body.contains("s3cret"));
}

#[test]
fn the_typed_snapshot_reports_what_the_server_says() {
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();
    cluster
        .execute(
            "postgres",
            "CREATE TABLE ledger AS SELECT g AS id, repeat('x', 200) AS memo FROM generate_series(1, 5000) g",
        )
        .unwrap();
    let pool = pgops_pool::Pool::open(
        "snapshot-test",
        url(&cluster),
        pgops_pool::Environment::Test.profile(),
    )
    .unwrap();
    let mut conn = pool.get().unwrap();
    let mut holder = cluster.connect("postgres").unwrap();
    holder.batch_execute("BEGIN; SELECT 1").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let snapshot = pgops_health::snapshot(&mut conn, Some(pool.stats())).unwrap();
    assert!(!snapshot.in_recovery);
    assert_eq!(snapshot.max_connections, 100);
    assert!(snapshot.database_size_bytes > 1_000_000);
    assert!(
        snapshot
            .connections_by_state
            .get("active")
            .copied()
            .unwrap_or(0)
            >= 1
    );
    assert!(
        snapshot
            .connections_by_state
            .get("idle in transaction")
            .copied()
            .unwrap_or(0)
            >= 1
    );
    assert!(
        snapshot.oldest_transaction_seconds >= 0.2,
        "{}",
        snapshot.oldest_transaction_seconds
    );
    assert_eq!(snapshot.largest_tables[0].table, "ledger");
    assert!(snapshot.largest_tables[0].bytes > 1_000_000);
    assert_eq!(snapshot.blocked_queries, 0);
    assert_eq!(snapshot.pool.unwrap().in_use, 1);
    holder.batch_execute("COMMIT").unwrap();
}
