//! The documented alert rules in a real Prometheus (Debian's `prometheus`), scraping
//! `pgops health` of two servers: one whose WAL archiving fails, one whose archiving works.
//! Prometheus itself must hold `PostgresWalArchiveFailing` for the first only.
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
    let (broken_addr, _stop_broken) = serve(&rt, exporter(&broken), None);
    let (working_addr, _stop_working) = serve(&rt, exporter(&working), None);
    let rules =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/monitoring/alerts.yml");
    let prometheus = Prometheus::start(
        &[&rules],
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
    // A few more evaluations: the working server never gets it, and nothing else (a server
    // down, a failing collector) is claimed of either.
    std::thread::sleep(Duration::from_secs(3));
    let alerts = prometheus.alerts().unwrap();
    let names: Vec<(&str, &str)> = alerts
        .iter()
        .map(|a| {
            (
                a.labels["alertname"].as_str(),
                a.labels.get("instance").map_or("", String::as_str),
            )
        })
        .collect();
    assert_eq!(
        names,
        [(
            "PostgresWalArchiveFailing",
            broken_addr.to_string().as_str()
        )],
        "{alerts:?}"
    );
}
