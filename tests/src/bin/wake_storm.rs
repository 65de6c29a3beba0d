//! A wake-up storm: `--tasks N` (default 300) traced tasks, each woken every
//! 1 ms by a `tokio::time::interval`, counting its ticks.
//!
//! `stats`: `tasks=N advanced=A min_delta=D total=T`, where `advanced` is
//! how many tasks ticked since the previous `stats` (or since start) and
//! `min_delta` the fewest ticks any task made in that time. Multi-thread
//! runtime with 2 workers, an untraced heartbeat.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use delouse_tests::{Control, Heartbeat, Started, flag, init_agent};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    init_agent();
    let tasks: usize = flag("tasks", 300);

    let clock = Heartbeat::new();
    clock.spawn_untraced();

    let ticks: Arc<Vec<AtomicU64>> = Arc::new((0..tasks).map(|_| AtomicU64::new(0)).collect());
    let started = Started::new();
    for i in 0..tasks {
        delouse::spawn(ticker(ticks.clone(), i, started.clone()));
    }
    started.all(tasks).await;

    let mut last: Vec<u64> = vec![0; tasks];
    Control::new(tokio::runtime::Handle::current(), clock)
        .stats(move || {
            let now: Vec<u64> = ticks.iter().map(|t| t.load(Ordering::Relaxed)).collect();
            let deltas = now.iter().zip(&last).map(|(n, l)| n - l);
            let advanced = deltas.clone().filter(|&d| d > 0).count();
            let min_delta = deltas.min().unwrap_or(0);
            let total: u64 = now.iter().sum();
            last = now;
            format!("tasks={tasks} advanced={advanced} min_delta={min_delta} total={total}")
        })
        .start();
    std::future::pending::<()>().await;
}

async fn ticker(ticks: Arc<Vec<AtomicU64>>, index: usize, started: Started) {
    started.mark();
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    loop {
        interval.tick().await;
        ticks[index].fetch_add(1, Ordering::Relaxed);
    }
}
