//! A `current_thread` runtime with a `LocalSet`, the shape that panics
//! tokio's own task dump (tokio#8391).
//!
//! - `--tasks N` (default 50) traced tasks (`delouse::spawn`) wait in
//!   `runtime_waiter()` on channels nobody sends to;
//! - on the `LocalSet`, `spawn_local(fut.traced())`: N `local_waiter()`
//!   tasks holding an `Rc` (a `!Send` future), a `wakee()` waiting on a
//!   `Notify` and a `waker()` that, while it is being polled, notifies that
//!   `Notify` every 10 ms.
//!
//! `check` relies on the untraced heartbeat (one thread, no per-worker
//! metrics needed). `stats`: `tasks=N wakes=W`, W the wake-ups `wakee` saw.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use delouse::TracedExt;
use delouse_tests::{Control, Heartbeat, Started, flag, init_agent};
use tokio::sync::{Notify, mpsc};
use tokio::task::LocalSet;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    init_agent();
    let tasks: usize = flag("tasks", 50);

    let clock = Heartbeat::new();
    clock.spawn_untraced();

    let started = Started::new();
    let mut senders = Vec::with_capacity(2 * tasks);
    for _ in 0..tasks {
        let (tx, rx) = mpsc::channel::<u64>(1);
        senders.push(tx);
        delouse::spawn(runtime_waiter(rx, started.clone()));
    }

    let local = LocalSet::new();
    for _ in 0..tasks {
        let (tx, rx) = mpsc::channel::<u64>(1);
        senders.push(tx);
        local.spawn_local(local_waiter(rx, Rc::new(Cell::new(0)), started.clone()).traced());
    }
    let notify = Arc::new(Notify::new());
    let wakes = Arc::new(AtomicU64::new(0));
    local.spawn_local(wakee(notify.clone(), wakes.clone(), started.clone()).traced());
    local.spawn_local(waker(notify, started.clone()).traced());

    // The local tasks start only once the `LocalSet` runs.
    local
        .run_until(async move {
            started.all(2 * tasks + 2).await;
            Control::new(tokio::runtime::Handle::current(), clock)
                .stats(move || format!("tasks={tasks} wakes={}", wakes.load(Ordering::Relaxed)))
                .start();
            std::future::pending::<()>().await;
        })
        .await;
    drop(senders);
}

async fn runtime_waiter(mut rx: mpsc::Receiver<u64>, started: Started) {
    started.mark();
    while let Some(msg) = rx.recv().await {
        std::hint::black_box(msg);
    }
}

/// Holds an `Rc` across its await, so the future is `!Send`.
async fn local_waiter(mut rx: mpsc::Receiver<u64>, seen: Rc<Cell<u64>>, started: Started) {
    started.mark();
    while let Some(msg) = rx.recv().await {
        seen.set(seen.get() + msg);
    }
}

async fn wakee(notify: Arc<Notify>, wakes: Arc<AtomicU64>, started: Started) {
    started.mark();
    loop {
        notify.notified().await;
        wakes.fetch_add(1, Ordering::Relaxed);
    }
}

/// Wakes `wakee` from inside its own poll.
async fn waker(notify: Arc<Notify>, started: Started) {
    started.mark();
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        notify.notify_one();
    }
}
