//! Shared helpers for the target programs in `src/bin/`.
//!
//! Every target follows the same protocol, which the integration tests in
//! `tests/integration.rs` rely on:
//!
//! - it calls `delouse::init()` first (unless the target is about something
//!   else), spawns its tasks, waits until each has begun its first poll
//!   ([`Started`]), then prints exactly one line `ready <pid>` on stdout
//!   ([`Control::start`] does);
//! - a plain OS thread ([`Control`]) reads commands from stdin, one a line,
//!   and answers each with exactly one line:
//!   - `check`: `alive <n> of <total> heartbeat_max_gap_ms=<g>
//!     heartbeat_age_ms=<a>` (see [`check_workers`]);
//!   - `stats`: `key=value ...` with counters of that target;
//!   - target-specific commands (for example `block <secs>`);
//!   - `quit`, or the end of stdin: the process exits with status 0, so a
//!     target never outlives the test that started it.
//!
//! Source lines the tests look for carry a marker comment on the same line,
//! `// TRACE-MARK: <name>`; the tests find the line by reading the source.

mod args;
mod control;
mod heartbeat;
mod os;
mod rng;
mod started;

pub use args::flag;
pub use control::{Control, check_workers};
pub use heartbeat::Heartbeat;
pub use os::{Ticker, Tid, gettid, thread_state, wait_sleeping};
pub use rng::XorShift;
pub use started::Started;

use std::io::Write;

use tokio::sync::mpsc;

/// `n` channels nobody will send to: the senders, to keep alive so that the
/// receivers wait for good, and the receivers, one per waiting task.
pub fn idle_channels(n: usize) -> (Vec<mpsc::Sender<u64>>, Vec<mpsc::Receiver<u64>>) {
    (0..n).map(|_| mpsc::channel(1)).unzip()
}

/// Prints `ready <pid>` on stdout and flushes it.
pub fn ready() {
    let mut out = std::io::stdout().lock();
    // A closed stdout means the test is gone; the control loop ends the
    // process when it sees stdin close too.
    let _ = writeln!(out, "ready {}", std::process::id());
    let _ = out.flush();
}

/// Starts the agent, exiting with a message when it cannot start: a target
/// without an agent is of no use to the tests.
pub fn init_agent() {
    if let Err(e) = delouse::init() {
        eprintln!("delouse::init failed: {e}");
        std::process::exit(1);
    }
}
