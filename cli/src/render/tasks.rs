//! `delouse tasks` output: text trees and the JSON document.

use std::fmt::Write as _;
use std::path::Path;

use delouse_proto::{Coverage, Location, TasksMode};
use serde::Serialize;

use super::{Paint, frame_text, is_app};
use crate::format::{human_ms, precise_ms};
use crate::paths;
use crate::sanitize::escape;
use crate::tree::{Group, Node, State};

/// Task ids shown in a group's header before "… +N".
const IDS_SHOWN: usize = 5;

/// Everything `delouse tasks` shows.
#[derive(Debug)]
pub struct Report<'a> {
    /// The target.
    pub pid: u32,
    /// What was asked for.
    pub mode: &'a TasksMode,
    /// What the dump covered.
    pub coverage: &'a Coverage,
    /// The agent's time.
    pub agent_elapsed_ms: f64,
    /// The whole command's time so far.
    pub total_ms: f64,
    /// Where the CLI's time went.
    pub timings: Timings,
    /// The groups, largest first.
    pub groups: &'a [Group],
}

/// Where the time of `delouse tasks` went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Timings {
    /// Connecting, the handshake, the request and reading the answer.
    pub exchange_ms: f64,
    /// Symbolizing the answer's addresses.
    pub symbolize_ms: f64,
    /// Building and grouping the trees.
    pub group_ms: f64,
}

fn runtime_name(mode: &TasksMode) -> Option<&str> {
    match mode {
        TasksMode::Traced => None,
        TasksMode::WholeRuntime { runtime } => Some(runtime.as_deref().unwrap_or("main")),
    }
}

fn location_text(loc: &Location, cwd: Option<&Path>) -> String {
    format!(
        "{}:{}:{}",
        paths::shorten(&loc.file, cwd),
        loc.line,
        loc.column
    )
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The text output.
pub fn text(report: &Report<'_>, paint: Paint, cwd: Option<&Path>) -> String {
    let mut out = String::new();
    let c = report.coverage;
    let pid = report.pid;
    let what = match runtime_name(report.mode) {
        None => "traced tasks".to_owned(),
        Some(rt) => format!("whole-runtime dump of runtime `{}`", escape(rt)),
    };
    let _ = writeln!(
        out,
        "{}",
        paint.bold(&format!(
            "pid {pid}: {what} (agent {}, total {})",
            precise_ms(report.agent_elapsed_ms),
            precise_ms(report.total_ms)
        ))
    );
    let whole = runtime_name(report.mode).is_some();
    let mut counts = vec![
        format!("{} traced", c.traced),
        format!("{} not polled in time", c.not_polled_in_time),
        format!("{} finished", c.finished),
    ];
    // Tasks of the dump still alive: the agent's own (traced) count, or
    // tokio's (whole-runtime); `alive` is tokio's count of the runtimes'.
    let in_dump = c.traced.saturating_add(c.not_polled_in_time);
    let undercounted = c.alive.filter(|&alive| !whole && in_dump > alive);
    match c.untraced {
        // A whole-runtime dump leaves out running, LocalSet and
        // spawn_blocking tasks; the notes say so.
        Some(n) if whole => counts.push(format!("{n} not in the dump")),
        // More delouse tasks than tokio counts alive: tokio does not count
        // LocalSet tasks, so how many are untraced is not known.
        Some(_) if undercounted.is_some() => {}
        // Alive tasks the agent has no slot for: spawned without delouse, or
        // a delouse task still in its first poll (registered only after it).
        Some(n) => counts.push(format!(
            "{n} untraced (spawned without delouse, or in a first poll)"
        )),
        None => {}
    }
    let alive = match (c.alive, undercounted) {
        (Some(alive), Some(_)) => format!(
            "{in_dump} delouse tasks alive (more than the runtimes' {alive}: LocalSet tasks are not counted in the \
             runtime's alive tasks)"
        ),
        (Some(alive), None) => format!("{alive} alive"),
        (None, _) => "tasks".to_owned(),
    };
    let _ = writeln!(out, "{alive}: {}", counts.join(", "));
    for note in &c.notes {
        let _ = writeln!(out, "note: {}", crate::error::one_line(note));
    }
    if c.not_polled_in_time > 0 {
        let total = in_dump.saturating_add(c.finished);
        let _ = writeln!(
            out,
            "{}",
            paint.warn(&format!(
                "hint: {} not polled in time: a worker may be blocked in non-async code (`delouse threads {pid}` \
                 shows what the workers are doing), or --timeout was too short for {}: retry with a longer \
                 --timeout",
                plural(c.not_polled_in_time, "task was", "tasks were"),
                plural(total, "task", "tasks")
            ))
        );
    }
    if report.groups.is_empty() {
        out.push('\n');
        match report.mode {
            TasksMode::Traced => out.push_str(
                "no traced tasks: spawn tasks with delouse::spawn or wrap futures in .traced()\n",
            ),
            TasksMode::WholeRuntime { .. } => out.push_str("no tasks in the dump\n"),
        }
        return out;
    }
    for group in report.groups {
        out.push('\n');
        group_text(&mut out, group, paint, cwd);
    }
    out
}

fn group_text(out: &mut String, g: &Group, paint: Paint, cwd: Option<&Path>) {
    let mut head = vec![match g.state {
        State::Traced => plural(g.count as u64, "task", "tasks"),
        State::NotPolledInTime => format!(
            "{} not polled in time",
            plural(g.count as u64, "task", "tasks")
        ),
        State::Finished => format!(
            "{} finished during the dump",
            plural(g.count as u64, "task", "tasks")
        ),
    }];
    if let Some(loc) = &g.spawned_at {
        head.push(format!("spawned at {}", escape(&location_text(loc, cwd))));
    }
    if let Some(age) = g.oldest_age_ms {
        head.push(format!(
            "{} {}",
            if g.count == 1 { "age" } else { "oldest" },
            human_ms(age)
        ));
    }
    if let Some(ago) = g.max_last_poll_ago_ms {
        let up_to = if g.count == 1 { "" } else { "up to " };
        head.push(format!("last polled {up_to}{} ago", human_ms(ago)));
    }
    if !g.task_ids.is_empty() {
        let shown: Vec<String> = g
            .task_ids
            .iter()
            .take(IDS_SHOWN)
            .map(u64::to_string)
            .collect();
        let mut ids = format!(
            "{} {}",
            if g.task_ids.len() == 1 { "id" } else { "ids" },
            shown.join(", ")
        );
        if g.task_ids.len() > IDS_SHOWN {
            let _ = write!(ids, " … +{}", g.task_ids.len() - IDS_SHOWN);
        }
        head.push(ids);
    }
    let _ = writeln!(out, "{}", paint.bold(&head.join(", ")));
    match g.state {
        State::NotPolledInTime => {
            let _ = writeln!(
                out,
                "  {}",
                paint.dim("no trace: not polled before the deadline")
            );
        }
        State::Finished => {}
        State::Traced if g.tree.is_empty() => {
            let _ = writeln!(
                out,
                "  {}",
                paint.dim(
                    "no trace: waits on something tokio does not trace (a non-tokio future, \
                     std::future::pending, …)"
                )
            );
        }
        State::Traced => {
            for root in &g.tree {
                let _ = writeln!(out, "  ╼ {}", frame_text(&root.frame, paint, cwd));
                children_text(out, &root.children, "  ", paint, cwd);
            }
        }
    }
}

fn children_text(
    out: &mut String,
    children: &[Node],
    prefix: &str,
    paint: Paint,
    cwd: Option<&Path>,
) {
    for (i, child) in children.iter().enumerate() {
        let last = i + 1 == children.len();
        let branch = if last { "└╼" } else { "├╼" };
        let _ = writeln!(
            out,
            "{prefix}{branch} {}",
            frame_text(&child.frame, paint, cwd)
        );
        let next = format!("{prefix}{}", if last { "  " } else { "│ " });
        children_text(out, &child.children, &next, paint, cwd);
    }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    pid: u32,
    mode: &'static str,
    runtime: Option<&'a str>,
    agent_elapsed_ms: f64,
    total_ms: f64,
    timings: Timings,
    coverage: JsonCoverage<'a>,
    groups: Vec<JsonGroup>,
}

#[derive(Serialize)]
struct JsonCoverage<'a> {
    traced: u64,
    not_polled_in_time: u64,
    finished: u64,
    alive: Option<u64>,
    untraced: Option<u64>,
    notes: &'a [String],
}

#[derive(Serialize)]
struct JsonGroup {
    count: usize,
    state: &'static str,
    task_ids: Vec<u64>,
    spawned_at: Option<String>,
    oldest_age_ms: Option<u64>,
    max_last_poll_ago_ms: Option<u64>,
    tree: Vec<JsonNode>,
}

#[derive(Serialize)]
struct JsonNode {
    function: String,
    file: Option<String>,
    line: Option<u32>,
    column: Option<u32>,
    inlined: bool,
    app: bool,
    children: Vec<JsonNode>,
}

fn json_node(n: &Node, cwd: Option<&Path>) -> JsonNode {
    JsonNode {
        function: n.frame.function.clone(),
        file: n.frame.file.as_deref().map(|f| paths::shorten(f, cwd)),
        line: n.frame.line,
        column: n.frame.column,
        inlined: n.frame.inlined,
        app: is_app(&n.frame),
        children: n.children.iter().map(|c| json_node(c, cwd)).collect(),
    }
}

/// The JSON document (one line, then a newline).
pub fn json(report: &Report<'_>, cwd: Option<&Path>) -> String {
    let c = report.coverage;
    let doc = JsonReport {
        pid: report.pid,
        mode: match report.mode {
            TasksMode::Traced => "traced",
            TasksMode::WholeRuntime { .. } => "whole-runtime",
        },
        runtime: runtime_name(report.mode),
        agent_elapsed_ms: report.agent_elapsed_ms,
        total_ms: report.total_ms,
        timings: report.timings,
        coverage: JsonCoverage {
            traced: c.traced,
            not_polled_in_time: c.not_polled_in_time,
            finished: c.finished,
            alive: c.alive,
            untraced: c.untraced,
            notes: &c.notes,
        },
        groups: report
            .groups
            .iter()
            .map(|g| JsonGroup {
                count: g.count,
                state: g.state.as_str(),
                task_ids: g.task_ids.clone(),
                spawned_at: g.spawned_at.as_ref().map(|l| location_text(l, cwd)),
                oldest_age_ms: g.oldest_age_ms,
                max_last_poll_ago_ms: g.max_last_poll_ago_ms,
                tree: g.tree.iter().map(|n| json_node(n, cwd)).collect(),
            })
            .collect(),
    };
    let mut s = serde_json::to_string(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    crate::sanitize::json(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::group_tasks;
    use crate::tree::tests::{dump, symbols, task};
    use delouse_proto::TaskState;

    fn sample() -> (delouse_proto::TaskDump, Vec<Group>) {
        let notify = || TaskState::Traced(vec![vec![3, 1, 0], vec![3, 2, 0]]);
        let mut tasks: Vec<_> = (1..=7)
            .map(|id| task(id, Some(0), 1000 * id, notify()))
            .collect();
        tasks.push(task(20, Some(1), 65_000, TaskState::NotPolledInTime));
        tasks.push(task(21, Some(1), 5_000, TaskState::Traced(vec![vec![4]])));
        tasks.push(task(22, None, 10, TaskState::Finished));
        tasks.push(task(23, Some(1), 10, TaskState::Traced(vec![])));
        let mut d = dump(tasks);
        d.coverage
            .notes
            .push("localset tasks are not in such dumps".into());
        let groups = group_tasks(&d, &symbols());
        (d, groups)
    }

    fn report<'a>(d: &'a delouse_proto::TaskDump, groups: &'a [Group]) -> Report<'a> {
        Report {
            pid: 4242,
            mode: &d.mode,
            coverage: &d.coverage,
            agent_elapsed_ms: 1.234,
            total_ms: 45.6,
            timings: Timings::default(),
            groups,
        }
    }

    #[test]
    fn text_snapshot() {
        let (d, groups) = sample();
        let text = text(
            &report(&d, &groups),
            Paint::plain(),
            Some(Path::new("/app")),
        );
        insta::assert_snapshot!(text);
    }

    #[test]
    fn colour_marks_app_and_library_frames() {
        let (d, groups) = sample();
        let text = text(
            &report(&d, &groups),
            Paint { color: true },
            Some(Path::new("/app")),
        );
        assert!(
            text.contains("\u{1b}[1mapp::serve::{{closure}}\u{1b}[0m"),
            "{text}"
        );
        assert!(
            text.contains("\u{1b}[2mtokio::sync::notify::Notified::poll\u{1b}[0m"),
            "{text}"
        );
    }

    #[test]
    fn empty_traced_dump_says_how_to_get_tasks() {
        let d = dump(vec![]);
        let text = text(&report(&d, &[]), Paint::plain(), None);
        assert!(
            text.contains(
                "no traced tasks: spawn tasks with delouse::spawn or wrap futures in .traced()"
            ),
            "{text}"
        );
    }

    fn coverage_text(mode: TasksMode, coverage: Coverage) -> String {
        let mut d = dump(vec![]);
        d.mode = mode;
        d.coverage = coverage;
        text(&report(&d, &[]), Paint::plain(), None)
    }

    fn cov(traced: u64, late: u64, alive: u64, untraced: u64) -> Coverage {
        Coverage {
            traced,
            not_polled_in_time: late,
            finished: 0,
            alive: Some(alive),
            untraced: Some(untraced),
            notes: vec![],
        }
    }

    #[test]
    fn whole_runtime_counts_what_is_not_in_the_dump() {
        let t = coverage_text(TasksMode::WholeRuntime { runtime: None }, cov(5, 0, 8, 3));
        assert!(
            t.contains("8 alive: 5 traced, 0 not polled in time, 0 finished, 3 not in the dump\n"),
            "{t}"
        );
        assert!(!t.contains("untraced"), "{t}");
    }

    #[test]
    fn more_traced_than_alive_is_not_called_alive() {
        // Three LocalSet tasks that tokio does not count.
        let t = coverage_text(TasksMode::Traced, cov(5, 0, 2, 0));
        assert!(!t.contains("2 alive:"), "{t}");
        assert!(
            t.contains("LocalSet tasks are not counted in the runtime's alive tasks"),
            "{t}"
        );
        assert!(t.contains("5 traced"), "{t}");
        assert!(!t.contains("untraced"), "{t}");
        // The usual case keeps its wording.
        let t = coverage_text(TasksMode::Traced, cov(5, 1, 8, 2));
        assert!(
            t.contains("8 alive: 5 traced, 1 not polled in time, 0 finished, 2 untraced"),
            "{t}"
        );
    }

    #[test]
    fn the_hint_for_late_tasks_names_the_timeout_and_threads() {
        let t = coverage_text(TasksMode::Traced, cov(1500, 500, 2000, 0));
        let hint = t.lines().find(|l| l.starts_with("hint:")).unwrap();
        assert!(hint.contains("500 tasks were not polled in time"), "{hint}");
        assert!(hint.contains("blocked in non-async code"), "{hint}");
        assert!(hint.contains("too short for 2000 tasks"), "{hint}");
        assert!(hint.contains("--timeout"), "{hint}");
        assert!(hint.contains("`delouse threads 4242`"), "{hint}");
    }

    #[test]
    fn text_from_the_target_cannot_drive_the_terminal() {
        let (mut d, _) = sample();
        d.locations[0].file = "/app/src/\u{1b}[2Jmain\u{202e}sr.rs".into();
        d.coverage.notes = vec!["bad\u{1b}]0;title\u{7}note\nsecond".into()];
        let mut table = symbols();
        for frames in &mut table {
            for f in frames {
                f.function.push_str("\u{9b}31m\r");
                if let Some(file) = &mut f.file {
                    file.push_str("\u{2066}\t");
                }
            }
        }
        let groups = group_tasks(&d, &table);
        let text = text(
            &report(&d, &groups),
            Paint::plain(),
            Some(Path::new("/app")),
        );
        for c in [
            '\u{1b}', '\u{9b}', '\r', '\t', '\u{7}', '\u{202e}', '\u{2066}',
        ] {
            assert!(!text.contains(c), "{c:?} in {text}");
        }
        assert!(
            text.contains("src/\\u{1b}[2Jmain\\u{202e}sr.rs:40:9"),
            "{text}"
        );
        assert!(
            text.contains("note: bad\\u{1b}]0;title\\u{7}note second"),
            "{text}"
        );
        assert!(text.contains("\\u{9b}31m\\u{d}"), "{text}");
        // JSON keeps the text, escaped as JSON.
        let json_text = json(&report(&d, &groups), Some(Path::new("/app")));
        assert!(!json_text.trim_end().chars().any(crate::sanitize::is_unsafe));
        let v: serde_json::Value = serde_json::from_str(&json_text).unwrap();
        assert_eq!(v["coverage"]["notes"][0], d.coverage.notes[0]);
        assert!(
            v["groups"][0]["tree"][0]["function"]
                .as_str()
                .unwrap()
                .ends_with("\u{9b}31m\r")
        );
    }

    #[test]
    fn json_shape() {
        let (d, groups) = sample();
        let json: serde_json::Value =
            serde_json::from_str(&json(&report(&d, &groups), Some(Path::new("/app")))).unwrap();
        assert_eq!(json["pid"], 4242);
        assert_eq!(json["mode"], "traced");
        assert!(json["runtime"].is_null());
        assert_eq!(json["agent_elapsed_ms"], 1.234);
        assert_eq!(json["total_ms"], 45.6);
        let cov = &json["coverage"];
        assert_eq!(cov["traced"], 9);
        assert_eq!(cov["not_polled_in_time"], 1);
        assert_eq!(cov["finished"], 1);
        assert_eq!(cov["alive"], 13);
        assert_eq!(cov["untraced"], 2);
        assert_eq!(cov["notes"][0], "localset tasks are not in such dumps");
        let g = &json["groups"][0];
        assert_eq!(g["count"], 7);
        assert_eq!(g["state"], "traced");
        assert_eq!(g["task_ids"].as_array().unwrap().len(), 7);
        assert_eq!(g["spawned_at"], "src/main.rs:40:9");
        assert_eq!(g["oldest_age_ms"], 7000);
        assert!(g["max_last_poll_ago_ms"].is_null());
        let root = &g["tree"][0];
        assert_eq!(root["function"], "app::serve::{{closure}}");
        assert_eq!(root["file"], "src/main.rs");
        assert_eq!(root["line"], 10);
        assert_eq!(root["column"], 5);
        assert_eq!(root["inlined"], true);
        assert_eq!(root["app"], true);
        let leaf = &root["children"][0]["children"][0];
        assert_eq!(leaf["file"], "tokio-1.54.1/src/sync/notify.rs");
        assert_eq!(leaf["app"], false);
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = [
            "pid",
            "mode",
            "runtime",
            "agent_elapsed_ms",
            "total_ms",
            "timings",
            "coverage",
            "groups",
        ];
        expected.sort_unstable();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        assert_eq!(keys_sorted, expected);
        let states: Vec<&str> = json["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["state"].as_str().unwrap())
            .collect();
        assert!(
            states.contains(&"not_polled_in_time") && states.contains(&"finished"),
            "{states:?}"
        );
        let npit = json["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["state"] == "not_polled_in_time")
            .unwrap();
        assert_eq!(npit["max_last_poll_ago_ms"], 32_500);
        assert_eq!(npit["tree"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn whole_runtime_json_names_the_runtime() {
        let mut d = dump(vec![]);
        d.mode = TasksMode::WholeRuntime { runtime: None };
        let json: serde_json::Value = serde_json::from_str(&json(&report(&d, &[]), None)).unwrap();
        assert_eq!(json["mode"], "whole-runtime");
        assert_eq!(json["runtime"], "main");
        assert_eq!(json["groups"].as_array().unwrap().len(), 0);
    }
}
