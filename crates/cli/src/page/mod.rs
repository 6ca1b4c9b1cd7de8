//! The operator page at `/` of `pgops health serve`: the database at a glance, rendered on the
//! server as plain HTML (no JavaScript; it refreshes itself), read-only.
//!
//! What it shows comes from three places:
//! - the exporter's scrape, the very text `/metrics` serves from the same cached collectors:
//!   servers, roles, timelines and lag, connections by state, the WAL archiver, table sizes,
//!   the backup repository, and the `metrics` facade's pools;
//! - the readiness probe `/ready` runs: which server is healthy and why not;
//! - queries of its own on one read-only connection (`default_transaction_read_only`, the
//!   collectors' statement timeout): the sessions waiting and blocking, every request; and,
//!   at most once per cache interval, `pgops insights checks`, the top queries of the last hour
//!   and day from the recorded snapshots with their history, index advice, and the tables'
//!   sizes a day ago.
//!
//! It lives in the `pgops` crate, not in `pgops-health`, because it reads insights and the
//! backup repository, which the health crate does not depend on.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{DateTime, Utc};
use diesel::{Connection as _, PgConnection, connection::SimpleConnection as _};
use pgops_health::{Exporter, Readiness};
use pgops_insights::{
    Advice, Check, CheckThresholds, Order, Thresholds, TopOptions,
    statements::{self, Interval, TopQuery},
};
use pgops_pg::DatabaseUrl;
use serde::Deserialize;

pub mod exposition;
mod render;

use exposition::Samples;

/// How the page behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// The expensive sections (checks, top queries, index advice, growth) are reused this long,
    /// like the expensive collectors.
    pub cache_for: Duration,
    /// `statement_timeout` and `lock_timeout` of the page's own queries.
    pub statement_timeout: Duration,
    /// How long to wait for the page's connection.
    pub connect_timeout: Duration,
    /// The browser reloads the page this often.
    pub refresh: Duration,
    /// Whether a backup repository reports through the exporter (`--repo`).
    pub repository: bool,
    /// A replica further behind than this is lagging.
    pub max_replica_lag: Duration,
}

/// The page's state: the exporter it reads, its own connection and its cache.
pub struct Page {
    exporter: Arc<Exporter>,
    primary: DatabaseUrl,
    options: Options,
    conn: Mutex<Option<PgConnection>>,
    cached: tokio::sync::Mutex<Option<(Instant, Arc<Slow>)>>,
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page")
            .field("primary", &self.primary.server())
            .field("options", &self.options)
            .finish()
    }
}

/// The sections read at most once per cache interval.
#[derive(Debug)]
pub(crate) struct Slow {
    pub(crate) taken: DateTime<Utc>,
    pub(crate) checks: Result<Vec<Check>, String>,
    pub(crate) windows: Vec<WindowView>,
    pub(crate) advice: Result<Advice, String>,
    /// The largest tables' sizes at a snapshot about a day old.
    pub(crate) sizes_before: Result<Option<statements::RecordedSizes>, String>,
}

/// The top queries over one window.
#[derive(Debug)]
pub(crate) struct WindowView {
    /// "last hour", "last day".
    pub(crate) label: &'static str,
    pub(crate) top: Result<TopView, String>,
}

#[derive(Debug)]
pub(crate) struct TopView {
    /// Start of the window actually covered.
    pub(crate) since: Option<DateTime<Utc>>,
    /// Why the window is shorter than asked, if it is.
    pub(crate) note: Option<String>,
    pub(crate) queries: Vec<TopQuery>,
    pub(crate) history: HashMap<i64, Vec<Interval>>,
}

/// A session that waits for a lock or holds one others wait for.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Waiting {
    pub(crate) pid: i32,
    pub(crate) user: Option<String>,
    pub(crate) database: Option<String>,
    pub(crate) state: Option<String>,
    pub(crate) wait_event_type: Option<String>,
    pub(crate) wait_event: Option<String>,
    pub(crate) seconds: Option<f64>,
    pub(crate) blocked_by: Vec<i32>,
    /// The normalized text of its (last) statement, from pg_stat_statements: never the text
    /// with its values that pg_stat_activity holds.
    #[serde(skip)]
    pub(crate) query: Option<String>,
    query_id: Option<i64>,
}

/// Everything one rendering needs.
#[derive(Debug)]
pub(crate) struct View {
    pub(crate) now: DateTime<Utc>,
    pub(crate) primary: String,
    pub(crate) metrics: Samples,
    pub(crate) pools: Samples,
    pub(crate) readiness: Readiness,
    pub(crate) waiting: Result<Vec<Waiting>, String>,
    pub(crate) slow: Arc<Slow>,
    pub(crate) options: Options,
}

impl Page {
    /// A page over `exporter`, whose primary is `primary`. Opens nothing yet.
    pub fn new(exporter: Arc<Exporter>, primary: DatabaseUrl, options: Options) -> Self {
        Page {
            exporter,
            primary,
            options,
            conn: Mutex::new(None),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The route `/`, refused without the token exactly where `/metrics` is.
    pub fn router(self: Arc<Self>, token: Option<String>) -> Router {
        Router::new()
            .route("/", get(index))
            .with_state((self, token.filter(|t| !t.is_empty()).map(Arc::<str>::from)))
    }

    /// Renders the page now.
    pub async fn html(self: &Arc<Self>) -> String {
        let (scrape, readiness) = tokio::join!(self.exporter.scrape(), self.exporter.readiness());
        let metrics = Samples::parse(scrape.lines());
        let pools = Samples::parse(self.exporter.facade_text().lines());
        // With the primary down (the probe just said so), the page answers at once with what
        // the scrape and the probe know, rather than wait for more connection attempts.
        let (slow, waiting) = if readiness.primary.up {
            let slow = self.slow().await;
            let page = self.clone();
            let waiting = tokio::task::spawn_blocking(move || page.with_conn(waiting))
                .await
                .unwrap_or_else(|e| Err(format!("the page's worker failed: {e}")));
            (slow, waiting)
        } else {
            let why = "the primary does not answer (see Is it up)";
            (Arc::new(Slow::failed(why)), Err(why.to_owned()))
        };
        render::page(&View {
            now: Utc::now(),
            primary: self.primary.server(),
            metrics,
            pools,
            readiness,
            waiting,
            slow,
            options: self.options.clone(),
        })
    }

    /// The expensive sections, read again once the cache interval has passed; concurrent
    /// requests share one reading.
    async fn slow(self: &Arc<Self>) -> Arc<Slow> {
        let mut cached = self.cached.lock().await;
        if let Some((at, slow)) = cached.as_ref()
            && at.elapsed() < self.options.cache_for
        {
            return slow.clone();
        }
        let page = self.clone();
        match tokio::task::spawn_blocking(move || page.read_slow())
            .await
            .unwrap_or_else(|e| Err(format!("the page's worker failed: {e}")))
        {
            Ok(slow) => {
                let slow = Arc::new(slow);
                *cached = Some((Instant::now(), slow.clone()));
                slow
            }
            // Not kept: the next request tries again.
            Err(e) => Arc::new(Slow::failed(&e)),
        }
    }

    /// The expensive sections; an error when the primary cannot be reached (one attempt,
    /// not one per section).
    fn read_slow(&self) -> Result<Slow, String> {
        let taken = Utc::now();
        self.with_conn(|_| Ok(()))?;
        let checks = self.with_conn(|c| {
            pgops_insights::checks::run(c, &CheckThresholds::default()).map_err(report)
        });
        // pg_stat_statements is read once for both windows and their histories.
        let now = self.with_conn(|c| statements::current(c).map_err(report));
        let windows = [("last hour", 3600), ("last day", 86_400)]
            .into_iter()
            .map(|(label, secs)| WindowView {
                label,
                top: match &now {
                    Ok(now) => self.with_conn(|c| top_over(c, Duration::from_secs(secs), now)),
                    Err(e) => Err(e.clone()),
                },
            })
            .collect();
        let advice =
            self.with_conn(|c| pgops_insights::advise(c, Thresholds::default()).map_err(report));
        let sizes_before = self.with_conn(|c| {
            statements::table_sizes_at(c, Duration::from_secs(86_400)).map_err(report)
        });
        Ok(Slow {
            taken,
            checks,
            windows,
            advice,
            sizes_before,
        })
    }

    /// Runs `f` on the page's connection, opened (read-only, with the statement timeout) when
    /// missing and dropped after an error, so the next request reconnects.
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut PgConnection) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut slot = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(self.connect()?);
        }
        let conn = slot.as_mut().expect("just opened");
        let result = f(conn);
        if result.is_err() && conn.batch_execute("SELECT 1").is_err() {
            *slot = None;
        }
        result
    }

    fn connect(&self) -> Result<PgConnection, String> {
        let url = self
            .primary
            .with_default(
                "connect_timeout",
                &self.options.connect_timeout.as_secs().max(1).to_string(),
            )
            .map_err(|e| pgops_pg::report(&e))?;
        let mut conn = PgConnection::establish(url.expose())
            .map_err(|e| format!("connecting to {}: {e}", self.primary.server()))?;
        let ms = self.options.statement_timeout.as_millis();
        conn.batch_execute(&format!(
            "SET application_name = 'pgops-page'; SET default_transaction_read_only = on;
             SET statement_timeout = {ms}; SET lock_timeout = {ms};"
        ))
        .map_err(|e| format!("setting up the page's session: {e}"))?;
        Ok(conn)
    }
}

impl Slow {
    fn failed(why: &str) -> Slow {
        Slow {
            taken: Utc::now(),
            checks: Err(why.to_owned()),
            windows: Vec::new(),
            advice: Err(why.to_owned()),
            sizes_before: Err(why.to_owned()),
        }
    }
}

fn report(e: pgops_insights::Error) -> String {
    pgops_pg::report(&e)
}

/// The top queries by total time over `window`, from the newest snapshot at least that old,
/// or from the oldest one when none is (the page says so).
fn top_over(
    conn: &mut PgConnection,
    window: Duration,
    now: &statements::Current,
) -> Result<TopView, String> {
    let snapshots = statements::snapshots(conn).map_err(report)?;
    let Some(oldest) = snapshots.first() else {
        return Err(
            "no pg_stat_statements snapshot is recorded yet: record them from cron, \
             `*/5 * * * * pgops insights snapshot`"
                .into(),
        );
    };
    let age = (Utc::now() - oldest.taken_at).to_std().unwrap_or_default();
    let (since, note) = if age >= window {
        (window, None)
    } else {
        (
            age,
            Some(format!(
                "The oldest snapshot is {} old: this covers that much",
                humantime::format_duration(Duration::from_secs(age.as_secs()))
            )),
        )
    };
    let top = statements::top_of(
        conn,
        &TopOptions {
            order: Order::Total,
            limit: 10,
            since: Some(since),
            all_databases: false,
            queryid: None,
        },
        now.clone(),
    )
    .map_err(report)?;
    let ids: Vec<i64> = top.queries.iter().map(|q| q.queryid).collect();
    // The intervals of the window the list covers, from the snapshot it starts at (a second
    // of margin keeps that snapshot in).
    let covered = top.since.map_or(window, |since| {
        (Utc::now() - since).to_std().unwrap_or_default() + Duration::from_secs(1)
    });
    let history = statements::history(conn, covered, &ids, now).map_err(report)?;
    Ok(TopView {
        since: top.since,
        note: note.or_else(|| {
            top.reset
                .then(|| "pg_stat_statements was reset inside the window".to_owned())
        }),
        queries: top.queries,
        history,
    })
}

/// Sessions waiting for a lock, or holding one another session waits for, with the normalized
/// text of their statement when pg_stat_statements has it.
fn waiting(conn: &mut PgConnection) -> Result<Vec<Waiting>, String> {
    let mut found: Vec<Waiting> = pgops_pg::rows::rows(
        conn,
        "WITH blocking AS (
                 SELECT DISTINCT unnest(pg_blocking_pids(pid)) AS pid FROM pg_stat_activity
             )
             SELECT a.pid, a.usename::text AS user, a.datname::text AS database, a.state,
                    a.wait_event_type, a.wait_event,
                    extract(epoch FROM now() - coalesce(a.state_change, a.query_start))::float8
                        AS seconds,
                    pg_blocking_pids(a.pid) AS blocked_by,
                    -- query_id is 14+: read by name, NULL on 13.
                    (to_jsonb(a) ->> 'query_id')::int8 AS query_id
             FROM pg_stat_activity a
             WHERE a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
               AND (a.wait_event_type = 'Lock' OR a.pid IN (SELECT pid FROM blocking))
             ORDER BY cardinality(pg_blocking_pids(a.pid)) = 0 DESC, seconds DESC
             LIMIT 50",
        "reading waiting and blocking sessions",
    )
    .map_err(|e| pgops_pg::report(&e))?;
    let ids: Vec<String> = found
        .iter()
        .filter_map(|w| w.query_id.map(|q| q.to_string()))
        .collect();
    if !ids.is_empty() {
        #[derive(Deserialize)]
        struct Text {
            queryid: i64,
            query: String,
        }
        // Without pg_stat_statements there is no normalized text, and none is shown.
        let texts: Vec<Text> = pgops_pg::rows::rows(
            conn,
            &format!(
                "SELECT DISTINCT ON (queryid) queryid, query FROM pg_stat_statements
                 WHERE queryid IN ({}) AND query IS NOT NULL",
                ids.join(",")
            ),
            "reading statement texts",
        )
        .unwrap_or_default();
        let by_id: HashMap<i64, &str> = texts
            .iter()
            .map(|t| (t.queryid, t.query.as_str()))
            .collect();
        for w in &mut found {
            w.query = w
                .query_id
                .and_then(|q| by_id.get(&q))
                .map(|q| pgops_pg::mask_secrets(q).into_owned());
        }
    }
    Ok(found)
}

async fn index(
    State((page, token)): State<(Arc<Page>, Option<Arc<str>>)>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = pgops_health::server::refuse_without_token(token.as_deref(), &headers) {
        return denied;
    }
    let mut response = page.html().await.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // No script may run, whatever a name in the database says; nothing is fetched from
    // elsewhere; nothing is kept in caches.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
