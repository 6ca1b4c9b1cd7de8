//! `pgops wal push` as a real server's archive_command and `pgops wal fetch` as a
//! restore_command would run it: idempotent pushes, refused overwrites, quiet misses, checked
//! fetches, and an archive that becomes unwritable and recovers with no gap. Every node of a
//! Patroni cluster archiving into one repository, across switchovers, failovers and a split
//! brain, is in `ha_backup.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use common::wal_object;
use pgops_testkit::{Archive, Cluster, ClusterOptions};

fn pgops(args: &[&str], repo: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgops"))
        .arg("wal")
        .args(args)
        .arg("--repo")
        .arg(format!("file://{}", repo.display()))
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A repository the server (running as `postgres` under root) creates itself on first push.
struct Repo(PathBuf);

impl Drop for Repo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

/// A directory for a repository, which the server's user may create it in, and the
/// `archive_command` that pushes into it.
fn repo_and_command() -> (Repo, String) {
    let base = std::env::temp_dir().join(format!(
        "pgops-wal-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir(&base).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
    let repo = base.join("repo");
    let command = format!(
        "{} wal push --repo file://{} %p",
        pgops_testkit::server_can_run(Path::new(env!("CARGO_BIN_EXE_pgops")))
            .unwrap()
            .display(),
        repo.display()
    );
    (Repo(repo), command)
}

fn archiving_cluster() -> (Cluster, Repo) {
    let (repo, command) = repo_and_command();
    let cluster =
        Cluster::start(ClusterOptions::default().archive(Archive::Command(command))).unwrap();
    (cluster, repo)
}

fn archived_count(cluster: &Cluster) -> i64 {
    cluster
        .query_text("postgres", "(SELECT archived_count FROM pg_stat_archiver)")
        .unwrap()
        .unwrap()
        .parse()
        .unwrap()
}

fn failed_count(cluster: &Cluster) -> i64 {
    cluster
        .query_text("postgres", "(SELECT failed_count FROM pg_stat_archiver)")
        .unwrap()
        .unwrap()
        .parse()
        .unwrap()
}

fn switch(cluster: &Cluster) -> String {
    cluster
        .execute(
            "postgres",
            "CREATE TABLE IF NOT EXISTS t (x int); INSERT INTO t VALUES (1)",
        )
        .unwrap();
    cluster
        .query_text("postgres", "pg_walfile_name(pg_switch_wal())")
        .unwrap()
        .unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_server_archives_through_push_and_fetch_returns_the_segment() {
    let (cluster, repo) = archiving_cluster();
    let segment = switch(&cluster);
    wait_for("the segment to be archived", || {
        archived_count(&cluster) >= 1
    });
    let stored = wal_object(&repo.0, &segment);
    assert!(stored.exists());
    let mode = std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("RECOVERYXLOG");
    let out = pgops(&["fetch", &segment, dest.to_str().unwrap()], &repo.0);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), 16 * 1024 * 1024);

    // The same content again (PostgreSQL retrying): fine. Different content: refused.
    let copy = out_dir.path().join(&segment);
    std::fs::copy(&dest, &copy).unwrap();
    assert_eq!(
        pgops(&["push", copy.to_str().unwrap()], &repo.0)
            .status
            .code(),
        Some(0)
    );
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&copy, bytes).unwrap();
    let out = pgops(&["push", copy.to_str().unwrap()], &repo.0);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already archived with different content"),
        "{}",
        text(&out.stderr)
    );

    // A segment the archive does not have: exit 1, not a word.
    let out = pgops(
        &["fetch", "0000000100000000000000FF", dest.to_str().unwrap()],
        &repo.0,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));

    // A corrupted stored segment: named, and nothing handed to PostgreSQL.
    let stored = wal_object(&repo.0, &segment);
    let key = stored.strip_prefix(&repo.0).unwrap().display().to_string();
    let mut bytes = std::fs::read(&stored).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&stored, bytes).unwrap();
    let fresh = out_dir.path().join("fresh");
    let out = pgops(&["fetch", &segment, fresh.to_str().unwrap()], &repo.0);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("{key} is corrupt")),
        "{}",
        text(&out.stderr)
    );
    assert!(!fresh.exists());
}

#[test]
fn an_unwritable_archive_keeps_segments_on_the_server_and_resumes_without_a_gap() {
    let (cluster, repo) = archiving_cluster();
    switch(&cluster);
    wait_for("the first segment", || archived_count(&cluster) >= 1);
    let wal_dir = repo.0.join("wal");
    // The server runs as postgres: a directory it may not write makes every push fail.
    std::fs::set_permissions(&wal_dir, std::fs::Permissions::from_mode(0o500)).unwrap();
    let before = archived_count(&cluster);
    let stuck: Vec<String> = (0..3).map(|_| switch(&cluster)).collect();
    wait_for("failed archive attempts", || failed_count(&cluster) >= 2);
    assert_eq!(
        archived_count(&cluster),
        before,
        "nothing archived while the archive is unwritable"
    );
    let ready = cluster
        .data_dir()
        .join(format!("pg_wal/archive_status/{}.ready", stuck[0]));
    assert!(ready.exists(), "PostgreSQL keeps the segment and retries");

    std::fs::set_permissions(&wal_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    wait_for("archiving to resume", || {
        archived_count(&cluster) >= before + 3
    });
    let out = pgops(&["check"], &repo.0);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(!text(&out.stdout).contains("missing"));
    for segment in &stuck {
        assert!(wal_object(&repo.0, segment).exists(), "{segment}");
    }
}

#[test]
fn setup_prints_the_settings_and_bad_names_are_refused() {
    let repo = tempfile::tempdir().unwrap();
    let out = pgops(&["setup"], repo.path());
    assert_eq!(out.status.code(), Some(0));
    let sql = text(&out.stdout);
    assert!(
        sql.contains("ALTER SYSTEM SET archive_mode = 'on';"),
        "{sql}"
    );
    assert!(sql.contains("wal push --repo ''file://"), "{sql}");
    assert!(sql.contains("restart"), "{sql}");
    assert!(!sql.contains("archive_timeout"), "{sql}");

    // The archive's credentials from a file the server's shell reads, and a bound on how old
    // the newest archived WAL may get on a quiet database.
    let out = pgops(
        &[
            "setup",
            "--env-file",
            "/etc/pgops/archive.env",
            "--archive-timeout",
            "5m",
        ],
        repo.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sql = text(&out.stdout);
    assert!(
        sql.contains("'set -a && . ''/etc/pgops/archive.env'' && set +a && exec /"),
        "{sql}"
    );
    assert!(
        sql.contains("ALTER SYSTEM SET archive_timeout = '300s';"),
        "{sql}"
    );
    assert!(
        sql.contains("restore_command for recovery: set -a && . '/etc/pgops/archive.env'"),
        "{sql}"
    );
    for (flag, value, says) in [
        ("--env-file", "archive.env", "give an absolute path"),
        ("--archive-timeout", "0s", "at least one second"),
    ] {
        let out = pgops(&["setup", flag, value], repo.path());
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    }

    // Bad names are usage errors with the form to use, never a panic (exit 101): a name with
    // multi-byte characters once panicked slicing at byte 24.
    for bad in ["../../etc/passwd", "aÄÄÄÄÄÄÄÄÄÄÄÄ.backup", "ÄÄÄÄÄÄÄÄÄÄÄÄ"]
    {
        let out = pgops(&["fetch", bad, "/tmp/x"], repo.path());
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("is not a WAL file name"),
            "{bad}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn reading_a_repository_that_does_not_exist_is_an_error_and_an_empty_archive_fails_check() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("typo");
    for verb in [
        &["check"][..],
        &["fetch", "000000010000000000000001", "/tmp/x"],
    ] {
        let out = pgops(verb, &missing);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{verb:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("does not exist"),
            "{verb:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(
        !missing.exists(),
        "a read-only command created the repository"
    );
    // An archive that exists but holds no WAL is not healthy.
    let out = pgops(&["check"], parent.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("no WAL segment is archived"));
}

#[test]
fn setup_apply_waits_for_the_server_to_take_the_settings() {
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();
    let repo = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pgops"))
        .args(["wal", "setup", "--apply", "--repo"])
        .arg(format!("file://{}", repo.path().display()))
        .env("DATABASE_URL", cluster.url("postgres"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("applied; restart the server for archive_mode"),
        "{stdout}"
    );
    // The restart it names was read after the reload (archive_mode is pending only once the
    // server has reloaded), and the command is in the server's configuration.
    let command = cluster
        .query_text(
            "postgres",
            "(SELECT setting FROM pg_file_settings WHERE name = 'archive_command')",
        )
        .unwrap()
        .unwrap();
    assert!(
        command.contains(" wal push --repo 'file://") && command.ends_with(" %p"),
        "{command}"
    );
}
