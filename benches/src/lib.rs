//! Benchmarks of pgops side by side with the tools they replace. Each suite measures both
//! sides in the same run, on the same data, in interleaved rounds, and reports medians in the
//! JSON contract of `cargo xtask bench`.
// A harness, not a library for services: it reports progress on stderr.
#![allow(clippy::print_stderr)]

pub mod backup;
pub mod failover;
pub mod health;
pub mod page;
pub mod peers;
pub mod pgbouncer;
pub mod pool;
pub mod queries;
pub mod report;
pub mod router;
pub mod seed;
mod settle;
pub mod workload;

/// The suites, by name.
pub const SUITES: &[&str] = &[
    "pool",
    "router",
    "seed",
    "workload",
    "health",
    "backup",
    "pgbouncer",
    "failover",
];

/// Runs one suite.
pub fn run(suite: &str, quick: bool) -> anyhow::Result<report::Report> {
    let mut report = match suite {
        "pool" => pool::run(workload::LookupPlan::new(quick)),
        "router" => router::run(workload::LookupPlan::new(quick)),
        "seed" => seed::run(seed::Plan::new(quick)),
        "workload" => queries::run(queries::Plan::new(quick)),
        "health" => health::run(health::Plan::new(quick)),
        "backup" => backup::run(backup::Plan::new(quick)),
        "pgbouncer" => pgbouncer::run(workload::LookupPlan::new(quick)),
        "failover" => failover::run(failover::Plan::new(quick)),
        other => anyhow::bail!(
            "unknown benchmark suite `{other}`; known suites: {}",
            SUITES.join(", ")
        ),
    }?;
    report.machine = Some(page::machine());
    report.quick = quick;
    Ok(report)
}
