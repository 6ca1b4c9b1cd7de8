//! Applying and reverting migrations safely: one run at a time per database (advisory lock),
//! a `lock_timeout` on transactional migrations, and a checksum ledger beside diesel's own
//! bookkeeping table so that an edited, already-applied migration is noticed.

use std::{
    collections::BTreeMap,
    error::Error as StdError,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use diesel::{
    Connection, PgConnection, QueryableByName, RunQueryDsl,
    connection::SimpleConnection,
    dsl::sql,
    sql_types::{Bool, Nullable, Text, Timestamptz},
};
use diesel_migrations::MigrationHarness;
use serde::Serialize;

use crate::{Error, MigrationSet, Result, SqlMigration};

/// The advisory lock key all pgops migration runs of a database share ("pgopsmig").
pub const ADVISORY_LOCK_KEY: i64 = 0x7067_6f70_736d_6967;

/// diesel's table of applied versions.
pub const DIESEL_TABLE: &str = "__diesel_schema_migrations";

/// Our ledger of what each applied migration's SQL was.
pub const LEDGER_TABLE: &str = "pgops_migration_ledger";

/// How a run behaves around locks.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `lock_timeout` while a transactional migration runs: a migration that cannot get its
    /// table lock fails fast instead of queueing the application's traffic behind it.
    pub lock_timeout: Duration,
    /// `statement_timeout` for transactional migrations (`None`: no limit).
    pub statement_timeout: Option<Duration>,
    /// How long to wait for another run that holds the migration lock.
    pub lock_wait: Duration,
}

/// Runs a [`MigrationSet`] against a database.
#[derive(Debug, Clone)]
pub struct Migrator<'a> {
    set: &'a MigrationSet,
    options: RunOptions,
    /// Log each migration applied or reverted at info level (the check logs them at debug).
    log_steps: bool,
}

/// One migration's state in a database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationStatus {
    /// Its version.
    pub version: String,
    /// Its directory name.
    pub name: String,
    /// When it was applied, or `None` when pending.
    pub applied_at: Option<DateTime<Utc>>,
    /// Whether it runs in a transaction.
    pub run_in_transaction: bool,
}

/// What `status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Every migration of the source, oldest first.
    pub migrations: Vec<MigrationStatus>,
    /// Versions applied in the database that the source does not have.
    pub unknown_applied: Vec<String>,
}

/// How serious a validation finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The database and the source disagree: fix before deploying.
    Error,
    /// Worth knowing; does not fail validation.
    Warning,
}

/// What validation can find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// The `up.sql` of an applied migration changed since it ran.
    UpChanged,
    /// The `down.sql` of an applied migration changed since it ran.
    DownChanged,
    /// A migration is applied in the database but missing from the source.
    MissingFromSource,
    /// An applied migration has no ledger entry (applied by another tool), so it cannot be checked.
    Unrecorded,
    /// A pending migration is older than the newest applied one; it will run out of order.
    OutOfOrder,
}

/// One validation finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What was found.
    pub kind: FindingKind,
    /// How serious it is.
    pub severity: Severity,
    /// The migration's version.
    pub version: String,
    /// The migration's name, when the source has it.
    pub name: Option<String>,
    /// A sentence for the operator.
    pub detail: String,
}

/// Which way a migration runs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Direction {
    Up,
    Down,
}

#[derive(Debug, QueryableByName)]
struct AppliedRow {
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = Timestamptz)]
    run_on: DateTime<Utc>,
}

#[derive(Debug, QueryableByName)]
struct LedgerRow {
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = Text)]
    up_sha256: String,
    #[diesel(sql_type = Text)]
    down_sha256: String,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            lock_timeout: Duration::from_secs(5),
            statement_timeout: None,
            lock_wait: Duration::from_secs(300),
        }
    }
}

impl Direction {
    pub(crate) fn file(self) -> &'static str {
        match self {
            Direction::Up => "up.sql",
            Direction::Down => "down.sql",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Direction::Up => "applied",
            Direction::Down => "reverted",
        }
    }
}

impl Status {
    /// The migrations not applied yet.
    pub fn pending(&self) -> impl Iterator<Item = &MigrationStatus> {
        self.migrations.iter().filter(|m| m.applied_at.is_none())
    }
}

impl<'a> Migrator<'a> {
    /// A runner for `set` with default options.
    pub fn new(set: &'a MigrationSet) -> Self {
        Migrator {
            set,
            options: RunOptions::default(),
            log_steps: true,
        }
    }

    /// The same runner with other options.
    pub fn with_options(mut self, options: RunOptions) -> Self {
        self.options = options;
        self
    }

    /// The same runner logging each step at debug level only.
    pub(crate) fn quiet(mut self) -> Self {
        self.log_steps = false;
        self
    }

    /// The migrations it runs.
    pub fn set(&self) -> &'a MigrationSet {
        self.set
    }

    /// Its options.
    pub fn options(&self) -> &RunOptions {
        &self.options
    }

    /// Applies every pending migration, oldest first, and returns their names. Safe to call
    /// from several processes at once: one applies, the others wait and find nothing to do.
    pub fn run(&self, conn: &mut PgConnection) -> Result<Vec<String>> {
        self.with_lock(conn, |this, conn| {
            let applied = applied_versions(conn)?;
            let mut done = Vec::new();
            for migration in self.set.migrations() {
                if !applied.contains_key(migration.version()) {
                    this.apply(conn, migration)?;
                    done.push(migration.name().to_owned());
                }
            }
            Ok(done)
        })
    }

    /// Reverts the last `count` applied migrations, newest first, and returns their names.
    pub fn revert(&self, conn: &mut PgConnection, count: usize) -> Result<Vec<String>> {
        self.with_lock(conn, |this, conn| {
            let applied = applied_versions(conn)?;
            if applied.is_empty() && count > 0 {
                return Err(Error::NothingToRevert);
            }
            let mut done = Vec::new();
            for version in applied.keys().rev().take(count) {
                let migration = self.set.get(version).ok_or_else(|| Error::UnknownApplied {
                    version: version.clone(),
                })?;
                this.undo(conn, migration)?;
                done.push(migration.name().to_owned());
            }
            Ok(done)
        })
    }

    /// Reverts the newest applied migration and applies it again.
    pub fn redo(&self, conn: &mut PgConnection) -> Result<String> {
        self.with_lock(conn, |this, conn| {
            let applied = applied_versions(conn)?;
            let version = applied.keys().next_back().ok_or(Error::NothingToRevert)?;
            let migration = self.set.get(version).ok_or_else(|| Error::UnknownApplied {
                version: version.clone(),
            })?;
            this.undo(conn, migration)?;
            this.apply(conn, migration)?;
            Ok(migration.name().to_owned())
        })
    }

    /// Which migrations are applied and which are pending. Reads only; creates nothing.
    pub fn status(&self, conn: &mut PgConnection) -> Result<Status> {
        let applied = applied_versions(conn)?;
        let migrations = self
            .set
            .migrations()
            .iter()
            .map(|m| MigrationStatus {
                version: m.version().to_owned(),
                name: m.name().to_owned(),
                applied_at: applied.get(m.version()).copied(),
                run_in_transaction: m.run_in_transaction(),
            })
            .collect();
        let unknown_applied = applied
            .keys()
            .filter(|v| self.set.get(v).is_none())
            .cloned()
            .collect();
        Ok(Status {
            migrations,
            unknown_applied,
        })
    }

    /// Compares what ran with what the source says now. Reads only.
    pub fn validate(&self, conn: &mut PgConnection) -> Result<Vec<Finding>> {
        let applied = applied_versions(conn)?;
        let ledger: BTreeMap<String, LedgerRow> = if table_exists(conn, LEDGER_TABLE)? {
            diesel::sql_query(format!(
                "SELECT version, up_sha256, down_sha256 FROM {LEDGER_TABLE}"
            ))
            .load::<LedgerRow>(conn)
            .map_err(Error::db("reading the migration ledger"))?
            .into_iter()
            .map(|row| (row.version.clone(), row))
            .collect()
        } else {
            BTreeMap::new()
        };
        Ok(findings(self.set, &applied, &ledger))
    }

    /// Runs `work` holding the migration lock, with the ledger in place.
    pub(crate) fn with_lock<T>(
        &self,
        conn: &mut PgConnection,
        work: impl FnOnce(&Self, &mut PgConnection) -> Result<T>,
    ) -> Result<T> {
        acquire_lock(conn, self.options.lock_wait)?;
        let result = ensure_ledger(conn).and_then(|()| work(self, conn));
        // Always give the lock and the session settings back, even after a failure.
        let released = conn
            .batch_execute(&format!("RESET lock_timeout; RESET statement_timeout; SELECT pg_advisory_unlock({ADVISORY_LOCK_KEY})"))
            .map_err(Error::db("releasing the migration lock"));
        let value = result?;
        released?;
        Ok(value)
    }

    /// Applies one migration and records it in the ledger.
    pub(crate) fn apply(&self, conn: &mut PgConnection, migration: &SqlMigration) -> Result<()> {
        self.step(conn, migration, Direction::Up, |conn| {
            conn.run_migration(migration)?;
            diesel::sql_query(format!(
                "INSERT INTO {LEDGER_TABLE} (version, name, up_sha256, down_sha256) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (version) DO UPDATE SET name = EXCLUDED.name, up_sha256 = EXCLUDED.up_sha256,
                     down_sha256 = EXCLUDED.down_sha256, applied_at = now()"
            ))
            .bind::<Text, _>(migration.version())
            .bind::<Text, _>(migration.name())
            .bind::<Text, _>(migration.up_sha256())
            .bind::<Text, _>(migration.down_sha256())
            .execute(conn)?;
            Ok(())
        })
    }

    /// Reverts one migration and removes it from the ledger.
    pub(crate) fn undo(&self, conn: &mut PgConnection, migration: &SqlMigration) -> Result<()> {
        self.step(conn, migration, Direction::Down, |conn| {
            conn.revert_migration(migration)?;
            diesel::sql_query(format!("DELETE FROM {LEDGER_TABLE} WHERE version = $1"))
                .bind::<Text, _>(migration.version())
                .execute(conn)?;
            Ok(())
        })
    }

    /// Runs `work` (the migration and its ledger change) with the right session settings; for a
    /// transactional migration in one transaction, so a failure leaves the schema and the
    /// ledger as they were.
    fn step(
        &self,
        conn: &mut PgConnection,
        migration: &SqlMigration,
        direction: Direction,
        work: impl FnOnce(&mut PgConnection) -> Result<(), Box<dyn StdError + Send + Sync>>,
    ) -> Result<()> {
        ensure_lock_held(conn)?;
        self.session_settings(conn, migration)?;
        let started = Instant::now();
        let outcome = if migration.run_in_transaction() {
            conn.transaction(work)
        } else {
            work(conn)
        };
        outcome.map_err(|e| into_migration_error(e, migration, direction.file()))?;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if self.log_steps {
            tracing::info!(
                migration = migration.name(),
                elapsed_ms,
                "{}",
                direction.done()
            );
        } else {
            tracing::debug!(
                migration = migration.name(),
                elapsed_ms,
                "{}",
                direction.done()
            );
        }
        Ok(())
    }

    /// Transactional migrations get the short lock timeout; `CONCURRENTLY` ones must be free to
    /// wait for old transactions to finish, so they run without one.
    fn session_settings(&self, conn: &mut PgConnection, migration: &SqlMigration) -> Result<()> {
        let (lock, statement) = if migration.run_in_transaction() {
            (
                self.options.lock_timeout.as_millis(),
                self.options.statement_timeout.map_or(0, |d| d.as_millis()),
            )
        } else {
            (0, 0)
        };
        conn.batch_execute(&format!(
            "SET lock_timeout = {lock}; SET statement_timeout = {statement}"
        ))
        .map_err(Error::db("setting lock_timeout and statement_timeout"))
    }
}

/// The versions diesel has recorded as applied, with when; empty when its table is absent.
pub(crate) fn applied_versions(conn: &mut PgConnection) -> Result<BTreeMap<String, DateTime<Utc>>> {
    if !table_exists(conn, DIESEL_TABLE)? {
        return Ok(BTreeMap::new());
    }
    let rows = diesel::sql_query(format!(
        "SELECT version::text AS version, run_on FROM {DIESEL_TABLE}"
    ))
    .load::<AppliedRow>(conn)
    .map_err(Error::db("reading applied migrations"))?;
    Ok(rows.into_iter().map(|r| (r.version, r.run_on)).collect())
}

fn table_exists(conn: &mut PgConnection, table: &str) -> Result<bool> {
    diesel::select(
        sql::<Bool>("to_regclass(")
            .bind::<Text, _>(table)
            .sql(") IS NOT NULL"),
    )
    .get_result(conn)
    .map_err(Error::db(format!("looking for table {table}")))
}

/// Creates diesel's table and our ledger when missing.
fn ensure_ledger(conn: &mut PgConnection) -> Result<()> {
    diesel::migration::MigrationConnection::setup(conn)
        .map_err(Error::db(format!("creating {DIESEL_TABLE}")))?;
    conn.batch_execute(&format!(
        "SET lock_timeout = 0;
         CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} (
             version text PRIMARY KEY,
             name text NOT NULL,
             up_sha256 text NOT NULL,
             down_sha256 text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );
         COMMENT ON TABLE {LEDGER_TABLE} IS 'pgops-migrate: SHA-256 of each applied migration, checked by pgops migrate validate'"
    ))
    .map_err(Error::db(format!("creating {LEDGER_TABLE}")))
}

/// Takes the advisory lock, polling with `pg_try_advisory_lock` (a session blocked inside
/// `pg_advisory_lock` holds a snapshot, and `CREATE INDEX CONCURRENTLY` in the run holding the
/// lock would wait for that snapshot forever).
fn acquire_lock(conn: &mut PgConnection, wait: Duration) -> Result<()> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        let got: bool = diesel::select(sql::<Bool>(&format!(
            "pg_try_advisory_lock({ADVISORY_LOCK_KEY})"
        )))
        .get_result(conn)
        .map_err(Error::db("taking the migration lock"))?;
        if got {
            return Ok(());
        }
        if started.elapsed() >= wait {
            let holder: Option<String> = diesel::select(sql::<Nullable<Text>>(&format!(
                "(SELECT pid::text FROM pg_locks WHERE locktype = 'advisory' AND granted
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND classid = {} AND objid = {} AND objsubid = 1 LIMIT 1)",
                (ADVISORY_LOCK_KEY as u64 >> 32) as u32,
                (ADVISORY_LOCK_KEY as u64 & 0xFFFF_FFFF) as u32,
            )))
            .get_result(conn)
            .map_err(Error::db("finding the holder of the migration lock"))?;
            return Err(Error::LockTimeout {
                waited: started.elapsed(),
                holder: holder
                    .map(|pid| format!(" (backend pid {pid})"))
                    .unwrap_or_default(),
            });
        }
        tracing::debug!("migration lock busy; waiting");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Checks that this backend still holds the migration lock. Behind a pooler in transaction
/// mode the statements of one client land on several server connections, and the lock taken
/// on one would not protect the migration run on another: stop before changing anything.
fn ensure_lock_held(conn: &mut PgConnection) -> Result<()> {
    let held: bool = diesel::select(sql::<Bool>(&format!(
        "EXISTS (SELECT FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory' \
         AND granted AND classid = {} AND objid = {} AND objsubid = 1)",
        (ADVISORY_LOCK_KEY as u64 >> 32) as u32,
        (ADVISORY_LOCK_KEY as u64 & 0xFFFF_FFFF) as u32,
    )))
    .get_result(conn)
    .map_err(Error::db("checking the migration lock"))?;
    if held {
        Ok(())
    } else {
        Err(Error::LockNotHeld)
    }
}

fn into_migration_error(
    e: Box<dyn StdError + Send + Sync>,
    migration: &SqlMigration,
    direction: &'static str,
) -> Error {
    match e.downcast::<Error>() {
        Ok(ours) => *ours,
        Err(other) => Error::MigrationFailed {
            name: migration.name().to_owned(),
            direction,
            message: other.to_string(),
        },
    }
}

/// The validation decision over plain data.
fn findings(
    set: &MigrationSet,
    applied: &BTreeMap<String, DateTime<Utc>>,
    ledger: &BTreeMap<String, LedgerRow>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for version in applied.keys() {
        let Some(migration) = set.get(version) else {
            out.push(Finding {
                kind: FindingKind::MissingFromSource,
                severity: Severity::Error,
                version: version.clone(),
                name: None,
                detail: format!("version {version} is applied but not in {}", set.origin()),
            });
            continue;
        };
        let name = Some(migration.name().to_owned());
        match ledger.get(version) {
            None => out.push(Finding {
                kind: FindingKind::Unrecorded,
                severity: Severity::Warning,
                version: version.clone(),
                name,
                detail: format!(
                    "{} was applied without pgops, so its SQL cannot be compared",
                    migration.name()
                ),
            }),
            Some(row) => {
                if row.up_sha256 != migration.up_sha256() {
                    out.push(Finding {
                        kind: FindingKind::UpChanged,
                        severity: Severity::Error,
                        version: version.clone(),
                        name: name.clone(),
                        detail: format!(
                            "{}/up.sql changed after it was applied (sha256 then {}, now {}); restore it and put the change in a new migration",
                            migration.name(),
                            &row.up_sha256[..12.min(row.up_sha256.len())],
                            &migration.up_sha256()[..12]
                        ),
                    });
                }
                if row.down_sha256 != migration.down_sha256() {
                    out.push(Finding {
                        kind: FindingKind::DownChanged,
                        severity: Severity::Error,
                        version: version.clone(),
                        name,
                        detail: format!(
                            "{}/down.sql changed after it was applied; reverting would not undo what ran",
                            migration.name()
                        ),
                    });
                }
            }
        }
    }
    if let Some(newest) = applied.keys().next_back() {
        for migration in set.migrations() {
            if !applied.contains_key(migration.version()) && migration.version() < newest.as_str() {
                out.push(Finding {
                    kind: FindingKind::OutOfOrder,
                    severity: Severity::Warning,
                    version: migration.version().to_owned(),
                    name: Some(migration.name().to_owned()),
                    detail: format!(
                        "{} is pending but older than the newest applied migration ({newest}); it will run out of order",
                        migration.name()
                    ),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> MigrationSet {
        let m = |name: &str, up: &str| {
            SqlMigration::new(name, up.into(), "SELECT 0".into(), None).unwrap()
        };
        MigrationSet::new(
            vec![
                m("1_a", "SELECT 1"),
                m("2_b", "SELECT 2"),
                m("3_c", "SELECT 3"),
            ],
            "test".into(),
        )
        .unwrap()
    }

    fn ledger_of(set: &MigrationSet, versions: &[&str]) -> BTreeMap<String, LedgerRow> {
        versions
            .iter()
            .map(|v| {
                let m = set.get(v).unwrap();
                (
                    v.to_string(),
                    LedgerRow {
                        version: v.to_string(),
                        up_sha256: m.up_sha256().into(),
                        down_sha256: m.down_sha256().into(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn clean_when_source_matches_ledger() {
        let set = set();
        let applied = [("1".to_string(), Utc::now()), ("2".to_string(), Utc::now())].into();
        assert!(findings(&set, &applied, &ledger_of(&set, &["1", "2"])).is_empty());
    }

    #[test]
    fn reports_changed_missing_unrecorded_and_out_of_order() {
        let set = set();
        let applied = [
            ("1".to_string(), Utc::now()),
            ("3".to_string(), Utc::now()),
            ("9".to_string(), Utc::now()),
        ]
        .into();
        let mut ledger = ledger_of(&set, &["1"]);
        ledger.get_mut("1").unwrap().up_sha256 = "0".repeat(64);
        let found = findings(&set, &applied, &ledger);
        let kinds: Vec<_> = found.iter().map(|f| (f.kind, f.version.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (FindingKind::UpChanged, "1"),
                (FindingKind::Unrecorded, "3"),
                (FindingKind::MissingFromSource, "9"),
                (FindingKind::OutOfOrder, "2"),
            ]
        );
        assert!(found[0].detail.contains("1_a/up.sql changed"));
    }
}
