//! Cost of `delouse::spawn` against `tokio::spawn`: spawns 1M tiny tasks on
//! a 2-worker runtime and waits for all of them, alternating the two, and
//! prints the best time of each and the overhead. Also the poll path:
//! 1M `yield_now` polls in one traced task against one plain task.
//!
//! Run: `cargo bench -p delouse-tests --bench spawn`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const TASKS: usize = 1_000_000;
const YIELDS: usize = 1_000_000;
const ROUNDS: usize = 5;

async fn tiny(done: Arc<AtomicUsize>, notify: Arc<tokio::sync::Notify>, wait: bool) {
    if wait {
        tokio::task::yield_now().await;
    }
    if done.fetch_add(1, Ordering::Relaxed) + 1 == TASKS {
        notify.notify_one();
    }
}

fn round(rt: &tokio::runtime::Runtime, traced: bool, wait: bool) -> Duration {
    rt.block_on(async {
        let done = Arc::new(AtomicUsize::new(0));
        let notify = Arc::new(tokio::sync::Notify::new());
        let start = Instant::now();
        for _ in 0..TASKS {
            let fut = tiny(done.clone(), notify.clone(), wait);
            if traced {
                drop(delouse::spawn(fut));
            } else {
                drop(tokio::spawn(fut));
            }
        }
        notify.notified().await;
        start.elapsed()
    })
}

fn yields(rt: &tokio::runtime::Runtime, traced: bool) -> Duration {
    rt.block_on(async {
        let work = async {
            let start = Instant::now();
            for _ in 0..YIELDS {
                tokio::task::yield_now().await;
            }
            start.elapsed()
        };
        if traced {
            delouse::spawn(work).await.unwrap()
        } else {
            tokio::spawn(work).await.unwrap()
        }
    })
}

fn best(mut f: impl FnMut() -> Duration) -> Duration {
    (0..ROUNDS).map(|_| f()).min().unwrap()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { delouse::init().ok() });
    // Warm up allocator and runtime.
    round(&rt, false, true);
    round(&rt, true, true);

    for (wait, what) in [
        (false, "tiny tasks (done in their first poll)"),
        (true, "tasks that wait once (registered with the agent)"),
    ] {
        let (mut plain, mut traced) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            plain.push(round(&rt, false, wait));
            traced.push(round(&rt, true, wait));
        }
        let (p, t) = (*plain.iter().min().unwrap(), *traced.iter().min().unwrap());
        println!("spawn {TASKS} {what}, best of {ROUNDS}, 2 workers:");
        println!("  tokio::spawn    {:>8.1} ms", p.as_secs_f64() * 1e3);
        println!("  delouse::spawn  {:>8.1} ms", t.as_secs_f64() * 1e3);
        println!(
            "  overhead        {:>+8.1} %",
            (t.as_secs_f64() / p.as_secs_f64() - 1.0) * 100.0
        );
    }

    let yp = best(|| yields(&rt, false));
    let yt = best(|| yields(&rt, true));
    println!("{YIELDS} yield_now polls in one task, best of {ROUNDS}:");
    println!("  tokio::spawn    {:>8.1} ms", yp.as_secs_f64() * 1e3);
    println!("  delouse::spawn  {:>8.1} ms", yt.as_secs_f64() * 1e3);
    println!(
        "  overhead        {:>+8.1} %",
        (yt.as_secs_f64() / yp.as_secs_f64() - 1.0) * 100.0
    );
}
