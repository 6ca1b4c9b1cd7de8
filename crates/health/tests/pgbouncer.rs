//! The PgBouncer collector against a real PgBouncer in transaction pooling: clients waiting
//! for a server connection, pooled transactions, pool sizes and lists appear under
//! pgbouncer_exporter's names; a PgBouncer that is gone is `pgbouncer_up 0`.
#![allow(clippy::unwrap_used)]

use std::{thread, time::Duration};

use diesel::{Connection, PgConnection, connection::SimpleConnection};
use pgops_health::{pgbouncer::PgBouncerCollector, text::Family};
use pgops_pg::DatabaseUrl;
use pgops_testkit::{Cluster, ClusterOptions, PgBouncer, PgBouncerOptions, PoolMode};

fn value(families: &[Family], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families
        .iter()
        .find(|f| f.name == name)?
        .samples
        .iter()
        .find(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
}

#[test]
fn pools_stats_databases_and_lists_under_the_exporters_names() {
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();
    let bouncer =
        PgBouncer::start(&cluster, PgBouncerOptions::new(PoolMode::Transaction, 2)).unwrap();
    let collector = PgBouncerCollector::new(DatabaseUrl::parse(&bouncer.admin_url()).unwrap());

    // Six clients for two server connections: four wait.
    let url = bouncer.url("postgres");
    let sleepers: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || {
                let mut conn = PgConnection::establish(&url).unwrap();
                conn.batch_execute("SELECT pg_sleep(1.5)").unwrap();
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let families = loop {
        let families = collector.families();
        let waiting = value(
            &families,
            "pgbouncer_pools_client_waiting_connections",
            &[("database", "postgres")],
        );
        if waiting.is_some_and(|w| w >= 1.0) || std::time::Instant::now() > deadline {
            break families;
        }
        thread::sleep(Duration::from_millis(50));
    };
    for s in sleepers {
        s.join().unwrap();
    }
    assert_eq!(value(&families, "pgbouncer_up", &[]), Some(1.0));
    let postgres = [("database", "postgres"), ("user", "postgres")];
    assert!(
        value(
            &families,
            "pgbouncer_pools_client_waiting_connections",
            &postgres
        )
        .unwrap()
            >= 1.0
    );
    let active = value(
        &families,
        "pgbouncer_pools_server_active_connections",
        &postgres,
    )
    .unwrap();
    assert!((1.0..=2.0).contains(&active), "{active} of a pool of 2");
    assert!(
        value(
            &families,
            "pgbouncer_pools_client_maxwait_seconds",
            &postgres
        )
        .is_some()
    );
    assert_eq!(
        value(
            &families,
            "pgbouncer_databases_pool_size",
            &[("name", "postgres")]
        ),
        Some(2.0)
    );
    assert!(value(&families, "pgbouncer_used_clients", &[]).unwrap() >= 6.0);
    assert!(value(&families, "pgbouncer_config_max_client_connections", &[]).is_some());
    let version = families
        .iter()
        .find(|f| f.name == "pgbouncer_version_info")
        .unwrap();
    assert!(
        version.samples[0].labels[0].1.starts_with("PgBouncer"),
        "{:?}",
        version.samples
    );

    let after = collector.families();
    assert!(
        value(
            &after,
            "pgbouncer_stats_totals_sql_transactions_pooled_total",
            &[("database", "postgres")]
        )
        .unwrap()
            >= 6.0
    );
    assert!(
        value(
            &after,
            "pgbouncer_stats_totals_client_wait_seconds_total",
            &[("database", "postgres")]
        )
        .unwrap()
            > 0.5,
        "four clients waited about a second and a half"
    );

    // Every PgBouncer metric the documented alert rules read is served.
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/monitoring/alerts.yml"),
    )
    .unwrap();
    let read: std::collections::BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("pgbouncer_"))
        .collect();
    assert!(read.len() >= 4, "{read:?}");
    for name in read {
        assert!(
            after.iter().any(|f| f.name == name),
            "the alert rules read {name}, which the collector lacks"
        );
    }

    drop(bouncer);
    let gone = collector.families();
    assert_eq!(value(&gone, "pgbouncer_up", &[]), Some(0.0));
    assert_eq!(gone.len(), 1, "only pgbouncer_up when PgBouncer is gone");
}
