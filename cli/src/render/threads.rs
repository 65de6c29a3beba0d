//! `delouse threads` output: one stack per thread (or per group of threads
//! with the same stack), innermost frame first as gdb prints them, and the
//! JSON document.

use std::fmt::Write as _;
use std::path::Path;

use delouse_proto::{Thread, ThreadStack};
use serde::Serialize;

use super::{Paint, frame_text_as};
use crate::error::one_line;
use crate::format::{cpu_time, precise_ms, precise_us};
use crate::kernel;
use crate::paths;
use crate::sanitize::escape;
use crate::threads::{Counts, StackFrame, ThreadView, WalkEnd, name_prefix};

/// Thread ids shown in a group's header before "… +N".
const TIDS_SHOWN: usize = 8;

/// Thread names listed when `--name` matched none.
const NAMES_SHOWN: usize = 12;

/// Everything `delouse threads` shows.
#[derive(Debug)]
pub struct Report<'a> {
    /// The target.
    pub pid: u32,
    /// How all the threads answered (shown or not).
    pub counts: Counts,
    /// The agent's time.
    pub agent_elapsed_ms: f64,
    /// The whole command's time so far.
    pub total_ms: f64,
    /// The longest time a thread spent in the agent's signal handler.
    pub max_handler_us: f64,
    /// The signal the agent used.
    pub signal: i32,
    /// Where the CLI's time went.
    pub timings: Timings,
    /// The `--name` patterns (none: every thread is shown).
    pub names: &'a [String],
    /// The names of all the threads, to say what there is when no name
    /// matched.
    pub all_names: Vec<&'a str>,
    /// The threads shown, in the agent's order.
    pub threads: &'a [ThreadView<'a>],
    /// With `--group`: the groups, as indexes into `threads`.
    pub groups: Option<&'a [Vec<usize>]>,
}

/// Where the time of `delouse threads` went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Timings {
    /// Connecting, the handshake, the request and reading the answer.
    pub exchange_ms: f64,
    /// Symbolizing the stacks and telling the threads' roles.
    pub symbolize_ms: f64,
}

fn state_name(state: char) -> String {
    match kernel::state_name(state) {
        Some(name) => name.to_owned(),
        None => format!("state {}", escape(state.encode_utf8(&mut [0; 4]))),
    }
}

fn syscall_text(number: u64) -> String {
    match kernel::syscall_name(number) {
        Some(name) => name.to_owned(),
        None => format!("syscall {number}"),
    }
}

/// `sleeping in futex`, `running`.
fn activity(t: &Thread) -> String {
    let mut s = state_name(t.state);
    if let Some(n) = t.syscall {
        let _ = write!(s, " in {}", syscall_text(n));
    }
    s
}

fn cpu_text(t: &Thread) -> String {
    format!(
        "cpu {} (user {}, sys {})",
        cpu_time(t.user_ms.saturating_add(t.system_ms)),
        cpu_time(t.user_ms),
        cpu_time(t.system_ms)
    )
}

fn header(out: &mut String, r: &Report<'_>, paint: Paint) {
    let c = &r.counts;
    let mut answers = vec![format!("{} answered", c.answered)];
    for (n, what) in [
        (c.signals_blocked, "with signals blocked"),
        (c.no_answer, "no answer"),
        (c.not_sampled, "not sampled"),
    ] {
        if n > 0 {
            answers.push(format!("{n} {what}"));
        }
    }
    let _ = writeln!(
        out,
        "{}",
        paint.bold(&format!(
            "pid {}: {} {} (agent {}, total {})",
            r.pid,
            c.threads,
            if c.threads == 1 { "thread" } else { "threads" },
            precise_ms(r.agent_elapsed_ms),
            precise_ms(r.total_ms)
        ))
    );
    let handler = if c.answered > 0 {
        format!(", longest in its handler {}", precise_us(r.max_handler_us))
    } else {
        String::new()
    };
    let _ = writeln!(out, "{}; signal {}{handler}", answers.join(", "), r.signal);
    if !r.names.is_empty() {
        let _ = writeln!(
            out,
            "showing {} of {}: name contains {}",
            r.threads.len(),
            c.threads,
            patterns_text(r.names)
        );
    }
}

/// `"a" or "b"`.
fn patterns_text(patterns: &[String]) -> String {
    patterns
        .iter()
        .map(|p| format!("\"{}\"", one_line(p)))
        .collect::<Vec<_>>()
        .join(" or ")
}

fn frame_number(n: usize) -> String {
    format!("#{n:<2} ")
}

fn stack_text(out: &mut String, v: &ThreadView<'_>, paint: Paint, cwd: Option<&Path>) {
    match &v.thread.stack {
        ThreadStack::Frames { truncated, .. } => {
            if v.frames.is_empty() && !truncated {
                let _ = writeln!(out, "  {}", paint.dim("no frames"));
            }
            for (n, f) in v.frames.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "  {}{}",
                    frame_number(n),
                    frame_text_as(&f.frame, f.app, paint, cwd)
                );
            }
            let why = match v.end {
                WalkEnd::Complete => None,
                WalkEnd::Stopped => Some("stack walk stopped here"),
                WalkEnd::Unrooted => {
                    Some("walk ended before the thread's start: outer frames may be missing")
                }
                WalkEnd::InUnwinder => Some(
                    "interrupted inside the panic/exception unwinder: frames past it may be wrong",
                ),
            };
            if let Some(why) = why {
                let _ = writeln!(out, "  {}", paint.dim(&format!("… ({why})")));
            }
        }
        ThreadStack::SignalsBlocked => {
            let _ = writeln!(out, "  {}", paint.warn("signals blocked: not interrupted"));
        }
        ThreadStack::NoAnswer => {
            let _ = writeln!(
                out,
                "  {}",
                paint.warn(
                    "no answer before the deadline (stopped, in uninterruptible sleep, or gone)"
                )
            );
        }
        ThreadStack::NotSampled(why) => {
            let _ = writeln!(
                out,
                "  {}",
                paint.dim(&format!("not sampled: {}", one_line(why)))
            );
        }
    }
}

/// Whether the agent had no time to read the thread's `/proc` entry (it
/// then sends an empty name and state `?`).
fn is_unread(t: &Thread) -> bool {
    t.state == '?' && t.name.is_empty() && matches!(t.stack, ThreadStack::NotSampled(_))
}

fn thread_text(out: &mut String, v: &ThreadView<'_>, paint: Paint, cwd: Option<&Path>) {
    let t = v.thread;
    let head = if is_unread(t) {
        format!("thread {}: not read from /proc in time", t.tid)
    } else {
        format!(
            "thread {} \"{}\" ({}): {}, {}",
            t.tid,
            escape(&t.name),
            v.role.label(),
            activity(t),
            cpu_text(t)
        )
    };
    let _ = writeln!(out, "{}", paint.bold(&head));
    stack_text(out, v, paint, cwd);
}

/// The name of a group: the shared name, or the shared prefix and `*`.
fn group_name(members: &[&ThreadView<'_>]) -> String {
    let first = &members[0].thread.name;
    if members.iter().all(|v| &v.thread.name == first) {
        first.clone()
    } else {
        format!("{}*", name_prefix(first))
    }
}

fn group_text(out: &mut String, members: &[&ThreadView<'_>], paint: Paint, cwd: Option<&Path>) {
    let first = members[0];
    let mut tids: Vec<String> = members
        .iter()
        .take(TIDS_SHOWN)
        .map(|v| v.thread.tid.to_string())
        .collect();
    if members.len() > TIDS_SHOWN {
        tids.push(format!("… +{}", members.len() - TIDS_SHOWN));
    }
    // Distinct activities, with how many threads each when they differ.
    let mut activities: Vec<(String, usize)> = Vec::new();
    for v in members {
        let a = activity(v.thread);
        match activities.iter_mut().find(|(b, _)| *b == a) {
            Some((_, n)) => *n += 1,
            None => activities.push((a, 1)),
        }
    }
    let activity = if activities.len() == 1 {
        activities.remove(0).0
    } else {
        activities
            .iter()
            .map(|(a, n)| format!("{n} {a}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let cpu: u64 = members
        .iter()
        .map(|v| v.thread.user_ms.saturating_add(v.thread.system_ms))
        .fold(0, u64::saturating_add);
    let head = if is_unread(first.thread) {
        format!(
            "{} threads, tids {}: not read from /proc in time",
            members.len(),
            tids.join(", ")
        )
    } else {
        format!(
            "{} threads \"{}\" ({}), tids {}: {}, cpu {} in all",
            members.len(),
            escape(&group_name(members)),
            first.role.label(),
            tids.join(", "),
            activity,
            cpu_time(cpu)
        )
    };
    let _ = writeln!(out, "{}", paint.bold(&head));
    stack_text(out, first, paint, cwd);
}

fn nothing_matched(out: &mut String, r: &Report<'_>) {
    let mut names: Vec<&str> = r.all_names.clone();
    names.sort_unstable();
    names.dedup();
    let mut listed: Vec<String> = names
        .iter()
        .take(NAMES_SHOWN)
        .map(|n| escape(n).into_owned())
        .collect();
    if names.len() > NAMES_SHOWN {
        listed.push(format!("… +{}", names.len() - NAMES_SHOWN));
    }
    let _ = writeln!(
        out,
        "\nno thread's name contains {}: its threads are named {}",
        patterns_text(r.names),
        listed.join(", ")
    );
}

/// The text output.
pub fn text(r: &Report<'_>, paint: Paint, cwd: Option<&Path>) -> String {
    let mut out = String::new();
    header(&mut out, r, paint);
    if r.threads.is_empty() {
        if r.names.is_empty() {
            out.push_str("\nno threads in the answer\n");
        } else {
            nothing_matched(&mut out, r);
        }
        return out;
    }
    match r.groups {
        None => {
            for v in r.threads {
                out.push('\n');
                thread_text(&mut out, v, paint, cwd);
            }
        }
        Some(groups) => {
            for g in groups {
                let members: Vec<&ThreadView<'_>> = g.iter().map(|&i| &r.threads[i]).collect();
                out.push('\n');
                match members.as_slice() {
                    [one] => thread_text(&mut out, one, paint, cwd),
                    _ => group_text(&mut out, &members, paint, cwd),
                }
            }
        }
    }
    out
}

#[derive(Serialize)]
struct JsonReport {
    pid: u32,
    agent_elapsed_ms: f64,
    total_ms: f64,
    max_handler_us: f64,
    signal: i32,
    timings: Timings,
    counts: Counts,
    threads: Vec<JsonThread>,
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<Vec<JsonGroup>>,
}

#[derive(Serialize)]
struct JsonThread {
    tid: u32,
    name: String,
    state: String,
    state_name: &'static str,
    user_ms: u64,
    system_ms: u64,
    syscall: Option<u64>,
    syscall_name: Option<&'static str>,
    role: &'static str,
    #[serde(flatten)]
    stack: JsonStack,
}

#[derive(Serialize)]
struct JsonGroup {
    count: usize,
    tids: Vec<u32>,
    name: String,
    role: &'static str,
    #[serde(flatten)]
    stack: JsonStack,
}

/// A stack, as a thread or a group has it.
#[derive(Serialize)]
struct JsonStack {
    stack: &'static str,
    /// Whether frames may be missing or wrong.
    truncated: bool,
    /// How the walk ended; `None` without a stack to walk.
    walk: Option<&'static str>,
    /// Why it was not sampled.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    frames: Vec<JsonFrame>,
}

#[derive(Serialize)]
struct JsonFrame {
    function: String,
    file: Option<String>,
    line: Option<u32>,
    column: Option<u32>,
    inlined: bool,
    app: bool,
    address: String,
}

fn json_stack(v: &ThreadView<'_>, cwd: Option<&Path>) -> JsonStack {
    let (stack, walk, reason) = match &v.thread.stack {
        ThreadStack::Frames { .. } => ("frames", Some(v.end.as_str()), None),
        ThreadStack::SignalsBlocked => ("signals blocked", None, None),
        ThreadStack::NoAnswer => ("no answer", None, None),
        ThreadStack::NotSampled(why) => ("not sampled", None, Some(one_line(why))),
    };
    JsonStack {
        stack,
        truncated: v.end.cut_short(),
        walk,
        reason,
        frames: json_frames(&v.frames, cwd),
    }
}

fn json_frames(frames: &[StackFrame], cwd: Option<&Path>) -> Vec<JsonFrame> {
    frames
        .iter()
        .map(|f| JsonFrame {
            function: f.frame.function.clone(),
            file: f.frame.file.as_deref().map(|p| paths::shorten(p, cwd)),
            line: f.frame.line,
            column: f.frame.column,
            inlined: f.frame.inlined,
            app: f.app,
            address: format!("{:#x}", f.address),
        })
        .collect()
}

fn json_thread(v: &ThreadView<'_>, cwd: Option<&Path>) -> JsonThread {
    let t = v.thread;
    JsonThread {
        tid: t.tid,
        name: t.name.clone(),
        state: t.state.to_string(),
        state_name: kernel::state_name(t.state).unwrap_or("unknown"),
        user_ms: t.user_ms,
        system_ms: t.system_ms,
        syscall: t.syscall,
        syscall_name: t.syscall.and_then(kernel::syscall_name),
        role: v.role.as_str(),
        stack: json_stack(v, cwd),
    }
}

fn json_group(r: &Report<'_>, g: &[usize], cwd: Option<&Path>) -> JsonGroup {
    let members: Vec<&ThreadView<'_>> = g.iter().map(|&i| &r.threads[i]).collect();
    let first = members[0];
    JsonGroup {
        count: members.len(),
        tids: members.iter().map(|v| v.thread.tid).collect(),
        name: group_name(&members),
        role: first.role.as_str(),
        stack: json_stack(first, cwd),
    }
}

/// The JSON document (one line, then a newline).
pub fn json(r: &Report<'_>, cwd: Option<&Path>) -> String {
    let doc = JsonReport {
        pid: r.pid,
        agent_elapsed_ms: r.agent_elapsed_ms,
        total_ms: r.total_ms,
        max_handler_us: r.max_handler_us,
        signal: r.signal,
        timings: r.timings,
        counts: r.counts,
        threads: r.threads.iter().map(|v| json_thread(v, cwd)).collect(),
        groups: r.groups.map(|groups| {
            groups
                .iter()
                .filter(|g| !g.is_empty())
                .map(|g| json_group(r, g, cwd))
                .collect()
        }),
    };
    let mut s = serde_json::to_string(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    crate::sanitize::json(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::threads::tests::{fake_views, frames, sample_dump, thread};
    use crate::threads::{counts, group};
    use delouse_proto::ThreadDump;

    fn report<'a>(
        d: &'a ThreadDump,
        views: &'a [ThreadView<'a>],
        names: &'a [String],
        groups: Option<&'a [Vec<usize>]>,
    ) -> Report<'a> {
        Report {
            pid: 100,
            counts: counts(d),
            agent_elapsed_ms: 2.15,
            total_ms: 45.6,
            max_handler_us: d.max_handler_ns as f64 / 1000.0,
            signal: d.signal,
            timings: Timings::default(),
            names,
            all_names: d.threads.iter().map(|t| t.name.as_str()).collect(),
            threads: views,
            groups,
        }
    }

    fn all(d: &ThreadDump) -> Vec<&Thread> {
        d.threads.iter().collect()
    }

    #[test]
    fn text_snapshot() {
        let d = sample_dump();
        let views = fake_views(&all(&d));
        let text = text(
            &report(&d, &views, &[], None),
            Paint::plain(),
            Some(Path::new("/app")),
        );
        if std::env::consts::ARCH == "x86_64" {
            insta::assert_snapshot!(text);
        } else {
            assert!(text.contains("thread 100 \"app\" (main)"), "{text}");
        }
    }

    #[test]
    fn thread_names_and_states_cannot_drive_the_terminal() {
        let mut d = sample_dump();
        d.threads[0].name = "app\u{1b}[2J\tx\u{202e}".into();
        d.threads[0].state = '\u{1b}';
        d.threads[5].stack = ThreadStack::NotSampled("why\u{9b}1m\nnot".into());
        let views = fake_views(&all(&d));
        for groups in [None, Some(group(&views))] {
            let text = text(
                &report(&d, &views, &[], groups.as_deref()),
                Paint::plain(),
                None,
            );
            for c in ['\u{1b}', '\t', '\u{202e}', '\u{9b}'] {
                assert!(!text.contains(c), "{c:?} in {text}");
            }
            assert!(
                text.contains("thread 100 \"app\\u{1b}[2J\\u{9}x\\u{202e}\" (main): state \\u{1b}"),
                "{text}"
            );
            assert!(text.contains("not sampled: why\\u{9b}1m not"), "{text}");
        }
        // Names that match nothing are listed safely too.
        let names = vec!["nope".to_owned()];
        let text = text(&report(&d, &[], &names, None), Paint::plain(), None);
        assert!(text.contains("app\\u{1b}[2J"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        let json_text = json(&report(&d, &views, &[], None), None);
        let v: serde_json::Value = serde_json::from_str(&json_text).unwrap();
        assert_eq!(v["threads"][0]["name"], d.threads[0].name.as_str());
        assert!(!json_text.trim_end().chars().any(crate::sanitize::is_unsafe));
    }

    #[test]
    fn grouped_text_snapshot() {
        let d = sample_dump();
        let views = fake_views(&all(&d));
        let groups = group(&views);
        let text = text(
            &report(&d, &views, &[], Some(&groups)),
            Paint::plain(),
            Some(Path::new("/app")),
        );
        if std::env::consts::ARCH == "x86_64" {
            insta::assert_snapshot!(text);
        } else {
            assert!(text.contains("2 threads \"tokio-rt-worker\""), "{text}");
        }
    }

    #[test]
    fn colour_marks_app_and_library_frames() {
        let d = sample_dump();
        let views = fake_views(&all(&d));
        let text = text(&report(&d, &views, &[], None), Paint { color: true }, None);
        assert!(text.contains("\u{1b}[1mapp::main\u{1b}[0m"), "{text}");
        assert!(
            text.contains("\u{1b}[2mtokio::runtime::blocking::pool::Inner::run\u{1b}[0m"),
            "{text}"
        );
    }

    #[test]
    fn threads_not_read_in_time_say_so() {
        let mut d = sample_dump();
        let mut late = thread(
            200,
            "",
            ThreadStack::NotSampled("the request's deadline came before its turn".into()),
        );
        late.state = '?';
        d.threads = vec![late.clone(), late];
        d.threads[1].tid = 201;
        let views = fake_views(&all(&d));
        let text = text(&report(&d, &views, &[], None), Paint::plain(), None);
        assert!(
            text.contains("thread 200: not read from /proc in time"),
            "{text}"
        );
        assert!(
            !text.contains("longest in its handler"),
            "none answered: {text}"
        );
        let groups = group(&views);
        let json: serde_json::Value =
            serde_json::from_str(&json(&report(&d, &views, &[], Some(&groups)), None)).unwrap();
        assert_eq!(
            json["groups"][0]["reason"],
            "the request's deadline came before its turn"
        );
    }

    #[test]
    fn a_walk_that_ends_away_from_a_thread_start_says_so() {
        let mut d = sample_dump();
        d.threads = vec![thread(100, "app", frames(&[0x100, 0x1001]))];
        let views = fake_views(&all(&d));
        let text = text(&report(&d, &views, &[], None), Paint::plain(), None);
        assert!(
            text.contains("… (walk ended before the thread's start: outer frames may be missing)"),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&json(&report(&d, &views, &[], None), None)).unwrap();
        assert_eq!(json["threads"][0]["truncated"], true);
        assert_eq!(json["threads"][0]["walk"], "unrooted");
    }

    #[test]
    fn a_name_filter_that_matches_nothing_lists_the_names() {
        let d = sample_dump();
        let names = vec!["nope".to_owned()];
        let text = text(&report(&d, &[], &names, None), Paint::plain(), None);
        assert!(
            text.contains("showing 0 of 7: name contains \"nope\""),
            "{text}"
        );
        assert!(
            text.contains(
                "no thread's name contains \"nope\": its threads are named app, delouse-agent, \
                 signal-waiter, tokio-rt-worker"
            ),
            "{text}"
        );
    }

    #[test]
    fn json_shape() {
        let d = sample_dump();
        let views = fake_views(&all(&d));
        let json: serde_json::Value = serde_json::from_str(&json(
            &report(&d, &views, &[], None),
            Some(Path::new("/app")),
        ))
        .unwrap();
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort_unstable();
            k
        };
        let sorted = |k: &[&str]| {
            let mut k: Vec<String> = k.iter().map(|s| s.to_string()).collect();
            k.sort_unstable();
            k
        };
        assert_eq!(
            keys(&json),
            sorted(&[
                "pid",
                "agent_elapsed_ms",
                "total_ms",
                "max_handler_us",
                "signal",
                "timings",
                "counts",
                "threads"
            ])
        );
        assert_eq!(
            json["counts"],
            serde_json::json!({
                "threads": 7, "answered": 4, "signals_blocked": 1, "no_answer": 1, "not_sampled": 1
            })
        );
        assert_eq!(json["pid"], 100);
        assert_eq!(json["agent_elapsed_ms"], 2.15);
        assert_eq!(json["total_ms"], 45.6);
        assert_eq!(json["max_handler_us"], 3.21);
        assert_eq!(json["signal"], 34);
        assert_eq!(
            keys(&json["timings"]),
            sorted(&["exchange_ms", "symbolize_ms"])
        );
        let threads = json["threads"].as_array().unwrap();
        assert_eq!(threads.len(), 7);
        let main = &threads[0];
        assert_eq!(
            keys(main),
            sorted(&[
                "tid",
                "name",
                "state",
                "state_name",
                "user_ms",
                "system_ms",
                "syscall",
                "syscall_name",
                "role",
                "stack",
                "truncated",
                "walk",
                "frames"
            ])
        );
        assert_eq!(main["tid"], 100);
        assert_eq!(main["name"], "app");
        assert_eq!(main["state"], "S");
        assert_eq!(main["state_name"], "sleeping");
        assert_eq!(main["user_ms"], 1000);
        assert_eq!(main["system_ms"], 230);
        assert_eq!(main["syscall"], 202);
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(main["syscall_name"], "futex");
        }
        assert_eq!(main["role"], "main");
        assert_eq!(main["stack"], "frames");
        assert_eq!(main["truncated"], false);
        assert_eq!(main["walk"], "complete");
        let frames = main["frames"].as_array().unwrap();
        assert_eq!(frames.len(), 5);
        assert_eq!(
            keys(&frames[0]),
            sorted(&[
                "function", "file", "line", "column", "inlined", "app", "address"
            ])
        );
        assert_eq!(frames[0]["function"], "syscall");
        assert_eq!(frames[0]["address"], "0x100");
        assert_eq!(frames[0]["app"], false, "libc code, whatever its paths");
        assert_eq!(frames[1]["inlined"], true);
        assert_eq!(frames[1]["file"], "std/src/sys/pal/unix/futex.rs");
        assert_eq!(frames[1]["line"], 70);
        assert_eq!(frames[1]["column"], 5);
        assert_eq!(frames[1]["app"], false);
        assert_eq!(frames[1]["address"], "0x1001");
        assert_eq!(frames[3]["function"], "app::main");
        assert_eq!(frames[3]["file"], "src/main.rs");
        let roles: Vec<&str> = threads
            .iter()
            .map(|t| t["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            [
                "main",
                "delouse agent",
                "tokio worker",
                "tokio worker",
                "tokio blocking",
                "other",
                "tokio"
            ]
        );
        let stacks: Vec<&str> = threads
            .iter()
            .map(|t| t["stack"].as_str().unwrap())
            .collect();
        assert_eq!(
            stacks,
            [
                "frames",
                "not sampled",
                "frames",
                "frames",
                "frames",
                "signals blocked",
                "no answer"
            ]
        );
        assert_eq!(threads[4]["truncated"], true);
        assert_eq!(threads[4]["walk"], "stopped");
        assert!(threads[5]["walk"].is_null(), "signals blocked: no walk");
        assert_eq!(threads[1]["reason"], "the agent's own thread");
        assert!(threads[0].get("reason").is_none());
        assert_eq!(threads[4]["state_name"], "running");
        assert!(threads[4]["syscall"].is_null());
        assert!(threads[4]["syscall_name"].is_null());
        assert_eq!(threads[6]["syscall"], 9999);
        assert!(threads[6]["syscall_name"].is_null());
        assert_eq!(threads[6]["state_name"], "disk sleep");
        assert_eq!(threads[6]["frames"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn grouped_json_adds_groups() {
        let d = sample_dump();
        let views = fake_views(&all(&d));
        let groups = group(&views);
        let json: serde_json::Value =
            serde_json::from_str(&json(&report(&d, &views, &[], Some(&groups)), None)).unwrap();
        assert_eq!(json["threads"].as_array().unwrap().len(), 7);
        let g = &json["groups"][0];
        assert_eq!(g["count"], 2);
        assert_eq!(g["tids"], serde_json::json!([102, 103]));
        assert_eq!(g["name"], "tokio-rt-worker");
        assert_eq!(g["role"], "tokio worker");
        assert_eq!(g["stack"], "frames");
        assert_eq!(g["frames"].as_array().unwrap().len(), 8);
        assert_eq!(json["groups"].as_array().unwrap().len(), 6);
    }

    #[test]
    fn unknown_state_letters_and_syscalls_stay_readable() {
        let mut t = crate::threads::tests::thread(1, "x", ThreadStack::NoAnswer);
        t.state = '?';
        t.syscall = Some(123_456);
        assert_eq!(activity(&t), "state ? in syscall 123456");
        assert_eq!(cpu_text(&t), "cpu 1.2s (user 1.0s, sys 0.2s)");
    }
}
