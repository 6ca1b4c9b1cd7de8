//! The shared workload: random primary-key lookups on `pgbench_accounts` from a number of
//! client threads for a fixed time.

use std::{
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use diesel::{ExpressionMethods, PgConnection, QueryDsl, RunQueryDsl};
use pgops_testkit::{Cluster, ClusterOptions, SUPERUSER};

diesel::table! {
    /// pgbench's accounts table, as `pgbench -i` creates it.
    pgbench_accounts (aid) {
        /// The account id.
        aid -> Int4,
        /// The branch.
        bid -> Int4,
        /// The balance.
        abalance -> Int4,
        /// Padding.
        filler -> Nullable<Bpchar>,
    }
}

/// How big and how long a lookup suite runs.
#[derive(Debug, Clone, Copy)]
pub struct LookupPlan {
    /// `pgbench -i -s` scale (100,000 accounts each).
    pub scale: u32,
    /// Concurrent clients on both sides (suites measured at one client count).
    pub clients: u32,
    /// The client counts of the suites measured at several (pool, router), each on a pool
    /// of [`LookupPlan::pool_size`] connections.
    pub client_counts: &'static [u32],
    /// The pool's size in the suites measured at several client counts.
    pub pool_size: u32,
    /// Seconds per measurement.
    pub seconds: u64,
    /// Rounds per side (medians are reported).
    pub rounds: usize,
}

impl LookupPlan {
    /// The full plan, or a short one for `--quick`.
    pub fn new(quick: bool) -> Self {
        if quick {
            LookupPlan {
                scale: 2,
                clients: 8,
                client_counts: &[8],
                pool_size: 16,
                seconds: 2,
                rounds: 3,
            }
        } else {
            LookupPlan {
                scale: 10,
                clients: 8,
                client_counts: &[8, 32, 128],
                pool_size: 16,
                seconds: 3,
                rounds: 5,
            }
        }
    }

    /// Accounts in `pgbench_accounts`.
    pub fn accounts(&self) -> anyhow::Result<i32> {
        Ok(i32::try_from(self.scale * 100_000)?)
    }
}

/// A fresh cluster (`max_connections` 400: 128 pgbench clients beside every pool the suite
/// keeps open) with `pgbench -i -s <scale>`, vacuumed and analyzed:
/// what the lookup suites measure on.
pub fn lookup_cluster(plan: LookupPlan) -> anyhow::Result<Cluster> {
    let cluster = Cluster::start(ClusterOptions::default().setting("max_connections", "400"))
        .context("starting a cluster")?;
    eprintln!("pgbench -i -s {} ...", plan.scale);
    pgbench(
        &cluster,
        "postgres",
        &["-i", "-q", "-s", &plan.scale.to_string()],
    )?;
    cluster.execute("postgres", "VACUUM ANALYZE")?;
    Ok(cluster)
}

/// Runs the cluster's `pgbench` against its database `db` with `args`; returns its output.
pub fn pgbench(cluster: &Cluster, db: &str, args: &[&str]) -> anyhow::Result<String> {
    pgbench_at(cluster, cluster.port(), None, db, args)
}

/// Runs the cluster's `pgbench` against `db` on 127.0.0.1:`port` (the cluster, or a pooler in
/// front of it), with `password` through `PGPASSWORD` when given; returns its output.
pub fn pgbench_at(
    cluster: &Cluster,
    port: u16,
    password: Option<&str>,
    db: &str,
    args: &[&str],
) -> anyhow::Result<String> {
    let program = cluster.binaries().program("pgbench");
    let mut cmd = std::process::Command::new(&program);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", SUPERUSER])
        .args(args)
        .arg(db);
    if let Some(password) = password {
        cmd.env("PGPASSWORD", password);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "pgbench {} on port {port} failed: {stdout}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// One client's way of looking up one key.
pub type Lookup = Box<dyn FnMut(i32) -> anyhow::Result<()> + Send>;

/// `SELECT abalance FROM pgbench_accounts WHERE aid = $1` through diesel (prepared and cached
/// per connection, like `pgbench -M prepared`).
pub fn balance(conn: &mut PgConnection, key: i32) -> diesel::QueryResult<i32> {
    use self::pgbench_accounts::dsl::{abalance, aid, pgbench_accounts as accounts};
    accounts
        .select(abalance)
        .filter(aid.eq(key))
        .get_result(conn)
}

/// Runs `clients` threads for `seconds`, each with its own lookup from `make` (called in the
/// thread), on random keys in `1..=accounts`; returns lookups per second.
pub fn pk_lookups(
    clients: u32,
    seconds: u64,
    accounts: i32,
    make: impl Fn() -> anyhow::Result<Lookup> + Send + Sync + 'static,
) -> anyhow::Result<f64> {
    let make = Arc::new(make);
    let barrier = Arc::new(Barrier::new(clients as usize));
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let (make, barrier) = (make.clone(), barrier.clone());
            std::thread::spawn(move || -> anyhow::Result<(u64, Duration)> {
                let mut rng = XorShift::for_client(client);
                let made = make();
                barrier.wait();
                let mut lookup = made?;
                let started = Instant::now();
                let deadline = started + Duration::from_secs(seconds);
                let mut done = 0u64;
                while Instant::now() < deadline {
                    lookup(1 + (rng.next() % accounts as u64) as i32)?;
                    done += 1;
                }
                Ok((done, started.elapsed()))
            })
        })
        .collect();
    let mut total = 0u64;
    let mut longest = Duration::ZERO;
    for thread in threads {
        let (done, elapsed) = thread
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        total += done;
        longest = longest.max(elapsed);
    }
    Ok(total as f64 / longest.as_secs_f64())
}

/// [`pk_lookups`] from `clients` threads checking a connection out of `pool` for every
/// lookup, as a service does.
pub fn pk_lookups_via_pool(
    pool: &pgops_pool::Pool,
    clients: u32,
    seconds: u64,
    accounts: i32,
) -> anyhow::Result<f64> {
    let pool = pool.clone();
    pk_lookups(clients, seconds, accounts, move || {
        let pool = pool.clone();
        Ok(Box::new(move |key| {
            balance(&mut *pool.get()?, key)?;
            Ok(())
        }) as Lookup)
    })
}

/// A tiny deterministic generator for keys (the same sequence in every run).
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    /// The generator of client number `client`: each client its own sequence.
    pub(crate) fn for_client(client: u32) -> Self {
        XorShift(0x9E37_79B9_7F4A_7C15 ^ ((u64::from(client) + 1) * 0x2545_F491_4F6C_DD1D))
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
