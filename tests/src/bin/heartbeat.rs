//! The demo target: a heartbeat task, a crowd of tasks leaked on channels
//! nobody sends to, and one task spawned without delouse.
//!
//! - `heartbeat()` (via `delouse::spawn`) sleeps 100 ms in a loop; its
//!   sleep line carries `TRACE-MARK: heartbeat-sleep`;
//! - `--waiters N` (default 300) tasks wait in `wait_for_orders()`, all
//!   spawned from one `delouse::spawn` site (`TRACE-MARK: orders-spawn`);
//! - one `untraced_worker()` task is spawned with plain `tokio::spawn`, so
//!   "spawned without delouse" is 1.
//!
//! Multi-thread runtime with 2 workers. `stats`: `waiters=N untraced=1`.

use std::time::Duration;

use delouse_tests::{Control, Heartbeat, Started, flag, init_agent};
use tokio::sync::mpsc;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    init_agent();
    let waiters: usize = flag("waiters", 300);

    let started = Started::new();
    let clock = Heartbeat::new();
    delouse::spawn(heartbeat(clock.clone(), started.clone()));

    // The senders stay alive in `orders`, so every receiver waits for good.
    let mut orders = Vec::with_capacity(waiters);
    for _ in 0..waiters {
        let (tx, rx) = mpsc::channel::<u64>(1);
        orders.push(tx);
        delouse::spawn(wait_for_orders(rx, started.clone())); // TRACE-MARK: orders-spawn
    }
    let (_untraced_tx, untraced_rx) = mpsc::channel::<u64>(1);
    tokio::spawn(untraced_worker(untraced_rx, started.clone()));
    started.all(waiters + 2).await;

    Control::new(tokio::runtime::Handle::current(), clock)
        .stats(move || format!("waiters={waiters} untraced=1"))
        .start();
    std::future::pending::<()>().await;
    drop((orders, _untraced_tx));
}

async fn heartbeat(clock: Heartbeat, started: Started) {
    started.mark();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await; // TRACE-MARK: heartbeat-sleep
        clock.beat();
    }
}

async fn wait_for_orders(mut rx: mpsc::Receiver<u64>, started: Started) {
    started.mark();
    while let Some(order) = rx.recv().await {
        std::hint::black_box(order);
    }
}

async fn untraced_worker(mut rx: mpsc::Receiver<u64>, started: Started) {
    started.mark();
    while let Some(job) = rx.recv().await {
        std::hint::black_box(job);
    }
}
