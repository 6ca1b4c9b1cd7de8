//! `cargo xtask seed` as a developer or CI runs it.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn xtask(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgops-tasks"));
    cmd.args(args)
        .env_remove("PGOPS_ENV")
        .env_remove("APP_ENV")
        .env_remove("DATABASE_URL")
        .env_remove("PGOPS_DEV_DIR");
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn count(db: &pgops_testkit::TestDatabase, table: &str) -> String {
    db.cluster()
        .query_text(db.name(), &format!("(SELECT count(*) FROM {table})"))
        .unwrap()
        .unwrap()
}

#[test]
fn production_is_refused_with_exit_2_and_no_row_touched() {
    let db = pgops_schema::testing::database().unwrap();
    let url = db.url();
    let out = xtask(
        &["seed", "--env", "development"],
        &[("DATABASE_URL", &url), ("PGOPS_ENV", "production")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("refusing to seed: PGOPS_ENV=production"),
        "{}",
        text(&out.stderr)
    );
    for table in pgops_schema::TABLES {
        assert_eq!(count(&db, table), "0");
    }
    let out = xtask(&["seed", "--env", "production"], &[("DATABASE_URL", &url)]);
    assert_eq!(out.status.code(), Some(2), "production is not a dataset");
}

#[test]
fn seeds_prints_a_summary_and_is_idempotent() {
    let db = pgops_schema::testing::database().unwrap();
    let url = db.url();
    let out = xtask(&["seed", "--env", "test"], &[("DATABASE_URL", &url)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    for table in pgops_schema::TABLES {
        assert!(summary.contains(table), "{table} missing from\n{summary}");
    }
    assert!(
        summary.contains("rows/s") && summary.contains("total"),
        "{summary}"
    );
    assert!(
        text(&out.stderr).contains("seeding audit_logs"),
        "plain progress lines off a terminal"
    );
    assert_eq!(count(&db, "users"), "8");

    let out = xtask(&["seed", "--env", "test"], &[("DATABASE_URL", &url)]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("nothing to do"),
        "{}",
        text(&out.stdout)
    );

    let out = xtask(
        &["seed", "--env", "development", "--scale", "0.01"],
        &[("DATABASE_URL", &url)],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--reset"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(count(&db, "users"), "8");

    let out = xtask(
        &["seed", "--env", "development", "--scale", "0.01", "--reset"],
        &[("DATABASE_URL", &url)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_ne!(count(&db, "users"), "8");

    // No DATABASE_URL and no dev stack: the error says what to do.
    let no_stack = tempfile::tempdir().unwrap();
    let no_stack = no_stack.path().display().to_string();
    let out = xtask(
        &["seed", "--env", "staging"],
        &[("PGOPS_DEV_DIR", &no_stack)],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("DATABASE_URL is not set") && err.contains("cargo xtask dev"),
        "{err}"
    );
}

#[test]
fn without_database_url_the_dev_stack_is_seeded() {
    let db = pgops_schema::testing::database().unwrap();
    // What `cargo xtask dev` records for shells and for this command.
    let stack = tempfile::tempdir().unwrap();
    std::fs::write(
        stack.path().join("env"),
        format!("DATABASE_URL='{}'\n", db.url()),
    )
    .unwrap();
    let dir = stack.path().display().to_string();
    let out = xtask(&["seed", "--env", "test"], &[("PGOPS_DEV_DIR", &dir)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(db.name()),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(count(&db, "users"), "8");
}
