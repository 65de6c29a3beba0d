//! The registry of traced tasks: one slot per live `Traced` future, in
//! sharded slabs so that spawning tasks on different threads does not contend
//! on one lock. A slot is removed when its future is dropped, so memory is
//! bounded by the number of live traced tasks.

use std::cell::Cell;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use atomic_waker::AtomicWaker;

use crate::collect::Outcome;

const SHARDS: usize = 32;

/// What the agent knows of one traced task. Shared between the task's
/// wrapper (which updates it on every poll, without locks) and the agent.
pub(crate) struct Slot {
    /// tokio's id of the task polling this future, set on its first poll
    /// (or right after `delouse::spawn`).
    pub(crate) id: OnceLock<tokio::task::Id>,
    pub(crate) location: &'static Location<'static>,
    pub(crate) spawned_ns: u64,
    /// Written only by the polling thread (polls of one future never
    /// overlap), read by the agent.
    pub(crate) polls: AtomicU64,
    /// Coarse clock at the start of the last poll; 0 before the first.
    pub(crate) last_poll_ns: AtomicU64,
    /// The waker of the last poll, for the agent to wake the task.
    pub(crate) waker: AtomicWaker,
    /// The trace epoch this task owes an answer for, or 0. Whoever swaps it
    /// back to 0 first (the task answering, the task being dropped, the agent
    /// giving up) settles that answer, so each is given exactly once.
    pub(crate) pending: AtomicU64,
    /// The last answer given, with its epoch; see `collect::settle`.
    pub(crate) answer: Mutex<Option<(u64, Outcome)>>,
}

impl Slot {
    fn new(location: &'static Location<'static>, spawned_ns: u64) -> Self {
        Slot {
            id: OnceLock::new(),
            location,
            spawned_ns,
            polls: AtomicU64::new(0),
            last_poll_ns: AtomicU64::new(0),
            waker: AtomicWaker::new(),
            pending: AtomicU64::new(0),
            answer: Mutex::new(None),
        }
    }
}

#[derive(Default)]
struct Shard {
    entries: Vec<Option<Arc<Slot>>>,
    free: Vec<usize>,
}

impl Shard {
    const fn new() -> Self {
        Shard {
            entries: Vec::new(),
            free: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }
}

/// No counter is shared between shards: a global one would be written by
/// every spawn and every task end, on every thread.
pub(crate) struct Registry {
    shards: [Mutex<Shard>; SHARDS],
}

/// Where a slot sits, kept by its wrapper to remove it in O(1).
pub(crate) struct SlotKey {
    shard: u8,
    index: u32,
}

static REGISTRY: Registry = Registry::new();

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Each thread sticks to one shard: spawns from a worker then take an
    // uncontended lock.
    static HOME_SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn home_shard() -> usize {
    HOME_SHARD
        .try_with(|home| {
            if home.get() == usize::MAX {
                home.set(NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS);
            }
            home.get()
        })
        // During thread teardown the thread-local is gone; any shard works.
        .unwrap_or(0)
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding a shard lock cannot leave a shard half-updated
    // (every update is a single push or assignment), so poison is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn registry() -> &'static Registry {
    &REGISTRY
}

impl Registry {
    const fn new() -> Self {
        Registry {
            shards: [const { Mutex::new(Shard::new()) }; SHARDS],
        }
    }

    /// Registers a task created at `spawned_ns` (coarse clock). Called on
    /// the task's first poll, so that a task is usually registered and
    /// removed on the same worker's shard.
    pub(crate) fn insert(
        &self,
        location: &'static Location<'static>,
        spawned_ns: u64,
    ) -> (Arc<Slot>, SlotKey) {
        let slot = Arc::new(Slot::new(location, spawned_ns));
        let shard = home_shard();
        let mut s = lock(&self.shards[shard]);
        let index = match s.free.pop() {
            Some(i) => {
                s.entries[i] = Some(slot.clone());
                i
            }
            None => {
                s.entries.push(Some(slot.clone()));
                s.entries.len() - 1
            }
        };
        drop(s);
        let key = SlotKey {
            shard: shard as u8,
            index: index as u32,
        };
        (slot, key)
    }

    pub(crate) fn remove(&self, key: &SlotKey) {
        let mut s = lock(&self.shards[key.shard as usize]);
        let index = key.index as usize;
        if let Some(entry) = s.entries.get_mut(index)
            && entry.take().is_some()
        {
            s.free.push(index);
            // Give the slab's memory back once a burst of tasks is gone. Live
            // slots are freed as their tasks end; only this index remains.
            if s.free.len() == s.entries.len() && s.entries.capacity() > 1024 {
                s.entries = Vec::new();
                s.free = Vec::new();
            }
        }
    }

    /// Number of live slots.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Calls `f` on every live slot, one shard lock at a time.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Arc<Slot>)) {
        for shard in &self.shards {
            let s = lock(shard);
            s.entries.iter().flatten().for_each(&mut f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_reuses_and_shrinks() {
        let reg = Registry::new();
        let loc = Location::caller();
        let keys: Vec<_> = (0..5000).map(|_| reg.insert(loc, 0).1).collect();
        assert_eq!(reg.len(), 5000);
        let mut n = 0;
        reg.for_each(|_| n += 1);
        assert_eq!(n, 5000);
        for k in &keys {
            reg.remove(k);
            reg.remove(k); // a second remove is harmless
        }
        assert_eq!(reg.len(), 0);
        let s = lock(&reg.shards[keys[0].shard as usize]);
        assert!(
            s.entries.capacity() < 5000,
            "capacity {}",
            s.entries.capacity()
        );
    }
}
