//! The diesel `table!` definitions match the migrated database column by column (name,
//! order, type OID, nullability, primary key), and every model reads and writes real rows.
#![allow(clippy::unwrap_used)]

use chrono::{NaiveDate, Utc};
use diesel::{
    Column, Expression, PgConnection, QueryableByName, RunQueryDsl, Table,
    pg::Pg,
    prelude::*,
    sql_types::{self, HasSqlType, SqlType},
};
use pgops_schema::{models::*, schema};

trait NullFlag {
    const NULLABLE: bool;
}
impl NullFlag for sql_types::is_nullable::IsNullable {
    const NULLABLE: bool = true;
}
impl NullFlag for sql_types::is_nullable::NotNull {
    const NULLABLE: bool = false;
}

#[derive(Debug, PartialEq, Eq, QueryableByName)]
struct DbColumn {
    #[diesel(sql_type = sql_types::Text)]
    name: String,
    #[diesel(sql_type = sql_types::BigInt)]
    oid: i64,
    #[diesel(sql_type = sql_types::Bool)]
    nullable: bool,
}

/// (name, type oid, nullable) of each listed column, as the compiled `table!` says.
macro_rules! declared {
    ($conn:expr, $table:ident: $($col:ident),+ $(,)?) => {{
        let columns = vec![
            $(
                DbColumn {
                    name: <schema::$table::$col as Column>::NAME.to_owned(),
                    oid: <Pg as HasSqlType<<schema::$table::$col as Expression>::SqlType>>::metadata($conn).oid().unwrap() as i64,
                    nullable: <<<schema::$table::$col as Expression>::SqlType as SqlType>::IsNull as NullFlag>::NULLABLE,
                },
            )+
        ];
        // The list above must be the table's complete column list, in order.
        let all = diesel::debug_query::<Pg, _>(&schema::$table::table.select(schema::$table::all_columns)).to_string();
        let listed: Vec<String> = all
            .trim_start_matches("SELECT ")
            .split(" FROM ")
            .next()
            .unwrap()
            .split(", ")
            .map(|c| c.rsplit('.').next().unwrap().trim_matches('"').to_owned())
            .collect();
        assert_eq!(listed, columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>(), "column list of {}", stringify!($table));
        let pk = <schema::$table::table as Table>::primary_key(&schema::$table::table);
        (stringify!($table), columns, column_name(pk))
    }};
}

fn column_name<C: Column>(_: C) -> &'static str {
    C::NAME
}

fn actual(conn: &mut PgConnection, table: &str) -> (Vec<DbColumn>, Vec<String>) {
    let columns = diesel::sql_query(
        "SELECT a.attname::text AS name, a.atttypid::int8 AS oid, NOT a.attnotnull AS nullable
         FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum",
    )
    .bind::<sql_types::Text, _>(table)
    .load(conn)
    .unwrap();
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = sql_types::Text)]
        name: String,
    }
    let pk = diesel::sql_query(
        "SELECT a.attname::text AS name FROM pg_index i
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         WHERE i.indrelid = $1::regclass AND i.indisprimary",
    )
    .bind::<sql_types::Text, _>(table)
    .load::<Name>(conn)
    .unwrap()
    .into_iter()
    .map(|n| n.name)
    .collect();
    (columns, pk)
}

#[test]
fn table_definitions_match_the_migrated_database() {
    let db = pgops_schema::testing::database().unwrap();
    let mut conn = db.connect().unwrap();
    let c = &mut conn;
    let declared = vec![
        declared!(c, organizations: id, name, slug, created_at, updated_at),
        declared!(c, users: id, organization_id, email, full_name, role, created_at, updated_at, deleted_at),
        declared!(c, sessions: id, user_id, token_hash, created_at, expires_at, last_seen_at, revoked_at, user_agent),
        declared!(c, patients: id, organization_id, mrn, first_name, last_name, date_of_birth, status, created_at, updated_at),
        declared!(c, encounters: id, patient_id, provider_id, kind, status, started_at, ended_at, created_at),
        declared!(c, notes: id, encounter_id, provider_id, kind, body, created_at, updated_at, signed_at),
        declared!(c, audit_logs: id, user_id, action, entity_type, entity_id, details, created_at),
    ];
    for (table, columns, pk) in &declared {
        let (db_columns, db_pk) = actual(c, table);
        assert_eq!(
            columns, &db_columns,
            "columns of {table}: table! (left) vs database (right)"
        );
        assert_eq!(db_pk, [*pk], "primary key of {table}");
    }

    #[derive(QueryableByName)]
    struct TableName {
        #[diesel(sql_type = sql_types::Text)]
        name: String,
    }
    let mut tables: Vec<String> = diesel::sql_query(
        "SELECT tablename::text AS name FROM pg_tables WHERE schemaname = 'public'
           AND tablename NOT IN ('__diesel_schema_migrations', 'pgops_migration_ledger') ORDER BY 1",
    )
    .load::<TableName>(c)
    .unwrap()
    .into_iter()
    .map(|t| t.name)
    .collect();
    let mut expected: Vec<String> = pgops_schema::TABLES.iter().map(|t| t.to_string()).collect();
    tables.sort();
    expected.sort();
    assert_eq!(
        tables, expected,
        "every table of the database has a table! definition"
    );
    assert_eq!(declared.len(), pgops_schema::TABLES.len());
}

#[test]
fn models_write_and_read_every_table() {
    use schema::*;
    let db = pgops_schema::testing::database().unwrap();
    let mut conn = db.connect().unwrap();
    let c = &mut conn;

    let org: Organization = diesel::insert_into(organizations::table)
        .values(NewOrganization {
            name: "Riverside Clinic",
            slug: "riverside",
        })
        .returning(Organization::as_returning())
        .get_result(c)
        .unwrap();
    let user: User = diesel::insert_into(users::table)
        .values(NewUser {
            organization_id: org.id,
            email: "ana@riverside.test",
            full_name: "Ana Ortiz",
            role: "clinician",
        })
        .returning(User::as_returning())
        .get_result(c)
        .unwrap();
    assert_eq!(user.deleted_at, None);
    let session: Session = diesel::insert_into(sessions::table)
        .values(NewSession {
            user_id: user.id,
            token_hash: &[1, 2, 3],
            expires_at: Utc::now() + chrono::Duration::hours(1),
            user_agent: Some("test"),
        })
        .returning(Session::as_returning())
        .get_result(c)
        .unwrap();
    assert_eq!(session.token_hash, vec![1, 2, 3]);
    let patient: Patient = diesel::insert_into(patients::table)
        .values(NewPatient {
            organization_id: org.id,
            mrn: "MRN-1",
            first_name: "Li",
            last_name: "Wei",
            date_of_birth: NaiveDate::from_ymd_opt(1980, 2, 29).unwrap(),
            status: "active",
        })
        .returning(Patient::as_returning())
        .get_result(c)
        .unwrap();
    let encounter: Encounter = diesel::insert_into(encounters::table)
        .values(NewEncounter {
            patient_id: patient.id,
            provider_id: user.id,
            kind: "telehealth",
            status: "open",
            started_at: Utc::now(),
            ended_at: None,
        })
        .returning(Encounter::as_returning())
        .get_result(c)
        .unwrap();
    let note: Note = diesel::insert_into(notes::table)
        .values(NewNote {
            encounter_id: encounter.id,
            provider_id: user.id,
            kind: "progress",
            body: "Stable.",
            signed_at: None,
        })
        .returning(Note::as_returning())
        .get_result(c)
        .unwrap();
    let log: AuditLog = diesel::insert_into(audit_logs::table)
        .values(NewAuditLog {
            user_id: Some(user.id),
            action: "note.create",
            entity_type: Some("note"),
            entity_id: Some(note.id),
            details: serde_json::json!({"encounter": encounter.id}),
        })
        .returning(AuditLog::as_returning())
        .get_result(c)
        .unwrap();

    assert_eq!(
        organizations::table
            .select(Organization::as_select())
            .first(c)
            .unwrap(),
        org
    );
    assert_eq!(
        users::table.select(User::as_select()).first(c).unwrap(),
        user
    );
    assert_eq!(
        patients::table
            .select(Patient::as_select())
            .first(c)
            .unwrap(),
        patient
    );
    assert_eq!(
        Note::belonging_to(&encounter)
            .select(Note::as_select())
            .load(c)
            .unwrap(),
        vec![note]
    );
    assert_eq!(
        audit_logs::table
            .select(AuditLog::as_select())
            .first(c)
            .unwrap()
            .details,
        log.details
    );
}

#[test]
fn email_is_unique_among_live_users_only() {
    use schema::*;
    let db = pgops_schema::testing::database().unwrap();
    let mut conn = db.connect().unwrap();
    let c = &mut conn;
    let org_id: i64 = diesel::insert_into(organizations::table)
        .values(NewOrganization {
            name: "North",
            slug: "north",
        })
        .returning(organizations::id)
        .get_result(c)
        .unwrap();
    let new = NewUser {
        organization_id: org_id,
        email: "sam@north.test",
        full_name: "Sam",
        role: "staff",
    };
    let first: i64 = diesel::insert_into(users::table)
        .values(&new)
        .returning(users::id)
        .get_result(c)
        .unwrap();
    let err = diesel::insert_into(users::table)
        .values(&new)
        .execute(c)
        .unwrap_err();
    assert!(err.to_string().contains("users_email_active_key"), "{err}");
    diesel::update(users::table.find(first))
        .set(users::deleted_at.eq(Some(Utc::now())))
        .execute(c)
        .unwrap();
    diesel::insert_into(users::table)
        .values(&new)
        .execute(c)
        .unwrap();
}

#[test]
fn performance_indexes_exist_and_are_valid() {
    let db = pgops_schema::testing::database().unwrap();
    for (index, definition) in [
        (
            "users_email_active_key",
            "UNIQUE INDEX users_email_active_key ON public.users USING btree (email) WHERE (deleted_at IS NULL)",
        ),
        (
            "sessions_user_active_idx",
            "(user_id, expires_at DESC) WHERE (revoked_at IS NULL)",
        ),
        ("audit_logs_user_created_idx", "(user_id, created_at DESC)"),
        (
            "patients_org_last_name_active_idx",
            "(organization_id, last_name) WHERE (status = 'active'::text)",
        ),
    ] {
        let def = db
            .cluster()
            .query_text(
                db.name(),
                &format!("(SELECT pg_get_indexdef(indexrelid) || ' valid=' || indisvalid FROM pg_index WHERE indexrelid = '{index}'::regclass)"),
            )
            .unwrap()
            .unwrap();
        assert!(
            def.contains(definition) && def.ends_with("valid=true"),
            "{index}: {def}"
        );
    }
}

#[test]
fn slow_queries_view_has_the_specified_columns_and_threshold() {
    let db = pgops_schema::testing::database().unwrap();
    let cluster = db.cluster();
    if !cluster.binaries().has_library("pg_stat_statements") {
        // Without contrib the migration skips the view; the round-trip test covers that path.
        assert_eq!(
            cluster
                .query_text(db.name(), "to_regclass('slow_queries')")
                .unwrap(),
            None
        );
        return;
    }
    // The columns dashboards written against the specification read, first and in order.
    let columns = cluster
        .query_text(
            db.name(),
            "(SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute \
              WHERE attrelid = 'slow_queries'::regclass AND attnum > 0)",
        )
        .unwrap()
        .unwrap();
    assert!(
        columns.starts_with(
            "query,calls,total_exec_time,mean_exec_time,max_exec_time,stddev_exec_time,rows,"
        ),
        "{columns}"
    );
    cluster
        .execute(db.name(), "SELECT pg_sleep(0.15) /* pgops-slow-probe */")
        .unwrap();
    cluster
        .execute(
            db.name(),
            "SELECT 1, pg_sleep(1.05) /* pgops-very-slow-probe */",
        )
        .unwrap();
    let count = |from: &str, probe: &str| {
        cluster
            .query_text(
                db.name(),
                &format!(
                    "(SELECT count(*) FROM {from} WHERE query LIKE '%{probe}%' \
                      AND mean_exec_time > 100 AND stddev_exec_time >= 0)"
                ),
            )
            .unwrap()
            .unwrap()
    };
    // Two shapes, so pg_stat_statements keeps them apart. The view: averages over one second.
    assert_eq!(count("slow_queries", "pgops-very-slow-probe"), "1");
    assert_eq!(count("slow_queries", "pgops-slow-probe"), "0");
    // Another threshold is an argument.
    assert_eq!(count("slow_queries(100)", "pgops-slow-probe"), "1");
    assert_eq!(count("slow_queries(2000)", "pgops-very-slow-probe"), "0");
}
