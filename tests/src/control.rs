//! The stdin control loop every target runs on a plain OS thread, and the
//! worker liveness check behind its `check` command.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, RuntimeFlavor};

use crate::Heartbeat;

/// How long `check` watches the workers before calling one dead.
const CHECK_WINDOW: Duration = Duration::from_secs(3);
/// How often `check` samples the runtime's metrics.
const CHECK_SAMPLE: Duration = Duration::from_millis(10);

type Command = Box<dyn FnMut(&str) -> String + Send>;

/// The control loop of a target: answers `check`, `stats`, `quit` and the
/// commands a target adds, one line each.
pub struct Control {
    handle: Handle,
    heartbeat: Heartbeat,
    stats: Command,
    commands: Vec<(String, Command)>,
}

impl Control {
    /// A control loop for the runtime of `handle`, whose liveness `heartbeat`
    /// also tracks.
    pub fn new(handle: Handle, heartbeat: Heartbeat) -> Self {
        Control {
            handle,
            heartbeat,
            stats: Box::new(|_| String::new()),
            commands: Vec::new(),
        }
    }

    /// What `stats` answers (`key=value ...`). The heartbeat's beat count is
    /// appended.
    pub fn stats(mut self, mut stats: impl FnMut() -> String + Send + 'static) -> Self {
        self.stats = Box::new(move |_| stats());
        self
    }

    /// Adds a command `name [args]`; `run` gets the rest of the line.
    pub fn command(mut self, name: &str, run: impl FnMut(&str) -> String + Send + 'static) -> Self {
        self.commands.push((name.to_owned(), Box::new(run)));
        self
    }

    /// Prints `ready <pid>`, then starts the loop on its own thread (in this
    /// order, so no answer comes before `ready`). The process exits with
    /// status 0 on `quit` or when stdin closes.
    pub fn start(self) {
        crate::ready();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || self.run())
            .expect("spawn the control thread");
    }

    fn run(mut self) {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.lock().read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = line.trim();
            let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
            let reply = match cmd {
                "" => continue,
                "quit" => break,
                "check" => check_workers(&self.handle, &self.heartbeat),
                "stats" => {
                    let stats = (self.stats)("");
                    let beats = self.heartbeat.beats();
                    if stats.is_empty() {
                        format!("beats={beats}")
                    } else {
                        format!("{stats} beats={beats}")
                    }
                }
                _ => match self.commands.iter_mut().find(|(name, _)| name == cmd) {
                    Some((_, run)) => run(rest.trim()),
                    None => format!("error unknown command '{cmd}'"),
                },
            };
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{reply}").and_then(|()| out.flush()).is_err() {
                break;
            }
        }
        std::process::exit(0);
    }
}

/// Checks that every worker of the runtime is alive, and answers
/// `alive <n> of <total> heartbeat_max_gap_ms=<g> heartbeat_age_ms=<a>`.
///
/// Over up to 3 s, the runtime's metrics are sampled every 10 ms. A worker
/// of a multi-thread runtime is alive when it is parked at a sample (odd
/// `worker_park_unpark_count`), parked or unparked since the first sample,
/// or its `worker_poll_count` advanced (published about every 61 polls or
/// at a park, so a busy worker shows within the window). A lost worker is
/// invisible to a heartbeat task, which just moves to another worker: hence
/// per-worker metrics. A `current_thread` runtime counts as alive when the
/// heartbeat beats within the window.
pub fn check_workers(handle: &Handle, heartbeat: &Heartbeat) -> String {
    let deadline = Instant::now() + CHECK_WINDOW;
    let (alive, total) = if handle.runtime_flavor() == RuntimeFlavor::CurrentThread {
        let beats = heartbeat.beats();
        while heartbeat.beats() == beats && Instant::now() < deadline {
            std::thread::sleep(CHECK_SAMPLE);
        }
        (usize::from(heartbeat.beats() != beats), 1)
    } else {
        let metrics = handle.metrics();
        let n = metrics.num_workers();
        let sample = |w: usize| Sample {
            park_unpark: metrics.worker_park_unpark_count(w),
            polls: poll_count(&metrics, w),
        };
        let first: Vec<Sample> = (0..n).map(sample).collect();
        let mut alive = vec![false; n];
        loop {
            for (w, alive) in alive.iter_mut().enumerate() {
                let now = sample(w);
                *alive |= now.park_unpark % 2 == 1
                    || now.park_unpark != first[w].park_unpark
                    || now.polls > first[w].polls;
            }
            if alive.iter().all(|&a| a) || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(CHECK_SAMPLE);
        }
        (alive.iter().filter(|&&a| a).count(), n)
    };
    format!(
        "alive {alive} of {total} heartbeat_max_gap_ms={} heartbeat_age_ms={}",
        heartbeat.max_gap_ms(),
        heartbeat.age_ms()
    )
}

struct Sample {
    park_unpark: u64,
    polls: u64,
}

#[cfg(tokio_unstable)]
fn poll_count(metrics: &tokio::runtime::RuntimeMetrics, worker: usize) -> u64 {
    metrics.worker_poll_count(worker)
}

#[cfg(not(tokio_unstable))]
fn poll_count(_: &tokio::runtime::RuntimeMetrics, _: usize) -> u64 {
    0
}
