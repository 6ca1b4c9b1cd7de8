//! Leak detection without a shared lock on the checkout path: every connection owns a slot
//! (kept in diesel's per-connection instrumentation) that records when and where it was
//! checked out; the pool's monitor thread scans the slots and reports a connection held past
//! the threshold, once.

use std::{
    panic::Location,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    thread::Thread,
    time::{Duration, Instant},
};

/// The slots of one pool's connections. Locked only when a connection opens and by the monitor.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    slots: Mutex<Vec<Weak<Slot>>>,
}

/// One connection's checkout record. Its lock is taken by the connection's current user and,
/// rarely, the monitor: uncontended in practice.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    held: Mutex<Option<Held>>,
}

#[derive(Debug)]
struct Held {
    since: Instant,
    location: &'static Location<'static>,
    thread: Thread,
    reported: bool,
}

/// A connection held past the threshold.
#[derive(Debug)]
pub(crate) struct Leak {
    pub(crate) held: Duration,
    pub(crate) location: &'static Location<'static>,
    pub(crate) thread: String,
}

impl Registry {
    /// A slot for a new connection.
    pub(crate) fn register(&self) -> Arc<Slot> {
        let slot = Arc::new(Slot::default());
        let mut slots = lock(&self.slots);
        slots.retain(|s| s.strong_count() > 0);
        slots.push(Arc::downgrade(&slot));
        slot
    }

    /// Connections held at least `threshold` and not reported before; marks them reported.
    pub(crate) fn new_leaks(&self, threshold: Duration) -> Vec<Leak> {
        let slots: Vec<Arc<Slot>> = lock(&self.slots).iter().filter_map(Weak::upgrade).collect();
        let mut leaks = Vec::new();
        for slot in slots {
            if let Some(held) = lock(&slot.held).as_mut()
                && !held.reported
                && held.since.elapsed() >= threshold
            {
                held.reported = true;
                leaks.push(Leak {
                    held: held.since.elapsed(),
                    location: held.location,
                    thread: held.thread.name().unwrap_or("unnamed").to_owned(),
                });
            }
        }
        leaks
    }
}

impl Slot {
    /// Records a checkout at `location` by the current thread.
    pub(crate) fn check_out(&self, location: &'static Location<'static>) {
        *lock(&self.held) = Some(Held {
            since: Instant::now(),
            location,
            thread: std::thread::current(),
            reported: false,
        });
    }

    /// Clears the record; returns how long it was held and where it was taken if it had been
    /// reported as a leak.
    pub(crate) fn check_in(&self) -> Option<(Duration, &'static Location<'static>)> {
        lock(&self.held)
            .take()
            .filter(|held| held.reported)
            .map(|held| (held.since.elapsed(), held.location))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
