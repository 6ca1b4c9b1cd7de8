//! The `pgops` binary as an operator runs it: help, exit codes, redaction, and the migrate
//! verbs against a real database.
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
        .env_remove("PGOPS_MIGRATIONS_DIR");
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

#[test]
fn help_lists_every_area_and_documents_exit_codes() {
    let out = pgops(&["--help"], None);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for area in ["migrate", "pool", "insights", "health", "backup"] {
        assert!(help.contains(area), "{area} missing from\n{help}");
    }
    assert!(
        help.contains("2  usage, configuration or connection error"),
        "{help}"
    );

    let out = pgops(
        &["migrate", "--help"],
        Some("postgres://app:hunter2@db/app"),
    );
    let help = text(&out.stdout);
    for verb in ["run", "revert", "redo", "status", "validate"] {
        assert!(help.contains(verb), "{verb} missing from\n{help}");
    }
    assert!(
        !help.contains("hunter2"),
        "help must not print DATABASE_URL's value:\n{help}"
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(pgops(&["frobnicate"], None).status.code(), Some(2));
    assert_eq!(
        pgops(&["migrate", "run", "--lock-timeout", "soon"], None)
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        pgops(&["migrate", "revert", "0"], None).status.code(),
        Some(2)
    );

    let out = pgops(&["migrate", "status", "--sample-schema"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("DATABASE_URL is not set; export it or pass --database-url")
    );

    // pgops migrate works on any database: which migrations is never a guess.
    let out = pgops(&["migrate", "run"], Some("postgres://localhost/x"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("pass --dir DIR or set PGOPS_MIGRATIONS_DIR"),
        "{}",
        text(&out.stderr)
    );
    // A CI step that forgot the path once linted the sample schema and passed.
    let out = pgops(&["migrate", "lint"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("nothing to lint"),
        "{}",
        text(&out.stderr)
    );

    let out = pgops(
        &["migrate", "status", "--dir", "/nonexistent/migrations"],
        Some("postgres://localhost/x"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("/nonexistent/migrations"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn connection_errors_exit_2_without_the_password() {
    // A port nobody listens on.
    let port = pgops_pg::free_port().unwrap();
    let url = format!("postgres://app:hunter2@127.0.0.1:{port}/app");
    let out = pgops(&["migrate", "status", "--sample-schema"], Some(&url));
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot connect to postgres://app:***@127.0.0.1:{port}/app"
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hunter2") && !text(&out.stdout).contains("hunter2"),
        "{stderr}"
    );

    let out = pgops(
        &["migrate", "status", "--sample-schema"],
        Some("not a url hunter2"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!text(&out.stderr).contains("hunter2"));
}

#[test]
fn migrate_verbs_against_a_real_database() {
    let db = TestDatabase::empty().unwrap();
    let url = db.url();
    let url = Some(url.as_str());

    let out = pgops(&["migrate", "--sample-schema", "status", "--json"], url);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let all = status["migrations"].as_array().unwrap().len();
    assert_eq!(
        all,
        pgops_schema::EMBEDDED_MIGRATIONS.len(),
        "the binary carries the sample schema"
    );
    assert!(
        status["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["applied_at"].is_null())
    );

    let out = pgops(&["migrate", "--sample-schema", "run"], url);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("{all} migration(s) applied")),
        "{}",
        text(&out.stdout)
    );

    let out = pgops(&["migrate", "--sample-schema", "run"], url);
    assert!(text(&out.stdout).contains("nothing to apply"));

    let out = pgops(
        &["migrate", "--sample-schema", "revert", "2", "--json"],
        url,
    );
    assert_eq!(out.status.code(), Some(0));
    let reverted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reverted["reverted"].as_array().unwrap().len(), 2);

    let out = pgops(&["migrate", "--sample-schema", "status"], url);
    assert!(
        text(&out.stdout).contains(&format!("{} applied, 2 pending", all - 2)),
        "{}",
        text(&out.stdout)
    );

    assert_eq!(
        pgops(&["migrate", "--sample-schema", "run"], url)
            .status
            .code(),
        Some(0)
    );
    let out = pgops(&["migrate", "--sample-schema", "redo"], url);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("redone "));

    let out = pgops(&["migrate", "--sample-schema", "validate"], url);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn validate_exits_1_when_an_applied_migration_changed() {
    let db = TestDatabase::empty().unwrap();
    let url = db.url();
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo_migrations()).unwrap() {
        let entry = entry.unwrap();
        let target = dir.path().join(entry.file_name());
        std::fs::create_dir(&target).unwrap();
        for file in std::fs::read_dir(entry.path()).unwrap() {
            let file = file.unwrap();
            std::fs::copy(file.path(), target.join(file.file_name())).unwrap();
        }
    }
    let dir_arg = dir.path().to_str().unwrap();
    let out = pgops(&["migrate", "run", "--dir", dir_arg], Some(&url));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let up = dir
        .path()
        .join("2026-11-26-000100_create_organizations/up.sql");
    std::fs::write(
        &up,
        std::fs::read_to_string(&up).unwrap() + "\n-- edited after deploy\n",
    )
    .unwrap();
    let out = pgops(&["migrate", "validate", "--dir", dir_arg], Some(&url));
    assert_eq!(out.status.code(), Some(1));
    let report = text(&out.stdout);
    assert!(
        report
            .contains("2026-11-26-000100_create_organizations/up.sql changed after it was applied"),
        "{report}"
    );

    let out = pgops(
        &["migrate", "validate", "--dir", dir_arg, "--json"],
        Some(&url),
    );
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["ok"], false);
    assert_eq!(value["findings"][0]["kind"], "up_changed");
}

#[test]
fn lint_exit_codes_clean_findings_and_parse_errors() {
    let repo = repo_migrations();
    let out = pgops(&["migrate", "lint", repo.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("lint: 0 finding(s)"));
    // The migrations compiled into the binary, when asked for.
    assert_eq!(
        pgops(&["migrate", "lint", "--sample-schema"], None)
            .status
            .code(),
        Some(0)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("2026-12-01-000000_index_patients_mrn");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(
        bad.join("up.sql"),
        "CREATE INDEX patients_mrn_idx ON patients (mrn);\n",
    )
    .unwrap();
    std::fs::write(bad.join("down.sql"), "DROP INDEX patients_mrn_idx;\n").unwrap();
    let out = pgops(
        &[
            "migrate",
            "lint",
            dir.path().to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["findings"][0]["rule"],
        "require-concurrent-index-creation"
    );
    assert_eq!(report["findings"][0]["line"], 1);
    // `--json`, as every other command takes it, means the same.
    let out = pgops(
        &["migrate", "lint", dir.path().to_str().unwrap(), "--json"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let same: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(same, report);

    let broken = dir.path().join("broken.sql");
    std::fs::write(
        &broken,
        "SELECT 1;\nALTER TABEL patients ADD COLUMN x int;\n",
    )
    .unwrap();
    let out = pgops(&["migrate", "lint", broken.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stdout).contains("broken.sql:2:1: cannot parse"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_target_time_without_a_zone_or_date_is_refused_with_the_forms_to_use() {
    let repo = tempfile::tempdir().unwrap();
    let repo_url = format!("file://{}", repo.path().display());
    let to_dir = repo.path().join("restore").display().to_string();
    for (args, says) in [
        (
            vec!["backup", "drill", "--target-time", "yesterday"],
            "not a date and time",
        ),
        (
            vec![
                "backup",
                "restore",
                "--to-dir",
                &to_dir,
                "--target-time",
                "2026-11-26 10:15",
            ],
            "no time zone",
        ),
    ] {
        let mut args = args.clone();
        args.extend(["--repo", &repo_url]);
        let out = pgops(&args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("--target-time")
                && err.contains(says)
                && err.contains("2026-11-30T04:37:31Z"),
            "{err}"
        );
    }
    assert!(!repo.path().join("restore").exists(), "nothing laid out");
}

#[test]
fn lint_takes_its_runner_version_and_disabled_rules_from_pgops_toml_and_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("migrations");
    for (name, up) in [
        (
            "1_nickname",
            "ALTER TABLE patients ADD COLUMN nickname text;",
        ),
        (
            "2_unique",
            "CREATE UNIQUE INDEX CONCURRENTLY patients_mrn_key ON patients (mrn) NULLS NOT DISTINCT;",
        ),
    ] {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("up.sql"), up).unwrap();
        std::fs::write(dir.join(name).join("down.sql"), "SELECT 1;").unwrap();
    }
    std::fs::write(
        dir.join("2_unique/metadata.toml"),
        "run_in_transaction = false\n",
    )
    .unwrap();
    let lint = |extra: &[&str], database_url: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgops"));
        cmd.current_dir(tmp.path())
            .args(["migrate", "lint", "--dir", "migrations"])
            .args(extra)
            .env_remove("DATABASE_URL")
            .env_remove("PGOPS_CONFIG");
        if let Some(url) = database_url {
            cmd.env("DATABASE_URL", url);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };

    // `pgops migrate run` sets lock_timeout, so by default the ALTER is fine.
    let (code, stdout, _) = lint(&[], None);
    assert_eq!(code, Some(0), "{stdout}");
    let (code, stdout, _) = lint(&["--runner", "other"], None);
    assert_eq!(code, Some(1));
    assert!(
        stdout.contains("1_nickname/up.sql:1:1: require-lock-timeout"),
        "{stdout}"
    );

    // The same from pgops.toml, flags winning over it.
    let config = tmp.path().join("pgops.toml");
    std::fs::write(&config, "[lint]\nrunner = \"other\"\npg_version = 14\n").unwrap();
    let (code, stdout, _) = lint(&[], None);
    assert_eq!(code, Some(1));
    assert!(
        stdout.contains("require-lock-timeout")
            && stdout.contains("requires-newer-postgres: UNIQUE NULLS NOT DISTINCT needs PostgreSQL 15, and the target is 14"),
        "{stdout}"
    );
    let (code, stdout, _) = lint(&["--runner", "pgops", "--pg-version", "15"], None);
    assert_eq!(code, Some(0), "{stdout}");
    std::fs::write(
        &config,
        "[lint]\nrunner = \"other\"\ndisabled = [\"require-lock-timeout\"]\n",
    )
    .unwrap();
    assert_eq!(lint(&[], None).0, Some(0));

    // Read from the server: the same file is fine on 15 and later only.
    let db = TestDatabase::empty().unwrap();
    let major: u32 = db
        .cluster()
        .query_text("postgres", "current_setting('server_version_num')")
        .unwrap()
        .unwrap()
        .parse::<u32>()
        .unwrap()
        / 10_000;
    let (code, stdout, stderr) = lint(&["--pg-version", "server"], Some(&db.url()));
    assert_eq!(
        code,
        Some(if major >= 15 { 0 } else { 1 }),
        "{stdout}{stderr}"
    );

    // Bad options are usage errors that say what is allowed.
    std::fs::write(&config, "[lint]\ndisabled = [\"no-such-rule\"]\n").unwrap();
    let (code, _, stderr) = lint(&[], None);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("no rule `no-such-rule`") && stderr.contains("pgops.toml"),
        "{stderr}"
    );
    std::fs::remove_file(&config).unwrap();
    for (flags, says) in [
        (&["--pg-version", "12"][..], "from 13 to 18"),
        (&["--pg-version", "latest"][..], "give a major version"),
        (&["--disable", "nope"][..], "no such rule"),
    ] {
        let (code, _, stderr) = lint(flags, None);
        assert_eq!(code, Some(2), "{flags:?}");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
    }
}

#[test]
fn migrate_refuses_a_transaction_pooled_database_url_and_takes_the_migrate_url() {
    let db = TestDatabase::empty().unwrap();
    let dir = repo_migrations();
    let migrate = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgops"));
        cmd.args(["migrate", "status", "--dir", dir.to_str().unwrap()])
            .env_remove("DATABASE_URL")
            .env_remove("PGOPS_MIGRATE_DATABASE_URL")
            .env_remove("PGOPS_POOL_POOLER")
            .envs(env.iter().copied());
        cmd.output().unwrap()
    };
    let bouncer_url = "postgres://app:s3cret@127.0.0.1:6432/app";
    let out = migrate(&[
        ("DATABASE_URL", bouncer_url),
        ("PGOPS_POOL_POOLER", "transaction"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("PGOPS_MIGRATE_DATABASE_URL") && !err.contains("s3cret"),
        "{err}"
    );
    let out = migrate(&[
        ("DATABASE_URL", bouncer_url),
        ("PGOPS_POOL_POOLER", "transaction"),
        ("PGOPS_MIGRATE_DATABASE_URL", &db.url()),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("pending"));
}
