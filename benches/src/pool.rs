//! The `pool` suite: primary-key lookups on a `pgbench -i` database through the pgops pool
//! and diesel, checked out per query from a pool of 16, at 8, 32 and 128 client threads;
//! against `pgbench -S -M prepared` with the same client count and one thread per client
//! (`-j` = `-c`, as the harness runs one OS thread per client, as a service does), and
//! `-j 2` for context; and checking out per query against holding one connection per
//! client; and against the pools a Rust service would pick instead (sqlx's `PgPool`,
//! `deadpool-postgres`), with the same pool size and client count.

use anyhow::Context as _;
use pgops_pool::{DatabaseUrl, Environment, Pool, PoolSettings};

use crate::{
    peers::Peers,
    report::{Comparison, Report},
    workload::{
        Lookup, LookupPlan, balance, lookup_cluster, pgbench, pk_lookups, pk_lookups_via_pool,
    },
};

/// Runs the suite on a fresh cluster.
pub fn run(plan: LookupPlan) -> anyhow::Result<Report> {
    let cluster = lookup_cluster(plan)?;
    let accounts = plan.accounts()?;
    let url = DatabaseUrl::parse(&cluster.url("postgres"))?;
    let sized = |size: u32| PoolSettings {
        max_size: size,
        min_idle: size,
        ..Environment::Production.profile()
    };
    let pool = Pool::open("bench", url.clone(), sized(plan.pool_size))?;
    let peers = Peers::open(&cluster.url("postgres"), plan.pool_size)?;
    let mut comparisons = Vec::new();
    for &clients in plan.client_counts {
        // One connection held per client: as many connections as clients.
        let holding = Pool::open("bench-held", url.clone(), sized(clients))?;
        let size = format!("{clients} clients");
        let (c, t) = (clients.to_string(), plan.seconds.to_string());
        let pgbench_tool = |threads: &str| {
            format!(
                "pgbench -n -S -M prepared -c {c} -j {threads} -T {t} -h 127.0.0.1 -p <port> -U postgres postgres"
            )
        };
        let (mut ours, mut held, mut anchor, mut two_threads) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut sqlx, mut deadpool) = (Vec::new(), Vec::new());
        for round in 0..plan.rounds {
            // Rotate which side goes first so none always runs on a warmer cache.
            let mut steps = [
                "pgbench",
                "checkout",
                "sqlx",
                "held",
                "deadpool",
                "pgbench-j2",
            ];
            let n = steps.len();
            steps.rotate_left(round % n);
            for step in steps {
                match step {
                    "pgbench" | "pgbench-j2" => {
                        let threads = if step == "pgbench" { c.as_str() } else { "2" };
                        let args = [
                            "-n", "-S", "-M", "prepared", "-c", &c, "-j", threads, "-T", &t,
                        ];
                        let tps = pgbench_tps(&pgbench(&cluster, "postgres", &args)?)?;
                        if step == "pgbench" {
                            anchor.push(tps);
                        } else {
                            two_threads.push(tps);
                        }
                    }
                    "sqlx" => sqlx.push(peers.sqlx(clients, plan.seconds, accounts)?),
                    "deadpool" => deadpool.push(peers.deadpool(clients, plan.seconds, accounts)?),
                    "checkout" => {
                        ours.push(pk_lookups_via_pool(&pool, clients, plan.seconds, accounts)?)
                    }
                    _ => {
                        let holding = holding.clone();
                        held.push(pk_lookups(clients, plan.seconds, accounts, move || {
                            let mut conn = holding.get()?;
                            Ok(Box::new(move |key| {
                                balance(&mut conn, key)?;
                                Ok(())
                            }) as Lookup)
                        })?);
                    }
                }
            }
            eprintln!(
                "{clients} clients, round {}: pgbench -j {clients} {:.0}, -j 2 {:.0}, pgops checkout per query (pool of {}) {:.0}, pgops held {:.0}, sqlx {:.0}, deadpool-postgres {:.0} queries/s",
                round + 1,
                anchor[round],
                two_threads[round],
                plan.pool_size,
                ours[round],
                held[round],
                sqlx[round],
                deadpool[round]
            );
        }
        comparisons.push(
            Comparison::from_rounds(
                "pk_lookup_qps",
                "queries/s",
                &ours,
                &anchor,
                &pgbench_tool(&c),
                true,
            )
            .target(0.9)
            .size(&size),
        );
        comparisons.push(
            Comparison::from_rounds(
                "pk_lookup_qps_vs_pgbench_j2",
                "queries/s",
                &ours,
                &two_threads,
                &format!(
                    "{} (client threads multiplexed on 2; context)",
                    pgbench_tool("2")
                ),
                true,
            )
            .size(&size),
        );
        let tasks = format!(
            "{clients} tokio tasks on 2 worker threads, {} s",
            plan.seconds
        );
        let pool_size = plan.pool_size;
        for (name, figures, tool) in [
            (
                "pk_lookup_qps_vs_sqlx",
                &sqlx,
                format!(
                    "sqlx 0.8 PgPool (max_connections = min_connections = {pool_size}; query_scalar with bind, statements prepared and cached per connection), {tasks}"
                ),
            ),
            (
                "pk_lookup_qps_vs_deadpool",
                &deadpool,
                format!(
                    "deadpool-postgres 0.14 over tokio-postgres 0.7 (pool of {pool_size}, RecyclingMethod::Fast, prepare_cached), {tasks}"
                ),
            ),
        ] {
            comparisons.push(
                Comparison::from_rounds(name, "queries/s", &ours, figures, &tool, true)
                    .target(1.0)
                    .size(&size),
            );
        }
        comparisons.push(
            Comparison::from_rounds(
                "checkout_overhead",
                "queries/s",
                &ours,
                &held,
                &format!(
                    "the same lookups through pgops and diesel on one connection held per client ({clients} clients, {} s)",
                    plan.seconds
                ),
                true,
            )
            .target(0.95)
            .size(&size),
        );
    }
    Ok(Report {
        suite: "pool".into(),
        comparisons,
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
