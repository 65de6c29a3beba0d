//! `Threads` requests: a backtrace of every OS thread, taken without
//! stopping the process (docs/threads.md).
//!
//! 1. Read each thread's name, state, CPU time, system call and blocked
//!    signals from `/proc/self/task` first.
//! 2. Send one real-time signal to each thread that does not block it; the
//!    handler copies registers and the stack (`signal.rs`).
//! 3. Past the deadline, threads that did not answer are reported as such.
//! 4. Unwind the copies here, on the agent thread (`unwind.rs`).

mod signal;
mod unwind;

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use delouse_proto::{AgentError, Answer, ErrorKind, Response, Thread, ThreadDump, ThreadStack};

use crate::builder::Shared;
use crate::exclusive::Exclusive;
use crate::procfs;

/// Longest wait for threads to answer the signal.
const MAX_WAIT: Duration = Duration::from_secs(1);
/// Threads signalled at once.
const WAVE: usize = 8;
/// How long a wave may keep the next waiting.
const WAVE_WAIT: Duration = Duration::from_millis(5);

static SAMPLING: AtomicBool = AtomicBool::new(false);

/// Why a thread was not sampled when the request's deadline came first.
const OUT_OF_TIME: &str =
    "the request's deadline came before its turn: retry with a longer --timeout";

/// What `/proc` says of one thread.
struct Info {
    /// Read after the time for reading had passed: nothing but the id.
    late: bool,
    tid: u32,
    name: String,
    state: char,
    user_ms: u64,
    system_ms: u64,
    syscall: Option<u64>,
    blocks: bool,
}

pub(crate) async fn dump(shared: &Shared, deadline: Instant) -> Response {
    let Some(_exclusive) = Exclusive::take(&SAMPLING) else {
        return Err(AgentError::new(
            ErrorKind::InProgress,
            format!(
                "thread dump in progress: pid {} is sampling its threads for another request (another client's, \
                 or one whose client gave up); try again in a moment",
                shared.pid
            ),
        ));
    };
    let start = Instant::now();
    let Some(sig) = signal::signal() else {
        return Err(AgentError::new(
            ErrorKind::Unsupported,
            "every real-time signal is taken by the application, so threads cannot be sampled",
        ));
    };
    let me = signal::gettid();
    // Reading and signalling end by half the time left, so that unwinding
    // and sending the answer fit in the rest.
    let budget_end = start + deadline.saturating_duration_since(start) / 2;
    // `/proc` takes some 40 µs a thread: on a process with thousands of
    // threads and a short deadline, it gets half of that time, so that the
    // threads read (the lowest ids first: the main thread and the runtime's
    // workers) can still be signalled; the others are listed without
    // details and not signalled. The first wave is always read and sent,
    // however late, so that a slow machine still gets an answer.
    let infos = read_threads(sig, start + budget_end.saturating_duration_since(start) / 2);
    // The unwind tables before the signals, so that a library a thread is
    // interrupted in and that is unloaded right after is still known; one
    // loaded meanwhile is looked for again after the capture.
    let mut stacks = unwind::Stacks::new();
    // In the order of `infos`: sorted by id.
    let targets: Vec<u32> = infos
        .iter()
        .filter(|t| !t.blocks && !t.late && t.tid != me)
        .map(|t| t.tid)
        .collect();
    let Some(capture) = signal::Capture::arm(&targets, &stack_maps()) else {
        return Err(AgentError::new(
            ErrorKind::Internal,
            "cannot map memory for the stack copies",
        ));
    };
    // Signal in small waves: two hundred threads woken at once on a few
    // cores would each wait for a CPU inside the handler, holding them all
    // up for milliseconds. A wave that does not answer within WAVE_WAIT
    // (threads stopped or in uninterruptible sleep) does not hold the next.
    // Past the deadline no more waves are sent: those threads are listed
    // as not sampled.
    let mut sent = 0;
    let mut signalled = 0;
    for (k, wave) in targets.chunks(WAVE).enumerate() {
        if k > 0 && Instant::now() >= budget_end {
            break;
        }
        signalled += wave.len();
        sent += wave.iter().filter(|&&tid| signal::tgkill(tid, sig)).count();
        let wave_end = Instant::now() + WAVE_WAIT;
        while capture.answered() < sent && Instant::now() < wave_end.min(budget_end) {
            std::thread::yield_now();
        }
    }
    // The last waves get up to MAX_WAIT.
    let until = budget_end.min(Instant::now() + MAX_WAIT);
    // Threads that exit after the signal was sent never answer: count them
    // now and then, so they do not hold the answer until the deadline.
    let mut gone = 0;
    let mut checked = Instant::now();
    while capture.answered() + gone < sent && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(1)).await;
        if checked.elapsed() >= Duration::from_millis(50) {
            gone = targets
                .iter()
                .filter(|tid| !std::path::Path::new(&format!("/proc/self/task/{tid}")).exists())
                .count();
            checked = Instant::now();
        }
    }
    let mut saved = capture.finish();
    saved.sort_unstable_by_key(|(tid, _)| *tid);

    let mut later: Option<unwind::Stacks> = None;
    let mut max_handler_ns = 0;
    let threads = infos
        .into_iter()
        .map(|info| {
            let stack = if info.tid == me {
                ThreadStack::NotSampled("the delouse agent's own thread".into())
            } else if info.late || targets[signalled..].binary_search(&info.tid).is_ok() {
                ThreadStack::NotSampled(OUT_OF_TIME.into())
            } else if info.blocks {
                ThreadStack::SignalsBlocked
            } else if let Ok(i) = saved.binary_search_by_key(&info.tid, |(tid, _)| *tid) {
                let s = &saved[i].1;
                max_handler_ns = max_handler_ns.max(s.handler_ns);
                let mut walk = stacks.unwind(s);
                if walk.left_modules {
                    // Maybe a library loaded since the tables were read.
                    let again = later.get_or_insert_with(unwind::Stacks::new).unwind(s);
                    if !again.left_modules || again.frames.len() > walk.frames.len() {
                        walk = again;
                    }
                }
                ThreadStack::Frames {
                    addresses: walk.frames,
                    truncated: walk.truncated,
                }
            } else {
                ThreadStack::NoAnswer
            };
            Thread {
                tid: info.tid,
                name: info.name,
                state: info.state,
                user_ms: info.user_ms,
                system_ms: info.system_ms,
                syscall: info.syscall,
                is_agent: info.tid == me,
                stack,
            }
        })
        .collect();
    drop(saved);
    Ok(Answer::Threads(ThreadDump {
        threads,
        modules: procfs::modules(),
        signal: sig,
        max_handler_ns,
        elapsed_us: start.elapsed().as_micros() as u64,
    }))
}

/// Clock ticks per second of `/proc` CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: u64 = 100;

/// The threads of this process, with what `/proc` says of those reached
/// before `until` (and of the first [`WAVE`], whenever).
fn read_threads(sig: i32, until: Instant) -> Vec<Info> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut tids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids.into_iter()
        .enumerate()
        .filter_map(|(i, tid)| {
            if i >= WAVE && Instant::now() >= until {
                return Some(Info::late(tid));
            }
            let base = format!("/proc/self/task/{tid}");
            let stat = std::fs::read_to_string(format!("{base}/stat")).ok()?;
            let (name, fields) = split_stat(&stat)?;
            let ticks = |i: usize| {
                fields
                    .get(i)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
                    * 1000
                    / TICKS_PER_SEC
            };
            let status = std::fs::read_to_string(format!("{base}/status")).unwrap_or_default();
            Some(Info {
                late: false,
                tid,
                name: name.to_owned(),
                state: fields.first().and_then(|s| s.chars().next()).unwrap_or('?'),
                // Fields 14 and 15 of stat; `fields` starts at field 3.
                user_ms: ticks(11),
                system_ms: ticks(12),
                syscall: std::fs::read_to_string(format!("{base}/syscall"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse().ok()),
                blocks: blocks_signal(&status, sig),
            })
        })
        .collect()
}

/// A `stat` line, `pid (name) state ...`, as the thread's name (its `comm`,
/// which may itself hold spaces and parentheses) and the fields from the
/// state on.
fn split_stat(stat: &str) -> Option<(&str, Vec<&str>)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let name = stat.get(open + 1..close)?;
    Some((name, stat[close + 1..].split_whitespace().collect()))
}

impl Info {
    fn late(tid: u32) -> Info {
        Info {
            late: true,
            tid,
            name: String::new(),
            state: '?',
            user_ms: 0,
            system_ms: 0,
            syscall: None,
            blocks: false,
        }
    }
}

/// Whether a `/proc/.../status` text shows `sig` in the blocked mask.
fn blocks_signal(status: &str, sig: i32) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|mask| sig > 0 && mask & (1 << (sig - 1)) != 0)
}

/// Mappings a thread stack can live in, sorted, adjacent ones merged: the
/// handler copies from the stack pointer to the end of its run. Only
/// private read-write mappings, anonymous, `[stack]` or `[heap]` (where
/// green threads keep stacks): never a file, nor
/// the kernel's `[vvar]` pages, which some configurations fault on.
fn stack_maps() -> Vec<[u64; 2]> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    let mut out: Vec<[u64; 2]> = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let name = f.nth(3).unwrap_or("");
        if !perms.starts_with("rw") || !matches!(name, "" | "[stack]" | "[heap]") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        match out.last_mut() {
            Some(last) if last[1] == a => last[1] = b,
            _ => out.push([a, b]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_mask() {
        let status = "Name:\tx\nSigBlk:\t0000000200000000\n";
        assert!(blocks_signal(status, 34));
        assert!(!blocks_signal(status, 33));
        assert!(!blocks_signal("Name:\tx\n", 34));
    }

    #[test]
    fn stat_lines() {
        let (name, fields) = split_stat("12 (a (b) c) S 1 2").unwrap();
        assert_eq!(name, "a (b) c");
        assert_eq!(fields, ["S", "1", "2"]);
        assert_eq!(split_stat("12 () R").unwrap().0, "");
        assert!(split_stat("garbage").is_none());
        assert!(split_stat("1 )x( S").is_none());
    }

    #[test]
    fn maps_are_sorted_and_merged() {
        let maps = stack_maps();
        assert!(!maps.is_empty());
        assert!(maps.windows(2).all(|w| w[0][1] < w[1][0]));
    }
}
