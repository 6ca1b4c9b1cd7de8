//! The `seed` suite: bulk-loading `audit_logs` the way the staging seed does (generation and
//! binary `COPY FREEZE` in one transaction) against `psql \copy` of the identical rows from a
//! CSV file into the same, emptied table; and `pgbench -i` rows/s on the same cluster, for
//! context.

use std::{process::Command, time::Instant};

use anyhow::{Context as _, ensure};
use diesel::connection::SimpleConnection;
use pgops_seed::{Dataset, NoProgress, SeedOptions};
use pgops_testkit::{Cluster, ClusterOptions, SUPERUSER};

use crate::{
    report::{Comparison, Report},
    workload::pgbench,
};

/// How big and how long.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Staging scale (1.0: 1M audit_logs rows).
    pub scale: f64,
    /// Rounds per side.
    pub rounds: usize,
    /// `pgbench -i` scale for the context figure.
    pub pgbench_scale: u32,
}

impl Plan {
    /// The full plan, or a short one for `--quick`.
    pub fn new(quick: bool) -> Self {
        if quick {
            Plan {
                scale: 0.25,
                rounds: 3,
                pgbench_scale: 3,
            }
        } else {
            Plan {
                scale: 1.0,
                rounds: 5,
                pgbench_scale: 10,
            }
        }
    }
}

/// Runs the suite on a fresh cluster.
pub fn run(plan: Plan) -> anyhow::Result<Report> {
    let cluster = Cluster::start(ClusterOptions::default()).context("starting a cluster")?;
    cluster.create_database("bench")?;
    let mut conn = cluster.connect("bench")?;
    pgops_schema::migrate(&mut conn)?;
    let options = SeedOptions {
        dataset: Dataset::Staging,
        seed: 1,
        scale: plan.scale,
        reset: false,
    };
    eprintln!("seeding staging at scale {} ...", plan.scale);
    pgops_seed::seed(&mut conn, &options, &mut NoProgress)?;

    // The anchor loads the very rows the seed wrote, exported once (not timed).
    let dir = tempfile_dir()?;
    let csv = dir.join("audit_logs.csv");
    let psql = cluster.binaries().program("psql");
    let run_psql = |command: String| -> anyhow::Result<()> {
        let out = Command::new(&psql)
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &cluster.port().to_string(),
            ])
            .args(["-U", SUPERUSER, "-d", "bench", "-c", &command])
            .output()
            .with_context(|| format!("running {}", psql.display()))?;
        ensure!(
            out.status.success(),
            "psql -c {command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    run_psql(format!("\\copy audit_logs TO '{}' CSV", csv.display()))?;
    let rows = std::fs::read_to_string(&csv)?.lines().count() as f64;
    ensure!(
        plan.scale < 1.0 || rows >= 1_000_000.0,
        "the full run loads at least 1M rows, not {rows}"
    );

    let anchor_tool = "psql -c \"\\copy audit_logs FROM 'audit_logs.csv' CSV\" (the same rows, into the same emptied table)";
    let (mut ours, mut anchor) = (Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        let order: [bool; 2] = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for pgops in order {
            if pgops {
                let report = pgops_seed::reload_table(&mut conn, &options, "audit_logs")?;
                ours.push(report.rows as f64 / report.elapsed.as_secs_f64());
            } else {
                conn.batch_execute("TRUNCATE audit_logs")?;
                let started = Instant::now();
                run_psql(format!("\\copy audit_logs FROM '{}' CSV", csv.display()))?;
                anchor.push(rows / started.elapsed().as_secs_f64());
            }
        }
        eprintln!(
            "round {}: pgops {:.0} rows/s, psql \\copy {:.0} rows/s",
            round + 1,
            ours[round],
            anchor[round]
        );
    }

    // Context: what pgbench's own client-side generator reaches on this cluster.
    let started = Instant::now();
    pgbench(
        &cluster,
        "bench",
        &[
            "-i",
            "-q",
            "-I",
            "dtg",
            "-s",
            &plan.pgbench_scale.to_string(),
        ],
    )?;
    let pgbench_rows = f64::from(plan.pgbench_scale) * 100_000.0 / started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);

    Ok(Report {
        suite: "seed".into(),
        comparisons: vec![
            Comparison::from_rounds(
                "bulk_load_rows_per_s",
                "rows/s",
                &ours,
                &anchor,
                anchor_tool,
                true,
            )
            .target(1.2),
            Comparison::from_rounds(
                "context_pgbench_init",
                "rows/s",
                &ours,
                &[pgbench_rows],
                &format!(
                    "pgbench -i -I dtg -s {} (pgbench_accounts: no foreign keys, no jsonb; context only)",
                    plan.pgbench_scale
                ),
                true,
            ),
        ],
        measurements: Vec::new(),
        machine: None,
        quick: false,
    })
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("pgops-bench-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
