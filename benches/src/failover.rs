//! The `failover` suite, on a real Patroni cluster (etcd 3.4, three Patroni 3.0 nodes with
//! `ttl` 20, `loop_wait` 2, `retry_timeout` 5, asynchronous replication): how long writes
//! stop when the primary's node is killed with SIGKILL, and during a planned switchover, for a
//! service writing through pgops's router (the members found from the multi-host URL and
//! followed by its monitor, default settings) against the standard setup, the same pool
//! through HAProxy (Debian's 2.6) routing to whichever node answers Patroni's `GET /primary`
//! (`option httpchk`, `inter 1s fall 2 rise 1`, `on-marked-down shutdown-sessions`), reads
//! through HAProxy's `GET /replica` listener.
//!
//! Both sides write and read at the same time through the same events, so each event gives
//! one figure per side; the median over the events is reported. A write gap is the longest
//! pause between acknowledged writes from the event until the side's first write
//! acknowledged by the new primary.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use diesel::{Connection as _, PgConnection, RunQueryDsl, connection::SimpleConnection, sql_types};
use pgops_pool::{Config, DatabaseUrl, Pool};
use pgops_router::Router;
use pgops_testkit::{HAPROXY_CHECKS, HaCluster, HaOptions, HaProxy};

use crate::report::{Comparison, Report};

/// How many events of each kind.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    failovers: usize,
    switchovers: usize,
}

impl Plan {
    /// Five of each (the median of five per side), or one of each for `--quick`.
    pub fn new(quick: bool) -> Self {
        let n = if quick { 1 } else { 5 };
        Plan {
            failovers: n,
            switchovers: n,
        }
    }
}

/// One acknowledged write: when it began and ended, and the port of the server that took it.
#[derive(Debug, Clone, Copy)]
struct Ack {
    done: Instant,
    port: i32,
}

/// What one side saw.
#[derive(Default)]
struct Side {
    acks: Mutex<Vec<Ack>>,
    reads: Mutex<Vec<(Instant, bool)>>,
}

#[derive(diesel::QueryableByName)]
struct Port {
    #[diesel(sql_type = sql_types::Integer)]
    port: i32,
}

/// Runs the suite.
pub fn run(plan: Plan) -> anyhow::Result<Report> {
    eprintln!("failover: starting etcd and three Patroni nodes");
    let cluster = HaCluster::start(HaOptions::default()).context("starting the Patroni cluster")?;
    let leader = cluster.leader()?.context("no leader after start")?;
    PgConnection::establish(&cluster.node(&leader.name)?.url("postgres"))?.batch_execute(
        "CREATE TABLE bench_writes (id bigserial PRIMARY KEY, side text NOT NULL)",
    )?;
    let haproxy = HaProxy::start(&cluster).context("starting HAProxy")?;

    // Production settings, with pools sized so that both sides' pools fit the servers'
    // max_connections together (after a failover each pool refills on the new primary).
    let env = [
        ("PGOPS_ENV", "production".to_owned()),
        ("DATABASE_URL", cluster.multi_host_url("postgres")),
        ("PGOPS_POOL_MAX_SIZE", "8".to_owned()),
        ("PGOPS_POOL_MIN_IDLE", "2".to_owned()),
        ("PGOPS_ROUTER_REPLICA_MAX_SIZE", "8".to_owned()),
        ("PGOPS_ROUTER_REPLICA_MIN_IDLE", "2".to_owned()),
    ];
    let config = Config::from_sources(
        &|key| env.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()),
        None,
    )?;
    let router = Router::from_config(Pool::connect(&config)?, &config);
    let settings = config.pool.clone();
    let through_haproxy = Pool::open_unchecked(
        "haproxy-primary",
        DatabaseUrl::parse(&haproxy.primary_url("postgres"))?,
        settings.clone(),
    );
    let haproxy_replicas = Pool::open_unchecked(
        "haproxy-replicas",
        DatabaseUrl::parse(&haproxy.replica_url("postgres"))?,
        config.replica_pool_settings(),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (ours, anchor) = (Arc::new(Side::default()), Arc::new(Side::default()));
    let insert = "INSERT INTO bench_writes (side) VALUES ($1) RETURNING inet_server_port() AS port";
    let mut threads = Vec::new();
    {
        let (router, side, stop) = (router.clone(), ours.clone(), stop.clone());
        threads.push(thread::spawn(move || {
            writer(&side, &stop, || {
                router
                    .write(|conn| {
                        diesel::sql_query(insert)
                            .bind::<sql_types::Text, _>("pgops")
                            .get_result::<Port>(conn)
                            .map_err(pgops_router::Error::from)
                    })
                    .map(|(p, _)| p.port)
                    .map_err(|e| e.to_string())
            })
        }));
    }
    {
        let (pool, side, stop) = (through_haproxy.clone(), anchor.clone(), stop.clone());
        threads.push(thread::spawn(move || {
            writer(&side, &stop, || {
                let mut conn = pool.get().map_err(|e| e.to_string())?;
                diesel::sql_query(insert)
                    .bind::<sql_types::Text, _>("haproxy")
                    .get_result::<Port>(&mut *conn)
                    .map(|p| p.port)
                    .map_err(|e| e.to_string())
            })
        }));
    }
    let count = "SELECT inet_server_port() AS port FROM (SELECT count(*) FROM bench_writes WHERE id < 100) c";
    {
        let (router, side, stop) = (router.clone(), ours.clone(), stop.clone());
        threads.push(thread::spawn(move || {
            reader(&side, &stop, || {
                router
                    .read(None, |conn| {
                        diesel::sql_query(count)
                            .get_result::<Port>(conn)
                            .map_err(pgops_router::Error::from)
                    })
                    .is_ok()
            })
        }));
    }
    {
        let (pool, side, stop) = (haproxy_replicas.clone(), anchor.clone(), stop.clone());
        threads.push(thread::spawn(move || {
            reader(&side, &stop, || {
                pool.get()
                    .map_err(|e| e.to_string())
                    .and_then(|mut c| {
                        diesel::sql_query(count)
                            .get_result::<Port>(&mut *c)
                            .map_err(|e| e.to_string())
                    })
                    .is_ok()
            })
        }));
    }

    let mut results: Vec<(&str, [Event; 2])> = Vec::new();
    let kinds = std::iter::repeat_n("failover", plan.failovers)
        .chain(std::iter::repeat_n("switchover", plan.switchovers));
    for (round, kind) in kinds.enumerate() {
        settle(&cluster)?;
        thread::sleep(Duration::from_secs(3));
        let leader = cluster.leader()?.context("no leader")?;
        let candidate = cluster
            .members()?
            .into_iter()
            .find(|m| m.is_running_replica())
            .context("no replica to switch over to")?;
        let at = Instant::now();
        if kind == "failover" {
            cluster.kill_node(&leader.name)?;
        } else {
            cluster.switchover(&candidate.name)?;
        }
        let new = cluster.wait_for_leader(Duration::from_secs(120), Some(&leader.name))?;
        let port = i32::from(cluster.node(&new.name)?.pg_port());
        let sides = [
            event(&ours, at, port).context("pgops never wrote to the new primary")?,
            event(&anchor, at, port).context("HAProxy never wrote to the new primary")?,
        ];
        eprintln!(
            "failover: {kind} {round} ({} -> {}): write gap pgops {:.2} s, HAProxy {:.2} s; reads served pgops {:.1}%, HAProxy {:.1}%",
            leader.name,
            new.name,
            sides[0].gap.as_secs_f64(),
            sides[1].gap.as_secs_f64(),
            sides[0].reads_served,
            sides[1].reads_served,
        );
        results.push((kind, sides));
        if kind == "failover" {
            cluster.start_node(&leader.name)?;
        }
        if cluster.rejoin(&leader.name)? {
            eprintln!(
                "failover: {} did not rejoin by itself (a failed rewind); rebuilt with Patroni's reinitialize",
                leader.name
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    drop(haproxy);

    let anchor_tool = format!(
        "the same pool through HAProxy 2.6 (option httpchk GET /primary, {HAPROXY_CHECKS}; reads via GET /replica), Patroni 3.0 ttl 20 loop_wait 2 retry_timeout 5"
    );
    let mut comparisons = Vec::new();
    for (kind, name) in [
        ("failover", "failover_write_gap_seconds"),
        ("switchover", "switchover_write_gap_seconds"),
    ] {
        let of = |side: usize, f: fn(&Event) -> f64| -> Vec<f64> {
            results
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, sides)| f(&sides[side]))
                .collect()
        };
        let gap = |e: &Event| e.gap.as_secs_f64();
        let served = |e: &Event| e.reads_served;
        if of(0, gap).is_empty() {
            continue;
        }
        comparisons.push(
            Comparison::from_rounds(name, "s", &of(0, gap), &of(1, gap), &anchor_tool, false)
                .target(1.0),
        );
        comparisons.push(Comparison::from_rounds(
            &format!("{kind}_reads_served_percent"),
            "%",
            &of(0, served),
            &of(1, served),
            &anchor_tool,
            true,
        ));
    }
    Ok(Report {
        suite: "failover".into(),
        comparisons,
        measurements: Vec::new(),
        machine: None,
        quick: false,
    })
}

/// What one side saw of one event.
#[derive(Debug, Clone, Copy)]
struct Event {
    gap: Duration,
    reads_served: f64,
}

/// Waits until the side has a write acknowledged by the server on `port` that began after
/// `at`; the longest pause between its acknowledged writes from the last one before `at`
/// until then, and the share of its reads that succeeded meanwhile.
fn event(side: &Side, at: Instant, port: i32) -> anyhow::Result<Event> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let acks = side.acks.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(end) = acks
            .iter()
            .find(|a| a.done > at && a.port == port)
            .map(|a| a.done)
        {
            let start = acks
                .iter()
                .filter(|a| a.done <= at)
                .map(|a| a.done)
                .max()
                .unwrap_or(at);
            let mut times: Vec<Instant> = acks
                .iter()
                .map(|a| a.done)
                .filter(|t| *t >= start && *t <= end)
                .collect();
            times.sort();
            let gap = times
                .windows(2)
                .map(|w| w[1] - w[0])
                .max()
                .unwrap_or_default();
            let reads = side.reads.lock().unwrap_or_else(|p| p.into_inner());
            let window: Vec<bool> = reads
                .iter()
                .filter(|(t, _)| *t >= at && *t <= end)
                .map(|(_, ok)| *ok)
                .collect();
            let served = if window.is_empty() {
                100.0
            } else {
                100.0 * window.iter().filter(|ok| **ok).count() as f64 / window.len() as f64
            };
            return Ok(Event {
                gap,
                reads_served: served,
            });
        }
        ensure!(Instant::now() < deadline, "no write reached port {port}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Writes until stopped, recording each acknowledged write; a failed one is tried again
/// after 10 ms, as a service's retry loop would.
fn writer(side: &Side, stop: &AtomicBool, mut write: impl FnMut() -> Result<i32, String>) {
    while !stop.load(Ordering::Relaxed) {
        match write() {
            Ok(port) => side
                .acks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Ack {
                    done: Instant::now(),
                    port,
                }),
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Reads until stopped, every 10 ms, recording each outcome.
fn reader(side: &Side, stop: &AtomicBool, mut read: impl FnMut() -> bool) {
    while !stop.load(Ordering::Relaxed) {
        let ok = read();
        side.reads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((Instant::now(), ok));
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the cluster is steady (see [`HaCluster::wait_until_settled`]).
fn settle(cluster: &HaCluster) -> anyhow::Result<()> {
    cluster.wait_until_settled(Duration::from_secs(300))?;
    Ok(())
}
