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
}

impl RepositoryCollector {
    /// A collector for `store`.
    pub fn new(store: Box<dyn Store>) -> Self {
        RepositoryCollector { store }
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
        families(&*self.store).map_err(|e| pgops_pg::report(&e))
    }
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
