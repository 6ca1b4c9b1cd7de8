//! Drift: the schema of a live database against what its applied migrations make, built on a
//! scratch database. An index added by hand, or a column dropped outside a migration, shows
//! before the next deploy trips on it. What pgops keeps for itself (its ledgers, the
//! `pgops insights` snapshots, `pg_stat_statements`) and who owns what are not compared.

use diesel::PgConnection;
use serde::Serialize;

use crate::{
    Difference, Error, MigrationSet, Migrator, Result, RunOptions, Snapshot,
    runner::applied_versions, snapshot,
};

/// What drift found.
#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    /// Migrations applied in the live database (and in the reference).
    pub applied: usize,
    /// Versions applied in the live database that the source does not have (the reference
    /// cannot include them).
    pub unknown_applied: Vec<String>,
    /// Objects that differ: `expected` from the migrations, `found` in the live database.
    pub differences: Vec<Difference>,
}

/// Extensions that pgops's own tools create, which no migration needs to.
const TOOL_EXTENSIONS: [&str; 2] = ["pg_stat_statements", "hypopg"];

impl Drift {
    /// Whether the live schema is what the migrations make.
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty() && self.unknown_applied.is_empty()
    }
}

/// Compares `live` with `reference`, a fresh database on which the migrations of `set`
/// that `live` has applied are applied first.
pub fn drift(
    set: &MigrationSet,
    options: &RunOptions,
    live: &mut PgConnection,
    reference: &mut PgConnection,
) -> Result<Drift> {
    let applied = applied_versions(live)?;
    let already = applied_versions(reference)?.len();
    if already > 0 {
        return Err(Error::NotFresh { applied: already });
    }
    let unknown_applied = applied
        .keys()
        .filter(|v| set.get(v).is_none())
        .cloned()
        .collect();
    let subset = MigrationSet::new(
        set.migrations()
            .iter()
            .filter(|m| applied.contains_key(m.version()))
            .cloned()
            .collect(),
        set.origin().to_owned(),
    )?;
    Migrator::new(&subset)
        .with_options(options.clone())
        .run(reference)?;
    let comparable = |s: Snapshot| {
        s.without_ownership().without(|object| {
            TOOL_EXTENSIONS
                .iter()
                .any(|e| object == format!("extension {e}"))
        })
    };
    let expected = comparable(snapshot(reference)?);
    let found = comparable(snapshot(live)?);
    Ok(Drift {
        applied: subset.migrations().len(),
        unknown_applied,
        differences: expected.differences(&found),
    })
}
