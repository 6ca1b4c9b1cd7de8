//! The `router` suite: primary-key reads through the router (no token, so a replica serves)
//! against the same reads on a pool connected straight to that replica, both pools of 16
//! connections, at 8, 32 and 128 client threads.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use pgops_pool::{DatabaseUrl, Environment, Pool, PoolSettings};
use pgops_router::{ReplicaSpec, Router, RouterConfig};
use pgops_testkit::{Cluster, ClusterOptions};

use crate::{
    report::{Comparison, Report},
    workload::{Lookup, LookupPlan, balance, pgbench, pk_lookups, pk_lookups_via_pool},
};

/// Runs the suite on a fresh primary and streaming replica.
pub fn run(plan: LookupPlan) -> anyhow::Result<Report> {
    let primary = Cluster::start(ClusterOptions::default()).context("starting the primary")?;
    pgbench(
        &primary,
        "postgres",
        &["-i", "-q", "-s", &plan.scale.to_string()],
    )?;
    let replica = primary.create_replica().context("starting the replica")?;
    replica.catch_up(&primary, Duration::from_secs(120))?;
    replica.execute("postgres", "SELECT count(*) FROM pgbench_accounts")?;

    let settings = PoolSettings {
        max_size: plan.pool_size,
        min_idle: plan.pool_size,
        ..Environment::Production.profile()
    };
    let replica_url = DatabaseUrl::parse(&replica.url("postgres"))?;
    let direct = Pool::open("replica-direct", replica_url.clone(), settings.clone())?;
    let router = Router::new(
        Pool::open(
            "primary",
            DatabaseUrl::parse(&primary.url("postgres"))?,
            settings.clone(),
        )?,
        vec![ReplicaSpec {
            name: "replica-0".into(),
            pool: Pool::open("replica-0", replica_url, settings)?,
            weight: 1,
        }],
        RouterConfig::default(),
    );
    ensure!(
        router.replicas()[0].serving,
        "the replica is not serving: {:?}",
        router.replicas()
    );

    let accounts = plan.accounts()?;
    let mut comparisons = Vec::new();
    for &clients in plan.client_counts {
        let (mut ours, mut anchor) = (Vec::new(), Vec::new());
        for round in 0..plan.rounds {
            for via_router in if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            } {
                if via_router {
                    let router = router.clone();
                    ours.push(pk_lookups(clients, plan.seconds, accounts, move || {
                        let router = router.clone();
                        Ok(Box::new(move |key| {
                            router.read(None, |conn| -> Result<i32, pgops_router::Error> {
                                Ok(balance(conn, key)?)
                            })?;
                            Ok(())
                        }) as Lookup)
                    })?);
                } else {
                    anchor.push(pk_lookups_via_pool(
                        &direct,
                        clients,
                        plan.seconds,
                        accounts,
                    )?);
                }
            }
            eprintln!(
                "{clients} clients, round {}: router {:.0}, replica pool {:.0} reads/s",
                round + 1,
                ours[round],
                anchor[round]
            );
        }
        comparisons.push(
            Comparison::from_rounds(
                "read_qps_via_router",
                "reads/s",
                &ours,
                &anchor,
                &format!(
                    "the same lookups on a pgops pool of {} connected straight to the replica ({clients} clients, {} s)",
                    plan.pool_size, plan.seconds
                ),
                true,
            )
            .target(0.95)
            .size(format!("{clients} clients")),
        );
    }
    ensure!(
        router.replicas()[0].serving,
        "the replica stopped serving during the run"
    );
    Ok(Report {
        suite: "router".into(),
        comparisons,
        measurements: Vec::new(),
        machine: None,
        quick: false,
    })
}
