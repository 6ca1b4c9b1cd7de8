//! Verification: every file against its checksum, the WAL a physical backup needs, and for a
//! logical backup optionally a restore whose row counts must match the manifest. Results are
//! recorded in the repository beside the backup.

use chrono::Utc;
use diesel::connection::SimpleConnection as _;
use pgops_pg::{DatabaseUrl, Lsn};

use crate::{
    Error, Result,
    fetch::fetch_verified,
    logical::{RestoreOptions, count_rows, restore},
    manifest::{self, GapReport, TimelineReport, Verification},
    repo::Store,
    staging::connect,
    timeline::{Archive, Until},
    wal,
};

/// Checks every checksum; with `restore`, also restores into a throwaway database on the
/// server `url` names and compares every table's row count with the manifest. The result is
/// recorded in the repository beside the backup.
pub fn verify(store: &dyn Store, id: &str, url: Option<&DatabaseUrl>) -> Result<Verification> {
    let manifest = manifest::read(store, id)?;
    let work = tempfile::Builder::new()
        .prefix("pgops-verify-")
        .tempdir()
        .map_err(Error::io("creating a work directory"))?;
    let mut verification = Verification {
        id: id.to_owned(),
        at: Utc::now(),
        checksums_ok: false,
        restored: false,
        ok: false,
        restore_seconds: None,
        problems: Vec::new(),
        timelines: Vec::new(),
        gaps: Vec::new(),
        notes: Vec::new(),
    };
    match fetch_verified(store, &manifest, work.path()) {
        Ok(()) => verification.checksums_ok = true,
        Err(e) => {
            verification.problems.push(pgops_pg::report(&e));
            record(store, &verification)?;
            return Err(e);
        }
    }
    drop(work);
    if let Some(range) = &manifest.wal {
        let start: Lsn = range.start_lsn.parse().map_err(|_| Error::Corrupt {
            id: id.to_owned(),
            file: "manifest.json".into(),
            detail: format!("its WAL start {:?} is not an LSN", range.start_lsn),
        })?;
        check_wal(store, range.timeline, start, &mut verification)?;
        if url.is_some() {
            verification.problems.push("--restore of a physical backup: restore it with `pgops backup restore --to-dir DIR` and start a server on it".into());
        }
        verification.ok = verification.checksums_ok && verification.problems.is_empty();
        record(store, &verification)?;
        return Ok(verification);
    }
    if let Some(url) = url {
        let scratch = format!("pgops_verify_{}", std::process::id());
        verification.restored = true;
        match restore(
            store,
            id,
            url,
            &scratch,
            &RestoreOptions {
                jobs: Some(2),
                replace: true,
            },
        ) {
            Ok(seconds) => {
                verification.restore_seconds = Some(seconds);
                let scratch_url = url.with_database(&scratch)?;
                let mut conn = connect(&scratch_url)?;
                let found = count_rows(&mut conn, None)?;
                drop(conn);
                for want in &manifest::tables(store, &manifest)? {
                    let got = found
                        .iter()
                        .find(|t| t.schema == want.schema && t.table == want.table);
                    match got {
                        Some(got) if got.rows == want.rows => {}
                        Some(got) => verification.problems.push(format!(
                            "{}.{}: {} rows restored, {} in the backup",
                            want.schema, want.table, got.rows, want.rows
                        )),
                        None => verification.problems.push(format!(
                            "{}.{}: missing after the restore",
                            want.schema, want.table
                        )),
                    }
                }
            }
            Err(e) => verification
                .problems
                .push(format!("restore failed: {}", pgops_pg::report(&e))),
        }
        let mut admin = connect(url)?;
        let _ = admin.batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            pgops_pg::quote_ident(&scratch)
        ));
    }
    verification.ok = verification.checksums_ok && verification.problems.is_empty();
    record(store, &verification)?;
    Ok(verification)
}

/// A physical backup is only as good as the WAL after it. Follows every timeline that
/// descends from the backup's start: the newest one's history (what a restore follows) must
/// be continuous from the start to its newest archived segment, every history file that links
/// the timelines must be there, and every segment that recovery reads must be intact. Gaps on
/// other branches, and WAL an old primary wrote after a promotion, are noted.
fn check_wal(
    store: &dyn Store,
    backup_timeline: u32,
    start: Lsn,
    verification: &mut Verification,
) -> Result<()> {
    let archive = Archive::read(store)?;
    verification.problems.extend(
        archive
            .unreadable
            .iter()
            .map(|why| format!("history file {why}")),
    );
    let newest = archive.newest_timeline().unwrap_or(backup_timeline);
    let mut reported: std::collections::BTreeSet<String> = Default::default();
    let mut newest_plan = None;
    for tli in archive.timelines().into_iter().rev() {
        if tli < backup_timeline {
            continue;
        }
        let path = match archive.path(tli) {
            Ok(path) => path,
            Err(e) => {
                verification.problems.push(pgops_pg::report(&e));
                continue;
            }
        };
        if !Archive::on_path(&path, backup_timeline, start) {
            continue;
        }
        let plan = archive.plan(&path, start, Until::End);
        let parent = path.iter().rev().nth(1);
        verification.timelines.push(TimelineReport {
            timeline: tli,
            parent: parent.map(|p| p.timeline),
            begins_at: parent.and_then(|p| p.end).map(|l| l.to_string()),
            history_archived: tli == 1 || archive.histories.contains_key(&tli),
            segments: archive
                .segments
                .iter()
                .filter(|s| s.timeline == tli)
                .count(),
            reaches: plan.reaches.map(|l| l.to_string()),
        });
        for gap in &plan.gaps {
            if !reported.insert(gap.segments[0].clone()) {
                continue;
            }
            verification.gaps.push(GapReport {
                timeline: gap.timeline,
                from_lsn: gap.from.to_string(),
                to_lsn: gap.to.to_string(),
                segments: gap.segments.clone(),
            });
            if tli == newest {
                verification.problems.push(gap.to_string());
            } else {
                verification.notes.push(format!(
                    "{gap} (only a restore with --target-timeline {tli} reads it)"
                ));
            }
        }
        if tli == newest {
            newest_plan = Some(plan);
        }
    }
    if verification.timelines.is_empty() {
        verification.problems.push(format!(
            "no timeline in the archive leads on from the backup's start ({start} on timeline              {backup_timeline}); {}",
            archive.describe()
        ));
    }
    for (span, past) in archive.abandoned(newest) {
        if let (Some(first), Some(last)) = (past.first(), past.last()) {
            verification.notes.push(format!(
                "timeline {} went on past {} where the cluster moved on, in {} archived                  segment(s) {first} to {last}: WAL an old primary wrote after another server was                  promoted; restores follow timeline {newest} and do not read it",
                span.timeline,
                span.end.unwrap_or_default(),
                past.len()
            ));
        }
    }
    // Every segment recovery would read must also be intact.
    if let Some(plan) = newest_plan {
        let scratch = tempfile::Builder::new()
            .prefix("pgops-verify-wal-")
            .tempdir()
            .map_err(Error::io("creating a work directory"))?;
        for name in &plan.segments {
            if let Err(e) = wal::fetch(store, name, &scratch.path().join("segment")) {
                verification.problems.push(pgops_pg::report(&e));
            }
        }
    }
    Ok(())
}

fn record(store: &dyn Store, verification: &Verification) -> Result<()> {
    let prefix = manifest::prefix(&verification.id);
    let stamp = verification.at.format("%Y%m%dT%H%M%S%3fZ");
    let mut kept = verification.clone();
    // What did not match names tables, and a failed restore's message can quote a row: in an
    // encrypted repository the record says how many, and the detail is stored encrypted.
    if !kept.problems.is_empty() {
        let detail = format!("{prefix}verify-detail/{stamp}.json");
        if let Some(key) = crate::crypto::store_private_json(store, &detail, &kept.problems)? {
            kept.problems = vec![format!(
                "{} problem(s); the detail is encrypted in {key}",
                kept.problems.len()
            )];
        }
    }
    let json = serde_json::to_vec_pretty(&kept).map_err(|e| Error::Invalid(e.to_string()))?;
    store.put_bytes(&format!("{prefix}verify/{stamp}.json"), &json)
}
