//! `pgops backup` as an operator runs it, against real clusters and a real repository:
//! create, list, verify with a restore, restore, prune; a flipped byte, a crash mid-backup,
//! a backup under write load, and bad input.
#![allow(clippy::unwrap_used)]

use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Output},
    time::Duration,
};

mod common;

use pgops_testkit::{Cluster, ClusterOptions};
use serde_json::Value;

fn pgops(args: &[&str], repo: &Path, url: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgops"))
        .arg("backup")
        .args(args)
        .env("PGOPS_REPO", format!("file://{}", repo.display()))
        .env("DATABASE_URL", url)
        .env_remove("PGOPS_PG_BINDIR")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn list(repo: &Path, url: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(&ok(&pgops(&["list", "--json"], repo, url)))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn create(repo: &Path, url: &str, extra: &[&str]) -> String {
    let mut args = vec!["create", "--json"];
    args.extend_from_slice(extra);
    let manifest: Value = serde_json::from_str(&ok(&pgops(&args, repo, url))).unwrap();
    manifest["id"].as_str().unwrap().to_owned()
}

fn fingerprint(cluster: &Cluster, db: &str) -> String {
    cluster
        .query_text(
            db,
            "(SELECT count(*) || ':' || md5(string_agg(id::text || v, ',' ORDER BY id)) FROM items)
             || '/' || (SELECT count(*) FROM notes)",
        )
        .unwrap()
        .unwrap()
}

fn seeded() -> Cluster {
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();
    cluster.create_database("app").unwrap();
    cluster
        .execute(
            "app",
            "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL);
             INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
             CREATE TABLE notes (id serial PRIMARY KEY, item int REFERENCES items, body text);
             INSERT INTO notes (item, body) SELECT g % 20000 + 1, repeat('note ', 20) FROM generate_series(1, 3000) g;",
        )
        .unwrap();
    cluster
}

#[test]
fn create_list_verify_restore_and_refuse_an_existing_target() {
    let cluster = seeded();
    let repo = tempfile::tempdir().unwrap();
    let url = cluster.url("app");
    let id = create(repo.path(), &url, &[]);

    let backups = list(repo.path(), &url);
    assert_eq!(backups.len(), 1);
    let manifest = &backups[0]["manifest"];
    assert_eq!(manifest["id"], id.as_str());
    assert_eq!(manifest["database"], "app");
    assert_eq!(manifest["dump_format"], "custom");
    let rows: Vec<(String, i64)> = manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_owned(),
                t["rows"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [("items".to_owned(), 20000), ("notes".to_owned(), 3000)]
    );
    assert!(manifest["files"][0]["sha256"].as_str().unwrap().len() == 64);
    assert!(
        manifest["files"][0]["bytes"].as_u64().unwrap()
            < manifest["files"][0]["raw_bytes"].as_u64().unwrap()
    );

    // Files 0600, directories 0700, nothing left in staging.
    let backup_dir = repo.path().join("backups").join(&id);
    assert_eq!(
        std::fs::metadata(&backup_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(backup_dir.join("manifest.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(backup_dir.join("data/dump.zst"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_dir(repo.path().join(".staging"))
            .unwrap()
            .count(),
        0
    );

    let out = pgops(&["verify", &id, "--restore"], repo.path(), &url);
    assert!(
        ok(&out).contains("checksums ok, restored in"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(list(repo.path(), &url)[0]["last_verification"]["ok"], true);

    ok(&pgops(
        &["restore", &id, "--database", "app_copy", "--jobs", "2"],
        repo.path(),
        &url,
    ));
    assert_eq!(
        fingerprint(&cluster, "app_copy"),
        fingerprint(&cluster, "app")
    );

    let out = pgops(
        &["restore", &id, "--database", "app_copy"],
        repo.path(),
        &url,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("database app_copy already exists"),
        "{}",
        text(&out.stderr)
    );
    ok(&pgops(
        &["restore", &id, "--database", "app_copy", "--replace"],
        repo.path(),
        &url,
    ));

    // Directory format with parallel jobs restores the same data.
    let id = create(repo.path(), &url, &["--jobs", "2"]);
    ok(&pgops(
        &["restore", &id, "--database", "app_dir"],
        repo.path(),
        &url,
    ));
    assert_eq!(
        fingerprint(&cluster, "app_dir"),
        fingerprint(&cluster, "app")
    );
}

#[test]
fn a_flipped_byte_fails_verify_and_restore_touches_nothing() {
    let cluster = seeded();
    let repo = tempfile::tempdir().unwrap();
    let url = cluster.url("app");
    let id = create(repo.path(), &url, &[]);
    let data = repo.path().join("backups").join(&id).join("data/dump.zst");
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&data, bytes).unwrap();

    let out = pgops(&["verify", &id], repo.path(), &url);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("data/dump.zst is corrupt"),
        "{}",
        text(&out.stderr)
    );

    let out = pgops(
        &["restore", &id, "--database", "never_created"],
        repo.path(),
        &url,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("data/dump.zst is corrupt"));
    assert_eq!(
        cluster
            .query_text(
                "postgres",
                "(SELECT count(*) FROM pg_database WHERE datname = 'never_created')"
            )
            .unwrap()
            .as_deref(),
        Some("0")
    );
}

#[test]
fn a_backup_that_dies_midway_leaves_no_trace_and_earlier_ones_intact() {
    let cluster = seeded();
    cluster
        .execute("app", "INSERT INTO items SELECT g, repeat(md5(g::text), 20) FROM generate_series(20001, 60000) g")
        .unwrap();
    let repo = tempfile::tempdir().unwrap();
    let url = cluster.url("app");
    let first = create(repo.path(), &url, &[]);
    // The file size limit kills the process (SIGXFSZ) while it writes the dump: like a full disk.
    let out = Command::new("sh")
        .args([
            "-c",
            &format!(
                "ulimit -f 256; exec {} backup create",
                env!("CARGO_BIN_EXE_pgops")
            ),
        ])
        .env("PGOPS_REPO", format!("file://{}", repo.path().display()))
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let backups = list(repo.path(), &url);
    assert_eq!(
        backups.len(),
        1,
        "only the complete backup is listed: {backups:?}"
    );
    assert_eq!(backups[0]["manifest"]["id"], first.as_str());
    ok(&pgops(&["verify", &first], repo.path(), &url));
    // The next backup clears the way and works.
    create(repo.path(), &url, &[]);
    assert_eq!(list(repo.path(), &url).len(), 2);
}

#[test]
fn a_backup_taken_under_writes_restores_consistent() {
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();
    cluster.create_database("bank").unwrap();
    let pgbench = cluster.binaries().program("pgbench");
    let port = cluster.port().to_string();
    let base = ["-h", "127.0.0.1", "-p", port.as_str(), "-U", "postgres"];
    let init = Command::new(&pgbench)
        .args(base)
        .args(["-i", "-s", "2", "-q", "bank"])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", text(&init.stderr));
    let load = Command::new(&pgbench)
        .args(base)
        .args(["-n", "-c", "2", "-T", "6", "bank"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The backup must start while pgbench writes: wait until its transactions land.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cluster
        .query_text("bank", "(SELECT count(*) > 100 FROM pgbench_history)::text")
        .unwrap()
        .as_deref()
        != Some("true")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "pgbench wrote nothing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let repo = tempfile::tempdir().unwrap();
    let url = cluster.url("bank");
    let id = create(repo.path(), &url, &[]);
    let status = {
        let mut load = load;
        load.wait().unwrap()
    };
    assert!(status.success());
    ok(&pgops(
        &["restore", &id, "--database", "bank_restored"],
        repo.path(),
        &url,
    ));
    let invariant = "(SELECT (SELECT sum(abalance) FROM pgbench_accounts) = (SELECT coalesce(sum(delta), 0) FROM pgbench_history)
                      AND (SELECT count(*) FROM pgbench_history) > 0)::text";
    assert_eq!(
        cluster
            .query_text("bank_restored", invariant)
            .unwrap()
            .as_deref(),
        Some("true")
    );
    // And the manifest's counts are the dump's: verify --restore agrees.
    ok(&pgops(&["verify", &id, "--restore"], repo.path(), &url));
}

#[test]
fn prune_keeps_the_newest_and_dry_run_deletes_nothing() {
    let cluster = seeded();
    let repo = tempfile::tempdir().unwrap();
    let url = cluster.url("app");
    let ids: Vec<String> = (0..3).map(|_| create(repo.path(), &url, &[])).collect();
    let out = ok(&pgops(
        &["prune", "--keep-last", "1", "--dry-run"],
        repo.path(),
        &url,
    ));
    assert_eq!(out.matches("  would delete").count(), 2, "{out}");
    assert!(
        out.contains("logical app: keeps 1, would delete 2"),
        "{out}"
    );
    assert_eq!(list(repo.path(), &url).len(), 3);
    ok(&pgops(&["prune", "--keep-last", "1"], repo.path(), &url));
    let left = list(repo.path(), &url);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["manifest"]["id"], ids[2].as_str());
    assert!(!repo.path().join("backups").join(&ids[0]).exists());
    let out = pgops(&["prune"], repo.path(), &url);
    assert_eq!(out.status.code(), Some(2));

    // A policy per kind: each run prunes its own kind and leaves the other's alone.
    let physical: Vec<String> = (0..2)
        .map(|_| create(repo.path(), &url, &["--kind", "physical"]))
        .collect();
    create(repo.path(), &url, &[]);
    let out = ok(&pgops(
        &["prune", "--kind", "physical", "--keep-last", "1"],
        repo.path(),
        &url,
    ));
    assert!(out.contains("physical: keeps 1, deletes 1"), "{out}");
    assert!(!out.contains("logical"), "{out}");
    let ids: Vec<String> = list(repo.path(), &url)
        .iter()
        .map(|b| b["manifest"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3, "two logical and the newest physical: {ids:?}");
    assert!(ids.contains(&physical[1]) && !ids.contains(&physical[0]));
    let out = ok(&pgops(
        &["prune", "--kind", "logical", "--keep-last", "1"],
        repo.path(),
        &url,
    ));
    assert!(out.contains("logical app: keeps 1, deletes 1"), "{out}");
    assert_eq!(list(repo.path(), &url).len(), 2);
}

#[test]
fn the_password_reaches_pg_dump_only_through_its_environment() {
    // Once, key=value strings were split on whitespace: `password='a b'` put part of the
    // password on pg_dump's command line, which every user can read in `ps`.
    let cluster = seeded();
    let real = pgops_testkit::PgBinaries::discover().unwrap();
    let bindir = tempfile::tempdir().unwrap();
    let seen = bindir.path().join("seen");
    std::fs::write(
        bindir.path().join("pg_dump"),
        format!(
            "#!/bin/sh\n\
             tr '\\0' '\\n' < /proc/$$/cmdline >> '{seen}.cmdline'\n\
             tr '\\0' '\\n' < /proc/$$/environ | grep '^PGPASSWORD=' >> '{seen}.environ'\n\
             exec '{}' \"$@\"\n",
            real.program("pg_dump").display(),
            seen = seen.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        bindir.path().join("pg_dump"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let password = r"s3 cr'e\t";
    let port = cluster.port();
    for url in [
        format!(r"host=127.0.0.1 port={port} user=postgres dbname=app password='s3 cr\'e\\t'"),
        format!("postgres://postgres:s3%20cr%27e%5Ct@127.0.0.1:{port}/app"),
        format!(
            "postgresql://127.0.0.1:{port},127.0.0.1:{port}/app?user=postgres&password=s3%20cr%27e%5Ct"
        ),
    ] {
        let repo = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_pgops"))
            .args(["backup", "create"])
            .env("PGOPS_REPO", format!("file://{}", repo.path().display()))
            .env("DATABASE_URL", &url)
            .env("PGOPS_PG_BINDIR", bindir.path())
            .output()
            .unwrap();
        ok(&out);
        assert!(!text(&out.stdout).contains("cr'e"), "{}", text(&out.stdout));
    }
    let cmdlines = std::fs::read_to_string(seen.with_extension("cmdline")).unwrap();
    assert!(cmdlines.contains("--snapshot"), "{cmdlines}");
    for piece in ["s3 cr", "cr'e", r"cr\'e", r"e\t", "%20"] {
        assert!(
            !cmdlines.contains(piece),
            "{piece:?} on the command line:\n{cmdlines}"
        );
    }
    let environs = std::fs::read_to_string(seen.with_extension("environ")).unwrap();
    let expected = format!("PGPASSWORD={password}");
    assert_eq!(
        environs.lines().filter(|l| *l == expected).count(),
        3,
        "{environs}"
    );
}

#[test]
fn read_only_commands_refuse_a_repository_that_does_not_exist() {
    // A typo in a monitoring job once read as an empty, healthy repository (and created it).
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("typo");
    let url = "postgres://nobody@127.0.0.1:1/app";
    for verb in [
        &["list"][..],
        &["verify", "latest"],
        &["prune", "--keep-last", "1", "--dry-run"],
        &["restore", "--to-dir", "/tmp/never"],
    ] {
        let out = pgops(verb, &missing, url);
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
    assert!(!missing.exists());
}

#[test]
fn prune_ranks_each_database_on_its_own() {
    // Measured once: with dumps of two databases taken the same day, --keep-daily 7 kept only
    // the newest dump of the repository and would have deleted the other database's.
    let cluster = seeded();
    cluster.create_database("billing").unwrap();
    let repo = tempfile::tempdir().unwrap();
    let app = cluster.url("app");
    let billing = cluster.url("billing");
    let old_app = create(repo.path(), &app, &[]);
    let billing_id = create(repo.path(), &billing, &[]);
    let new_app = create(repo.path(), &app, &[]);
    let out = ok(&pgops(
        &["prune", "--keep-daily", "7", "--dry-run", "--json"],
        repo.path(),
        &app,
    ));
    let decisions: Vec<Value> = serde_json::from_str(&out).unwrap();
    let deleted: Vec<&str> = decisions
        .iter()
        .filter(|d| d["keep"] == false)
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, [old_app.as_str()], "{out}");
    for kept in [&billing_id, &new_app] {
        assert!(
            decisions
                .iter()
                .any(|d| d["id"] == kept.as_str() && d["keep"] == true),
            "{out}"
        );
    }
}

#[test]
fn bad_input_exits_2_and_never_prints_the_password() {
    let repo = tempfile::tempdir().unwrap();
    let secret_url = "postgres://app:hunter2@127.0.0.1:1/app";
    let out = pgops(&["create"], repo.path(), secret_url);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_pgops"))
        .args(["backup", "list", "--repo", "ftp://backups.example/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("scheme ftp:// is not supported"));

    let out = Command::new(env!("CARGO_BIN_EXE_pgops"))
        .args(["backup", "create"])
        .env("PGOPS_REPO", format!("file://{}", repo.path().display()))
        .env("DATABASE_URL", secret_url)
        .env("PGOPS_PG_BINDIR", "/nonexistent/bin")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("pg_dump not found"),
        "{}",
        text(&out.stderr)
    );

    let out = Command::new(env!("CARGO_BIN_EXE_pgops"))
        .args(["backup", "list"])
        .env_remove("PGOPS_REPO")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--repo"));

    let out = pgops(&["verify", "no-such-backup"], repo.path(), secret_url);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no backup no-such-backup"));
}

/// moto's S3 server on a free loopback port, killed on drop.
fn s3_server() -> pgops_testkit::S3Server {
    pgops_testkit::S3Server::start().unwrap()
}

fn pgops_s3(args: &[&str], endpoint: &str, url: &str) -> Output {
    pgops_s3_in("backup", args, endpoint, url)
}

fn pgops_s3_in(area: &str, args: &[&str], endpoint: &str, url: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgops"))
        .arg(area)
        .args(args)
        .env("PGOPS_REPO", "s3://backups/pgops/app")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "pgops-test")
        .env("AWS_SECRET_ACCESS_KEY", "pgops-test-secret")
        .env("AWS_REGION", "us-east-1")
        .env("DATABASE_URL", url)
        .env_remove("PGOPS_PG_BINDIR")
        .output()
        .unwrap()
}

#[test]
fn an_s3_repository_stores_lists_verifies_and_restores() {
    let cluster = seeded();
    let s3 = s3_server();
    let url = cluster.url("app");
    let marker = format!("PGOPS-S3-MARKER-{}", std::process::id());
    cluster
        .execute(
            "app",
            &format!("INSERT INTO notes (item, body) VALUES (1, '{marker}')"),
        )
        .unwrap();
    let manifest: Value =
        serde_json::from_str(&ok(&pgops_s3(&["create", "--json"], s3.endpoint(), &url))).unwrap();
    let id = manifest["id"].as_str().unwrap().to_owned();
    let listed: Value =
        serde_json::from_str(&ok(&pgops_s3(&["list", "--json"], s3.endpoint(), &url))).unwrap();
    assert_eq!(listed[0]["manifest"]["id"], id.as_str());
    assert!(
        ok(&pgops_s3(
            &["verify", &id, "--restore"],
            s3.endpoint(),
            &url
        ))
        .contains("ok")
    );
    ok(&pgops_s3(
        &["restore", &id, "--database", "from_s3"],
        s3.endpoint(),
        &url,
    ));
    assert_eq!(
        fingerprint(&cluster, "from_s3"),
        fingerprint(&cluster, "app")
    );

    // Two servers pushing one WAL name: the same content is fine, other content is refused
    // (a conditional write, so a race cannot overwrite either) and recorded.
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let name = "000000010000000000000042";
    for (dir, content) in dirs.iter().zip([b"one server".as_slice(), b"another one"]) {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let push = |dir: &tempfile::TempDir| {
        let path = dir.path().join(name);
        pgops_s3_in(
            "wal",
            &["push", path.to_str().unwrap()],
            s3.endpoint(),
            &url,
        )
    };
    ok(&push(&dirs[0]));
    ok(&push(&dirs[0]));
    let out = push(&dirs[1]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("already archived with different content"),
        "{}",
        text(&out.stderr)
    );
    let checked = pgops_s3_in("wal", &["check"], s3.endpoint(), &url);
    assert!(
        text(&checked.stdout).contains(&format!("refused {name}")),
        "{}",
        text(&checked.stdout)
    );
    let fetched = dirs[1].path().join("fetched");
    ok(&pgops_s3_in(
        "wal",
        &["fetch", name, fetched.to_str().unwrap()],
        s3.endpoint(),
        &url,
    ));
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        b"one server",
        "never overwritten"
    );

    // An encrypted repository on S3: a backup and a segment stored as age objects, read back
    // only with the secret key.
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("key.txt");
    assert!(
        Command::new("age-keygen")
            .arg("-o")
            .arg(&key_file)
            .output()
            .unwrap()
            .status
            .success()
    );
    let public = text(
        &Command::new("age-keygen")
            .arg("-y")
            .arg(&key_file)
            .output()
            .unwrap()
            .stdout,
    );
    let encrypted = |args: &[&str], secret: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgops"));
        cmd.args(args)
            .env("PGOPS_REPO", "s3://backups/pgops/encrypted")
            .env("AWS_ENDPOINT_URL", s3.endpoint())
            .env("AWS_ACCESS_KEY_ID", "pgops-test")
            .env("AWS_SECRET_ACCESS_KEY", "pgops-test-secret")
            .env("AWS_REGION", "us-east-1")
            .env("DATABASE_URL", &url)
            .env("PGOPS_REPO_RECIPIENTS", public.trim())
            .env_remove("PGOPS_PG_BINDIR");
        if secret {
            cmd.env("PGOPS_REPO_IDENTITIES_FILE", &key_file);
        }
        cmd.output().unwrap()
    };
    let id = serde_json::from_str::<Value>(&ok(&encrypted(&["backup", "create", "--json"], false)))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(&encrypted(
        &["wal", "push", dirs[0].path().join(name).to_str().unwrap()],
        false,
    ));
    let out = encrypted(&["backup", "restore", &id, "--database", "no_key"], false);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    ok(&encrypted(
        &["backup", "restore", &id, "--database", "from_encrypted_s3"],
        true,
    ));
    assert_eq!(
        fingerprint(&cluster, "from_encrypted_s3"),
        fingerprint(&cluster, "app")
    );
    let back = dirs[0].path().join("decrypted");
    ok(&encrypted(
        &["wal", "fetch", name, back.to_str().unwrap()],
        true,
    ));
    assert_eq!(std::fs::read(&back).unwrap(), b"one server");

    // The bucket: the marker is in the plaintext repository's objects (as stored or
    // decompressed), and in none of the encrypted one's.
    let in_bucket = |prefix: &str| -> Vec<String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let listing = agent
            .get(&format!(
                "{}/backups?list-type=2&prefix={prefix}",
                s3.endpoint()
            ))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let keys: Vec<String> = listing
            .split("<Key>")
            .skip(1)
            .filter_map(|k| k.split("</Key>").next())
            .map(str::to_owned)
            .collect();
        assert!(!keys.is_empty(), "{listing}");
        keys.into_iter()
            .filter(|key| {
                let bytes = agent
                    .get(&format!("{}/backups/{key}", s3.endpoint()))
                    .call()
                    .unwrap()
                    .body_mut()
                    .with_config()
                    .limit(1 << 30)
                    .read_to_vec()
                    .unwrap();
                let inside = |b: &[u8]| b.windows(marker.len()).any(|w| w == marker.as_bytes());
                inside(&bytes)
                    || (bytes.starts_with(&[0x28, 0xB5, 0x2F, 0xFD])
                        && zstd::stream::decode_all(bytes.as_slice()).is_ok_and(|d| inside(&d)))
            })
            .collect()
    };
    assert!(
        !in_bucket("pgops/app/").is_empty(),
        "the search can find it"
    );
    let leaked = in_bucket("pgops/encrypted/");
    assert!(leaked.is_empty(), "readable in {leaked:?}");

    // The store goes away: the backup fails, says why, and prints no secret.
    drop(s3);
    let out = pgops_s3(&["create"], "http://127.0.0.1:1", &url);
    assert_ne!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("pgops-test-secret"), "{stderr}");
}

#[test]
fn health_serve_reports_an_s3_repository_and_stops_cleanly_on_sigterm() {
    // The S3 store once owned a runtime that panicked when dropped inside the server's async
    // shutdown: SIGTERM ended `pgops health serve --repo s3://..` with exit 101.
    use std::io::{BufRead as _, BufReader, Read as _};
    let cluster = seeded();
    let s3 = s3_server();
    let url = cluster.url("app");
    ok(&pgops_s3(&["create"], s3.endpoint(), &url));
    let listen = format!("127.0.0.1:{}", pgops_pg::free_port().unwrap());
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgops"))
        .args([
            "health",
            "serve",
            "--listen",
            &listen,
            "--repo",
            "s3://backups/pgops/app",
        ])
        .env("AWS_ENDPOINT_URL", s3.endpoint())
        .env("AWS_ACCESS_KEY_ID", "pgops-test")
        .env("AWS_SECRET_ACCESS_KEY", "pgops-test-secret")
        .env("AWS_REGION", "us-east-1")
        .env("DATABASE_URL", &url)
        .env_remove("DATABASE_REPLICA_URLS")
        .env_remove("PGOPS_METRICS_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("serving"), "{first}");
    let metrics = common::http_get(&listen, "/metrics", None);
    assert!(
        metrics.contains("pgops_backup_count{repository=\"s3://backups/pgops/app\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pgops_collector_success{collector=\"backup_repository\""),
        "{metrics}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn backups_given_a_pgbouncer_url_say_they_need_a_direct_connection() {
    use pgops_testkit::{PgBouncer, PgBouncerOptions, PoolMode};
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();
    let bouncer = PgBouncer::start(&cluster, PgBouncerOptions::new(PoolMode::Session, 2)).unwrap();
    let repo = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pgops"))
        .args(["backup", "create", "--kind", "physical"])
        .env("PGOPS_REPO", format!("file://{}", repo.path().display()))
        .env("DATABASE_URL", bouncer.url("postgres"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("pg_basebackup needs a direct connection to PostgreSQL")
            && stderr.contains(&format!("127.0.0.1:{}", bouncer.port())),
        "{stderr}"
    );
    assert!(!stderr.contains("pgops-bouncer"), "no password: {stderr}");
    let list = Command::new(env!("CARGO_BIN_EXE_pgops"))
        .args(["backup", "list", "--json"])
        .env("PGOPS_REPO", format!("file://{}", repo.path().display()))
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains("\"id\""),
        "no backup stored: {}",
        String::from_utf8_lossy(&list.stdout)
    );

    // A DATABASE_URL the service marks transaction-pooled is refused for any backup, with the
    // variable that names a direct one; given that, the backup runs.
    let backup = |env: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_pgops"))
            .args(["backup", "create", "--kind", "logical"])
            .env("PGOPS_REPO", format!("file://{}", repo.path().display()))
            .env("DATABASE_URL", bouncer.url("postgres"))
            .env("PGOPS_POOL_POOLER", "transaction")
            .env_remove("PGOPS_BACKUP_DATABASE_URL")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let out = backup(&[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PGOPS_BACKUP_DATABASE_URL"), "{stderr}");
    let out = backup(&[("PGOPS_BACKUP_DATABASE_URL", &cluster.url("postgres"))]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_multi_host_url_backs_up_the_member_with_the_role_asked_for() {
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();
    let repo = tempfile::tempdir().unwrap();
    let dead = pgops_pg::free_port().unwrap();
    // A member that is down, then the primary: the backup goes to the primary and names it.
    let url = format!(
        "postgresql://postgres@127.0.0.1:{dead},127.0.0.1:{}/postgres",
        cluster.port()
    );
    let out = pgops(&["create", "--json"], repo.path(), &url);
    let manifest: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(manifest["server"], format!("127.0.0.1:{}", cluster.port()));
    // No standby among them: exit 2, with what each member said.
    let out = pgops(&["create", "--from", "standby"], repo.path(), &url);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no standby among")
            && stderr.contains(&format!("127.0.0.1:{} is a primary", cluster.port()))
            && stderr.contains(&format!("127.0.0.1:{dead} did not answer")),
        "{stderr}"
    );
    // One host asked for a role it does not have: refused too.
    let out = pgops(
        &["create", "--from", "standby"],
        repo.path(),
        &cluster.url("postgres"),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn a_physical_backup_restores_to_its_own_end_with_nothing_archived() {
    // pg_basebackup streams the WAL the backup needs into the backup itself: a repository
    // without any archived WAL can still restore it to its end.
    let cluster = seeded();
    let repo = tempfile::tempdir().unwrap();
    let url = cluster.url("app");
    let manifest: Value = serde_json::from_str(&ok(&pgops(
        &["create", "--kind", "physical", "--json"],
        repo.path(),
        &url,
    )))
    .unwrap();
    // The streamed WAL (whole 16 MB segments, mostly zeros) is stored compressed.
    let wal = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "data/pg_wal.tar.zst")
        .unwrap_or_else(|| panic!("no compressed WAL archive in {manifest}"));
    assert!(wal["raw_bytes"].as_u64().unwrap() >= 16 << 20, "{wal}");
    assert!(wal["bytes"].as_u64().unwrap() < 4 << 20, "{wal}");
    let restored = Cluster::start_restored(ClusterOptions::default(), |data| {
        // The restored server runs the restore_command as its own OS user: the binary that
        // lays the restore out must be one that user can run (not one under root's home).
        let out = Command::new(
            pgops_testkit::server_can_run(Path::new(env!("CARGO_BIN_EXE_pgops"))).unwrap(),
        )
        .args([
            "backup",
            "restore",
            "--to-dir",
            data.to_str().unwrap(),
            "--latest",
        ])
        .env("PGOPS_REPO", format!("file://{}", repo.path().display()))
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(text(&out.stderr).into())
        }
    })
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while restored
        .query_text("postgres", "pg_is_in_recovery()::text")
        .unwrap()
        .as_deref()
        != Some("false")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            restored.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(fingerprint(&restored, "app"), fingerprint(&cluster, "app"));
}
