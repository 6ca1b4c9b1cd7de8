//! Connection pools for diesel `PgConnection`s, tuned per environment.
//!
//! A service adds it in three lines:
//!
//! ```no_run
//! # fn main() -> Result<(), pgops_pool::Error> {
//! let pool = pgops_pool::Pool::from_env()?; // PGOPS_ENV, DATABASE_URL, pgops.toml, PGOPS_POOL_*
//! let mut conn = pool.get()?;              // derefs to diesel::PgConnection
//! # Ok(()) }
//! ```
//!
//! Profiles per environment ([`Environment::profile`]) give sizes and timeouts; `pgops.toml`
//! overrides them and environment variables override both. Every new session gets
//! `statement_timeout`, `lock_timeout`, `idle_in_transaction_session_timeout` and
//! `application_name`. Numbers go to the `metrics` facade ([`metrics::names`]), events to
//! `tracing`; connections held past the leak threshold are reported with where they were
//! checked out. A connection returned while nobody waits stays with the thread that returned
//! it, for that thread's next checkout.

mod config;
mod error;
mod leak;
mod manager;
pub mod metrics;
mod park;
mod pool;

pub use config::{
    Config, Environment, KEYS, PoolSettings, Pooler, ROUTER_KEYS, RouterSettings, Source,
    describe as describe_key,
};
pub use error::{Error, Result};
pub use manager::session_sql;
pub use pgops_pg::DatabaseUrl;
pub use pool::{Pool, PoolStats, PooledConnection};
