//! Seeding against real PostgreSQL: documented keys, determinism, idempotency, all-or-nothing,
//! refusal of production, and realistic skew.
#![allow(clippy::unwrap_used)]

use diesel::{
    PgConnection, RunQueryDsl, connection::SimpleConnection, dsl::sql, sql_types::BigInt,
};
use pgops_seed::{Dataset, Error, NoProgress, Outcome, SeedOptions, seed};
use pgops_testkit::TestDatabase;

fn options(dataset: Dataset, seed: u64, scale: f64) -> SeedOptions {
    SeedOptions {
        dataset,
        seed,
        scale,
        reset: false,
    }
}

fn scalar(conn: &mut PgConnection, query: &str) -> i64 {
    diesel::select(sql::<BigInt>(&format!("({query})::bigint")))
        .get_result(conn)
        .unwrap()
}

fn text(conn: &mut PgConnection, query: &str) -> String {
    diesel::select(sql::<diesel::sql_types::Text>(&format!("({query})::text")))
        .get_result(conn)
        .unwrap()
}

/// md5 of every row of every sample table, in key order.
fn table_checksums(conn: &mut PgConnection) -> Vec<(String, String)> {
    pgops_schema::TABLES
        .iter()
        .map(|t| (t.to_string(), text(conn, &format!("SELECT coalesce(md5(string_agg(x::text, '|' ORDER BY x.id)), '') FROM {t} x"))))
        .collect()
}

#[test]
fn the_test_dataset_has_its_documented_keys() {
    let db = pgops_schema::testing::database().unwrap();
    let mut conn = db.connect().unwrap();
    let c = &mut conn;
    let outcome = seed(c, &options(Dataset::Test, 1, 1.0), &mut NoProgress).unwrap();
    let Outcome::Seeded(report) = outcome else {
        panic!("expected a load")
    };
    let rows: Vec<(String, u64)> = report
        .tables
        .iter()
        .map(|t| (t.table.clone(), t.rows))
        .collect();
    assert_eq!(
        rows,
        [
            ("organizations", 2),
            ("users", 8),
            ("sessions", 8),
            ("patients", 20),
            ("encounters", 40),
            ("notes", 40),
            ("audit_logs", 100)
        ]
        .map(|(t, n)| (t.to_owned(), n))
    );
    assert_eq!(
        text(c, "SELECT slug FROM organizations WHERE id = 1"),
        "acme"
    );
    assert_eq!(
        text(c, "SELECT slug FROM organizations WHERE id = 2"),
        "beacon"
    );
    assert_eq!(
        text(
            c,
            "SELECT email || ' ' || role || ' ' || organization_id FROM users WHERE id = 1"
        ),
        "ada.admin@acme.test admin 1"
    );
    assert_eq!(
        text(c, "SELECT email FROM users WHERE id = 8"),
        "bo.clinician@beacon.test"
    );
    assert_eq!(
        scalar(c, "SELECT count(*) FROM users WHERE deleted_at IS NOT NULL"),
        1
    );
    assert_eq!(
        text(c, "SELECT email FROM users WHERE deleted_at IS NOT NULL"),
        "dee.deleted@acme.test"
    );
    assert_eq!(
        text(c, "SELECT status FROM patients WHERE id = 14"),
        "inactive"
    );
    assert_eq!(
        text(c, "SELECT status FROM patients WHERE id = 15"),
        "deceased"
    );
    assert_eq!(
        scalar(c, "SELECT count(*) FROM patients WHERE organization_id = 2"),
        5
    );
    assert_eq!(
        text(c, "SELECT mrn FROM patients WHERE id = 16"),
        "MRN00000001"
    );
    assert_eq!(
        text(
            c,
            "SELECT patient_id || ' ' || status || ' ' || kind FROM encounters WHERE id = 5"
        ),
        "3 closed office_visit"
    );
    assert_eq!(
        text(
            c,
            "SELECT patient_id || ' ' || status || ' ' || kind FROM encounters WHERE id = 6"
        ),
        "3 open telehealth"
    );
    assert_eq!(
        scalar(c, "SELECT count(*) FROM notes WHERE id <> encounter_id"),
        0
    );
    assert_eq!(
        scalar(c, "SELECT count(*) FROM audit_logs WHERE user_id IS NULL"),
        10
    );
    assert_eq!(
        scalar(
            c,
            "SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL"
        ),
        1
    );
    // The application can insert after a seed: the id sequences moved past the seeded keys.
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let new: Id = diesel::sql_query(
        "INSERT INTO organizations (name, slug) VALUES ('New', 'new') RETURNING id",
    )
    .get_result(c)
    .unwrap();
    assert_eq!(new.id, 3);
    // ANALYZE ran.
    assert!(
        scalar(
            c,
            "SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'audit_logs' AND last_analyze IS NOT NULL"
        ) == 1
    );
}

#[test]
fn seeding_leaves_the_schema_exactly_as_it_was() {
    let db = pgops_schema::testing::database().unwrap();
    let mut conn = db.connect().unwrap();
    let before = pgops_migrate::snapshot(&mut conn).unwrap();
    seed(
        &mut conn,
        &options(Dataset::Development, 5, 0.05),
        &mut NoProgress,
    )
    .unwrap();
    let after = pgops_migrate::snapshot(&mut conn).unwrap();
    // Only the seeder's own ledger is new; keys, indexes and foreign keys are as they were.
    let diff = before.diff(&after);
    let unexpected: Vec<&str> = diff
        .lines()
        .filter(|l| !l.contains("pgops_seed_ledger"))
        .collect();
    assert!(unexpected.is_empty(), "{}", unexpected.join("\n"));
    // And the foreign keys were really checked: a dangling row cannot be loaded.
    let err = conn
        .batch_execute("INSERT INTO audit_logs (user_id, action) VALUES (999999999, 'x')")
        .unwrap_err();
    assert!(err.to_string().contains("audit_logs_user_id_fkey"), "{err}");
}

#[test]
fn a_table_reloads_from_a_server_file_with_its_keys_built_again() {
    let db = pgops_schema::testing::database().unwrap();
    let mut conn = db.connect().unwrap();
    let options = options(Dataset::Development, 7, 0.05);
    seed(&mut conn, &options, &mut NoProgress).unwrap();
    let before = pgops_migrate::snapshot(&mut conn).unwrap();
    let rows = table_checksums(&mut conn);
    let file = db
        .cluster()
        .root()
        .join(format!("{}-audit_logs.bin", db.name()));
    let file = file.to_str().unwrap();
    conn.batch_execute(&format!("COPY audit_logs TO '{file}' WITH (FORMAT binary)"))
        .unwrap();
    let report = pgops_seed::reload_table_from_server_file(&mut conn, "audit_logs", file).unwrap();
    assert_eq!(
        report.rows as i64,
        scalar(&mut conn, "SELECT count(*) FROM audit_logs")
    );
    assert!(report.rows > 0);
    // The same rows, the same keys, indexes and foreign keys.
    assert_eq!(table_checksums(&mut conn), rows);
    assert_eq!(
        before.diff(&pgops_migrate::snapshot(&mut conn).unwrap()),
        ""
    );
    // A file that is not there leaves the table as it was.
    let err =
        pgops_seed::reload_table_from_server_file(&mut conn, "audit_logs", "/nonexistent/x.bin")
            .unwrap_err();
    assert!(
        pgops_pg::report(&err).contains("/nonexistent/x.bin"),
        "{}",
        pgops_pg::report(&err)
    );
    assert_eq!(table_checksums(&mut conn), rows);
}

#[test]
fn same_seed_same_data_other_seed_other_data() {
    let dbs: Vec<_> = (0..3)
        .map(|_| pgops_schema::testing::database().unwrap())
        .collect();
    let mut sums = Vec::new();
    let mut reports = Vec::new();
    for (db, seed_value) in dbs.iter().zip([42, 42, 43]) {
        let mut conn = db.connect().unwrap();
        let Outcome::Seeded(report) = seed(
            &mut conn,
            &options(Dataset::Staging, seed_value, 0.01),
            &mut NoProgress,
        )
        .unwrap() else {
            panic!("expected a load")
        };
        sums.push(table_checksums(&mut conn));
        reports.push(report);
    }
    assert_eq!(sums[0], sums[1], "identical data in every table");
    assert_eq!(reports[0].checksum, reports[1].checksum);
    for ((table, a), (_, b)) in sums[0].iter().zip(&sums[2]) {
        assert_ne!(a, b, "{table} differs with another seed");
    }
    assert!(reports[0].tables.iter().all(|t| t.rows > 0));
}

#[test]
fn rerunning_is_a_no_op_and_other_parameters_need_reset() {
    let db = pgops_schema::testing::database().unwrap();
    let mut conn = db.connect().unwrap();
    let c = &mut conn;
    let first = seed(c, &options(Dataset::Staging, 7, 0.005), &mut NoProgress).unwrap();
    let Outcome::Seeded(report) = first else {
        panic!()
    };
    let before = table_checksums(c);

    let again = seed(c, &options(Dataset::Staging, 7, 0.005), &mut NoProgress).unwrap();
    assert_eq!(
        again,
        Outcome::AlreadySeeded {
            checksum: report.checksum.clone()
        }
    );
    assert_eq!(table_checksums(c), before);

    let err = seed(c, &options(Dataset::Staging, 8, 0.005), &mut NoProgress).unwrap_err();
    assert!(matches!(err, Error::SeededDifferently { .. }), "{err}");
    assert!(
        err.to_string().contains("seed 7") && err.to_string().contains("--reset"),
        "{err}"
    );
    let err = seed(c, &options(Dataset::Staging, 7, 0.006), &mut NoProgress).unwrap_err();
    assert!(matches!(err, Error::SeededDifferently { .. }), "{err}");
    assert_eq!(table_checksums(c), before, "a refused run touches nothing");

    let reset = SeedOptions {
        reset: true,
        ..options(Dataset::Test, 1, 1.0)
    };
    assert!(matches!(
        seed(c, &reset, &mut NoProgress).unwrap(),
        Outcome::Seeded(_)
    ));
    assert_eq!(scalar(c, "SELECT count(*) FROM patients"), 20);
    assert_eq!(scalar(c, "SELECT count(*) FROM pgops_seed_ledger"), 1);
    assert_eq!(text(c, "SELECT environment FROM pgops_seed_ledger"), "test");
}

#[test]
fn data_not_written_by_a_seed_is_never_mixed_with_one() {
    let db = pgops_schema::testing::database().unwrap();
    let mut conn = db.connect().unwrap();
    conn.batch_execute("INSERT INTO organizations (name, slug) VALUES ('Real', 'real')")
        .unwrap();
    let err = seed(&mut conn, &options(Dataset::Test, 1, 1.0), &mut NoProgress).unwrap_err();
    assert!(
        matches!(err, Error::NotEmpty { ref table, rows: 1 } if table == "organizations"),
        "{err}"
    );
    assert_eq!(scalar(&mut conn, "SELECT count(*) FROM organizations"), 1);
}

#[test]
fn a_failure_in_the_middle_leaves_the_database_as_it_was() {
    let db = pgops_schema::testing::database().unwrap();
    let mut conn = db.connect().unwrap();
    conn.batch_execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;
         CREATE TRIGGER refuse_notes BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .unwrap();
    let err = seed(
        &mut conn,
        &options(Dataset::Development, 1, 0.05),
        &mut NoProgress,
    )
    .unwrap_err();
    let message = pgops_pg::report(&err);
    assert!(
        message.contains("loading notes") && message.contains("injected failure"),
        "{message}"
    );
    for table in pgops_schema::TABLES {
        assert_eq!(
            scalar(&mut conn, &format!("SELECT count(*) FROM {table}")),
            0,
            "{table} is empty again"
        );
    }
    assert_eq!(
        text(
            &mut conn,
            "SELECT coalesce(to_regclass('pgops_seed_ledger')::text, 'none')"
        ),
        "none"
    );
}

#[test]
fn an_unmigrated_database_is_refused() {
    let db = TestDatabase::empty().unwrap();
    let mut conn = db.connect().unwrap();
    let err = seed(&mut conn, &options(Dataset::Test, 1, 1.0), &mut NoProgress).unwrap_err();
    assert!(
        err.to_string()
            .contains("table organizations does not exist; migrate first"),
        "{err}"
    );
}

#[test]
fn production_is_refused_before_anything_happens() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    let err = pgops_seed::refuse_production(&env(&[("PGOPS_ENV", "production")])).unwrap_err();
    assert!(
        err.to_string()
            .contains("refusing to seed: PGOPS_ENV=production"),
        "{err}"
    );
    assert!(pgops_seed::refuse_production(&env(&[("APP_ENV", "Production")])).is_err());
    assert!(
        pgops_seed::refuse_production(&env(&[("PGOPS_ENV", "staging"), ("APP_ENV", "production")]))
            .is_ok()
    );
    assert!(pgops_seed::refuse_production(&env(&[])).is_ok());
}

#[test]
fn staging_data_is_skewed_like_production() {
    let db = pgops_schema::testing::database().unwrap();
    let mut conn = db.connect().unwrap();
    let c = &mut conn;
    seed(c, &options(Dataset::Staging, 3, 0.02), &mut NoProgress).unwrap();
    let largest = scalar(
        c,
        "SELECT max(n) FROM (SELECT count(*) n FROM patients GROUP BY organization_id) s",
    );
    let smallest = scalar(
        c,
        "SELECT min(n) FROM (SELECT count(*) n FROM patients GROUP BY organization_id) s",
    );
    let organizations = scalar(c, "SELECT count(*) FROM organizations");
    assert!(
        organizations >= 5,
        "even a small staging dataset has several organizations"
    );
    assert!(
        largest >= 5 * smallest,
        "a few large organizations and a long tail: {largest} vs {smallest}"
    );
    assert!(
        largest * organizations >= 2 * scalar(c, "SELECT count(*) FROM patients"),
        "the largest holds at least twice its even share"
    );
    let busiest = scalar(
        c,
        "SELECT max(n) FROM (SELECT count(*) n FROM audit_logs WHERE user_id IS NOT NULL GROUP BY user_id) s",
    );
    let median = scalar(
        c,
        "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY n) FROM (SELECT count(*) n FROM audit_logs WHERE user_id IS NOT NULL GROUP BY user_id) s",
    );
    assert!(
        busiest >= 20 * median.max(1),
        "busy and quiet users: {busiest} vs median {median}"
    );
    // Referential integrity holds (the foreign keys were checked on load) and emails are unique.
    assert_eq!(
        scalar(c, "SELECT count(*) - count(DISTINCT email) FROM users"),
        0
    );
    assert_eq!(
        scalar(
            c,
            "SELECT count(*) FROM audit_logs WHERE created_at > '2026-01-01'"
        ),
        0,
        "times come from a fixed clock"
    );
}

#[test]
fn migrations_and_seeding_run_over_verify_full_tls() {
    use diesel::Connection;
    let cluster =
        pgops_testkit::Cluster::start(pgops_testkit::ClusterOptions::default().tls(true)).unwrap();
    cluster.create_database("app").unwrap();
    let url = cluster.tls_url("app").unwrap();
    let mut conn = PgConnection::establish(&url).unwrap();
    assert_eq!(
        text(
            &mut conn,
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ),
        "true"
    );
    let applied = pgops_schema::migrate(&mut conn).unwrap();
    assert!(!applied.is_empty());
    let Outcome::Seeded(report) =
        seed(&mut conn, &options(Dataset::Test, 1, 1.0), &mut NoProgress).unwrap()
    else {
        panic!("expected a load")
    };
    assert!(
        report.tables.iter().all(|t| t.rows > 0),
        "{:?}",
        report.tables
    );
    // The same URL with an unrelated CA is refused before any of it.
    let files = cluster.tls().unwrap();
    let wrong = url.replace(
        &files.root_cert.display().to_string(),
        &files.other_root_cert.display().to_string(),
    );
    let Err(err) = PgConnection::establish(&wrong) else {
        panic!("an unrelated CA was accepted")
    };
    let err = err.to_string();
    assert!(err.contains("certificate verify failed"), "{err}");
}
