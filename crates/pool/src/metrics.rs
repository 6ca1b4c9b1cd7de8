//! The pool's metrics, recorded through the `metrics` facade (the service or `pgops-health`
//! installs the exporter). Handles are registered once per pool, so the checkout path does no
//! key building.

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

/// Metric names, for dashboards and docs.
pub mod names {
    /// Counter: connections opened.
    pub const OPENED: &str = "pgops_pool_connections_opened_total";
    /// Counter: connections closed, label `reason` (broken, validation_failed, idle_timeout, max_lifetime, pool_closed).
    pub const CLOSED: &str = "pgops_pool_connections_closed_total";
    /// Histogram: seconds a checkout waited, including waits that timed out.
    pub const WAIT: &str = "pgops_pool_checkout_wait_seconds";
    /// Counter: checkouts that timed out.
    pub const TIMEOUTS: &str = "pgops_pool_checkout_timeouts_total";
    /// Gauge: connections checked out.
    pub const IN_USE: &str = "pgops_pool_connections_in_use";
    /// Gauge: connections open and idle.
    pub const IDLE: &str = "pgops_pool_connections_idle";
    /// Gauge: the pool's maximum size.
    pub const MAX: &str = "pgops_pool_connections_max";
    /// Gauge: callers waiting for a connection.
    pub const WAITING: &str = "pgops_pool_waiting";
    /// Counter: connections held longer than the leak threshold.
    pub const LEAKS: &str = "pgops_pool_connection_leaks_total";
}

/// Registered handles of one pool (label `pool`).
#[derive(Debug, Clone)]
pub(crate) struct PoolMetrics {
    pub(crate) opened: Counter,
    pub(crate) wait: Histogram,
    pub(crate) timeouts: Counter,
    pub(crate) in_use: Gauge,
    pub(crate) idle: Gauge,
    pub(crate) max: Gauge,
    pub(crate) waiting: Gauge,
    pub(crate) leaks: Counter,
    name: String,
}

impl PoolMetrics {
    pub(crate) fn new(pool: &str) -> Self {
        let label = || [("pool", pool.to_owned())];
        PoolMetrics {
            opened: counter!(names::OPENED, &label()),
            wait: histogram!(names::WAIT, &label()),
            timeouts: counter!(names::TIMEOUTS, &label()),
            in_use: gauge!(names::IN_USE, &label()),
            idle: gauge!(names::IDLE, &label()),
            max: gauge!(names::MAX, &label()),
            waiting: gauge!(names::WAITING, &label()),
            leaks: counter!(names::LEAKS, &label()),
            name: pool.to_owned(),
        }
    }

    /// Counts a closed connection; reasons are few, so the handle is looked up when it happens.
    pub(crate) fn closed(&self, reason: &'static str) {
        counter!(names::CLOSED, "pool" => self.name.clone(), "reason" => reason).increment(1);
    }
}
