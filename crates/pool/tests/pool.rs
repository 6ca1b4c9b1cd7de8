//! The pool against real PostgreSQL: session settings, exhaustion, a restart under load, an
//! unreachable server, wrong passwords, leaks, stats and the async helper.
#![allow(clippy::unwrap_used)]

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use diesel::{
    QueryableByName, RunQueryDsl,
    dsl::sql,
    sql_types::{Integer, Text},
};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use pgops_pool::{DatabaseUrl, Environment, Error, Pool, PoolSettings, metrics::names};
use pgops_testkit::{Cluster, ClusterOptions, TestDatabase};

/// A recorder that keeps every value readable (the debugging recorder consumes values on
/// every snapshot, which parallel tests would steal from each other).
struct Recorded(Registry<Key, AtomicStorage>);

impl Recorder for Recorded {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

/// One metrics recorder and one log capture for the whole test binary.
fn observe() -> &'static (&'static Recorded, Arc<Mutex<Vec<u8>>>) {
    static OBSERVED: OnceLock<(&'static Recorded, Arc<Mutex<Vec<u8>>>)> = OnceLock::new();
    OBSERVED.get_or_init(|| {
        let recorder: &'static Recorded = Box::leak(Box::new(Recorded(Registry::atomic())));
        metrics::set_global_recorder(recorder).unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("pgops_pool=debug")
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .init();
        (recorder, logs)
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> String {
    String::from_utf8_lossy(&observe().1.lock().unwrap()).into_owned()
}

/// The value of a counter or gauge, or the number of histogram samples, of one pool (summed
/// over the other labels, or only those matching `label`).
fn metric(name: &str, pool: &str, label: Option<(&str, &str)>) -> f64 {
    let registry = &observe().0.0;
    let matches = |key: &Key| {
        key.name() == name
            && key.labels().any(|l| l.key() == "pool" && l.value() == pool)
            && label.is_none_or(|(k, v)| key.labels().any(|l| l.key() == k && l.value() == v))
    };
    let counters: f64 = registry
        .get_counter_handles()
        .into_iter()
        .filter(|(k, _)| matches(k))
        .map(|(_, c)| c.load(std::sync::atomic::Ordering::Relaxed) as f64)
        .sum();
    let gauges: f64 = registry
        .get_gauge_handles()
        .into_iter()
        .filter(|(k, _)| matches(k))
        .map(|(_, g)| f64::from_bits(g.load(std::sync::atomic::Ordering::Relaxed)))
        .sum();
    let histograms: f64 = registry
        .get_histogram_handles()
        .into_iter()
        .filter(|(k, _)| matches(k))
        .map(|(_, h)| h.data().len() as f64)
        .sum();
    counters + gauges + histograms
}

fn settings(max_size: u32) -> PoolSettings {
    PoolSettings {
        max_size,
        min_idle: 0,
        connection_timeout: Duration::from_millis(500),
        ..Environment::Test.profile()
    }
}

/// A pool of `size` connections, every one of them open.
fn all_open(name: &str, db: &TestDatabase, size: u32) -> Pool {
    let settings = PoolSettings {
        min_idle: size,
        ..settings(size)
    };
    let pool = Pool::open(name, url(db), settings).unwrap();
    let opened = Instant::now();
    while pool.stats().total < size {
        assert!(
            opened.elapsed() < Duration::from_secs(5),
            "min_idle never opened: {:?}",
            pool.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    pool
}

fn url(db: &TestDatabase) -> DatabaseUrl {
    DatabaseUrl::parse(&db.url()).unwrap()
}

#[derive(QueryableByName)]
struct Shown {
    #[diesel(sql_type = Text)]
    value: String,
}

fn show(conn: &mut diesel::PgConnection, name: &str) -> String {
    diesel::sql_query(format!("SELECT current_setting('{name}') AS value"))
        .get_result::<Shown>(conn)
        .unwrap()
        .value
}

#[test]
fn every_new_connection_gets_the_session_settings() {
    observe();
    let db = TestDatabase::empty().unwrap();
    let settings = PoolSettings {
        application_name: "billing-api".into(),
        ..Environment::Production.profile()
    };
    let pool = Pool::open(
        "settings",
        url(&db),
        PoolSettings {
            min_idle: 0,
            max_size: 3,
            ..settings
        },
    )
    .unwrap();
    // Hold three at once so three different sessions are checked.
    let mut held: Vec<_> = (0..3).map(|_| pool.get().unwrap()).collect();
    for conn in &mut held {
        assert_eq!(show(conn, "statement_timeout"), "10s");
        assert_eq!(show(conn, "lock_timeout"), "3s");
        assert_eq!(show(conn, "idle_in_transaction_session_timeout"), "30s");
        assert_eq!(show(conn, "application_name"), "billing-api");
    }
    assert_eq!(pool.stats().in_use, 3);
    assert_eq!(pool.stats().total, 3);
}

#[test]
fn exhaustion_times_out_cleanly_and_returns_every_connection() {
    observe();
    let db = TestDatabase::empty().unwrap();
    let pool = Pool::open("exhaustion", url(&db), settings(3)).unwrap();
    let threads: Vec<_> = (0..24)
        .map(|_| {
            let pool = pool.clone();
            std::thread::spawn(move || -> (Instant, Result<(), Error>) {
                let asked = Instant::now();
                let result = pool.get().and_then(|mut conn| {
                    diesel::sql_query("SELECT pg_sleep(0.25)").execute(&mut *conn)?;
                    Ok(())
                });
                (asked, result)
            })
        })
        .collect();
    let (mut ok, mut timeouts) = (0, 0);
    for thread in threads {
        let (asked, result) = thread.join().expect("no panic under exhaustion");
        match result {
            Ok(()) => ok += 1,
            Err(e @ Error::Timeout { max, .. }) => {
                assert_eq!(max, 3);
                // What the pool-exhaustion runbook tells operators to look for in their logs.
                let runbook = std::fs::read_to_string(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../docs/runbooks/pool-exhaustion.md"
                ))
                .unwrap();
                let said = e.to_string();
                let quoted = said.split(" `").next().unwrap();
                assert!(
                    runbook.contains(quoted),
                    "the runbook does not quote: {said}"
                );
                // A timeout comes only after the full connection timeout (500 ms), not early.
                let waited = asked.elapsed();
                assert!(
                    waited >= Duration::from_millis(490),
                    "gave up after {waited:?}"
                );
                timeouts += 1;
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert!(ok >= 3 && timeouts > 0, "ok {ok}, timeouts {timeouts}");
    let stats = pool.stats();
    assert_eq!(
        (stats.in_use, stats.waiting),
        (0, 0),
        "every connection came back: {stats:?}"
    );
    assert!(stats.total <= 3);
    assert_eq!(
        metric(names::TIMEOUTS, "exhaustion", None),
        f64::from(timeouts)
    );
    assert_eq!(
        metric(names::WAIT, "exhaustion", None),
        24.0 + 1.0,
        "every wait is recorded, timed-out ones too"
    );
}

#[test]
fn recovers_from_a_database_restart_under_load() {
    observe();
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();
    let pool = Pool::open(
        "restart",
        DatabaseUrl::parse(&cluster.url("postgres")).unwrap(),
        settings(4),
    )
    .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let last_ok = Arc::new(Mutex::new(Instant::now()));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (pool, stop, last_ok) = (pool.clone(), stop.clone(), last_ok.clone());
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u32, 0u32);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let result = pool.get().and_then(|mut conn| {
                        Ok(diesel::select(sql::<Integer>("1")).get_result::<i32>(&mut *conn)?)
                    });
                    match result {
                        Ok(_) => {
                            ok += 1;
                            *last_ok.lock().unwrap() = Instant::now();
                        }
                        Err(_) => failed += 1,
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    cluster.restart().unwrap();
    let back = Instant::now();
    let deadline = back + Duration::from_secs(30);
    let recovered = loop {
        let seen = *last_ok.lock().unwrap();
        if seen > back {
            break seen - back;
        }
        assert!(
            Instant::now() < deadline,
            "the pool did not serve again within 30s of the restart"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = workers
        .into_iter()
        .map(|w| w.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    println!(
        "recovery after restart: {recovered:?} ({ok} queries ok, {failed} failed during the restart)"
    );
    let closed = metric(names::CLOSED, "restart", Some(("reason", "broken")))
        + metric(
            names::CLOSED,
            "restart",
            Some(("reason", "validation_failed")),
        );
    assert!(
        closed >= 1.0,
        "dead connections were discarded with a reason"
    );
    // After recovery every query works again.
    let mut conn = pool.get().unwrap();
    assert_eq!(
        diesel::select(sql::<Integer>("7"))
            .get_result::<i32>(&mut *conn)
            .unwrap(),
        7
    );
}

#[test]
fn unreachable_server_fails_within_the_connection_timeout_without_the_password() {
    observe();
    let port = pgops_pg::free_port().unwrap();
    let url = DatabaseUrl::parse(&format!(
        "postgres://app:hunter2-secret@127.0.0.1:{port}/app"
    ))
    .unwrap();
    let started = Instant::now();
    let err = Pool::open(
        "unreachable",
        url,
        PoolSettings {
            connection_timeout: Duration::from_secs(1),
            ..settings(2)
        },
    )
    .unwrap_err();
    let elapsed = started.elapsed();
    let message = err.to_string();
    assert!(matches!(err, Error::Connect { .. }), "{message}");
    assert!(
        message.contains(&format!(
            "cannot connect to postgres://app:***@127.0.0.1:{port}/app"
        )),
        "{message}"
    );
    assert!(
        message.contains("Connection refused") || message.contains("connection"),
        "{message}"
    );
    assert!(!message.contains("hunter2-secret"), "{message}");
    assert!(
        elapsed < Duration::from_secs(5),
        "gave up after the 1s connection timeout, not {elapsed:?}"
    );
    assert!(
        !logs().contains("hunter2-secret"),
        "the password never reaches the logs"
    );
}

#[test]
fn a_wrong_password_is_reported_without_echoing_it() {
    observe();
    let cluster = Cluster::start(ClusterOptions::default().require_passwords(true)).unwrap();
    cluster
        .execute("postgres", "CREATE ROLE app LOGIN PASSWORD 'right-pass'")
        .unwrap();
    let wrong = format!(
        "postgres://app:wrong%27secret@127.0.0.1:{}/postgres",
        cluster.port()
    );
    let err = Pool::open(
        "bad-login",
        DatabaseUrl::parse(&wrong).unwrap(),
        settings(2),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(err.contains("postgres://app:***@"), "{err}");
    assert!(
        !err.contains("wrong'secret") && !err.contains("wrong%27secret"),
        "{err}"
    );
    assert!(!logs().contains("wrong'secret") && !logs().contains("wrong%27secret"));

    let right = format!(
        "postgres://app:right-pass@127.0.0.1:{}/postgres",
        cluster.port()
    );
    let pool = Pool::open(
        "good-login",
        DatabaseUrl::parse(&right).unwrap(),
        settings(2),
    )
    .unwrap();
    assert!(!format!("{pool:?}").contains("right-pass"));
    drop(pool.get().unwrap());
    assert!(!logs().contains("right-pass"));
}

#[test]
fn a_connection_held_too_long_is_reported_with_its_checkout_site() {
    observe();
    let db = TestDatabase::empty().unwrap();
    let pool = Pool::open(
        "leaky",
        url(&db),
        PoolSettings {
            leak_threshold: Some(Duration::from_millis(100)),
            // Opening the first connection is not what is tested: room for a loaded machine.
            connection_timeout: Duration::from_secs(5),
            ..settings(2)
        },
    )
    .unwrap();
    let line = line!() + 1;
    let conn = pool.get().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(names::LEAKS, "leaky", None) < 1.0 {
        assert!(Instant::now() < deadline, "leak not reported");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(metric(names::LEAKS, "leaky", None), 1.0, "reported once");
    let logs = logs();
    assert!(
        logs.contains("connection held longer than the leak threshold"),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("tests/pool.rs:{line}")),
        "names the checkout site:\n{logs}"
    );
    drop(conn);
    assert!(self::logs().contains("connection reported as leaked was returned"));
    // A quick checkout is not a leak.
    drop(pool.get().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(metric(names::LEAKS, "leaky", None), 1.0);
}

#[test]
fn with_every_connection_in_use_waiters_in_line_are_served_or_time_out_on_their_own_deadline() {
    observe();
    let db = TestDatabase::empty().unwrap();
    let pool = all_open("line", &db, 2);
    let held: Vec<_> = (0..2).map(|_| pool.get().unwrap()).collect();
    let wait_for_waiters = |n: u32| {
        let started = Instant::now();
        while pool.stats().waiting != n {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{:?}",
                pool.stats()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };

    // Four waiters, one at the head and three behind it: each gives up at its own deadline,
    // not later, with the pool's timeout error.
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let asked = Instant::now();
                let result = pool.get_timeout(Duration::from_millis(300)).map(drop);
                (asked.elapsed(), result)
            })
        })
        .collect();
    for waiter in waiters {
        let (waited, result) = waiter.join().unwrap();
        assert!(
            matches!(result, Err(Error::Timeout { max: 2, .. })),
            "{result:?}"
        );
        assert!(
            waited >= Duration::from_millis(290) && waited < Duration::from_millis(1500),
            "gave up after {waited:?}"
        );
    }
    assert_eq!(pool.stats().waiting, 0);

    // Six waiters in line, served by the two connections as they come back, one after
    // another, each well within its timeout.
    let waiters: Vec<_> = (0..6)
        .map(|_| {
            let pool = pool.clone();
            std::thread::spawn(move || -> Result<i32, Error> {
                let mut conn = pool.get()?;
                std::thread::sleep(Duration::from_millis(20));
                Ok(diesel::select(sql::<Integer>("1")).get_result(&mut *conn)?)
            })
        })
        .collect();
    wait_for_waiters(6);
    drop(held);
    for waiter in waiters {
        assert_eq!(waiter.join().unwrap().unwrap(), 1);
    }
    let stats = pool.stats();
    assert_eq!((stats.in_use, stats.waiting, stats.total), (0, 0, 2));
    assert_eq!(metric(names::TIMEOUTS, "line", None), 4.0);
    assert_eq!(
        metric(names::WAIT, "line", None),
        1.0 + 2.0 + 4.0 + 6.0,
        "each wait recorded once: opening, the two held, the four timed out, the six served"
    );
}

#[test]
fn stats_snapshot_tracks_checkouts() {
    observe();
    let db = TestDatabase::empty().unwrap();
    let pool = Pool::open("stats", url(&db), settings(4)).unwrap();
    let a = pool.get().unwrap();
    let b = pool.get().unwrap();
    let stats = pool.stats();
    assert_eq!((stats.in_use, stats.max, stats.waiting), (2, 4, 0));
    assert_eq!(stats.total, stats.in_use + stats.idle);
    assert_eq!(metric(names::IN_USE, "stats", None), 2.0);
    assert_eq!(metric(names::MAX, "stats", None), 4.0);
    drop((a, b));
    let stats = pool.stats();
    assert_eq!(stats.in_use, 0);
    assert_eq!(stats.idle, stats.total);
    assert!(metric(names::OPENED, "stats", None) >= 2.0);
}

fn backend_pid(conn: &mut diesel::PgConnection) -> i32 {
    diesel::select(sql::<Integer>("pg_backend_pid()"))
        .get_result(conn)
        .unwrap()
}

#[test]
fn a_thread_gets_back_the_connection_it_returned_and_others_still_get_it_when_none_is_free() {
    observe();
    let db = TestDatabase::empty().unwrap();
    let pool = all_open("affinity", &db, 3);
    let mine = backend_pid(&mut pool.get().unwrap());
    // Returned while nobody waits, it stays with this thread: it counts as idle, and
    // another thread's checkout gets one of the free connections instead.
    let stats = pool.stats();
    assert_eq!((stats.in_use, stats.idle), (0, 3), "{stats:?}");
    let other = pool.clone();
    let theirs = std::thread::spawn(move || backend_pid(&mut other.get().unwrap()))
        .join()
        .unwrap();
    assert_ne!(
        theirs, mine,
        "another thread took the connection this one returned"
    );
    assert_eq!(backend_pid(&mut pool.get().unwrap()), mine);

    // With one connection, kept by this thread, another thread still gets it, without
    // waiting out its checkout timeout.
    let single = Pool::open("affinity-one", url(&db), settings(1)).unwrap();
    let mine = backend_pid(&mut single.get().unwrap());
    let other = single.clone();
    let theirs = std::thread::spawn(move || backend_pid(&mut other.get().unwrap()))
        .join()
        .unwrap();
    assert_eq!(theirs, mine);

    // Returned while another thread waits for it, it goes to that thread.
    let held = single.get().unwrap();
    let other = single.clone();
    let waiter = std::thread::spawn(move || backend_pid(&mut other.get().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while single.stats().waiting == 0 {
        assert!(Instant::now() < deadline, "{:?}", single.stats());
        std::thread::yield_now();
    }
    drop(held);
    assert_eq!(waiter.join().unwrap(), mine);
    assert_eq!(metric(names::TIMEOUTS, "affinity-one", None), 0.0);
}

#[test]
fn run_executes_blocking_work_off_the_async_runtime() {
    observe();
    let db = TestDatabase::empty().unwrap();
    let pool = Pool::open("async", url(&db), settings(2)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = runtime.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    pool.run(move |conn| -> Result<i32, Error> {
                        Ok(
                            diesel::select(sql::<Integer>(&format!("{i} + pg_backend_pid() * 0")))
                                .get_result(conn)?,
                        )
                    })
                    .await
                })
            })
            .collect();
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap().unwrap());
        }
        out
    });
    assert_eq!(results, (0..8).collect::<Vec<_>>());
    let err = runtime
        .block_on(pool.run(|conn| -> Result<i32, Error> {
            Ok(diesel::select(sql::<Integer>("1/0")).get_result(conn)?)
        }))
        .unwrap_err();
    assert!(err.to_string().contains("division by zero"), "{err}");
}

#[test]
fn a_connection_refused_a_write_as_read_only_is_never_handed_out_again() {
    observe();
    let db = TestDatabase::empty().unwrap();
    let pool = Pool::open("read-only", url(&db), settings(1)).unwrap();
    let pid = |conn: &mut diesel::PgConnection| -> i32 {
        diesel::select(sql::<Integer>("pg_backend_pid()"))
            .get_result(conn)
            .unwrap()
    };
    let first = {
        let mut conn = pool.get().unwrap();
        // What a primary demoted under the connection answers: SQLSTATE 25006.
        diesel::sql_query("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            .execute(&mut *conn)
            .unwrap();
        let refused = diesel::sql_query("CREATE TABLE t (x int)").execute(&mut *conn);
        assert!(
            matches!(
                refused,
                Err(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::ReadOnlyTransaction,
                    _
                ))
            ),
            "{refused:?}"
        );
        assert!(conn.refused_as_read_only());
        pid(&mut conn)
    };
    let mut conn = pool.get().unwrap();
    assert_ne!(pid(&mut conn), first, "the read-only session came back");
    diesel::sql_query("CREATE TABLE t (x int)")
        .execute(&mut *conn)
        .unwrap();
    drop(conn);

    // A connection the caller found on the wrong server is discarded on request.
    let mut conn = pool.get().unwrap();
    let second = pid(&mut conn);
    conn.discard();
    drop(conn);
    assert_ne!(pid(&mut pool.get().unwrap()), second);
}

#[test]
fn a_wait_given_up_by_its_caller_ends_early_and_is_no_timeout() {
    observe();
    let db = TestDatabase::empty().unwrap();
    let pool = Pool::open(
        "given-up",
        url(&db),
        PoolSettings {
            connection_timeout: Duration::from_secs(5),
            ..settings(1)
        },
    )
    .unwrap();
    let held = pool.get().unwrap();
    let asked = Instant::now();
    let gave_up = pool
        .get_while(|| asked.elapsed() < Duration::from_millis(200))
        .unwrap();
    assert!(gave_up.is_none());
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(1),
        "{waited:?}"
    );
    assert_eq!(metric(names::TIMEOUTS, "given-up", None), 0.0);
    // Wanted until a connection comes back: it gets that one.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
    });
    assert!(pool.get_while(|| true).unwrap().is_some());
    releaser.join().unwrap();
    // One wait sample per checkout (`Pool::open`'s check, the first get and the last), none
    // for the given-up wait and none per 50 ms slice.
    assert_eq!(metric(names::WAIT, "given-up", None), 3.0);
    assert_eq!(metric(names::TIMEOUTS, "given-up", None), 0.0);
}

#[test]
fn verify_full_tls_connects_and_a_wrong_ca_or_host_name_is_refused_saying_which() {
    let cluster = Cluster::start(ClusterOptions::default().tls(true)).unwrap();
    let url = cluster.tls_url("postgres").unwrap();
    let pool = Pool::open("tls", DatabaseUrl::parse(&url).unwrap(), settings(2)).unwrap();
    #[derive(QueryableByName)]
    struct Ssl {
        #[diesel(sql_type = Text)]
        ssl: String,
    }
    let ssl: Ssl =
        diesel::sql_query("SELECT ssl::text AS ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .get_result(&mut *pool.get().unwrap())
            .unwrap();
    assert_eq!(ssl.ssl, "true");

    let files = cluster.tls().unwrap();
    let refused = |url: String| -> String {
        let err = Pool::open(
            "tls-refused",
            DatabaseUrl::parse(&url).unwrap(),
            settings(1),
        )
        .map(|_| ())
        .unwrap_err();
        pgops_pg::report(&err)
    };
    let wrong_ca = refused(url.replace(
        &files.root_cert.display().to_string(),
        &files.other_root_cert.display().to_string(),
    ));
    assert!(wrong_ca.contains("certificate verify failed"), "{wrong_ca}");
    let mismatch = refused(url.replace("@localhost:", "@127.0.0.1:"));
    assert!(
        mismatch.contains("does not match host name \"127.0.0.1\""),
        "{mismatch}"
    );
    let plain = refused(format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        cluster.port()
    ));
    // "no encryption" from PostgreSQL 14 on, "SSL off" before.
    assert!(
        plain.contains("pg_hba.conf rejects connection")
            && (plain.contains("no encryption") || plain.contains("SSL off")),
        "{plain}"
    );
}
