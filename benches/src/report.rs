//! The benchmark report: the JSON every suite writes to `target/pgops-bench/<suite>.json`
//! (the contract in DESIGN.md) and the table printed beside it.

use std::{fmt::Write as _, path::Path};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// One suite's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The suite's name.
    pub suite: String,
    /// Each measured pair.
    pub comparisons: Vec<Comparison>,
    /// Figures without an anchor (per-query latency percentiles of the workload suite).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<Measurement>,
    /// The machine and server the suite ran on (absent in reports of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<Machine>,
    /// Written by a `--quick` run: smaller data, fewer rounds, not for publishing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quick: bool,
}

/// Where a suite ran: enough to tell whether two reports are comparable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model, from `/proc/cpuinfo`.
    pub cpu: String,
    /// CPUs this process may use.
    pub cpus: usize,
    /// Memory, from `/proc/meminfo`, in GiB.
    pub memory_gib: u64,
    /// The operating system, from `/etc/os-release`.
    pub os: String,
    /// `postgres --version`.
    pub postgres: String,
    /// When the suite finished (RFC 3339, UTC).
    pub finished_at: String,
}

/// Throughput and latency of one query under load (medians over rounds).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    /// The query.
    pub name: String,
    /// Queries per second over all clients.
    pub qps: f64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

/// pgops against the existing tool (the anchor), same data, same run, interleaved rounds;
/// each figure is the median of the rounds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    /// What is measured.
    pub name: String,
    /// The unit of `ours` and `anchor`.
    pub unit: String,
    /// pgops's median.
    pub ours: f64,
    /// The anchor's median.
    pub anchor: f64,
    /// The exact command (or workload) the anchor ran.
    pub anchor_tool: String,
    /// Whether a larger figure is better.
    pub higher_is_better: bool,
    /// > 1 means pgops is better.
    pub ratio: f64,
    /// The ratio pgops aims for; absent for figures given as context only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    /// The size measured (`"32 clients"`, `"scale 200"`) when the suite measures this
    /// comparison at several sizes; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

impl Comparison {
    /// Builds a comparison from the rounds of both sides (medians, and the ratio oriented so
    /// that above 1 is better for pgops).
    pub fn from_rounds(
        name: &str,
        unit: &str,
        ours: &[f64],
        anchor: &[f64],
        anchor_tool: &str,
        higher_is_better: bool,
    ) -> Self {
        let (ours, anchor) = (median(ours), median(anchor));
        let ratio = if higher_is_better {
            ours / anchor
        } else {
            anchor / ours
        };
        Comparison {
            name: name.to_owned(),
            unit: unit.to_owned(),
            ours,
            anchor,
            anchor_tool: anchor_tool.to_owned(),
            higher_is_better,
            ratio,
            target: None,
            size: None,
        }
    }

    /// Names the size measured.
    pub fn size(mut self, size: impl Into<String>) -> Self {
        self.size = Some(size.into());
        self
    }

    /// The name with the size, as tables and messages show it (`pk_lookup_qps @ 32 clients`).
    pub fn label(&self) -> String {
        match &self.size {
            Some(size) => format!("{} @ {size}", self.name),
            None => self.name.clone(),
        }
    }

    /// Sets the ratio pgops aims for.
    pub fn target(mut self, ratio: f64) -> Self {
        self.target = Some(ratio);
        self
    }

    /// Whether the target is met (`None` for context figures).
    pub fn meets_target(&self) -> Option<bool> {
        self.target.map(|t| self.ratio >= t)
    }
}

impl Report {
    /// Reads a report written by [`Report::write`].
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a pgops-bench report", path.display()))
    }

    /// What got worse than `baseline` by more than `threshold` (0.2: 20%): each comparison's
    /// own figure, and each measurement's QPS and p95. Figures missing on either side are
    /// skipped. Pure.
    pub fn regressions(&self, baseline: &Report, threshold: f64) -> Vec<String> {
        let mut out = Vec::new();
        for now in &self.comparisons {
            let Some(then) = baseline
                .comparisons
                .iter()
                .find(|c| c.name == now.name && c.size == now.size)
            else {
                continue;
            };
            let worse = if now.higher_is_better {
                now.ours < then.ours * (1.0 - threshold)
            } else {
                now.ours > then.ours * (1.0 + threshold)
            };
            if worse {
                out.push(format!(
                    "{}: {:.2} {} now, {:.2} in the baseline",
                    now.label(),
                    now.ours,
                    now.unit,
                    then.ours
                ));
            }
        }
        for now in &self.measurements {
            let Some(then) = baseline.measurements.iter().find(|m| m.name == now.name) else {
                continue;
            };
            if now.qps < then.qps * (1.0 - threshold) {
                out.push(format!(
                    "{}: {:.0} qps now, {:.0} in the baseline",
                    now.name, now.qps, then.qps
                ));
            }
            if now.p95_ms > then.p95_ms * (1.0 + threshold) {
                out.push(format!(
                    "{}: p95 {:.3} ms now, {:.3} ms in the baseline",
                    now.name, now.p95_ms, then.p95_ms
                ));
            }
        }
        out
    }

    /// Writes the JSON file, creating its directory.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// The results as a table.
    pub fn table(&self) -> String {
        let mut out = format!("suite {}\n", self.suite);
        let _ = writeln!(
            out,
            "  {:<34} {:>14} {:>14} {:>7} {:>8}  anchor",
            "name", "ours", "anchor", "ratio", "target"
        );
        for c in &self.comparisons {
            let target = match (c.target, c.meets_target()) {
                (Some(t), Some(true)) => format!(">={t} ok"),
                (Some(t), _) => format!(">={t} MISS"),
                (None, _) => "context".to_owned(),
            };
            let _ = writeln!(
                out,
                "  {:<34} {:>14} {:>14} {:>7.3} {:>8}  {} [{}]",
                c.label(),
                figure(c.ours),
                figure(c.anchor),
                c.ratio,
                target,
                c.anchor_tool,
                c.unit
            );
        }
        if !self.measurements.is_empty() {
            let _ = writeln!(
                out,
                "  {:<28} {:>10} {:>9} {:>9} {:>9}",
                "query", "qps", "p50 ms", "p95 ms", "p99 ms"
            );
            for m in &self.measurements {
                let _ = writeln!(
                    out,
                    "  {:<28} {:>10.0} {:>9.3} {:>9.3} {:>9.3}",
                    m.name, m.qps, m.p50_ms, m.p95_ms, m.p99_ms
                );
            }
        }
        out
    }
}

/// A figure with one decimal when large, four significant digits when small (seconds).
pub fn figure(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.4}")
    }
}

/// The median of a non-empty list (0 for an empty one).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_ratio_orientation() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let c =
            Comparison::from_rounds("x", "ms", &[2.0, 2.0, 9.0], &[4.0, 4.0, 1.0], "tool", false);
        assert_eq!((c.ours, c.anchor, c.ratio), (2.0, 4.0, 2.0));
        let c = Comparison::from_rounds("x", "qps", &[90.0], &[100.0], "tool", true);
        assert!((c.ratio - 0.9).abs() < 1e-9);
        let json = serde_json::to_value(Report {
            suite: "s".into(),
            comparisons: vec![c.clone().target(0.95)],
            measurements: Vec::new(),
            machine: None,
            quick: false,
        })
        .unwrap();
        assert_eq!(json["comparisons"][0]["anchor_tool"], "tool");
        assert_eq!(json["comparisons"][0]["higher_is_better"], true);
        assert!(json.get("measurements").is_none());
        assert_eq!(json["comparisons"][0]["target"], 0.95);
        assert_eq!(c.meets_target(), None);
        assert_eq!(c.clone().target(0.95).meets_target(), Some(false));
        // Reports written before targets existed still read.
        let old: Report = serde_json::from_str(
            r#"{"suite":"s","comparisons":[{"name":"x","unit":"qps","ours":1.0,"anchor":1.0,"anchor_tool":"t","higher_is_better":true,"ratio":1.0}]}"#,
        )
        .unwrap();
        assert_eq!(old.comparisons[0].target, None);
    }

    #[test]
    fn regressions_beyond_the_threshold_are_named() {
        let m = |name: &str, qps: f64, p95_ms: f64| Measurement {
            name: name.into(),
            qps,
            p50_ms: p95_ms / 2.0,
            p95_ms,
            p99_ms: p95_ms * 2.0,
        };
        let report = |qps: f64, p95: f64, ours: f64| Report {
            suite: "workload".into(),
            comparisons: vec![Comparison::from_rounds(
                "q",
                "qps",
                &[ours],
                &[100.0],
                "pgbench",
                true,
            )],
            measurements: vec![m("session_lookup", qps, p95), m("new_query", 1.0, 100.0)],
            machine: None,
            quick: false,
        };
        let baseline = report(1000.0, 1.0, 100.0);
        assert!(
            report(900.0, 1.1, 95.0)
                .regressions(&baseline, 0.2)
                .is_empty()
        );
        let found = report(700.0, 1.5, 70.0).regressions(&baseline, 0.2);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("q: 70.00 qps now"));
        assert!(found[1].contains("700 qps now, 1000 in the baseline"));
        assert!(found[2].contains("p95 1.500 ms now"));
    }
}
