//! A clock that a heartbeat task advances, so the control loop can tell
//! whether the runtime keeps running tasks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the heartbeat beats.
pub const PERIOD: Duration = Duration::from_millis(100);

/// Beats recorded by a heartbeat task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Heartbeat(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    start: Instant,
    beats: AtomicU64,
    last_ms: AtomicU64,
    max_gap_ms: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self::new()
    }
}

impl Heartbeat {
    /// A clock with no beat yet; its start counts as the first beat.
    pub fn new() -> Self {
        Heartbeat(Arc::new(Inner {
            start: Instant::now(),
            beats: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            max_gap_ms: AtomicU64::new(0),
        }))
    }

    fn now_ms(&self) -> u64 {
        self.0.start.elapsed().as_millis() as u64
    }

    /// Records one beat.
    pub fn beat(&self) {
        let now = self.now_ms();
        let prev = self.0.last_ms.swap(now, Ordering::AcqRel);
        self.0
            .max_gap_ms
            .fetch_max(now.saturating_sub(prev), Ordering::AcqRel);
        self.0.beats.fetch_add(1, Ordering::AcqRel);
    }

    /// Beats so far.
    pub fn beats(&self) -> u64 {
        self.0.beats.load(Ordering::Acquire)
    }

    /// The longest time between two beats so far, in milliseconds.
    pub fn max_gap_ms(&self) -> u64 {
        self.0.max_gap_ms.load(Ordering::Acquire)
    }

    /// Time since the last beat, in milliseconds.
    pub fn age_ms(&self) -> u64 {
        self.now_ms()
            .saturating_sub(self.0.last_ms.load(Ordering::Acquire))
    }

    /// Spawns a heartbeat with plain `tokio::spawn`, so it is not one of the
    /// traced tasks a test counts (it shows as "spawned without delouse").
    pub fn spawn_untraced(&self) {
        tokio::spawn(untraced_heartbeat(self.clone()));
    }
}

async fn untraced_heartbeat(clock: Heartbeat) {
    loop {
        tokio::time::sleep(PERIOD).await;
        clock.beat();
    }
}
