//! The documented alert rules in a real Prometheus (Debian's `prometheus`), scraping
//! `pgops health` of two servers: one whose WAL archiving fails, one whose archiving works.
//! Prometheus itself must hold `PostgresWalArchiveFailing` for the first only. And the
//! postgres_exporter mixin's two alerts that read per-table and per-slot series, as its
//! default configuration renders them, work on what pgops serves.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{runtime, serve};
use pgops_health::{Exporter, Options};
use pgops_pool::DatabaseUrl;
use pgops_testkit::{Archive, Cluster, ClusterOptions, Prometheus};

/// A cluster that has tried to archive a segment, and pgops health serving its metrics.
fn archiving(archive: Archive) -> Cluster {
    let cluster = Cluster::start(ClusterOptions::default().archive(archive)).unwrap();
    cluster
        .execute(
            "postgres",
            "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g; SELECT pg_switch_wal();",
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster
        .query_text(
            "postgres",
            "(SELECT (archived_count + failed_count)::text FROM pg_stat_archiver)",
        )
        .unwrap()
        .as_deref()
        == Some("0")
    {
        assert!(Instant::now() < deadline, "the archiver never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster
}

#[test]
fn prometheus_holds_the_archive_alert_for_the_server_whose_archiving_fails() {
    let broken = archiving(Archive::Command("false".into()));
    let working = archiving(Archive::LocalDir);
    let rt = runtime();
    let exporter = |cluster: &Cluster| {
        Exporter::new(
            DatabaseUrl::parse(&cluster.url("postgres")).unwrap(),
            vec![],
            Options::default(),
            None,
        )
        .unwrap()
    };
    // For the mixin's alerts: a table whose dead rows autovacuum may not clean, and a slot
    // nobody uses, on the broken server.
    broken
        .execute(
            "postgres",
            "CREATE TABLE bloated (id int) WITH (autovacuum_enabled = false);
             INSERT INTO bloated SELECT generate_series(1, 1000);
             DELETE FROM bloated;
             SELECT pg_create_physical_replication_slot('forgotten');",
        )
        .unwrap();
    let (broken_addr, _stop_broken) = serve(&rt, exporter(&broken), None);
    let (working_addr, _stop_working) = serve(&rt, exporter(&working), None);
    let rules =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/monitoring/alerts.yml");
    let mixin =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/postgres-mixin-alerts.yml");
    let prometheus = Prometheus::start(
        &[&rules, &mixin],
        &[broken_addr.to_string(), working_addr.to_string()],
    )
    .unwrap();

    // `for: 5m`: pending is what Prometheus holds within the test's minute.
    let alert = prometheus
        .wait_for_alert(
            "PostgresWalArchiveFailing",
            "pending",
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(alert.labels["instance"], broken_addr.to_string());
    assert_eq!(alert.labels["job"], "pgops");
    assert_eq!(alert.labels["severity"], "critical");
    // The mixin's unused-slot alert, on the slot's own labels.
    let slot = prometheus
        .wait_for_alert(
            "PostgresHasReplicationSlotUsed",
            "pending",
            Duration::from_secs(30),
        )
        .unwrap();
    assert_eq!(slot.labels["slot_name"], "forgotten");
    assert_eq!(slot.labels["instance"], broken_addr.to_string());
    // The mixin's "table not vacuumed" comparison, joined on job, instance and server as its
    // default configuration renders it, finds the bloated table (its alert also asks that
    // the condition held for ten hours).
    let deadline = Instant::now() + Duration::from_secs(30);
    let bloated = loop {
        let found = prometheus
            .query(
                "pg_stat_user_tables_n_dead_tup > pg_stat_user_tables_n_live_tup \
                 * on (job, instance, server) group_left pg_settings_autovacuum_vacuum_scale_factor \
                 + on (job, instance, server) group_left pg_settings_autovacuum_vacuum_threshold",
            )
            .unwrap();
        if !found.is_empty() || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(bloated.len(), 1, "{bloated:?}");
    assert_eq!(bloated[0].0["relname"], "bloated");
    assert_eq!(bloated[0].1, 1000.0);
    // A few more evaluations: the working server never gets any, and nothing else (a server
    // down, a failing collector) is claimed of either.
    std::thread::sleep(Duration::from_secs(3));
    let alerts = prometheus.alerts().unwrap();
    let mut names: Vec<(&str, &str)> = alerts
        .iter()
        .map(|a| {
            (
                a.labels["alertname"].as_str(),
                a.labels.get("instance").map_or("", String::as_str),
            )
        })
        .collect();
    names.sort_unstable();
    let broken = broken_addr.to_string();
    assert_eq!(
        names,
        [
            ("PostgresHasReplicationSlotUsed", broken.as_str()),
            ("PostgresWalArchiveFailing", broken.as_str()),
        ],
        "{alerts:?}"
    );
}
