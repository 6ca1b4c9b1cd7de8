//! `pgops health` as an operator runs it: `check` exit codes for a healthy primary, a lagging
//! replica and a stopped server; `serve` refusing a busy port, answering, and stopping on
//! SIGTERM.
#![allow(clippy::unwrap_used)]

use std::{
    io::{BufRead, BufReader},
    process::{Command, Output, Stdio},
    time::Duration,
};

mod common;

use pgops_testkit::{Cluster, ClusterOptions};

fn pgops(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgops"));
    cmd.arg("health")
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("DATABASE_REPLICA_URLS")
        .env_remove("DATABASE_READ_REPLICA_URL")
        .env_remove("PGOPS_METRICS_TOKEN");
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_exits_0_healthy_1_unhealthy_2_unreachable() {
    let primary = Cluster::start(ClusterOptions::default()).unwrap();
    let replica = primary.create_replica().unwrap();
    let env = [
        ("DATABASE_URL", primary.url("postgres")),
        ("DATABASE_REPLICA_URLS", replica.url("postgres")),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = pgops(&["check"], &env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("ok   primary"));
    assert!(text(&out.stdout).contains("ok   replica"));

    // A replica whose replay is paused while the primary writes falls behind.
    primary
        .execute("postgres", "CREATE TABLE t AS SELECT 1 AS x")
        .unwrap();
    replica.catch_up(&primary, Duration::from_secs(30)).unwrap();
    replica.pause_replay().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    primary
        .execute("postgres", "INSERT INTO t VALUES (2)")
        .unwrap();
    // The replica reports lag once it has received WAL it has not replayed.
    let mut tries = 0;
    let out = loop {
        let out = pgops(&["check", "--json", "--max-replica-lag", "1s"], &env);
        tries += 1;
        if out.status.code() != Some(0) || tries == 50 {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["primary"]["healthy"], true);
    assert_eq!(report["replicas"][0]["healthy"], false);
    assert!(
        report["replicas"][0]["error"]
            .as_str()
            .unwrap()
            .contains("replay lag")
    );
    replica.resume_replay().unwrap();

    primary.stop().unwrap();
    let out = pgops(
        &["check"],
        &[(
            "DATABASE_URL",
            &primary
                .url("postgres")
                .replace("postgres@", "postgres:hunter2@"),
        )],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).contains("FAIL primary"));
    assert!(!text(&out.stdout).contains("hunter2") && !text(&out.stderr).contains("hunter2"));
}

fn get(addr: &str, path: &str) -> String {
    common::http_get(addr, path, None)
}

#[test]
fn serve_help_names_the_token_variable() {
    let out = pgops(&["serve", "--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    assert!(help.contains("PGOPS_METRICS_TOKEN"), "{help}");
    assert!(help.contains("Authorization: Bearer <token>"), "{help}");
}

#[test]
fn serve_answers_refuses_a_busy_port_and_stops_on_sigterm() {
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();
    let port = pgops_pg::free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgops"))
        .args(["health", "serve", "--listen", &listen])
        .env("DATABASE_URL", cluster.url("postgres"))
        .env_remove("DATABASE_REPLICA_URLS")
        .env_remove("PGOPS_METRICS_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(
        first.starts_with(&format!("serving http://{listen}/metrics")),
        "{first}"
    );

    let metrics = get(&listen, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("\npg_up 1\n"));
    assert!(
        metrics.contains("pgops_pool_connections_max{pool=\"pgops-health\"}"),
        "the facade's metrics are served too"
    );
    assert!(get(&listen, "/ready").contains("\"ready\":true"));

    // A second server on the same port: exit 2 naming the address.
    let out = pgops(
        &["serve", "--listen", &listen],
        &[("DATABASE_URL", &cluster.url("postgres"))],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!("{listen} is already in use")),
        "{}",
        text(&out.stderr)
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));

    // Bad options are refused before binding.
    let out = pgops(
        &[
            "serve",
            "--collector-timeout",
            "10s",
            "--scrape-timeout",
            "5s",
        ],
        &[("DATABASE_URL", &cluster.url("postgres"))],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--collector-timeout"));
}

#[test]
fn check_and_serve_work_over_verify_full_tls_and_a_wrong_ca_says_so() {
    let primary = Cluster::start(ClusterOptions::default().tls(true)).unwrap();
    let replica = primary.create_replica().unwrap();
    let url = primary.tls_url("postgres").unwrap();
    let replica_url = url.replace(
        &format!("localhost:{}", primary.port()),
        &format!("localhost:{}", replica.port()),
    );
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("DATABASE_REPLICA_URLS", replica_url.as_str()),
    ];
    let out = pgops(&["check"], &env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("ok   replica"),
        "{}",
        text(&out.stdout)
    );

    let files = primary.tls().unwrap();
    let wrong = url.replace(
        &files.root_cert.display().to_string(),
        &files.other_root_cert.display().to_string(),
    );
    let out = pgops(&["check"], &[("DATABASE_URL", wrong.as_str())]);
    assert_eq!(out.status.code(), Some(2));
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(said.contains("certificate verify failed"), "{said}");
    let mismatch = url.replace("@localhost:", "@127.0.0.1:");
    let out = pgops(&["check"], &[("DATABASE_URL", mismatch.as_str())]);
    assert_eq!(out.status.code(), Some(2));
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(said.contains("does not match host name"), "{said}");

    // The metrics endpoint scrapes over the same verified connections.
    let metrics = common::HealthServer::start(
        &[],
        &[
            ("DATABASE_URL", &url),
            ("DATABASE_REPLICA_URLS", &replica_url),
        ],
    )
    .metrics();
    assert!(metrics.contains("\npg_up 1\n"), "{metrics}");
    assert!(metrics.contains("pgops_replica_up{"), "{metrics}");
}
