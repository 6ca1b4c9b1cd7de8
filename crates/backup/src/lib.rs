//! Backups nobody has restored are hopes. This crate takes logical backups (`pg_dump` in a
//! held snapshot, zstd, SHA-256 of every file) into a repository (`file://` or `s3://`),
//! lists, verifies (checksums, and a restore with row counts), restores into a new database,
//! and prunes by a retention policy that never deletes the newest backup.
//!
//! ```no_run
//! use pgops_backup::{logical, repo};
//! use pgops_pool::DatabaseUrl;
//!
//! let store = repo::open("file:///var/backups/pgops").unwrap();
//! let url = DatabaseUrl::parse("postgres://backup@db/app").unwrap();
//! let manifest = logical::create(&*store, &url, &Default::default(), &mut logical::Quiet).unwrap();
//! let check = logical::verify(&*store, &manifest.id, Some(&url)).unwrap();
//! assert!(check.ok);
//! ```

pub mod drill;
mod error;
mod files;
pub mod logical;
pub mod manifest;
pub mod physical;
pub mod programs;
pub mod repo;
pub mod retention;
pub mod wal;

pub use error::{Error, Result};
pub use manifest::{Manifest, Verification};

use repo::Store;

/// Every backup in the repository (those with a manifest), oldest first, with its latest
/// verification.
pub fn list(store: &dyn Store) -> Result<Vec<(Manifest, Option<Verification>)>> {
    let keys = store.list("backups/")?;
    let mut out = Vec::new();
    for key in keys.iter().filter(|k| k.ends_with("/manifest.json")) {
        let id = key
            .trim_start_matches("backups/")
            .trim_end_matches("/manifest.json");
        let manifest = logical::manifest(store, id)?;
        let last_verify = keys
            .iter()
            .filter(|k| k.starts_with(&format!("backups/{id}/verify/")))
            .max()
            .and_then(|k| store.get_bytes(k).ok().flatten())
            .and_then(|b| serde_json::from_slice(&b).ok());
        out.push((manifest, last_verify));
    }
    out.sort_by(|a, b| {
        a.0.finished_at
            .cmp(&b.0.finished_at)
            .then(a.0.id.cmp(&b.0.id))
    });
    Ok(out)
}

/// Applies `policy`: decides, and unless `dry_run`, deletes the expired backups (manifest
/// first, so a half-deleted backup is never listed as complete).
pub fn prune(
    store: &dyn Store,
    policy: retention::Policy,
    dry_run: bool,
) -> Result<Vec<retention::Decision>> {
    if policy.is_empty() {
        return Err(Error::Invalid(
            "give at least one of --keep-last, --keep-daily, --keep-weekly".into(),
        ));
    }
    let backups = list(store)?;
    let candidates: Vec<retention::Candidate> = backups
        .iter()
        .map(|(m, _)| retention::Candidate {
            id: m.id.clone(),
            finished_at: m.finished_at,
        })
        .collect();
    let decisions = retention::decide(policy, &candidates);
    if !dry_run {
        for decision in decisions.iter().filter(|d| !d.keep) {
            store.delete(&manifest::manifest_key(&decision.id))?;
            for key in store.list(&manifest::prefix(&decision.id))? {
                store.delete(&key)?;
            }
        }
    }
    // WAL older than the oldest kept physical backup can only serve deleted backups.
    let oldest_kept = backups
        .iter()
        .filter(|(m, _)| decisions.iter().any(|d| d.keep && d.id == m.id))
        .filter_map(|(m, _)| m.wal.as_ref())
        .filter_map(|w| {
            Some(wal::segment_name(
                w.timeline,
                physical::parse_lsn(&w.start_lsn).ok()?,
            ))
        })
        .min_by_key(|name| wal::segment_number(name));
    let mut decisions = decisions;
    if let Some(oldest) = oldest_kept {
        for name in wal::expendable(&wal::archived(store)?, &oldest) {
            if !dry_run {
                wal::delete(store, &name)?;
            }
            decisions.push(retention::Decision {
                id: format!("wal/{name}"),
                keep: false,
                reasons: vec![format!(
                    "WAL before {oldest}, the oldest kept physical backup's start"
                )],
            });
        }
    }
    Ok(decisions)
}
