//! The migration check and drift against real PostgreSQL: a generated history of 210
//! migrations (tables, columns, foreign keys, check constraints, concurrent indexes outside a
//! transaction) checks clean; each kind of broken `down.sql` is named with what differs; drift
//! finds what was changed by hand and ignores what pgops keeps for itself.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use diesel::connection::SimpleConnection;
use pgops_migrate::{MigrationSet, Migrator, ProblemKind, RunOptions, check, drift};
use pgops_testkit::TestDatabase;

/// One migration: directory name, up.sql, down.sql, run in a transaction.
struct Step {
    name: String,
    up: String,
    down: Option<String>,
    transaction: bool,
}

/// A history of `n` migrations in groups of five per table: the table, a column, a foreign
/// key added NOT VALID, a concurrent index on the column (outside a transaction), and a check
/// constraint with a unique index.
fn history(n: usize) -> Vec<Step> {
    (0..n)
        .map(|i| {
            let t = format!("t{}", i - i % 5);
            let c = format!("c{}", i - i % 5 + 1);
            let (up, down, transaction) = match i % 5 {
                0 => (
                    format!(
                        "CREATE TABLE {t} (\n    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n    name text NOT NULL,\n    parent_id bigint\n);\nCOMMENT ON TABLE {t} IS 'table {i}';\n"
                    ),
                    format!("DROP TABLE {t};\n"),
                    true,
                ),
                1 => (
                    format!("ALTER TABLE {t} ADD COLUMN {c} text;\n"),
                    format!("ALTER TABLE {t} DROP COLUMN {c};\n"),
                    true,
                ),
                2 => (
                    format!(
                        "ALTER TABLE {t} ADD CONSTRAINT {t}_parent_fk FOREIGN KEY (parent_id) REFERENCES {t} (id) NOT VALID;\n"
                    ),
                    format!("ALTER TABLE {t} DROP CONSTRAINT {t}_parent_fk;\n"),
                    true,
                ),
                3 => (
                    format!("CREATE INDEX CONCURRENTLY {t}_{c}_idx ON {t} ({c});\n"),
                    format!("DROP INDEX CONCURRENTLY {t}_{c}_idx;\n"),
                    false,
                ),
                _ => (
                    format!(
                        "ALTER TABLE {t} ADD CONSTRAINT {t}_name_len CHECK (length(name) < 200) NOT VALID;\nCREATE UNIQUE INDEX {t}_name_key ON {t} (name);\n"
                    ),
                    format!(
                        "DROP INDEX {t}_name_key;\nALTER TABLE {t} DROP CONSTRAINT {t}_name_len;\n"
                    ),
                    true,
                ),
            };
            Step {
                name: format!("2026-01-01-{i:06}_step_{i}"),
                up,
                down: Some(down),
                transaction,
            }
        })
        .collect()
}

fn write(dir: &Path, steps: &[Step]) -> MigrationSet {
    for step in steps {
        let path = dir.join(&step.name);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("up.sql"), &step.up).unwrap();
        match &step.down {
            Some(down) => std::fs::write(path.join("down.sql"), down).unwrap(),
            None => {
                let _ = std::fs::remove_file(path.join("down.sql"));
            }
        }
        if !step.transaction {
            std::fs::write(path.join("metadata.toml"), "run_in_transaction = false\n").unwrap();
        }
    }
    MigrationSet::from_dir(dir).unwrap()
}

#[test]
fn a_generated_history_of_210_migrations_checks_clean() {
    let dir = tempfile::tempdir().unwrap();
    let set = write(dir.path(), &history(210));
    let db = TestDatabase::empty().unwrap();
    let mut conn = db.connect().unwrap();
    let report = check(&Migrator::new(&set), &mut conn).unwrap();
    assert!(report.problem.is_none(), "{}", report.problem.unwrap());
    assert_eq!(report.migrations, 210);
    // Up, then down, up and down again per migration, then up again: five steps each.
    assert_eq!(report.steps, 5 * 210);
    // 42 tables, each with columns, constraints, indexes, a sequence and a comment.
    assert!(report.objects > 42 * 10, "{} objects", report.objects);
    eprintln!(
        "210 migrations checked in {:.1}s",
        report.elapsed.as_secs_f64()
    );
    // Left fully migrated, and a second check refuses the database that is not fresh.
    let err = check(&Migrator::new(&set), &mut conn).unwrap_err();
    assert!(err.to_string().contains("210 are applied"), "{err}");
}

/// The migration most broken variants of `down.sql` are planted in: the fourth of ten.
const BROKEN: usize = 3;

/// Checks a 10-migration history whose migration `BROKEN` gets `up` and `down`.
fn check_broken(up: Option<&str>, down: Option<&str>) -> pgops_migrate::Problem {
    check_broken_at(BROKEN, up, down)
}

/// Checks a 10-migration history whose migration `at` gets `up` and `down`.
fn check_broken_at(at: usize, up: Option<&str>, down: Option<&str>) -> pgops_migrate::Problem {
    let dir = tempfile::tempdir().unwrap();
    let mut steps = history(10);
    if let Some(up) = up {
        steps[at].up = up.to_owned();
        steps[at].transaction = true;
    }
    steps[at].down = down.map(str::to_owned);
    let set = write(dir.path(), &steps);
    let db = TestDatabase::empty().unwrap();
    let mut conn = db.connect().unwrap();
    let report = check(&Migrator::new(&set), &mut conn).unwrap();
    let problem = report.problem.expect("the broken migration is found");
    assert_eq!(problem.migration, steps[at].name, "{problem}");
    problem
}

#[test]
fn a_missing_down_is_named() {
    let problem = check_broken(None, None);
    assert_eq!(problem.kind, ProblemKind::DownMissing, "{problem}");
    assert!(problem.to_string().contains("no down.sql"), "{problem}");
}

#[test]
fn a_failing_down_is_named_with_the_server_error_and_the_line() {
    let problem = check_broken(
        Some("CREATE INDEX t0_name_idx ON t0 (name);\n"),
        Some(
            "-- undo the index\nDROP INDEX t0_name_idx;\nALTER TABLE t0 DROP CONSTRAINT t0_name_idx;\n",
        ),
    );
    assert_eq!(problem.kind, ProblemKind::DownFailed, "{problem}");
    assert_eq!(problem.file, "down.sql");
    assert_eq!(problem.line, Some(3), "{problem}");
    let error = problem.error.as_deref().unwrap();
    assert!(
        error.contains("t0_name_idx") && error.contains("does not exist"),
        "{error}"
    );
    assert!(problem.differences.is_empty());
}

#[test]
fn a_down_that_leaves_a_column_is_named_with_the_column() {
    let problem = check_broken(
        Some(
            "ALTER TABLE t0 ADD COLUMN extra integer;\nCREATE INDEX t0_extra_idx ON t0 (extra);\n",
        ),
        Some("DROP INDEX t0_extra_idx;\n"),
    );
    assert_eq!(problem.kind, ProblemKind::DownDiffers, "{problem}");
    let objects: Vec<_> = problem
        .differences
        .iter()
        .map(|d| (d.object.as_str(), d.expected.is_some(), d.found.is_some()))
        .collect();
    assert_eq!(
        objects,
        [("column public.t0.extra", false, true)],
        "{problem}"
    );
    assert!(
        problem
            .to_string()
            .contains("extra    column public.t0.extra: integer"),
        "{problem}"
    );
}

#[test]
fn a_down_that_restores_a_different_index_is_named_with_both_definitions() {
    let problem = check_broken_at(
        4,
        Some("DROP INDEX t0_c1_idx;\n"),
        Some("CREATE INDEX t0_c1_idx ON t0 (name);\n"),
    );
    assert_eq!(problem.kind, ProblemKind::DownDiffers, "{problem}");
    assert_eq!(problem.differences.len(), 1, "{problem}");
    let index = &problem.differences[0];
    assert_eq!(index.object, "index public.t0_c1_idx");
    assert!(
        index.expected.as_deref().unwrap().contains("(c1)"),
        "{problem}"
    );
    assert!(
        index.found.as_deref().unwrap().contains("(name)"),
        "{problem}"
    );
    assert!(
        problem
            .to_string()
            .contains("changed  index public.t0_c1_idx")
    );
}

#[test]
fn a_down_that_does_not_restore_a_dropped_constraint_is_named() {
    let problem = check_broken(
        Some("ALTER TABLE t0 DROP CONSTRAINT t0_parent_fk;\n"),
        Some("SELECT 1;\n"),
    );
    assert_eq!(problem.kind, ProblemKind::DownDiffers, "{problem}");
    let missing = &problem.differences[0];
    assert_eq!(missing.object, "constraint public.t0.t0_parent_fk");
    assert!(missing.found.is_none(), "{problem}");
    assert!(
        missing
            .expected
            .as_deref()
            .unwrap()
            .contains("FOREIGN KEY (parent_id) REFERENCES t0(id) NOT VALID"),
        "{problem}"
    );
}

#[test]
fn drift_finds_changes_by_hand_and_ignores_what_pgops_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let set = write(dir.path(), &history(12));
    let live = TestDatabase::empty().unwrap();
    let mut live_conn = live.connect().unwrap();
    Migrator::new(&set).run(&mut live_conn).unwrap();
    let compare = |live_conn: &mut diesel::PgConnection| {
        let reference = TestDatabase::empty().unwrap();
        let mut reference_conn = reference.connect().unwrap();
        drift(&set, &RunOptions::default(), live_conn, &mut reference_conn).unwrap()
    };
    let clean = compare(&mut live_conn);
    assert!(clean.is_clean(), "{:?}", clean.differences);
    assert_eq!(clean.applied, 12);

    // What pgops's own tools create is not drift.
    live_conn
        .batch_execute(
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
             CREATE TABLE pgops_stat_snapshots (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY);
             CREATE INDEX pgops_stat_snapshots_taken_at ON pgops_stat_snapshots (id);",
        )
        .unwrap();
    let still = compare(&mut live_conn);
    assert!(still.is_clean(), "{:?}", still.differences);

    // An index added by hand and a column dropped outside a migration are.
    live_conn
        .batch_execute("CREATE INDEX by_hand ON t5 (name); ALTER TABLE t0 DROP COLUMN c1 CASCADE;")
        .unwrap();
    let found = compare(&mut live_conn);
    let objects: Vec<_> = found
        .differences
        .iter()
        .map(|d| (d.object.as_str(), d.expected.is_some(), d.found.is_some()))
        .collect();
    assert!(
        objects.contains(&("index public.by_hand", false, true)),
        "{objects:?}"
    );
    assert!(
        objects.contains(&("column public.t0.c1", true, false)),
        "{objects:?}"
    );
    // The index on the dropped column went with it.
    assert!(
        objects.contains(&("index public.t0_c1_idx", true, false)),
        "{objects:?}"
    );
    // Only the applied migrations are the reference: a pending one is not drift.
    let more = write(dir.path(), &history(13));
    let reference = TestDatabase::empty().unwrap();
    let mut reference_conn = reference.connect().unwrap();
    let pending = drift(
        &more,
        &RunOptions::default(),
        &mut live_conn,
        &mut reference_conn,
    )
    .unwrap();
    assert_eq!(pending.applied, 12);
    assert_eq!(pending.differences.len(), found.differences.len());
}
