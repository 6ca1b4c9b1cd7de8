//! The `seed` suite, at staging scales 0.1, 1 and 5: bulk-loading `audit_logs` the way the
//! staging seed does (generation and binary `COPY FREEZE` in one transaction, keys built
//! after) against the limit of loading the same rows (a server-side binary `COPY .. FREEZE`
//! of them from a file written beforehand, with the same key and index builds), and against
//! `psql \copy` of the identical rows from a CSV file into the same, emptied table; and
//! `pgbench -i` rows/s on the same cluster, for context.

use std::{process::Command, time::Instant};

use anyhow::{Context as _, ensure};
use diesel::connection::SimpleConnection;
use pgops_seed::{Dataset, NoProgress, SeedOptions};
use pgops_testkit::{Cluster, ClusterOptions, SUPERUSER};

use crate::{
    report::{Comparison, Report, median},
    settle::settle,
    workload::pgbench,
};

/// How big and how long.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Staging scales (1.0: 1M audit_logs rows), one comparison each.
    pub scales: &'static [f64],
    /// `pgbench -i` scale for the context figure.
    pub pgbench_scale: u32,
    quick: bool,
}

impl Plan {
    /// The full plan, or a short one for `--quick`.
    pub fn new(quick: bool) -> Self {
        if quick {
            Plan {
                scales: &[0.25],
                pgbench_scale: 3,
                quick,
            }
        } else {
            Plan {
                scales: &[0.1, 1.0, 5.0],
                pgbench_scale: 10,
                quick,
            }
        }
    }

    /// Rounds of pgops and the limit at `scale`, and how many of them also run `psql \copy`.
    /// The rounds go where the noise is: a load of a quarter of a second (scale 0.1) falls
    /// whole into one of the machine's slow spells (seconds in which everything, index builds
    /// included, runs a third slower), and costs little to repeat; a round at scale 5 takes
    /// half a minute, and the context row's `\copy` 47 s more. The context row, which has no
    /// target, runs once from scale 1 up (at scale 1, 13 s a round).
    fn rounds_at(&self, scale: f64) -> (usize, usize) {
        if self.quick {
            (3, 3)
        } else if scale < 1.0 {
            (9, 3)
        } else if scale < 5.0 {
            (5, 1)
        } else {
            (3, 1)
        }
    }
}

/// Runs the suite on a fresh cluster.
pub fn run(plan: Plan) -> anyhow::Result<Report> {
    let cluster = Cluster::start(ClusterOptions::default()).context("starting a cluster")?;
    let dir = tempfile_dir()?;
    let mut comparisons = Vec::new();
    // pgops at the scale nearest to 1, for the context row.
    let mut near_one: Option<(f64, Vec<f64>)> = None;
    for (i, &scale) in plan.scales.iter().enumerate() {
        let db = format!("bench{i}");
        cluster.create_database(&db)?;
        let mut conn = cluster.connect(&db)?;
        pgops_schema::migrate(&mut conn)?;
        let options = SeedOptions {
            dataset: Dataset::Staging,
            seed: 1,
            scale,
            reset: false,
        };
        eprintln!("seeding staging at scale {scale} ...");
        pgops_seed::seed(&mut conn, &options, &mut NoProgress)?;

        // Both anchors load the very rows the seed wrote, exported once (not timed): a CSV
        // file for psql, a binary COPY file the server reads for the limit.
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
                .args(["-U", SUPERUSER, "-d", &db, "-c", &command])
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
            rows > 0.0,
            "staging at scale {scale} wrote no audit_logs rows"
        );
        let binary = cluster.root().join("audit_logs.bin");
        let binary = binary
            .to_str()
            .context("the cluster's directory is not UTF-8")?;
        conn.batch_execute(&format!(
            "COPY audit_logs TO {} WITH (FORMAT binary)",
            pgops_pg::quote_literal(binary)
        ))?;

        // What a reload writes, about: the table and its indexes.
        let written: u64 = {
            #[derive(diesel::QueryableByName)]
            struct Size {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                bytes: i64,
            }
            let size: Size = diesel::RunQueryDsl::get_result(
                diesel::sql_query("SELECT pg_total_relation_size('audit_logs') AS bytes"),
                &mut conn,
            )?;
            u64::try_from(size.bytes)?
        };
        let (rounds, psql_rounds) = plan.rounds_at(scale);
        let (mut ours, mut anchor, mut limit) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            // Each side goes first in turn, so none always loads on a warmer (or colder) machine.
            let sides: Vec<&str> = if round < psql_rounds {
                let mut sides = ["pgops", "limit", "psql"];
                sides.rotate_left(round % 3);
                sides.to_vec()
            } else if round % 2 == 0 {
                vec!["pgops", "limit"]
            } else {
                vec!["limit", "pgops"]
            };
            for side in sides {
                settle(&dir, written)?;
                match side {
                    "pgops" => {
                        let report = pgops_seed::reload_table(&mut conn, &options, "audit_logs")?;
                        ours.push(report.rows as f64 / report.elapsed.as_secs_f64());
                    }
                    "limit" => {
                        let report = pgops_seed::reload_table_from_server_file(
                            &mut conn,
                            "audit_logs",
                            binary,
                        )?;
                        ensure!(
                            report.rows as f64 == rows,
                            "the limit loaded {} rows",
                            report.rows
                        );
                        limit.push(report.rows as f64 / report.elapsed.as_secs_f64());
                    }
                    _ => {
                        conn.batch_execute("TRUNCATE audit_logs")?;
                        let started = Instant::now();
                        run_psql(format!("\\copy audit_logs FROM '{}' CSV", csv.display()))?;
                        anchor.push(rows / started.elapsed().as_secs_f64());
                    }
                }
            }
            let psql = anchor.get(round).map_or(String::new(), |rows| {
                format!(", psql \\copy {rows:.0} rows/s")
            });
            eprintln!(
                "scale {scale}, round {}: pgops {:.0} rows/s, limit {:.0} rows/s{psql}",
                round + 1,
                ours[round],
                limit[round],
            );
        }
        let size = format!("scale {scale}");
        comparisons.push(
            Comparison::from_rounds(
                "bulk_load_rows_per_s",
                "rows/s",
                &ours,
                &limit,
                &format!(
                    "COPY audit_logs FROM '<file>' WITH (FORMAT binary, FREEZE) of the same {rows} rows written beforehand, same transaction, TRUNCATE and key and index builds (the limit: no generation)"
                ),
                true,
            )
            .target(0.9)
            .size(&size),
        );
        comparisons.push(
            Comparison::from_rounds(
                "bulk_load_vs_psql_copy",
                "rows/s",
                &ours,
                &anchor,
                "psql -c \"\\copy audit_logs FROM 'audit_logs.csv' CSV\" (the same rows, into the same emptied table with its index and foreign key; context)",
                true,
            )
            .size(&size),
        );
        if near_one
            .as_ref()
            .is_none_or(|(s, _)| (scale - 1.0).abs() < (s - 1.0).abs())
        {
            near_one = Some((scale, ours));
        }
        drop(conn);
        cluster.execute("postgres", &format!("DROP DATABASE {db}"))?;
        let _ = std::fs::remove_file(&csv);
    }

    // Context: what pgbench's own client-side generator reaches on this cluster.
    cluster.create_database("pgbench")?;
    let started = Instant::now();
    pgbench(
        &cluster,
        "pgbench",
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
    let (scale, ours) = near_one.context("no scale to measure")?;
    comparisons.push(Comparison::from_rounds(
        "context_pgbench_init",
        "rows/s",
        &[median(&ours)],
        &[pgbench_rows],
        &format!(
            "pgbench -i -I dtg -s {} (pgbench_accounts: no foreign keys, no jsonb; context only; pgops at scale {scale})",
            plan.pgbench_scale
        ),
        true,
    ));

    Ok(Report {
        suite: "seed".into(),
        comparisons,
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
