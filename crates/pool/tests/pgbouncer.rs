//! Pools behind a real PgBouncer (Debian's `pgbouncer`) in transaction pooling: diesel's
//! query builder from 64 threads on four pools of 16 over 4 server connections gives no error
//! with `pooler = transaction`, and named prepared statements collide without it; no session
//! setting of one client reaches another.
#![allow(clippy::unwrap_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use diesel::{
    ExpressionMethods, QueryDsl, QueryableByName, RunQueryDsl, connection::SimpleConnection,
    sql_types::Text,
};
use pgops_pool::{DatabaseUrl, Environment, Pool, PoolSettings, Pooler};
use pgops_testkit::{Cluster, ClusterOptions, PgBouncer, PgBouncerOptions, PoolMode};

diesel::table! {
    /// The test's table.
    items (id) {
        /// Its key.
        id -> BigInt,
        /// `item <id>`.
        name -> Text,
    }
}

fn settings(pooler: Pooler, application_name: &str) -> PoolSettings {
    PoolSettings {
        max_size: 16,
        min_idle: 0,
        connection_timeout: Duration::from_secs(10),
        application_name: application_name.to_owned(),
        pooler,
        ..Environment::Test.profile()
    }
}

/// A cluster with 1,000 items.
fn items_cluster(options: ClusterOptions) -> Cluster {
    let cluster = Cluster::start(options).unwrap();
    cluster
        .execute(
            "postgres",
            "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL);
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g;",
        )
        .unwrap();
    cluster
}

/// A cluster with 1,000 items, behind PgBouncer in transaction mode with 4 server connections.
fn setup() -> (Cluster, PgBouncer) {
    let cluster = items_cluster(ClusterOptions::default());
    let bouncer =
        PgBouncer::start(&cluster, PgBouncerOptions::new(PoolMode::Transaction, 4)).unwrap();
    (cluster, bouncer)
}

/// A checkout and one parameterized diesel query-builder select (which diesel would prepare
/// under a cached name); the item's name, or the error's text.
fn lookup(pool: &Pool, id: i64) -> Result<String, String> {
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    items::table
        .filter(items::id.eq(id))
        .select(items::name)
        .first::<String>(&mut *conn)
        .map_err(|e| e.to_string())
}

/// Four pools of 16, 16 threads each, running the same parameterized query-builder select
/// for `run`; returns (queries, errors, first error).
fn hammer(bouncer: &PgBouncer, pooler: Pooler, run: Duration) -> (usize, usize, Option<String>) {
    let url = DatabaseUrl::parse(&bouncer.url("postgres")).unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let first = Arc::new(std::sync::Mutex::new(None));
    let deadline = Instant::now() + run;
    let mut threads = Vec::new();
    for p in 0..4 {
        let pool = Pool::open(&format!("p{p}"), url.clone(), settings(pooler, "hammer")).unwrap();
        for t in 0..16_i64 {
            let (pool, done, failed, first) =
                (pool.clone(), done.clone(), failed.clone(), first.clone());
            threads.push(thread::spawn(move || {
                let mut i = t;
                while Instant::now() < deadline {
                    i = i % 1000 + 1;
                    let outcome = lookup(&pool, i);
                    match outcome {
                        Ok(name) => assert_eq!(name, format!("item {i}")),
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            first.lock().unwrap().get_or_insert(e);
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 7;
                }
            }));
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    let first = first.lock().unwrap().take();
    (
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        first,
    )
}

#[test]
fn sixty_four_threads_through_transaction_pooling_see_no_error_with_pooler_transaction() {
    let (_cluster, bouncer) = setup();
    let (queries, errors, first) = hammer(&bouncer, Pooler::Transaction, Duration::from_secs(4));
    assert!(queries > 1000, "{queries} queries");
    assert_eq!(errors, 0, "{errors} of {queries} failed, first: {first:?}");

    // The same load with diesel's statement cache on: named statements collide on the
    // server connections PgBouncer shares. This is what `pooler = transaction` prevents.
    let (queries, errors, first) = hammer(&bouncer, Pooler::None, Duration::from_secs(2));
    assert!(
        errors > 0,
        "0 of {queries} failed with the statement cache on"
    );
    let first = first.unwrap();
    assert!(first.contains("__diesel_stmt_"), "{first}");
}

#[derive(QueryableByName)]
struct Seen {
    #[diesel(sql_type = Text)]
    application: String,
    #[diesel(sql_type = Text)]
    statement_timeout: String,
}

#[test]
fn no_session_setting_of_one_client_reaches_another() {
    let (_cluster, bouncer) = setup();
    let url = DatabaseUrl::parse(&bouncer.url("postgres")).unwrap();
    let watch = |pool: Pool, stop: Arc<AtomicBool>| {
        thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let mut conn = pool.get().unwrap();
                let row: Seen = diesel::sql_query(
                    "SELECT current_setting('application_name') AS application, \
                     current_setting('statement_timeout') AS statement_timeout",
                )
                .get_result(&mut *conn)
                .unwrap();
                seen.push((row.application, row.statement_timeout));
            }
            seen
        })
    };
    let run = |others: Pool| {
        let stop = Arc::new(AtomicBool::new(false));
        let mine = Pool::open("mine", url.clone(), settings(Pooler::Transaction, "mine")).unwrap();
        let watchers: Vec<_> = (0..8).map(|_| watch(mine.clone(), stop.clone())).collect();
        let noise: Vec<_> = (0..8)
            .map(|_| watch(others.clone(), stop.clone()))
            .collect();
        // A client that sets a timeout for its own transaction only.
        let mut local = others.get().unwrap();
        for _ in 0..200 {
            local
                .batch_execute("BEGIN; SET LOCAL statement_timeout = '4321ms'; SELECT 1; COMMIT")
                .unwrap();
        }
        drop(local);
        thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        for n in noise {
            n.join().unwrap();
        }
        watchers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect::<Vec<_>>()
    };

    let others = Pool::open(
        "others",
        url.clone(),
        settings(Pooler::Transaction, "others"),
    )
    .unwrap();
    let seen = run(others);
    assert!(seen.len() > 100, "{} checks", seen.len());
    let foreign: Vec<_> = seen
        .iter()
        .filter(|(app, timeout)| app != "mine" || timeout != "0")
        .collect();
    assert!(
        foreign.is_empty(),
        "{} of {}: {:?}",
        foreign.len(),
        seen.len(),
        &foreign[..foreign.len().min(5)]
    );

    // A pool that sends session SETs (pooler = none) behind the same PgBouncer leaks them:
    // the check above can fail.
    let leaky = PoolSettings {
        statement_timeout: Some(Duration::from_millis(7777)),
        ..settings(Pooler::None, "others")
    };
    let seen = run(Pool::open("leaky", url.clone(), leaky).unwrap());
    assert!(
        seen.iter().any(|(_, timeout)| timeout == "7777ms"),
        "the leaky pool's statement_timeout never reached another client"
    );
}

/// What one side of the load test saw: latencies of successful checkout + query, clean
/// timeouts, and failures with the server's "too many clients".
#[derive(Debug, Default)]
struct Load {
    latencies: Vec<Duration>,
    timeouts: usize,
    too_many: usize,
    other: Vec<String>,
}

impl Load {
    fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort();
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(i).copied().unwrap_or_default()
    }
}

/// Sixteen services, each with its own pool of 8 and 8 request threads, for `run`: checkout
/// plus one query per request.
fn sixteen_services(url: &DatabaseUrl, pooler: Pooler, run: Duration) -> Load {
    let deadline = Instant::now() + run;
    let load = Arc::new(std::sync::Mutex::new(Load::default()));
    let mut threads = Vec::new();
    for service in 0..16 {
        let pool = Pool::open_unchecked(
            &format!("service-{service}"),
            url.clone(),
            PoolSettings {
                max_size: 8,
                min_idle: 0,
                connection_timeout: Duration::from_secs(2),
                ..settings(pooler, &format!("service-{service}"))
            },
        );
        for t in 0..8_i64 {
            let (pool, load) = (pool.clone(), load.clone());
            threads.push(thread::spawn(move || {
                let mut i = t;
                while Instant::now() < deadline {
                    i = i % 1000 + 1;
                    let started = Instant::now();
                    let outcome = lookup(&pool, i);
                    let elapsed = started.elapsed();
                    let mut load = load.lock().unwrap();
                    match outcome {
                        Ok(name) => {
                            assert_eq!(name, format!("item {i}"));
                            load.latencies.push(elapsed)
                        }
                        Err(e) if e.contains("too many clients") => load.too_many += 1,
                        Err(e) if e.contains("no connection available") => load.timeouts += 1,
                        Err(e) => load.other.push(e),
                    }
                    drop(load);
                    i += 13;
                }
            }));
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    Arc::try_unwrap(load).unwrap().into_inner().unwrap()
}

#[test]
fn sixteen_services_fit_through_pgbouncer_where_they_overflow_the_server_directly() {
    // 16 pools of 8 = 128 connections against a server that takes 40.
    let cluster = items_cluster(ClusterOptions::default().setting("max_connections", "40"));
    let bouncer = PgBouncer::start(
        &cluster,
        PgBouncerOptions::new(PoolMode::Transaction, 20).max_client_conn(200),
    )
    .unwrap();

    let through = DatabaseUrl::parse(&bouncer.url("postgres")).unwrap();
    let mut pooled = sixteen_services(&through, Pooler::Transaction, Duration::from_secs(4));
    let direct = DatabaseUrl::parse(&cluster.url("postgres")).unwrap();
    let mut straight = sixteen_services(&direct, Pooler::None, Duration::from_secs(4));
    eprintln!(
        "through PgBouncer: {} requests, p50 {:?}, p99 {:?}, {} timeouts, {} too many clients; \
         direct: {} requests, p50 {:?}, p99 {:?}, {} timeouts, {} too many clients",
        pooled.latencies.len(),
        pooled.percentile(0.5),
        pooled.percentile(0.99),
        pooled.timeouts,
        pooled.too_many,
        straight.latencies.len(),
        straight.percentile(0.5),
        straight.percentile(0.99),
        straight.timeouts,
        straight.too_many,
    );
    assert!(pooled.latencies.len() > 1000, "{}", pooled.latencies.len());
    assert_eq!(
        pooled.too_many, 0,
        "PgBouncer keeps the server within max_connections"
    );
    assert!(
        pooled.other.is_empty(),
        "{:?}",
        &pooled.other[..pooled.other.len().min(3)]
    );
    assert!(
        straight.too_many > 0,
        "128 connections straight to a server of 40 are refused ({} timeouts, other: {:?})",
        straight.timeouts,
        &straight.other[..straight.other.len().min(3)]
    );
}
