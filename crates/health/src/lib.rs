//! One Prometheus endpoint for the database, the pools, the replicas and (with backups) the
//! backup repository: postgres_exporter's metric names where the quantity is the same, ours
//! under `pgops_`, every collector under its own `statement_timeout` and the whole scrape
//! under a deadline.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use pgops_health::{Exporter, Options, install_recorder, server};
//! use pgops_pg::DatabaseUrl;
//!
//! let facade = install_recorder()?; // before opening pools: their metrics go through it
//! let primary = DatabaseUrl::parse("postgres://monitor@db:5432/app")?;
//! let exporter = Arc::new(Exporter::new(primary, vec![], Options::default(), Some(facade))?);
//! server::serve("127.0.0.1:9187".parse()?, exporter, None, std::future::pending()).await?;
//! # Ok(()) }
//! ```

pub mod collectors;
mod error;
mod exporter;
pub mod pgbouncer;
pub mod server;
pub mod snapshot;
pub mod text;

pub use error::{Error, Result};
pub use exporter::{
    Collector, Exporter, Options, Readiness, Scrape, ServerState, install_recorder,
};
pub use snapshot::{Snapshot, snapshot};
