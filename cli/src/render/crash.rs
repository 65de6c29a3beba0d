//! `delouse crash` output: whether and where a core dump would be written,
//! then how the process ended and where its core is; and the JSON document.

use std::fmt::Write as _;

use delouse_proto::CrashReport;
use serde::Serialize;

use super::Paint;
use crate::crash::{
    Assessment, CoreFile, Destination, Ended, Handler, Outcome, TargetInfo, WaitStatus, commands,
    signal_name,
};
use crate::format::{human_bytes, precise_ms};
use crate::sanitize::escape;

/// Width of the labels.
const LABEL: usize = 15;

/// Everything `delouse crash` shows.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    /// The target, as the CLI sees it.
    pub pid: u32,
    /// What `/proc` said of it.
    pub target: &'a TargetInfo,
    /// The agent's preflight report.
    pub report: &'a CrashReport,
    /// The verdict.
    pub assessment: &'a Assessment,
    /// `--dry-run`.
    pub dry_run: bool,
    /// After the abort.
    pub outcome: Option<&'a Outcome>,
}

fn field(out: &mut String, label: &str, value: &str) {
    let _ = writeln!(out, "  {label:<LABEL$}{value}");
}

fn limit(l: Option<u64>) -> String {
    match l {
        None => "unlimited".into(),
        Some(0) => "0".into(),
        Some(n) => human_bytes(n),
    }
}

fn name(t: &TargetInfo) -> String {
    escape(t.name.as_deref().unwrap_or("?")).into_owned()
}

fn exe_path(t: &TargetInfo) -> Option<&str> {
    t.exe.as_ref().map(|e| e.path.as_str())
}

fn destination_text(d: &Destination) -> String {
    match d {
        Destination::File(c) => escape(&c.shown).into_owned(),
        Destination::Pipe { handler, kind } => {
            let how = match kind {
                Handler::SystemdCoredump => ": systemd-coredump keeps it; find it with coredumpctl",
                Handler::Apport => ": apport keeps it in /var/lib/apport/coredump/ or /var/crash/",
                Handler::Other => ": that program decides where it goes",
            };
            format!("piped to {}{how}", escape(handler))
        }
        Destination::Nowhere => "none (empty core_pattern)".to_owned(),
    }
}

fn dumpable_text(d: i32) -> String {
    match d {
        0 => "0 (not dumpable)".into(),
        1 => "1 (yes)".into(),
        2 => "2 (only as root, suid_dumpable)".into(),
        n => n.to_string(),
    }
}

fn preflight_text(out: &mut String, r: &Report<'_>, paint: Paint) {
    let rep = r.report;
    let t = r.target;
    let exe = exe_path(t).map_or_else(|| "?".to_owned(), |e| escape(e).into_owned());
    let _ = writeln!(
        out,
        "{}",
        paint.bold(&format!("pid {} ({}): {exe}", r.pid, name(t)))
    );
    field(
        out,
        "core limits",
        &format!(
            "soft {}, hard {}",
            limit(rep.core_soft_limit),
            limit(rep.core_hard_limit)
        ),
    );
    field(out, "core_pattern", &escape(&rep.core_pattern));
    if let Some(uses) = t.core_uses_pid
        && !rep.core_pattern.starts_with('|')
    {
        field(
            out,
            "core_uses_pid",
            if uses {
                "1 (.PID is appended unless the pattern has %p)"
            } else {
                "0"
            },
        );
    }
    field(
        out,
        "core goes to",
        &destination_text(&r.assessment.destination),
    );
    field(out, "dumpable", &dumpable_text(rep.dumpable));
    field(
        out,
        "pid namespace",
        if rep.pid_namespace_init {
            "PID 1 of its namespace (a container's init)"
        } else {
            "not its init"
        },
    );
    field(out, "working dir", &escape(&rep.cwd));
    let free = rep
        .free_bytes
        .map_or_else(|| "unknown".to_owned(), human_bytes);
    field(out, "free disk", &format!("{free} where the core goes"));
    field(
        out,
        "rss",
        &format!(
            "{} (about the size of the core)",
            human_bytes(rep.rss_bytes)
        ),
    );
    let a = r.assessment;
    let verdict = if a.can_dump() {
        "a core dump can be written".to_owned()
    } else {
        paint.warn("NO CORE DUMP CAN BE WRITTEN")
    };
    field(out, "verdict", &verdict);
    for p in &a.problems {
        field(out, "why not", &escape(p));
    }
    for w in &a.warnings {
        field(out, "note", &escape(w));
    }
}

fn ended_text(o: &Outcome) -> String {
    let after = precise_ms(o.waited.as_secs_f64() * 1000.0);
    match o.ended {
        Ended::Zombie(status) => match WaitStatus::from_raw(status) {
            WaitStatus::Signaled(sig, core) => format!(
                "ended after {after}: killed by {} (signal {sig}){}",
                signal_name(sig).unwrap_or("a signal"),
                if core {
                    ", core dumped"
                } else {
                    ", no core dumped (the kernel says)"
                }
            ),
            WaitStatus::Exited(code) => format!("ended after {after}: exited with code {code}"),
        },
        Ended::Reaped => format!(
            "ended after {after}; its parent reaped it before delouse saw its status: how it ended is unknown"
        ),
        Ended::StillRunning(state) => format!("still there after {after} (state {state})"),
    }
}

fn core_text(core: Option<&CoreFile>, dest: &Destination, same_root: bool) -> String {
    match (core, dest) {
        (Some(c), _) => format!(
            "{}, {}{}{}",
            escape(&c.path.display().to_string()),
            human_bytes(c.size),
            if c.fresh {
                ", written just now"
            } else {
                ", OLDER than the abort"
            },
            if same_root {
                ""
            } else {
                " (a path inside the target's filesystem)"
            }
        ),
        (None, Destination::File(c)) => format!("not found: nothing matches {}", escape(&c.shown)),
        (None, d) => destination_text(d),
    }
}

fn outcome_text(out: &mut String, r: &Report<'_>, o: &Outcome, paint: Paint) {
    let _ = writeln!(
        out,
        "{}",
        paint.bold(&format!(
            "aborted pid {} ({}): {}",
            r.pid,
            name(r.target),
            ended_text(o)
        ))
    );
    if o.last_words.core_soft_limit != r.report.core_soft_limit {
        field(
            out,
            "core limits",
            &format!(
                "soft raised to {} before the abort",
                limit(o.last_words.core_soft_limit)
            ),
        );
    }
    field(
        out,
        "core",
        &core_text(
            o.core.as_ref(),
            &r.assessment.destination,
            r.target.same_root,
        ),
    );
    let cmds = commands(
        exe_path(r.target),
        &r.assessment.destination,
        o.core.as_ref(),
        r.pid,
    );
    for (i, c) in cmds.iter().enumerate() {
        field(out, if i == 0 { "open it with" } else { "" }, &escape(c));
    }
}

/// The text output.
pub fn text(r: &Report<'_>, paint: Paint) -> String {
    let mut out = String::new();
    preflight_text(&mut out, r, paint);
    if r.dry_run {
        let _ = writeln!(
            out,
            "dry run: nothing was aborted; `delouse crash {}` aborts it (it asks first)",
            r.pid
        );
    }
    if let Some(o) = r.outcome {
        out.push('\n');
        outcome_text(&mut out, r, o, paint);
    }
    out
}

#[derive(Serialize)]
struct JsonPreflight<'a> {
    core_soft_limit: Option<u64>,
    core_hard_limit: Option<u64>,
    core_pattern: &'a str,
    core_uses_pid: Option<bool>,
    dumpable: i32,
    pid_namespace_init: bool,
    cwd: &'a str,
    free_bytes: Option<u64>,
    rss_bytes: u64,
}

#[derive(Serialize)]
struct JsonDestination<'a> {
    kind: &'static str,
    path: Option<&'a str>,
    handler: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonEnded {
    how: &'static str,
    waited_ms: f64,
    signal: Option<i32>,
    signal_name: Option<&'static str>,
    core_dumped: Option<bool>,
    exit_code: Option<i32>,
    state: Option<String>,
}

#[derive(Serialize)]
struct JsonCore {
    path: String,
    size: u64,
    fresh: bool,
}

#[derive(Serialize)]
struct JsonDoc<'a> {
    pid: u32,
    name: Option<&'a str>,
    exe: Option<&'a str>,
    dry_run: bool,
    aborted: bool,
    preflight: JsonPreflight<'a>,
    destination: JsonDestination<'a>,
    can_dump: bool,
    problems: &'a [String],
    warnings: &'a [String],
    ended: Option<JsonEnded>,
    core: Option<JsonCore>,
    commands: Vec<String>,
}

fn json_ended(o: &Outcome) -> JsonEnded {
    let mut e = JsonEnded {
        how: "",
        waited_ms: o.waited.as_secs_f64() * 1000.0,
        signal: None,
        signal_name: None,
        core_dumped: None,
        exit_code: None,
        state: None,
    };
    match o.ended {
        Ended::Zombie(status) => {
            e.how = "zombie";
            match WaitStatus::from_raw(status) {
                WaitStatus::Signaled(sig, core) => {
                    e.signal = Some(sig);
                    e.signal_name = signal_name(sig);
                    e.core_dumped = Some(core);
                }
                WaitStatus::Exited(code) => e.exit_code = Some(code),
            }
        }
        Ended::Reaped => e.how = "reaped",
        Ended::StillRunning(state) => {
            e.how = "still_running";
            e.state = Some(state.to_string());
        }
    }
    e
}

/// The JSON document (one line, then a newline).
pub fn json(r: &Report<'_>) -> String {
    let rep = r.report;
    let a = r.assessment;
    let destination = match &a.destination {
        Destination::File(c) => JsonDestination {
            kind: "file",
            path: Some(&c.shown),
            handler: None,
        },
        Destination::Pipe { handler, .. } => JsonDestination {
            kind: "pipe",
            path: None,
            handler: Some(handler),
        },
        Destination::Nowhere => JsonDestination {
            kind: "none",
            path: None,
            handler: None,
        },
    };
    let outcome = r.outcome;
    let commands = match outcome {
        Some(o) => commands(exe_path(r.target), &a.destination, o.core.as_ref(), r.pid),
        None => commands(exe_path(r.target), &a.destination, None, r.pid),
    };
    let doc = JsonDoc {
        pid: r.pid,
        name: r.target.name.as_deref(),
        exe: exe_path(r.target),
        dry_run: r.dry_run,
        aborted: outcome.is_some(),
        preflight: JsonPreflight {
            core_soft_limit: rep.core_soft_limit,
            core_hard_limit: rep.core_hard_limit,
            core_pattern: &rep.core_pattern,
            core_uses_pid: r.target.core_uses_pid,
            dumpable: rep.dumpable,
            pid_namespace_init: rep.pid_namespace_init,
            cwd: &rep.cwd,
            free_bytes: rep.free_bytes,
            rss_bytes: rep.rss_bytes,
        },
        destination,
        can_dump: a.can_dump(),
        problems: &a.problems,
        warnings: &a.warnings,
        ended: outcome.map(json_ended),
        core: outcome.and_then(|o| o.core.as_ref()).map(|c| JsonCore {
            path: c.path.display().to_string(),
            size: c.size,
            fresh: c.fresh,
        }),
        commands,
    };
    let mut s = serde_json::to_string(&doc).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    crate::sanitize::json(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crash::{DirState, Vars, assess};
    use crate::elf::{OnDisk, Origin};
    use std::time::Duration;

    fn target() -> TargetInfo {
        TargetInfo {
            pid: 4242,
            name: Some("svc".into()),
            exe: Some(Origin {
                path: "/srv/app/svc".into(),
                read_from: "/proc/4242/exe".into(),
                on_disk: Some(OnDisk::Same),
            }),
            core_uses_pid: Some(true),
            groups: vec![],
            same_root: true,
            vars: Vars {
                ns_pid: 4242,
                pid: 4242,
                dumpable: 1,
                ..Vars::default()
            },
        }
    }

    fn crash_report() -> CrashReport {
        CrashReport {
            core_soft_limit: Some(0),
            core_hard_limit: None,
            core_pattern: "core\u{1b}[2J".into(),
            dumpable: 1,
            pid_namespace_init: false,
            cwd: "/srv/app".into(),
            free_bytes: Some(10 << 30),
            rss_bytes: 40 << 20,
        }
    }

    #[test]
    fn text_snapshot() {
        let t = target();
        let rep = crash_report();
        let a = assess(&rep, &t, &DirState::NotApplicable);
        let mut last = rep.clone();
        last.core_soft_limit = None;
        let outcome = Outcome {
            last_words: last,
            ended: Ended::Zombie(0x86),
            waited: Duration::from_millis(35),
            core: Some(CoreFile {
                path: "/srv/app/core\u{1b}[2J.4242".into(),
                size: 41 << 20,
                fresh: true,
            }),
        };
        let dry = Report {
            pid: 4242,
            target: &t,
            report: &rep,
            assessment: &a,
            dry_run: true,
            outcome: None,
        };
        let after = Report {
            dry_run: false,
            outcome: Some(&outcome),
            ..dry
        };
        let text = format!(
            "{}\n---\n{}",
            text(&dry, Paint::plain()),
            text(&after, Paint::plain())
        );
        assert!(!text.contains('\u{1b}'), "{text}");
        insta::assert_snapshot!(text);

        let doc: serde_json::Value = serde_json::from_str(&json(&after)).unwrap();
        assert_eq!(doc["aborted"], true);
        assert_eq!(doc["can_dump"], true);
        assert_eq!(doc["ended"]["signal_name"], "SIGABRT");
        assert_eq!(doc["ended"]["core_dumped"], true);
        assert_eq!(doc["core"]["size"], 41u64 << 20);
        assert_eq!(doc["preflight"]["core_hard_limit"], serde_json::Value::Null);
        assert_eq!(doc["destination"]["kind"], "file");
        assert!(
            doc["commands"][0]
                .as_str()
                .unwrap()
                .starts_with("rust-gdb /srv/app/svc '/srv/app/core")
        );
    }

    #[test]
    fn no_core_is_said_plainly() {
        let t = target();
        let mut rep = crash_report();
        rep.core_hard_limit = Some(0);
        let a = assess(&rep, &t, &DirState::NotApplicable);
        let r = Report {
            pid: 4242,
            target: &t,
            report: &rep,
            assessment: &a,
            dry_run: true,
            outcome: None,
        };
        let text = text(&r, Paint::plain());
        assert!(text.contains("NO CORE DUMP CAN BE WRITTEN"), "{text}");
        assert!(text.contains("hard core size limit"), "{text}");
        let doc: serde_json::Value = serde_json::from_str(&json(&r)).unwrap();
        assert_eq!(doc["can_dump"], false);
        assert_eq!(doc["aborted"], false);
        assert!(doc["ended"].is_null());
    }
}
