//! `delouse threads` end to end: the `threads` target (a stable set of
//! named threads, one blocking every signal, an application SIGUSR1
//! handler) and the `stress` target (threads busy in malloc, dlopen, panics
//! and backtraces while they are interrupted again and again).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{
    self, Cli, Run, Stats, Target, Wait, delouse, file_ends_with, is_fn, line, marker_line, serial,
};

const THREADS_RS: &str = include_str!("../../src/bin/threads.rs");

/// `delouse threads <pid> --json [extra...]`, asserted to succeed; when it
/// fails and the target is gone, says how the target ended.
fn threads_json(target: &mut Target, extra: &[&str]) -> (Run, Value) {
    let pid = target.pid_arg();
    let mut args = vec!["threads", pid.as_str(), "--json"];
    args.extend_from_slice(extra);
    let run = delouse(&args);
    check_threads_run(target, &run, "");
    let json = run.json();
    assert_eq!(json["pid"].as_u64(), Some(u64::from(target.pid())), "{run}");
    (run, json)
}

/// Fails the test when a `threads` run did not succeed, saying first
/// whether the target died (`when` says which request it was).
fn check_threads_run(target: &mut Target, run: &Run, when: &str) {
    if run.code() != Some(0) {
        target.assert_running(&format!("{when}during\n{run}"));
        panic!("{when}expected success:\n{run}");
    }
}

/// The threads of an answer.
fn threads(json: &Value) -> &[Value] {
    json["threads"].as_array().map_or(&[], Vec::as_slice)
}

/// The frames of a thread.
fn frames(thread: &Value) -> &[Value] {
    thread["frames"].as_array().map_or(&[], Vec::as_slice)
}

/// The one thread with id `tid`.
fn by_tid(json: &Value, tid: u64) -> &Value {
    let found: Vec<_> = threads(json)
        .iter()
        .filter(|t| t["tid"].as_u64() == Some(tid))
        .collect();
    assert_eq!(found.len(), 1, "tid {tid}:\n{}", describe_threads(json));
    found[0]
}

/// The one thread named `name`.
fn by_name<'a>(json: &'a Value, name: &str) -> &'a Value {
    let found: Vec<_> = threads(json).iter().filter(|t| t["name"] == name).collect();
    assert_eq!(
        found.len(),
        1,
        "thread '{name}':\n{}",
        describe_threads(json)
    );
    found[0]
}

/// The thread ids in `/proc/<pid>/task` now.
fn proc_tids(pid: u32) -> BTreeSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("read /proc/<pid>/task")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// A compact rendering of an answer, for assertion messages.
fn describe_threads(json: &Value) -> String {
    let mut out = format!(
        "agent_elapsed_ms={} total_ms={} max_handler_us={} signal={}\n",
        json["agent_elapsed_ms"], json["total_ms"], json["max_handler_us"], json["signal"]
    );
    for t in threads(json) {
        out.push_str(&format!(
            "  {} {:?} {} role={} stack={} truncated={} syscall={}\n",
            t["tid"],
            t["name"],
            t["state"],
            t["role"],
            t["stack"],
            t["truncated"],
            t["syscall_name"]
        ));
        for f in frames(t).iter().take(24) {
            out.push_str(&format!(
                "      {} {}:{} app={}{}\n",
                f["function"].as_str().unwrap_or("?"),
                f["file"].as_str().unwrap_or("?"),
                f["line"],
                f["app"],
                if f["inlined"] == true {
                    " [inlined]"
                } else {
                    ""
                }
            ));
        }
    }
    out
}

/// Whether some frame of `thread` is the Rust function `name`.
fn has_fn(thread: &Value, name: &str) -> bool {
    frames(thread).iter().any(|f| is_fn(f, name))
}

/// The `threads` target, every thread listed; their ids are the ones in
/// `/proc/<pid>/task` right after the answer; roles, names and stacks are
/// where the target put them.
#[test]
fn threads_lists_every_thread_of_proc_task() {
    let _serial = serial();
    let mut target = Target::start("threads", &["--threads", "3"]);
    let stats = target.stats();
    let (_run, json) = threads_json(&mut target, &[]);
    let now = proc_tids(target.pid());
    let text = describe_threads(&json);

    let listed: Vec<u64> = threads(&json)
        .iter()
        .filter_map(|t| t["tid"].as_u64())
        .collect();
    let listed_set: BTreeSet<u64> = listed.iter().copied().collect();
    assert_eq!(
        listed.len(),
        threads(&json).len(),
        "a tid is missing:\n{text}"
    );
    assert_eq!(
        listed.len(),
        listed_set.len(),
        "a tid listed twice:\n{text}"
    );
    assert_eq!(
        listed_set,
        now,
        "listed vs /proc/{}/task:\n{text}",
        target.pid()
    );

    let pid = u64::from(target.pid());
    let main = by_tid(&json, pid);
    assert_eq!(main["role"], "main", "{text}");
    assert_eq!(main["name"], "threads", "{text}");

    let agents: Vec<_> = threads(&json)
        .iter()
        .filter(|t| t["role"] == "delouse agent")
        .collect();
    assert_eq!(agents.len(), 1, "{text}");
    assert_eq!(agents[0]["name"], "delouse-agent", "{text}");
    assert_eq!(agents[0]["stack"], "not sampled", "{text}");

    let workers = threads(&json)
        .iter()
        .filter(|t| t["role"] == "tokio worker")
        .count();
    assert_eq!(workers, 2, "the target runs 2 workers:\n{text}");
    let blocking = by_tid(&json, stats.num("blocking_tid"));
    assert_eq!(blocking["role"], "tokio blocking", "{text}");
    assert_eq!(blocking["name"], "tokio-rt-worker", "{text}");
    assert!(has_fn(blocking, "blocking_wait"), "{text}");

    for name in [
        "sleeper",
        "sigblocker",
        "vforker",
        "ticker",
        "control",
        "idle-0",
        "idle-2",
    ] {
        assert_eq!(by_name(&json, name)["role"], "other", "{name}:\n{text}");
    }
    for i in 0..3 {
        assert!(
            has_fn(by_name(&json, &format!("idle-{i}")), "idle_park"),
            "{text}"
        );
    }
    let sleeper = by_tid(&json, stats.num("sleeper_tid"));
    assert_eq!(sleeper["name"], "sleeper", "{text}");
    assert_eq!(sleeper["state"], "S", "{text}");
    assert_eq!(sleeper["state_name"], "sleeping", "{text}");
    assert!(sleeper["syscall"].as_u64().is_some(), "{text}");
    assert!(
        sleeper["syscall_name"]
            .as_str()
            .is_some_and(|s| s.contains("sleep")),
        "{text}"
    );

    for t in threads(&json) {
        assert!(t["user_ms"].as_u64().is_some(), "{text}");
        assert!(t["system_ms"].as_u64().is_some(), "{text}");
        assert!(t["state"].as_str().is_some_and(|s| s.len() == 1), "{text}");
        assert!(
            t["state_name"].as_str().is_some_and(|s| !s.is_empty()),
            "{text}"
        );
        let sampled = t["role"] != "delouse agent" && t["name"] != "sigblocker";
        if !sampled {
            assert!(frames(t).is_empty(), "{text}");
            continue;
        }
        assert_eq!(t["stack"], "frames", "tid {}:\n{text}", t["tid"]);
        assert_eq!(t["truncated"], false, "tid {}:\n{text}", t["tid"]);
        assert!(frames(t).len() >= 3, "tid {}:\n{text}", t["tid"]);
        assert!(
            frames(t)
                .iter()
                .all(|f| f["address"].as_str().is_some_and(|a| a.starts_with("0x"))),
            "tid {}:\n{text}",
            t["tid"]
        );
        // Threads the application started run some of its code.
        let app_thread = t["role"] == "main" || t["role"] == "other";
        assert!(
            !app_thread || frames(t).iter().any(|f| f["app"] == true),
            "no application frame in tid {}:\n{text}",
            t["tid"]
        );
    }

    // `--name` keeps the threads whose name has the pattern.
    let (_run, only) = threads_json(&mut target, &["--name", "sleep"]);
    let names: Vec<&str> = threads(&only)
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["sleeper"], "{}", describe_threads(&only));
    target.assert_alive();
}

/// The sleeping thread's stack runs from libc's sleep through
/// `std::thread::sleep` to the marked line of `sleeper_sleep`.
#[test]
fn sleeping_thread_shows_the_marked_line() {
    let _serial = serial();
    let mut target = Target::start("threads", &[]);
    let sleep_line = marker_line(THREADS_RS, "thread-sleep");
    let (_run, json) = threads_json(&mut target, &[]);
    let text = describe_threads(&json);
    let sleeper = by_name(&json, "sleeper");
    let frames = frames(sleeper);

    let marked = frames.iter().position(|f| {
        is_fn(f, "sleeper_sleep")
            && f["app"] == true
            && file_ends_with(f, "threads.rs")
            && line(f) == Some(sleep_line)
    });
    let Some(marked) = marked else {
        panic!("no frame sleeper_sleep at threads.rs:{sleep_line}:\n{text}");
    };
    let std_sleep = frames.iter().position(|f| {
        f["function"]
            .as_str()
            .is_some_and(|n| n.contains("thread::") && n.contains("sleep"))
    });
    assert!(
        std_sleep.is_some_and(|s| s < marked),
        "std::thread::sleep should be inside (before) sleeper_sleep:\n{text}"
    );
    assert_eq!(
        frames[0]["app"], false,
        "the innermost frame is libc's:\n{text}"
    );
    assert_eq!(sleeper["truncated"], false, "{text}");
}

/// With both workers of a runtime stuck in blocking code (the runtime
/// wedged), `threads` answers and shows each worker at the blocking line.
#[test]
fn threads_answer_while_the_runtime_is_wedged() {
    let _serial = serial();
    let mut target = Target::start("blocked", &[]);
    let sleep_line = marker_line(crate::BLOCKED_RS, "blocking-sleep");
    crate::block(&mut target, 6);
    crate::block(&mut target, 6);
    let (_run, json) = threads_json(&mut target, &[]);
    let text = describe_threads(&json);
    let stuck: Vec<&Value> = threads(&json)
        .iter()
        .filter(|t| {
            frames(t).iter().any(|f| {
                is_fn(f, "block_worker")
                    && file_ends_with(f, "blocked.rs")
                    && line(f) == Some(sleep_line)
            })
        })
        .collect();
    assert_eq!(
        stuck.len(),
        2,
        "both workers should be at blocked.rs:{sleep_line}:\n{text}"
    );
    for t in stuck {
        assert_eq!(t["role"], "tokio worker", "{text}");
        assert_eq!(t["truncated"], false, "{text}");
    }
    crate::assert_recovers(&mut target, 2);
}

/// A thread in code without unwind information that moved the stack
/// pointer: the walk keeps its interrupted function and stops there, says
/// so, and shows none of the frames a guessed return address would lead to.
#[cfg(target_arch = "x86_64")]
#[test]
fn code_without_unwind_tables_stops_the_walk() {
    let _serial = serial();
    let mut target = Target::start("threads", &["--nocfi", "1"]);
    let (_run, json) = threads_json(&mut target, &["--name", "nocfi"]);
    let t = by_name(&json, "nocfi");
    let names: Vec<&str> = frames(t)
        .iter()
        .map(|f| f["function"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["nocfi_sleep"], "{}", describe_threads(&json));
    assert_eq!(t["walk"], "stopped", "{t}");
    assert_eq!(t["truncated"], true, "{t}");
    target.assert_alive();
}

/// A copy of the `threads` target stripped of its unwind tables
/// (`.eh_frame`, `.eh_frame_hdr`): each walk keeps what libc's tables give,
/// up to the first frame in the executable, which is real, and stops there,
/// marked so.
#[test]
fn a_binary_without_unwind_tables_keeps_its_first_frame() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("threads-no-eh-frame");
    let out = std::process::Command::new("objcopy")
        .args([
            "--remove-section",
            ".eh_frame",
            "--remove-section",
            ".eh_frame_hdr",
        ])
        .arg(util::bin_path("threads"))
        .arg(&copy)
        .output()
        .expect("run objcopy (binutils)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut target = Target::launch("threads", &copy, &[], None, Wait::Socket);
    let (_run, json) = threads_json(&mut target, &["--name", "sleeper"]);
    let text = describe_threads(&json);
    let sleeper = by_name(&json, "sleeper");
    let frames = frames(sleeper);
    // Physical frames (the others are calls inlined into them): libc's
    // `clock_nanosleep`, then the executable's `std::thread::sleep`.
    let physical: Vec<&str> = frames
        .iter()
        .filter(|f| f["inlined"] == false)
        .map(|f| f["function"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        physical.len(),
        2,
        "libc's frame, then the executable's first only:\n{text}"
    );
    assert!(physical[1].contains("sleep"), "{text}");
    assert_eq!(sleeper["walk"], "stopped", "{text}");
    target.assert_alive();
}

/// A short --timeout on a process with thousands of threads still gets an
/// answer in time: the threads the agent had no time for are listed as not
/// sampled, saying why, instead of the whole request timing out.
#[test]
fn a_short_timeout_on_many_threads_answers_in_time() {
    let _serial = serial();
    let mut target = Target::start("threads", &["--threads", "3000"]);
    let run = delouse(&["threads", &target.pid_arg(), "--json", "--timeout", "300ms"]);
    check_threads_run(&mut target, &run, "");
    let json = run.json();
    let listed = threads(&json);
    assert!(listed.len() > 3000, "{} threads", listed.len());
    for t in listed {
        // A thread signalled near the deadline may not answer in time on a
        // busy machine.
        let ok = match t["stack"].as_str() {
            Some("frames" | "signals blocked" | "no answer") => true,
            Some("not sampled") => {
                t["role"] == "delouse agent"
                    || t["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("deadline came before its turn"))
            }
            _ => false,
        };
        assert!(ok, "unexpected: {t}");
    }
    eprintln!("300ms on {} threads: {}", listed.len(), json["counts"]);
    // The lowest ids are read and signalled first: the main thread is.
    let main = by_tid(&json, u64::from(target.pid()));
    assert_ne!(main["stack"], "not sampled", "{main}");
    target.assert_alive();
}

/// A thread that blocks every signal is reported as such, and the answer
/// does not wait for it.
#[test]
fn signal_blocking_thread_does_not_delay_the_answer() {
    let _serial = serial();
    let mut target = Target::start("threads", &[]);
    for _ in 0..3 {
        let (run, json) = threads_json(&mut target, &["--timeout", "10s"]);
        let text = describe_threads(&json);
        let blocker = by_name(&json, "sigblocker");
        assert_eq!(blocker["stack"], "signals blocked", "{text}");
        assert!(frames(blocker).is_empty(), "{text}");
        assert!(
            threads(&json).iter().all(|t| t["stack"] != "no answer"),
            "{text}"
        );
        // Waiting for the blocker would take the agent's whole wait (1 s).
        let agent_ms = json["agent_elapsed_ms"].as_f64().expect("agent_elapsed_ms");
        assert!(agent_ms < 500.0, "the agent took {agent_ms} ms:\n{text}");
        assert!(
            run.elapsed < Duration::from_secs(2),
            "answered after {:?}:\n{run}",
            run.elapsed
        );
    }
    target.assert_alive();
}

/// A thread in uninterruptible sleep (a `vfork` parent waiting for its
/// child) cannot run the handler: it is reported as "no answer" after the
/// agent's wait (1 s at most), well before the deadline; once it wakes up,
/// the signals still pending for it are handled harmlessly and the next dump
/// has its stack again.
#[test]
fn unanswering_thread_is_reported_in_time() {
    let _serial = serial();
    let mut target = Target::start("threads", &[]);
    let tid = target.stats().num("vforker_tid");
    assert_eq!(target.send("vfork 5"), "vforking 5");
    for _ in 0..2 {
        let (run, json) = threads_json(&mut target, &["--timeout", "4s"]);
        let text = describe_threads(&json);
        let vforker = by_tid(&json, tid);
        assert_eq!(vforker["stack"], "no answer", "{text}");
        assert_eq!(vforker["state"], "D", "{text}");
        assert!(frames(vforker).is_empty(), "{text}");
        let late: Vec<_> = threads(&json)
            .iter()
            .filter(|t| t["stack"] == "no answer")
            .collect();
        assert_eq!(late.len(), 1, "only the vforker is late:\n{text}");
        let agent_ms = json["agent_elapsed_ms"].as_f64().expect("agent_elapsed_ms");
        assert!(
            (900.0..2000.0).contains(&agent_ms),
            "the agent should wait about 1 s, took {agent_ms} ms:\n{text}"
        );
        assert!(
            run.elapsed < Duration::from_secs(3),
            "answered after {:?}:\n{run}",
            run.elapsed
        );
    }
    let stats = target.wait_stats(Duration::from_secs(15), |s| s.get("vforks_done") == Some(1));
    assert_eq!(stats.get("vforks_done"), Some(1), "{}", stats.line);
    let (_run, json) = threads_json(&mut target, &[]);
    let vforker = by_tid(&json, tid);
    assert_eq!(vforker["stack"], "frames", "{}", describe_threads(&json));
    assert!(has_fn(vforker, "vforker"), "{}", describe_threads(&json));
    assert_eq!(target.send_stats("sigusr1").get("sigusr1"), Some(1));
    target.assert_alive();
}

/// The application's own SIGUSR1 handler still runs after 50 dumps, and
/// the agent's signal is a real-time one, not the application's.
#[test]
fn app_signal_handler_survives_thread_dumps() {
    let _serial = serial();
    let mut target = Target::start("threads", &[]);
    assert_eq!(target.send_stats("sigusr1").get("sigusr1"), Some(1));
    let mut signal = None;
    for _ in 0..50 {
        let (_run, json) = threads_json(&mut target, &[]);
        let sig = json["signal"].as_i64().expect("signal");
        assert!(
            (i64::from(libc::SIGRTMIN())..=i64::from(libc::SIGRTMAX())).contains(&sig),
            "signal {sig} is not a real-time signal"
        );
        assert!(signal.is_none_or(|s| s == sig), "the signal changed");
        signal = Some(sig);
    }
    assert_eq!(target.send_stats("sigusr1").get("sigusr1"), Some(2));
    target.assert_alive();
}

/// `tasks` and `threads` started at the same moment both answer.
#[test]
fn tasks_and_threads_at_the_same_time() {
    let _serial = serial();
    let mut target = Target::start("heartbeat", &[]);
    let pid = target.pid_arg();
    for _ in 0..10 {
        let tasks = Cli::new(&["tasks", &pid, "--json"]).spawn();
        let threads_run = Cli::new(&["threads", &pid, "--json"]).spawn();
        let tasks = tasks.finish();
        let threads_run = threads_run.finish();
        check_threads_run(&mut target, &threads_run, "");
        let tasks = tasks.ok();
        let json = tasks.json();
        assert_eq!(json["mode"], "traced", "{tasks}");
        assert_eq!(json["coverage"]["traced"], 301, "{tasks}");
        let json = threads_run.json();
        let workers = threads(&json)
            .iter()
            .filter(|t| t["role"] == "tokio worker" && t["stack"] == "frames")
            .count();
        assert_eq!(workers, 2, "{}", describe_threads(&json));
    }
    target.assert_alive();
}

/// `delouse threads` does not need `--cfg tokio_unstable`: the target
/// built without it lists its workers with their stacks.
#[test]
fn threads_work_without_tokio_unstable() {
    let _serial = serial();
    let exe = util::build_no_unstable_fixture();
    let mut target = Target::launch("no-unstable", &exe, &[], None, Wait::Socket);
    let (_run, json) = threads_json(&mut target, &[]);
    let text = describe_threads(&json);
    let workers: Vec<_> = threads(&json)
        .iter()
        .filter(|t| t["role"] == "tokio worker")
        .collect();
    assert_eq!(workers.len(), 2, "{text}");
    assert!(
        workers
            .iter()
            .all(|t| t["stack"] == "frames" && frames(t).len() >= 3),
        "{text}"
    );
    assert_eq!(
        by_tid(&json, u64::from(target.pid()))["role"],
        "main",
        "{text}"
    );
    target.assert_alive();
}

/// The churn loops of `stress` whose counters must keep advancing, the
/// name (prefix) of each loop's thread and the function it runs, and
/// whether a walk of it may claim to be complete without reaching that
/// function (see `Walks`).
const CHURN: [(&str, &str, &str); 4] = [
    ("malloc", "malloc-churn-", "malloc_churn"),
    ("dlopen", "dlopen-churn", "dlopen_churn"),
    ("panics", "panic-churn", "panic_churn"),
    ("backtraces", "backtrace-churn", "backtrace_churn"),
];

/// What the walks of one churn loop's thread gave.
#[derive(Debug, Default)]
struct Walks {
    /// Stacks of the thread (with frames).
    samples: u32,
    /// Stacks that reach the loop's function.
    reached: u32,
    /// Stacks marked complete (`truncated: false`) that do not reach it:
    /// wrong frames presented as a whole stack. (A thread interrupted
    /// inside libgcc's `_Unwind_Resume` while it installs a landing pad's
    /// registers gives wrong frames; the CLI marks those `in unwinder`.)
    complete_but_wrong: u32,
    /// The first such stack, for the message.
    example: Option<String>,
}

fn assert_churn_advanced(before: &Stats, after: &Stats) {
    for (key, ..) in CHURN {
        assert!(
            after.num(key) > before.num(key),
            "{key} stopped: {} -> {}",
            before.line,
            after.line
        );
    }
}

/// 300 dumps in a row of threads busy in malloc/free, dlopen/dlclose,
/// panics being unwound and backtraces being taken: every one answers with
/// frames for nearly every thread, the walks reach each loop's function,
/// no thread is held up (the heartbeat's longest gap, less the time it
/// waited for a CPU, under 100 ms), and the target lives on with every loop
/// still going.
#[test]
fn three_hundred_dumps_under_stress() {
    let _serial = serial();
    let mut target = Target::start("stress", &[]);
    let before = target.stats();
    let start = Instant::now();
    let mut agent_ms = Vec::new();
    let mut walks: [Walks; CHURN.len()] = Default::default();
    // The heartbeat's longest gap and stall so far, every 50 requests.
    let mut gaps = Vec::new();
    for i in 0..300 {
        let run = delouse(&["threads", &target.pid_arg(), "--json"]);
        check_threads_run(&mut target, &run, &format!("at request {} of 300, ", i + 1));
        let json = run.json();
        let text = || describe_threads(&json);
        let listed = threads(&json);
        let sampled = listed
            .iter()
            .filter(|t| t["role"] != "delouse agent")
            .count();
        let answered = listed
            .iter()
            .filter(|t| t["stack"] == "frames" && !frames(t).is_empty())
            .count();
        assert!(
            answered * 10 >= sampled * 9 && answered >= 8,
            "request {}: {answered} of {sampled} threads have frames:\n{}",
            i + 1,
            text()
        );
        for ((_, prefix, function), walks) in CHURN.iter().zip(&mut walks) {
            for t in listed.iter().filter(|t| {
                t["name"].as_str().is_some_and(|n| n.starts_with(prefix)) && t["stack"] == "frames"
            }) {
                walks.samples += 1;
                if has_fn(t, function) {
                    walks.reached += 1;
                } else if t["truncated"] == false {
                    walks.complete_but_wrong += 1;
                    walks.example.get_or_insert_with(|| {
                        let one = serde_json::json!({"threads": [t]});
                        format!("request {}: {}", i + 1, describe_threads(&one))
                    });
                }
            }
        }
        agent_ms.push(json["agent_elapsed_ms"].as_f64().unwrap_or(f64::NAN));
        if (i + 1) % 50 == 0 {
            let stats = target.stats();
            gaps.push((
                i + 1,
                stats.num("hb_max_gap_ms"),
                stats.num("hb_max_stall_ms"),
            ));
        }
    }
    let elapsed = start.elapsed();
    target.assert_running("after 300 `threads` requests");
    let after = target.stats();
    agent_ms.sort_by(f64::total_cmp);
    eprintln!(
        "300 dumps under stress: {elapsed:?} in all; agent median {:.1} ms, max {:.1} ms; \
         stats {}; (requests, longest heartbeat gap, stall) {gaps:?}; \
         walks of each loop's thread {:?}",
        agent_ms[150],
        agent_ms[299],
        after.line,
        walks
            .iter()
            .map(|w| (w.samples, w.reached, w.complete_but_wrong))
            .collect::<Vec<_>>()
    );

    // The gap less the time the heartbeat waited for a CPU: on two cores a
    // compiler or the CLI itself (symbolizing at normal priority) delays a
    // wake-up by a scheduling period or more, which is not the agent's
    // doing; a thread held in the handler, stopped or blocked counts.
    let stall = after.num("hb_max_stall_ms");
    assert!(
        stall < 100,
        "a thread was held up: {}; (requests, longest gap, longest stall): {gaps:?}",
        after.line
    );
    assert_churn_advanced(&before, &after);
    std::thread::sleep(Duration::from_millis(200));
    let later = target.stats();
    assert_churn_advanced(&after, &later);
    // Most walks of a busy thread get back to its loop's function (from
    // deep inside libc, ld.so or the unwinder); one that does not says it
    // may be cut short or wrong.
    for ((_, prefix, function), w) in CHURN.iter().zip(&walks) {
        assert!(
            w.samples >= 270 && w.reached * 10 >= w.samples * 9,
            "{prefix}*: {} of {} stacks reach {function}(); {w:?}",
            w.reached,
            w.samples
        );
        assert!(
            w.complete_but_wrong == 0,
            "{prefix}*: {} stacks marked complete miss {function}(); the first:\n{}",
            w.complete_but_wrong,
            w.example.as_deref().unwrap_or("")
        );
    }
    target.assert_alive();
}
