//! The migration runner against real PostgreSQL: racing deploys, status, validate, revert,
//! redo, failure atomicity, lock handling, the migration check on the sample schema, and what the
//! schema snapshot sees.
#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Barrier},
    time::Duration,
};

use diesel::{
    Connection, PgConnection, RunQueryDsl, connection::SimpleConnection, dsl::sql,
    sql_types::BigInt,
};
use pgops_migrate::{
    Error, FindingKind, MigrationSet, Migrator, ProblemKind, RunOptions, Severity, check, snapshot,
};
use pgops_testkit::TestDatabase;

fn repo_migrations() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn scalar(conn: &mut PgConnection, query: &str) -> i64 {
    diesel::select(sql::<BigInt>(&format!("({query})::bigint")))
        .get_result(conn)
        .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn racing_deploys_apply_each_migration_exactly_once() {
    let db = TestDatabase::empty().unwrap();
    let set = Arc::new(MigrationSet::from_dir(repo_migrations()).unwrap());
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (set, barrier, url) = (set.clone(), barrier.clone(), db.url());
            std::thread::spawn(move || {
                let mut conn = PgConnection::establish(&url).unwrap();
                barrier.wait();
                Migrator::new(&set).run(&mut conn).unwrap()
            })
        })
        .collect();
    let mut applied: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    applied.sort();
    let expected: Vec<String> = set
        .migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    assert_eq!(
        applied, expected,
        "between them the two runs applied every migration once"
    );

    let mut conn = db.connect().unwrap();
    assert_eq!(
        scalar(&mut conn, "SELECT count(*) FROM __diesel_schema_migrations"),
        expected.len() as i64
    );
    assert_eq!(
        scalar(&mut conn, "SELECT count(*) FROM pgops_migration_ledger"),
        expected.len() as i64
    );
    assert_eq!(
        scalar(
            &mut conn,
            "SELECT count(*) FROM pg_index WHERE NOT indisvalid"
        ),
        0
    );
    assert!(
        Migrator::new(&set).run(&mut conn).unwrap().is_empty(),
        "a third run has nothing to do"
    );
    assert_eq!(
        scalar(
            &mut conn,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        0,
        "the lock is released"
    );
}

#[test]
fn status_revert_and_redo() {
    let db = TestDatabase::empty().unwrap();
    let mut conn = db.connect().unwrap();
    let set = MigrationSet::from_dir(repo_migrations()).unwrap();
    let migrator = Migrator::new(&set);
    let n = set.migrations().len();

    let status = migrator.status(&mut conn).unwrap();
    assert_eq!(status.pending().count(), n);
    assert_eq!(
        scalar(
            &mut conn,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        0,
        "status creates nothing"
    );

    migrator.run(&mut conn).unwrap();
    let status = migrator.status(&mut conn).unwrap();
    assert_eq!(status.pending().count(), 0);
    assert!(status.migrations.iter().all(|m| m.applied_at.is_some()));

    let reverted = migrator.revert(&mut conn, 2).unwrap();
    assert_eq!(
        reverted,
        [
            set.migrations()[n - 1].name(),
            set.migrations()[n - 2].name()
        ]
    );
    let status = migrator.status(&mut conn).unwrap();
    let pending: Vec<_> = status.pending().map(|m| m.name.as_str()).collect();
    assert_eq!(
        pending,
        [
            set.migrations()[n - 2].name(),
            set.migrations()[n - 1].name()
        ]
    );
    assert_eq!(
        scalar(
            &mut conn,
            "SELECT count(*) FROM pg_class WHERE relname = 'patients_org_last_name_active_idx'"
        ),
        0
    );

    migrator.run(&mut conn).unwrap();
    let before = snapshot(&mut conn).unwrap();
    assert_eq!(
        migrator.redo(&mut conn).unwrap(),
        set.migrations()[n - 1].name()
    );
    assert_eq!(before, snapshot(&mut conn).unwrap());
    assert_eq!(migrator.status(&mut conn).unwrap().pending().count(), 0);
}

#[test]
fn a_failing_migration_leaves_the_schema_as_it_was() {
    let db = TestDatabase::empty().unwrap();
    let mut conn = db.connect().unwrap();
    let set = MigrationSet::from_dir(fixture("failing")).unwrap();
    let err = Migrator::new(&set).run(&mut conn).unwrap_err();
    match &err {
        Error::MigrationFailed {
            name,
            direction,
            message,
        } => {
            assert_eq!(name, "2_half_done");
            assert_eq!(*direction, "up.sql");
            assert!(message.contains("division by zero"), "{message}");
        }
        other => panic!("unexpected error: {other}"),
    }
    // The first migration stays applied; nothing of the second is left.
    assert_eq!(
        scalar(
            &mut conn,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'b'"
        ),
        0
    );
    assert_eq!(scalar(&mut conn, "SELECT count(*) FROM a"), 0);
    assert_eq!(
        scalar(&mut conn, "SELECT count(*) FROM __diesel_schema_migrations"),
        1
    );
    assert_eq!(
        scalar(&mut conn, "SELECT count(*) FROM pgops_migration_ledger"),
        1
    );
    assert_eq!(
        scalar(
            &mut conn,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        0
    );
}

#[test]
fn validate_reports_an_applied_migration_edited_on_disk() {
    let db = TestDatabase::empty().unwrap();
    let mut conn = db.connect().unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_migrations(), dir.path());
    let set = MigrationSet::from_dir(dir.path()).unwrap();
    Migrator::new(&set).run(&mut conn).unwrap();
    assert!(Migrator::new(&set).validate(&mut conn).unwrap().is_empty());

    let edited = &set.migrations()[1];
    let up = dir.path().join(edited.name()).join("up.sql");
    let text = std::fs::read_to_string(&up).unwrap();
    std::fs::write(
        &up,
        text.replace("full_name text NOT NULL", "full_name text"),
    )
    .unwrap();
    let set = MigrationSet::from_dir(dir.path()).unwrap();
    let findings = Migrator::new(&set).validate(&mut conn).unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].kind, FindingKind::UpChanged);
    assert_eq!(findings[0].severity, Severity::Error);
    assert_eq!(findings[0].name.as_deref(), Some(edited.name()));

    std::fs::remove_dir_all(dir.path().join(set.migrations().last().unwrap().name())).unwrap();
    let set = MigrationSet::from_dir(dir.path()).unwrap();
    let kinds: Vec<_> = Migrator::new(&set)
        .validate(&mut conn)
        .unwrap()
        .iter()
        .map(|f| f.kind)
        .collect();
    assert_eq!(
        kinds,
        [FindingKind::UpChanged, FindingKind::MissingFromSource]
    );
}

#[test]
fn a_held_migration_lock_times_out_naming_the_holder() {
    let db = TestDatabase::empty().unwrap();
    let mut holder = db.connect().unwrap();
    holder
        .batch_execute(&format!(
            "SELECT pg_advisory_lock({})",
            pgops_migrate::ADVISORY_LOCK_KEY
        ))
        .unwrap();
    let holder_pid = scalar(&mut holder, "SELECT pg_backend_pid()");
    let set = MigrationSet::from_dir(repo_migrations()).unwrap();
    let mut conn = db.connect().unwrap();
    let options = RunOptions {
        lock_wait: Duration::from_millis(300),
        ..RunOptions::default()
    };
    let err = Migrator::new(&set)
        .with_options(options)
        .run(&mut conn)
        .unwrap_err();
    assert!(matches!(err, Error::LockTimeout { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("backend pid {holder_pid}")),
        "{err}"
    );
    assert_eq!(
        Migrator::new(&set)
            .status(&mut conn)
            .unwrap()
            .pending()
            .count(),
        set.migrations().len()
    );
}

#[test]
fn a_migration_blocked_by_a_table_lock_fails_fast() {
    let db = TestDatabase::empty().unwrap();
    let set = MigrationSet::from_dir(fixture("broken_down")).unwrap();
    let first = MigrationSet::new(vec![set.migrations()[0].clone()], "first".into()).unwrap();
    let mut conn = db.connect().unwrap();
    Migrator::new(&first).run(&mut conn).unwrap();

    // Another session holds a lock on `things`, as a long transaction of the application would.
    let mut app = db.connect().unwrap();
    app.batch_execute("BEGIN; LOCK TABLE things IN ACCESS SHARE MODE")
        .unwrap();
    let options = RunOptions {
        lock_timeout: Duration::from_millis(200),
        ..RunOptions::default()
    };
    let err = Migrator::new(&set)
        .with_options(options)
        .run(&mut conn)
        .unwrap_err();
    assert!(err.to_string().contains("lock timeout"), "{err}");
    app.batch_execute("ROLLBACK").unwrap();
    assert_eq!(
        Migrator::new(&set)
            .status(&mut conn)
            .unwrap()
            .pending()
            .count(),
        1
    );
    Migrator::new(&set).run(&mut conn).unwrap();
}

#[test]
fn the_sample_schema_passes_the_migration_check() {
    let db = TestDatabase::empty().unwrap();
    let mut conn = db.connect().unwrap();
    let set = MigrationSet::from_dir(repo_migrations()).unwrap();
    let report = check(&Migrator::new(&set), &mut conn).unwrap();
    assert!(report.problem.is_none(), "{}", report.problem.unwrap());
    assert_eq!(report.migrations, set.migrations().len());
    assert!(
        report.objects > 50,
        "the snapshot sees the schema: {} objects",
        report.objects
    );
    assert_eq!(
        Migrator::new(&set)
            .status(&mut conn)
            .unwrap()
            .pending()
            .count(),
        0,
        "left fully migrated"
    );

    let err = check(&Migrator::new(&set), &mut conn).unwrap_err();
    assert!(matches!(err, Error::NotFresh { .. }), "{err}");
}

#[test]
fn the_check_names_the_migration_whose_down_is_wrong() {
    let db = TestDatabase::empty().unwrap();
    let mut conn = db.connect().unwrap();
    let set = MigrationSet::from_dir(fixture("broken_down")).unwrap();
    let problem = check(&Migrator::new(&set), &mut conn)
        .unwrap()
        .problem
        .unwrap();
    assert_eq!(problem.migration, "2_add_note_index");
    assert_eq!(problem.kind, ProblemKind::DownDiffers);
    assert!(
        problem
            .to_string()
            .contains("extra    column public.things.extra: integer"),
        "{problem}"
    );
}

#[test]
fn snapshot_sees_the_objects_a_migration_makes() {
    let db = TestDatabase::empty().unwrap();
    let mut conn = db.connect().unwrap();
    let empty = snapshot(&mut conn).unwrap();
    conn.batch_execute(
        "CREATE TYPE mood AS ENUM ('ok', 'sad');
         CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, m mood NOT NULL DEFAULT 'ok', v varchar(20));
         CREATE INDEX t_v_idx ON t (v);
         CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';
         COMMENT ON TABLE t IS 'a table';",
    )
    .unwrap();
    let full = snapshot(&mut conn).unwrap();
    let diff = empty.diff(&full);
    for needle in [
        "extra    type public.mood: kind=e 'ok','sad'",
        "extra    column public.t.m: mood not_null=t default='ok'::mood",
        "extra    column public.t.v: character varying(20)",
        "extra    index public.t_v_idx: CREATE INDEX t_v_idx ON public.t USING btree (v) valid=t",
        "extra    constraint public.t.t_pkey: PRIMARY KEY (id)",
        "extra    sequence public.t_id_seq: type=bigint",
        "extra    function public.f(): kind=f",
        "extra    comment on table t: a table",
        "extra    table public.t: persistence=p",
    ] {
        assert!(diff.contains(needle), "missing `{needle}` in\n{diff}");
    }
}
