//! pgops-health on a Patroni cluster (the installed PostgreSQL, never the version matrix's
//! server-only builds, which lack the programs Patroni runs): every member reported with its
//! role and timeline, and `/ready` following the primary through a switchover and a kill -9
//! failover.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{agent, get, parse, runtime, serve, value};
use pgops_health::{Exporter, Options};
use pgops_pool::DatabaseUrl;
use pgops_testkit::{HaCluster, HaOptions};

/// `/ready` of an HA cluster: (status, who accepts writes, members that answer).
fn ha_ready(agent: &ureq::Agent, addr: SocketAddr) -> (u16, Vec<String>, usize) {
    let (status, body) = get(agent, &format!("http://{addr}/ready"), None);
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    let members = ready["replicas"].as_array().unwrap();
    let writable = members
        .iter()
        .filter(|m| m["in_recovery"] == serde_json::Value::Bool(false))
        .map(|m| m["server"].as_str().unwrap().to_owned())
        .collect();
    let up = members.iter().filter(|m| m["up"] == true).count();
    (status, writable, up)
}

#[test]
fn an_ha_cluster_reports_every_member_and_ready_follows_the_primary() {
    let cluster = HaCluster::start(HaOptions::default()).unwrap();
    let server_of = |name: &str| format!("127.0.0.1:{}", cluster.node(name).unwrap().pg_port());
    let rt = runtime();
    let exporter = Exporter::new(
        DatabaseUrl::parse(&cluster.multi_host_url("postgres")).unwrap(),
        Vec::new(),
        Options {
            cache_for: Duration::ZERO,
            ..Options::default()
        },
        None,
    )
    .unwrap();
    let (addr, _stop) = serve(&rt, exporter, None);
    let agent = agent();
    let leader = cluster.leader().unwrap().unwrap().name;

    // Every member with its role and timeline; the primary is the leader.
    let (status, writable, up) = ha_ready(&agent, addr);
    assert_eq!((status, up), (200, 3));
    assert_eq!(writable, vec![server_of(&leader)]);
    let metrics =
        |agent: &ureq::Agent| parse(&get(agent, &format!("http://{addr}/metrics"), None).1);
    let s = metrics(&agent);
    for node in cluster.nodes() {
        let server = server_of(node.name());
        assert_eq!(
            value(&s, "pgops_replica_up", &[("server", &server)]),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "pgops_server_timeline", &[("server", &server)]),
            Some(1.0),
            "{server}"
        );
        let replica = value(&s, "pg_replication_is_replica", &[("server", &server)]);
        assert_eq!(replica, Some(if node.name() == leader { 0.0 } else { 1.0 }));
    }
    assert_eq!(value(&s, "pg_up", &[]), Some(1.0));

    // A switchover: /ready follows the new primary, on timeline 2.
    let candidate = cluster.node_other_than(&leader).name().to_owned();
    cluster.switchover(&candidate).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, writable, _) = ha_ready(&agent, addr);
        if status == 200 && writable == vec![server_of(&candidate)] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/ready never followed the switchover: {status} {writable:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = metrics(&agent);
    assert_eq!(
        value(
            &s,
            "pgops_server_timeline",
            &[("server", &server_of(&candidate))]
        ),
        Some(2.0)
    );

    // kill -9 of the primary's node: /ready says 503 while no member accepts writes (the
    // members still answer, which is what PostgresNoPrimary reads), then 200 on the next.
    cluster.kill_node(&candidate).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut saw_no_primary = false;
    loop {
        let (status, writable, up) = ha_ready(&agent, addr);
        if status == 503 && writable.is_empty() && up == 2 {
            saw_no_primary = true;
            let s = metrics(&agent);
            assert_eq!(value(&s, "pg_up", &[]), Some(0.0));
        }
        if status == 200
            && saw_no_primary
            && writable.len() == 1
            && writable[0] != server_of(&candidate)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/ready never followed the failover: {status} {writable:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
