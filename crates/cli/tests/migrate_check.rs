//! `pgops migrate check` and `pgops migrate drift` as a service's CI runs them: on a scratch
//! database created and dropped on DATABASE_URL's server, on a throwaway cluster when there is
//! no server, or on a given empty database; exit 0 clean, 1 broken or drifted, 2 usage.
#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use pgops_testkit::TestDatabase;

fn pgops(args: &[&str], database_url: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgops"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("PGOPS_MIGRATIONS_DIR")
        .env_remove("PGOPS_SCRATCH_DATABASE_URL");
    if let Some(url) = database_url {
        cmd.env("DATABASE_URL", url);
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn repo_migrations() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations")
}

/// Two migrations; the second's down.sql forgets the column it added.
fn broken(dir: &Path) -> String {
    for (name, up, down) in [
        (
            "1_things",
            "CREATE TABLE things (id bigint PRIMARY KEY, note text);",
            "DROP TABLE things;",
        ),
        (
            "2_extra",
            "ALTER TABLE things ADD COLUMN extra integer;\nCREATE INDEX things_note_idx ON things (note);",
            "DROP INDEX things_note_idx;",
        ),
    ] {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("up.sql"), up).unwrap();
        std::fs::write(dir.join(name).join("down.sql"), down).unwrap();
    }
    dir.display().to_string()
}

/// Tests that count scratch databases on the shared cluster take turns.
static SCRATCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn scratch_databases(db: &TestDatabase) -> String {
    db.cluster()
        .query_text(
            "postgres",
            "(SELECT coalesce(string_agg(datname, ','), '') FROM pg_database WHERE datname LIKE 'pgops\\_check\\_%')",
        )
        .unwrap()
        .unwrap_or_default()
}

#[test]
fn check_on_a_scratch_database_of_database_url_names_the_broken_migration() {
    let _turn = SCRATCH.lock().unwrap_or_else(|e| e.into_inner());
    let db = TestDatabase::empty().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = broken(tmp.path());

    let out = pgops(
        &["migrate", "check", "--dir", &dir, "--json"],
        Some(&db.url()),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["problem"]["migration"], "2_extra");
    assert_eq!(report["problem"]["kind"], "down_differs");
    assert_eq!(
        report["problem"]["differences"][0]["object"],
        "column public.things.extra"
    );
    assert!(report["problem"]["differences"][0]["expected"].is_null());
    assert!(
        report["database"]
            .as_str()
            .unwrap()
            .contains("scratch database pgops_check_"),
        "{report}"
    );
    // The scratch database is gone, and DATABASE_URL's own database was never touched.
    assert_eq!(scratch_databases(&db), "");
    let tables = db
        .cluster()
        .query_text(
            db.name(),
            "(SELECT count(*) FROM pg_class WHERE relname = 'things')::text",
        )
        .unwrap();
    assert_eq!(tables.as_deref(), Some("0"));

    let out = pgops(&["migrate", "check", "--dir", &dir], Some(&db.url()));
    assert_eq!(out.status.code(), Some(1));
    let report = text(&out.stdout);
    assert!(
        report.contains("2_extra/down.sql: down.sql does not restore the schema")
            && report.contains("extra    column public.things.extra: integer"),
        "{report}"
    );
}

#[test]
fn check_without_a_server_starts_a_throwaway_cluster() {
    let dir = repo_migrations();
    let out = pgops(&["migrate", "check", "--dir", dir.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.contains("migration check passed") && report.contains("throwaway PostgreSQL"),
        "{report}"
    );
}

#[test]
fn check_refuses_a_given_database_that_is_not_empty_and_a_bad_server() {
    let db = TestDatabase::empty().unwrap();
    let dir = repo_migrations();
    let dir = dir.to_str().unwrap();
    let out = pgops(&["migrate", "run", "--dir", dir], Some(&db.url()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = pgops(
        &["migrate", "check", "--dir", dir, "--scratch-url", &db.url()],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("needs a scratch database with no migration applied"));

    let out = pgops(
        &["migrate", "check", "--dir", dir],
        Some("postgres://app:s3cret@127.0.0.1:1/app"),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot connect") && !err.contains("s3cret"),
        "{err}"
    );
}

#[test]
fn drift_exits_1_on_an_index_added_by_hand_and_0_when_clean() {
    let _turn = SCRATCH.lock().unwrap_or_else(|e| e.into_inner());
    let db = TestDatabase::empty().unwrap();
    let dir = repo_migrations();
    let dir = dir.to_str().unwrap();
    let out = pgops(&["migrate", "run", "--dir", dir], Some(&db.url()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let out = pgops(&["migrate", "drift", "--dir", dir], Some(&db.url()));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("no drift"));

    db.cluster()
        .execute(
            db.name(),
            "CREATE INDEX notes_by_hand ON notes (created_at)",
        )
        .unwrap();
    let out = pgops(
        &["migrate", "drift", "--dir", dir, "--json"],
        Some(&db.url()),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(
        report["differences"][0]["object"],
        "index public.notes_by_hand"
    );
    assert!(report["differences"][0]["expected"].is_null());
    assert_eq!(scratch_databases(&db), "");
}
