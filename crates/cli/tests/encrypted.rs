//! An encrypted repository end to end: a marker string inserted into a table is nowhere in
//! the repository after a logical backup, a physical backup and archiving (while a plaintext
//! repository of the same data holds it, so the search can fail); point-in-time recovery from
//! it recovers exactly; wrong and missing keys, and changed bytes in a WAL segment and in a
//! dump, are refused with nothing restored; keys rotate; and an operator decrypts by hand
//! with Debian's `age`.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use common::{both, ok, pgops_bin, wal_object};
use pgops_testkit::{Archive, Cluster, ClusterOptions};

/// A key pair made by `age-keygen`: the key file (readable by the server's user, which reads
/// WAL with it in restore_command) and its public key.
struct KeyPair {
    file: PathBuf,
    public: String,
}

fn keygen(dir: &Path, name: &str) -> KeyPair {
    let file = dir.join(name);
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&file)
        .output()
        .expect("age-keygen (Debian: age) is needed: `cargo xtask install` puts it there");
    assert!(out.status.success(), "{}", both(&out));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let public = String::from_utf8(
        Command::new("age-keygen")
            .arg("-y")
            .arg(&file)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    KeyPair { file, public }
}

/// `pgops` against `repo` and `url` with the key variables `keys` (and no others).
fn run(args: &[&str], repo: &Path, url: &str, keys: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(pgops_bin());
    cmd.args(args)
        .env("PGOPS_REPO", format!("file://{}", repo.display()))
        .env("DATABASE_URL", url);
    for var in [
        "PGOPS_REPO_RECIPIENTS",
        "PGOPS_REPO_RECIPIENTS_FILE",
        "PGOPS_REPO_IDENTITY",
        "PGOPS_REPO_IDENTITIES_FILE",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in keys {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The batches of `notes` in a restore laid out with `args` and the key variables `keys`,
/// started and recovered.
fn recovered_batches(repo: &Path, url: &str, keys: &[(&str, String)], args: &[&str]) -> String {
    let restored = Cluster::start_restored(ClusterOptions::default(), |data| {
        let mut all = vec!["backup", "restore", "--to-dir", data.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = run(&all, repo, url, keys);
        if out.status.success() {
            Ok(())
        } else {
            Err(both(&out).into())
        }
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::q(&restored, "pg_is_in_recovery()::text") != "false" {
        assert!(Instant::now() < deadline, "{}", restored.log_tail(20));
        std::thread::sleep(Duration::from_millis(100));
    }
    common::q(
        &restored,
        "(SELECT string_agg(DISTINCT batch::text, ',' ORDER BY batch::text) FROM notes)",
    )
}

/// Whether `marker` is in any file under `dir`, as stored or, for zstd files, decompressed.
fn holds(dir: &Path, marker: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap_or_default();
            let inside = |b: &[u8]| b.windows(marker.len()).any(|w| w == marker);
            let plain = bytes.starts_with(&[0x28, 0xB5, 0x2F, 0xFD])
                && zstd::stream::decode_all(bytes.as_slice()).is_ok_and(|d| inside(&d));
            if inside(&bytes) || plain {
                found.push(path);
            }
        }
    }
    found
}

fn switch_and_wait(primary: &Cluster, repo: &Path) {
    let last = primary
        .query_text("postgres", "pg_walfile_name(pg_switch_wal())")
        .unwrap()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !repo.join(format!("wal/{last}.sha256.json")).exists() {
        assert!(
            Instant::now() < deadline,
            "{last} was not archived:\n{}",
            primary.log_tail(15)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn nothing_readable_leaves_for_the_repository_and_it_all_restores_with_the_keys() {
    let (base, repo) = common::shared_dir("pgops-encrypted");
    let (a, b) = (keygen(&base.0, "key-a.txt"), keygen(&base.0, "key-b.txt"));
    let plain_repo = base.0.join("plain");
    std::fs::create_dir(&plain_repo).unwrap();
    std::fs::set_permissions(&plain_repo, std::fs::Permissions::from_mode(0o777)).unwrap();
    // The server archives into both: encrypted for key A, and plaintext (the control).
    let command = |recipient: &str| {
        format!(
            "PGOPS_REPO_RECIPIENTS={recipient} {bin} wal push --repo file://{repo} %p && {bin} wal push --repo file://{plain} %p",
            bin = pgops_bin().display(),
            repo = repo.display(),
            plain = plain_repo.display()
        )
    };
    let primary =
        Cluster::start(ClusterOptions::default().archive(Archive::Command(command(&a.public))))
            .unwrap();
    let url = primary.url("postgres");
    let marker = format!("PGOPS-MARKER-{}-patient-note", std::process::id());
    primary
        .execute(
            "postgres",
            &format!(
                "CREATE TABLE notes (batch int, body text);
                 INSERT INTO notes SELECT 1, '{marker}' || g FROM generate_series(1, 50) g"
            ),
        )
        .unwrap();
    let write_a = [("PGOPS_REPO_RECIPIENTS", a.public.clone())];
    let read_a = [
        ("PGOPS_REPO_RECIPIENTS", a.public.clone()),
        ("PGOPS_REPO_IDENTITIES_FILE", a.file.display().to_string()),
    ];
    // A host that only backs up holds only the public key.
    let logical: serde_json::Value = serde_json::from_str(&ok(&run(
        &["backup", "create", "--json"],
        &repo,
        &url,
        &write_a,
    )))
    .unwrap();
    assert_eq!(
        logical["tables"].as_array().unwrap().len(),
        0,
        "row counts are encrypted"
    );
    ok(&run(
        &["backup", "create", "--kind", "physical"],
        &repo,
        &url,
        &write_a,
    ));
    ok(&run(
        &["backup", "create", "--kind", "physical"],
        &plain_repo,
        &url,
        &[],
    ));
    ok(&run(&["backup", "create"], &plain_repo, &url, &[]));
    primary
        .execute(
            "postgres",
            &format!("INSERT INTO notes SELECT 2, '{marker}' || g FROM generate_series(1, 50) g"),
        )
        .unwrap();
    let lsn = primary
        .query_text("postgres", "pg_current_wal_lsn()::text")
        .unwrap()
        .unwrap();
    primary
        .execute("postgres", "INSERT INTO notes SELECT 3, 'later'")
        .unwrap();
    switch_and_wait(&primary, &repo);

    // The control holds the marker; the encrypted repository nowhere.
    assert!(
        !holds(&plain_repo, marker.as_bytes()).is_empty(),
        "the search can find it"
    );
    let leaked = holds(&repo, marker.as_bytes());
    assert!(leaked.is_empty(), "the marker is readable in {leaked:?}");

    // Mixing is refused: keys on the plaintext repository, none on the encrypted one.
    let out = run(&["backup", "list"], &plain_repo, &url, &write_a);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        both(&out).contains("plaintext repository"),
        "{}",
        both(&out)
    );
    let out = run(&["backup", "create"], &repo, &url, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(both(&out).contains("is encrypted"), "{}", both(&out));

    // Verify with the secret key: checksums, timelines and a restore with row counts.
    let id = logical["id"].as_str().unwrap();
    assert!(
        ok(&run(
            &["backup", "verify", id, "--restore"],
            &repo,
            &url,
            &read_a
        ))
        .contains("ok")
    );
    ok(&run(
        &["backup", "verify", "latest-physical"],
        &repo,
        &url,
        &read_a,
    ));

    // Point-in-time recovery from the encrypted repository: exactly batches 1 and 2.
    assert_eq!(
        recovered_batches(&repo, &url, &read_a, &["--target-lsn", &lsn]),
        "1,2"
    );

    // Wrong key, missing key: exit 2, what is missing named, nothing restored.
    let dir = base.0.join("refused");
    let read_b = [("PGOPS_REPO_IDENTITIES_FILE", b.file.display().to_string())];
    let out = run(
        &[
            "backup",
            "restore",
            "--to-dir",
            dir.to_str().unwrap(),
            "--latest",
        ],
        &repo,
        &url,
        &read_b,
    );
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(
        both(&out).contains(&a.public),
        "names the key it needs: {}",
        both(&out)
    );
    assert!(!dir.exists() || std::fs::read_dir(&dir).unwrap().next().is_none());
    let out = run(
        &["backup", "restore", id, "--database", "from_backup"],
        &repo,
        &url,
        &write_a,
    );
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(
        both(&out).contains("PGOPS_REPO_IDENTITIES_FILE"),
        "{}",
        both(&out)
    );

    // A changed byte in a WAL segment and in a dump: named, refused, nothing written.
    let name = pgops_backup::wal::archived(
        &*pgops_backup::repo::open(
            &format!("file://{}", repo.display()),
            pgops_backup::repo::Access::Existing,
        )
        .unwrap(),
    )
    .unwrap()
    .into_iter()
    .find(|n| n.len() == 24)
    .expect("an archived segment");
    let segment = wal_object(&repo, &name);
    let original = std::fs::read(&segment).unwrap();
    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 1;
    std::fs::write(&segment, &flipped).unwrap();
    let fetched = base.0.join("fetched");
    let out = run(
        &["wal", "fetch", &name, fetched.to_str().unwrap()],
        &repo,
        &url,
        &read_a,
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(both(&out).contains("corrupt"), "{}", both(&out));
    assert!(!fetched.exists());
    std::fs::write(&segment, &original).unwrap();
    let dump = repo.join(format!("backups/{id}/data/dump.zst.age"));
    let original = std::fs::read(&dump).unwrap();
    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 1;
    std::fs::write(&dump, &flipped).unwrap();
    let out = run(
        &["backup", "restore", id, "--database", "tampered"],
        &repo,
        &url,
        &read_a,
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        both(&out).contains("dump.zst.age is corrupt"),
        "{}",
        both(&out)
    );
    assert!(
        common::q(
            &primary,
            "(SELECT count(*) FROM pg_database WHERE datname = 'tampered')"
        ) == "0",
        "nothing restored"
    );
    // Verify records what did not match; in an encrypted repository, encrypted.
    let out = run(&["backup", "verify", id], &repo, &url, &read_a);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        both(&out).contains("dump.zst.age is corrupt"),
        "{}",
        both(&out)
    );
    let records = |dir: &str| -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(repo.join(dir))
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        found.sort();
        found
    };
    let verified = records(&format!("backups/{id}/verify"));
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(verified.last().unwrap()).unwrap()).unwrap();
    assert_eq!(stored["ok"], false, "{stored}");
    let problems = stored["problems"].to_string();
    assert!(
        !problems.contains("corrupt") && problems.contains("encrypted in"),
        "{problems}"
    );
    let detail = records(&format!("backups/{id}/verify-detail"));
    assert_eq!(detail.len(), 1, "{detail:?}");
    assert!(
        std::fs::read(&detail[0])
            .unwrap()
            .starts_with(b"age-encryption.org/v1")
    );
    std::fs::write(&dump, &original).unwrap();

    // Decryption by hand, as the docs say: age, then zstd, gives what pgops wal fetch gives.
    let by_pgops = base.0.join("by-pgops");
    ok(&run(
        &["wal", "fetch", &name, by_pgops.to_str().unwrap()],
        &repo,
        &url,
        &read_a,
    ));
    let by_hand = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "age -d -i '{}' '{}' | zstd -d -c",
            a.file.display(),
            segment.display()
        ))
        .output()
        .unwrap();
    assert!(by_hand.status.success(), "{}", both(&by_hand));
    assert_eq!(by_hand.stdout, std::fs::read(&by_pgops).unwrap());

    // Key rotation: new WAL for key B; the old backup and the new WAL restore together with
    // both keys listed.
    primary
        .execute(
            "postgres",
            &format!(
                "ALTER SYSTEM SET archive_command = {}",
                pgops_pg::quote_literal(&command(&b.public))
            ),
        )
        .unwrap();
    primary
        .execute("postgres", "SELECT pg_reload_conf()")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    primary
        .execute(
            "postgres",
            "INSERT INTO notes SELECT 4, 'after the rotation'",
        )
        .unwrap();
    switch_and_wait(&primary, &repo);
    // With the old key alone, the plan sees WAL it cannot read and refuses before writing.
    let out = run(
        &[
            "backup",
            "restore",
            "--to-dir",
            dir.to_str().unwrap(),
            "--latest",
        ],
        &repo,
        &url,
        &read_a,
    );
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(
        both(&out).contains(&format!("was encrypted for {}", b.public)),
        "{}",
        both(&out)
    );
    assert!(!dir.exists() || std::fs::read_dir(&dir).unwrap().next().is_none());
    let both_keys = base.0.join("both-keys.txt");
    std::fs::write(
        &both_keys,
        std::fs::read_to_string(&b.file).unwrap() + &std::fs::read_to_string(&a.file).unwrap(),
    )
    .unwrap();
    std::fs::set_permissions(&both_keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let rotated = [
        ("PGOPS_REPO_RECIPIENTS", b.public.clone()),
        (
            "PGOPS_REPO_IDENTITIES_FILE",
            both_keys.display().to_string(),
        ),
    ];
    assert_eq!(
        recovered_batches(&repo, &url, &rotated, &["--latest"]),
        "1,2,3,4"
    );

    // A drill restores from it too (the restored server reads WAL with the key file).
    let drill: serde_json::Value = serde_json::from_str(&ok(&run(
        &[
            "backup",
            "drill",
            "--probe",
            "SELECT count(*) FROM notes",
            "--json",
        ],
        &repo,
        &url,
        &rotated,
    )))
    .unwrap();
    assert_eq!(drill["answer"], "102", "{drill}");
    // Its record keeps the probe (which names a table) and its answer encrypted.
    assert!(holds(&repo, b"FROM notes").is_empty());
    let drills = records("drills");
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(drills.last().unwrap()).unwrap()).unwrap();
    assert_eq!(stored["ok"], true, "{stored}");
    assert!(
        stored["answer"]
            .as_str()
            .unwrap()
            .contains("encrypted in drill-details/"),
        "{stored}"
    );
    assert_eq!(records("drill-details").len(), 1);
}
