//! `delouse tasks` end to end against tokio's own in-process dump, on 10k
//! and 100k idle traced tasks (the `leak` target), side by side in one run:
//! the CLI's wall time, tokio's `Handle::dump()` + `resolve_backtraces()`
//! inside the target, their ratio, where the CLI's time went, and the
//! target's resident memory before and after the traces.
//!
//! Goals: ratio ≤ 1.0 at 100k, RSS growth under 10 MB after the traces.
//!
//! Run: `scripts/bench` (builds the release CLI first), or
//! `cargo build --release -p delouse-cli && cargo bench -p delouse-tests --bench tasks`.

mod common;
#[allow(dead_code, reason = "shared with the integration tests")]
#[path = "../tests/util/mod.rs"]
mod util;

use std::time::Duration;

use common::{cli_json, cli_wall_ms, median, memory_kb};
use util::Target;

const RUNS: usize = 5;

/// Without the CLI's symbol cache: every run reads the debug info.
fn tasks_wall_ms(pid: u32) -> f64 {
    cli_wall_ms(&["tasks", &pid.to_string(), "--timeout", "60s"], None)
}

fn tasks_json(pid: u32) -> serde_json::Value {
    cli_json(&["tasks", &pid.to_string(), "--timeout", "60s"], None)
}

fn rss_kb(pid: u32) -> u64 {
    memory_kb(pid).0
}

fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

fn main() {
    println!(
        "{:>7}  {:>11}  {:>11}  {:>6}  {:>9}  {:>10}  {:>9}  {:>14}",
        "tasks",
        "delouse ms",
        "in-proc ms",
        "ratio",
        "agent ms",
        "symbol. ms",
        "group ms",
        "target RSS MB"
    );
    for n in [10_000usize, 100_000] {
        let mut target = Target::start("leak", &["--tasks", &n.to_string()]);
        let pid = target.pid();
        std::thread::sleep(Duration::from_millis(300));
        let rss_before = rss_kb(pid);

        tasks_wall_ms(pid); // warm the page cache for the CLI and symbols
        let wall = median((0..RUNS).map(|_| tasks_wall_ms(pid)).collect());
        let json = tasks_json(pid);
        assert_eq!(
            json["coverage"]["traced"], n as u64,
            "not every task traced"
        );
        let rss_after = rss_kb(pid);

        // tokio's own dump resolves symbols in-process (+~30 MB for good),
        // so it runs after the memory figures are taken.
        let in_proc = median(
            (0..3)
                .map(|_| field(&target.send("selfdump"), "selfdump_ms"))
                .collect(),
        );
        let t = &json["timings"];
        println!(
            "{:>7}  {:>11.1}  {:>11.1}  {:>6.2}  {:>9.1}  {:>10.1}  {:>9.1}  {:>5.1} → {:>5.1} ({:+.1})",
            n,
            wall,
            in_proc,
            wall / in_proc,
            json["agent_elapsed_ms"].as_f64().unwrap_or(f64::NAN),
            t["symbolize_ms"].as_f64().unwrap_or(f64::NAN),
            t["group_ms"].as_f64().unwrap_or(f64::NAN),
            rss_before as f64 / 1024.0,
            rss_after as f64 / 1024.0,
            (rss_after as f64 - rss_before as f64) / 1024.0
        );
        target.assert_alive();
    }
    println!(
        "delouse ms: wall time of `delouse tasks <pid>` (median of {RUNS}, text to /dev/null); \
         in-proc ms: Handle::dump() + resolve_backtraces() inside the target (median of 3)"
    );
}
