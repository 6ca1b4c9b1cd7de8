//! The backup repository as a `pgops health` collector: the newest backup of each kind, the
//! count, and the newest restore drill (`pgops_backup_*`). It lives here, with whoever has a
//! repository, so that `pgops-health` (and a service that only wants `/metrics`) compiles no
//! storage client.

use pgops_backup::{manifest::Kind as BackupKind, repo::Store};
use pgops_health::{
    Collector,
    text::{Family, Kind},
};

/// Reports one repository.
#[derive(Debug)]
pub struct RepositoryCollector {
    store: Box<dyn Store>,
    primary: Option<pgops_pg::DatabaseUrl>,
}

impl RepositoryCollector {
    /// A collector for `store`; with `primary` (a multi-host URL finds the member that is
    /// primary now), the archive's continuity is measured up to that server's current segment.
    pub fn new(store: Box<dyn Store>, primary: Option<pgops_pg::DatabaseUrl>) -> Self {
        RepositoryCollector { store, primary }
    }
}

impl Collector for RepositoryCollector {
    fn name(&self) -> &'static str {
        "backup_repository"
    }

    fn target(&self) -> String {
        self.store.url().to_owned()
    }

    fn collect(&self) -> Result<Vec<Family>, String> {
        let mut out = families(&*self.store).map_err(|e| pgops_pg::report(&e))?;
        out.extend(
            archive_families(&*self.store, self.primary.as_ref())
                .map_err(|e| pgops_pg::report(&e))?,
        );
        Ok(out)
    }
}

/// The primary's current WAL segment (the one being written), if a primary answers.
fn current_segment(url: &pgops_pg::DatabaseUrl) -> Option<pgops_pg::Segment> {
    #[derive(serde::Deserialize)]
    struct Current {
        name: Option<String>,
    }
    let member = pgops_backup::member::pick(url, None).ok()?;
    let mut conn = <diesel::PgConnection as diesel::Connection>::establish(member.expose()).ok()?;
    let current: Current = pgops_pg::rows::row(
        &mut conn,
        "SELECT CASE WHEN pg_is_in_recovery() THEN NULL
                     ELSE pg_walfile_name(pg_current_wal_lsn()) END AS name",
        "reading the current WAL segment",
    )
    .ok()?;
    current.name?.parse().ok()
}

/// The WAL archive's families: its newest timeline, whether it is continuous from the newest
/// physical backup's start along the primary's timeline up to the segment before the one the
/// primary is writing, and refused pushes (split brain).
pub fn archive_families(
    store: &dyn Store,
    primary: Option<&pgops_pg::DatabaseUrl>,
) -> pgops_backup::Result<Vec<Family>> {
    use pgops_backup::timeline::{Archive, Until};
    let archive = Archive::read(store)?;
    let repo = store.url().to_owned();
    let labels = [("repository", repo.as_str())];
    let mut families = Vec::new();
    let Some(newest) = archive.newest_timeline() else {
        return Ok(families);
    };
    families.push(Family::single(
        "pgops_backup_archive_timeline",
        "The newest timeline the WAL archive holds (segments or history)",
        Kind::Gauge,
        &labels,
        f64::from(newest),
    ));
    let current = primary.and_then(current_segment);
    let timeline = current.map_or(newest, |c| c.timeline);
    let backups = pgops_backup::list(store)?;
    let start = backups
        .iter()
        .rev()
        .filter_map(|(m, _)| m.wal.as_ref())
        .find_map(|w| Some((w.timeline, w.start_lsn.parse::<pgops_pg::Lsn>().ok()?)));
    let (continuous, missing) = match (archive.path(timeline), start) {
        (Ok(path), Some((tli, start))) if Archive::on_path(&path, tli, start) => {
            let until = match current {
                // The segment before the one being written.
                Some(c) if c.number > 0 => Until::Lsn(pgops_pg::Lsn(c.start().0 - 1)),
                _ => Until::End,
            };
            let plan = archive.plan(&path, start, until);
            let missing: usize = plan.gaps.iter().map(|g| g.segments.len()).sum();
            (missing == 0, missing)
        }
        // The primary's timeline cannot be followed (its history is not archived yet), or
        // the newest backup is on another branch: a restore would not reach the primary.
        (Err(_), _) => (false, 0),
        (Ok(_), Some(_)) => (false, 0),
        (Ok(path), None) => {
            let first = archive
                .segments
                .iter()
                .find(|s| pgops_backup::timeline::provider(&path, s.number) == s.timeline)
                .map(|s| s.start())
                .unwrap_or_default();
            let plan = archive.plan(&path, first, Until::End);
            let missing: usize = plan.gaps.iter().map(|g| g.segments.len()).sum();
            (missing == 0, missing)
        }
    };
    families.push(Family::single(
        "pgops_backup_archive_continuous",
        "1 when every WAL segment from the newest physical backup's start, along the primary's timeline, up to the segment before the one the primary is writing is archived",
        Kind::Gauge,
        &labels,
        f64::from(u8::from(continuous)),
    ));
    families.push(Family::single(
        "pgops_backup_archive_missing_segments",
        "WAL segments a restore along the primary's timeline would need and the archive lacks",
        Kind::Gauge,
        &labels,
        missing as f64,
    ));
    families.push(Family::single(
        "pgops_backup_archive_conflicts",
        "Pushes refused because the archive holds other content under the name (two servers archiving one timeline)",
        Kind::Gauge,
        &labels,
        pgops_backup::wal::conflicts(store)?.len() as f64,
    ));
    Ok(families)
}

/// The repository's families.
pub fn families(store: &dyn Store) -> pgops_backup::Result<Vec<Family>> {
    let backups = pgops_backup::list(store)?;
    let drill = pgops_backup::drill::last(store)?;
    let repo = store.url().to_owned();
    let mut last = Family::new(
        "pgops_backup_last_success_timestamp_seconds",
        "When the newest complete backup of each kind finished",
        Kind::Gauge,
    );
    for (kind, name) in [
        (BackupKind::Logical, "logical"),
        (BackupKind::Physical, "physical"),
    ] {
        if let Some((m, _)) = backups.iter().rev().find(|(m, _)| m.kind == kind) {
            last.push(
                &[("kind", name), ("repository", &repo)],
                m.finished_at.timestamp_millis() as f64 / 1e3,
            );
        }
    }
    let mut families = vec![
        last,
        Family::single(
            "pgops_backup_count",
            "Complete backups in the repository",
            Kind::Gauge,
            &[("repository", &repo)],
            backups.len() as f64,
        ),
    ];
    if let Some(d) = drill {
        let labels = [("repository", repo.as_str())];
        families.push(Family::single(
            "pgops_backup_last_drill_timestamp_seconds",
            "When the newest restore drill ran",
            Kind::Gauge,
            &labels,
            d.at.timestamp_millis() as f64 / 1e3,
        ));
        families.push(Family::single(
            "pgops_backup_last_drill_duration_seconds",
            "How long the newest restore drill took to answer (its RTO)",
            Kind::Gauge,
            &labels,
            d.rto_seconds,
        ));
        families.push(Family::single(
            "pgops_backup_last_drill_success",
            "1 when the newest restore drill succeeded",
            Kind::Gauge,
            &labels,
            f64::from(u8::from(d.ok)),
        ));
    }
    Ok(families)
}
