//! A task leak: `--tasks N` (default 1000) identical tasks waiting on
//! channels nobody sends to, all spawned from one `delouse::spawn` site
//! (`TRACE-MARK: leak-spawn`). The tests expect them as one group.
//!
//! Plus an untraced heartbeat (plain `tokio::spawn`), so the traced count is
//! exactly N. Multi-thread runtime with 2 workers. `stats`: `tasks=N`.
//!
//! `selfdump` (for the benchmark) times tokio's own in-process
//! `Handle::dump()` plus `resolve_backtraces()` over the same tasks and
//! answers `selfdump_ms=<dump+resolve> dump_ms=<dump> tasks=<n>`. It is safe
//! here only because every task is parked and the run queues are empty.

use delouse_tests::{Control, Heartbeat, Started, flag, idle_channels, init_agent};
use tokio::sync::mpsc;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    init_agent();
    let tasks: usize = flag("tasks", 1000);

    let clock = Heartbeat::new();
    clock.spawn_untraced();

    let started = Started::new();
    let (senders, receivers) = idle_channels(tasks);
    for rx in receivers {
        delouse::spawn(leaked_request(rx, started.clone())); // TRACE-MARK: leak-spawn
    }
    started.all(tasks).await;

    let handle = tokio::runtime::Handle::current();
    let dump_handle = handle.clone();
    Control::new(handle, clock)
        .stats(move || format!("tasks={tasks}"))
        .command("selfdump", move |_| self_dump(&dump_handle))
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

fn self_dump(handle: &tokio::runtime::Handle) -> String {
    // Back-to-back dumps re-wake every task they traced; dumping while the
    // run queues hold more than ~128 tasks hangs tokio 1.54.1 for good
    // (docs/tasks.md). Wait for 5 empty samples 1 ms apart first.
    let m = handle.metrics();
    let mut empty = 0;
    while empty < 5 {
        let queued: usize = (0..m.num_workers())
            .map(|w| m.worker_local_queue_depth(w))
            .sum::<usize>()
            + m.global_queue_depth();
        empty = if queued == 0 { empty + 1 } else { 0 };
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let start = std::time::Instant::now();
    let dump = handle.block_on(handle.dump());
    let dumped = start.elapsed();
    let frames: usize = dump
        .tasks()
        .iter()
        .map(|t| t.trace().resolve_backtraces().len())
        .sum();
    let total = start.elapsed();
    std::hint::black_box(frames);
    format!(
        "selfdump_ms={:.1} dump_ms={:.1} tasks={}",
        total.as_secs_f64() * 1e3,
        dumped.as_secs_f64() * 1e3,
        dump.tasks().iter().count()
    )
}
