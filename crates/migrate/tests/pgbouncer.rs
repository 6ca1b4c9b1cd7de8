//! Migrations behind a real PgBouncer: in transaction pooling the session advisory lock would
//! be taken on one server connection and the migration run on another; the runner notices
//! and stops before applying anything. In session pooling migrations run as usual.
#![allow(clippy::unwrap_used)]

use diesel::{Connection, PgConnection, connection::SimpleConnection};
use pgops_migrate::{Error, MigrationSet, Migrator, SqlMigration};
use pgops_testkit::{Cluster, ClusterOptions, PgBouncer, PgBouncerOptions, PoolMode};

fn set() -> MigrationSet {
    let m = |name: &str, up: &str, down: &str| {
        SqlMigration::new(name, up.into(), down.into(), None).unwrap()
    };
    MigrationSet::new(
        vec![
            m(
                "1_a",
                "CREATE TABLE a (id bigint PRIMARY KEY);",
                "DROP TABLE a;",
            ),
            m(
                "2_b",
                "CREATE TABLE b (id bigint PRIMARY KEY);",
                "DROP TABLE b;",
            ),
        ],
        "test".into(),
    )
    .unwrap()
}

fn tables(cluster: &Cluster) -> String {
    cluster
        .query_text(
            "postgres",
            "(SELECT coalesce(string_agg(relname, ',' ORDER BY relname), '') FROM pg_class \
              WHERE relname IN ('a', 'b') AND relkind = 'r')",
        )
        .unwrap()
        .unwrap_or_default()
}

#[test]
fn transaction_pooling_is_refused_before_any_migration_and_session_pooling_works() {
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();
    // Round robin over two open server connections: consecutive transactions of one client
    // land on different backends, as they do under load.
    let options = PgBouncerOptions::new(PoolMode::Transaction, 4)
        .set("min_pool_size", "2")
        .set("server_round_robin", "1");
    let bouncer = PgBouncer::start(&cluster, options).unwrap();
    // Two transactions at once make PgBouncer open two server connections.
    let mut first = PgConnection::establish(&bouncer.url("postgres")).unwrap();
    let mut second = PgConnection::establish(&bouncer.url("postgres")).unwrap();
    first.batch_execute("BEGIN; SELECT 1").unwrap();
    second.batch_execute("BEGIN; SELECT 1").unwrap();
    first.batch_execute("COMMIT").unwrap();
    second.batch_execute("COMMIT").unwrap();
    let set = set();
    let mut refused = 0;
    for _ in 0..5 {
        let mut conn = PgConnection::establish(&bouncer.url("postgres")).unwrap();
        match Migrator::new(&set).run(&mut conn) {
            Err(Error::LockNotHeld) => refused += 1,
            Err(other) => panic!("unexpected: {other}"),
            Ok(applied) => panic!("migrated behind transaction pooling: {applied:?}"),
        }
    }
    assert_eq!(refused, 5);
    assert_eq!(tables(&cluster), "", "nothing applied");

    let session = PgBouncer::start(&cluster, PgBouncerOptions::new(PoolMode::Session, 4)).unwrap();
    let mut conn = PgConnection::establish(&session.url("postgres")).unwrap();
    // A lock left on a server connection by the refused runs is released with it.
    drop(bouncer);
    let applied = Migrator::new(&set).run(&mut conn).unwrap();
    assert_eq!(applied, ["1_a", "2_b"]);
    assert_eq!(tables(&cluster), "a,b");
}
