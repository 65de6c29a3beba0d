//! `delouse threads` against gdb's `thread apply all bt`, side by side in
//! one run, on the `threads` target with `--threads 200` (about 210 OS
//! threads, release build): wall time of each, how long each held the
//! process up (the longest gap of the target's 1 ms ticker thread while it
//! ran: gdb stops every thread for its whole run), the agent's longest time
//! in its signal handler, and the target's resident memory before and after
//! 20 dumps.
//!
//! `delouse` is timed without its symbol cache (every run reads,
//! decompresses and indexes the debug info, as the first run on a machine
//! does), with the libraries' entries cached but not the executable's (a
//! new build on a machine delouse ran on before), and with it warm.
//!
//! Goals: ≥10× faster than gdb (without the cache), no thread over 1 ms in
//! the handler, RSS growth under 2 MB after 20 dumps.
//!
//! Run: `scripts/bench` (builds the release CLI first), or
//! `cargo build --release -p delouse-cli && cargo bench -p delouse-tests --bench threads`.

mod common;
#[allow(dead_code, reason = "shared with the integration tests")]
#[path = "../tests/util/mod.rs"]
mod util;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{cli_json, cli_wall_ms, median, memory_kb};
use util::Target;

const EXTRA_THREADS: usize = 200;
/// Rounds of one run of each measured command.
const ROUNDS: usize = 5;
const RSS_DUMPS: usize = 20;

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// The ticker's longest gap since the previous call, in ms.
fn take_gap_ms(target: &mut Target) -> f64 {
    let stats = target.send_stats("gap");
    stats.num("ticker_max_gap_us") as f64 / 1000.0
}

/// Wall time of `delouse threads <pid>` (text to /dev/null), in ms.
fn delouse_wall_ms(pid: u32, cache: Option<&Path>) -> f64 {
    cli_wall_ms(&["threads", &pid.to_string()], cache)
}

fn delouse_json(pid: u32, cache: Option<&Path>) -> serde_json::Value {
    cli_json(&["threads", &pid.to_string()], cache)
}

/// One gdb run: wall ms and the number of frames it printed, or why not.
fn gdb_run(pid: u32) -> Result<(f64, usize), String> {
    let start = Instant::now();
    let out = Command::new("gdb")
        .args([
            "-batch",
            "-nx",
            "-p",
            &pid.to_string(),
            "-ex",
            "thread apply all bt",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run gdb: {e}"))?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let text = String::from_utf8_lossy(&out.stdout);
    let frames = text.lines().filter(|l| l.starts_with('#')).count();
    if frames == 0 {
        return Err(format!(
            "gdb printed no frames ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .take(3)
                .collect::<Vec<_>>()
                .join(" / ")
        ));
    }
    Ok((ms, frames))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn main() {
    let mut target = Target::start("threads", &["--threads", &EXTRA_THREADS.to_string()]);
    let pid = target.pid();
    std::thread::sleep(Duration::from_millis(300));
    let (rss_before, hwm_before) = memory_kb(pid);

    // The first dump also sets up the agent's signal and arena.
    let first = delouse_json(pid, None);
    let threads = first["threads"].as_array().map_or(0, Vec::len);
    let answered = first["threads"]
        .as_array()
        .map_or(0, |t| t.iter().filter(|t| t["stack"] == "frames").count());
    let delouse_frames: usize = first["threads"].as_array().map_or(0, |t| {
        t.iter()
            .map(|t| t["frames"].as_array().map_or(0, Vec::len))
            .sum()
    });

    // Rounds of one run of each: delouse without the cache, with only the
    // libraries' entries cached, with the cache warm, and gdb, so that a
    // slow spell of the machine weighs on all of them alike.
    let cache = tempfile::tempdir().expect("a cache directory");
    delouse_wall_ms(pid, Some(cache.path()));
    // A new build of a program on a machine delouse ran on before: the
    // libraries' entries are cached, the executable's are not.
    let exe_cache = cli_json(&["elf", &pid.to_string()], None)["build_id"]
        .as_str()
        .map(|id| cache.path().join(format!("{id}.sym1")));
    let mut gdb_failed = if Command::new("gdb").arg("--version").output().is_ok() {
        None
    } else {
        Some("not installed".to_owned())
    };
    let (mut cold, mut cold_stalls, mut new_build, mut warm) = (vec![], vec![], vec![], vec![]);
    let (mut gdb_walls, mut gdb_stalls, mut gdb_frames) = (vec![], vec![], 0);
    for _ in 0..ROUNDS {
        take_gap_ms(&mut target);
        cold.push(delouse_wall_ms(pid, None));
        cold_stalls.push(take_gap_ms(&mut target));
        if let Some(file) = &exe_cache {
            let _ = std::fs::remove_file(file);
            new_build.push(delouse_wall_ms(pid, Some(cache.path())));
        }
        warm.push(delouse_wall_ms(pid, Some(cache.path())));
        if gdb_failed.is_none() {
            take_gap_ms(&mut target);
            match gdb_run(pid) {
                Ok((ms, f)) => {
                    gdb_walls.push(ms);
                    gdb_frames = f;
                    gdb_stalls.push(take_gap_ms(&mut target));
                }
                Err(why) => gdb_failed = Some(why),
            }
        }
    }
    target.assert_alive();
    let (wall, delouse_stall, warm_wall) = (median(cold), median(cold_stalls), median(warm));
    let new_build_wall = (!new_build.is_empty()).then(|| median(new_build));

    let mut max_handler_us = 0f64;
    let mut agent_ms = Vec::new();
    let mut exchange_ms = Vec::new();
    let mut symbolize_ms = Vec::new();
    for _ in 0..RSS_DUMPS {
        let json = delouse_json(pid, None);
        max_handler_us = max_handler_us.max(json["max_handler_us"].as_f64().unwrap_or(f64::NAN));
        agent_ms.push(json["agent_elapsed_ms"].as_f64().unwrap_or(f64::NAN));
        exchange_ms.push(json["timings"]["exchange_ms"].as_f64().unwrap_or(f64::NAN));
        symbolize_ms.push(json["timings"]["symbolize_ms"].as_f64().unwrap_or(f64::NAN));
    }
    std::thread::sleep(Duration::from_millis(100));
    let (rss_after, hwm_after) = memory_kb(pid);
    target.assert_alive();

    println!(
        "target: `threads --threads {EXTRA_THREADS}`, {threads} OS threads, {answered} answered; \
         {} dumps in all",
        2 + ROUNDS * (2 + usize::from(exe_cache.is_some())) + RSS_DUMPS
    );
    println!(
        "{:<30} {:>12} {:>12} {:>12}   goal",
        "", "delouse", "gdb", "gdb/delouse"
    );
    let gdb = match gdb_failed {
        None => Some((median(gdb_walls), median(gdb_stalls), gdb_frames)),
        Some(why) => {
            println!("gdb skipped: {why}");
            None
        }
    };

    let ratio = |d: f64, g: f64| format!("{:.1}×", g / d);
    match gdb {
        Some((gdb_wall, gdb_stall, gdb_frames)) => {
            println!(
                "{:<30} {:>12.1} {:>12.1} {:>12}   ≥10× faster: {}",
                format!("wall ms, no cache ({ROUNDS} rounds)"),
                wall,
                gdb_wall,
                ratio(wall, gdb_wall),
                verdict(gdb_wall / wall >= 10.0)
            );
            if let Some(w) = new_build_wall {
                println!(
                    "{:<30} {:>12.1} {:>12.1} {:>12}",
                    "  libraries cached, exe new",
                    w,
                    gdb_wall,
                    ratio(w, gdb_wall),
                );
            }
            println!(
                "{:<30} {:>12.1} {:>12.1} {:>12}",
                "  with symbol cache warm",
                warm_wall,
                gdb_wall,
                ratio(warm_wall, gdb_wall),
            );
            println!(
                "{:<30} {:>12.1} {:>12.1} {:>12}",
                "ticker held up ms (median)",
                delouse_stall,
                gdb_stall,
                ratio(delouse_stall, gdb_stall)
            );
            println!(
                "{:<30} {:>12} {:>12}",
                "frames printed", delouse_frames, gdb_frames
            );
        }
        None => {
            println!(
                "{:<30} {:>12.1}",
                format!("wall ms, no cache ({ROUNDS} rounds)"),
                wall
            );
            if let Some(w) = new_build_wall {
                println!("{:<30} {:>12.1}", "  libraries cached, exe new", w);
            }
            println!("{:<30} {:>12.1}", "  with symbol cache warm", warm_wall);
            println!("{:<30} {:>12.1}", "ticker held up ms", delouse_stall);
            println!("{:<30} {:>12}", "frames printed", delouse_frames);
        }
    }
    println!(
        "{:<30} {:>12.1} {:>12} {:>12}   ≤1000 µs: {}",
        format!("max handler µs ({RSS_DUMPS} dumps)"),
        max_handler_us,
        "",
        "",
        verdict(max_handler_us <= 1000.0)
    );
    let growth = rss_after as i64 - rss_before as i64;
    println!(
        "{:<30} {:>5.1} → {:>5.1} ({:+.2})   < 2 MB: {}",
        format!("target RSS MB, {RSS_DUMPS}+ dumps"),
        mb(rss_before),
        mb(rss_after),
        growth as f64 / 1024.0,
        verdict(growth < 2048)
    );
    println!(
        "{:<30} {:>5.1} → {:>5.1}",
        "target peak RSS (VmHWM) MB",
        mb(hwm_before),
        mb(hwm_after)
    );
    println!(
        "delouse medians over {RSS_DUMPS} --json dumps: agent {:.1} ms, exchange {:.1} ms, \
         symbolize {:.1} ms (no cache); wall: `delouse threads <pid>` text to /dev/null; ticker held up: \
         longest gap of a thread sleeping 1 ms in a loop, during the run",
        median(agent_ms),
        median(exchange_ms),
        median(symbolize_ms)
    );
}
