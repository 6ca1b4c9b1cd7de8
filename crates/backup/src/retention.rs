//! The retention policy: which backups to keep and which to delete. Pure: plain data in,
//! a decision with a reason per backup out. The policy applies to each series on its own
//! (physical backups; logical backups of one database), so nightly dumps never push out the
//! base backups point-in-time recovery starts from, nor one database's dumps another's.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;

/// What to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// The newest N backups.
    pub keep_last: usize,
    /// The newest backup of each of the last D days that have one.
    pub keep_daily: usize,
    /// The newest backup of each of the last W ISO weeks that have one.
    pub keep_weekly: usize,
}

/// A backup as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its id.
    pub id: String,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// The series it belongs to (`physical`, `logical app`): the policy counts within one.
    pub series: String,
}

/// The decision for one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The backup.
    pub id: String,
    /// Its series (`physical`, `logical app`); `wal` for archived WAL.
    pub series: String,
    /// Kept or not.
    pub keep: bool,
    /// Why (`last`, `daily 2026-11-26`, `weekly 2026-W48`, `newest`), or `expired`.
    pub reasons: Vec<String>,
}

impl Policy {
    /// Whether the policy keeps anything at all; a policy of zeros is refused.
    pub fn is_empty(&self) -> bool {
        self.keep_last == 0 && self.keep_daily == 0 && self.keep_weekly == 0
    }
}

/// Decides for every series on its own, series by name, newest first within each. The
/// newest backup of each series is always kept, whatever the policy says.
pub fn decide(policy: Policy, backups: &[Candidate]) -> Vec<Decision> {
    let mut series: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for backup in backups {
        series.entry(&backup.series).or_default().push(backup);
    }
    series
        .into_values()
        .flat_map(|members| decide_series(policy, members))
        .collect()
}

fn decide_series(policy: Policy, members: Vec<&Candidate>) -> Vec<Decision> {
    let mut sorted = members;
    sorted.sort_by(|a, b| b.finished_at.cmp(&a.finished_at).then(b.id.cmp(&a.id)));
    let mut days_seen = HashSet::new();
    let mut weeks_seen = HashSet::new();
    sorted
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let mut reasons = Vec::new();
            if i == 0 {
                reasons.push("newest".to_owned());
            }
            if i < policy.keep_last {
                reasons.push("last".to_owned());
            }
            let day = b.finished_at.date_naive();
            if !days_seen.contains(&day) && days_seen.len() < policy.keep_daily {
                days_seen.insert(day);
                reasons.push(format!("daily {day}"));
            }
            let week = b.finished_at.iso_week();
            let week = (week.year(), week.week());
            if !weeks_seen.contains(&week) && weeks_seen.len() < policy.keep_weekly {
                weeks_seen.insert(week);
                reasons.push(format!("weekly {}-W{:02}", week.0, week.1));
            }
            let keep = !reasons.is_empty();
            if !keep {
                reasons.push("expired".to_owned());
            }
            Decision {
                id: b.id.clone(),
                series: b.series.clone(),
                keep,
                reasons,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(day: u32, hour: u32) -> Candidate {
        in_series("physical", day, hour)
    }

    fn in_series(series: &str, day: u32, hour: u32) -> Candidate {
        Candidate {
            id: format!("2026-11-{day:02}T{hour:02}"),
            finished_at: Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).unwrap(),
            series: series.to_owned(),
        }
    }

    fn kept(decisions: &[Decision]) -> Vec<&str> {
        decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.id.as_str())
            .collect()
    }

    #[test]
    fn keep_last_keeps_the_newest_n() {
        let backups = [at(20, 1), at(21, 1), at(22, 1), at(23, 1)];
        let d = decide(
            Policy {
                keep_last: 2,
                ..Policy::default()
            },
            &backups,
        );
        assert_eq!(kept(&d), ["2026-11-23T01", "2026-11-22T01"]);
        assert_eq!(d[3].reasons, ["expired"]);
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day() {
        let backups = [at(22, 1), at(22, 13), at(23, 2), at(23, 14), at(24, 3)];
        let d = decide(
            Policy {
                keep_daily: 2,
                ..Policy::default()
            },
            &backups,
        );
        assert_eq!(kept(&d), ["2026-11-24T03", "2026-11-23T14"]);
    }

    #[test]
    fn weekly_keeps_the_newest_of_each_iso_week() {
        // 2026-11-16 is a Monday (W47), 2026-11-23 too (W48).
        let backups = [
            at(10, 1),
            at(15, 1),
            at(16, 1),
            at(22, 1),
            at(23, 1),
            at(26, 1),
        ];
        let d = decide(
            Policy {
                keep_weekly: 2,
                ..Policy::default()
            },
            &backups,
        );
        assert_eq!(kept(&d), ["2026-11-26T01", "2026-11-22T01"]);
        assert!(
            d[2].reasons.contains(&"weekly 2026-W47".to_owned()),
            "{d:?}"
        );
    }

    #[test]
    fn rules_combine_and_the_newest_is_never_deleted() {
        let backups = [
            at(1, 1),
            at(2, 1),
            at(9, 1),
            at(20, 1),
            at(26, 1),
            at(26, 5),
        ];
        let d = decide(
            Policy {
                keep_last: 1,
                keep_daily: 2,
                keep_weekly: 3,
            },
            &backups,
        );
        assert_eq!(
            kept(&d),
            ["2026-11-26T05", "2026-11-20T01", "2026-11-09T01"]
        );
        // A policy that keeps nothing still keeps the newest.
        let d = decide(Policy::default(), &backups);
        assert_eq!(kept(&d), ["2026-11-26T05"]);
        assert!(decide(Policy::default(), &[]).is_empty());
    }

    #[test]
    fn each_series_keeps_its_own_backups() {
        // The measured case: one physical backup and logical backups of two databases, all
        // the same day. Ranked as one series, --keep-daily 7 kept only the newest dump.
        let mut backups = vec![
            Candidate {
                id: "physical-1".into(),
                ..in_series("physical", 26, 1)
            },
            Candidate {
                id: "app-1".into(),
                ..in_series("logical app", 26, 2)
            },
            Candidate {
                id: "billing-1".into(),
                ..in_series("logical billing", 26, 3)
            },
            Candidate {
                id: "app-2".into(),
                ..in_series("logical app", 26, 4)
            },
        ];
        let policy = Policy {
            keep_daily: 7,
            ..Policy::default()
        };
        let d = decide(policy, &backups);
        let mut kept = kept(&d);
        kept.sort_unstable();
        assert_eq!(kept, ["app-2", "billing-1", "physical-1"]);
        assert_eq!(
            d.iter().find(|x| x.id == "app-1").unwrap().reasons,
            ["expired"]
        );
        // Nightly dumps and base backups: every series keeps its own last seven days.
        backups.clear();
        for day in 1..=20 {
            backups.push(Candidate {
                id: format!("p{day:02}"),
                ..in_series("physical", day, 1)
            });
            backups.push(Candidate {
                id: format!("l{day:02}"),
                ..in_series("logical app", day, 2)
            });
        }
        let d = decide(policy, &backups);
        let physical: Vec<&str> = d
            .iter()
            .filter(|x| x.keep && x.series == "physical")
            .map(|x| x.id.as_str())
            .collect();
        assert_eq!(physical, ["p20", "p19", "p18", "p17", "p16", "p15", "p14"]);
        assert_eq!(d.iter().filter(|x| x.keep).count(), 14);
    }
}
