//! Every shell block marked as a runbook step (```` ```sh runbook ````) in `docs/runbooks/*.md`
//! runs, in order, one runbook per shell, against a `cargo xtask dev` stack: a primary, a
//! streaming replica, WAL archived into a repository, a physical backup, the health endpoint.
//! Blocks marked ```` ```sh runbook-ha ```` run against a Patroni cluster instead, whose
//! primary's node has just been killed with SIGKILL.
//! A step that exits non-zero fails the test with the runbook's file and line, so no
//! documented command can rot. The variables the runbooks let you set (`: "${NAME:=default}"`)
//! point at the stack and at scratch directories here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use common::{Ports, Stack, psql_value, stack_dir};
use nix::sys::signal::Signal;

/// One marked block: where it starts in its file, and its text.
#[derive(Debug, PartialEq)]
struct Step {
    line: usize,
    script: String,
}

/// The blocks of one Markdown file marked `tag` (`runbook`, `runbook-ha`), in order.
fn steps(markdown: &str, tag: &str) -> Vec<Step> {
    common::blocks(markdown)
        .into_iter()
        .filter(|block| {
            let words: Vec<_> = block.info.split_whitespace().collect();
            words.len() >= 2 && matches!(words[0], "sh" | "bash") && words[1] == tag
        })
        .map(|block| Step {
            line: block.line,
            script: block.text,
        })
        .collect()
}

fn runbook_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .join("docs")
        .join("runbooks")
}

/// Runs one runbook's steps marked `tag` in one `bash`, with the given environment (`PATH`
/// included) and nothing else of ours; returns the output, or panics naming the step that
/// failed.
fn run_runbook(path: &Path, env: &[(String, String)], tag: &str) -> String {
    let markdown = fs::read_to_string(path).unwrap();
    let steps = steps(&markdown, tag);
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(!steps.is_empty(), "{name} has no runbook steps");
    let mut script = String::from("set -euo pipefail\nexec 2>&1\n");
    for step in &steps {
        script.push_str(&format!("echo '::step {name}:{}'\n", step.line));
        script.push_str(&step.script);
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let step = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("::step "))
            .unwrap_or("(before the first step)");
        let tail: Vec<_> = text.lines().rev().take(40).collect();
        let tail: Vec<_> = tail.into_iter().rev().collect();
        panic!(
            "runbook step {step} failed ({}):\n{}",
            out.status,
            tail.join("\n")
        );
    }
    text
}

/// Takes the stack repository's `wal/` from the server's user and waits until archiving a
/// new segment has failed.
fn break_archiving(stack_dir: &Path, primary_url: &str) {
    use diesel::{
        Connection, RunQueryDsl, connection::SimpleConnection, dsl::sql, sql_types::BigInt,
    };
    let wal = stack_dir.join("repo").join("wal");
    nix::unistd::chown(
        &wal,
        Some(nix::unistd::Uid::from_raw(0)),
        Some(nix::unistd::Gid::from_raw(0)),
    )
    .unwrap();
    fs::set_permissions(&wal, fs::Permissions::from_mode(0o755)).unwrap();
    let mut conn = diesel::PgConnection::establish(primary_url).unwrap();
    conn.batch_execute("SELECT txid_current(); SELECT pg_switch_wal();")
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let failed: i64 = diesel::select(sql::<BigInt>("failed_count FROM pg_stat_archiver"))
            .get_result(&mut conn)
            .unwrap();
        if failed > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "archiving never failed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn runbook_blocks_are_found_with_their_line() {
    let md = "# t\n```sh\nnot a step\n```\n\n```sh runbook\necho one\necho two\n```\n```bash runbook\nx\n```\n```sh runbook-ha\ny\n```\n";
    assert_eq!(
        steps(md, "runbook-ha"),
        vec![Step {
            line: 13,
            script: "y\n".into()
        }]
    );
    assert_eq!(
        steps(md, "runbook"),
        vec![
            Step {
                line: 6,
                script: "echo one\necho two\n".into()
            },
            Step {
                line: 10,
                script: "x\n".into()
            },
        ]
    );
}

#[test]
fn every_runbook_step_runs_against_a_dev_stack() {
    let (tmp, dir) = stack_dir();
    let ports = Ports::free();
    let stack = Stack::start(&dir, &ports);

    // Scratch space the server's OS user can write to, as /tmp is.
    let scratch = tmp.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    fs::set_permissions(&scratch, fs::Permissions::from_mode(0o1777)).unwrap();
    let pitr_port = Ports::free().primary;
    let new_password = "Runbook-rotated-7f3a9c";
    let old_password = "Runbook-old-2b81e0";

    // A service role to rotate (created without the statement being tracked), and a server
    // that logs every statement: the rotation must keep the password out of both.
    let primary_url = format!("postgres://postgres@127.0.0.1:{}/pgops_dev", ports.primary);
    {
        use diesel::{Connection, connection::SimpleConnection};
        let mut admin = diesel::PgConnection::establish(&primary_url).unwrap();
        for statement in [
            "SET pg_stat_statements.track_utility = off".to_owned(),
            format!("CREATE ROLE app_runbook LOGIN PASSWORD '{old_password}'"),
            "GRANT CONNECT ON DATABASE pgops_dev TO app_runbook".to_owned(),
            "ALTER SYSTEM SET log_statement = 'all'".to_owned(),
            "SELECT pg_reload_conf()".to_owned(),
        ] {
            admin.batch_execute(&statement).unwrap();
        }
    }

    // A real PgBouncer in front of the stack's primary, for the PgBouncer runbook.
    let bouncer = pgops_testkit::PgBouncer::in_front_of(
        ports.primary,
        pgops_testkit::PgBouncerOptions::new(pgops_testkit::PoolMode::Transaction, 4),
    )
    .unwrap();

    let mut env = common::stack_env(&dir);
    let bindir = pgops_testkit::PgBinaries::discover()
        .unwrap()
        .bindir()
        .to_path_buf();
    let is_root = nix::unistd::Uid::effective().is_root();
    let as_postgres = if is_root {
        "runuser -u postgres --"
    } else {
        ""
    };
    env.extend(
        [
            (
                "PGOPS_METRICS",
                format!("http://127.0.0.1:{}", ports.metrics),
            ),
            ("AS_POSTGRES", as_postgres.to_owned()),
            ("PITR_DIR", scratch.join("pitr").display().to_string()),
            ("PITR_PORT", pitr_port.to_string()),
            ("PITR_LOG", scratch.join("pitr.log").display().to_string()),
            ("PITR_DATABASE", "pgops_dev".to_owned()),
            ("PITR_TARGET", "--target-name=before_cleanup".to_owned()),
            ("PG_BINDIR", bindir.display().to_string()),
            // The stack's `pgops` and the server's programs first.
            (
                "PATH",
                format!(
                    "{}:{}:{}",
                    dir.join("bin").display(),
                    bindir.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            ),
            ("NEW_PASSWORD", new_password.to_owned()),
            ("PGBOUNCER_ADMIN_URL", bouncer.admin_url()),
            ("ROTATE_ROLE", "app_runbook".to_owned()),
            (
                "PG_OS_USER",
                std::env::var("PGOPS_PG_USER").unwrap_or_else(|_| "postgres".to_owned()),
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );

    // An encrypted repository holding one backup under a first key, for the key rotation
    // runbook (its own repository: the stack's stays plaintext).
    let keys_repo = format!("file://{}", scratch.join("encrypted-repo").display());
    let (key_file, recipients) = (
        scratch.join("backup-keys.txt"),
        scratch.join("recipients.txt"),
    );
    let keygen = Command::new("age-keygen")
        .arg("-o")
        .arg(&key_file)
        .output()
        .expect("age-keygen (Debian: age)");
    assert!(keygen.status.success());
    let public = Command::new("age-keygen")
        .arg("-y")
        .arg(&key_file)
        .output()
        .unwrap()
        .stdout;
    fs::write(&recipients, &public).unwrap();
    let database_url = env
        .iter()
        .find(|(k, _)| k == "DATABASE_URL")
        .map(|(_, v)| v.clone())
        .unwrap();
    let first = Command::new(dir.join("bin").join("pgops"))
        .args(["backup", "create", "--repo", &keys_repo])
        .env("DATABASE_URL", &database_url)
        .env("PGOPS_REPO_RECIPIENTS_FILE", &recipients)
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    env.extend(
        [
            ("KEYS_REPO", keys_repo.clone()),
            ("RECIPIENTS_FILE", recipients.display().to_string()),
            ("IDENTITIES_FILE", key_file.display().to_string()),
            (
                "NEW_KEY_FILE",
                scratch.join("backup-key-new.txt").display().to_string(),
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );

    let mut files: Vec<_> = fs::read_dir(runbook_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    let names: Vec<_> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "database-maintenance.md",
        "pgbouncer-clients-waiting.md",
        "pool-exhaustion.md",
        "replica-lag.md",
        "wal-archive-failing.md",
        "restore-to-point-in-time.md",
        "verifying-backups.md",
        "rotating-credentials.md",
        "rotating-backup-keys.md",
        "switchover-and-failover.md",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing: {names:?}"
        );
    }
    let mut outputs = Vec::new();
    for file in &files {
        if is_root && file.ends_with("wal-archive-failing.md") {
            // The failure that runbook diagnoses and fixes: the repository's wal/ taken from
            // the server's user, and a segment that cannot be archived.
            break_archiving(&dir, &primary_url);
        }
        if steps(&fs::read_to_string(file).unwrap(), "runbook").is_empty() {
            continue; // a runbook for the Patroni cluster, below
        }
        outputs.push(run_runbook(file, &env, "runbook"));
    }
    let all = outputs.join("\n");
    if is_root {
        let wal = outputs.last().unwrap();
        assert!(
            wal.contains("Permission denied"),
            "step 2 shows the cause:\n{wal}"
        );
        assert!(wal.contains("back to postgres"), "the fix step ran:\n{wal}");
        assert!(wal.contains("archiving works"), "{wal}");
    }

    // Rotating backup keys: a new key was made, both backups read with both keys, and the old
    // key is kept while a kept backup needs it.
    assert!(all.contains("new public key: age1"), "{all}");
    assert!(all.contains("still need the old key"), "{all}");

    // What the runbooks promise, checked on the stack they ran against.
    // Rotating credentials: the new password works, and appears in no log or statistics.
    let rotated = diesel::Connection::establish(&format!(
        "postgres://app_runbook:{new_password}@127.0.0.1:{}/pgops_dev",
        ports.primary
    ));
    let _: diesel::PgConnection = rotated.expect("the rotated password logs in");
    let old: Result<diesel::PgConnection, _> = diesel::Connection::establish(&format!(
        "postgres://app_runbook:{old_password}@127.0.0.1:{}/pgops_dev",
        ports.primary
    ));
    assert!(old.is_err(), "the old password no longer logs in");
    let server_log = fs::read_to_string(dir.join("primary").join("log").join("postgres.log"))
        .unwrap_or_default();
    assert!(
        !server_log.contains(new_password),
        "the password reached the server log"
    );
    assert_eq!(
        psql_value(
            ports.primary,
            &format!(
                "(SELECT count(*) FROM pg_stat_statements WHERE query LIKE '%{new_password}%')"
            )
        ),
        "0",
        "the password reached pg_stat_statements"
    );
    assert!(
        !all.contains(new_password),
        "a runbook printed the password"
    );
    // Restore to a point in time: the copy was started, checked and removed again.
    assert!(
        all.contains("with recovery to restore point before_cleanup"),
        "{all}"
    );
    assert!(all.contains("recovery: paused"), "{all}");
    assert!(all.contains("pitr copy answers"), "{all}");
    assert!(
        !scratch.join("pitr").exists(),
        "the runbook's clean-up removes the copy"
    );
    // Verifying backups: a restore drill ran and was recorded.
    assert!(all.contains("drill ok"), "{all}");
    // Clients waiting in PgBouncer: the pools were read, and the pool was raised.
    assert!(
        all.contains("cl_waiting") && all.contains("pool_mode"),
        "{all}"
    );
    assert!(
        all.lines()
            .any(|l| l.trim_start().starts_with("default_pool_size") && l.contains("| 30")),
        "{all}"
    );

    // The Patroni runbook, against a Patroni cluster whose primary's node was just killed,
    // with the stack's `pgops` and nothing of the stack's environment.
    let ha = pgops_testkit::HaCluster::start(pgops_testkit::HaOptions::default()).unwrap();
    let old = ha.leader().unwrap().unwrap().name;
    let other = ha.node_other_than(&old);
    ha.kill_node(&old).unwrap();
    let path = env.iter().find(|(k, _)| k == "PATH").unwrap().1.clone();
    let ha_env: Vec<(String, String)> = [
        ("PATH", path),
        ("DATABASE_URL", ha.multi_host_url("postgres")),
        ("PATRONI_CONFIG", other.config().display().to_string()),
        ("OLD_PRIMARY", old.clone()),
        (
            "START_PATRONI",
            ha.start_script(&old).unwrap().display().to_string(),
        ),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .to_vec();
    let ha_file = runbook_dir().join("switchover-and-failover.md");
    let out = run_runbook(&ha_file, &ha_env, "runbook-ha");
    assert!(out.contains("new primary:"), "{out}");
    assert!(
        out.contains(&format!("{old} rejoined as a standby")),
        "{out}"
    );
    assert!(out.contains(&format!("switched over to {old}")), "{out}");
    assert!(out.contains("every member on one timeline"), "{out}");
    // What the runbook promises: the old primary leads again, on timeline 3 (the failover
    // and the switchover back), and every other node streams from it.
    let leader = ha.leader().unwrap().unwrap();
    assert_eq!(leader.name, old);
    assert_eq!(ha.node(&old).unwrap().timeline().unwrap(), 3);
    for node in ha.nodes().iter().filter(|n| n.name() != old) {
        ha.wait_for_replica(node.name(), std::time::Duration::from_secs(60))
            .unwrap();
    }
    drop(ha);

    assert_eq!(stack.stop(Signal::SIGTERM), Some(0));
}
