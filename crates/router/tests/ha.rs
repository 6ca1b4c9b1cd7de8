//! The router and its pools on a real Patroni cluster (etcd, three Patroni nodes): writes
//! follow switchovers and kill -9 failovers by themselves, a write in the gap fails fast as
//! "no primary", reads keep going on the replicas, tokens are never answered by a member
//! that has not replayed them, with `synchronous_mode` no acknowledged write is lost, and a
//! primary whose pool is busy stays the primary.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use diesel::{
    Connection, PgConnection, RunQueryDsl,
    connection::SimpleConnection,
    dsl::sql,
    sql_types::{BigInt, Bool},
};
use pgops_pool::{Config, Pool};
use pgops_router::{Error, Router, Token};
use pgops_testkit::{HaCluster, HaOptions};

/// The pool's connection timeout: the longest a write may take to fail.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// A router built the way a service builds it: configuration from the environment.
fn router(env: &[(&str, String)]) -> Router {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let config = Config::from_sources(
        &|key| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()),
        None,
    )
    .unwrap();
    let pool = Pool::connect(&config).unwrap();
    Router::from_config(pool, &config)
}

fn env(cluster: &HaCluster) -> Vec<(&'static str, String)> {
    vec![
        ("PGOPS_ENV", "test".into()),
        ("DATABASE_URL", cluster.multi_host_url("postgres")),
        ("PGOPS_POOL_MAX_SIZE", "8".into()),
        ("PGOPS_POOL_MIN_IDLE", "0".into()),
        ("PGOPS_POOL_CONNECTION_TIMEOUT", "2s".into()),
        ("PGOPS_ROUTER_REPLICA_MIN_IDLE", "0".into()),
        ("PGOPS_ROUTER_MONITOR_INTERVAL", "200ms".into()),
    ]
}

/// What the load saw.
#[derive(Debug, Default)]
struct Tally {
    acked: Mutex<Vec<(i64, Token, Instant)>>,
    no_primary: AtomicU64,
    other_write_errors: AtomicU64,
    slowest_failure_ms: AtomicU64,
    reads: AtomicU64,
    failed_reads: AtomicU64,
    /// Ids a read with the write's token did not find.
    stale_token_reads: Mutex<Vec<i64>>,
    stop: AtomicBool,
}

impl Tally {
    /// The figures of a run, for the test's output.
    fn summary(&self, acked: usize, lost: usize) -> String {
        format!(
            "{acked} acknowledged, {lost} lost, {} no-primary errors, {} other write errors, slowest failure {} ms, reads {} ok / {} failed",
            self.no_primary.load(Ordering::Relaxed),
            self.other_write_errors.load(Ordering::Relaxed),
            self.slowest_failure_ms.load(Ordering::Relaxed),
            self.reads.load(Ordering::Relaxed),
            self.failed_reads.load(Ordering::Relaxed),
        )
    }
}

/// Two writers inserting numbered rows through the router (recording each acknowledged id and
/// reading it back with its token), and one reader without tokens.
fn load(router: &Router, tally: &Arc<Tally>) -> Vec<thread::JoinHandle<()>> {
    let next = Arc::new(AtomicU64::new(1));
    let mut threads = Vec::new();
    for _ in 0..2 {
        let (router, tally, next) = (router.clone(), tally.clone(), next.clone());
        threads.push(thread::spawn(move || {
            while !tally.stop.load(Ordering::Relaxed) {
                let id = next.fetch_add(1, Ordering::Relaxed) as i64;
                let started = Instant::now();
                let written = router.write(|conn| -> Result<(), Error> {
                    Ok(conn.batch_execute(&format!("INSERT INTO acks (id) VALUES ({id})"))?)
                });
                match written {
                    Ok(((), token)) => {
                        tally.acked.lock().unwrap().push((id, token, started));
                        let seen = router.read(Some(token), |conn| -> Result<bool, Error> {
                            Ok(diesel::select(sql::<Bool>(&format!(
                                "EXISTS (SELECT FROM acks WHERE id = {id})"
                            )))
                            .get_result(conn)?)
                        });
                        if let Ok(false) = seen {
                            tally.stale_token_reads.lock().unwrap().push(id);
                        }
                    }
                    Err(e) => {
                        let ms = started.elapsed().as_millis() as u64;
                        tally.slowest_failure_ms.fetch_max(ms, Ordering::Relaxed);
                        if e.is_no_primary() {
                            tally.no_primary.fetch_add(1, Ordering::Relaxed);
                        } else {
                            tally.other_write_errors.fetch_add(1, Ordering::Relaxed);
                        }
                        thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }));
    }
    let (router, tally) = (router.clone(), tally.clone());
    threads.push(thread::spawn(move || {
        while !tally.stop.load(Ordering::Relaxed) {
            let read = router.read(None, |conn| -> Result<i64, Error> {
                Ok(diesel::select(sql::<BigInt>("count(*) FROM acks")).get_result(conn)?)
            });
            match read {
                Ok(_) => tally.reads.fetch_add(1, Ordering::Relaxed),
                Err(_) => tally.failed_reads.fetch_add(1, Ordering::Relaxed),
            };
            thread::sleep(Duration::from_millis(5));
        }
    }));
    threads
}

/// Waits until a write begun after now is acknowledged, then gives the longest pause
/// between acknowledged writes since `from` (the write gap an event caused).
fn writes_resume(tally: &Tally, from: Instant) -> Duration {
    let now = Instant::now();
    let deadline = now + Duration::from_secs(90);
    loop {
        let acked = tally.acked.lock().unwrap();
        if acked.iter().any(|(_, _, started)| *started > now) {
            let mut times: Vec<Instant> = acked
                .iter()
                .map(|(_, _, started)| *started)
                .filter(|started| *started >= from)
                .collect();
            times.sort();
            return times
                .windows(2)
                .map(|w| w[1] - w[0])
                .max()
                .unwrap_or_default();
        }
        drop(acked);
        assert!(
            Instant::now() < deadline,
            "writes did not resume: {tally:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The ids on the current leader.
fn ids_on_leader(cluster: &HaCluster) -> BTreeSet<i64> {
    let leader = cluster
        .wait_for_leader(Duration::from_secs(60), None)
        .unwrap();
    let mut conn =
        PgConnection::establish(&cluster.node(&leader.name).unwrap().url("postgres")).unwrap();
    diesel::sql_query("SELECT id FROM acks")
        .load::<Id>(&mut conn)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect()
}

#[derive(diesel::QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

fn create_table(cluster: &HaCluster) {
    let leader = cluster.leader().unwrap().unwrap();
    let mut conn =
        PgConnection::establish(&cluster.node(&leader.name).unwrap().url("postgres")).unwrap();
    conn.batch_execute("CREATE TABLE acks (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
        .unwrap();
}

/// The member name the router gives a node found from the multi-host URL.
fn member_of(cluster: &HaCluster, node: &str) -> String {
    format!("127.0.0.1:{}", cluster.node(node).unwrap().pg_port())
}

/// Waits until the router reads from `member` again (a standby that serves).
fn serves_reads(router: &Router, member: &str) -> Duration {
    let started = Instant::now();
    loop {
        if router
            .replicas()
            .iter()
            .any(|r| r.name == member && r.serving)
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{member} never served reads again: {:?}",
            router.replicas()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// kill -9 of the primary's node once the cluster is settled (a primary killed before its
/// first checkpoint may not rewind; see the guide); waits for the new leader and for writes,
/// then starts the node again and waits until it is a standby that serves reads (rewound, or
/// rebuilt if the rewind failed). Returns when the kill was done: the node's processes gone.
fn kill_primary(
    cluster: &HaCluster,
    router: &Router,
    tally: &Tally,
    what: &str,
    member: impl Fn(&str) -> String,
) -> Instant {
    let leader = cluster
        .wait_until_settled(Duration::from_secs(300))
        .unwrap()
        .name;
    let at = Instant::now();
    cluster.kill_node(&leader).unwrap();
    // Patroni goes first, then the postmaster: until then the primary takes writes, and
    // those it had not sent on yet are lost with it.
    let killed = Instant::now();
    // Restarted before its leader key expires, the node would simply lead again.
    cluster
        .wait_for_leader(Duration::from_secs(90), Some(&leader))
        .unwrap();
    let gap = writes_resume(tally, at);
    eprintln!("{what} of {leader}: longest write pause {gap:?}");
    cluster.start_node(&leader).unwrap();
    if cluster.rejoin(&leader).unwrap() {
        eprintln!("{leader} did not rejoin by itself (a failed rewind); reinitialized");
    }
    serves_reads(router, &member(&leader));
    killed
}

/// Writes hold every connection of the primary's pool (20, `replica_max_size`) for several
/// monitor intervals: the monitor's probes and a write waiting its turn find the pool
/// busy, not the primary gone, and the waiting write runs when a connection is free.
fn busy_primary_stays_the_primary(router: &Router) {
    let leader = router.primary_status().unwrap().member.expect("a primary");
    // Each holder keeps its connection until the checks below are done (the gate opens),
    // and the 21st write starts once all 20 hold one, however slowly they got them.
    let holding = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(RwLock::new(()));
    let closed = gate.write().unwrap();
    let holders: Vec<_> = (0..20)
        .map(|_| {
            let (router, holding, gate) = (router.clone(), holding.clone(), gate.clone());
            thread::spawn(move || {
                router.write(|conn| -> Result<(), Error> {
                    holding.fetch_add(1, Ordering::SeqCst);
                    drop(gate.read().unwrap_or_else(PoisonError::into_inner));
                    Ok(conn.batch_execute("SELECT 1")?)
                })
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while holding.load(Ordering::SeqCst) < 20 {
        assert!(
            Instant::now() < deadline,
            "20 writes did not all get a connection"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let polls = router.monitor_polls();
    let waiting = {
        let router = router.clone();
        thread::spawn(move || {
            router.write(|conn| -> Result<(), Error> { Ok(conn.batch_execute("SELECT 1")?) })
        })
    };
    let saturated = Instant::now();
    while saturated.elapsed() < Duration::from_millis(800) {
        // Still waiting: every connection was in use the whole time.
        assert!(
            !waiting.is_finished(),
            "a 21st write ran while 20 held the pool: it was never busy"
        );
        assert_eq!(
            router.primary_status().unwrap().member.as_deref(),
            Some(leader.as_str()),
            "the primary was given up while its pool was busy"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        router.monitor_polls() >= polls + 2,
        "the monitor polled while the pool was busy"
    );
    drop(closed);
    for holder in holders {
        holder.join().unwrap().unwrap();
    }
    waiting
        .join()
        .unwrap()
        .expect("a write waiting for a busy primary's pool runs when a connection is free");
}

#[test]
fn synchronous_mode_loses_no_acknowledged_write_across_switchovers_and_failovers() {
    let cluster = HaCluster::start(HaOptions::default().synchronous_mode(true)).unwrap();
    create_table(&cluster);
    let router = router(&env(&cluster));
    assert_eq!(
        router.replicas().len(),
        3,
        "every member is found from the URL"
    );
    let tally = Arc::new(Tally::default());
    let threads = load(&router, &tally);
    writes_resume(&tally, Instant::now());

    // Five switchovers.
    for round in 0..5 {
        let leader = cluster.leader().unwrap().unwrap().name;
        // Only the synchronous standby may take over.
        let candidate = cluster
            .wait_for_sync_standby(Duration::from_secs(60))
            .unwrap()
            .name;
        let at = Instant::now();
        cluster.switchover(&candidate).unwrap();
        let gap = writes_resume(&tally, at);
        eprintln!("switchover {round}: {leader} -> {candidate}, longest write pause {gap:?}");
        cluster
            .wait_for_replica(&leader, Duration::from_secs(60))
            .unwrap();
        // The old primary, a standby now, serves reads again.
        serves_reads(&router, &member_of(&cluster, &leader));
    }
    // Three kill -9 failovers of the primary's node.
    for round in 0..3 {
        // Patroni promotes only the synchronous standby it has recorded: without one (just
        // after a switchover) the cluster would wait for the dead primary, by design.
        cluster
            .wait_for_sync_standby(Duration::from_secs(60))
            .unwrap();
        kill_primary(
            &cluster,
            &router,
            &tally,
            &format!("kill -9 {round}"),
            |node| member_of(&cluster, node),
        );
    }
    writes_resume(&tally, Instant::now());
    tally.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }

    let on_leader = ids_on_leader(&cluster);
    let acked = tally.acked.lock().unwrap();
    let lost: Vec<i64> = acked
        .iter()
        .map(|(id, _, _)| *id)
        .filter(|id| !on_leader.contains(id))
        .collect();
    eprintln!("synchronous: {}", tally.summary(acked.len(), lost.len()));
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert_eq!(
        tally.failed_reads.load(Ordering::Relaxed),
        0,
        "reads failed while standbys were up"
    );
    assert_eq!(
        *tally.stale_token_reads.lock().unwrap(),
        Vec::<i64>::new(),
        "a read with a token missed its own write"
    );
    assert!(
        tally.no_primary.load(Ordering::Relaxed) > 0,
        "the gaps gave no-primary errors"
    );
    assert!(
        tally.slowest_failure_ms.load(Ordering::Relaxed)
            <= (CONNECTION_TIMEOUT + Duration::from_secs(1)).as_millis() as u64,
        "a failed write took longer than the connection timeout: {tally:?}"
    );
    let status = router.primary_status().unwrap();
    assert_eq!(status.changes, 8, "{status:?}");
    assert!(status.timeline.unwrap() >= 9, "{status:?}");
}

#[test]
fn asynchronous_replication_counts_lost_writes_and_etcd_loss_reads_as_no_primary() {
    let cluster = HaCluster::start(HaOptions::default()).unwrap();
    create_table(&cluster);
    let mut env = env(&cluster);
    env.push(("PGOPS_ROUTER_PATRONI_URLS", cluster.rest_urls().join(",")));
    let router = router(&env);
    let names: BTreeSet<String> = router.replicas().into_iter().map(|r| r.name).collect();
    assert_eq!(
        names,
        BTreeSet::from(["node0".into(), "node1".into(), "node2".into()]),
        "members from Patroni's /cluster"
    );
    busy_primary_stays_the_primary(&router);
    let tally = Arc::new(Tally::default());
    let threads = load(&router, &tally);
    writes_resume(&tally, Instant::now());

    let mut kills = Vec::new();
    for round in 0..3 {
        kills.push(kill_primary(
            &cluster,
            &router,
            &tally,
            &format!("asynchronous kill -9 {round}"),
            str::to_owned,
        ));
    }

    // etcd lost: Patroni demotes the primary once it cannot renew its leader key; writes
    // fail as "no primary" naming Patroni's view, reads go on; etcd back, writes resume.
    let at = Instant::now();
    cluster.stop_etcd().unwrap();
    let demoted = loop {
        if router.primary_status().unwrap().member.is_none() {
            break at.elapsed();
        }
        assert!(
            at.elapsed() < Duration::from_secs(90),
            "the primary was never demoted"
        );
        thread::sleep(Duration::from_millis(100));
    };
    let reads_before = tally.reads.load(Ordering::Relaxed);
    let error = router
        .write(|conn| -> Result<(), Error> {
            Ok(conn.batch_execute("INSERT INTO acks (id) VALUES (-1)")?)
        })
        .unwrap_err();
    assert!(error.is_no_primary(), "{error}");
    assert!(error.to_string().contains("Patroni"), "{error}");
    eprintln!("etcd stopped: primary demoted after {demoted:?}; a write says: {error}");
    thread::sleep(Duration::from_secs(1));
    assert!(
        tally.reads.load(Ordering::Relaxed) > reads_before,
        "reads stopped without etcd"
    );
    cluster.start_etcd().unwrap();
    let back = Instant::now();
    cluster
        .wait_for_leader(Duration::from_secs(90), None)
        .unwrap();
    writes_resume(&tally, back);
    eprintln!("etcd back: writes again after {:?}", back.elapsed());
    tally.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }

    let on_leader = ids_on_leader(&cluster);
    let acked = tally.acked.lock().unwrap();
    let lost: Vec<&(i64, Token, Instant)> = acked
        .iter()
        .filter(|(id, _, _)| !on_leader.contains(id))
        .collect();
    // How long before its kill each lost write was begun. A backend of the killed primary
    // outlives its postmaster for a moment and can still acknowledge a write begun just
    // after the kill: such a write is lost with that kill, not the next one.
    let orphans = Duration::from_secs(1);
    let window = lost
        .iter()
        .filter_map(|(_, _, started)| {
            kills
                .iter()
                .filter(|killed| **killed + orphans >= *started)
                .min()
                .map(|killed| killed.saturating_duration_since(*started))
        })
        .max()
        .unwrap_or_default();
    eprintln!(
        "asynchronous: {} (lost writes begun at most {window:?} before a kill)",
        tally.summary(acked.len(), lost.len())
    );
    // Reads went on throughout, the etcd loss included: some standby was always up.
    assert_eq!(
        tally.failed_reads.load(Ordering::Relaxed),
        0,
        "reads failed while standbys were up"
    );
    // A read with a token finds its write unless the write itself was lost.
    let lost_ids: BTreeSet<i64> = lost.iter().map(|(id, _, _)| *id).collect();
    let stale: Vec<i64> = tally
        .stale_token_reads
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|id| !lost_ids.contains(id))
        .collect();
    assert!(
        stale.is_empty(),
        "reads with a token missed writes that exist: {stale:?}"
    );
    // Every lost write was acknowledged just before a kill, not any time.
    assert!(window < Duration::from_secs(5), "{window:?}");
}
