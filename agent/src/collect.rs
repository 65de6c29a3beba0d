//! How a trace request and its tasks meet: a global epoch that tasks compare
//! on every poll, and the count of answers the agent still waits for.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::registry::Slot;

/// Bumped once per trace request. A task whose last seen epoch differs looks
/// at its slot's `pending` to learn whether it owes an answer.
pub(crate) static EPOCH: AtomicU64 = AtomicU64::new(0);

static CURRENT: Mutex<Option<Arc<Collect>>> = Mutex::new(None);

/// What a task answered.
pub(crate) enum Outcome {
    /// Raw return addresses, innermost first, of every tokio leaf the task
    /// reached, each list ended by a 0 (one allocation per task).
    #[allow(dead_code, reason = "built only where tokio can trace tasks")]
    Traced(Vec<u64>),
    /// The task ended before it could trace itself.
    Finished,
}

/// The agent's side of one trace request.
pub(crate) struct Collect {
    pub(crate) epoch: u64,
    /// Answers still owed. Counted up before each slot is marked pending,
    /// down as answers arrive, so it can only reach zero once every marked
    /// slot has answered.
    pub(crate) remaining: AtomicUsize,
    pub(crate) done: Notify,
}

impl Collect {
    /// Starts a request: the new epoch's collector becomes current. Call
    /// [`publish`] once every slot is marked.
    pub(crate) fn begin() -> Arc<Collect> {
        let c = Arc::new(Collect {
            epoch: EPOCH.load(Ordering::Acquire) + 1,
            remaining: AtomicUsize::new(0),
            done: Notify::new(),
        });
        *lock_current() = Some(c.clone());
        c
    }

    /// Makes the epoch visible to polling tasks.
    pub(crate) fn publish(&self) {
        EPOCH.store(self.epoch, Ordering::Release);
    }

    /// Ends the request; late answers are then ignored.
    pub(crate) fn end(&self) {
        let mut cur = lock_current();
        if cur.as_ref().is_some_and(|c| c.epoch == self.epoch) {
            *cur = None;
        }
    }

    fn answered(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }
}

fn lock_current() -> std::sync::MutexGuard<'static, Option<Arc<Collect>>> {
    CURRENT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records a task's answer for `epoch`, if it still owes one. The answer is
/// stored in the slot before the slot is settled, so whoever sees the slot
/// settled by the task finds the answer there.
pub(crate) fn settle(slot: &Slot, epoch: u64, outcome: Outcome) {
    *slot.answer.lock().unwrap_or_else(|e| e.into_inner()) = Some((epoch, outcome));
    if slot
        .pending
        .compare_exchange(epoch, 0, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        let current = lock_current().clone();
        if let Some(c) = current.filter(|c| c.epoch == epoch) {
            c.answered();
        }
    }
}

/// Called when a traced future is dropped: an answer it still owes becomes
/// `Finished`.
pub(crate) fn settle_dropped(slot: &Slot) {
    let epoch = slot.pending.load(Ordering::Acquire);
    if epoch != 0 {
        settle(slot, epoch, Outcome::Finished);
    }
}
