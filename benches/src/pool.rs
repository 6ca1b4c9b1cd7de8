//! The `pool` suite: primary-key lookups on a `pgbench -i` database through the pgops pool
//! and diesel, against `pgbench -S -M prepared` with the same client count; and checking out
//! per query against holding one connection per client.

use std::process::Command;

use anyhow::{Context as _, bail, ensure};
use pgops_pool::{DatabaseUrl, Environment, Pool, PoolSettings};
use pgops_testkit::{Cluster, ClusterOptions, SUPERUSER};

use crate::{
    report::{Comparison, Report},
    workload::{Lookup, balance, pk_lookups},
};

/// How big and how long.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// `pgbench -i -s` scale (100,000 accounts each).
    pub scale: u32,
    /// Concurrent clients on both sides.
    pub clients: u32,
    /// Seconds per measurement.
    pub seconds: u64,
    /// Rounds per side (medians are reported).
    pub rounds: usize,
}

impl Plan {
    /// The full plan, or a short one for `--quick`.
    pub fn new(quick: bool) -> Self {
        if quick {
            Plan {
                scale: 2,
                clients: 8,
                seconds: 2,
                rounds: 3,
            }
        } else {
            Plan {
                scale: 10,
                clients: 8,
                seconds: 5,
                rounds: 7,
            }
        }
    }
}

/// Runs the suite on a fresh cluster.
pub fn run(plan: Plan) -> anyhow::Result<Report> {
    let cluster = Cluster::start(ClusterOptions::default().setting("max_connections", "200"))
        .context("starting a cluster")?;
    let pgbench = cluster.binaries().program("pgbench");
    let port = cluster.port().to_string();
    let base = |cmd: &mut Command| {
        cmd.args(["-h", "127.0.0.1", "-p", &port, "-U", SUPERUSER]);
    };
    eprintln!("pgbench -i -s {} ...", plan.scale);
    let mut init = Command::new(&pgbench);
    base(&mut init);
    init.args(["-i", "-q", "-s", &plan.scale.to_string(), "postgres"]);
    let out = init
        .output()
        .with_context(|| format!("running {}", pgbench.display()))?;
    ensure!(
        out.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster.execute("postgres", "VACUUM ANALYZE")?;

    let accounts = i32::try_from(plan.scale * 100_000)?;
    let settings = PoolSettings {
        max_size: plan.clients,
        min_idle: plan.clients,
        ..Environment::Production.profile()
    };
    let pool = Pool::open(
        "bench",
        DatabaseUrl::parse(&cluster.url("postgres"))?,
        settings,
    )?;

    let anchor_tool = format!(
        "pgbench -n -S -M prepared -c {c} -j 2 -T {t} -h 127.0.0.1 -p <port> -U postgres postgres",
        c = plan.clients,
        t = plan.seconds
    );
    let (mut ours, mut held, mut anchor) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        // Alternate which side goes first so neither always runs on a warmer cache.
        let mut steps: Vec<&str> = vec!["pgbench", "checkout", "held"];
        steps.rotate_left(round % 3);
        for step in steps {
            match step {
                "pgbench" => {
                    let mut cmd = Command::new(&pgbench);
                    base(&mut cmd);
                    cmd.args([
                        "-n",
                        "-S",
                        "-M",
                        "prepared",
                        "-c",
                        &plan.clients.to_string(),
                        "-j",
                        "2",
                    ])
                    .args(["-T", &plan.seconds.to_string(), "postgres"]);
                    anchor.push(pgbench_tps(cmd)?);
                }
                "checkout" => {
                    let pool = pool.clone();
                    ours.push(pk_lookups(
                        plan.clients,
                        plan.seconds,
                        accounts,
                        move || {
                            let pool = pool.clone();
                            Ok(Box::new(move |key| {
                                balance(&mut *pool.get()?, key)?;
                                Ok(())
                            }) as Lookup)
                        },
                    )?)
                }
                _ => {
                    let pool = pool.clone();
                    held.push(pk_lookups(
                        plan.clients,
                        plan.seconds,
                        accounts,
                        move || {
                            let mut conn = pool.get()?;
                            Ok(Box::new(move |key| {
                                balance(&mut conn, key)?;
                                Ok(())
                            }) as Lookup)
                        },
                    )?)
                }
            }
        }
        eprintln!(
            "round {}: pgbench {:.0}, pgops checkout per query {:.0}, pgops held {:.0} queries/s",
            round + 1,
            anchor[round],
            ours[round],
            held[round]
        );
    }
    Ok(Report {
        suite: "pool".into(),
        comparisons: vec![
            Comparison::from_rounds(
                "pk_lookup_qps",
                "queries/s",
                &ours,
                &anchor,
                &anchor_tool,
                true,
            ),
            Comparison::from_rounds(
                "checkout_overhead",
                "queries/s",
                &ours,
                &held,
                &format!(
                    "the same lookups through pgops and diesel on one connection held per client ({} clients, {} s)",
                    plan.clients, plan.seconds
                ),
                true,
            ),
        ],
    })
}

/// Runs pgbench and reads its `tps = N (without initial connection time)` line.
pub(crate) fn pgbench_tps(mut cmd: Command) -> anyhow::Result<f64> {
    let out = cmd.output().context("running pgbench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    text.lines()
        .filter(|l| l.starts_with("tps = ") && l.contains("without initial connection time"))
        .find_map(|l| {
            l.trim_start_matches("tps = ")
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .with_context(|| format!("no tps line in pgbench's output:\n{text}"))
}
