//! Tasks spawned only with plain `tokio::spawn`, for the whole-runtime dump:
//! `--tasks N` (default 50) tasks wait in `plain_waiter()` on channels nobody
//! sends to. `delouse::init()` is called, but nothing is traced.
//!
//! Multi-thread runtime with 2 workers, an untraced heartbeat.
//! `stats`: `tasks=N`.

use delouse_tests::{Control, Heartbeat, Started, flag, idle_channels, init_agent};
use tokio::sync::mpsc;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    init_agent();
    let tasks: usize = flag("tasks", 50);

    let clock = Heartbeat::new();
    clock.spawn_untraced();

    let started = Started::new();
    let (senders, receivers) = idle_channels(tasks);
    for rx in receivers {
        tokio::spawn(plain_waiter(rx, started.clone()));
    }
    started.all(tasks).await;

    Control::new(tokio::runtime::Handle::current(), clock)
        .stats(move || format!("tasks={tasks}"))
        .start();
    std::future::pending::<()>().await;
    drop(senders);
}

async fn plain_waiter(mut rx: mpsc::Receiver<u64>, started: Started) {
    started.mark();
    while let Some(msg) = rx.recv().await {
        std::hint::black_box(msg);
    }
}
