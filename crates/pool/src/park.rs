//! Thread affinity: a connection returned while nobody waits stays with the thread that
//! returned it, parked in that thread's slot, and is that thread's next checkout. Measured on
//! two cores with 8 client threads on a pool of 16: a connection that moves to another thread
//! on every query costs about a fifth of the throughput (its buffers and its socket go cold
//! on the other core, and its server process is woken from there), and r2d2's last-in,
//! first-out list hands a thread another thread's connection whenever their returns
//! interleave. A parked connection is never lost to others: a checkout that finds r2d2 empty
//! takes any parked one, and nobody parks while a checkout waits.

use std::{
    cell::RefCell,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::manager::Manager;

/// A connection checked out of r2d2, and when it was.
pub(crate) type Taken = (r2d2::PooledConnection<Manager>, Instant);

/// How long a connection may go from thread to parked and back before it returns to r2d2
/// once: r2d2's reaper (idle timeout, max lifetime) and `stats()` see every connection at
/// least that often.
pub(crate) const KEEP: Duration = Duration::from_secs(1);

/// One pool's parked connections.
#[derive(Debug)]
pub(crate) struct Parking {
    /// Tells this pool's slots from other pools' in a thread's list.
    id: u64,
    /// Every thread's slot for this pool; locked when a thread first parks, and to find a
    /// parked connection for a checkout that found r2d2 empty.
    slots: Mutex<Vec<Weak<Slot>>>,
    /// Connections parked now.
    count: Arc<AtomicU32>,
}

/// One thread's parked connection of one pool. Its lock is taken by its thread and, when a
/// checkout finds r2d2 empty or the monitor releases it, by another: uncontended in practice.
struct Slot {
    parked: Mutex<Option<Parked>>,
    count: Arc<AtomicU32>,
    /// Set when the pool is dropped: the thread's list forgets the slot.
    closed: AtomicBool,
}

struct Parked {
    taken: Taken,
    since: Instant,
}

thread_local! {
    // This thread's slots, one per pool it has parked a connection in. The thread owns them:
    // when it exits, its parked connections return to r2d2.
    static SLOTS: RefCell<Vec<(u64, Arc<Slot>)>> = const { RefCell::new(Vec::new()) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl Parking {
    pub(crate) fn new() -> Self {
        Parking {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            slots: Mutex::default(),
            count: Arc::default(),
        }
    }

    /// Connections parked now.
    pub(crate) fn count(&self) -> u32 {
        self.count.load(Ordering::SeqCst)
    }

    /// The connection this thread parked, if it has one parked for less than `fresh` (an
    /// older one returns to r2d2, whose checkout checks it first).
    pub(crate) fn take_own(&self, fresh: Duration) -> Option<Taken> {
        SLOTS
            .try_with(|slots| {
                let slots = slots.try_borrow().ok()?;
                let (_, slot) = slots.iter().find(|(id, _)| *id == self.id)?;
                slot.take(fresh)
            })
            .ok()
            .flatten()
    }

    /// Parks `taken` in this thread's slot; gives it back when the slot is full (the thread
    /// holds two connections of the pool) or the thread is exiting.
    pub(crate) fn park(&self, taken: Taken) -> Option<Taken> {
        let Some(slot) = self.own_slot() else {
            return Some(taken);
        };
        let mut parked = lock(&slot.parked);
        if parked.is_some() {
            return Some(taken);
        }
        *parked = Some(Parked {
            taken,
            since: Instant::now(),
        });
        // Counted once it can be taken: a checkout that sees the count finds the slot free.
        drop(parked);
        self.count.fetch_add(1, Ordering::SeqCst);
        None
    }

    /// Any thread's parked connection parked for less than `fresh` (older ones found on the
    /// way return to r2d2); for a checkout that found r2d2 empty.
    pub(crate) fn steal(&self, fresh: Duration) -> Option<Taken> {
        if self.count() == 0 {
            return None;
        }
        let slots: Vec<Arc<Slot>> = lock(&self.slots).iter().filter_map(Weak::upgrade).collect();
        slots.iter().find_map(|slot| slot.take(fresh))
    }

    /// Returns to r2d2 the connections parked at least `idle` (threads that stopped asking).
    pub(crate) fn release_idle(&self, idle: Duration) {
        if self.count() == 0 {
            return;
        }
        let slots: Vec<Arc<Slot>> = lock(&self.slots).iter().filter_map(Weak::upgrade).collect();
        for slot in slots {
            if let Ok(mut parked) = slot.parked.try_lock()
                && parked.as_ref().is_some_and(|p| p.since.elapsed() >= idle)
            {
                let released = parked.take();
                drop(parked);
                slot.count.fetch_sub(1, Ordering::SeqCst);
                drop(released);
            }
        }
    }

    /// This thread's slot for the pool, made on its first park.
    fn own_slot(&self) -> Option<Arc<Slot>> {
        SLOTS
            .try_with(|slots| {
                let mut slots = slots.try_borrow_mut().ok()?;
                if let Some((_, slot)) = slots.iter().find(|(id, _)| *id == self.id) {
                    return Some(slot.clone());
                }
                slots.retain(|(_, slot)| !slot.closed.load(Ordering::Relaxed));
                let slot = Arc::new(Slot {
                    parked: Mutex::new(None),
                    count: self.count.clone(),
                    closed: AtomicBool::new(false),
                });
                let mut registered = lock(&self.slots);
                registered.retain(|s| s.strong_count() > 0);
                registered.push(Arc::downgrade(&slot));
                drop(registered);
                slots.push((self.id, slot.clone()));
                Some(slot)
            })
            .ok()
            .flatten()
    }
}

impl Drop for Parking {
    /// The pool is gone: its parked connections return to r2d2 (which closes them as it
    /// drops), and the threads' lists forget the slots.
    fn drop(&mut self) {
        let slots: Vec<Arc<Slot>> = lock(&self.slots).iter().filter_map(Weak::upgrade).collect();
        for slot in slots {
            slot.closed.store(true, Ordering::Relaxed);
            let released = lock(&slot.parked).take();
            drop(released);
        }
    }
}

impl Slot {
    fn take(&self, fresh: Duration) -> Option<Taken> {
        let mut parked = self.parked.try_lock().ok()?;
        let Parked { taken, since } = parked.take()?;
        drop(parked);
        self.count.fetch_sub(1, Ordering::SeqCst);
        // An older one drops here, back into r2d2.
        (since.elapsed() < fresh).then_some(taken)
    }
}

impl Drop for Slot {
    /// The thread exited: its parked connection returns to r2d2.
    fn drop(&mut self) {
        let parked = self
            .parked
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if parked.take().is_some() {
            self.count.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
