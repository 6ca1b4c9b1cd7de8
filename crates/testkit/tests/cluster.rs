//! The test kit against real PostgreSQL: replication, replay control, crash safety, faults,
//! archiving and template databases.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use diesel::{RunQueryDsl, dsl::sql, sql_types::BigInt};
use pgops_testkit::{Archive, Cluster, ClusterOptions, InitResult, Lsn, Template, TestDatabase};

const WAIT: Duration = Duration::from_secs(30);

fn count(cluster: &Cluster, db: &str, table: &str) -> i64 {
    let mut conn = cluster.connect(db).unwrap();
    diesel::select(sql::<BigInt>(&format!("(SELECT count(*) FROM {table})")))
        .get_result(&mut conn)
        .unwrap()
}

#[test]
fn replica_streams_pauses_falls_behind_and_catches_up() {
    let primary = Cluster::start(ClusterOptions::default()).unwrap();
    let replica = primary.create_replica().unwrap();
    assert!(replica.is_in_recovery().unwrap());

    primary
        .execute(
            "postgres",
            "CREATE TABLE items (id bigint PRIMARY KEY); INSERT INTO items VALUES (1)",
        )
        .unwrap();
    replica.catch_up(&primary, WAIT).unwrap();
    assert_eq!(
        count(&replica, "postgres", "items"),
        1,
        "row written on the primary is read on the replica"
    );

    replica.pause_replay().unwrap();
    primary
        .execute(
            "postgres",
            "INSERT INTO items SELECT g FROM generate_series(2, 1000) g",
        )
        .unwrap();
    let target = primary.current_wal_lsn().unwrap();
    // Give streaming every chance to deliver; replay must still not move.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        replica.replay_lsn().unwrap() < target,
        "paused replica must fall behind"
    );
    assert_eq!(count(&replica, "postgres", "items"), 1);

    replica.resume_replay().unwrap();
    replica.wait_for_lsn(target, WAIT).unwrap();
    assert_eq!(
        count(&replica, "postgres", "items"),
        1000,
        "resumed replica catches up"
    );
}

#[test]
fn replica_stop_start_and_promote() {
    let primary = Cluster::start(ClusterOptions::default()).unwrap();
    let replica = primary.create_replica().unwrap();
    primary
        .execute("postgres", "CREATE TABLE t (v int)")
        .unwrap();

    replica.stop().unwrap();
    assert!(!replica.is_running());
    assert!(
        replica.connect("postgres").is_err(),
        "a stopped replica refuses connections"
    );
    primary
        .execute("postgres", "INSERT INTO t VALUES (1), (2)")
        .unwrap();
    replica.start_again().unwrap();
    replica.catch_up(&primary, WAIT).unwrap();
    assert_eq!(
        count(&replica, "postgres", "t"),
        2,
        "a restarted replica streams what it missed"
    );

    replica.promote().unwrap();
    assert!(!replica.is_in_recovery().unwrap());
    replica
        .execute("postgres", "INSERT INTO t VALUES (3)")
        .unwrap();
    assert_eq!(count(&replica, "postgres", "t"), 3);
    assert_eq!(
        count(&primary, "postgres", "t"),
        2,
        "the promoted replica has its own timeline"
    );
}

#[test]
fn committed_rows_survive_a_crash_and_restart() {
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();
    cluster
        .execute(
            "postgres",
            "CREATE TABLE ledger (id int); INSERT INTO ledger SELECT generate_series(1, 500)",
        )
        .unwrap();
    let pid = cluster.postmaster_pid().unwrap();
    cluster.crash().unwrap();
    // pg_ctl returns once postmaster.pid is gone; the process itself may take a moment more.
    assert!(
        exits_within(pid, Duration::from_secs(5)),
        "immediate stop ends the postmaster"
    );
    cluster.start_again().unwrap();
    assert_eq!(count(&cluster, "postgres", "ledger"), 500);
    assert!(
        cluster
            .log_tail(200)
            .contains("database system was interrupted"),
        "the restart ran crash recovery:\n{}",
        cluster.log_tail(20)
    );

    cluster.restart().unwrap();
    assert_eq!(count(&cluster, "postgres", "ledger"), 500);
}

#[test]
fn killing_a_backend_resets_sessions_and_recovers() {
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();
    cluster
        .execute(
            "postgres",
            "CREATE TABLE k (v int); INSERT INTO k VALUES (7)",
        )
        .unwrap();
    let mut victim = cluster.connect("postgres").unwrap();
    let pid: i32 = diesel::select(sql::<diesel::sql_types::Integer>("pg_backend_pid()"))
        .get_result(&mut victim)
        .unwrap();
    cluster.kill_backend(pid).unwrap();
    let err = diesel::select(sql::<diesel::sql_types::Integer>("1"))
        .get_result::<i32>(&mut victim)
        .unwrap_err();
    assert!(!err.to_string().is_empty());
    // The postmaster ends every other backend and runs crash recovery; until its log says it
    // is done, a new session may still be cut off by the reset.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let log = cluster.log_tail(200);
        let reset = log.rfind("all server processes terminated; reinitializing");
        if reset
            .is_some_and(|at| log[at..].contains("database system is ready to accept connections"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the postmaster did not reinitialize after the kill:\n{}",
            cluster.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // New sessions work again.
    let mut tries = 0;
    let value = loop {
        match cluster.query_text("postgres", "(SELECT v FROM k)") {
            Ok(v) => break v,
            Err(_) if tries < 300 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("server did not recover: {e}"),
        }
    };
    assert_eq!(value.as_deref(), Some("7"));

    let mut other = cluster.connect("postgres").unwrap();
    let other_pid: i32 = diesel::select(sql::<diesel::sql_types::Integer>("pg_backend_pid()"))
        .get_result(&mut other)
        .unwrap();
    assert!(cluster.terminate_backend(other_pid).unwrap());
}

#[test]
fn archiving_to_a_local_directory_keeps_finished_segments() {
    let cluster = Cluster::start(ClusterOptions::default().archive(Archive::LocalDir)).unwrap();
    let lsn: Lsn = cluster.current_wal_lsn().unwrap();
    let segment = cluster
        .query_text("postgres", &format!("pg_walfile_name('{lsn}')"))
        .unwrap()
        .unwrap();
    cluster
        .execute("postgres", "SELECT pg_switch_wal()")
        .unwrap();
    let archived = cluster.archive_dir().join(&segment);
    let mut waited = 0;
    while !archived.exists() && waited < 1500 {
        std::thread::sleep(Duration::from_millis(20));
        waited += 1;
    }
    assert!(
        archived.exists(),
        "segment {segment} archived into {}",
        cluster.archive_dir().display()
    );
    assert_eq!(
        std::fs::metadata(&archived).unwrap().len(),
        16 * 1024 * 1024
    );
    assert!(
        !cluster
            .archive_dir()
            .join(format!("{segment}.partial"))
            .exists(),
        "no partial copy is left"
    );
}

#[test]
fn settings_and_preloaded_libraries_are_applied() {
    let cluster = Cluster::start(
        ClusterOptions::default()
            .wal_level(pgops_testkit::WalLevel::Logical)
            .preload("pg_stat_statements")
            .setting("work_mem", "7MB")
            .setting("application_name", "it's quoted"),
    )
    .unwrap();
    let show = |name: &str| {
        cluster
            .query_text("postgres", &format!("current_setting('{name}')"))
            .unwrap()
            .unwrap()
    };
    assert_eq!(show("work_mem"), "7MB");
    assert_eq!(show("wal_level"), "logical");
    assert_eq!(show("application_name"), "it's quoted");
    assert_eq!(show("shared_preload_libraries"), "pg_stat_statements");
    assert_eq!(show("port"), cluster.port().to_string());
    assert_eq!(
        show("unix_socket_directories"),
        cluster.socket_dir().display().to_string()
    );
    assert!(
        cluster
            .socket_dir()
            .join(format!(".s.PGSQL.{}", cluster.port()))
            .exists()
    );
}

#[test]
fn server_runs_as_an_unprivileged_user_even_under_root() {
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();
    let pid = cluster.postmaster_pid().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let uid: u32 = uid_line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_ne!(uid, 0, "PostgreSQL must never run as root");
    if nix::unistd::Uid::effective().is_root() {
        let expected = std::env::var("PGOPS_PG_USER").unwrap_or_else(|_| "postgres".into());
        let user = nix::unistd::User::from_uid(uid.into()).unwrap().unwrap();
        assert_eq!(user.name, expected);
    }
}

fn seed_template(url: &str) -> InitResult {
    use diesel::{Connection, connection::SimpleConnection};
    let mut conn = diesel::PgConnection::establish(url)?;
    conn.batch_execute(
        "CREATE TABLE fixture (id int); INSERT INTO fixture SELECT generate_series(1, 42)",
    )?;
    Ok(())
}

static FIXTURE: Template = Template::new("testkit_fixture", seed_template);

#[test]
fn template_databases_are_cloned_per_test_and_independent() {
    let a = FIXTURE.database().unwrap();
    let b = FIXTURE.database().unwrap();
    assert_ne!(a.name(), b.name());
    let cluster = a.cluster();
    assert_eq!(count(cluster, a.name(), "fixture"), 42);
    cluster.execute(a.name(), "DELETE FROM fixture").unwrap();
    assert_eq!(count(cluster, a.name(), "fixture"), 0);
    assert_eq!(
        count(cluster, b.name(), "fixture"),
        42,
        "clones do not share data"
    );

    let name = a.name().to_owned();
    drop(a);
    let exists = cluster
        .query_text(
            "postgres",
            &format!("EXISTS (SELECT FROM pg_database WHERE datname = '{name}')"),
        )
        .unwrap();
    assert_eq!(
        exists.as_deref(),
        Some("false"),
        "a dropped TestDatabase is removed"
    );

    let empty = TestDatabase::empty().unwrap();
    let tables = cluster
        .query_text(
            empty.name(),
            "(SELECT count(*) FROM pg_tables WHERE schemaname = 'public')",
        )
        .unwrap();
    assert_eq!(tables.as_deref(), Some("0"));
}

#[test]
fn a_failing_template_init_is_reported_with_its_name() {
    fn broken(_url: &str) -> InitResult {
        Err("schema file missing".into())
    }
    static BROKEN: Template = Template::new("testkit_broken", broken);
    let err = BROKEN.database().unwrap_err().to_string();
    assert!(
        err.contains("testkit_broken") && err.contains("schema file missing"),
        "{err}"
    );
}

/// Whether the process is gone (or a zombie) within `timeout`.
fn exits_within(pid: i32, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while pid_alive(pid) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Whether a process exists and is not a zombie waiting for its parent.
fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

#[test]
fn a_kept_cluster_keeps_its_data_and_its_replica_across_owners() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::Builder::new()
        .prefix("pgops-kept-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (primary_dir, replica_dir) = (tmp.path().join("primary"), tmp.path().join("replica"));
    let data_dir;
    {
        let primary = Cluster::start(ClusterOptions::default().keep_in(&primary_dir)).unwrap();
        let replica = primary
            .create_replica_with(ClusterOptions::default().keep_in(&replica_dir))
            .unwrap();
        primary
            .execute(
                "postgres",
                "CREATE TABLE kept (id int); INSERT INTO kept VALUES (1), (2)",
            )
            .unwrap();
        replica.catch_up(&primary, WAIT).unwrap();
        data_dir = primary.data_dir();
        assert_eq!(primary.root(), primary_dir.as_path());
        // Dropped: stopped, not removed.
    }
    assert!(data_dir.join("PG_VERSION").exists(), "the data stays");
    assert!(
        !data_dir.join("postmaster.pid").exists(),
        "the server stopped"
    );
    assert!(
        !Cluster::stop_left_over(&primary_dir).unwrap(),
        "nothing left running"
    );

    // An owner that died half-way: its settings not yet included, a half-made data directory.
    let conf = data_dir.join("postgresql.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, text.replace("include 'pgops.conf'", "")).unwrap();
    std::fs::create_dir_all(tmp.path().join("third").join("data.partial").join("base")).unwrap();

    let primary = Cluster::start(ClusterOptions::default().keep_in(&primary_dir)).unwrap();
    assert_eq!(
        count(&primary, "postgres", "kept"),
        2,
        "on the kit's port again"
    );
    let replica = primary
        .create_replica_with(ClusterOptions::default().keep_in(&replica_dir))
        .unwrap();
    primary
        .execute("postgres", "INSERT INTO kept VALUES (3)")
        .unwrap();
    replica.catch_up(&primary, WAIT).unwrap();
    assert_eq!(
        count(&replica, "postgres", "kept"),
        3,
        "the old replica streams again"
    );
    assert!(replica.is_in_recovery().unwrap());
    let third =
        Cluster::start(ClusterOptions::default().keep_in(tmp.path().join("third"))).unwrap();
    assert!(
        !third.root().join("data.partial").exists(),
        "the half-made directory is replaced"
    );
    assert_eq!(
        third.query_text("postgres", "1").unwrap().as_deref(),
        Some("1")
    );
}

#[test]
fn a_kept_cluster_refuses_another_versions_data_and_a_busy_port() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::Builder::new()
        .prefix("pgops-kept-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tmp.path().join("old");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data").join("PG_VERSION"), "9.6\n").unwrap();
    let err = Cluster::start(ClusterOptions::default().keep_in(&dir)).unwrap_err();
    assert!(
        matches!(&err, pgops_testkit::Error::VersionMismatch { found, .. } if found == "9.6"),
        "{err}"
    );
    assert!(err.to_string().contains("PGOPS_PG_BINDIR"), "{err}");

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let err = Cluster::start(
        ClusterOptions::default()
            .keep_in(tmp.path().join("new"))
            .port(port),
    )
    .unwrap_err();
    assert!(
        matches!(err, pgops_testkit::Error::PortBusy { port: p } if p == port),
        "{err}"
    );
}
