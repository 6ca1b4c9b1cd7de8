//! The pools a Rust team would pick instead of pgops's, for the pool suite: sqlx's `PgPool`
//! and `deadpool-postgres` over tokio-postgres, each with its recommended settings and
//! prepared statements, running the same primary-key lookup from the same number of clients
//! (tasks on a two-thread tokio runtime, as an async service runs them) with a pool of the
//! same size.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::workload::XorShift;

/// The lookup every side runs.
const LOOKUP: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";

/// Both peers' pools, open on one runtime.
#[derive(Debug)]
pub struct Peers {
    runtime: tokio::runtime::Runtime,
    sqlx: sqlx::PgPool,
    deadpool: deadpool_postgres::Pool,
}

impl Peers {
    /// Opens both pools with `size` connections each on `url` (no password, no TLS: the
    /// test cluster's).
    pub fn open(url: &str, size: u32) -> anyhow::Result<Peers> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let sqlx = runtime
            .block_on(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(size)
                    .min_connections(size)
                    .connect(url),
            )
            .context("opening the sqlx pool")?;
        let mut config = deadpool_postgres::Config::new();
        config.url = Some(url.to_owned());
        config.manager = Some(deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        });
        config.pool = Some(deadpool_postgres::PoolConfig::new(size as usize));
        let deadpool = {
            let _guard = runtime.enter();
            config
                .create_pool(
                    Some(deadpool_postgres::Runtime::Tokio1),
                    tokio_postgres::NoTls,
                )
                .context("creating the deadpool-postgres pool")?
        };
        // Open every connection before measuring, as the other sides' pools do.
        runtime.block_on(async {
            let mut held = Vec::new();
            for _ in 0..size {
                held.push(deadpool.get().await?);
            }
            anyhow::Ok(())
        })?;
        Ok(Peers {
            runtime,
            sqlx,
            deadpool,
        })
    }

    /// Lookups per second through sqlx's pool: `clients` tasks, each acquiring a connection
    /// for every lookup, for `seconds`.
    pub fn sqlx(&self, clients: u32, seconds: u64, accounts: i32) -> anyhow::Result<f64> {
        let pool = self.sqlx.clone();
        self.run(clients, seconds, accounts, move |key| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i32>(LOOKUP)
                    .bind(key)
                    .fetch_one(&pool)
                    .await?;
                anyhow::Ok(())
            }
        })
    }

    /// Lookups per second through deadpool-postgres: a client from the pool and its cached
    /// prepared statement for every lookup.
    pub fn deadpool(&self, clients: u32, seconds: u64, accounts: i32) -> anyhow::Result<f64> {
        let pool = self.deadpool.clone();
        self.run(clients, seconds, accounts, move |key| {
            let pool = pool.clone();
            async move {
                let client = pool.get().await?;
                let statement = client.prepare_cached(LOOKUP).await?;
                let _balance: i32 = client.query_one(&statement, &[&key]).await?.get(0);
                anyhow::Ok(())
            }
        })
    }

    /// Runs `clients` tasks for `seconds`, each calling `lookup` on its own random keys;
    /// lookups per second.
    fn run<F, Fut>(
        &self,
        clients: u32,
        seconds: u64,
        accounts: i32,
        lookup: F,
    ) -> anyhow::Result<f64>
    where
        F: Fn(i32) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send,
    {
        let lookup = Arc::new(lookup);
        self.runtime.block_on(async move {
            let barrier = Arc::new(tokio::sync::Barrier::new(clients as usize));
            let mut tasks = tokio::task::JoinSet::new();
            for client in 0..clients {
                let (lookup, barrier) = (lookup.clone(), barrier.clone());
                tasks.spawn(async move {
                    let mut rng = XorShift::for_client(client);
                    barrier.wait().await;
                    let started = Instant::now();
                    let deadline = started + Duration::from_secs(seconds);
                    let mut done = 0u64;
                    while Instant::now() < deadline {
                        lookup(1 + (rng.next() % accounts as u64) as i32).await?;
                        done += 1;
                    }
                    anyhow::Ok((done, started.elapsed()))
                });
            }
            let (mut total, mut longest) = (0u64, Duration::ZERO);
            while let Some(joined) = tasks.join_next().await {
                let (done, elapsed) = joined.context("a client task panicked")??;
                total += done;
                longest = longest.max(elapsed);
            }
            Ok(total as f64 / longest.as_secs_f64())
        })
    }
}
