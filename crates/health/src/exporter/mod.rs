//! The scrape: collectors against the primary (and the replication collector against each
//! replica) under one deadline, each on its own pooled connection with its own
//! `statement_timeout`; one scrape in flight at a time, shared by concurrent requests;
//! expensive collectors cached.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use metrics_exporter_prometheus::PrometheusHandle;
use pgops_pool::{DatabaseUrl, Pool, PoolSettings};

use tokio::time::timeout_at;

use crate::{
    Error, Result,
    collectors::{COLLECTORS, Context, LANES, REPLICA_COLLECTORS, Session},
    text::{self, Family, Kind},
};

mod readiness;
mod targets;

pub use readiness::{Readiness, ServerState};
use targets::Target;

/// How the exporter behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// The whole scrape answers within this, whatever the collectors do.
    pub scrape_deadline: Duration,
    /// `statement_timeout` (and `lock_timeout`) of every collector query.
    pub collector_timeout: Duration,
    /// How long an expensive collector's result is reused.
    pub cache_for: Duration,
    /// Top queries from pg_stat_statements to export (0: none).
    pub top_queries: usize,
    /// A replica further behind than this is not healthy.
    pub max_replica_lag: Duration,
    /// How long to wait for a connection before calling a server down.
    pub connect_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            scrape_deadline: Duration::from_secs(5),
            collector_timeout: Duration::from_secs(2),
            cache_for: Duration::from_secs(60),
            top_queries: 0,
            max_replica_lag: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

impl Options {
    /// Checks the options against each other; the error says which and why.
    pub fn validate(&self) -> Result<()> {
        if self.scrape_deadline.is_zero() || self.collector_timeout.is_zero() {
            return Err(Error::Invalid(
                "the scrape deadline and the collector timeout must be above zero".into(),
            ));
        }
        if self.collector_timeout > self.scrape_deadline {
            return Err(Error::Invalid(format!(
                "--collector-timeout ({:?}) is longer than --scrape-timeout ({:?}); a collector must end before the scrape does",
                self.collector_timeout, self.scrape_deadline
            )));
        }
        if self.top_queries > 100 {
            return Err(Error::Invalid(format!(
                "--top-queries {} is too many for a metrics endpoint; use at most 100 (pgops insights top shows more)",
                self.top_queries
            )));
        }
        Ok(())
    }
}

/// Results of expensive collectors by (server index, collector), with when they were taken.
/// Kept rendered: their families are theirs alone, so the text is appended as is.
type Cache = HashMap<(usize, &'static str), (Instant, Arc<str>)>;

/// A finished scrape.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// When it finished.
    pub finished: Instant,
    /// The exposition text in pieces, each whole lines (database metrics only; the facade's
    /// are added when served): the scrape's own families, then each expensive collector's
    /// text as rendered when it ran, shared with the cache rather than copied (megabytes
    /// at 10,000 tables).
    pub chunks: Vec<Arc<str>>,
    /// Whether the primary answered.
    pub up: bool,
    /// How long it took.
    pub duration: Duration,
}

impl Scrape {
    /// The exposition text, line by line.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.chunks.iter().flat_map(|chunk| chunk.lines())
    }

    /// The exposition text, whole.
    pub fn text(&self) -> String {
        self.chunks.concat()
    }
}

/// Collects metrics from a primary and its replicas.
pub struct Exporter {
    options: Options,
    targets: Vec<Arc<Target>>,
    last: tokio::sync::Mutex<Option<Arc<Scrape>>>,
    cache: Mutex<Cache>,
    facade: Option<PrometheusHandle>,
    scrapes: AtomicU64,
    last_duration: Mutex<Option<(Duration, bool)>>,
    extra: Vec<Arc<dyn Collector>>,
}

/// A source of metrics outside PostgreSQL (a backup repository, say), registered by whoever
/// has one through [`Exporter::with_collector`]. It runs on the blocking pool, at most once
/// per cache interval, under the scrape deadline, and reports in `pgops_collector_*` like
/// the built-in collectors.
pub trait Collector: Send + Sync + 'static {
    /// The collector's name, the `collector` label of `pgops_collector_*`
    /// (`backup_repository`).
    fn name(&self) -> &'static str;
    /// What it reads, the `server` label of `pgops_collector_*` (a repository URL without
    /// credentials).
    fn target(&self) -> String;
    /// Reads the families; may block. The error is logged, never shown in a metric.
    fn collect(&self) -> std::result::Result<Vec<Family>, String>;
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field(
                "servers",
                &self
                    .targets
                    .iter()
                    .map(|t| t.server.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("options", &self.options)
            .finish()
    }
}

/// Installs the Prometheus recorder for the `metrics` facade (pool metrics and anything else
/// the process records) and returns the handle that renders it. Call once, before opening
/// pools; fails if another recorder is installed.
pub fn install_recorder() -> Result<PrometheusHandle> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| Error::Invalid(format!("installing the metrics recorder: {e}")))
}

impl Exporter {
    /// An exporter for `primary` and `replicas`. Opens small pools without waiting for the
    /// servers (a server that is down shows as `pg_up 0`, not as an error here).
    ///
    /// An HA cluster: with `primary` a multi-host URL (`target_session_attrs=read-write`) and
    /// no `replicas`, the primary is whichever host accepts writes at each connection, and
    /// every host is also watched as a member (`pgops_replica_up`, its role and timeline);
    /// a member is healthy as primary or as a standby within the lag limit.
    pub fn new(
        primary: DatabaseUrl,
        replicas: Vec<DatabaseUrl>,
        options: Options,
        facade: Option<PrometheusHandle>,
    ) -> Result<Self> {
        options.validate()?;
        let settings = |max_size| PoolSettings {
            max_size,
            min_idle: 0,
            idle_timeout: Some(Duration::from_secs(300)),
            connection_timeout: options.connect_timeout,
            max_lifetime: Some(Duration::from_secs(1800)),
            statement_timeout: Some(options.collector_timeout),
            lock_timeout: Some(options.collector_timeout),
            idle_in_transaction_session_timeout: Some(options.scrape_deadline),
            application_name: "pgops-health".into(),
            leak_threshold: None,
            validate_after_idle: Duration::from_secs(1),
            // The exporter's own connections go straight to the server.
            pooler: pgops_pool::Pooler::None,
        };
        let session_sql = pgops_pool::session_sql(&settings(1));
        let target = |url: DatabaseUrl, primary: bool, member: bool| {
            Arc::new(Target {
                server: url.server(),
                pool: Pool::open_unchecked(
                    if primary {
                        "pgops-health"
                    } else {
                        "pgops-health-replica"
                    },
                    url.clone(),
                    settings(2),
                ),
                url,
                primary,
                member,
                lanes: std::array::from_fn(|_| Mutex::new(None)),
                session_sql: session_sql.clone(),
                connect_timeout: options.connect_timeout,
            })
        };
        let servers = primary.servers();
        let members: Vec<DatabaseUrl> = if replicas.is_empty() && servers.len() > 1 {
            servers
                .iter()
                .map(|server| primary.for_server(server))
                .collect::<std::result::Result<_, _>>()?
        } else {
            Vec::new()
        };
        let mut targets = vec![target(primary, true, false)];
        targets.extend(replicas.into_iter().map(|r| target(r, false, false)));
        targets.extend(members.into_iter().map(|m| target(m, false, true)));
        Ok(Exporter {
            options,
            targets,
            last: tokio::sync::Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
            facade,
            scrapes: AtomicU64::new(0),
            last_duration: Mutex::new(None),
            extra: Vec::new(),
        })
    }

    /// Also runs `collector` on every scrape (its result cached like the expensive
    /// collectors').
    pub fn with_collector(mut self, collector: impl Collector) -> Self {
        self.extra.push(Arc::new(collector));
        self
    }

    /// The options in force.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The facade's metrics, rendered (empty without a handle).
    pub fn facade_text(&self) -> String {
        self.facade
            .as_ref()
            .map(PrometheusHandle::render)
            .unwrap_or_default()
    }

    /// A scrape: the latest one if it finished after this call began (another request ran
    /// it), else a new one. At most one runs at a time.
    pub async fn scrape(&self) -> Arc<Scrape> {
        let asked = Instant::now();
        let mut last = self.last.lock().await;
        if let Some(done) = last.as_ref().filter(|s| s.finished >= asked) {
            return done.clone();
        }
        let scrape = Arc::new(self.collect().await);
        *last = Some(scrape.clone());
        scrape
    }

    async fn collect(&self) -> Scrape {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + self.options.scrape_deadline);
        let mut tasks = tokio::task::JoinSet::new();
        for (index, target) in self.targets.iter().enumerate() {
            let target = target.clone();
            let cached = self.cached_for(index);
            let options = self.options.clone();
            tasks.spawn(collect_target(index, target, options, cached, deadline));
        }
        let mut outcomes = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            if let Ok(outcome) = joined {
                outcomes.push(outcome);
            }
        }
        outcomes.sort_by_key(|o| o.index);
        let mut extra = Vec::new();
        for (slot, collector) in self.extra.iter().enumerate() {
            extra.push(self.extra_text(slot, collector.clone(), deadline).await);
        }
        let mut families = Vec::new();
        let mut rendered: Vec<Arc<str>> = Vec::new();
        let mut stats = Vec::new();
        let mut up = false;
        {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            for outcome in &outcomes {
                for (name, text) in &outcome.fresh_cacheable {
                    cache.insert((outcome.index, *name), (Instant::now(), text.clone()));
                }
            }
        }
        for outcome in outcomes {
            if outcome.primary {
                up = outcome.up;
                families.push(Family::single("pg_up", "Whether the last scrape of metrics from PostgreSQL was able to connect to the server (1 for yes, 0 for no).", Kind::Gauge, &[], f64::from(u8::from(outcome.up))));
            } else {
                families.push(Family::single(
                    "pgops_replica_up",
                    "Whether a configured replica answered this scrape",
                    Kind::Gauge,
                    &[("server", &outcome.server)],
                    f64::from(u8::from(outcome.up)),
                ));
            }
            families.extend(outcome.families);
            stats.extend(outcome.stats);
            rendered.extend(outcome.rendered);
        }
        for (text, stat) in extra {
            rendered.extend(text);
            stats.extend(stat);
        }
        let duration = started.elapsed();
        let scrapes = self.scrapes.fetch_add(1, Ordering::Relaxed) + 1;
        let failed = stats.iter().any(|s| !s.ok);
        let mut duration_fam = Family::new(
            "pgops_collector_duration_seconds",
            "How long each collector took in the last scrape",
            Kind::Gauge,
        );
        let mut success_fam = Family::new(
            "pgops_collector_success",
            "Whether each collector succeeded in the last scrape (0: failed or missed the deadline)",
            Kind::Gauge,
        );
        for s in &stats {
            let labels = [("collector", s.name), ("server", s.server.as_str())];
            duration_fam.push(&labels, s.seconds);
            success_fam.push(&labels, f64::from(u8::from(s.ok)));
        }
        families.push(duration_fam);
        families.push(success_fam);
        let previous = *self
            .last_duration
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        families.push(Family::single(
            "pg_exporter_last_scrape_duration_seconds",
            "Duration of the last scrape of metrics from PostgreSQL.",
            Kind::Gauge,
            &[],
            previous.map_or(0.0, |p| p.0.as_secs_f64()),
        ));
        families.push(Family::single("pg_exporter_last_scrape_error", "Whether the last scrape of metrics from PostgreSQL resulted in an error (1 for error, 0 for success).", Kind::Gauge, &[], f64::from(u8::from(previous.is_some_and(|p| p.1)))));
        families.push(Family::single(
            "pg_exporter_scrapes_total",
            "Total number of times PostgreSQL was scraped for metrics.",
            Kind::Counter,
            &[],
            scrapes as f64,
        ));
        families.push(Family::single(
            "pgops_scrape_duration_seconds",
            "How long this scrape took",
            Kind::Gauge,
            &[],
            duration.as_secs_f64(),
        ));
        *self
            .last_duration
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((duration, failed || !up));
        let mut own = String::with_capacity(64 * 1024);
        text::render(&text::merge(families), &mut own);
        let mut chunks = vec![Arc::from(own)];
        chunks.extend(rendered);
        Scrape {
            finished: Instant::now(),
            chunks,
            up,
            duration,
        }
    }

    /// A registered collector's families, rendered (cached), and its outcome when it ran.
    async fn extra_text(
        &self,
        slot: usize,
        collector: Arc<dyn Collector>,
        deadline: tokio::time::Instant,
    ) -> (Option<Arc<str>>, Option<CollectorStat>) {
        // Registered collectors are cached under indexes counted down from the top, which
        // no server index reaches.
        let index = usize::MAX - slot;
        let name = collector.name();
        if let Some(text) = self.cached_for(index).remove(name) {
            return (Some(text), None);
        }
        let began = Instant::now();
        let target = collector.target();
        let runner = collector.clone();
        let result = timeout_at(
            deadline,
            tokio::task::spawn_blocking(move || runner.collect()),
        )
        .await;
        let (text, ok) = match result {
            Ok(Ok(Ok(families))) => {
                let mut text = String::new();
                text::render(&families, &mut text);
                let text: Arc<str> = Arc::from(text);
                self.cache
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert((index, name), (Instant::now(), text.clone()));
                (Some(text), true)
            }
            Ok(Ok(Err(e))) => {
                tracing::warn!(collector = name, target = %target, error = %e, "a registered collector failed");
                (None, false)
            }
            _ => (None, false),
        };
        (
            text,
            Some(CollectorStat {
                name,
                server: target,
                seconds: began.elapsed().as_secs_f64(),
                ok,
            }),
        )
    }

    fn cached_for(&self, index: usize) -> HashMap<&'static str, Arc<str>> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .iter()
            .filter(|((i, _), (at, _))| *i == index && at.elapsed() < self.options.cache_for)
            .map(|((_, name), (_, text))| (*name, text.clone()))
            .collect()
    }
}

struct CollectorStat {
    name: &'static str,
    server: String,
    seconds: f64,
    ok: bool,
}

struct TargetOutcome {
    index: usize,
    primary: bool,
    server: String,
    up: bool,
    families: Vec<Family>,
    stats: Vec<CollectorStat>,
    fresh_cacheable: Vec<(&'static str, Arc<str>)>,
    /// Rendered text of expensive collectors (fresh or cached).
    rendered: Vec<Arc<str>>,
}

/// What the lanes of one target report, as they go: the async side reads it at the deadline
/// whether or not every lane finished.
#[derive(Default)]
struct Progress {
    connected: bool,
    done: Vec<(&'static str, f64, Result<Collected>)>,
}

/// A collector's result: a cheap collector's families, merged into the scrape's; an expensive
/// one's rendered already on its lane, while the others still run (at 10,000 tables the
/// per-table families are 20,000 samples).
enum Collected {
    Families(Vec<Family>),
    Rendered(Arc<str>),
}

async fn collect_target(
    index: usize,
    target: Arc<Target>,
    options: Options,
    mut cached: HashMap<&'static str, Arc<str>>,
    deadline: tokio::time::Instant,
) -> TargetOutcome {
    let mut outcome = TargetOutcome {
        index,
        primary: target.primary,
        server: target.server.clone(),
        up: false,
        families: Vec::new(),
        stats: Vec::new(),
        fresh_cacheable: Vec::new(),
        rendered: Vec::new(),
    };
    let ctx = Context {
        server: target.server.clone(),
        top_queries: options.top_queries,
    };
    // Cheap collectors run one after another on one connection (a round trip each; on a
    // busy server parallel queries only compete); expensive ones that are due run on two more
    // connections so they never delay the cheap ones, nor the per-table ones the one that
    // sizes every file. Each query has the session's statement_timeout and lock_timeout; the
    // deadline bounds the whole.
    let mut by_lane: [Vec<crate::collectors::Collector>; LANES] = Default::default();
    for collector in COLLECTORS
        .iter()
        .filter(|c| target.primary || REPLICA_COLLECTORS.contains(&c.name))
    {
        if collector.cached()
            && let Some(text) = cached.remove(collector.name)
        {
            outcome.rendered.push(text);
        } else {
            by_lane[collector.lane].push(*collector);
        }
    }
    let expected: Vec<&'static str> = by_lane.iter().flatten().map(|c| c.name).collect();
    let progress = Arc::new(Mutex::new(Progress::default()));
    let started = Instant::now();
    let mut lanes = Vec::new();
    for (lane, collectors) in by_lane.into_iter().enumerate() {
        if collectors.is_empty() {
            continue;
        }
        let (ctx, progress) = (ctx.clone(), progress.clone());
        let budget = options.connect_timeout;
        let std_deadline = deadline.into_std();
        let target = target.clone();
        lanes.push(tokio::task::spawn_blocking(move || {
            run_lane(
                &target,
                lane,
                &collectors,
                &ctx,
                &progress,
                budget,
                std_deadline,
            );
        }));
    }
    for lane in lanes {
        if timeout_at(deadline, lane).await.is_err() {
            tracing::warn!(server = %target.server, "collectors missed the scrape deadline");
        }
    }
    let progress = std::mem::take(&mut *progress.lock().unwrap_or_else(PoisonError::into_inner));
    outcome.up = progress.connected;
    if !outcome.up {
        return outcome;
    }
    let mut finished = Vec::new();
    for (name, seconds, result) in progress.done {
        finished.push(name);
        let ok = match result {
            Ok(Collected::Rendered(text)) => {
                outcome.fresh_cacheable.push((name, text.clone()));
                outcome.rendered.push(text);
                true
            }
            Ok(Collected::Families(families)) => {
                outcome.families.extend(families);
                true
            }
            Err(e) => {
                tracing::warn!(collector = name, server = %target.server, error = %target.url.scrub(&pgops_pg::report(&e)), "collector failed");
                false
            }
        };
        outcome.stats.push(CollectorStat {
            name,
            server: target.server.clone(),
            seconds,
            ok,
        });
    }
    // What did not finish by the deadline failed.
    for name in expected.into_iter().filter(|n| !finished.contains(n)) {
        outcome.stats.push(CollectorStat {
            name,
            server: target.server.clone(),
            seconds: started.elapsed().as_secs_f64(),
            ok: false,
        });
    }
    outcome
}

/// Runs one lane's collectors on its connection, reporting each result to `progress` as it
/// comes.
fn run_lane(
    target: &Target,
    lane: usize,
    collectors: &[crate::collectors::Collector],
    ctx: &Context,
    progress: &Mutex<Progress>,
    budget: Duration,
    std_deadline: Instant,
) {
    // A kept connection may have died with a server restart: when the first query on
    // it fails, try once more on a fresh one before calling the server down.
    for attempt in 0..2 {
        let budget = budget.min(std_deadline.saturating_duration_since(Instant::now()));
        let Ok(mut guard) = target.lane_conn(lane, budget) else {
            return;
        };
        let reused = attempt == 0 && guard.as_ref().is_some_and(|c| !c.prepared.is_empty());
        let Some(lane_conn) = guard.as_mut() else {
            return;
        };
        let mut session = Session {
            conn: &mut lane_conn.conn,
            prepared: &mut lane_conn.prepared,
            version: lane_conn.version,
        };
        let mut failed = false;
        let mut retry = false;
        for (i, collector) in collectors.iter().enumerate() {
            if Instant::now() >= std_deadline {
                break;
            }
            let began = Instant::now();
            let result = (collector.run)(&mut session, ctx).map(|families| {
                if collector.cached() {
                    let mut text = String::new();
                    text::render(&families, &mut text);
                    Collected::Rendered(Arc::from(text))
                } else {
                    Collected::Families(families)
                }
            });
            if i == 0 && reused && result.is_err() {
                (failed, retry) = (true, true);
                break;
            }
            failed |= result.is_err();
            let seconds = began.elapsed().as_secs_f64();
            let mut progress = progress.lock().unwrap_or_else(PoisonError::into_inner);
            progress.connected |= lane == 0 && (i > 0 || result.is_ok());
            progress.done.push((collector.name, seconds, result));
        }
        // After an error the connection may be broken or its statements gone: the
        // next scrape (or the retry) starts on a fresh one.
        if failed {
            *guard = None;
        }
        if !retry {
            return;
        }
    }
}
