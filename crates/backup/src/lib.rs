//! Backups nobody has restored are hopes. This crate takes logical backups (`pg_dump` in a
//! held snapshot, zstd, SHA-256 of every file) into a repository (`file://` or `s3://`),
//! lists, verifies (checksums, and a restore with row counts), restores into a new database,
//! and prunes by a retention policy that never deletes the newest backup.
//!
//! ```no_run
//! use pgops_backup::{logical, progress::Quiet, repo, verify};
//! use pgops_pg::DatabaseUrl;
//!
//! let store = repo::open("file:///var/backups/pgops", repo::Access::Create).unwrap();
//! let url = DatabaseUrl::parse("postgres://backup@db/app").unwrap();
//! let manifest = logical::create(&*store, &url, &Default::default(), &mut Quiet).unwrap();
//! let check = verify::verify(&*store, &manifest.id, Some(&url)).unwrap();
//! assert!(check.ok);
//! ```

pub mod crypto;
pub mod drill;
mod dump_rows;
mod error;
mod fetch;
mod files;
pub mod logical;
pub mod manifest;
pub mod member;
pub mod physical;
pub mod programs;
pub mod progress;
pub mod repo;
pub mod retention;
mod staging;
pub mod timeline;
pub mod verify;
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
        let manifest = manifest::read(store, id)?;
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

/// The retention series a backup belongs to: `physical`, or `logical <database>`.
pub fn series(manifest: &Manifest) -> String {
    match manifest.kind {
        manifest::Kind::Physical => "physical".to_owned(),
        manifest::Kind::Logical => format!("logical {}", manifest.database),
    }
}

/// Applies `policy` to each series (physical backups; logical backups per database), or
/// with `kind` to that kind's series only, the others left as they are (a policy per kind:
/// one run per kind): decides, and unless `dry_run`, deletes the expired backups (manifest first, so a
/// half-deleted backup is never listed as complete), then the WAL that only deleted backups
/// needed. Everything is decided before anything is deleted: a manifest whose WAL start
/// cannot be read is an error that deletes nothing.
pub fn prune(
    store: &dyn Store,
    policy: retention::Policy,
    kind: Option<manifest::Kind>,
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
        .filter(|(m, _)| kind.is_none_or(|k| m.kind == k))
        .map(|(m, _)| retention::Candidate {
            id: m.id.clone(),
            finished_at: m.finished_at,
            series: series(m),
        })
        .collect();
    let mut decisions = retention::decide(policy, &candidates);
    // WAL older than the oldest kept physical backup's start can only serve deleted backups.
    let mut floor: Option<pgops_pg::Segment> = None;
    for (m, _) in &backups {
        // A backup of another kind than the one pruned has no decision: it stays.
        let kept = decisions
            .iter()
            .find(|d| d.id == m.id)
            .is_none_or(|d| d.keep);
        if let (true, Some(w)) = (kept, &m.wal) {
            let start = physical::parse_lsn(&w.start_lsn).map_err(|_| {
                Error::Invalid(format!(
                    "backup {}: its manifest's WAL start {:?} is not an LSN, so the WAL it needs \
                     is unknown; nothing was deleted. Verify the backup (`pgops backup verify {}`)",
                    m.id, w.start_lsn, m.id
                ))
            })?;
            let segment = start.segment(w.timeline);
            if floor.is_none_or(|f| segment.number < f.number) {
                floor = Some(segment);
            }
        }
    }
    let mut wal_decisions = Vec::new();
    let mut wal_keys = Vec::new();
    if backups.iter().any(|(m, _)| m.wal.is_some()) {
        wal_keys = store.list("wal/")?;
        // Every name with an object: pushes that never wrote their checksum object leave
        // data under a name that is not archived, and it goes with the WAL around it.
        let mut owners: Vec<String> = wal_keys
            .iter()
            .filter_map(|k| wal::owner(k))
            .map(str::to_owned)
            .collect();
        owners.sort_unstable();
        owners.dedup();
        let archived = wal::archived_in(&wal_keys);
        let (_, foreign) = wal::classify(&archived);
        if let Some(oldest) = floor {
            for name in wal::expendable(&owners, oldest) {
                wal_decisions.push(retention::Decision {
                    id: format!("wal/{name}"),
                    series: "wal".into(),
                    keep: false,
                    reasons: vec![format!(
                        "WAL before {oldest}, the oldest kept physical backup's start"
                    )],
                });
            }
        }
        for name in foreign {
            wal_decisions.push(retention::Decision {
                id: format!("wal/{name}"),
                series: "wal".into(),
                keep: true,
                reasons: vec!["not a WAL file name: left alone".into()],
            });
        }
    }
    if !dry_run {
        for decision in decisions.iter().filter(|d| !d.keep) {
            store.delete(&manifest::manifest_key(&decision.id))?;
            for key in store.list(&manifest::prefix(&decision.id))? {
                store.delete(&key)?;
            }
        }
        for decision in wal_decisions.iter().filter(|d| !d.keep) {
            wal::delete(store, decision.id.trim_start_matches("wal/"), &wal_keys)?;
        }
    }
    decisions.extend(wal_decisions);
    Ok(decisions)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::{Duration, Utc};

    use super::*;
    use crate::manifest::{DumpFormat, Kind, WalRange};

    fn physical_backup(id: &str, days_ago: i64, start_lsn: &str) -> Manifest {
        let at = Utc::now() - Duration::days(days_ago);
        Manifest {
            format: 1,
            id: id.into(),
            kind: Kind::Physical,
            database: String::new(),
            server: "127.0.0.1:5432".into(),
            server_version: "15".into(),
            tool_version: "0".into(),
            client_version: "15".into(),
            dump_format: DumpFormat::Custom,
            started_at: at,
            finished_at: at,
            files: Vec::new(),
            tables: Vec::new(),
            wal: Some(WalRange {
                timeline: 1,
                start_lsn: start_lsn.into(),
                end_lsn: start_lsn.into(),
            }),
            from_standby: false,
            tables_file: None,
        }
    }

    #[test]
    fn prune_deletes_nothing_when_a_kept_backup_has_an_unreadable_wal_start() {
        // Once, such a backup was skipped when computing which WAL is still needed, so WAL
        // it needed could go.
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let store = repo::open(&url, repo::Access::Existing).unwrap();
        for m in [
            physical_backup("old", 3, "0/2000028"),
            physical_backup("new", 1, "zz/3000028"),
        ] {
            store
                .put_bytes(
                    &manifest::manifest_key(&m.id),
                    &serde_json::to_vec(&m).unwrap(),
                )
                .unwrap();
        }
        let policy = retention::Policy {
            keep_last: 1,
            ..Default::default()
        };
        let err = prune(&*store, policy, None, false).unwrap_err().to_string();
        assert!(
            err.contains("backup new") && err.contains("nothing was deleted"),
            "{err}"
        );
        assert_eq!(list(&*store).unwrap().len(), 2);
    }
}
