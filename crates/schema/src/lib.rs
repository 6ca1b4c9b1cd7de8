//! The sample application schema that seeding, benchmarks, docs and tests share: a clinical
//! documentation service (organizations, users, sessions, patients, encounters, notes,
//! audit_logs). Its migrations live in the workspace's `migrations/` directory and are
//! compiled in here, so a binary can migrate a database without a source tree.

pub mod models;
pub mod schema;

#[cfg(feature = "testkit")]
pub mod testing;

use diesel::PgConnection;
use pgops_migrate::{EmbeddedMigration, MigrationSet, Migrator};

/// The migrations of `migrations/`, as compiled into this crate.
pub const EMBEDDED_MIGRATIONS: &[EmbeddedMigration] =
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// The sample schema's tables, in foreign-key order (parents first).
pub const TABLES: &[&str] = &[
    "organizations",
    "users",
    "sessions",
    "patients",
    "encounters",
    "notes",
    "audit_logs",
];

/// The embedded migrations as a set the runner takes.
pub fn migrations() -> pgops_migrate::Result<MigrationSet> {
    MigrationSet::from_embedded(EMBEDDED_MIGRATIONS)
}

/// Applies every pending migration of the sample schema (under the runner's advisory lock)
/// and returns the names of those it applied.
pub fn migrate(conn: &mut PgConnection) -> pgops_migrate::Result<Vec<String>> {
    let set = migrations()?;
    Migrator::new(&set).run(conn)
}
