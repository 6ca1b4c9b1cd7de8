//! The `pool` suite: primary-key lookups on a `pgbench -i` database through the pgops pool
//! and diesel, against `pgbench -S -M prepared` with the same client count; and checking out
//! per query against holding one connection per client.

use anyhow::Context as _;
use pgops_pool::{DatabaseUrl, Environment, Pool, PoolSettings};

use crate::{
    report::{Comparison, Report},
    workload::{
        Lookup, LookupPlan, balance, lookup_cluster, pgbench, pk_lookups, pk_lookups_via_pool,
    },
};

/// Runs the suite on a fresh cluster.
pub fn run(plan: LookupPlan) -> anyhow::Result<Report> {
    let cluster = lookup_cluster(plan)?;

    let accounts = plan.accounts()?;
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
                    let clients = plan.clients.to_string();
                    let seconds = plan.seconds.to_string();
                    let args = [
                        "-n", "-S", "-M", "prepared", "-c", &clients, "-j", "2", "-T", &seconds,
                    ];
                    anchor.push(pgbench_tps(&pgbench(&cluster, "postgres", &args)?)?);
                }
                "checkout" => ours.push(pk_lookups_via_pool(&pool, plan, accounts)?),
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
            )
        .target(0.9),
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
            )
        .target(0.95),
        ],
        measurements: Vec::new(),
        machine: None,
        quick: false,
    })
}

/// Reads pgbench's `tps = N (without initial connection time)` line.
pub(crate) fn pgbench_tps(output: &str) -> anyhow::Result<f64> {
    output
        .lines()
        .filter(|l| l.starts_with("tps = ") && l.contains("without initial connection time"))
        .find_map(|l| {
            l.trim_start_matches("tps = ")
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .with_context(|| format!("no tps line in pgbench's output:\n{output}"))
}
