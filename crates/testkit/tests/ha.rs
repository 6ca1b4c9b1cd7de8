//! The HA cluster: Patroni and etcd start, a switchover and a kill -9 failover give a new
//! leader, the killed node rejoins, and nothing is left running once the cluster is dropped.

use std::time::{Duration, Instant};

use pgops_testkit::{HaCluster, HaOptions};

#[test]
fn patroni_cluster_switches_over_fails_over_and_cleans_up() {
    let started = Instant::now();
    let cluster = HaCluster::start(HaOptions::default()).unwrap();
    eprintln!("HA cluster up in {:?}", started.elapsed());
    let leader = cluster.leader().unwrap().expect("a leader after start");
    let members = cluster.members().unwrap();
    assert_eq!(members.len(), 3, "{members:?}");
    assert_eq!(members.iter().filter(|m| m.is_leader()).count(), 1);

    let candidate = members
        .iter()
        .find(|m| !m.is_leader())
        .unwrap()
        .name
        .clone();
    let t = Instant::now();
    let new = cluster.switchover(&candidate).unwrap();
    eprintln!("switchover to {candidate} in {:?}", t.elapsed());
    assert_eq!(new.name, candidate);
    cluster
        .wait_for_replica(&leader.name, Duration::from_secs(60))
        .unwrap();
    // Steady: the new leader has checkpointed on its timeline.
    let t = Instant::now();
    cluster
        .wait_until_settled(Duration::from_secs(300))
        .unwrap();
    eprintln!("settled {:?} after the switchover", t.elapsed());

    let t = Instant::now();
    cluster.kill_node(&candidate).unwrap();
    let after = cluster
        .wait_for_leader(Duration::from_secs(90), Some(&candidate))
        .unwrap();
    eprintln!("failover to {} in {:?}", after.name, t.elapsed());
    // Two promotions: timeline 3 (read off the WAL position, which is never stale).
    let new_leader = cluster.node(&after.name).unwrap();
    assert_eq!(new_leader.timeline().unwrap(), 3);
    cluster.start_node(&candidate).unwrap();
    cluster
        .wait_for_replica(&candidate, Duration::from_secs(90))
        .unwrap();

    // Dropped: no Patroni, PostgreSQL or etcd process and no directory left.
    let root = cluster.root().to_path_buf();
    let pids: Vec<i32> = cluster
        .nodes()
        .iter()
        .flat_map(|n| [n.patroni_pid(), n.postmaster_pid()])
        .flatten()
        .collect();
    assert_eq!(pids.len(), 6, "every node runs Patroni and PostgreSQL");
    drop(cluster);
    assert!(!root.exists(), "{} left behind", root.display());
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z")),
            "process {pid} left running"
        );
    }
}
