//! Run diesel migrations safely: one run at a time per database (PostgreSQL advisory lock),
//! a `lock_timeout` on transactional migrations, a checksum ledger that notices edited
//! migrations, and a round-trip check that every `down.sql` exactly undoes its `up.sql`.
//!
//! ```no_run
//! use diesel::{Connection, PgConnection};
//! use pgops_migrate::{MigrationSet, Migrator};
//!
//! let set = MigrationSet::from_dir("migrations").unwrap();
//! let mut conn = PgConnection::establish("postgres://localhost/app").unwrap();
//! let applied = Migrator::new(&set).run(&mut conn).unwrap();
//! ```

mod error;
#[cfg(feature = "lint")]
pub mod lint;
mod roundtrip;
mod runner;
mod snapshot;
mod source;

pub use error::{Error, Result};
pub use roundtrip::{RoundTripReport, round_trip};
pub use runner::{
    ADVISORY_LOCK_KEY, DIESEL_TABLE, Finding, FindingKind, LEDGER_TABLE, MigrationStatus, Migrator,
    RunOptions, Severity, Status,
};
pub use snapshot::{Snapshot, snapshot};
pub use source::{EmbeddedMigration, MigrationSet, SqlMigration};
