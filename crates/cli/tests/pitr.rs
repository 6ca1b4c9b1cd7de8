//! Point-in-time recovery end to end: a server archiving through `pgops wal push`, a physical
//! backup, batches committed over time, then restores to a time, an LSN and a restore point,
//! each started as a real server that must hold exactly the batches before its target.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::{Base, ok, pgops, pgops_bin, q, recover, restored, wal_object};
use pgops_testkit::{Archive, Cluster, ClusterOptions};

/// A primary archiving through `pgops wal push` into `repo`, under a directory removed on
/// drop. The server (as postgres) archives into the repository and the tests (perhaps as
/// root) store base backups in it: both may write.
struct Archiving {
    _base: Base,
    repo: PathBuf,
    primary: Cluster,
    url: String,
}

fn archiving(name: &str) -> Archiving {
    archiving_with(name, ClusterOptions::default())
}

fn archiving_with(name: &str, options: ClusterOptions) -> Archiving {
    let (base, repo) = common::shared_dir(name);
    let command = format!(
        "{} wal push --repo file://{} %p",
        pgops_bin().display(),
        repo.display()
    );
    let primary = Cluster::start(options.archive(Archive::Command(command))).unwrap();
    let url = primary.url("postgres");
    Archiving {
        _base: base,
        repo,
        primary,
        url,
    }
}

/// Switches to a new WAL segment and waits until the one just finished is archived.
fn archive_all(primary: &Cluster, repo: &Path) {
    let last = q(primary, "pg_walfile_name(pg_switch_wal())");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !repo.join(format!("wal/{last}.sha256.json")).exists() {
        assert!(
            Instant::now() < deadline,
            "the last segment was not archived"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn restores_to_a_time_an_lsn_and_a_restore_point_hold_exactly_the_earlier_batches() {
    let Archiving {
        _base,
        repo,
        primary,
        url,
    } = archiving("pgops-pitr");
    primary
        .execute(
            "postgres",
            "CREATE TABLE batches (batch int, at timestamptz DEFAULT clock_timestamp())",
        )
        .unwrap();
    ok(&pgops(
        &["backup", "create", "--kind", "physical"],
        &repo,
        &url,
    ));

    let mut after: Vec<(String, String, String)> = Vec::new();
    for batch in 1..=4 {
        primary
            .execute(
                "postgres",
                &format!("INSERT INTO batches (batch) SELECT {batch} FROM generate_series(1, 100)"),
            )
            .unwrap();
        // The moment after the batch, in each form operators copy: RFC 3339, what `SELECT
        // now()` prints (here in a zone east of UTC), and what server logs print.
        let form = [
            "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            "(SELECT clock_timestamp()::text FROM set_config('TimeZone', 'Asia/Kolkata', false))",
            "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || ' UTC'",
            "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || ' UTC'",
        ][batch - 1];
        let time = q(&primary, form);
        let lsn = q(&primary, "pg_current_wal_lsn()::text");
        let xid = q(
            &primary,
            &format!("(SELECT xmin::text FROM batches WHERE batch = {batch} LIMIT 1)"),
        );
        after.push((time, lsn, xid));
        if batch == 3 {
            ok(&pgops(&["backup", "restore-point", "after_3"], &repo, &url));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    // Archive everything written so far.
    archive_all(&primary, &repo);

    // Every batch boundary, by time and by LSN: exactly the earlier batches each time.
    let boundaries: Vec<(&str, &str)> = after
        .iter()
        .take(3)
        .map(|(time, lsn, _)| (time.as_str(), lsn.as_str()))
        .collect();
    common::recovers_every_boundary(&repo, &url, &boundaries);
    assert_eq!(
        recover(&repo, &url, &["--target-xid", &after[1].2]),
        [1, 2],
        "through batch 2's transaction"
    );
    assert_eq!(
        recover(&repo, &url, &["--target-name", "after_3"]),
        [1, 2, 3],
        "to the restore point"
    );
    assert_eq!(
        recover(&repo, &url, &["--latest"]),
        [1, 2, 3, 4],
        "to the end of the archive"
    );

    // Targets outside what the repository holds are refused with what is available.
    let dir = repo.with_file_name("refused");
    let out = pgops(
        &[
            "backup",
            "restore",
            "--to-dir",
            dir.to_str().unwrap(),
            "--target-time",
            "2001-01-01T00:00:00Z",
        ],
        &repo,
        &url,
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("older than the oldest backup") && stderr.contains("WAL is archived up to"),
        "{stderr}"
    );
    let out = pgops(
        &[
            "backup",
            "restore",
            "--to-dir",
            dir.to_str().unwrap(),
            "--target-time",
            "2999-01-01T00:00:00Z",
        ],
        &repo,
        &url,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("after the newest archived WAL"));
    assert!(
        !dir.exists() || std::fs::read_dir(&dir).unwrap().next().is_none(),
        "nothing laid out"
    );
}

#[test]
fn a_standby_backup_under_writes_verify_names_wal_gaps_and_prune_drops_unneeded_wal() {
    let Archiving {
        _base,
        repo,
        primary,
        url,
    } = archiving("pgops-pitr2");
    let pgbench = primary.binaries().program("pgbench");
    let port = primary.port().to_string();
    let conn = ["-h", "127.0.0.1", "-p", port.as_str(), "-U", "postgres"];
    assert!(
        Command::new(&pgbench)
            .args(conn)
            .args(["-i", "-s", "2", "-q", "postgres"])
            .output()
            .unwrap()
            .status
            .success()
    );
    let replica = primary.create_replica().unwrap();

    // A base backup taken from the standby while pgbench writes on the primary.
    let load = Command::new(&pgbench)
        .args(conn)
        .args(["-n", "-c", "2", "-T", "4", "postgres"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&ok(&pgops(
        &["backup", "create", "--kind", "physical", "--json"],
        &repo,
        &replica.url("postgres"),
    )))
    .unwrap();
    assert_eq!(manifest["from_standby"], true);
    assert!(manifest["wal"]["end_lsn"].as_str().unwrap().contains('/'));
    let first = manifest["id"].as_str().unwrap().to_owned();
    let status = {
        let mut load = load;
        load.wait().unwrap()
    };
    assert!(status.success());
    for _ in 0..3 {
        primary.execute("postgres", "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 0, now())").unwrap();
        q(&primary, "pg_switch_wal()::text");
    }
    archive_all(&primary, &repo);

    // Restored to the end of the archive, the bank balances: every transfer's account
    // update and history row came back together.
    let restored = restored(&repo, &url, &["--latest"]);
    assert_eq!(
        q(
            &restored,
            "((SELECT sum(abalance) FROM pgbench_accounts) = (SELECT sum(delta) FROM pgbench_history))::text"
        ),
        "true"
    );
    drop(restored);

    // Continuity from the backup's start: fine, then a segment goes missing and is named.
    ok(&pgops(&["backup", "verify", &first], &repo, &url));
    let segments: Vec<String> = std::fs::read_dir(repo.join("wal"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24 + ".sha256.json".len() && n.ends_with(".sha256.json"))
        .map(|n| n[..24].to_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let victim = &segments[segments.len() - 2];
    let hidden = repo.join(format!("wal/{victim}.sha256.json.hidden"));
    std::fs::rename(repo.join(format!("wal/{victim}.sha256.json")), &hidden).unwrap();
    let out = pgops(&["backup", "verify", &first], &repo, &url);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "on timeline 1 cannot be recovered: {victim} is missing from the archive"
        )),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::rename(&hidden, repo.join(format!("wal/{victim}.sha256.json"))).unwrap();
    // A flipped byte in a stored segment is named too.
    let stored = wal_object(&repo, victim);
    let key = stored.strip_prefix(&repo).unwrap().display().to_string();
    let original = std::fs::read(&stored).unwrap();
    let mut bytes = original.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&stored, bytes).unwrap();
    let out = pgops(&["backup", "verify", &first], &repo, &url);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{key} is corrupt")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::write(&stored, original).unwrap();

    // A second base backup; keeping only it drops the first and the WAL before it.
    let second: serde_json::Value = serde_json::from_str(&ok(&pgops(
        &["backup", "create", "--kind", "physical", "--json"],
        &repo,
        &url,
    )))
    .unwrap();
    let before = segments.len();
    let pruned = ok(&pgops(
        &["backup", "prune", "--keep-last", "1"],
        &repo,
        &url,
    ));
    assert!(
        pruned.contains(&first) && pruned.contains("wal/"),
        "{pruned}"
    );
    let start = second["wal"]["start_lsn"].as_str().unwrap().to_owned();
    let left = ok(&pgops(&["wal", "check"], &repo, &url));
    assert!(!left.contains("missing"), "{left}");
    assert!(
        std::fs::read_dir(repo.join("wal")).unwrap().count() / 2 < before,
        "WAL was pruned ({start})"
    );
    ok(&pgops(
        &["backup", "verify", second["id"].as_str().unwrap()],
        &repo,
        &url,
    ));
}

#[test]
fn a_drill_restores_into_a_throwaway_server_and_health_reports_it() {
    let Archiving {
        _base,
        repo,
        primary,
        url,
    } = archiving("pgops-drill");
    ok(&pgops(
        &["backup", "create", "--kind", "physical"],
        &repo,
        &url,
    ));
    primary
        .execute(
            "postgres",
            "CREATE TABLE batches AS SELECT 7 AS batch FROM generate_series(1, 100)",
        )
        .unwrap();
    archive_all(&primary, &repo);

    let drill: serde_json::Value = serde_json::from_str(&ok(&pgops(
        &[
            "backup",
            "drill",
            "--probe",
            "SELECT count(*) FROM batches WHERE batch = 7",
            "--json",
        ],
        &repo,
        &url,
    )))
    .unwrap();
    assert_eq!(drill["ok"], true, "{drill}");
    assert_eq!(drill["answer"], "100");
    assert!(drill["rto_seconds"].as_f64().unwrap() > 0.0);
    assert!(std::fs::read_dir(repo.join("drills")).unwrap().count() == 1);

    // The health endpoint reports the newest backup and drill of the repository.
    let repo_url = format!("file://{}", repo.display());
    let metrics =
        common::HealthServer::start(&[], &[("DATABASE_URL", &url), ("PGOPS_REPO", &repo_url)])
            .metrics();
    for family in [
        "pgops_backup_last_success_timestamp_seconds{kind=\"physical\"",
        "pgops_backup_last_drill_timestamp_seconds{",
        "pgops_backup_last_drill_duration_seconds{",
        "pgops_backup_last_drill_success{",
        "pgops_collector_success{collector=\"backup_repository\"",
    ] {
        assert!(metrics.contains(family), "{family} missing from\n{metrics}");
    }
    let success = format!(
        "pgops_backup_last_drill_success{{repository=\"file://{}\"}} 1",
        repo.display()
    );
    assert!(
        metrics.contains(&success),
        "{success} missing from\n{metrics}"
    );
}

#[test]
fn backups_restores_and_drills_work_over_verify_full_tls() {
    let Archiving {
        _base,
        repo,
        primary,
        ..
    } = archiving_with("pgops-tls-backup", ClusterOptions::default().tls(true));
    let url = primary.tls_url("postgres").unwrap();
    primary
        .execute(
            "postgres",
            "CREATE TABLE batches AS SELECT 1 AS batch FROM generate_series(1, 100)",
        )
        .unwrap();
    // pg_dump and pg_restore get sslmode and sslrootcert with the connection string.
    let logical: serde_json::Value =
        serde_json::from_str(&ok(&pgops(&["backup", "create", "--json"], &repo, &url))).unwrap();
    let id = logical["id"].as_str().unwrap();
    assert!(ok(&pgops(&["backup", "verify", id, "--restore"], &repo, &url)).contains("ok"));
    // pg_basebackup too; the restored copy and the drill recover from the archive.
    ok(&pgops(
        &["backup", "create", "--kind", "physical"],
        &repo,
        &url,
    ));
    primary
        .execute(
            "postgres",
            "INSERT INTO batches SELECT 2 FROM generate_series(1, 100)",
        )
        .unwrap();
    archive_all(&primary, &repo);
    let restored = common::restored_with(
        ClusterOptions::default().tls(true),
        &repo,
        &url,
        &["--latest"],
    );
    assert_eq!(common::batches_in(&restored), [1, 2]);
    drop(restored);
    let drill: serde_json::Value = serde_json::from_str(&ok(&pgops(
        &[
            "backup",
            "drill",
            "--probe",
            "SELECT count(*) FROM batches",
            "--json",
        ],
        &repo,
        &url,
    )))
    .unwrap();
    assert_eq!(drill["answer"], "200", "{drill}");

    // A wrong CA and a host name mismatch: refused before pg_dump starts, in libpq's words,
    // exit 2.
    let files = primary.tls().unwrap();
    for (bad, says) in [
        (
            url.replace(
                &files.root_cert.display().to_string(),
                &files.other_root_cert.display().to_string(),
            ),
            "certificate verify failed",
        ),
        (
            url.replace("@localhost:", "@127.0.0.1:"),
            "does not match host name",
        ),
    ] {
        let out = pgops(&["backup", "create"], &repo, &bad);
        assert_eq!(out.status.code(), Some(2), "{}", common::both(&out));
        assert!(common::both(&out).contains(says), "{}", common::both(&out));
    }
}
