//! A task leak: `--tasks N` (default 1000) identical tasks waiting on
//! channels nobody sends to, all spawned from one `delouse::spawn` site
//! (`TRACE-MARK: leak-spawn`). The tests expect them as one group.
//!
//! Plus an untraced heartbeat (plain `tokio::spawn`), so the traced count is
//! exactly N. Multi-thread runtime with 2 workers. `stats`: `tasks=N`.

use delouse_tests::{Control, Heartbeat, Started, flag, init_agent};
use tokio::sync::mpsc;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    init_agent();
    let tasks: usize = flag("tasks", 1000);

    let clock = Heartbeat::new();
    clock.spawn_untraced();

    let started = Started::new();
    let mut senders = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let (tx, rx) = mpsc::channel::<u64>(1);
        senders.push(tx);
        delouse::spawn(leaked_request(rx, started.clone())); // TRACE-MARK: leak-spawn
    }
    started.all(tasks).await;

    Control::new(tokio::runtime::Handle::current(), clock)
        .stats(move || format!("tasks={tasks}"))
        .start();
    std::future::pending::<()>().await;
    drop(senders);
}

async fn leaked_request(mut rx: mpsc::Receiver<u64>, started: Started) {
    started.mark();
    while let Some(reply) = rx.recv().await {
        std::hint::black_box(reply);
    }
}
