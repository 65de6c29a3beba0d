//! OS-thread helpers for the targets about `delouse threads`: the calling
//! thread's kernel id, waiting for a thread to be asleep, and a ticker, a
//! plain thread that wakes up on a short period and records its longest gap
//! (a whole-process stop, such as a debugger's, shows in it).
//!
//! The ticker also records its longest *stall*: a gap minus the time the
//! thread spent waiting for a CPU meanwhile (`run_delay` of
//! `/proc/thread-self/schedstat`). On a loaded machine with two cores a
//! gap grows by whatever else runs (a compiler, the CLI symbolizing); a
//! stall is the part of it that the thread was held up otherwise: stopped,
//! blocked in the kernel, or running something other than its loop (a
//! signal handler).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The calling thread's kernel thread id.
pub fn gettid() -> u32 {
    // SAFETY: gettid(2) has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// The scheduler state letter of thread `tid` of this process
/// (`/proc/self/task/<tid>/stat`), if it exists.
pub fn thread_state(tid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Waits until thread `tid` is asleep (state `S`), up to `timeout`; returns
/// whether it is.
pub fn wait_sleeping(tid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if thread_state(tid) == Some('S') {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A thread id published by the thread itself once it is set up.
#[derive(Debug, Clone, Default)]
pub struct Tid(Arc<AtomicU32>);

impl Tid {
    /// Not set yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the calling thread's id.
    pub fn set_current(&self) {
        self.0.store(gettid(), Ordering::Release);
    }

    /// The id, 0 before it is set.
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }

    /// Waits (up to `timeout`) for the id to be set and the thread to be
    /// asleep; returns the id, or exits the process: a target whose threads
    /// are not where they should be is of no use to the tests.
    pub fn wait_asleep(&self, what: &str, timeout: Duration) -> u32 {
        let deadline = Instant::now() + timeout;
        while self.get() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let tid = self.get();
        if tid == 0 || !wait_sleeping(tid, deadline.saturating_duration_since(Instant::now())) {
            eprintln!("thread '{what}' (tid {tid}) did not go to sleep within {timeout:?}");
            std::process::exit(1);
        }
        tid
    }
}

/// A plain thread that sleeps `period` in a loop and records the longest
/// time between two wake-ups. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ticker(Arc<TickerInner>);

#[derive(Debug)]
struct TickerInner {
    start: Instant,
    ticks: AtomicU64,
    max_gap_us: AtomicU64,
    max_stall_us: AtomicU64,
}

/// Time the calling thread has spent runnable but waiting for a CPU, in
/// nanoseconds (0 when the kernel does not say).
fn run_delay_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

impl Ticker {
    /// Starts a thread named `name` ticking every `period`.
    pub fn start(name: &str, period: Duration) -> Ticker {
        let ticker = Ticker(Arc::new(TickerInner {
            start: Instant::now(),
            ticks: AtomicU64::new(0),
            max_gap_us: AtomicU64::new(0),
            max_stall_us: AtomicU64::new(0),
        }));
        let inner = ticker.0.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut last = inner.start.elapsed();
                let mut last_delay = run_delay_ns();
                loop {
                    std::thread::sleep(period);
                    let now = inner.start.elapsed();
                    let delay = run_delay_ns();
                    let gap = (now - last).as_micros() as u64;
                    let waited = delay.saturating_sub(last_delay) / 1000;
                    last = now;
                    last_delay = delay;
                    inner.max_gap_us.fetch_max(gap, Ordering::AcqRel);
                    inner
                        .max_stall_us
                        .fetch_max(gap.saturating_sub(waited), Ordering::AcqRel);
                    inner.ticks.fetch_add(1, Ordering::AcqRel);
                }
            })
            .expect("spawn the ticker thread");
        ticker
    }

    /// Wake-ups so far.
    pub fn ticks(&self) -> u64 {
        self.0.ticks.load(Ordering::Acquire)
    }

    /// The longest gap between two wake-ups so far, in microseconds.
    pub fn max_gap_us(&self) -> u64 {
        self.0.max_gap_us.load(Ordering::Acquire)
    }

    /// The longest gap less the time spent waiting for a CPU during it, in
    /// microseconds.
    pub fn max_stall_us(&self) -> u64 {
        self.0.max_stall_us.load(Ordering::Acquire)
    }

    /// The longest gap and stall since the last call (or the start), in
    /// microseconds; starts a new measurement.
    pub fn take_max_gap_us(&self) -> (u64, u64) {
        (
            self.0.max_gap_us.swap(0, Ordering::AcqRel),
            self.0.max_stall_us.swap(0, Ordering::AcqRel),
        )
    }
}
