//! Tasks woken at random times, for tracing nonstop while they run.
//!
//! All spawned with `delouse::spawn`, over `--secs S` (default 3):
//! - `--oneshots N` (default 1000) tasks await a `oneshot` that a driver
//!   task fires at a random time;
//! - `--notifies N` (default 1000) tasks await a `Notify` the driver fires;
//! - `--sleeps N` (default 1000) tasks sleep a random time;
//! - `--groups N` (default 200) tasks each drive `FuturesUnordered` children
//!   through `tokio::sync::Mutex` and `Semaphore` hand-offs, then a
//!   `JoinSet` of `.traced()` children, then a `tokio::select!` between a
//!   driver-fired `oneshot` and a sleep.
//!
//! Random times come from xorshift seeded by the clock (`--seed` to replay).
//! `stats`: `finished=F expected=E driver_done=0|1 join_errors=J seed=S`;
//! once every task is done the numbers stop changing. Multi-thread runtime
//! with 2 workers, an untraced heartbeat.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use delouse::TracedExt;
use delouse_tests::{Control, Heartbeat, XorShift, flag, init_agent};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{Mutex, Notify, Semaphore, oneshot};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until};

/// Children each group drives through its hand-offs.
const CHILDREN: u64 = 4;
/// Children each group runs in its `JoinSet`.
const JOINED: u64 = 3;

#[derive(Default)]
struct Counters {
    finished: AtomicU64,
    driver_done: AtomicU64,
    join_errors: AtomicU64,
}

enum Fire {
    Oneshot(oneshot::Sender<()>),
    Notify(Arc<Notify>),
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    init_agent();
    let secs: u64 = flag("secs", 3);
    let oneshots: u64 = flag("oneshots", 1000);
    let notifies: u64 = flag("notifies", 1000);
    let sleeps: u64 = flag("sleeps", 1000);
    let groups: u64 = flag("groups", 200);
    let seed: u64 = flag("seed", XorShift::clock_seed());
    let span_ms = (secs * 1000).max(1);

    let clock = Heartbeat::new();
    clock.spawn_untraced();

    let counters = Arc::new(Counters::default());
    let expected = oneshots + notifies + sleeps + groups;
    let mut rng = XorShift::new(seed);
    let mut fires: Vec<(u64, Fire)> = Vec::new();

    for _ in 0..oneshots {
        let (tx, rx) = oneshot::channel();
        fires.push((rng.below(span_ms), Fire::Oneshot(tx)));
        delouse::spawn(await_oneshot(rx, counters.clone()));
    }
    for _ in 0..notifies {
        let notify = Arc::new(Notify::new());
        fires.push((rng.below(span_ms), Fire::Notify(notify.clone())));
        delouse::spawn(await_notify(notify, counters.clone()));
    }
    for _ in 0..sleeps {
        delouse::spawn(sleeper(rng.below(span_ms), counters.clone()));
    }
    let permits = Arc::new(Semaphore::new(16));
    for _ in 0..groups {
        let (tx, rx) = oneshot::channel();
        fires.push((rng.below(span_ms), Fire::Oneshot(tx)));
        let group = Group {
            permits: permits.clone(),
            rng: XorShift::new(rng.next_u64()),
            span_ms,
            fired: rx,
            counters: counters.clone(),
        };
        delouse::spawn(hand_offs(group));
    }
    fires.sort_by_key(|(at, _)| *at);
    delouse::spawn(driver(fires, counters.clone()));

    Control::new(tokio::runtime::Handle::current(), clock)
        .stats(move || {
            format!(
                "finished={} expected={expected} driver_done={} join_errors={} seed={seed}",
                counters.finished.load(Ordering::Acquire),
                counters.driver_done.load(Ordering::Acquire),
                counters.join_errors.load(Ordering::Acquire),
            )
        })
        .start();
    std::future::pending::<()>().await;
}

/// Fires every oneshot and `Notify` at its time.
async fn driver(fires: Vec<(u64, Fire)>, counters: Arc<Counters>) {
    let start = Instant::now();
    for (at, fire) in fires {
        sleep_until(start + Duration::from_millis(at)).await;
        match fire {
            // The receiver is gone when a `select!` took its other branch.
            Fire::Oneshot(tx) => drop(tx.send(())),
            Fire::Notify(notify) => notify.notify_one(),
        }
    }
    counters.driver_done.store(1, Ordering::Release);
}

async fn await_oneshot(rx: oneshot::Receiver<()>, counters: Arc<Counters>) {
    let _ = rx.await;
    counters.finished.fetch_add(1, Ordering::AcqRel);
}

async fn await_notify(notify: Arc<Notify>, counters: Arc<Counters>) {
    notify.notified().await;
    counters.finished.fetch_add(1, Ordering::AcqRel);
}

async fn sleeper(ms: u64, counters: Arc<Counters>) {
    sleep(Duration::from_millis(ms)).await;
    counters.finished.fetch_add(1, Ordering::AcqRel);
}

struct Group {
    permits: Arc<Semaphore>,
    rng: XorShift,
    span_ms: u64,
    fired: oneshot::Receiver<()>,
    counters: Arc<Counters>,
}

async fn hand_offs(mut g: Group) {
    sleep(Duration::from_millis(g.rng.below(g.span_ms / 2 + 1))).await;

    // Children contend for the group's lock and the shared permits.
    let lock = Arc::new(Mutex::new(0u64));
    let mut children: FuturesUnordered<_> = (0..CHILDREN)
        .map(|_| locked_child(g.permits.clone(), lock.clone(), g.rng.below(3)))
        .collect();
    while children.next().await.is_some() {}

    let mut set = JoinSet::new();
    for _ in 0..JOINED {
        set.spawn(joined_child(g.rng.below(20)).traced());
    }
    while let Some(joined) = set.join_next().await {
        if joined.is_err() {
            g.counters.join_errors.fetch_add(1, Ordering::AcqRel);
        }
    }

    tokio::select! {
        _ = g.fired => {}
        _ = sleep(Duration::from_millis(g.rng.below(g.span_ms))) => {}
    }
    g.counters.finished.fetch_add(1, Ordering::AcqRel);
}

async fn locked_child(permits: Arc<Semaphore>, lock: Arc<Mutex<u64>>, hold_ms: u64) {
    let Ok(_permit) = permits.acquire().await else {
        return;
    };
    let mut count = lock.lock().await;
    *count += 1;
    sleep(Duration::from_millis(hold_ms)).await;
}

async fn joined_child(ms: u64) {
    sleep(Duration::from_millis(ms)).await;
    tokio::task::yield_now().await;
}
