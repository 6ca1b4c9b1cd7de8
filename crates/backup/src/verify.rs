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
    manifest::{self, Verification},
    repo::Store,
    staging::connect,
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
        // A physical backup is only as good as the WAL after it: name every missing segment
        // from its start to the newest archived one.
        let start: Lsn = range.start_lsn.parse().map_err(|_| Error::Corrupt {
            id: id.to_owned(),
            file: "manifest.json".into(),
            detail: format!("its WAL start {:?} is not an LSN", range.start_lsn),
        })?;
        let first_segment = start.segment(range.timeline);
        let first = first_segment.name();
        let (files, _foreign) = wal::classify(&wal::archived(store)?);
        let mut names: Vec<String> = files
            .into_iter()
            .filter(|(_, file)| {
                matches!(file, pgops_pg::WalFile::Segment(s) if s.number >= first_segment.number)
            })
            .map(|(name, _)| name)
            .collect();
        if !names.contains(&first) {
            verification.problems.push(format!(
                "WAL segment {first}, where the backup starts, is not archived"
            ));
            names.insert(0, first);
        }
        for gap in wal::gaps(&names) {
            verification
                .problems
                .push(format!("WAL segment {gap} is missing from the archive"));
        }
        // Every segment recovery would read must also be intact.
        let scratch = tempfile::Builder::new()
            .prefix("pgops-verify-wal-")
            .tempdir()
            .map_err(Error::io("creating a work directory"))?;
        for name in &names {
            if let Err(e) = wal::fetch(store, name, &scratch.path().join("segment")) {
                verification.problems.push(pgops_pg::report(&e));
            }
        }
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
                let found = count_rows(&mut conn)?;
                drop(conn);
                for want in &manifest.tables {
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

fn record(store: &dyn Store, verification: &Verification) -> Result<()> {
    let json =
        serde_json::to_vec_pretty(verification).map_err(|e| Error::Invalid(e.to_string()))?;
    store.put_bytes(
        &format!(
            "{}verify/{}.json",
            manifest::prefix(&verification.id),
            verification.at.format("%Y%m%dT%H%M%S%3fZ")
        ),
        &json,
    )
}
