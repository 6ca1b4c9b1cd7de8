//! Backups across failovers, on a real Patroni cluster whose three nodes archive through
//! `pgops wal push` into one repository, and are backed up through the cluster's libpq
//! multi-host URL: point-in-time restores to every batch boundary on either side of a
//! switchover and a kill -9 failover, backups of the new primary and of a replica, a replica
//! rebuilt from the repository alone, a gap named by `verify` and refused by `restore`,
//! retention that keeps every timeline's history, a target on an abandoned timeline, and two
//! nodes promoted at once archiving the same segment name (a split brain).
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    path::Path,
    process::Output,
    time::{Duration, Instant},
};

use common::{batches_in, both, ok, pgops, pgops_bin, q, recover, refused_restore, restored};
use diesel::{Connection, PgConnection, RunQueryDsl, connection::SimpleConnection};
use pgops_testkit::{HaCluster, HaOptions};

fn text(url: &str, expression: &str) -> String {
    #[derive(diesel::QueryableByName)]
    struct Value {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        v: Option<String>,
    }
    let mut conn = PgConnection::establish(url).unwrap();
    diesel::sql_query(format!("SELECT ({expression})::text AS v"))
        .get_result::<Value>(&mut conn)
        .unwrap()
        .v
        .unwrap_or_default()
}

fn execute(url: &str, sql: &str) {
    PgConnection::establish(url)
        .unwrap()
        .batch_execute(sql)
        .unwrap();
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn archived(repo: &Path, name: &str) -> bool {
    repo.join(format!("wal/{name}.sha256.json")).exists()
}

/// Finishes the primary's current segment and waits until it is archived.
fn archive_all(url: &str, repo: &Path) {
    let last = text(url, "pg_walfile_name(pg_switch_wal())");
    wait_for(
        &format!("{last} to be archived"),
        Duration::from_secs(60),
        || archived(repo, &last),
    );
}

/// Commits batch `k` on the primary; returns the moment after it (RFC 3339, UTC) and the
/// WAL position after it.
fn batch(url: &str, k: i32) -> (String, String) {
    execute(
        url,
        &format!("INSERT INTO batches (batch) SELECT {k} FROM generate_series(1, 50)"),
    );
    let time = text(
        url,
        "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    let lsn = text(url, "pg_current_wal_lsn()");
    std::thread::sleep(Duration::from_millis(300));
    (time, lsn)
}

/// The repository's archive gauges as `pgops health serve --repo` exports them, measured
/// against the primary the URL finds: name -> value.
fn archive_gauges(repo: &Path, url: Option<&str>) -> std::collections::BTreeMap<String, f64> {
    let store = pgops_backup::repo::open(
        &format!("file://{}", repo.display()),
        pgops_backup::repo::Access::Existing,
    )
    .unwrap();
    let url = url.map(|u| pgops_pg::DatabaseUrl::parse(u).unwrap());
    let families = pgops::repository_metrics::archive_families(&*store, url.as_ref()).unwrap();
    let mut text = String::new();
    pgops_health::text::render(&families, &mut text);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.split('{').next()?.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn backups_and_restores_follow_the_cluster_across_switchovers_failovers_and_split_brain() {
    let (scratch, repo) = common::shared_dir("pgops-ha-backup");
    let base = scratch.0.clone();
    let command = format!(
        "{} wal push --repo file://{} %p",
        pgops_bin().display(),
        repo.display()
    );
    let ha = HaCluster::start(
        HaOptions::default()
            .synchronous_mode(true)
            .archive_command(command),
    )
    .unwrap();
    let url = ha.multi_host_url("postgres");
    execute(
        &url,
        "CREATE TABLE batches (batch int, at timestamptz DEFAULT clock_timestamp())",
    );

    // A physical backup through the multi-host URL goes to the primary, and says which.
    let first_leader = ha.leader().unwrap().unwrap().name;
    let first: serde_json::Value = serde_json::from_str(&ok(&pgops(
        &["backup", "create", "--kind", "physical", "--json"],
        &repo,
        &url,
    )))
    .unwrap();
    let first_id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(
        first["server"].as_str().unwrap(),
        format!("127.0.0.1:{}", ha.node(&first_leader).unwrap().pg_port()),
        "the backup names the member it read from"
    );
    assert_eq!(first["from_standby"], false);

    // Batches 1-2 on timeline 1, a switchover, 3-4 on timeline 2, a kill -9 failover, 5-6
    // on timeline 3.
    let mut after = vec![batch(&url, 1), batch(&url, 2)];
    // In synchronous mode only the synchronous standby may take over.
    let second_leader = ha
        .wait_for_sync_standby(Duration::from_secs(60))
        .unwrap()
        .name;
    ha.switchover(&second_leader).unwrap();
    after.push(batch(&url, 3));
    after.push(batch(&url, 4));
    // Everything the old primary finished is archived before it dies.
    archive_all(&url, &repo);
    ha.wait_for_sync_standby(Duration::from_secs(60)).unwrap();
    ha.kill_node(&second_leader).unwrap();
    let third_leader = ha
        .wait_for_leader(Duration::from_secs(90), Some(&second_leader))
        .unwrap()
        .name;
    ha.start_node(&second_leader).unwrap();
    ha.rejoin(&second_leader).unwrap();
    after.push(batch(&url, 5));
    after.push(batch(&url, 6));
    // A restore point through the multi-host URL lands on the primary.
    let point = ok(&pgops(&["backup", "restore-point", "after_6"], &repo, &url));
    assert!(point.contains("restore point after_6 at"), "{point}");
    // Recovery knows it passed a time only at a later commit: the service goes on writing.
    execute(&url, "CREATE TABLE later_traffic (x int)");
    archive_all(&url, &repo);
    assert_eq!(
        text(&url, "substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"),
        "00000003"
    );
    for history in ["00000002.history", "00000003.history"] {
        wait_for(history, Duration::from_secs(30), || {
            archived(&repo, history)
        });
    }

    // The health endpoint's view: the archive is on timeline 3 and continuous up to the
    // segment before the one the primary is writing.
    let gauges = archive_gauges(&repo, Some(&url));
    assert_eq!(gauges["pgops_backup_archive_timeline"], 3.0, "{gauges:?}");
    assert_eq!(gauges["pgops_backup_archive_continuous"], 1.0, "{gauges:?}");
    assert_eq!(gauges["pgops_backup_archive_conflicts"], 0.0, "{gauges:?}");

    // verify follows the timelines from the backup's start.
    let verified = ok(&pgops(&["backup", "verify", &first_id], &repo, &url));
    assert!(
        verified.contains(", ok")
            && verified.contains("timeline 3 (from timeline 2 at")
            && verified.contains("history archived"),
        "{verified}"
    );

    // Every batch boundary, by time and by LSN, on either side of each failover: exactly
    // the batches before it.
    let boundaries: Vec<(&str, &str)> = after
        .iter()
        .map(|(time, lsn)| (time.as_str(), lsn.as_str()))
        .collect();
    common::recovers_every_boundary(&repo, &url, &boundaries);
    assert_eq!(
        recover(&repo, &url, &["--target-name", "after_6"]),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(recover(&repo, &url, &["--latest"]), [1, 2, 3, 4, 5, 6]);

    // A segment the old primary archived right before it died goes missing: verify names it
    // with the WAL range lost, and a restore past it is refused before anything is written.
    // The last segment of timeline 2 that recovery reads: the one before timeline 3's first
    // (a later timeline-2 segment the old primary may have archived belongs to no history).
    let victim = {
        let segments: Vec<String> = std::fs::read_dir(repo.join("wal"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter_map(|n| n.strip_suffix(".sha256.json").map(str::to_owned))
            .filter(|n| n.len() == 24)
            .collect();
        let number = |n: &str| u64::from_str_radix(&n[8..], 16).unwrap();
        let three = segments
            .iter()
            .filter(|n| n.starts_with("00000003"))
            .map(|n| number(n))
            .min()
            .unwrap();
        segments
            .iter()
            .filter(|n| n.starts_with("00000002") && number(n) < three)
            .max()
            .unwrap()
            .clone()
    };
    let hidden = repo.join(format!("wal/{victim}.sha256.json.hidden"));
    std::fs::rename(repo.join(format!("wal/{victim}.sha256.json")), &hidden).unwrap();
    let out = pgops(&["backup", "verify", &first_id], &repo, &url);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let said = both(&out);
    assert!(
        said.contains(&format!(
            "on timeline 2 cannot be recovered: {victim} is missing"
        )),
        "{said}"
    );
    let gauges = archive_gauges(&repo, Some(&url));
    assert_eq!(gauges["pgops_backup_archive_continuous"], 0.0, "{gauges:?}");
    assert_eq!(
        gauges["pgops_backup_archive_missing_segments"], 1.0,
        "{gauges:?}"
    );
    let said = refused_restore(&base, &repo, &url, &["--latest"]);
    assert!(
        said.contains(&victim) && said.contains("nothing was written"),
        "{said}"
    );
    let dir = base.join("before-the-gap");
    // A target before the gap still restores.
    let out = pgops(
        &[
            "backup",
            "restore",
            "--to-dir",
            dir.to_str().unwrap(),
            "--target-lsn",
            &after[1].1,
        ],
        &repo,
        &url,
    );
    ok(&out);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::rename(&hidden, repo.join(format!("wal/{victim}.sha256.json"))).unwrap();

    // Backups of the new primary and of a replica after the failover verify and restore.
    let from_primary: serde_json::Value = serde_json::from_str(&ok(&pgops(
        &["backup", "create", "--kind", "physical", "--json"],
        &repo,
        &url,
    )))
    .unwrap();
    assert_eq!(
        from_primary["server"].as_str().unwrap(),
        format!("127.0.0.1:{}", ha.node(&third_leader).unwrap().pg_port())
    );
    assert_eq!(from_primary["wal"]["timeline"], 3);
    let from_standby: serde_json::Value = serde_json::from_str(&ok(&pgops(
        &[
            "backup", "create", "--kind", "physical", "--from", "standby", "--json",
        ],
        &repo,
        &url,
    )))
    .unwrap();
    assert_eq!(from_standby["from_standby"], true);
    assert_eq!(from_standby["wal"]["timeline"], 3);
    archive_all(&url, &repo);
    for backup in [&from_primary, &from_standby] {
        let id = backup["id"].as_str().unwrap();
        ok(&pgops(&["backup", "verify", id], &repo, &url));
        assert_eq!(
            recover(&repo, &url, &[id, "--latest"]),
            [1, 2, 3, 4, 5, 6],
            "restoring {id}"
        );
    }

    // A replica rebuilt from the repository alone follows the primary.
    let replica = restored(&repo, &url, &["--standby", "--primary-conninfo", &url]);
    assert_eq!(q(&replica, "pg_is_in_recovery()::text"), "true");
    batch(&url, 7);
    wait_for(
        "the rebuilt replica to replay batch 7",
        Duration::from_secs(60),
        || batches_in(&replica).contains(&7),
    );
    assert_eq!(
        q(&replica, "(SELECT status FROM pg_stat_wal_receiver)"),
        "streaming",
        "{}",
        replica.log_tail(20)
    );
    drop(replica);

    // Retention keeps every history file and the WAL of every timeline the kept backups need.
    let pruned = ok(&pgops(
        &["backup", "prune", "--keep-last", "2"],
        &repo,
        &url,
    ));
    assert!(
        pruned.contains(&first_id) && pruned.contains("wal/000000010"),
        "{pruned}"
    );
    for history in ["00000002.history", "00000003.history"] {
        assert!(archived(&repo, history), "{history} was pruned");
    }
    assert!(
        !archived(&repo, &victim),
        "WAL no kept backup needs is pruned"
    );
    ok(&pgops(&["wal", "check"], &repo, &url));
    for backup in [&from_primary, &from_standby] {
        ok(&pgops(
            &["backup", "verify", backup["id"].as_str().unwrap()],
            &repo,
            &url,
        ));
    }

    // A split brain: Patroni paused, both replicas promoted by hand. Both begin timeline 4
    // and archive a segment of the same name with different content: the second is refused
    // and recorded, never overwritten.
    ha.pause(true).unwrap();
    let replicas: Vec<String> = ha
        .nodes()
        .iter()
        .map(|n| n.name().to_owned())
        .filter(|n| *n != third_leader)
        .collect();
    for name in &replicas {
        ha.promote_directly(name).unwrap();
    }
    let mut names = Vec::new();
    for name in &replicas {
        let node_url = ha.node(name).unwrap().url("postgres");
        execute(
            &node_url,
            &format!(
                "INSERT INTO batches (batch) SELECT 100 FROM generate_series(1, {})",
                10 + names.len()
            ),
        );
        names.push(text(&node_url, "pg_walfile_name(pg_switch_wal())"));
    }
    assert_eq!(
        names[0], names[1],
        "both promoted nodes finished the same segment name"
    );
    assert!(names[0].starts_with("00000004"), "{names:?}");
    wait_for(
        "the segment to be archived by one of them",
        Duration::from_secs(60),
        || archived(&repo, &names[0]),
    );
    // Whichever archiver got there first won. The other may be stuck on its own history
    // file (refused too when the promotions stopped at different points), so push each
    // node's copy as its archive_command would: one is already there, the other refused.
    let pushed: Vec<Output> = replicas
        .iter()
        .map(|name| {
            let path = ha
                .node(name)
                .unwrap()
                .data_dir()
                .join("pg_wal")
                .join(&names[0]);
            pgops(&["wal", "push", path.to_str().unwrap()], &repo, &url)
        })
        .collect();
    let codes: Vec<Option<i32>> = pushed.iter().map(|o| o.status.code()).collect();
    assert!(
        codes.contains(&Some(0)) && codes.contains(&Some(1)),
        "{codes:?}: {}",
        pushed.iter().map(both).collect::<String>()
    );
    let refused = pushed.iter().find(|o| o.status.code() == Some(1)).unwrap();
    assert!(
        both(refused).contains("already archived with different content")
            && both(refused).contains("split brain"),
        "{}",
        both(refused)
    );
    let out = pgops(&["wal", "check"], &repo, &url);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        both(&out).contains(&format!("refused {}", names[0])) && both(&out).contains("split brain"),
        "{}",
        both(&out)
    );
    let gauges = archive_gauges(&repo, None);
    assert!(
        gauges["pgops_backup_archive_conflicts"] >= 1.0,
        "{gauges:?}"
    );
    assert_eq!(gauges["pgops_backup_archive_timeline"], 4.0, "{gauges:?}");

    // Meanwhile the old leader goes on writing on timeline 3, past where timeline 4 began:
    // an abandoned branch. A target that lies only there is refused; named, it restores.
    // Its commits must not wait for a synchronous standby: Patroni, even paused, may have
    // named one of the nodes just promoted (when its loop ran between the promotions).
    let leader_url = ha.node(&third_leader).unwrap().url("postgres");
    let writes = format!("{leader_url}?options=-c%20synchronous_commit%3Dlocal");
    text(&writes, "pg_switch_wal()");
    let (_, abandoned_lsn) = batch(&writes, 8);
    let last = text(&writes, "pg_walfile_name(pg_switch_wal())");
    wait_for(
        "the abandoned branch's segment",
        Duration::from_secs(60),
        || archived(&repo, &last),
    );
    let said = refused_restore(&base, &repo, &leader_url, &["--target-lsn", &abandoned_lsn]);
    assert!(
        said.contains("lies only on timeline 3") && said.contains("--target-timeline 3"),
        "{said}"
    );
    assert_eq!(
        recover(
            &repo,
            &leader_url,
            &["--target-lsn", &abandoned_lsn, "--target-timeline", "3"]
        ),
        [1, 2, 3, 4, 5, 6, 7, 8]
    );
}
