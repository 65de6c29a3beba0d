//! `delouse elf` output: the facts as labelled lines, the agent's part,
//! the sections and the crates as tables; and the JSON document.

use std::fmt::Write as _;

use comfy_table::{Table, presets};
use delouse_proto::{BuildInfo, TraceSupport};
use serde::Serialize;

use super::Paint;
use super::ps::{flavor_name, runtime_text};
use crate::elf::{AgentPart, DebugState, ElfFacts, OnDisk, Origin, Package, Section, TokioVersion};
use crate::error::one_line;
use crate::format::human_bytes;
use crate::sanitize::escape;

/// Width of the labels of the facts.
const LABEL: usize = 16;

/// Everything `delouse elf` shows.
#[derive(Debug)]
pub struct Report<'a> {
    /// The process, when a pid was given.
    pub pid: Option<u32>,
    /// Where the facts come from.
    pub origin: &'a Origin,
    /// The facts (none when the file could not be read).
    pub facts: Option<&'a ElfFacts>,
    /// What the agent said.
    pub agent: &'a AgentPart,
    /// Show every section.
    pub all_sections: bool,
}

fn field(out: &mut String, label: &str, value: &str) {
    let _ = writeln!(out, "  {label:<LABEL$}{value}");
}

/// More lines under the same label.
fn more(out: &mut String, value: &str) {
    let _ = writeln!(out, "  {:<LABEL$}{value}", "");
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn tokio_text(versions: &[TokioVersion]) -> Option<String> {
    let first = versions.first()?;
    let list: Vec<&str> = versions.iter().map(|v| v.version.as_str()).collect();
    Some(format!(
        "{} (from {})",
        escape(&list.join(", ")),
        first.from
    ))
}

fn on_disk_text(on_disk: &OnDisk, paint: Paint) -> String {
    match on_disk {
        OnDisk::Same => "the running image".to_owned(),
        OnDisk::Replaced => paint.warn(
            "REPLACED since the process started: the file at that path is another file; \
             the facts below are of the running image",
        ),
        OnDisk::Deleted => paint
            .warn("DELETED since the process started; the facts below are of the running image"),
        OnDisk::Unknown(why) => format!("unknown ({})", one_line(why)),
    }
}

fn debug_text(out: &mut String, f: &ElfFacts) {
    let d = &f.debug;
    let compressed = if d.compressed { ", compressed" } else { "" };
    let dwarf_sections = f
        .sections
        .iter()
        .filter(|s| crate::elf::is_dwarf(&s.name))
        .count();
    let value = match d.state {
        DebugState::Present => format!(
            "in the file: {} in {dwarf_sections} DWARF sections{compressed}",
            human_bytes(d.dwarf_bytes)
        ),
        DebugState::Separate => match &d.debuglink {
            Some(link) if link.found.is_some() => "separate, found (see debuglink)".to_owned(),
            _ => "separate, NOT FOUND: install the debug package, or put the debuglink file beside the binary"
                .to_owned(),
        },
        DebugState::None if d.stripped => "none (stripped)".to_owned(),
        DebugState::None => "none".to_owned(),
    };
    field(out, "debug info", &value);
    if let Some(link) = &d.debuglink {
        let found = match (&link.found, link.found_in) {
            (Some(path), Some(place)) => format!("found at {} ({place})", escape(path)),
            _ if link.looked_in.is_empty() => "not looked for (not a plain file name)".to_owned(),
            _ => format!(
                "not found (looked in {})",
                escape(&link.looked_in.join(", "))
            ),
        };
        field(
            out,
            "debuglink",
            &format!("{} (crc {}): {found}", escape(&link.file), link.crc),
        );
    }
    if let Some(file) = &d.build_id_file {
        field(
            out,
            "debug file",
            &format!("{} (by build id)", escape(file)),
        );
    }
    if let Some(alt) = &d.debugaltlink {
        field(out, "debugaltlink", &escape(alt));
    }
    let symbols = if d.symtab {
        format!(
            "present: {} symbols in .symtab, {} dynamic",
            d.symbols, d.dynamic_symbols
        )
    } else {
        format!("absent (no .symtab); {} dynamic symbols", d.dynamic_symbols)
    };
    field(out, "symbol table", &symbols);
}

fn facts_text(out: &mut String, f: &ElfFacts) {
    field(
        out,
        "size",
        &format!("{} ({} bytes)", human_bytes(f.size), f.size),
    );
    field(
        out,
        "arch",
        &format!("{}, ELF{} {}-endian", escape(&f.arch), f.class, f.endian),
    );
    field(out, "type", &format!("{} ({})", f.kind, f.elf_type));
    field(
        out,
        "build id",
        f.build_id
            .as_deref()
            .unwrap_or("none (no NT_GNU_BUILD_ID note)"),
    );
    if let Some(interp) = &f.interpreter {
        field(out, "interpreter", &escape(interp));
    }
    if f.needed.is_empty() {
        field(out, "needed", "none");
    } else {
        field(out, "needed", &escape(&f.needed.join(", ")));
    }
    match f.comment.split_first() {
        None => field(out, "compiler", "unknown (no .comment)"),
        Some((first, rest)) => {
            field(out, "compiler", &escape(first));
            for c in rest {
                more(out, &escape(c));
            }
        }
    }
    debug_text(out, f);
    field(
        out,
        "tokio",
        &tokio_text(&f.tokio).unwrap_or_else(|| "not found".to_owned()),
    );
    match &f.crates {
        Some(list) => field(
            out,
            "crates",
            &format!("{} in .dep-v0 (cargo-auditable), listed below", list.len()),
        ),
        None if f.crates_error.is_some() => {
            field(out, "crates", "a .dep-v0 that could not be read")
        }
        None => field(
            out,
            "crates",
            "no list embedded (build with `cargo auditable` for one)",
        ),
    }
}

fn traces_text(t: &TraceSupport) -> String {
    match t {
        TraceSupport::Available => "available".to_owned(),
        TraceSupport::Unavailable(why) => format!("unavailable: {}", one_line(why)),
    }
}

fn agent_text(out: &mut String, pid: u32, b: &BuildInfo, paint: Paint) {
    let _ = writeln!(out, "{}", paint.bold(&format!("agent of pid {pid}")));
    field(out, "version", &escape(&b.agent_version));
    field(out, "target", &escape(&b.target));
    field(out, "tokio_unstable", yes_no(b.tokio_unstable));
    field(out, "taskdump", yes_no(b.taskdump));
    field(out, "traces", &traces_text(&b.traces));
    field(out, "debug asserts", yes_no(b.debug_assertions));
    if b.runtimes.is_empty() {
        field(out, "runtimes", "none registered");
    } else {
        let list: Vec<String> = b
            .runtimes
            .iter()
            .map(|r| format!("{} ({} tasks)", runtime_text(r), r.alive_tasks))
            .collect();
        field(out, "runtimes", &list.join(", "));
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(header.iter().copied());
    t
}

fn finish(mut t: Table) -> String {
    for column in t.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut s = String::new();
    for line in t.trim_fmt().lines() {
        let _ = writeln!(s, "  {line}");
    }
    s
}

fn sections_text(out: &mut String, sections: &[Section], all: bool, paint: Paint) {
    let shown: Vec<&Section> = sections
        .iter()
        .filter(|s| !s.name.is_empty() && (all || s.notable()))
        .collect();
    let named = sections.iter().filter(|s| !s.name.is_empty()).count();
    let title = if all || shown.len() == named {
        format!("sections ({named})")
    } else {
        format!(
            "sections ({} of {named}; --all-sections for all)",
            shown.len()
        )
    };
    let _ = writeln!(out, "{}", paint.bold(&title));
    let mut t = table(&["SECTION", "SIZE", "TYPE", "FLAGS"]);
    for s in shown {
        t.add_row([
            escape(&s.name).into_owned(),
            human_bytes(s.size),
            s.kind.clone(),
            s.flags.clone(),
        ]);
    }
    out.push_str(&finish(t));
}

fn crates_text(out: &mut String, crates: &[Package], paint: Paint) {
    let _ = writeln!(
        out,
        "{}",
        paint.bold(&format!("crates ({}, from .dep-v0)", crates.len()))
    );
    let mut t = table(&["CRATE", "VERSION", "SOURCE", "KIND"]);
    let mut sorted: Vec<&Package> = crates.iter().collect();
    sorted.sort_by(|a, b| (!a.root, &a.name, &a.version).cmp(&(!b.root, &b.name, &b.version)));
    for p in sorted {
        let kind = if p.root {
            "root".to_owned()
        } else {
            p.kind
                .as_deref()
                .map_or("runtime".to_owned(), |k| escape(k).into_owned())
        };
        t.add_row([
            escape(&p.name).into_owned(),
            escape(&p.version).into_owned(),
            escape(&p.source).into_owned(),
            kind,
        ]);
    }
    out.push_str(&finish(t));
}

/// The text output.
pub fn text(r: &Report<'_>, paint: Paint) -> String {
    let mut out = String::new();
    let title = match r.pid {
        Some(pid) => format!("pid {pid}: {}", escape(&r.origin.path)),
        None => escape(&r.origin.path).into_owned(),
    };
    let _ = writeln!(out, "{}", paint.bold(&title));
    if let Some(on_disk) = &r.origin.on_disk {
        field(&mut out, "read from", &escape(&r.origin.read_from));
        field(&mut out, "on disk", &on_disk_text(on_disk, paint));
    }
    match r.facts {
        Some(f) => facts_text(&mut out, f),
        None => field(&mut out, "elf", "not readable (see the error below)"),
    }
    match (r.agent, r.pid) {
        (AgentPart::Answered(b), Some(pid)) => {
            out.push('\n');
            agent_text(&mut out, pid, b, paint);
        }
        (AgentPart::Absent(_), Some(_)) => field(&mut out, "agent", "none answered"),
        (AgentPart::Failed(e), Some(_)) => field(
            &mut out,
            "agent",
            &format!("did not answer: {}", one_line(&e.message)),
        ),
        _ => {}
    }
    if let Some(f) = r.facts {
        out.push('\n');
        sections_text(&mut out, &f.sections, r.all_sections, paint);
        if let Some(crates) = &f.crates {
            out.push('\n');
            crates_text(&mut out, crates, paint);
        }
    }
    out
}

#[derive(Serialize)]
struct JsonRuntime<'a> {
    name: &'a str,
    flavor: &'static str,
    workers: u32,
    alive_tasks: u64,
}

#[derive(Serialize)]
struct JsonAgent<'a> {
    agent_version: &'a str,
    target: &'a str,
    tokio_unstable: bool,
    taskdump: bool,
    traces_available: bool,
    traces_unavailable_reason: Option<&'a str>,
    debug_assertions: bool,
    runtimes: Vec<JsonRuntime<'a>>,
}

#[derive(Serialize)]
struct JsonDoc<'a> {
    pid: Option<u32>,
    path: &'a str,
    read_from: &'a str,
    on_disk: Option<&'static str>,
    on_disk_reason: Option<&'a str>,
    #[serde(flatten)]
    facts: Option<&'a ElfFacts>,
    agent: Option<JsonAgent<'a>>,
    agent_error: Option<&'a str>,
}

/// The JSON document (one line, then a newline).
pub fn json(r: &Report<'_>) -> String {
    let agent = match r.agent {
        AgentPart::Answered(b) => Some(JsonAgent {
            agent_version: &b.agent_version,
            target: &b.target,
            tokio_unstable: b.tokio_unstable,
            taskdump: b.taskdump,
            traces_available: b.traces == TraceSupport::Available,
            traces_unavailable_reason: match &b.traces {
                TraceSupport::Available => None,
                TraceSupport::Unavailable(why) => Some(why),
            },
            debug_assertions: b.debug_assertions,
            runtimes: b
                .runtimes
                .iter()
                .map(|rt| JsonRuntime {
                    name: &rt.name,
                    flavor: flavor_name(rt.flavor),
                    workers: rt.workers,
                    alive_tasks: rt.alive_tasks,
                })
                .collect(),
        }),
        _ => None,
    };
    let agent_error = match r.agent {
        AgentPart::Absent(e) | AgentPart::Failed(e) => Some(e.message.as_str()),
        AgentPart::NotAsked | AgentPart::Answered(_) => None,
    };
    let doc = JsonDoc {
        pid: r.pid,
        path: &r.origin.path,
        read_from: &r.origin.read_from,
        on_disk: r.origin.on_disk.as_ref().map(OnDisk::as_str),
        on_disk_reason: match &r.origin.on_disk {
            Some(OnDisk::Unknown(why)) => Some(why),
            _ => None,
        },
        facts: r.facts,
        agent,
        agent_error,
    };
    let mut s = serde_json::to_string(&doc).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    crate::sanitize::json(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::{DebugInfo, Debuglink};
    use crate::error::CliError;
    use delouse_proto::{DumpPolicy, Flavor, RuntimeInfo};

    fn section(name: &str, size: u64, kind: &str, flags: &str) -> Section {
        Section {
            name: name.into(),
            size,
            kind: kind.into(),
            flags: flags.into(),
            address: 0,
            compressed: false,
        }
    }

    fn facts() -> ElfFacts {
        ElfFacts {
            size: 13_000_000,
            class: 64,
            endian: "little",
            arch: "x86_64".into(),
            elf_type: "DYN".into(),
            kind: "pie executable",
            pie: true,
            static_linked: false,
            build_id: Some("3f2a0b".into()),
            interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
            needed: vec!["libgcc_s.so.1".into(), "libc.so.6".into()],
            comment: vec![
                "rustc version 1.95.0 (59807616e 2026-04-14)".into(),
                "GCC: (evil\u{1b}[2J) 14".into(),
            ],
            rustc: Some("1.95.0 (59807616e 2026-04-14)".into()),
            debug: DebugInfo {
                state: DebugState::Separate,
                dwarf_bytes: 0,
                compressed: false,
                symtab: false,
                symbols: 0,
                dynamic_symbols: 53,
                stripped: true,
                debuglink: Some(Debuglink {
                    file: "svc.debug".into(),
                    crc: "0badf00d".into(),
                    found: Some("/usr/lib/debug/srv/svc.debug".into()),
                    found_in: Some("/usr/lib/debug"),
                    looked_in: vec!["/srv/svc.debug".into()],
                }),
                build_id_file: None,
                debugaltlink: None,
            },
            sections: vec![
                section("", 0, "NULL", ""),
                section(".interp", 28, "PROGBITS", "A"),
                section(".text", 2_200_000, "PROGBITS", "AX"),
                section(".rela.dyn", 90_000, "RELA", "A"),
                section(".bss", 4096, "NOBITS", "WA"),
                section(".gnu_debuglink", 16, "PROGBITS", ""),
            ],
            crates: Some(vec![
                Package {
                    name: "tokio".into(),
                    version: "1.54.1".into(),
                    source: "crates.io".into(),
                    kind: None,
                    root: false,
                    dependencies: vec![],
                },
                Package {
                    name: "svc".into(),
                    version: "0.1.0".into(),
                    source: "local".into(),
                    kind: None,
                    root: true,
                    dependencies: vec![0],
                },
            ]),
            crates_error: None,
            tokio: vec![TokioVersion {
                version: "1.54.1".into(),
                from: "crate list",
            }],
        }
    }

    fn build() -> BuildInfo {
        BuildInfo {
            agent_version: "0.1.0".into(),
            tokio_unstable: true,
            taskdump: true,
            traces: TraceSupport::Available,
            debug_assertions: false,
            target: "x86_64-linux".into(),
            runtimes: vec![RuntimeInfo {
                name: "main".into(),
                flavor: Flavor::MultiThread,
                workers: 4,
                alive_tasks: 12,
                whole_runtime_dump: DumpPolicy::Allowed,
            }],
        }
    }

    #[test]
    fn text_snapshot() {
        let f = facts();
        let origin = Origin {
            path: "/srv/svc".into(),
            read_from: "/proc/4242/exe".into(),
            on_disk: Some(OnDisk::Replaced),
        };
        let agent = AgentPart::Answered(Box::new(build()));
        let report = Report {
            pid: Some(4242),
            origin: &origin,
            facts: Some(&f),
            agent: &agent,
            all_sections: false,
        };
        let text = text(&report, Paint::plain());
        assert!(!text.contains('\u{1b}'), "{text}");
        insta::assert_snapshot!(text);
    }

    #[test]
    fn json_of_a_file_without_agent() {
        let f = facts();
        let origin = Origin {
            path: "./svc".into(),
            read_from: "./svc".into(),
            on_disk: None,
        };
        let report = Report {
            pid: None,
            origin: &origin,
            facts: Some(&f),
            agent: &AgentPart::NotAsked,
            all_sections: true,
        };
        let doc: serde_json::Value = serde_json::from_str(&json(&report)).unwrap();
        assert_eq!(doc["path"], "./svc");
        assert_eq!(doc["build_id"], "3f2a0b");
        assert_eq!(doc["debug"]["state"], "separate");
        assert_eq!(doc["debug"]["stripped"], true);
        assert_eq!(doc["debug"]["debuglink"]["found_in"], "/usr/lib/debug");
        assert_eq!(doc["sections"].as_array().unwrap().len(), 6);
        assert_eq!(doc["sections"][2]["type"], "PROGBITS");
        assert_eq!(doc["crates"][1]["root"], true);
        assert_eq!(doc["tokio"][0]["from"], "crate list");
        assert!(doc["agent"].is_null() && doc["on_disk"].is_null());

        let absent = AgentPart::Absent(CliError::no_agent("no delouse agent in process 7"));
        let origin = Origin {
            path: "/x".into(),
            read_from: "/proc/7/exe".into(),
            on_disk: Some(OnDisk::Same),
        };
        let report = Report {
            pid: Some(7),
            origin: &origin,
            facts: Some(&f),
            agent: &absent,
            all_sections: false,
        };
        let doc: serde_json::Value = serde_json::from_str(&json(&report)).unwrap();
        assert_eq!(doc["on_disk"], "same");
        assert_eq!(doc["agent_error"], "no delouse agent in process 7");
        let t = text(&report, Paint::plain());
        assert!(t.contains("agent           none answered"), "{t}");
    }
}
