//! `delouse ps` output: the table and the JSON array.

use std::path::PathBuf;
use std::time::Duration;

use comfy_table::{Table, presets};
use delouse_proto::{DumpPolicy, Flavor, RuntimeInfo, TraceSupport, Welcome};
use serde::Serialize;

use crate::format::human_duration;
use crate::sanitize::escape;

/// Longest reason shown in the TRACES column.
const REASON_WIDTH: usize = 40;

/// One live agent, as `ps` found it.
#[derive(Debug, Clone)]
pub struct Agent {
    /// PID as the CLI sees it.
    pub pid: u32,
    /// `/proc/<pid>/comm`.
    pub name: Option<String>,
    /// How long the process has been running.
    pub uptime: Option<Duration>,
    /// Its socket.
    pub socket: PathBuf,
    /// What it said about itself.
    pub welcome: Welcome,
}

/// The name of a scheduler flavour.
pub fn flavor_name(f: Flavor) -> &'static str {
    match f {
        Flavor::CurrentThread => "current_thread",
        Flavor::MultiThread => "multi_thread",
        Flavor::Other => "other",
    }
}

/// `main: multi_thread×2`, `io: current_thread`.
pub fn runtime_text(r: &RuntimeInfo) -> String {
    match r.flavor {
        Flavor::MultiThread => format!("{}: multi_thread×{}", escape(&r.name), r.workers),
        f => format!("{}: {}", escape(&r.name), flavor_name(f)),
    }
}

fn shorten(s: &str, width: usize) -> String {
    let s = crate::error::one_line(s);
    if s.chars().count() <= width {
        return s;
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push('…');
    out
}

fn alive(w: &Welcome) -> u64 {
    w.runtimes.iter().map(|r| r.alive_tasks).sum()
}

/// The table, then one note per runtime that may not be dumped again.
pub fn table(agents: &[Agent]) -> String {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header([
        "PID", "NAME", "UPTIME", "AGENT", "RUNTIMES", "ALIVE", "TRACED", "TRACES",
    ]);
    let mut notes = Vec::new();
    for a in agents {
        let w = &a.welcome;
        let runtimes = if w.runtimes.is_empty() {
            "none".to_owned()
        } else {
            w.runtimes
                .iter()
                .map(runtime_text)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let traces = match &w.capabilities.traces {
            TraceSupport::Available => "yes".to_owned(),
            TraceSupport::Unavailable(why) => format!("no ({})", shorten(why, REASON_WIDTH)),
        };
        t.add_row([
            a.pid.to_string(),
            a.name
                .as_deref()
                .map_or_else(|| "?".into(), |n| escape(n).into_owned()),
            a.uptime.map_or_else(|| "?".into(), human_duration),
            escape(&w.agent_version).into_owned(),
            runtimes,
            alive(w).to_string(),
            w.capabilities.registered_tasks.to_string(),
            traces,
        ]);
        for r in &w.runtimes {
            if let DumpPolicy::Latched(why) = &r.whole_runtime_dump {
                notes.push(format!(
                    "note: pid {}: {}: no more whole-runtime dumps ({})",
                    a.pid,
                    escape(&r.name),
                    crate::error::one_line(why)
                ));
            }
        }
    }
    for column in t.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut out = t.trim_fmt();
    out.push('\n');
    for n in notes {
        out.push_str(&n);
        out.push('\n');
    }
    out
}

#[derive(Serialize)]
struct JsonAgent<'a> {
    pid: u32,
    name: Option<&'a str>,
    uptime_s: Option<f64>,
    agent_version: &'a str,
    protocol_version: u32,
    socket: String,
    runtimes: Vec<JsonRuntime<'a>>,
    registered_tasks: u64,
    traces_available: bool,
    traces_unavailable_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonRuntime<'a> {
    name: &'a str,
    flavor: &'static str,
    workers: u32,
    alive_tasks: u64,
    whole_runtime_dump: &'static str,
    latched_reason: Option<&'a str>,
}

/// The JSON array (one line, then a newline).
pub fn json(agents: &[Agent]) -> String {
    let doc: Vec<JsonAgent<'_>> = agents
        .iter()
        .map(|a| {
            let w = &a.welcome;
            JsonAgent {
                pid: a.pid,
                name: a.name.as_deref(),
                uptime_s: a.uptime.map(|d| d.as_secs_f64()),
                agent_version: &w.agent_version,
                protocol_version: w.protocol_version,
                socket: a.socket.display().to_string(),
                runtimes: w
                    .runtimes
                    .iter()
                    .map(|r| JsonRuntime {
                        name: &r.name,
                        flavor: flavor_name(r.flavor),
                        workers: r.workers,
                        alive_tasks: r.alive_tasks,
                        whole_runtime_dump: match r.whole_runtime_dump {
                            DumpPolicy::Allowed => "allowed",
                            DumpPolicy::Forbidden => "forbidden",
                            DumpPolicy::Unsupported => "unsupported",
                            DumpPolicy::Latched(_) => "latched",
                        },
                        latched_reason: match &r.whole_runtime_dump {
                            DumpPolicy::Latched(why) => Some(why),
                            _ => None,
                        },
                    })
                    .collect(),
                registered_tasks: w.capabilities.registered_tasks,
                traces_available: w.capabilities.traces == TraceSupport::Available,
                traces_unavailable_reason: match &w.capabilities.traces {
                    TraceSupport::Available => None,
                    TraceSupport::Unavailable(why) => Some(why),
                },
            }
        })
        .collect();
    let mut s = serde_json::to_string(&doc).unwrap_or_else(|_| "[]".into());
    s.push('\n');
    crate::sanitize::json(s)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use delouse_proto::{Capabilities, PROTOCOL_VERSION};

    pub(crate) fn welcome() -> Welcome {
        Welcome {
            protocol_version: PROTOCOL_VERSION,
            agent_version: "0.1.0".into(),
            pid: 4242,
            start_time: 1234,
            exe: "/srv/svc".into(),
            runtimes: vec![
                RuntimeInfo {
                    name: "main".into(),
                    flavor: Flavor::MultiThread,
                    workers: 2,
                    alive_tasks: 1500,
                    whole_runtime_dump: DumpPolicy::Latched(
                        "worker 1 looked stuck for 150 ms after a dump".into(),
                    ),
                },
                RuntimeInfo {
                    name: "io".into(),
                    flavor: Flavor::CurrentThread,
                    workers: 1,
                    alive_tasks: 3,
                    whole_runtime_dump: DumpPolicy::Forbidden,
                },
            ],
            capabilities: Capabilities {
                traces: TraceSupport::Available,
                registered_tasks: 1490,
            },
        }
    }

    fn agents() -> Vec<Agent> {
        let mut other = welcome();
        other.runtimes.truncate(0);
        other.capabilities.traces = TraceSupport::Unavailable(
            "built without --cfg tokio_unstable: add it to .cargo/config.toml (docs/guide.md)"
                .into(),
        );
        other.capabilities.registered_tasks = 0;
        vec![
            Agent {
                pid: 4242,
                name: Some("svc".into()),
                uptime: Some(Duration::from_secs(3 * 3600 + 300)),
                socket: "/run/user/1000/delouse/4242.sock".into(),
                welcome: welcome(),
            },
            Agent {
                pid: 77,
                name: None,
                uptime: None,
                socket: "/tmp/delouse-1000/77.sock".into(),
                welcome: other,
            },
        ]
    }

    #[test]
    fn table_snapshot() {
        insta::assert_snapshot!(table(&agents()));
    }

    #[test]
    fn agent_text_in_the_table_is_escaped() {
        let mut a = agents();
        a[0].name = Some("svc\u{1b}[2J".into());
        a[0].welcome.agent_version = "0.1.0\r\u{1b}[31mevil\t\u{202e}".into();
        a[0].welcome.runtimes[0].name = "main\nfake-row\u{9b}".into();
        let t = table(&a);
        for c in ['\u{1b}', '\r', '\t', '\u{202e}', '\u{9b}'] {
            assert!(!t.contains(c), "{c:?} in {t}");
        }
        assert!(t.contains("svc\\u{1b}[2J"), "{t}");
        assert!(
            t.contains("0.1.0\\u{d}\\u{1b}[31mevil\\u{9}\\u{202e}"),
            "{t}"
        );
        assert!(
            t.contains("main\\u{a}fake-row\\u{9b}: multi_thread×2"),
            "{t}"
        );
        // One header line, two agents, one note: no line was added.
        assert_eq!(t.lines().count(), 4, "{t}");
        let j = json(&a);
        assert!(!j.trim_end().chars().any(crate::sanitize::is_unsafe));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v[0]["agent_version"], a[0].welcome.agent_version.as_str());
        assert_eq!(v[0]["runtimes"][0]["name"], "main\nfake-row\u{9b}");
    }

    #[test]
    fn json_shape() {
        let v: serde_json::Value = serde_json::from_str(&json(&agents())).unwrap();
        let a = &v[0];
        assert_eq!(a["pid"], 4242);
        assert_eq!(a["name"], "svc");
        assert_eq!(a["uptime_s"], 11100.0);
        assert_eq!(a["agent_version"], "0.1.0");
        assert_eq!(a["protocol_version"], PROTOCOL_VERSION);
        assert_eq!(a["socket"], "/run/user/1000/delouse/4242.sock");
        assert_eq!(a["registered_tasks"], 1490);
        assert_eq!(a["traces_available"], true);
        assert!(a["traces_unavailable_reason"].is_null());
        let main = &a["runtimes"][0];
        assert_eq!(main["name"], "main");
        assert_eq!(main["flavor"], "multi_thread");
        assert_eq!(main["workers"], 2);
        assert_eq!(main["alive_tasks"], 1500);
        assert_eq!(main["whole_runtime_dump"], "latched");
        assert_eq!(
            main["latched_reason"],
            "worker 1 looked stuck for 150 ms after a dump"
        );
        assert_eq!(a["runtimes"][1]["flavor"], "current_thread");
        assert_eq!(a["runtimes"][1]["whole_runtime_dump"], "forbidden");
        assert!(a["runtimes"][1]["latched_reason"].is_null());
        let b = &v[1];
        assert!(b["name"].is_null() && b["uptime_s"].is_null());
        assert_eq!(b["traces_available"], false);
        assert!(
            b["traces_unavailable_reason"]
                .as_str()
                .unwrap()
                .contains("tokio_unstable")
        );
    }
}
