//! A blocked worker: 2 workers, `--tasks N` (default 200) idle traced tasks,
//! and a task that blocks its worker with `std::thread::sleep`
//! (`TRACE-MARK: blocking-sleep`).
//!
//! The block starts on the command `block <secs>`, answered with
//! `blocking <secs>` once the sleep has begun, or at start with
//! `--block <secs>` (before `ready`). Several blocks may overlap.
//! `stats`: `tasks=N blocks_started=S blocks_done=D`. An untraced heartbeat.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use delouse_tests::{Control, Heartbeat, Started, flag, idle_channels, init_agent};
use tokio::sync::mpsc;

#[derive(Default)]
struct Blocks {
    started: AtomicU64,
    done: AtomicU64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    init_agent();
    let tasks: usize = flag("tasks", 200);
    let block_at_start: u64 = flag("block", 0);

    let clock = Heartbeat::new();
    clock.spawn_untraced();

    let started = Started::new();
    let (senders, receivers) = idle_channels(tasks);
    for rx in receivers {
        delouse::spawn(idle(rx, started.clone()));
    }
    started.all(tasks).await;

    let blocks = Arc::new(Blocks::default());
    let handle = tokio::runtime::Handle::current();
    if block_at_start > 0 {
        start_block(&handle, &blocks, block_at_start);
    }

    let stats_blocks = blocks.clone();
    let block_handle = handle.clone();
    Control::new(handle, clock)
        .stats(move || {
            format!(
                "tasks={tasks} blocks_started={} blocks_done={}",
                stats_blocks.started.load(Ordering::Acquire),
                stats_blocks.done.load(Ordering::Acquire)
            )
        })
        .command("block", move |arg| match arg.parse::<u64>() {
            Ok(secs) => {
                start_block(&block_handle, &blocks, secs);
                format!("blocking {secs}")
            }
            Err(_) => format!("error bad seconds '{arg}'"),
        })
        .start();
    std::future::pending::<()>().await;
    drop(senders);
}

/// Spawns the blocking task and returns once its sleep has begun.
fn start_block(handle: &tokio::runtime::Handle, blocks: &Arc<Blocks>, secs: u64) {
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let _guard = handle.enter();
    delouse::spawn(block_worker(secs, blocks.clone(), started_tx)); // TRACE-MARK: block-spawn
    // If the runtime never polls the task (all workers blocked already),
    // answer anyway after a while rather than hang the control loop.
    let _ = started_rx.recv_timeout(Duration::from_secs(5));
}

/// Yields once first, like a task that has been running a while: the agent
/// registers a task when its first poll returns `Pending`, so a task stuck
/// in its very first poll would be unknown to it (counted as untraced).
async fn block_worker(secs: u64, blocks: Arc<Blocks>, started: std::sync::mpsc::Sender<()>) {
    tokio::task::yield_now().await;
    blocks.started.fetch_add(1, Ordering::AcqRel);
    let _ = started.send(());
    std::thread::sleep(Duration::from_secs(secs)); // TRACE-MARK: blocking-sleep
    blocks.done.fetch_add(1, Ordering::AcqRel);
}

async fn idle(mut rx: mpsc::Receiver<u64>, started: Started) {
    started.mark();
    while let Some(msg) = rx.recv().await {
        std::hint::black_box(msg);
    }
}
