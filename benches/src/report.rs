//! The benchmark report: the JSON every suite writes to `target/pgops-bench/<suite>.json`
//! (the contract in DESIGN.md) and the table printed beside it.

use std::{fmt::Write as _, path::Path};

use anyhow::Context as _;
use serde::Serialize;

/// One suite's results.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The suite's name.
    pub suite: String,
    /// Each measured pair.
    pub comparisons: Vec<Comparison>,
}

/// pgops against the existing tool (the anchor), same data, same run, interleaved rounds;
/// each figure is the median of the rounds.
#[derive(Debug, Clone, Serialize)]
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
        }
    }
}

impl Report {
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
            "  {:<20} {:>14} {:>14} {:>7}  anchor",
            "name", "ours", "anchor", "ratio"
        );
        for c in &self.comparisons {
            let _ = writeln!(
                out,
                "  {:<20} {:>14.1} {:>14.1} {:>7.3}  {} [{}]",
                c.name, c.ours, c.anchor, c.ratio, c.anchor_tool, c.unit
            );
        }
        out
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
            comparisons: vec![c],
        })
        .unwrap();
        assert_eq!(json["comparisons"][0]["anchor_tool"], "tool");
        assert_eq!(json["comparisons"][0]["higher_is_better"], true);
    }
}
