//! `cargo xtask dev` as a newcomer runs it: the whole stack comes up, answers, stops on
//! SIGTERM, finds its data again, leaves nothing running even when killed, and refuses a busy
//! port, missing binaries and a data directory from another PostgreSQL version with a clear
//! error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};

use common::{
    Ports, Stack, get, psql_value, run_dev, server_running, stack_dir, text, wait_until_stopped,
    watchdogs_of,
};
use nix::sys::signal::{Signal, kill};

#[test]
fn dev_stack_comes_up_stops_cleanly_and_finds_its_data_again() {
    let (_tmp, dir) = stack_dir();
    let ports = Ports::free();
    let replica_port = ports.primary + 1;

    // First run: everything from nothing.
    let stack = Stack::start(&dir, &ports);
    let out = stack.output.clone();
    for expected in [
        format!("postgres://postgres@127.0.0.1:{}/pgops_dev", ports.primary),
        format!("postgres://postgres@127.0.0.1:{replica_port}/pgops_dev"),
        format!("http://127.0.0.1:{}/metrics", ports.metrics),
        "13 migration(s) applied".to_owned(),
        "seeded postgres://".to_owned(),
        "taking the first physical backup".to_owned(),
        "insights top".to_owned(),
    ] {
        assert!(out.contains(&expected), "`{expected}` missing from\n{out}");
    }
    // Seeded on the primary, streamed to the replica, statements tracked, WAL archived.
    let patients = psql_value(ports.primary, "SELECT count(*) FROM patients");
    assert!(patients.parse::<u64>().unwrap() > 1000, "{patients}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while psql_value(replica_port, "SELECT count(*) FROM patients") != patients {
        assert!(Instant::now() < deadline, "the replica never caught up");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(psql_value(replica_port, "pg_is_in_recovery()"), "true");
    assert!(
        psql_value(ports.primary, "current_setting('shared_preload_libraries')")
            .contains("pg_stat_statements")
    );
    assert_eq!(
        psql_value(ports.primary, "(SELECT failed_count FROM pg_stat_archiver)"),
        "0"
    );
    assert!(
        std::fs::read_dir(dir.join("repo").join("wal"))
            .unwrap()
            .count()
            > 0
    );
    let (status, metrics) = get(&format!("http://127.0.0.1:{}/metrics", ports.metrics));
    assert_eq!(status, 200);
    assert!(metrics.contains("\npg_up 1\n"), "{metrics}");
    assert!(metrics.contains(&format!(
        "pgops_replica_up{{server=\"127.0.0.1:{replica_port}\"}} 1"
    )));
    assert!(metrics.contains("pgops_backup_last_success_timestamp_seconds{kind=\"physical\""));
    assert_eq!(
        get(&format!("http://127.0.0.1:{}/ready", ports.metrics)).0,
        200
    );

    // SIGTERM: a clean stop, exit 0, no server left.
    assert_eq!(stack.stop(Signal::SIGTERM), Some(0));
    wait_until_stopped(&dir);
    assert!(TcpListener::bind(("127.0.0.1", ports.primary)).is_ok());

    // Second run finds the data: nothing migrated, seeded or backed up again.
    let stack = Stack::start(&dir, &ports);
    assert!(stack.output.contains("is up to date"), "{}", stack.output);
    assert!(
        stack
            .output
            .contains("already holds the development dataset"),
        "{}",
        stack.output
    );
    assert!(
        stack.output.contains("a physical backup is already in"),
        "{}",
        stack.output
    );
    assert_eq!(
        psql_value(ports.primary, "SELECT count(*) FROM patients"),
        patients
    );
    // SIGKILL: the watchdogs still stop both servers.
    assert_eq!(stack.stop(Signal::SIGKILL), None);
    wait_until_stopped(&dir);

    // Killed along with its watchdogs: the servers outlive it, and the next run stops them first.
    let stack = Stack::start(&dir, &ports);
    let watchdogs = watchdogs_of(&dir);
    assert_eq!(watchdogs.len(), 2, "one watchdog per cluster");
    for pid in watchdogs {
        kill(pid, Signal::SIGKILL).unwrap();
    }
    assert_eq!(stack.stop(Signal::SIGKILL), None);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server_running(&dir, "primary"),
        "the left-over server is the point of this step"
    );
    let stack = Stack::start(&dir, &ports);
    assert!(
        stack
            .output
            .contains("stopped the primary server an earlier run left behind"),
        "{}",
        stack.output
    );

    // While it runs, a second run on the same directory is refused and leaves it running.
    let again = run_dev(&dir, &ports, &[]);
    assert_eq!(again.status.code(), Some(2));
    let err = text(&again.stderr);
    assert!(err.contains("is running the stack in"), "{err}");
    assert!(
        server_running(&dir, "primary"),
        "the running stack was not touched"
    );

    // While it runs, a second stack on the same ports is refused before it starts anything.
    let (_tmp2, other) = stack_dir();
    let busy = run_dev(&other, &ports, &[]);
    assert_eq!(busy.status.code(), Some(2));
    let err = text(&busy.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{}", ports.metrics)) && err.contains("--metrics-listen"),
        "{err}"
    );
    let busy = run_dev(
        &other,
        &Ports {
            primary: ports.primary,
            metrics: Ports::free().metrics,
        },
        &[],
    );
    assert_eq!(busy.status.code(), Some(2));
    let err = text(&busy.stderr);
    assert!(
        err.contains(&format!("port {}", ports.primary)) && err.contains("--port"),
        "{err}"
    );
    assert!(
        !other.join("primary").exists(),
        "nothing was created for the refused stack"
    );
    assert_eq!(stack.stop(Signal::SIGTERM), Some(0));
    wait_until_stopped(&dir);

    // A data directory from another major version: refused, named, with the way out.
    std::fs::write(dir.join("primary").join("data").join("PG_VERSION"), "9.6\n").unwrap();
    let out = run_dev(&dir, &ports, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("PostgreSQL 9.6") && err.contains("--fresh"),
        "{err}"
    );
    wait_until_stopped(&dir);

    // SIGTERM (or Ctrl-C) while it is still setting up: it stops after the current step,
    // cleanly, and the next run carries on.
    let stack = Stack::start_until(&dir, &ports, &["--fresh"], "starting the pgops dev stack");
    let (code, rest) = stack.stop_with_output(Signal::SIGTERM);
    assert_eq!(code, Some(0), "{rest}");
    assert!(
        rest.contains("interrupted: stopped the replica and the primary"),
        "{rest}"
    );
    wait_until_stopped(&dir);

    // --fresh starts over.
    let stack = Stack::start_fresh(&dir, &ports);
    assert!(stack.output.contains("(--fresh)"), "{}", stack.output);
    assert!(
        stack.output.contains("13 migration(s) applied"),
        "{}",
        stack.output
    );
    assert_eq!(stack.stop(Signal::SIGTERM), Some(0));
    wait_until_stopped(&dir);
}

#[test]
fn missing_server_binaries_are_named_with_the_package_to_install() {
    let (_tmp, dir) = stack_dir();
    let out = run_dev(
        &dir,
        &Ports::free(),
        &[("PGOPS_PG_BINDIR", "/nonexistent/bin")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("postgresql") && err.contains("PGOPS_PG_BINDIR"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!dir.exists(), "nothing was created");
}

#[test]
fn a_stack_the_server_user_cannot_reach_is_refused_with_the_fix() {
    // A checkout under root's home (0700) once started its servers and then never archived a
    // segment: the server's OS user could not run bin/pgops there.
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: only root runs the server as another user");
        return;
    }
    let (tmp, _) = stack_dir();
    let private = tmp.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let dir = private.join("pgops-dev");
    let out = run_dev(&dir, &Ports::free(), &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&private.display().to_string()) && err.contains("--dir"),
        "{err}"
    );
    assert!(!dir.join("primary").exists(), "no server was created");
}
