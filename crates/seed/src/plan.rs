//! How much of what each dataset holds: a pure function of the dataset and the scale.

use serde::Serialize;

use crate::{Error, Result};

/// The datasets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dataset {
    /// A small fixed dataset with documented keys for integration tests.
    Test,
    /// A few organizations, hundreds of users, about 10k patients.
    Development,
    /// Production-like volume: 100k patients and 1M audit log rows at scale 1.0.
    Staging,
}

/// How many encounters a patient has, or notes an encounter has.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum PerParent {
    /// Exactly this many.
    Fixed(u32),
    /// A skewed count: an exponential with this mean, rounded down (many parents with few
    /// children, a few with many); see [`PerParent::mean`].
    Skewed(f64),
}

/// Row counts of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The dataset.
    pub dataset: Dataset,
    /// Organizations.
    pub organizations: u32,
    /// Users.
    pub users: u32,
    /// Login sessions.
    pub sessions: u32,
    /// Patients.
    pub patients: u32,
    /// Encounters per patient.
    pub encounters_per_patient: PerParent,
    /// Notes per encounter.
    pub notes_per_encounter: PerParent,
    /// Audit log rows.
    pub audit_logs: u64,
}

impl Dataset {
    /// Every dataset.
    pub const ALL: [Dataset; 3] = [Dataset::Test, Dataset::Development, Dataset::Staging];

    /// The name used on the command line and in the ledger.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Test => "test",
            Dataset::Development => "development",
            Dataset::Staging => "staging",
        }
    }

    /// The dataset of a name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }
}

impl PerParent {
    /// The average number of children per parent.
    pub fn mean(self) -> f64 {
        match self {
            PerParent::Fixed(n) => f64::from(n),
            // E[floor(X)] for X exponential with mean m is 1 / (e^(1/m) - 1).
            PerParent::Skewed(m) => 1.0 / ((1.0 / m).exp() - 1.0),
        }
    }
}

impl Plan {
    /// The plan of `dataset` at `scale` (the test dataset has a fixed size: scale 1.0 only).
    pub fn new(dataset: Dataset, scale: f64) -> Result<Self> {
        if !scale.is_finite() || !(0.001..=100.0).contains(&scale) {
            return Err(Error::InvalidScale(scale));
        }
        if dataset == Dataset::Test && scale != 1.0 {
            return Err(Error::InvalidScale(scale));
        }
        let scaled =
            |dataset, (orgs, users, sessions, patients, audit_logs): (f64, f64, f64, f64, f64)| {
                let n = |base: f64, min: u64| ((base * scale).round() as u64).max(min);
                // Organizations grow with the square root of the scale, so a small staging dataset
                // still has a few large organizations and a tail of small ones.
                let organizations = ((orgs * scale.sqrt()).round() as u32).max(1);
                Plan {
                    dataset,
                    organizations,
                    users: n(users, u64::from(organizations)) as u32,
                    sessions: n(sessions, 1) as u32,
                    patients: n(patients, u64::from(organizations)) as u32,
                    encounters_per_patient: PerParent::Skewed(3.5),
                    notes_per_encounter: PerParent::Skewed(1.6),
                    audit_logs: n(audit_logs, 1),
                }
            };
        Ok(match dataset {
            Dataset::Test => Plan {
                dataset,
                organizations: 2,
                users: 8,
                sessions: 8,
                patients: 20,
                encounters_per_patient: PerParent::Fixed(2),
                notes_per_encounter: PerParent::Fixed(1),
                audit_logs: 100,
            },
            // (organizations, users, sessions, patients, audit_logs) at scale 1.0
            Dataset::Development => scaled(dataset, (5.0, 300.0, 1_000.0, 10_000.0, 50_000.0)),
            Dataset::Staging => scaled(dataset, (50.0, 5_000.0, 20_000.0, 100_000.0, 1_000_000.0)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_at_scale_one_has_the_promised_volume() {
        let plan = Plan::new(Dataset::Staging, 1.0).unwrap();
        assert!(plan.audit_logs >= 1_000_000 && plan.patients >= 100_000);
        let half = Plan::new(Dataset::Staging, 0.5).unwrap();
        assert_eq!(half.audit_logs, 500_000);
        let tiny = Plan::new(Dataset::Staging, 0.001).unwrap();
        assert!(
            tiny.organizations >= 1
                && tiny.users >= tiny.organizations
                && tiny.patients >= tiny.organizations
        );
    }

    #[test]
    fn about_three_encounters_per_patient_and_one_note_each() {
        let plan = Plan::new(Dataset::Development, 1.0).unwrap();
        assert!((2.9..3.1).contains(&plan.encounters_per_patient.mean()));
        assert!((1.1..1.2).contains(&plan.notes_per_encounter.mean()));
    }

    #[test]
    fn bad_scales_are_refused() {
        for scale in [0.0, -1.0, f64::NAN, f64::INFINITY, 1000.0] {
            assert!(
                matches!(
                    Plan::new(Dataset::Development, scale),
                    Err(Error::InvalidScale(_))
                ),
                "{scale}"
            );
        }
        assert!(
            Plan::new(Dataset::Test, 2.0).is_err(),
            "the test dataset has a fixed size"
        );
    }
}
