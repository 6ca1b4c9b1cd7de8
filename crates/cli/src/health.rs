//! `pgops health serve` (the Prometheus endpoint with `/health` and `/ready`) and
//! `pgops health check` (the same checks once, for scripts).

use std::{io::Write, net::SocketAddr, sync::Arc, time::Duration};

use pgops_health::{Exporter, Options, Readiness};
use pgops_pg::DatabaseUrl;

use crate::{
    db::database_url,
    exit::{Exit, Failure},
};

/// Options of `pgops health`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub verb: Verb,
    /// The primary (its password is never printed).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// Replicas to watch, comma-separated (DATABASE_READ_REPLICA_URL is accepted too).
    #[arg(
        long,
        env = "DATABASE_REPLICA_URLS",
        hide_env_values = true,
        global = true
    )]
    pub replica_urls: Option<String>,
    /// A replica further behind than this is unhealthy.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub max_replica_lag: Duration,
    /// How long to wait for a connection before calling a server down.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, global = true)]
    pub connect_timeout: Duration,
}

/// What `health serve --help` says about the token, which is read from the environment only
/// so that it never shows in `ps`.
pub const METRICS_TOKEN_HELP: &str = "Environment:
  PGOPS_METRICS_TOKEN  When set, /, /metrics and /ready answer only requests with
                       `Authorization: Bearer <token>`, or HTTP Basic with the token as
                       the password, as a browser sends it (401 otherwise); /health
                       stays open.
                       Read from the environment only, never from the command line. Set it
                       whenever --listen is beyond loopback.";

/// The verbs of `pgops health`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Verb {
    /// Serve the operator page at / (HTML), /metrics (Prometheus), /health (liveness) and
    /// /ready (503 unless the primary answers as a primary) until Ctrl-C or SIGTERM.
    #[command(after_help = METRICS_TOKEN_HELP)]
    Serve {
        /// Address to listen on; loopback unless you say otherwise.
        #[arg(long, default_value = "127.0.0.1:9187")]
        listen: SocketAddr,
        /// Every /metrics answers within this, whatever the database does.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        scrape_timeout: Duration,
        /// statement_timeout and lock_timeout of each collector query.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        collector_timeout: Duration,
        /// How long the expensive collectors' results are reused (settings, sizes, top queries).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        cache: Duration,
        /// Export the top N queries by total time from pg_stat_statements (0: none).
        #[arg(long, default_value_t = 0)]
        top_queries: usize,
        /// Also report this backup repository (newest backups and drills).
        #[arg(long, env = "PGOPS_REPO")]
        repo: Option<String>,
        /// Also report this PgBouncer: its admin console's URL (database `pgbouncer`), under
        /// pgbouncer_exporter's metric names.
        #[arg(long, env = "PGOPS_PGBOUNCER_URL", hide_env_values = true)]
        pgbouncer: Option<String>,
    },
    /// Check the primary and replicas once: exit 0 healthy, 1 unhealthy, 2 primary unreachable.
    Check {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn replicas(args: &Args) -> Result<Vec<DatabaseUrl>, Failure> {
    let raw = args
        .replica_urls
        .clone()
        .or_else(|| std::env::var("DATABASE_READ_REPLICA_URL").ok())
        .unwrap_or_default();
    raw.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            DatabaseUrl::parse(u)
                .map_err(|e| Failure::usage(anyhow::anyhow!("DATABASE_REPLICA_URLS: {e}")))
        })
        .collect()
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::problem(anyhow::anyhow!("starting the async runtime: {e}")))
}

/// Runs one `pgops health` command.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<Exit, Failure> {
    let primary = database_url(args.database_url.as_deref())?;
    let replicas = replicas(args)?;
    let mut options = Options {
        max_replica_lag: args.max_replica_lag,
        connect_timeout: args.connect_timeout,
        ..Options::default()
    };
    match &args.verb {
        Verb::Serve {
            listen,
            scrape_timeout,
            collector_timeout,
            cache,
            top_queries,
            repo,
            pgbouncer,
        } => {
            let pgbouncer = pgbouncer
                .as_deref()
                .map(DatabaseUrl::parse)
                .transpose()
                .map_err(|e| Failure::usage(anyhow::anyhow!("--pgbouncer: {e}")))?;
            options.scrape_deadline = *scrape_timeout;
            options.collector_timeout = *collector_timeout;
            options.cache_for = *cache;
            options.top_queries = *top_queries;
            options.validate().map_err(Failure::usage)?;
            let token = std::env::var("PGOPS_METRICS_TOKEN")
                .ok()
                .filter(|t| !t.is_empty());
            let rt = runtime()?;
            rt.block_on(async {
                let facade = pgops_health::install_recorder().map_err(Failure::problem)?;
                let mut exporter = Exporter::new(primary.clone(), replicas, options, Some(facade))
                    .map_err(Failure::usage)?;
                if let Some(repo) = repo {
                    let store = pgops_backup::repo::open(repo, pgops_backup::repo::Access::Existing)
                        .map_err(Failure::usage)?;
                    exporter = exporter
                        .with_collector(crate::repository_metrics::RepositoryCollector::new(
                            store,
                            Some(primary.clone()),
                        ));
                }
                if let Some(url) = pgbouncer {
                    exporter = exporter
                        .with_collector(pgops_health::pgbouncer::PgBouncerCollector::new(url));
                }
                let exporter = Arc::new(exporter);
                let page = Arc::new(crate::page::Page::new(
                    exporter.clone(),
                    primary.clone(),
                    crate::page::Options {
                        cache_for: *cache,
                        statement_timeout: *collector_timeout,
                        connect_timeout: args.connect_timeout,
                        refresh: Duration::from_secs(30),
                        repository: repo.is_some(),
                        max_replica_lag: args.max_replica_lag,
                    },
                ));
                let app = pgops_health::server::router(exporter, token.clone())
                    .merge(page.router(token.clone()));
                let listener = pgops_health::server::bind(*listen).await.map_err(Failure::usage)?;
                let shutdown = shutdown_signal()?;
                let _ = writeln!(
                    out,
                    "serving http://{listen}/metrics, /health, /ready and the operator page at / for {primary}{}",
                    if token.is_some() { " (bearer token required)" } else { "" }
                );
                let _ = out.flush();
                if !listen.ip().is_loopback() && token.is_none() {
                    tracing::warn!(%listen, "listening beyond loopback without PGOPS_METRICS_TOKEN: anyone who can reach the port can read the metrics");
                }
                pgops_health::server::serve_with(listener, app, shutdown)
                    .await
                    .map_err(Failure::problem)
            })?;
            Ok(Exit::Ok)
        }
        Verb::Check { json } => {
            let rt = runtime()?;
            let readiness = rt.block_on(async {
                let exporter =
                    Exporter::new(primary, replicas, options, None).map_err(Failure::usage)?;
                Ok::<Readiness, Failure>(exporter.readiness().await)
            })?;
            let written = if *json {
                serde_json::to_string_pretty(&readiness)
                    .map_err(|e| Failure::problem(anyhow::anyhow!("encoding JSON: {e}")))
                    .and_then(|t| {
                        writeln!(out, "{t}")
                            .map_err(|e| Failure::problem(anyhow::anyhow!("writing: {e}")))
                    })
            } else {
                let mut text = String::new();
                // An HA member that accepts writes is the primary; the first line is the
                // primary as the (multi-host) URL reaches it.
                let role_of = |r: &pgops_health::ServerState| {
                    if r.in_recovery == Some(false) {
                        "primary"
                    } else {
                        "replica"
                    }
                };
                for (role, s) in std::iter::once(("primary", &readiness.primary))
                    .chain(readiness.replicas.iter().map(|r| (role_of(r), r)))
                {
                    text.push_str(&format!(
                        "{:<4} {role:<8} {:<24} {}\n",
                        if s.healthy { "ok" } else { "FAIL" },
                        s.server,
                        match (&s.error, s.lag_seconds) {
                            (Some(e), _) => e.clone(),
                            (None, Some(lag)) => format!("replay lag {lag:.1}s"),
                            (None, None) => "up".into(),
                        }
                    ));
                }
                writeln!(out, "{}", text.trim_end())
                    .map_err(|e| Failure::problem(anyhow::anyhow!("writing: {e}")))
            };
            written?;
            Ok(if !readiness.primary.up {
                Exit::Usage
            } else if readiness.primary.healthy && readiness.replicas.iter().all(|r| r.healthy) {
                Exit::Ok
            } else {
                Exit::Problem
            })
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled, so a signal that arrives as soon as the server says it is
/// serving still means "stop cleanly" rather than the default "die".
fn shutdown_signal() -> Result<impl Future<Output = ()>, Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind| {
        signal(kind)
            .map_err(|e| Failure::problem(anyhow::anyhow!("installing a signal handler: {e}")))
    };
    let mut interrupt = install(SignalKind::interrupt())?;
    let mut terminate = install(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
