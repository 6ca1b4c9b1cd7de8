//! The `backup` suite: a logical backup by pgops (pg_dump in a held snapshot, zstd, SHA-256,
//! row counts, manifest, into a file:// repository) against raw `pg_dump -Fc` of the same
//! database (pgbench scale 50), in alternating rounds; and the size of each result.

use std::{process::Command, time::Instant};

use anyhow::{Context as _, ensure};
use pgops_backup::{logical, repo};
use pgops_pool::DatabaseUrl;
use pgops_testkit::{Cluster, ClusterOptions, SUPERUSER};

use crate::{
    report::{Comparison, Report},
    workload::pgbench,
};

/// How big and how long.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// `pgbench -i -s` scale.
    pub scale: u32,
    /// Rounds per side.
    pub rounds: usize,
}

impl Plan {
    /// The full plan, or a short one for `--quick`.
    pub fn new(quick: bool) -> Self {
        if quick {
            Plan {
                scale: 5,
                rounds: 3,
            }
        } else {
            Plan {
                scale: 50,
                rounds: 5,
            }
        }
    }
}

/// Runs the suite.
pub fn run(plan: Plan) -> anyhow::Result<Report> {
    let cluster = Cluster::start(ClusterOptions::default()).context("starting a cluster")?;
    cluster.create_database("bench")?;
    eprintln!("pgbench -i -s {} ...", plan.scale);
    pgbench(
        &cluster,
        "bench",
        &["-i", "-q", "-s", &plan.scale.to_string()],
    )?;
    let dir = tempfile::tempdir()?;
    let store = repo::open(&format!("file://{}/repo", dir.path().display()))?;
    let url = DatabaseUrl::parse(&cluster.url("bench"))?;
    let pg_dump = cluster.binaries().program("pg_dump");
    let dump_path = dir.path().join("bench.dump");
    let port = cluster.port().to_string();
    let anchor_tool = format!(
        "pg_dump -Fc -h 127.0.0.1 -p <port> -U {SUPERUSER} -f bench.dump bench (pgbench scale {}; default gzip level)",
        plan.scale
    );
    let (mut ours, mut anchor) = (Vec::new(), Vec::new());
    let (mut ours_bytes, mut anchor_bytes) = (0u64, 0u64);
    for round in 0..plan.rounds {
        let pgops_first = round % 2 == 0;
        for side in [pgops_first, !pgops_first] {
            if side {
                let t = Instant::now();
                let manifest = logical::create(
                    &*store,
                    &url,
                    &logical::CreateOptions::default(),
                    &mut logical::Quiet,
                )?;
                ours.push(t.elapsed().as_secs_f64());
                ours_bytes = manifest.bytes();
                pgops_backup::prune(
                    &*store,
                    pgops_backup::retention::Policy {
                        keep_last: 1,
                        ..Default::default()
                    },
                    false,
                )?;
            } else {
                let t = Instant::now();
                let out = Command::new(&pg_dump)
                    .args(["-Fc", "-h", "127.0.0.1", "-p", &port, "-U", SUPERUSER, "-f"])
                    .arg(&dump_path)
                    .arg("bench")
                    .output()
                    .with_context(|| format!("running {}", pg_dump.display()))?;
                ensure!(
                    out.status.success(),
                    "pg_dump failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                anchor.push(t.elapsed().as_secs_f64());
                anchor_bytes = std::fs::metadata(&dump_path)?.len();
            }
        }
        eprintln!(
            "round {}: pgops {:.2} s ({} bytes), pg_dump -Fc {:.2} s ({} bytes)",
            round + 1,
            ours[round],
            ours_bytes,
            anchor[round],
            anchor_bytes
        );
    }
    Ok(Report {
        suite: "backup".into(),
        comparisons: vec![
            Comparison::from_rounds(
                "logical_backup_seconds",
                "seconds",
                &ours,
                &anchor,
                &anchor_tool,
                false,
            ),
            Comparison::from_rounds(
                "logical_backup_bytes",
                "bytes",
                &[ours_bytes as f64],
                &[anchor_bytes as f64],
                &anchor_tool,
                false,
            ),
        ],
        measurements: Vec::new(),
    })
}
