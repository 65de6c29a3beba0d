//! A count of tasks that have begun their first poll, so a target prints
//! `ready` only once every task waits where the tests expect it.
//!
//! The agent registers a traced task when its first poll returns `Pending`;
//! a test that traces right after `ready` would otherwise race with the
//! workers still polling freshly spawned tasks for the first time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Counts tasks that started. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Started(Arc<AtomicUsize>);

impl Started {
    /// A count at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Called by a task at the top of its body, before its first await.
    pub fn mark(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }

    /// Waits (asynchronously, so it works on a `current_thread` runtime)
    /// until `n` tasks have started.
    pub async fn all(&self, n: usize) {
        while self.0.load(Ordering::Acquire) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
