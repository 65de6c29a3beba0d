//! End-to-end tests: start the target programs of `src/bin/`, drive the real
//! `delouse` CLI against them, and check what it reports and that the
//! targets keep running.
//!
//! The CLI is looked up next to this test binary (`target/debug/delouse`,
//! built by `cargo build -p delouse-cli`) or at `$DELOUSE_BIN`. Tests run
//! one at a time (see `util::serial`). The tests of `delouse threads` are
//! in `threads/`.

mod elf_crash;
mod threads;
mod util;

use std::time::{Duration, Instant};

use serde_json::Value;
use util::{
    Cli, Target, Wait, any_node, coverage, delouse, describe, file_ends_with, groups, has_chain,
    is_fn, line, marker_column, marker_line, ps_entry, serial, tasks_json, tree,
};

const HEARTBEAT_RS: &str = include_str!("../src/bin/heartbeat.rs");
const LEAK_RS: &str = include_str!("../src/bin/leak.rs");
const BLOCKED_RS: &str = include_str!("../src/bin/blocked.rs");

/// The groups of an answer in `state`.
fn in_state<'a>(json: &'a Value, state: &str) -> Vec<&'a Value> {
    groups(json)
        .iter()
        .filter(|g| g["state"] == state)
        .collect()
}

/// Whether a group's `spawned_at` is `<file ending in suffix>:<line>:<col>`.
fn spawned_at(group: &Value, file_suffix: &str, line: u64, column: u64) -> bool {
    group["spawned_at"]
        .as_str()
        .is_some_and(|s| s.ends_with(&format!("{file_suffix}:{line}:{column}")))
}

/// Asserts that a traced answer saw exactly `tasks` tasks, all in time.
fn assert_all_traced(json: &Value, tasks: u64) {
    assert_eq!(json["mode"], "traced", "{}", describe(json));
    assert_eq!(coverage(json, "traced"), Some(tasks), "{}", describe(json));
    assert_eq!(
        coverage(json, "not_polled_in_time"),
        Some(0),
        "{}",
        describe(json)
    );
}

/// Starts a block of `secs` on a `blocked` target, once its sleep began.
fn block(target: &mut Target, secs: u64) {
    assert_eq!(
        target.send(&format!("block {secs}")),
        format!("blocking {secs}")
    );
}

/// Waits for every block of a `blocked` target to end, then checks that
/// both workers came back.
fn assert_recovers(target: &mut Target, blocks: u64) {
    let stats = target.wait_stats(Duration::from_secs(20), |s| {
        s.get("blocks_done") == Some(blocks)
    });
    assert_eq!(stats.get("blocks_done"), Some(blocks), "{}", stats.line);
    target.assert_alive();
}

/// The targets themselves: `ready`, `check`, `stats`, `quit` and the end of
/// stdin. Needs no agent.
#[test]
fn targets_answer_their_control_commands() {
    let _serial = serial();
    let targets = [
        ("heartbeat", "waiters"),
        ("leak", "tasks"),
        ("wake_storm", "advanced"),
        ("random_wakeups", "expected"),
        ("blocked", "blocks_started"),
        ("current_thread", "wakes"),
        ("plain", "tasks"),
        ("threads", "sleeper_tid"),
        ("stress", "malloc"),
    ];
    for (name, stat) in targets {
        let mut target = Target::launch(name, &util::bin_path(name), &[], None, Wait::Ready);
        target.assert_alive();
        let stats = target.stats();
        assert!(stats.get(stat).is_some(), "{name}: {}", stats.line);
        assert!(target.send("nonsense").starts_with("error"), "{name}");
        let status = target.quit(Duration::from_secs(5));
        assert!(
            status.is_some_and(|s| s.success()),
            "{name} quit: {status:?}"
        );

        let mut target = Target::launch(name, &util::bin_path(name), &[], None, Wait::Ready);
        let status = target.close_stdin(Duration::from_secs(5));
        assert!(
            status.is_some_and(|s| s.success()),
            "{name} at EOF: {status:?}"
        );
    }
}

/// The heartbeat's trace runs from its `async fn` down to tokio's sleep, at
/// the line of the sleep; the 300 waiters form one group.
#[test]
fn heartbeat_trace_points_at_the_sleep_line() {
    let _serial = serial();
    let mut target = Target::start("heartbeat", &[]);
    let sleep_line = marker_line(HEARTBEAT_RS, "heartbeat-sleep");
    let json = tasks_json(target.pid(), &[]);
    let text = describe(&json);

    assert_all_traced(&json, 301);
    assert_eq!(coverage(&json, "untraced"), Some(1), "{text}");
    let heartbeat = |n: &Value| n["app"] == true && is_fn(n, "heartbeat");
    let at_sleep = |n: &Value| file_ends_with(n, "heartbeat.rs") && line(n) == Some(sleep_line);
    let tokio_sleep = |n: &Value| {
        n["app"] == false
            && (n["function"]
                .as_str()
                .is_some_and(|f| f.contains("tokio::time::sleep"))
                || file_ends_with(n, "time/sleep.rs"))
    };
    let found = in_state(&json, "traced")
        .iter()
        .any(|g| has_chain(tree(g), &[&heartbeat, &at_sleep, &tokio_sleep]));
    assert!(
        found,
        "no traced group runs heartbeat -> heartbeat.rs:{sleep_line} -> tokio sleep:\n{text}"
    );

    let orders = marker_line(HEARTBEAT_RS, "orders-spawn");
    let column = marker_column(HEARTBEAT_RS, "orders-spawn", "delouse::spawn");
    let waiters: Vec<_> = groups(&json)
        .iter()
        .filter(|g| spawned_at(g, "heartbeat.rs", orders, column))
        .collect();
    assert_eq!(waiters.len(), 1, "{text}");
    assert_eq!(waiters[0]["count"], 300, "{text}");
    target.assert_alive();
}

/// 1000 identical leaked tasks show as one group with their spawn site.
#[test]
fn identical_leaked_tasks_form_one_group() {
    let _serial = serial();
    let mut target = Target::start("leak", &[]);
    let spawn_line = marker_line(LEAK_RS, "leak-spawn");
    let column = marker_column(LEAK_RS, "leak-spawn", "delouse::spawn");
    let json = tasks_json(target.pid(), &[]);
    let text = describe(&json);

    assert_all_traced(&json, 1000);
    let leaked = groups(&json);
    assert_eq!(leaked.len(), 1, "{text}");
    let group = &leaked[0];
    assert_eq!(group["count"], 1000, "{text}");
    assert_eq!(group["state"], "traced", "{text}");
    assert!(
        spawned_at(group, "leak.rs", spawn_line, column),
        "spawned_at should end in leak.rs:{spawn_line}:{column}:\n{text}"
    );
    let mut ids: Vec<u64> = group["task_ids"]
        .as_array()
        .expect("task_ids")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 1000, "task_ids should name 1000 distinct tasks");
    assert!(
        any_node(tree(group), &|n| n["app"] == true
            && is_fn(n, "leaked_request")),
        "{text}"
    );
    assert!(group["oldest_age_ms"].as_u64().is_some(), "{text}");

    let agent_ms = json["agent_elapsed_ms"].as_f64().expect("agent_elapsed_ms");
    let total_ms = json["total_ms"].as_f64().expect("total_ms");
    assert!(
        0.0 <= agent_ms && agent_ms <= total_ms,
        "{agent_ms} / {total_ms}"
    );
    target.assert_alive();
}

/// 100 traces back to back over 1000 idle tasks: every one complete, and
/// the runtime unharmed.
#[test]
fn hundred_traces_over_idle_tasks() {
    let _serial = serial();
    let mut target = Target::start("leak", &[]);
    for _ in 0..100 {
        let json = tasks_json(target.pid(), &[]);
        assert_all_traced(&json, 1000);
    }
    let check = target.assert_alive();
    let gap = check.heartbeat_max_gap_ms.expect("heartbeat gap");
    assert!(gap < 2000, "heartbeat stalled: {}", check.line);
}

/// 50 traces over 300 tasks woken every millisecond: every one complete,
/// workers alive, every task still ticking.
#[test]
fn traces_during_a_wake_storm() {
    let _serial = serial();
    let mut target = Target::start("wake_storm", &[]);
    target.stats();
    for _ in 0..50 {
        let json = tasks_json(target.pid(), &[]);
        assert_all_traced(&json, 300);
    }
    target.assert_alive();
    let stats = target.stats();
    assert_eq!(stats.get("advanced"), Some(300), "{}", stats.line);
    std::thread::sleep(Duration::from_millis(200));
    let stats = target.stats();
    assert_eq!(stats.get("advanced"), Some(300), "{}", stats.line);
}

/// Traces requested nonstop while oneshots, `Notify`s, sleeps, mutex and
/// semaphore hand-offs, `JoinSet`s and `select!`s fire: every task finishes.
#[test]
fn traces_nonstop_during_random_wakeups() {
    let _serial = serial();
    let secs = 3;
    let mut target = Target::start("random_wakeups", &["--secs", &secs.to_string()]);
    let start = Instant::now();
    let mut traces = 0;
    let stats = loop {
        let run = delouse(&["tasks", &target.pid_arg(), "--json"]).ok();
        assert_eq!(run.json()["mode"], "traced", "{run}");
        traces += 1;
        let stats = target.stats();
        let done =
            stats.get("finished").is_some() && stats.get("finished") == stats.get("expected");
        if (done && start.elapsed() > Duration::from_secs(secs))
            || start.elapsed() > Duration::from_secs(secs + 30)
        {
            break stats;
        }
    };
    assert_eq!(
        stats.get("finished"),
        stats.get("expected"),
        "seed in: {}",
        stats.line
    );
    assert_eq!(stats.get("join_errors"), Some(0), "{}", stats.line);
    assert_eq!(stats.get("driver_done"), Some(1), "{}", stats.line);
    assert!(traces >= 5, "only {traces} traces ran during the wake-ups");
    target.assert_alive();
}

/// A worker blocked for 10 s: `tasks --timeout 3s` still answers in about
/// 3 s, names the task it could not reach, and the runtime recovers.
#[test]
fn blocked_worker_does_not_stall_the_answer() {
    let _serial = serial();
    let mut target = Target::start("blocked", &[]);
    block(&mut target, 10);
    let run = delouse(&["tasks", &target.pid_arg(), "--json", "--timeout", "3s"]).ok();
    assert!(
        run.elapsed < Duration::from_secs(6),
        "answered too late:\n{run}"
    );
    let json = run.json();
    let text = describe(&json);
    assert!(
        coverage(&json, "not_polled_in_time").unwrap_or(0) >= 1,
        "{text}"
    );

    let spawn_line = marker_line(BLOCKED_RS, "block-spawn");
    let column = marker_column(BLOCKED_RS, "block-spawn", "delouse::spawn");
    let late = in_state(&json, "not_polled_in_time");
    assert!(late.iter().all(|g| g["count"].as_u64() > Some(0)), "{text}");
    assert!(
        late.iter()
            .any(|g| spawned_at(g, "blocked.rs", spawn_line, column)),
        "the blocking task (blocked.rs:{spawn_line}) is not listed as not polled in time:\n{text}"
    );
    assert_recovers(&mut target, 1);
}

/// A `current_thread` runtime with a `LocalSet`, `!Send` futures and a
/// task that wakes another while polled: traces from both kinds of task,
/// and the target lives on.
#[test]
fn current_thread_and_local_set_are_traced() {
    let _serial = serial();
    let mut target = Target::start("current_thread", &[]);
    let before = target.stats().num("wakes");
    for _ in 0..10 {
        let json = tasks_json(target.pid(), &[]);
        let text = describe(&json);
        assert!(
            groups(&json).iter().any(|g| !tree(g).is_empty()),
            "no group has a trace:\n{text}"
        );
        let traced = in_state(&json, "traced");
        for name in ["local_waiter", "runtime_waiter", "wakee"] {
            assert!(
                traced
                    .iter()
                    .any(|g| any_node(tree(g), &|n| is_fn(n, name))),
                "no traced group shows '{name}':\n{text}"
            );
        }
    }
    target.assert_alive();
    let after = target.stats().num("wakes");
    assert!(after > before, "wakee stopped waking: {before} -> {after}");
}

/// A target built without `--cfg tokio_unstable`: `tasks` says at once that
/// traces are unsupported (exit 6), `ps` still lists it.
#[test]
fn no_tokio_unstable_is_unsupported_at_once() {
    let _serial = serial();
    let exe = util::build_no_unstable_fixture();
    let mut target = Target::launch("no-unstable", &exe, &[], None, Wait::Socket);
    let stats = target.stats();
    assert_eq!(
        stats.text("tokio_unstable"),
        Some("false"),
        "the fixture was built with tokio_unstable after all: {}",
        stats.line
    );

    let run = delouse(&["tasks", &target.pid_arg()]).expect_code(6);
    assert!(
        run.elapsed < Duration::from_secs(1),
        "took {:?}:\n{run}",
        run.elapsed
    );
    assert!(run.error_line().contains("tokio_unstable"), "{run}");

    let ps = Cli::new(&["ps", "--json"])
        .socket_dir(target.socket_dir())
        .run()
        .ok();
    let json = ps.json();
    let entry = ps_entry(&json, target.pid()).unwrap_or_else(|| panic!("not listed:\n{ps}"));
    assert_eq!(entry["traces_available"], false, "{ps}");
    assert!(
        entry["traces_unavailable_reason"]
            .as_str()
            .is_some_and(|r| r.contains("tokio_unstable")),
        "{ps}"
    );
    target.assert_alive();
}

/// `--whole-runtime` without a terminal and without `--yes` refuses, and the
/// target is untouched.
#[test]
fn whole_runtime_needs_confirmation() {
    let _serial = serial();
    let mut target = Target::start("plain", &[]);
    let run = delouse(&["tasks", &target.pid_arg(), "--whole-runtime"]).expect_code(1);
    run.error_line();
    target.assert_alive();
    let json = tasks_json(target.pid(), &[]);
    assert_eq!(json["mode"], "traced", "{}", describe(&json));
    assert_eq!(coverage(&json, "traced"), Some(0), "{}", describe(&json));
    assert_eq!(coverage(&json, "untraced"), Some(51), "{}", describe(&json));
}

/// `--whole-runtime --yes` while a worker is blocked refuses and names the
/// stuck worker; the runtime is left alone and recovers.
#[test]
fn whole_runtime_refuses_a_blocked_worker() {
    let _serial = serial();
    let mut target = Target::start("blocked", &[]);
    block(&mut target, 10);
    let pid = target.pid_arg();
    let run = delouse(&["tasks", &pid, "--whole-runtime", "--yes", "--timeout", "3s"]);
    assert_ne!(run.code(), Some(0), "{run}");
    assert!(run.error_line().contains("worker"), "{run}");
    assert_recovers(&mut target, 1);
}

/// `--whole-runtime --yes` on an idle runtime sees tasks spawned with plain
/// `tokio::spawn`.
#[test]
fn whole_runtime_dump_sees_plain_tasks() {
    let _serial = serial();
    let mut target = Target::start("plain", &[]);
    let json = tasks_json(target.pid(), &["--whole-runtime", "--yes"]);
    let text = describe(&json);
    assert_eq!(json["mode"], "whole-runtime", "{text}");
    assert_eq!(json["runtime"], "main", "{text}");
    let found = groups(&json).iter().any(|g| {
        g["count"].as_u64() >= Some(50) && any_node(tree(g), &|n| is_fn(n, "plain_waiter"))
    });
    assert!(found, "no group of 50 plain_waiter tasks:\n{text}");
    target.assert_alive();
}

/// A process killed with SIGKILL leaves its socket behind; `ps` must not
/// A stopped target (SIGSTOP) cannot answer: the error says it is stopped
/// and how to resume it, and once resumed it answers.
#[test]
fn a_stopped_target_is_said_to_be_stopped() {
    let _serial = serial();
    let mut target = Target::start("heartbeat", &[]);
    let pid = target.pid_arg();
    target.signal(libc::SIGSTOP);
    let stopped = Instant::now() + Duration::from_secs(5);
    let state = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
    };
    while state(target.pid()) != Some('T') && Instant::now() < stopped {
        std::thread::sleep(Duration::from_millis(5));
    }
    let run = delouse(&["threads", &pid, "--timeout", "20s"]).expect_code(5);
    assert!(
        run.elapsed < Duration::from_secs(10),
        "said only after {:?}, not at once",
        run.elapsed
    );
    let line = run.error_line();
    assert!(
        line.contains("the process is stopped (state T")
            && line.contains(&format!("kill -CONT {pid}")),
        "{run}"
    );
    target.signal(libc::SIGCONT);
    delouse(&["threads", &pid]).ok();
    target.assert_alive();
}

/// list it any more.
#[test]
fn ps_forgets_a_killed_process() {
    let _serial = serial();
    let mut target = Target::start("heartbeat", &[]);
    let run = Cli::new(&["ps", "--json"])
        .socket_dir(target.socket_dir())
        .run()
        .ok();
    let json = run.json();
    let entry = ps_entry(&json, target.pid()).unwrap_or_else(|| panic!("not listed:\n{run}"));
    assert!(
        entry["name"]
            .as_str()
            .is_some_and(|n| n.contains("heartbeat")),
        "{run}"
    );
    assert_eq!(entry["traces_available"], true, "{run}");
    assert_eq!(entry["registered_tasks"], 301, "{run}");
    let main = &entry["runtimes"][0];
    assert_eq!(main["name"], "main", "{run}");
    assert_eq!(main["workers"], 2, "{run}");

    let pid = target.pid();
    let socket_dir = target.socket_dir().to_owned();
    target.kill9();
    let run = Cli::new(&["ps", "--json"])
        .socket_dir(&socket_dir)
        .run()
        .ok();
    assert!(
        ps_entry(&run.json(), pid).is_none(),
        "killed pid {pid} still listed:\n{run}"
    );
}

/// A second `tasks` while a trace runs is refused with "trace in progress"
/// instead of waiting or starting another.
#[test]
fn second_trace_during_a_trace_is_refused() {
    let _serial = serial();
    let mut target = Target::start("blocked", &[]);
    block(&mut target, 10);
    let pid = target.pid_arg();
    let first = Cli::new(&["tasks", &pid, "--json", "--timeout", "5s"]).spawn();
    std::thread::sleep(Duration::from_secs(1));
    let second = delouse(&["tasks", &pid, "--json", "--timeout", "5s"]);
    assert_ne!(second.code(), Some(0), "{second}");
    assert!(
        second.error_line().contains("trace in progress"),
        "{second}"
    );
    assert!(
        second.elapsed < Duration::from_secs(3),
        "the second waited:\n{second}"
    );

    let first = first.finish().ok();
    assert!(
        coverage(&first.json(), "not_polled_in_time").unwrap_or(0) >= 1,
        "{first}"
    );
    assert_recovers(&mut target, 1);
}

/// The tree helpers find what they should and nothing else, so a passing
/// test above means what it says.
#[test]
fn tree_helpers_match_only_real_chains() {
    let node = |function: &str, file: &str, line: u64, children: Value| {
        serde_json::json!({"function": function, "file": file, "line": line, "column": 1,
                           "inlined": false, "app": !file.starts_with("tokio"),
                           "children": children})
    };
    let sleep = node(
        "<tokio::time::sleep::Sleep as Future>::poll",
        "tokio-1.54.1/src/time/sleep.rs",
        457,
        serde_json::json!([]),
    );
    let heartbeat = node(
        "heartbeat::heartbeat::{{closure}}",
        "tests/src/bin/heartbeat.rs",
        45,
        serde_json::json!([sleep]),
    );
    let roots = [
        node(
            "heartbeat::wait_for_orders::{closure#0}",
            "tests/src/bin/heartbeat.rs",
            51,
            serde_json::json!([]),
        ),
        heartbeat,
    ];

    let is_heartbeat = |n: &Value| is_fn(n, "heartbeat");
    let at_45 = |n: &Value| line(n) == Some(45);
    let at_51 = |n: &Value| line(n) == Some(51);
    let tokio = |n: &Value| file_ends_with(n, "time/sleep.rs");
    assert!(has_chain(&roots, &[&is_heartbeat, &at_45, &tokio]));
    assert!(!has_chain(&roots, &[&is_heartbeat, &at_51]));
    assert!(!has_chain(&roots, &[&tokio, &is_heartbeat]));
    assert!(any_node(&roots, &|n| is_fn(n, "wait_for_orders")));
    assert!(!any_node(&roots, &|n| is_fn(n, "orders")));
    assert!(is_fn(
        &node("a::b::h0123456789abcdef", "x.rs", 1, serde_json::json!([])),
        "b"
    ));

    let sleep_line = HEARTBEAT_RS
        .lines()
        .nth(marker_line(HEARTBEAT_RS, "heartbeat-sleep") as usize - 1);
    assert!(sleep_line.is_some_and(|l| l.contains("sleep(")));
    let leak_line = LEAK_RS
        .lines()
        .nth(marker_line(LEAK_RS, "leak-spawn") as usize - 1);
    assert!(leak_line.is_some_and(|l| l.contains("delouse::spawn(leaked_request")));
}
