//! The `health` suite: the time to answer `/metrics` for pgops-health (cached, and with the
//! cache off) against Debian's `prometheus-postgres-exporter` with its default collectors, on
//! a database with 100, 1,000 and 10,000 tables, scraped alternately in the same rounds; and a
//! check at every size that every metric family the exporter produced is in ours too. Beside
//! them, the time to answer the operator page (`/` of `pgops health serve`), cached and with
//! the cache off, against the same exporter scrape: the page must stay as cheap as a scrape
//! when the table count grows.

use std::{
    collections::BTreeSet,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use pgops_health::{Exporter, Options};
use pgops_pg::DatabaseUrl;
use pgops_testkit::{Cluster, ClusterOptions, SUPERUSER};

use crate::report::{Comparison, Report, median};

/// How long and how much.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Tables in the database, one comparison each (tables are added between sizes).
    pub table_counts: &'static [usize],
    /// Rounds (medians are reported).
    pub rounds: usize,
    /// Scrapes per exporter per round.
    pub scrapes: usize,
}

impl Plan {
    /// The full plan, or a short one for `--quick`.
    pub fn new(quick: bool) -> Self {
        if quick {
            Plan {
                table_counts: &[200],
                rounds: 3,
                scrapes: 10,
            }
        } else {
            Plan {
                table_counts: &[100, 1000, 10_000],
                rounds: 5,
                scrapes: 12,
            }
        }
    }
}

/// The exporter binary Debian installs.
const POSTGRES_EXPORTER: &str = "prometheus-postgres-exporter";

/// A child process killed and reaped when dropped (an exporter under measurement).
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET url`, which must answer 200; the body. Read as bytes and checked as UTF-8 once:
/// ureq's `read_to_string` took 16 ms for a 2.3 MB scrape that curl reads in 4.4 ms, a cost
/// of the client that grew with the answer's size and was counted against the larger one.
pub(crate) fn fetch(agent: &ureq::Agent, url: &str) -> anyhow::Result<String> {
    let mut response = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    ensure!(
        response.status().as_u16() == 200,
        "GET {url}: {}",
        response.status()
    );
    let bytes = response
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_vec()?;
    String::from_utf8(bytes).with_context(|| format!("GET {url}: not UTF-8"))
}

/// Serves `exporter`'s `/metrics` on a free loopback port on `runtime`; the port.
pub(crate) fn serve(runtime: &tokio::runtime::Runtime, exporter: Exporter) -> anyhow::Result<u16> {
    let listener = runtime.block_on(pgops_health::server::bind("127.0.0.1:0".parse()?))?;
    let port = listener.local_addr()?.port();
    runtime.spawn(pgops_health::server::serve_on(
        listener,
        Arc::new(exporter),
        None,
        std::future::pending(),
    ));
    Ok(port)
}

/// Serves `/metrics` and the operator page at `/` as `pgops health serve` does, both reading
/// one exporter whose expensive parts are reused for `cache_for`; the port.
fn serve_page(
    runtime: &tokio::runtime::Runtime,
    url: &DatabaseUrl,
    cache_for: Duration,
) -> anyhow::Result<u16> {
    let options = Options {
        cache_for,
        ..Options::default()
    };
    let exporter = Arc::new(Exporter::new(url.clone(), vec![], options.clone(), None)?);
    let page = Arc::new(pgops::page::Page::new(
        exporter.clone(),
        url.clone(),
        pgops::page::Options {
            cache_for,
            statement_timeout: options.collector_timeout,
            connect_timeout: options.connect_timeout,
            refresh: Duration::from_secs(30),
            repository: false,
            max_replica_lag: options.max_replica_lag,
        },
    ));
    let app = pgops_health::server::router(exporter, None).merge(page.router(None));
    let listener = runtime.block_on(pgops_health::server::bind("127.0.0.1:0".parse()?))?;
    let port = listener.local_addr()?.port();
    runtime.spawn(pgops_health::server::serve_with(
        listener,
        app,
        std::future::pending(),
    ));
    Ok(port)
}

/// Metric family names in an exposition text.
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// Runs the suite.
pub fn run(plan: Plan) -> anyhow::Result<Report> {
    let program = which(POSTGRES_EXPORTER).with_context(|| {
        format!(
            "{POSTGRES_EXPORTER} is not installed; apt-get install prometheus-postgres-exporter"
        )
    })?;
    // pg_stat_statements with recorded snapshots, as the page reads them (the exporter's
    // default collectors do not read it).
    let cluster = Cluster::start(ClusterOptions::default().preload("pg_stat_statements"))
        .context("starting a cluster")?;
    cluster.create_database("bench")?;
    cluster.execute("bench", "CREATE EXTENSION pg_stat_statements")?;
    let anchor_port = pgops_pg::free_port()?;
    let dsn = format!(
        "postgresql://{SUPERUSER}@127.0.0.1:{}/bench?sslmode=disable",
        cluster.port()
    );
    let anchor = Killed(
        Command::new(&program)
            .arg(format!("--web.listen-address=127.0.0.1:{anchor_port}"))
            .env("DATA_SOURCE_NAME", &dsn)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let facade = pgops_health::install_recorder()?;
    let url = DatabaseUrl::parse(&cluster.url("bench"))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let anchor_url = format!("http://127.0.0.1:{anchor_port}/metrics");
    let mut comparisons = Vec::new();
    let mut tables = 0;
    for &count in plan.table_counts {
        eprintln!("creating tables {} to {count} ...", tables + 1);
        // A commit every 500 tables: one transaction's locks on 10,000 new tables would not
        // fit in the lock table.
        cluster.execute(
            "bench",
            &format!(
                "DO $$ BEGIN FOR i IN {}..{count} LOOP
                   EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, v text)', i);
                   EXECUTE format('INSERT INTO t%s SELECT g, md5(g::text) FROM generate_series(1, 20) g', i);
                   IF i % 500 = 0 THEN COMMIT; END IF;
                 END LOOP; END $$",
                tables + 1
            ),
        )?;
        cluster.execute("bench", "ANALYZE")?;
        tables = count;
        {
            let mut conn = diesel::Connection::establish(url.expose())?;
            pgops_insights::record_snapshot(&mut conn, Duration::from_secs(86_400))?;
        }
        // Fresh exporters per size, so no cache holds the smaller database.
        let ours_port = serve(
            &runtime,
            Exporter::new(
                url.clone(),
                vec![],
                Options::default(),
                Some(facade.clone()),
            )?,
        )?;
        let uncached_port = serve(
            &runtime,
            Exporter::new(
                url.clone(),
                vec![],
                Options {
                    cache_for: Duration::ZERO,
                    ..Options::default()
                },
                None,
            )?,
        )?;
        let ours_url = format!("http://127.0.0.1:{ours_port}/metrics");
        let uncached_url = format!("http://127.0.0.1:{uncached_port}/metrics");
        let page_url = format!(
            "http://127.0.0.1:{}/",
            serve_page(&runtime, &url, Options::default().cache_for)?
        );
        let page_uncached_url = format!(
            "http://127.0.0.1:{}/",
            serve_page(&runtime, &url, Duration::ZERO)?
        );
        // The page shows every section (an unavailable one would make it cheap for the wrong
        // reason).
        let page_text = fetch(&agent, &page_url)?;
        ensure!(
            !page_text.contains("Unavailable:"),
            "the operator page has an unavailable section: {}",
            page_text
                .split("Unavailable:")
                .nth(1)
                .unwrap_or_default()
                .split('<')
                .next()
                .unwrap_or_default()
        );
        let started = Instant::now();
        let anchor_text = loop {
            match fetch(&agent, &anchor_url) {
                Ok(text) if text.contains("pg_up 1") => break text,
                _ if started.elapsed() > Duration::from_secs(20) => {
                    bail!("{POSTGRES_EXPORTER} did not report pg_up 1 within 20 s")
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        let ours_text = fetch(&agent, &ours_url)?;
        // Coverage: every family the exporter produced for this server, except its own
        // process and build metrics, is in ours.
        let theirs = families(&anchor_text);
        let ours = families(&ours_text);
        let own = |name: &String| {
            [
                "go_",
                "process_",
                "promhttp_",
                "postgres_exporter_",
                "pg_scrape_collector_",
            ]
            .iter()
            .any(|p| name.starts_with(p))
        };
        let missing: Vec<&String> = theirs
            .iter()
            .filter(|n| !own(n) && !ours.contains(*n))
            .collect();
        eprintln!(
            "{count} tables: {POSTGRES_EXPORTER}: {} families ({} its own), {} KiB; pgops: {} families, {} KiB; missing from pgops: {:?}",
            theirs.len(),
            theirs.iter().filter(|n| own(n)).count(),
            anchor_text.len() / 1024,
            ours.len(),
            ours_text.len() / 1024,
            missing
        );
        ensure!(
            missing.is_empty(),
            "pgops-health lacks families postgres_exporter has: {missing:?}"
        );

        let time = |url: &str| -> anyhow::Result<f64> {
            let t = Instant::now();
            fetch(&agent, url)?;
            Ok(t.elapsed().as_secs_f64())
        };
        let (mut ours_rounds, mut anchor_rounds, mut uncached_rounds) =
            (Vec::new(), Vec::new(), Vec::new());
        let (mut page_rounds, mut page_uncached_rounds) = (Vec::new(), Vec::new());
        for round in 0..plan.rounds {
            let (mut o, mut a, mut u) = (Vec::new(), Vec::new(), Vec::new());
            let (mut p, mut pu) = (Vec::new(), Vec::new());
            for i in 0..plan.scrapes {
                // Rotate which side goes first.
                let mut sides = [0, 1, 2, 3, 4];
                sides.rotate_left((round + i) % 5);
                for side in sides {
                    match side {
                        0 => o.push(time(&ours_url)?),
                        1 => a.push(time(&anchor_url)?),
                        2 => u.push(time(&uncached_url)?),
                        3 => p.push(time(&page_url)?),
                        _ => pu.push(time(&page_uncached_url)?),
                    }
                }
            }
            ours_rounds.push(median(&o));
            anchor_rounds.push(median(&a));
            uncached_rounds.push(median(&u));
            page_rounds.push(median(&p));
            page_uncached_rounds.push(median(&pu));
            eprintln!(
                "{count} tables, round {}: pgops {:.2} ms (uncached {:.2} ms), postgres_exporter {:.2} ms; page {:.2} ms (uncached {:.2} ms)",
                round + 1,
                ours_rounds[round] * 1e3,
                uncached_rounds[round] * 1e3,
                anchor_rounds[round] * 1e3,
                page_rounds[round] * 1e3,
                page_uncached_rounds[round] * 1e3
            );
        }
        // Where the uncached scrape's time goes: each collector's own figure.
        let uncached_text = fetch(&agent, &uncached_url)?;
        let mut spent: Vec<(f64, &str)> = uncached_text
            .lines()
            .filter_map(|l| l.strip_prefix("pgops_collector_duration_seconds{collector=\""))
            .filter_map(|l| {
                let (name, rest) = l.split_once('"')?;
                Some((rest.rsplit(' ').next()?.parse().ok()?, name))
            })
            .collect();
        spent.sort_by(|a, b| b.0.total_cmp(&a.0));
        eprintln!(
            "{count} tables, uncached collectors: {}",
            spent
                .iter()
                .take(5)
                .map(|(s, n)| format!("{n} {:.1} ms", s * 1e3))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let anchor_tool = format!(
            "{POSTGRES_EXPORTER} 0.11 (Debian), default collectors, GET /metrics ({count} tables)"
        );
        let size = format!("{count} tables");
        comparisons.push(
            Comparison::from_rounds(
                "scrape_seconds",
                "seconds",
                &ours_rounds,
                &anchor_rounds,
                &anchor_tool,
                false,
            )
            .target(2.0)
            .size(&size),
        );
        comparisons.push(
            Comparison::from_rounds(
                "scrape_seconds_uncached",
                "seconds",
                &uncached_rounds,
                &anchor_rounds,
                &format!("{anchor_tool}; pgops with --cache 0s"),
                false,
            )
            .target(1.0)
            .size(&size),
        );
        comparisons.push(
            Comparison::from_rounds(
                "page_seconds",
                "seconds",
                &page_rounds,
                &anchor_rounds,
                &format!("{anchor_tool}; pgops: GET / (the operator page)"),
                false,
            )
            .target(1.0)
            .size(&size),
        );
        comparisons.push(
            Comparison::from_rounds(
                "page_seconds_uncached",
                "seconds",
                &page_uncached_rounds,
                &anchor_rounds,
                &format!(
                    "{anchor_tool}; pgops: GET / with --cache 0s (checks, top queries, index advice read on every request)"
                ),
                false,
            )
            .size(&size),
        );
    }
    drop(anchor);
    Ok(Report {
        suite: "health".into(),
        comparisons,
        measurements: Vec::new(),
        machine: None,
        quick: false,
    })
}

/// A program on `PATH`.
pub(crate) fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}
