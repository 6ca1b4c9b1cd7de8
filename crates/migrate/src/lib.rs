//! Run diesel migrations safely: one run at a time per database (PostgreSQL advisory lock),
//! a `lock_timeout` on transactional migrations, a checksum ledger that notices edited
//! migrations, a check that every `down.sql` exactly undoes its `up.sql`, and drift between a
//! live database and what its migrations make.
//!
//! ```no_run
//! use diesel::{Connection, PgConnection};
//! use pgops_migrate::{MigrationSet, Migrator};
//!
//! let set = MigrationSet::from_dir("migrations").unwrap();
//! let mut conn = PgConnection::establish("postgres://localhost/app").unwrap();
//! let applied = Migrator::new(&set).run(&mut conn).unwrap();
//! ```

mod check;
mod drift;
mod error;
#[cfg(feature = "lint")]
pub mod lint;
mod runner;
pub mod scratch;
mod snapshot;
mod source;
mod text;

pub use check::{CheckReport, Problem, ProblemKind, check};
pub use drift::{Drift, drift};
pub use error::{Error, Result};
pub use runner::{
    ADVISORY_LOCK_KEY, DIESEL_TABLE, Finding, FindingKind, LEDGER_TABLE, MigrationStatus, Migrator,
    RunOptions, Severity, Status,
};
pub use snapshot::{Difference, PGOPS_TABLES, Snapshot, snapshot};
pub use source::{EmbeddedMigration, MigrationSet, SqlMigration};
