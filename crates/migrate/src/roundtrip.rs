//! The round-trip check: every migration's `down.sql` restores exactly the schema that was
//! there before its `up.sql`, and applying everything again gives the same schema.

use std::time::{Duration, Instant};

use diesel::PgConnection;

use crate::{Error, Migrator, Result, Snapshot, runner::applied_versions, snapshot};

/// What a successful round trip covered.
#[derive(Debug, Clone)]
pub struct RoundTripReport {
    /// Migrations checked.
    pub migrations: usize,
    /// Schema objects in the fully migrated database.
    pub objects: usize,
    /// How long the whole check took.
    pub elapsed: Duration,
}

/// Checks, on a scratch database where none of the migrations is applied:
/// 1. up one by one, recording the schema after each (`S0` .. `Sn`; `A = Sn`);
/// 2. from the newest down: `down` must give back `S(i-1)`, `up` again must give `S(i)`,
///    then `down` again; at the end none of the migrations' objects is left (`S0`);
/// 3. up all again must give `B = A`.
///
/// Leaves the database fully migrated. The first difference fails the check and names the
/// migration to fix.
pub fn round_trip(migrator: &Migrator<'_>, conn: &mut PgConnection) -> Result<RoundTripReport> {
    let started = Instant::now();
    let applied = applied_versions(conn)?.len();
    if applied > 0 {
        return Err(Error::NotFresh { applied });
    }
    let set = migrator.set();
    let single = |m: &crate::SqlMigration| {
        crate::MigrationSet::new(vec![m.clone()], set.origin().to_owned())
    };

    let mut states = vec![snapshot(conn)?];
    for migration in set.migrations() {
        let one = single(migration)?;
        Migrator::new(&one)
            .with_options(migrator.options().clone())
            .run(conn)?;
        states.push(snapshot(conn)?);
    }
    let a = states.last().cloned().unwrap_or_default();

    for (i, migration) in set.migrations().iter().enumerate().rev() {
        let one = single(migration)?;
        let this = Migrator::new(&one).with_options(migrator.options().clone());
        this.revert(conn, 1)?;
        expect_same(
            &states[i],
            &snapshot(conn)?,
            migration.name(),
            "down.sql does not restore the schema from before up.sql",
        )?;
        this.run(conn)?;
        expect_same(
            &states[i + 1],
            &snapshot(conn)?,
            migration.name(),
            "up.sql after down.sql gives a different schema than the first time",
        )?;
        this.revert(conn, 1)?;
    }

    migrator.run(conn)?;
    let b = snapshot(conn)?;
    let last = set.migrations().last().map_or("(none)", |m| m.name());
    expect_same(
        &a,
        &b,
        last,
        "applying every migration again gives a different schema",
    )?;

    Ok(RoundTripReport {
        migrations: set.migrations().len(),
        objects: b.lines().count(),
        elapsed: started.elapsed(),
    })
}

fn expect_same(expected: &Snapshot, found: &Snapshot, migration: &str, step: &str) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(Error::RoundTrip {
            migration: migration.to_owned(),
            step: step.to_owned(),
            diff: expected.diff(found),
        })
    }
}
