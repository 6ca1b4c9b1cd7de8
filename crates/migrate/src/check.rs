//! The migration check a service's CI runs: on a scratch database where none of the
//! migrations is applied, every migration up (the schema recorded after each), then from the
//! newest down: `down.sql` must give back the schema from before its `up.sql`, and `up.sql`
//! again the schema from after it; then the whole history up again, which must give the same
//! schema as the first time; then `validate`. The first problem stops the check and is named:
//! the migration, the step, the server's error with the statement's line, or the schema
//! objects that differ.

use std::{
    fmt,
    time::{Duration, Instant},
};

use diesel::PgConnection;
use serde::Serialize;

use crate::{
    Difference, Error, Migrator, Result, Severity, Snapshot, SqlMigration,
    runner::{Direction, applied_versions},
    snapshot,
};

/// What a check covered and the first problem it found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Where the migrations came from.
    pub origin: String,
    /// Migrations checked.
    pub migrations: usize,
    /// Schema objects in the fully migrated database.
    pub objects: usize,
    /// Migrations applied or reverted, in all.
    pub steps: usize,
    /// How long the whole check took.
    #[serde(serialize_with = "seconds")]
    pub elapsed: Duration,
    /// The first problem, or `None` when every migration round-trips.
    pub problem: Option<Problem>,
}

/// A migration that does not round-trip.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The migration to fix (its directory name).
    pub migration: String,
    /// What went wrong.
    pub kind: ProblemKind,
    /// The file to fix: `up.sql` or `down.sql`.
    pub file: &'static str,
    /// The server's error, when a statement failed.
    pub error: Option<String>,
    /// 1-based line (in `file`) of the statement that failed, when known.
    pub line: Option<usize>,
    /// The schema objects that differ from what was expected.
    pub differences: Vec<Difference>,
}

/// The kinds of problem, each naming the step that found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// `up.sql` failed on the way up.
    UpFailed,
    /// The migration has no `down.sql`.
    DownMissing,
    /// `down.sql` failed.
    DownFailed,
    /// `down.sql` ran but did not restore the schema from before `up.sql`.
    DownDiffers,
    /// `up.sql` failed when applied again after `down.sql`.
    UpAgainFailed,
    /// `up.sql` applied again after `down.sql` gave another schema than the first time.
    UpAgainDiffers,
    /// Applying the whole history again gave another schema than the first time.
    ReapplyDiffers,
    /// `validate` found the ledger and the source disagreeing after the check.
    Validate,
}

impl ProblemKind {
    /// One sentence for the report.
    pub fn describe(self) -> &'static str {
        match self {
            ProblemKind::UpFailed => "up.sql fails",
            ProblemKind::DownMissing => "there is no down.sql, so it cannot be reverted",
            ProblemKind::DownFailed => "down.sql fails",
            ProblemKind::DownDiffers => "down.sql does not restore the schema from before up.sql",
            ProblemKind::UpAgainFailed => "up.sql fails when applied again after down.sql",
            ProblemKind::UpAgainDiffers => {
                "up.sql applied again after down.sql gives another schema than the first time"
            }
            ProblemKind::ReapplyDiffers => {
                "applying every migration again gives another schema than the first time"
            }
            ProblemKind::Validate => "validate disagrees after the check",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.migration, self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}", self.kind.describe())?;
        if let Some(error) = &self.error {
            write!(f, ": {error}")?;
        }
        if !self.differences.is_empty() {
            write!(
                f,
                "\n  (expected: the schema recorded before; found: after)"
            )?;
            for difference in &self.differences {
                write!(f, "\n{difference}")?;
            }
        }
        Ok(())
    }
}

/// Runs the check on `conn`, which must have none of the migrations applied. Leaves the
/// database fully migrated when the check passes. `Err` only for what stops the check
/// itself (the database, the lock, a database that is not fresh).
pub fn check(migrator: &Migrator<'_>, conn: &mut PgConnection) -> Result<CheckReport> {
    let started = Instant::now();
    let applied = applied_versions(conn)?.len();
    if applied > 0 {
        return Err(Error::NotFresh { applied });
    }
    let set = migrator.set();
    let mut run = Run {
        steps: 0,
        objects: 0,
    };
    let quiet = migrator.clone().quiet();
    let problem = quiet.with_lock(conn, |this, conn| run.all(this, conn))?;
    let problem = match problem {
        Some(problem) => Some(problem),
        None => validate(migrator, conn)?,
    };
    Ok(CheckReport {
        origin: set.origin().to_owned(),
        migrations: set.migrations().len(),
        objects: run.objects,
        steps: run.steps,
        elapsed: started.elapsed(),
        problem,
    })
}

struct Run {
    steps: usize,
    objects: usize,
}

impl Run {
    fn all(&mut self, this: &Migrator<'_>, conn: &mut PgConnection) -> Result<Option<Problem>> {
        let migrations = this.set().migrations();
        let mut states = vec![snapshot(conn)?];
        for migration in migrations {
            if let Some(problem) = self.step(this, conn, migration, Direction::Up)? {
                return Ok(Some(problem.of(ProblemKind::UpFailed)));
            }
            states.push(snapshot(conn)?);
        }
        let first = states.last().cloned().unwrap_or_default();
        self.objects = first.len();

        for (i, migration) in migrations.iter().enumerate().rev() {
            if !migration.has_down() {
                return Ok(Some(Problem::new(
                    migration,
                    ProblemKind::DownMissing,
                    "down.sql",
                )));
            }
            if let Some(problem) = self.step(this, conn, migration, Direction::Down)? {
                return Ok(Some(problem.of(ProblemKind::DownFailed)));
            }
            if let Some(problem) = compare(&states[i], conn, migration, ProblemKind::DownDiffers)? {
                return Ok(Some(problem));
            }
            if let Some(problem) = self.step(this, conn, migration, Direction::Up)? {
                return Ok(Some(problem.of(ProblemKind::UpAgainFailed)));
            }
            if let Some(problem) =
                compare(&states[i + 1], conn, migration, ProblemKind::UpAgainDiffers)?
            {
                return Ok(Some(problem));
            }
            if let Some(problem) = self.step(this, conn, migration, Direction::Down)? {
                return Ok(Some(problem.of(ProblemKind::DownFailed)));
            }
        }

        for migration in migrations {
            if let Some(problem) = self.step(this, conn, migration, Direction::Up)? {
                return Ok(Some(problem.of(ProblemKind::UpAgainFailed)));
            }
        }
        match migrations.last() {
            Some(last) => compare(&first, conn, last, ProblemKind::ReapplyDiffers),
            None => Ok(None),
        }
    }

    /// Applies or reverts one migration; a failure of its SQL is a problem (with the failing
    /// statement's line), anything else stops the check.
    fn step(
        &mut self,
        this: &Migrator<'_>,
        conn: &mut PgConnection,
        migration: &SqlMigration,
        direction: Direction,
    ) -> Result<Option<Problem>> {
        self.steps += 1;
        let outcome = match direction {
            Direction::Up => this.apply(conn, migration),
            Direction::Down => this.undo(conn, migration),
        };
        match outcome {
            Ok(()) => Ok(None),
            Err(Error::MigrationFailed { message, .. }) => {
                let file = direction.file();
                let sql = match direction {
                    Direction::Up => migration.up_sql(),
                    Direction::Down => migration.down_sql(),
                };
                let line = failing_line(conn, sql, migration.run_in_transaction());
                let mut problem = Problem::new(migration, ProblemKind::UpFailed, file);
                problem.error = Some(message);
                problem.line = line;
                Ok(Some(problem))
            }
            Err(other) => Err(other),
        }
    }
}

impl Problem {
    fn new(migration: &SqlMigration, kind: ProblemKind, file: &'static str) -> Problem {
        Problem {
            migration: migration.name().to_owned(),
            kind,
            file,
            error: None,
            line: None,
            differences: Vec::new(),
        }
    }

    fn of(mut self, kind: ProblemKind) -> Problem {
        self.kind = kind;
        self
    }
}

/// The schema now against `expected`; a problem naming `migration` when they differ.
fn compare(
    expected: &Snapshot,
    conn: &mut PgConnection,
    migration: &SqlMigration,
    kind: ProblemKind,
) -> Result<Option<Problem>> {
    let found = snapshot(conn)?;
    if *expected == found {
        return Ok(None);
    }
    let file = match kind {
        ProblemKind::DownDiffers => "down.sql",
        _ => "up.sql",
    };
    let mut problem = Problem::new(migration, kind, file);
    problem.differences = expected.differences(&found);
    Ok(Some(problem))
}

/// After the round trip the ledger must agree with the source: no error-level finding.
fn validate(migrator: &Migrator<'_>, conn: &mut PgConnection) -> Result<Option<Problem>> {
    let finding = migrator
        .validate(conn)?
        .into_iter()
        .find(|f| f.severity == Severity::Error);
    Ok(finding.map(|f| Problem {
        migration: f.name.unwrap_or(f.version),
        kind: ProblemKind::Validate,
        file: "up.sql",
        error: Some(f.detail),
        line: None,
        differences: Vec::new(),
    }))
}

/// The line of the statement of `sql` that fails: for a migration run in a transaction,
/// found by running its statements one by one in a transaction that is rolled back; for one
/// run outside, only when it is a single statement. Needs PostgreSQL's parser (`lint`).
#[cfg(feature = "lint")]
fn failing_line(conn: &mut PgConnection, sql: &str, transactional: bool) -> Option<usize> {
    use diesel::connection::SimpleConnection as _;
    let statements = crate::text::statements(sql)?;
    let line = |s: &crate::text::Statement<'_>| crate::text::position(sql, s.first_token).0;
    if !transactional {
        return match statements.as_slice() {
            [only] => Some(line(only)),
            _ => None,
        };
    }
    conn.batch_execute("BEGIN").ok()?;
    let failing = statements
        .iter()
        .find(|s| conn.batch_execute(s.text).is_err())
        .map(line);
    let _ = conn.batch_execute("ROLLBACK");
    failing
}

/// Without PostgreSQL's parser statements cannot be told apart.
#[cfg(not(feature = "lint"))]
fn failing_line(_conn: &mut PgConnection, _sql: &str, _transactional: bool) -> Option<usize> {
    None
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}
