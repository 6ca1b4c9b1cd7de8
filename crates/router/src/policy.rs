//! Choosing a replica: pure functions over plain data, unit-tested without a database.

use std::time::Duration;

/// How reads are spread over eligible replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// In turn, each replica as often as its weight.
    #[default]
    RoundRobin,
    /// The replica with the fewest reads in flight per unit of weight.
    LeastOutstanding,
}

/// What the chooser knows of an eligible replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Index into the router's replicas.
    pub index: usize,
    /// Relative share of reads (at least 1).
    pub weight: u32,
    /// Reads in flight on it now (counted only under [`Policy::LeastOutstanding`], which
    /// reads it).
    pub outstanding: u32,
}

/// Picks one candidate; `turn` is a counter that advances with every read.
pub fn choose(policy: Policy, candidates: &[Candidate], turn: u64) -> Option<usize> {
    match policy {
        Policy::RoundRobin => {
            let total: u64 = candidates.iter().map(|c| u64::from(c.weight.max(1))).sum();
            if total == 0 {
                return None;
            }
            let mut slot = turn % total;
            for c in candidates {
                let w = u64::from(c.weight.max(1));
                if slot < w {
                    return Some(c.index);
                }
                slot -= w;
            }
            None
        }
        Policy::LeastOutstanding => candidates
            .iter()
            // Compare outstanding/weight without division: a/wa < b/wb  <=>  a*wb < b*wa.
            .min_by(|a, b| {
                let left = u64::from(a.outstanding) * u64::from(b.weight.max(1));
                let right = u64::from(b.outstanding) * u64::from(a.weight.max(1));
                left.cmp(&right).then(b.weight.cmp(&a.weight))
            })
            .map(|c| c.index),
    }
}

/// How long a replica stays banned after its `episode`-th failure in a row: doubling from
/// `base`, at most `max`.
pub fn ban_duration(base: Duration, max: Duration, episode: u32) -> Duration {
    let factor = 1u32 << episode.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(max)
}

/// Replication lag in bytes and seconds from what a replica reports and the primary's
/// position. A replica that has replayed everything it received and is not behind the
/// primary has no lag, however old its last replayed transaction is (an idle primary).
/// `seconds_since_replay` is the time since its last replayed transaction, or since it
/// started when it has replayed none: a replica stuck behind from its start has lag in
/// seconds too, not none.
pub fn lag(
    primary_lsn: u64,
    replay_lsn: u64,
    receive_lsn: u64,
    seconds_since_replay: f64,
) -> (u64, f64) {
    let bytes = primary_lsn.saturating_sub(replay_lsn);
    if bytes == 0 && replay_lsn >= receive_lsn {
        (0, 0.0)
    } else {
        (bytes, seconds_since_replay.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(index: usize, weight: u32, outstanding: u32) -> Candidate {
        Candidate {
            index,
            weight,
            outstanding,
        }
    }

    #[test]
    fn round_robin_follows_weights() {
        let cands = [c(0, 2, 0), c(1, 1, 0)];
        let picks: Vec<_> = (0..6)
            .map(|t| choose(Policy::RoundRobin, &cands, t).unwrap())
            .collect();
        assert_eq!(picks, [0, 0, 1, 0, 0, 1]);
        assert_eq!(choose(Policy::RoundRobin, &[], 3), None);
    }

    #[test]
    fn least_outstanding_per_weight() {
        let cands = [c(0, 1, 3), c(1, 4, 8), c(2, 1, 2)];
        // 3/1, 8/4 = 2, 2/1 = 2: ties go to the heavier replica.
        assert_eq!(choose(Policy::LeastOutstanding, &cands, 0), Some(1));
        assert_eq!(choose(Policy::LeastOutstanding, &[c(5, 1, 0)], 0), Some(5));
    }

    #[test]
    fn bans_double_up_to_the_maximum() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        let bans: Vec<_> = (1..=6)
            .map(|n| ban_duration(base, max, n).as_millis())
            .collect();
        assert_eq!(bans, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn idle_primary_means_no_lag() {
        assert_eq!(lag(100, 100, 100, 3600.0), (0, 0.0));
        assert_eq!(lag(150, 100, 150, 2.5), (50, 2.5));
        assert_eq!(lag(100, 90, 100, -1.0), (10, 0.0));
    }
}
