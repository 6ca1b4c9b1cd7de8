//! No PostgreSQL process and no cluster directory outlives the process that started it,
//! whether that process returns, exits without running destructors, panics, or is killed
//! with SIGKILL. This binary runs itself as the child in each of those ways and checks
//! what is left afterwards (the shared cluster, an owned cluster and its replica, and a
//! Patroni cluster with its etcd, and HAProxy in front of it).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use pgops_testkit::{Cluster, ClusterOptions, HaCluster, HaOptions, HaProxy, TestDatabase};

const MODES: &[&str] = &["return", "exit", "panic", "sigkill"];

fn main() {
    match std::env::var("PGOPS_TESTKIT_LEAK_CHILD") {
        Ok(mode) => child(&mode),
        Err(_) => parent(),
    }
}

fn child(mode: &str) {
    let shared = pgops_testkit::shared().unwrap();
    let _db = TestDatabase::empty().unwrap();
    let owned = Cluster::start(ClusterOptions::default()).unwrap();
    let replica = owned.create_replica().unwrap();
    for cluster in [shared, &owned, &replica] {
        println!(
            "CLUSTER {} {}",
            cluster.postmaster_pid().unwrap(),
            cluster.root().display()
        );
    }
    // Two nodes: a leader and a replica, each a Patroni with its PostgreSQL, and etcd.
    let ha = HaCluster::start(HaOptions::default().nodes(2)).unwrap();
    // HAProxy in front of it (the failover benchmark's anchor).
    let haproxy = HaProxy::start(&ha).unwrap();
    println!(
        "CLUSTER {} {}",
        haproxy.pid().unwrap(),
        haproxy.root().display()
    );
    for node in ha.nodes() {
        println!(
            "CLUSTER {} {}",
            node.postmaster_pid().unwrap(),
            ha.root().display()
        );
    }
    println!("READY");
    // Hold everything up until the parent has seen it running: it closes our stdin then.
    let mut go = String::new();
    let _ = std::io::stdin().read_line(&mut go);
    match mode {
        "return" => {}
        "exit" => std::process::exit(0),
        "panic" => panic!("deliberate panic with clusters alive"),
        _ => std::thread::sleep(Duration::from_secs(600)),
    }
}

fn parent() {
    let me = std::env::current_exe().unwrap();
    let mut failed = Vec::new();
    for mode in MODES {
        match check(&me, mode) {
            Ok(()) => println!("test leaks::{mode} ... ok"),
            Err(e) => {
                println!("test leaks::{mode} ... FAILED\n  {e}");
                failed.push(*mode);
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        MODES.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}

fn check(me: &Path, mode: &str) -> Result<(), String> {
    let mut child = Command::new(me)
        .env("PGOPS_TESTKIT_LEAK_CHILD", mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().unwrap();
    let mut clusters: Vec<(i32, PathBuf)> = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some(rest) = line.strip_prefix("CLUSTER ") {
            let (pid, root) = rest.split_once(' ').unwrap();
            clusters.push((pid.parse().unwrap(), PathBuf::from(root)));
        }
        if line == "READY" {
            break;
        }
    }
    if clusters.len() != 6 {
        let _ = child.kill();
        return Err(format!(
            "child started {} clusters, expected 6",
            clusters.len()
        ));
    }
    for (pid, root) in &clusters {
        if !alive(*pid) || !root.exists() {
            return Err(format!(
                "cluster {} (pid {pid}) was not up while the child ran",
                root.display()
            ));
        }
    }
    // Only now may the child go on to return, exit, panic or be killed: before, a child
    // that returns at once raced this check and could be found already cleaned up.
    if mode == "sigkill" {
        child.kill().map_err(|e| e.to_string())?;
    }
    drop(child.stdin.take());
    child.wait().map_err(|e| e.to_string())?;

    // The watchdogs clean up asynchronously; give them time, then insist.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: Vec<String> = clusters
            .iter()
            .filter_map(|(pid, root)| {
                let procs = processes_of(*pid, root);
                (root.exists() || !procs.is_empty()).then(|| {
                    format!(
                        "{} (dir exists: {}, processes: {procs:?})",
                        root.display(),
                        root.exists()
                    )
                })
            })
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "left behind after the child's {mode}: {}",
                left.join("; ")
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a process exists and is not a zombie waiting for its parent.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// The postmaster, its children, and any process naming the cluster's directory.
fn processes_of(postmaster: i32, root: &Path) -> Vec<i32> {
    let root = root.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // ppid is the second field after the parenthesised command name.
        let ppid: i32 = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if zombie {
            continue;
        }
        if pid == postmaster || ppid == postmaster || cmdline.contains(&root) {
            found.push(pid);
        }
    }
    found
}
