//! The `pgbouncer` suite, through a real PgBouncer (Debian's) in transaction pooling:
//! primary-key lookups through a pgops pool with `pooler = transaction` against
//! `pgbench -S -M extended` through the same PgBouncer with the same clients, the same lookups
//! straight to the server as context; and the time to answer `/metrics` for `pgops health`
//! with `--pgbouncer` against `prometheus-pgbouncer-exporter` on the same PgBouncer: spreaker's
//! 2.1.2 from PyPI (installed by `cargo xtask bench`), because Debian's 1.7 package stops at
//! start against Debian's PgBouncer 1.18 (`KeyError: 'total_requests'`).

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use pgops_health::{Exporter, Options, pgbouncer::PgBouncerCollector};
use pgops_pool::{DatabaseUrl, Environment, Pool, PoolSettings, Pooler};
use pgops_testkit::{Cluster, PgBouncer, PgBouncerOptions, PoolMode};

use crate::{
    health::{Killed, fetch, serve, which},
    pool::pgbench_tps,
    report::{Comparison, Report, median},
    workload::{LookupPlan, lookup_cluster, pgbench_at, pk_lookups_via_pool},
};

/// The exporter's program.
const PGBOUNCER_EXPORTER: &str = "pgbouncer-exporter";

/// Scrapes per exporter per round.
const SCRAPES: usize = 20;

/// Runs the suite.
pub fn run(plan: LookupPlan) -> anyhow::Result<Report> {
    let cluster = lookup_cluster(plan)?;
    let bouncer = PgBouncer::start(
        &cluster,
        PgBouncerOptions::new(PoolMode::Transaction, plan.clients),
    )
    .context("starting PgBouncer")?;
    let accounts = plan.accounts()?;
    let settings = |pooler| PoolSettings {
        max_size: plan.clients,
        min_idle: plan.clients,
        pooler,
        ..Environment::Production.profile()
    };
    let through = Pool::open(
        "bench-pgbouncer",
        DatabaseUrl::parse(&bouncer.url("postgres"))?,
        settings(Pooler::Transaction),
    )?;
    let direct = Pool::open(
        "bench-direct",
        DatabaseUrl::parse(&cluster.url("postgres"))?,
        settings(Pooler::None),
    )?;

    let (clients, seconds) = (plan.clients.to_string(), plan.seconds.to_string());
    // One pgbench thread per client, as the pool suite's anchor: the harness runs one OS
    // thread per client as a service does; two threads multiplexing the clients is context.
    let anchor_tool = |threads: &str| {
        format!(
            "pgbench -n -S -M extended -c {clients} -j {threads} -T {seconds} through PgBouncer 1.18 (pool_mode = transaction, default_pool_size = {clients})"
        )
    };
    let (mut ours, mut anchor, mut straight) = (Vec::new(), Vec::new(), Vec::new());
    let mut two_threads = Vec::new();
    for round in 0..plan.rounds {
        let mut steps = ["pgbench", "pgops", "direct", "pgbench -j 2"];
        steps.rotate_left(round % 4);
        for step in steps {
            match step {
                "pgbench" | "pgbench -j 2" => {
                    let threads = if step == "pgbench" {
                        clients.as_str()
                    } else {
                        "2"
                    };
                    let args = [
                        "-n", "-S", "-M", "extended", "-c", &clients, "-j", threads, "-T", &seconds,
                    ];
                    let output = pgbench_at(
                        &cluster,
                        bouncer.port(),
                        Some(bouncer.password()),
                        "postgres",
                        &args,
                    )?;
                    let tps = pgbench_tps(&output)?;
                    if step == "pgbench" {
                        anchor.push(tps);
                    } else {
                        two_threads.push(tps);
                    }
                }
                "pgops" => ours.push(pk_lookups_via_pool(
                    &through,
                    plan.clients,
                    plan.seconds,
                    accounts,
                )?),
                _ => straight.push(pk_lookups_via_pool(
                    &direct,
                    plan.clients,
                    plan.seconds,
                    accounts,
                )?),
            }
        }
        eprintln!(
            "round {}: pgbench via PgBouncer {:.0} (-j 2: {:.0}), pgops via PgBouncer {:.0}, pgops direct {:.0} queries/s",
            round + 1,
            anchor[round],
            two_threads[round],
            ours[round],
            straight[round]
        );
    }

    let (ours_scrape, anchor_scrape) = scrapes(&cluster, &bouncer, plan.rounds)?;
    Ok(Report {
        suite: "pgbouncer".into(),
        comparisons: vec![
            Comparison::from_rounds(
                "pk_lookup_qps_via_pgbouncer",
                "queries/s",
                &ours,
                &anchor,
                &anchor_tool(&clients),
                true,
            )
            .target(0.9),
            Comparison::from_rounds(
                "pk_lookup_qps_via_pgbouncer_vs_pgbench_j2",
                "queries/s",
                &ours,
                &two_threads,
                &format!(
                    "{} (client threads multiplexed on 2; context)",
                    anchor_tool("2")
                ),
                true,
            ),
            Comparison::from_rounds(
                "pk_lookup_qps_direct",
                "queries/s",
                &straight,
                &ours,
                "context: the same lookups through pgops straight to the server (ours), against pgops through PgBouncer (anchor)",
                true,
            ),
            Comparison::from_rounds(
                "pgbouncer_scrape_seconds",
                "seconds",
                &ours_scrape,
                &anchor_scrape,
                "prometheus-pgbouncer-exporter 2.1.2 (PyPI; Debian's 1.7 cannot read PgBouncer 1.18), GET /metrics on the same PgBouncer; pgops health serve --pgbouncer, with the database's own metrics in the same answer",
                false,
            )
            .target(1.5),
        ],
        measurements: Vec::new(),
        machine: None,
        quick: false,
    })
}

/// `/metrics` answer times, per round (medians of `SCRAPES`): pgops, then the exporter.
fn scrapes(
    cluster: &Cluster,
    bouncer: &PgBouncer,
    rounds: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let program = which(PGBOUNCER_EXPORTER).with_context(|| {
        format!("{PGBOUNCER_EXPORTER} is not installed; cargo xtask bench installs it")
    })?;
    let anchor_port = pgops_pg::free_port()?;
    // Its configuration names PgBouncer's admin console (a throwaway test password).
    let config = tempfile::NamedTempFile::new().context("writing the exporter's configuration")?;
    std::fs::write(
        config.path(),
        format!(
            "exporter_host: 127.0.0.1\nexporter_port: {anchor_port}\npgbouncers:\n  - dsn: {}\n",
            bouncer.admin_url()
        ),
    )?;
    let _anchor = Killed(
        Command::new(&program)
            .arg("--config")
            .arg(config.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ours_port = serve(
        &runtime,
        Exporter::new(
            DatabaseUrl::parse(&cluster.url("postgres"))?,
            vec![],
            Options::default(),
            None,
        )?
        .with_collector(PgBouncerCollector::new(DatabaseUrl::parse(
            &bouncer.admin_url(),
        )?)),
    )?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let fetch = |url: &str| fetch(&agent, url);
    let anchor_url = format!("http://127.0.0.1:{anchor_port}/metrics");
    let ours_url = format!("http://127.0.0.1:{ours_port}/metrics");
    let started = Instant::now();
    let anchor_text = loop {
        match fetch(&anchor_url) {
            Ok(text) if text.contains("pgbouncer_up 1") => break text,
            _ if started.elapsed() > Duration::from_secs(20) => {
                bail!("{PGBOUNCER_EXPORTER} did not answer with PgBouncer metrics within 20 s")
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let ours_text = fetch(&ours_url)?;
    ensure!(
        ours_text.contains("pgbouncer_up 1"),
        "pgops did not read PgBouncer"
    );
    eprintln!(
        "{PGBOUNCER_EXPORTER}: {} PgBouncer samples; pgops: {} PgBouncer samples",
        anchor_text
            .lines()
            .filter(|l| l.starts_with("pgbouncer"))
            .count(),
        ours_text
            .lines()
            .filter(|l| l.starts_with("pgbouncer"))
            .count()
    );
    let time = |url: &str| -> anyhow::Result<f64> {
        let t = Instant::now();
        fetch(url)?;
        Ok(t.elapsed().as_secs_f64())
    };
    let (mut ours, mut anchor) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (mut o, mut a) = (Vec::new(), Vec::new());
        for i in 0..SCRAPES {
            if (round + i) % 2 == 0 {
                o.push(time(&ours_url)?);
                a.push(time(&anchor_url)?);
            } else {
                a.push(time(&anchor_url)?);
                o.push(time(&ours_url)?);
            }
        }
        ours.push(median(&o));
        anchor.push(median(&a));
        eprintln!(
            "round {}: pgops {:.2} ms, {PGBOUNCER_EXPORTER} {:.2} ms",
            round + 1,
            ours[round] * 1e3,
            anchor[round] * 1e3
        );
    }
    Ok((ours, anchor))
}
