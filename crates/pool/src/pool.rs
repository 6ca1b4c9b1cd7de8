//! The pool: an r2d2 pool of diesel connections with a name, metrics, a `stats()` snapshot,
//! leak detection and a helper for async services.

use std::{
    cell::Cell,
    fmt,
    ops::{Deref, DerefMut},
    panic::Location,
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use diesel::PgConnection;
use serde::Serialize;

use crate::{
    Config, DatabaseUrl, Error, PoolSettings, Result,
    leak::{Registry, Slot},
    manager::{CloseReason, Manager, take_close_reason, watch},
    metrics::PoolMetrics,
    park::{KEEP, Parking, Taken},
};

/// A pool of PostgreSQL connections. Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

/// A checked-out connection; derefs to diesel's `PgConnection` and returns to the pool when
/// dropped.
pub struct PooledConnection {
    /// Present until dropped.
    conn: Option<r2d2::PooledConnection<Manager>>,
    /// When it was checked out of r2d2 (it may have been parked and taken back since).
    taken: Instant,
    inner: Arc<Inner>,
    slot: Option<Arc<Slot>>,
}

/// A point-in-time view of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Connections open (idle + in use).
    pub total: u32,
    /// Connections open and free.
    pub idle: u32,
    /// Connections checked out.
    pub in_use: u32,
    /// Callers waiting for a connection.
    pub waiting: u32,
    /// The pool's maximum size.
    pub max: u32,
}

struct Inner {
    name: String,
    pool: r2d2::Pool<Manager>,
    url: DatabaseUrl,
    settings: PoolSettings,
    metrics: PoolMetrics,
    waiting: AtomicU32,
    slots: Arc<Registry>,
    /// Connections returned while nobody waited, kept by the thread that returned them.
    parking: Parking,
    /// Whether a waiter is at the head of the line (see [`Pool::wait_in_line`]).
    head: Mutex<bool>,
    /// Set while the line has waited too long (the head has waited longer than [`STARVING`],
    /// until a head is served sooner): checkouts then queue behind it instead of taking a
    /// returned connection first.
    starving: AtomicBool,
    /// Where the rest of the line waits for the head to leave.
    line: Condvar,
}

struct Events {
    pool: String,
    metrics: PoolMetrics,
    max_lifetime: Option<Duration>,
}

struct Errors {
    pool: String,
}

impl Pool {
    /// The three-line setup: configuration from the environment and `pgops.toml`, then
    /// [`Pool::connect`].
    pub fn from_env() -> Result<Self> {
        Self::connect(&Config::load()?)
    }

    /// Opens the pool `primary` on the configured database; fails within the connection
    /// timeout, naming the redacted URL, when the server cannot be reached.
    pub fn connect(config: &Config) -> Result<Self> {
        Self::open(
            "primary",
            config.require_url()?.clone(),
            config.pool.clone(),
        )
    }

    /// Opens a named pool (the name labels its metrics and log lines) and checks, within the
    /// connection timeout, that the server can be reached.
    pub fn open(name: &str, url: DatabaseUrl, settings: PoolSettings) -> Result<Self> {
        let pool = Self::open_unchecked(name, url, settings);
        // Prove the server is reachable now rather than at the first request.
        match pool.get() {
            Ok(conn) => drop(conn),
            Err(Error::Timeout {
                last_error, waited, ..
            }) => {
                return Err(Error::Connect {
                    url: pool.inner.url.to_string(),
                    timeout: waited,
                    message: last_error.unwrap_or_else(|| "no connection could be opened".into()),
                });
            }
            Err(other) => return Err(other),
        }
        tracing::info!(pool = name, url = %pool.inner.url, max_size = pool.inner.settings.max_size, "pool ready");
        Ok(pool)
    }

    /// Opens a named pool without waiting for the server: connections are opened in the
    /// background and on demand. For servers that may be down when the service starts (a
    /// replica the router will ban until it answers).
    pub fn open_unchecked(name: &str, url: DatabaseUrl, settings: PoolSettings) -> Self {
        let metrics = PoolMetrics::new(name);
        let slots = Arc::new(Registry::default());
        let pool = r2d2::Pool::builder()
            .max_size(settings.max_size)
            .min_idle(Some(settings.min_idle))
            .idle_timeout(settings.idle_timeout)
            .max_lifetime(settings.max_lifetime)
            .connection_timeout(settings.connection_timeout)
            .test_on_check_out(true)
            .event_handler(Box::new(Events {
                pool: name.to_owned(),
                metrics: metrics.clone(),
                max_lifetime: settings.max_lifetime,
            }))
            .error_handler(Box::new(Errors {
                pool: name.to_owned(),
            }))
            .build_unchecked(Manager::new(url.clone(), &settings, slots.clone()));
        metrics.max.set(f64::from(settings.max_size));
        let inner = Arc::new(Inner {
            name: name.to_owned(),
            pool,
            url,
            settings,
            metrics,
            waiting: AtomicU32::new(0),
            slots,
            parking: Parking::new(),
            head: Mutex::new(false),
            starving: AtomicBool::new(false),
            line: Condvar::new(),
        });
        spawn_monitor(Arc::downgrade(&inner));
        Pool { inner }
    }

    /// Checks out a connection, waiting up to the connection timeout.
    #[track_caller]
    pub fn get(&self) -> Result<PooledConnection> {
        self.get_at(Location::caller(), self.inner.settings.connection_timeout)
    }

    /// Checks out a connection, waiting at most `timeout` (for callers with somewhere else to
    /// go, like a router with other replicas).
    #[track_caller]
    pub fn get_timeout(&self, timeout: Duration) -> Result<PooledConnection> {
        self.get_at(Location::caller(), timeout)
    }

    /// Checks out a connection, waiting up to the connection timeout while `keep_waiting`
    /// says so (asked every 50 ms): `Ok(None)` when it stopped wanting one first. For a
    /// router whose target may change under the wait (the primary of an HA cluster); only a
    /// wait that ran its full course counts as a checkout timeout.
    #[track_caller]
    pub fn get_while(&self, keep_waiting: impl Fn() -> bool) -> Result<Option<PooledConnection>> {
        self.get_while_at(Location::caller(), &keep_waiting)
    }

    /// Runs blocking diesel work on tokio's blocking pool, so an async service never blocks
    /// its runtime threads on the database.
    ///
    /// ```no_run
    /// # async fn demo(pool: pgops_pool::Pool) -> Result<(), pgops_pool::Error> {
    /// use diesel::{RunQueryDsl, dsl::sql, sql_types::Integer};
    /// let one: i32 = pool
    ///     .run(|conn| -> Result<i32, pgops_pool::Error> { Ok(diesel::select(sql::<Integer>("1")).get_result(conn)?) })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[track_caller]
    pub fn run<T, E, F>(&self, work: F) -> impl Future<Output = Result<T, E>> + Send + 'static
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let location = Location::caller();
        let pool = self.clone();
        async move {
            let joined = tokio::task::spawn_blocking(move || {
                let mut conn = pool.get_at(location, pool.inner.settings.connection_timeout)?;
                work(&mut conn)
            })
            .await;
            match joined {
                Ok(result) => result,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => Err(E::from(Error::Cancelled)),
            }
        }
    }

    /// A snapshot of the pool's state.
    pub fn stats(&self) -> PoolStats {
        let (total, idle) = self.inner.counts();
        PoolStats {
            total,
            idle,
            in_use: total - idle,
            waiting: self.inner.waiting.load(Ordering::Relaxed),
            max: self.inner.settings.max_size,
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &PoolSettings {
        &self.inner.settings
    }

    /// The database URL (prints redacted).
    pub fn url(&self) -> &DatabaseUrl {
        &self.inner.url
    }

    /// Checks out a connection taken out of its parking: no wait.
    fn checked_out_parked(
        &self,
        taken: Taken,
        location: &'static Location<'static>,
    ) -> PooledConnection {
        self.inner.metrics.wait.record(0.0);
        self.checked_out(unparked(taken), location)
    }

    /// Wraps a connection r2d2 handed out (now, or before it was parked): leak tracking and
    /// the in-use gauge.
    fn checked_out(
        &self,
        (mut conn, taken): Taken,
        location: &'static Location<'static>,
    ) -> PooledConnection {
        let inner = &self.inner;
        let slot = match inner.settings.leak_threshold {
            Some(_) => watch(&mut conn).map(|w| w.slot.clone()),
            None => None,
        };
        if let Some(slot) = &slot {
            slot.check_out(location);
        }
        inner.metrics.in_use.increment(1.0);
        PooledConnection {
            conn: Some(conn),
            taken,
            inner: inner.clone(),
            slot,
        }
    }

    fn get_at(
        &self,
        location: &'static Location<'static>,
        timeout: Duration,
    ) -> Result<PooledConnection> {
        // First the connection this thread returned last, if it is still parked with it (see
        // `park`); then a free one from r2d2 (unless the line has waited too long, see
        // `wait_in_line`: then a checkout queues behind it), or one another thread parked.
        // When there is none, yield the CPU a few times (a thread returning one usually runs
        // next) before waiting, since a sleeping thread's wake-up leaves the returned
        // connection idle until it is scheduled. A connection found at once or after a few
        // yields (microseconds) counts as no wait. A wait is timed: by r2d2 (its checkout and
        // timeout events) while connections are still being opened, here in line.
        let inner = &self.inner;
        let fresh = inner.settings.validate_after_idle;
        let spins = if inner.starving.load(Ordering::Relaxed) {
            0
        } else {
            if let Some(taken) = inner.parking.take_own(fresh) {
                return Ok(self.checked_out_parked(taken, location));
            }
            SPINS
        };
        for _ in 0..spins {
            if let Some(conn) = inner.pool.try_get() {
                inner.metrics.wait.record(0.0);
                return Ok(self.checked_out((conn, Instant::now()), location));
            }
            if let Some(taken) = inner.parking.steal(fresh) {
                return Ok(self.checked_out_parked(taken, location));
            }
            std::thread::yield_now();
        }
        self.count_waiting(1);
        // Counted as waiting first: from now on nobody parks, and what was parked before is
        // found here.
        if let Some(taken) = inner.parking.steal(fresh) {
            self.count_waiting(-1);
            return Ok(self.checked_out_parked(taken, location));
        }
        let result = if inner.pool.state().connections < inner.settings.max_size {
            // Not every connection is open yet: r2d2 opens more for its waiters, as many at
            // once as there are waiters, and records the wait. No line to wait behind.
            let result = inner.pool.get_timeout(timeout);
            inner.starving.store(false, Ordering::Relaxed);
            result
        } else {
            let started = Instant::now();
            RECORDS_WAIT.set(true);
            let result = self.wait_in_line(started, started + timeout);
            RECORDS_WAIT.set(false);
            inner.metrics.wait.record(started.elapsed().as_secs_f64());
            result
        };
        let waiting = self.count_waiting(-1);
        self.finish(result, location, timeout, waiting)
    }

    /// The wait for a connection when every one is open and in use. One waiter at a time,
    /// the head of the line, waits on r2d2's condition variable; the rest wait on the pool's
    /// own, and the next takes the head's place when it leaves. r2d2 wakes one of its waiters
    /// on every return, and the thread that returned a connection usually takes it back at
    /// once: with all the waiters parked in r2d2 (128 threads on a pool of 16), nearly every
    /// return woke a thread that found nothing and parked again, two context switches per
    /// query for nothing. In line, a return wakes at most the head.
    ///
    /// Taking a returned connection back first is what keeps the switches down, and what
    /// would keep the line waiting: once a waiter has waited [`STARVING`], checkouts queue
    /// behind the line until a head is served sooner than that (the starvation mode of Go's
    /// `sync.Mutex`).
    fn wait_in_line(
        &self,
        started: Instant,
        deadline: Instant,
    ) -> std::result::Result<r2d2::PooledConnection<Manager>, r2d2::Error> {
        let inner = &self.inner;
        let Some(_head) = Head::take(inner, deadline) else {
            // The deadline passed in line: one last try, or r2d2's timeout error (with the
            // last connection error it saw).
            return inner.pool.get_timeout(Duration::ZERO);
        };
        let left = || deadline.saturating_duration_since(Instant::now());
        if let Some(patience) = STARVING.checked_sub(started.elapsed())
            && let Ok(conn) = inner.pool.get_timeout(patience.min(left()))
        {
            inner.starving.store(false, Ordering::Relaxed);
            return Ok(conn);
        }
        inner.starving.store(true, Ordering::Relaxed);
        inner.pool.get_timeout(left())
    }

    /// [`Pool::get_while`]'s wait: in 50 ms slices, asking `keep_waiting` after each.
    fn get_while_at(
        &self,
        location: &'static Location<'static>,
        keep_waiting: &dyn Fn() -> bool,
    ) -> Result<Option<PooledConnection>> {
        let inner = &self.inner;
        let timeout = inner.settings.connection_timeout;
        self.count_waiting(1);
        if let Some(taken) = inner.parking.steal(inner.settings.validate_after_idle) {
            self.count_waiting(-1);
            return Ok(Some(self.checked_out_parked(taken, location)));
        }
        // r2d2 would report each slice as a wait of its own: the whole wait is recorded
        // here instead, once.
        let started = Instant::now();
        RECORDS_WAIT.set(true);
        let result = loop {
            let left = timeout.saturating_sub(started.elapsed());
            let slice = left.min(Duration::from_millis(50));
            match inner.pool.get_timeout(slice) {
                Ok(conn) => break Some(Ok(conn)),
                Err(e) if slice == left => break Some(Err(e)),
                Err(_) if !keep_waiting() => break None,
                Err(_) => {}
            }
        };
        RECORDS_WAIT.set(false);
        let waiting = self.count_waiting(-1);
        let Some(result) = result else {
            return Ok(None);
        };
        inner.metrics.wait.record(started.elapsed().as_secs_f64());
        self.finish(result, location, timeout, waiting).map(Some)
    }

    /// Counts a caller in or out of the wait; how many wait now.
    fn count_waiting(&self, delta: i32) -> u32 {
        let inner = &self.inner;
        // Sequentially consistent with a return's park and its look at `waiting` after it:
        // either the waiter finds the parked connection, or the return sees the waiter and
        // hands the connection to r2d2 (see `Inner::give_back`).
        let waiting = if delta > 0 {
            inner.waiting.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            inner.waiting.fetch_sub(1, Ordering::SeqCst) - 1
        };
        inner.metrics.waiting.set(f64::from(waiting));
        waiting
    }

    /// The end of a checkout: the connection, or the timeout error with the pool's state.
    fn finish(
        &self,
        result: std::result::Result<r2d2::PooledConnection<Manager>, r2d2::Error>,
        location: &'static Location<'static>,
        timeout: Duration,
        waiting: u32,
    ) -> Result<PooledConnection> {
        let inner = &self.inner;
        match result {
            Ok(conn) => Ok(self.checked_out((conn, Instant::now()), location)),
            Err(e) => {
                inner.metrics.timeouts.increment(1);
                let (total, idle) = inner.counts();
                let last_error = e.to_string();
                let last_error = last_error
                    .strip_prefix("timed out waiting for connection")
                    .map(|rest| rest.trim_start_matches(':').trim())
                    .filter(|rest| !rest.is_empty())
                    .map(|rest| inner.url.scrub(rest));
                let waited = timeout;
                tracing::warn!(pool = %inner.name, waited_ms = waited.as_millis() as u64, "connection checkout timed out");
                Err(Error::Timeout {
                    pool: inner.name.clone(),
                    waited,
                    in_use: total - idle,
                    max: inner.settings.max_size,
                    waiting,
                    last_error,
                })
            }
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.inner.name)
            .field("url", &self.inner.url)
            .field("stats", &self.stats())
            .finish()
    }
}

impl PooledConnection {
    /// Whether a query on this connection failed at the connection level (the server went
    /// away) or left its transaction state broken: the pool will discard it, and a caller
    /// may retry the work elsewhere.
    pub fn is_broken(&mut self) -> bool {
        use diesel::r2d2::R2D2Connection;
        R2D2Connection::is_broken(&mut **self) || watch(self).is_some_and(|w| w.is_broken())
    }

    /// Whether a statement on this connection was refused as read-only (SQLSTATE 25006): its
    /// server is a standby now (or the session was set read-only). The pool discards it.
    pub fn refused_as_read_only(&mut self) -> bool {
        watch(self).is_some_and(|w| w.refused_as_read_only())
    }

    /// Closes the connection when it returns to the pool instead of keeping it: for one whose
    /// server turned out to be the wrong one (a primary demoted to a standby, say).
    pub fn discard(&mut self) {
        if let Some(watch) = watch(self) {
            watch.discard();
        }
    }
}

impl Deref for PooledConnection {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn
            .as_ref()
            .expect("a checked-out connection is present until dropped")
    }
}

impl DerefMut for PooledConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .expect("a checked-out connection is present until dropped")
    }
}

impl fmt::Debug for PooledConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConnection")
            .field("pool", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        self.inner.metrics.in_use.decrement(1.0);
        if let Some((held, location)) = self.slot.as_ref().and_then(|slot| slot.check_in()) {
            tracing::warn!(
                pool = %self.inner.name,
                held_ms = held.as_millis() as u64,
                checked_out_at = %location,
                "connection reported as leaked was returned"
            );
        }
        if let Some(conn) = self.conn.take() {
            self.inner.give_back((conn, self.taken));
        }
    }
}

impl Inner {
    /// Connections open and, of those, free (in r2d2's list or parked).
    fn counts(&self) -> (u32, u32) {
        let state = self.pool.state();
        let idle = state.idle_connections + self.parking.count();
        (state.connections, idle.min(state.connections))
    }

    /// A returned connection: parked with this thread for its next checkout while nobody
    /// waits, else back to r2d2 (which closes it if it is broken).
    fn give_back(&self, (mut conn, taken): Taken) {
        let park = !self.settings.validate_after_idle.is_zero()
            && self.waiting.load(Ordering::SeqCst) == 0
            && taken.elapsed() < KEEP
            && !std::thread::panicking()
            && !diesel::r2d2::R2D2Connection::is_broken(&mut *conn)
            && watch(&mut conn).is_some_and(|w| {
                // Marked parked only when it will be: a return that does not park leaves
                // the instrumentation alone.
                let fine = !w.is_broken();
                if fine {
                    w.park();
                }
                fine
            });
        if !park {
            return drop(conn);
        }
        if let Some(refused) = self.parking.park((conn, taken)) {
            return drop(unparked(refused).0);
        }
        // A checkout began to wait meanwhile and may have missed it (see `count_waiting`).
        if self.waiting.load(Ordering::SeqCst) > 0
            && let Some(taken) = self.parking.take_own(Duration::MAX)
        {
            drop(unparked(taken).0);
        }
    }
}

/// A connection taken out of its parking: its next return counts as a use again.
fn unparked((mut conn, taken): Taken) -> Taken {
    if let Some(w) = watch(&mut conn) {
        w.unpark();
    }
    (conn, taken)
}

/// How long a connection stays parked with a thread that stopped asking before the monitor
/// returns it to r2d2.
const PARKED_IDLE: Duration = Duration::from_secs(1);

/// How many times a checkout that finds no free connection yields before it waits.
const SPINS: usize = 4;

/// How long a waiter competes with the checkouts that arrive before they queue behind it
/// (see [`Pool::wait_in_line`]).
const STARVING: Duration = Duration::from_millis(10);

/// The head of a pool's line of waiters, while it holds the place; leaving wakes the next.
struct Head<'a> {
    inner: &'a Inner,
}

impl<'a> Head<'a> {
    /// Waits in line until the head's place is free and takes it; `None` when the deadline
    /// passes first.
    fn take(inner: &'a Inner, deadline: Instant) -> Option<Head<'a>> {
        let mut taken = lock(&inner.head);
        while *taken {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            taken = inner
                .line
                .wait_timeout(taken, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *taken = true;
        Some(Head { inner })
    }
}

impl Drop for Head<'_> {
    fn drop(&mut self) {
        *lock(&self.inner.head) = false;
        self.inner.line.notify_one();
    }
}

/// Locks `mutex`; a panic elsewhere while it was held leaves a plain flag, still valid.
fn lock(mutex: &Mutex<bool>) -> MutexGuard<'_, bool> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

thread_local! {
    // Set while a checkout on this thread records its whole wait itself (`get_while`'s
    // slices, a wait in line): r2d2 reports its events in the caller's thread, and would
    // record each of its own waits, or none.
    static RECORDS_WAIT: Cell<bool> = const { Cell::new(false) };
}

impl r2d2::HandleEvent for Events {
    fn handle_checkout(&self, event: r2d2::event::CheckoutEvent) {
        if !RECORDS_WAIT.get() {
            self.metrics.wait.record(event.duration().as_secs_f64());
        }
    }

    fn handle_timeout(&self, event: r2d2::event::TimeoutEvent) {
        if !RECORDS_WAIT.get() {
            self.metrics.wait.record(event.timeout().as_secs_f64());
        }
    }

    fn handle_acquire(&self, event: r2d2::event::AcquireEvent) {
        self.metrics.opened.increment(1);
        tracing::debug!(pool = %self.pool, connection = event.connection_id(), "connection opened");
    }

    fn handle_release(&self, event: r2d2::event::ReleaseEvent) {
        let reason = match take_close_reason() {
            Some(CloseReason::Broken) => "broken",
            Some(CloseReason::ValidationFailed) => "validation_failed",
            None if self.max_lifetime.is_some_and(|max| event.age() >= max) => "max_lifetime",
            None => "idle_timeout",
        };
        self.metrics.closed(reason);
        let age_ms = event.age().as_millis() as u64;
        if matches!(reason, "broken" | "validation_failed") {
            tracing::warn!(pool = %self.pool, connection = event.connection_id(), reason, age_ms, "connection closed");
        } else {
            tracing::debug!(pool = %self.pool, connection = event.connection_id(), reason, age_ms, "connection closed");
        }
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl r2d2::HandleError<crate::manager::ManagerError> for Errors {
    fn handle_error(&self, error: crate::manager::ManagerError) {
        // The manager's messages are already scrubbed of the password.
        tracing::warn!(pool = %self.pool, error = %error, "cannot open or reuse a connection");
    }
}

impl fmt::Debug for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Errors").field("pool", &self.pool).finish()
    }
}

/// Refreshes the idle/in-use gauges and reports connections held past the leak threshold,
/// once each, with where they were checked out. Ends when the pool is dropped.
fn spawn_monitor(inner: Weak<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("pgops-pool-monitor".into())
        .spawn(move || {
            loop {
                let interval = {
                    let Some(inner) = inner.upgrade() else { return };
                    inner.parking.release_idle(PARKED_IDLE);
                    let (total, idle) = inner.counts();
                    inner.metrics.idle.set(f64::from(idle));
                    inner.metrics.in_use.set(f64::from(total - idle));
                    match inner.settings.leak_threshold {
                        Some(threshold) => {
                            report_leaks(&inner, threshold);
                            (threshold / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
                        }
                        None => Duration::from_secs(1),
                    }
                };
                std::thread::sleep(interval);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the pool monitor thread; leak detection is off");
    }
}

fn report_leaks(inner: &Inner, threshold: Duration) {
    for leak in inner.slots.new_leaks(threshold) {
        inner.metrics.leaks.increment(1);
        tracing::warn!(
            pool = %inner.name,
            held_ms = leak.held.as_millis() as u64,
            threshold_ms = threshold.as_millis() as u64,
            checked_out_at = %leak.location,
            thread = %leak.thread,
            "connection held longer than the leak threshold"
        );
    }
}
