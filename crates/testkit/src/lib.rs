//! Ephemeral PostgreSQL clusters for tests, benchmarks and local stacks: a primary, streaming
//! replicas, WAL archiving, fault injection, and one shared cluster per test binary with
//! template databases cloned per test.
//!
//! ```no_run
//! use pgops_testkit::{Cluster, ClusterOptions};
//! use std::time::Duration;
//!
//! let primary = Cluster::start(ClusterOptions::default()).unwrap();
//! let replica = primary.create_replica().unwrap();
//! primary.execute("postgres", "CREATE TABLE t (id int); INSERT INTO t VALUES (1)").unwrap();
//! replica.catch_up(&primary, Duration::from_secs(10)).unwrap();
//! // both are stopped and their directories removed when dropped
//! ```

mod basebackup;
mod browser;
mod cluster;
mod config;
mod error;
mod haproxy;
mod options;
mod patroni;
mod pgbouncer;
mod process;
mod prometheus;
mod reachable;
mod replica;
mod s3;
mod shared;
mod tls;

pub use browser::{Browser, ConsoleEntry};
pub use cluster::{Cluster, SUPERUSER};
pub use error::{Error, Result};
pub use haproxy::{HAPROXY_CHECKS, HaProxy};
pub use options::{Archive, ClusterOptions, WalLevel};
pub use patroni::{HaCluster, HaOptions, Member, Node, TTL};
pub use pgbouncer::{PgBouncer, PgBouncerOptions, PoolMode};
pub use pgops_pg::{Lsn, PgBinaries, quote_ident};
pub use prometheus::{Alert, Prometheus};
pub use reachable::server_can_run;
pub use replica::Replica;
pub use s3::S3Server;
pub use shared::{InitResult, Template, TestDatabase, shared};
pub use tls::TlsFiles;
