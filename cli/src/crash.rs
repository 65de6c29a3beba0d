//! `delouse crash`: abort a process so that it leaves a core dump, after
//! checking that one can be written (DESIGN §9, docs/crash.md).
//!
//! The agent reports the core limits, `core_pattern`, its dumpable flag,
//! whether it is a PID namespace's init, its working directory, free disk
//! and RSS (`CrashPreflight`); this side adds what it can see from `/proc`,
//! says plainly when no core can be written, asks, sends `Crash`, waits for
//! the process to end and says where the core went.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use delouse_proto::{Answer, CrashReport, RequestKind};

use crate::Output;
use crate::connect::{self, Deadline};
use crate::elf::{self, OnDisk, Origin};
use crate::error::{CliError, Exit, Result, io_text};
use crate::format::{human_bytes, human_duration};
use crate::render::{Paint, crash as render};
use crate::{procfs, prompt, trust};

/// For `delouse crash --help`.
pub const WHAT_IT_DOES: &str = "\
The agent raises the process's soft core size limit to its hard limit, answers, and calls abort() on
its own thread: the process ends with SIGABRT and the kernel writes a core where core_pattern says
(a file, or a pipe to a handler such as systemd-coredump). Before that, delouse reports the limits,
core_pattern, the dumpable flag, free disk against the process's RSS, and refuses when no core can
be written (--force aborts anyway). --dry-run only reports. Without --yes it asks on the terminal,
and refuses when there is none. Afterwards it waits up to --timeout for the process to end, prints
how it ended, where the core is and the rust-gdb (or coredumpctl) command that opens it.";

/// The signal the agent's `abort()` raises.
const SIGABRT: i32 = 6;

/// Smallest core the kernel writes (`ELF_EXEC_PAGESIZE` on the supported
/// targets); systemd-coredump skips limits below a page too.
const MIN_CORE_LIMIT: u64 = 4096;

/// How often the wait for the process's end looks at `/proc`.
const POLL: Duration = Duration::from_millis(2);

/// Options of `delouse crash`.
#[derive(Debug, Clone)]
pub struct Options {
    /// The target.
    pub pid: u32,
    /// JSON instead of text.
    pub json: bool,
    /// Report only.
    pub dry_run: bool,
    /// Consent given on the command line.
    pub yes: bool,
    /// Abort even when no core can be written.
    pub force: bool,
    /// Bound on the exchange, and then on the wait for the end.
    pub timeout: Duration,
}

/// One piece of an expanded `core_pattern`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Known text.
    Text(String),
    /// A specifier whose value is not known here (`%t`, or `%h` in
    /// another UTS namespace): any text.
    Unknown(char),
}

/// `pieces` as text, an unknown specifier shown as itself (`%t`).
pub fn pieces_text(pieces: &[Piece]) -> String {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Text(t) => t.clone(),
            Piece::Unknown(c) => format!("%{c}"),
        })
        .collect()
}

/// What is known of the aborting process, to expand `core_pattern`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    /// `%p`: the PID in its own namespace.
    pub ns_pid: u32,
    /// `%P`: the PID in the initial namespace (as this CLI sees it).
    pub pid: u32,
    /// `%i`: the aborting thread's id in its namespace (the agent's).
    pub ns_tid: Option<u32>,
    /// `%I`: the aborting thread's id as this CLI sees it.
    pub tid: Option<u32>,
    /// `%u`, `%g`: real uid and gid.
    pub ids: Option<(u32, u32)>,
    /// `%d`: the dumpable flag.
    pub dumpable: i32,
    /// `%h`: the host name, when the target is in this CLI's UTS namespace.
    pub hostname: Option<String>,
    /// `%e`: the aborting thread's name.
    pub thread_name: Option<String>,
    /// `%E`, `%f`: the executable's path.
    pub exe: Option<String>,
    /// `%c`: the soft core limit when it dumps (`None`: unlimited).
    pub core_limit: Option<u64>,
}

/// What the kernel does to a name it puts into a core file name
/// (`cn_esc_printf`): `/` becomes `!`, and `.`, `..` and the empty name are
/// made harmless.
fn escape_component(s: &str) -> String {
    let mut out: String = s.chars().map(|c| if c == '/' { '!' } else { c }).collect();
    if out.is_empty() {
        out.push('!');
    } else if out == "." || out == ".." {
        out.replace_range(0..1, "!");
    }
    out
}

/// Expands `pattern` as the kernel's `format_corename` does, as far as
/// `v` knows. Unknown specifiers the kernel knows stay [`Piece::Unknown`];
/// specifiers it does not know expand to nothing, as in the kernel.
pub fn expand(pattern: &str, v: &Vars) -> Vec<Piece> {
    let mut pieces: Vec<Piece> = Vec::new();
    let mut text = String::new();
    let mut chars = pattern.chars();
    let push_unknown = |pieces: &mut Vec<Piece>, text: &mut String, c: char| {
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(text)));
        }
        pieces.push(Piece::Unknown(c));
    };
    while let Some(c) = chars.next() {
        if c != '%' {
            text.push(c);
            continue;
        }
        let Some(spec) = chars.next() else { break };
        let known: Option<String> = match spec {
            '%' => Some("%".into()),
            'p' => Some(v.ns_pid.to_string()),
            'P' => Some(v.pid.to_string()),
            'i' => v.ns_tid.map(|t| t.to_string()),
            'I' => v.tid.map(|t| t.to_string()),
            'u' => v.ids.map(|(u, _)| u.to_string()),
            'g' => v.ids.map(|(_, g)| g.to_string()),
            'd' => Some(v.dumpable.to_string()),
            's' => Some(SIGABRT.to_string()),
            'c' => Some(v.core_limit.unwrap_or(u64::MAX).to_string()),
            'h' => v.hostname.as_deref().map(escape_component),
            'e' => v.thread_name.as_deref().map(escape_component),
            'E' => v.exe.as_deref().map(escape_component),
            'f' => v
                .exe
                .as_deref()
                .map(|e| escape_component(e.rsplit('/').next().unwrap_or(e))),
            't' | 'F' => None,
            _ => Some(String::new()),
        };
        match known {
            Some(s) => text.push_str(&s),
            None => push_unknown(&mut pieces, &mut text, spec),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    pieces
}

/// Whether `name` can be what `pieces` expand to (an unknown piece
/// matches any text without a `/`; `%t` and `%c` only digits).
pub fn name_matches(pieces: &[Piece], name: &str) -> bool {
    match pieces.split_first() {
        None => name.is_empty(),
        Some((Piece::Text(t), rest)) => name
            .strip_prefix(t.as_str())
            .is_some_and(|r| name_matches(rest, r)),
        Some((Piece::Unknown(c), rest)) => {
            let digits = matches!(c, 't' | 'c');
            let mut end = 0;
            loop {
                if end > 0 && name_matches(rest, &name[end..]) {
                    return true;
                }
                let Some(ch) = name[end..].chars().next() else {
                    return false;
                };
                if ch == '/' || (digits && !ch.is_ascii_digit()) {
                    return false;
                }
                end += ch.len_utf8();
            }
        }
    }
}

/// Which program a pipe `core_pattern` hands cores to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// systemd-coredump: `coredumpctl` finds the core.
    SystemdCoredump,
    /// Ubuntu's apport.
    Apport,
    /// Anything else.
    Other,
}

/// A core file's place, as the target sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorePath {
    /// The whole path, unknown specifiers shown as themselves.
    pub shown: String,
    /// The directory, when the pattern's directory part is fully known.
    pub dir: Option<PathBuf>,
    /// The file name's pieces.
    pub name: Vec<Piece>,
}

/// Where `core_pattern` sends a core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A file.
    File(CorePath),
    /// A pipe to a program (its path first).
    Pipe {
        /// The program.
        handler: String,
        /// What it is.
        kind: Handler,
    },
    /// Nowhere: `core_pattern` is empty and `core_uses_pid` is 0.
    Nowhere,
}

/// Where a core of a process would go: `pattern` expanded with `v`,
/// relative to `cwd`, with the `.PID` that `core_uses_pid` adds.
pub fn destination(pattern: &str, uses_pid: bool, cwd: &str, v: &Vars) -> Destination {
    if let Some(command) = pattern.strip_prefix('|') {
        let handler = command
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        let kind = if handler.ends_with("systemd-coredump") {
            Handler::SystemdCoredump
        } else if handler.contains("apport") {
            Handler::Apport
        } else {
            Handler::Other
        };
        return Destination::Pipe { handler, kind };
    }
    if pattern.is_empty() && !uses_pid {
        return Destination::Nowhere;
    }
    let mut pieces = expand(pattern, v);
    // The kernel appends `.PID` unless the pattern has `%p` itself.
    if uses_pid && !has_pid_specifier(pattern) {
        pieces.push(Piece::Text(format!(".{}", v.ns_pid)));
    }
    let mut full = if pattern.starts_with('/') {
        Vec::new()
    } else {
        vec![Piece::Text(format!("{}/", cwd.trim_end_matches('/')))]
    };
    full.extend(pieces);
    // Split at the last `/`, which must be in a known piece.
    let mut dir_pieces = Vec::new();
    let mut name = Vec::new();
    let mut split_at = None;
    for (i, p) in full.iter().enumerate() {
        if let Piece::Text(t) = p
            && t.contains('/')
        {
            split_at = Some(i);
        }
    }
    if let Some(i) = split_at {
        for (j, p) in full.iter().enumerate() {
            match (j.cmp(&i), p) {
                (std::cmp::Ordering::Less, p) => dir_pieces.push(p.clone()),
                (std::cmp::Ordering::Equal, Piece::Text(t)) => {
                    let cut = t.rfind('/').unwrap_or(0);
                    dir_pieces.push(Piece::Text(t[..=cut].to_owned()));
                    if cut + 1 < t.len() {
                        name.push(Piece::Text(t[cut + 1..].to_owned()));
                    }
                }
                (_, p) => name.push(p.clone()),
            }
        }
    }
    let dir = dir_pieces
        .iter()
        .all(|p| matches!(p, Piece::Text(_)))
        .then(|| PathBuf::from(pieces_text(&dir_pieces)))
        .filter(|d| d.is_absolute());
    Destination::File(CorePath {
        shown: pieces_text(&full),
        dir,
        name,
    })
}

/// Whether a pattern holds `%p` (not `%%p`).
fn has_pid_specifier(pattern: &str) -> bool {
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '%' && chars.next() == Some('p') {
            return true;
        }
    }
    false
}

/// What the CLI knows of the target beyond the agent's report.
#[derive(Debug, Clone)]
pub struct TargetInfo {
    /// PID as the CLI sees it.
    pub pid: u32,
    /// `/proc/<pid>/comm`.
    pub name: Option<String>,
    /// Its running image and the file at its path.
    pub exe: Option<Origin>,
    /// `/proc/sys/kernel/core_uses_pid`.
    pub core_uses_pid: Option<bool>,
    /// Supplementary groups, for whether it may write the core's directory.
    pub groups: Vec<u32>,
    /// Whether its `/` is this CLI's `/`.
    pub same_root: bool,
    /// For expanding `core_pattern`.
    pub vars: Vars,
}

/// Reads what `/proc` says of `pid` (whose agent says its own PID is
/// `ns_pid`).
fn target_info(pid: u32, ns_pid: u32, report: &CrashReport) -> TargetInfo {
    let status = std::fs::read_to_string(procfs::dir(pid).join("status")).unwrap_or_default();
    let groups = status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let agent = agent_thread(pid);
    let same_ns = |ns: &str| {
        let mine = std::fs::read_link(format!("/proc/self/ns/{ns}"));
        let theirs = std::fs::read_link(procfs::dir(pid).join("ns").join(ns));
        matches!((mine, theirs), (Ok(a), Ok(b)) if a == b)
    };
    let hostname = same_ns("uts")
        .then(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .flatten()
        .map(|h| h.trim_end().to_owned());
    let same_root = same_file(&procfs::root(pid), Path::new("/"));
    let exe = elf::running_image(pid);
    let exe_link = std::fs::read_link(procfs::dir(pid).join("exe"))
        .ok()
        .map(|l| l.to_string_lossy().into_owned());
    let core_uses_pid = std::fs::read_to_string("/proc/sys/kernel/core_uses_pid")
        .ok()
        .map(|s| s.trim() != "0");
    TargetInfo {
        pid,
        name: procfs::comm(pid),
        exe,
        core_uses_pid,
        groups,
        same_root,
        vars: Vars {
            ns_pid,
            pid,
            ns_tid: agent.as_ref().map(|a| a.ns_tid),
            tid: agent.as_ref().map(|a| a.tid),
            ids: procfs::parse_status_real_ids(&status),
            dumpable: report.dumpable,
            hostname,
            thread_name: agent.map(|a| a.name),
            exe: exe_link,
            // The agent raises the soft limit to the hard one.
            core_limit: report.core_hard_limit,
        },
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

struct AgentThread {
    tid: u32,
    ns_tid: u32,
    name: String,
}

/// The agent's thread (`delouse-agent`), which calls `abort()`: its name
/// and id go into `%e` and `%i`.
fn agent_thread(pid: u32) -> Option<AgentThread> {
    let tasks = std::fs::read_dir(procfs::dir(pid).join("task")).ok()?;
    for entry in tasks.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(name) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        let name = name.trim_end_matches('\n');
        if name == "delouse-agent" {
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let ns_tid = procfs::parse_status_nspid(&status).unwrap_or(tid);
            return Some(AgentThread {
                tid,
                ns_tid,
                name: name.to_owned(),
            });
        }
    }
    None
}

/// Whether a core can be written, and what to know first.
#[derive(Debug, Clone)]
pub struct Assessment {
    /// Where it would go.
    pub destination: Destination,
    /// Reasons no core will be written (refused without `--force`).
    pub problems: Vec<String>,
    /// Things that may go wrong, or that the person should do first.
    pub warnings: Vec<String>,
}

impl Assessment {
    /// Whether a core is expected.
    pub fn can_dump(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What the core's directory looks like to the CLI, before the abort.
#[derive(Debug)]
pub enum DirState {
    /// Not a file destination, or its directory is not known.
    NotApplicable,
    /// Open; it can be listed after the process is gone.
    Open {
        /// A handle that stays valid when the process's `/proc` entry goes.
        dir: trust::Dir,
        /// Its owner, group and mode.
        owner: (u32, u32, u32),
    },
    /// It does not exist.
    Missing,
    /// It could not be looked at: the text says why.
    Unknown(String),
}

fn open_core_dir(pid: u32, dest: &Destination) -> DirState {
    use std::os::unix::fs::MetadataExt;
    let Destination::File(CorePath { dir: Some(dir), .. }) = dest else {
        return DirState::NotApplicable;
    };
    let root = procfs::root(pid);
    let path = root.join(dir.strip_prefix("/").unwrap_or(dir));
    match trust::Dir::open(&path) {
        Ok(d) => match std::fs::metadata(d.fd_path()) {
            Ok(m) => DirState::Open {
                owner: (m.uid(), m.gid(), m.mode()),
                dir: d,
            },
            Err(e) => DirState::Unknown(io_text(&e)),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DirState::Missing,
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => DirState::Missing,
        Err(e) => DirState::Unknown(io_text(&e)),
    }
}

fn limit_text(limit: Option<u64>) -> String {
    match limit {
        None => "unlimited".into(),
        Some(0) => "0".into(),
        Some(n) => human_bytes(n),
    }
}

/// Whether a process with these real ids and groups may write into a
/// directory of this owner and mode, by the mode bits (ACLs can say more).
fn may_write(ids: (u32, u32), groups: &[u32], owner: (u32, u32, u32)) -> bool {
    let (uid, gid) = ids;
    let (o_uid, o_gid, mode) = owner;
    if uid == 0 {
        return true;
    }
    let bits = if uid == o_uid {
        mode >> 6
    } else if gid == o_gid || groups.contains(&o_gid) {
        mode >> 3
    } else {
        mode
    };
    bits & 0o3 == 0o3
}

/// Judges `report` (and the target's directory) for a core dump.
pub fn assess(report: &CrashReport, t: &TargetInfo, dir: &DirState) -> Assessment {
    let pid = t.pid;
    let uses_pid = t.core_uses_pid.unwrap_or(false);
    let destination = destination(&report.core_pattern, uses_pid, &report.cwd, &t.vars);
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let is_pipe = matches!(destination, Destination::Pipe { .. });
    if let Destination::Nowhere = destination {
        problems.push(
            "/proc/sys/kernel/core_pattern is empty and core_uses_pid is 0: the kernel writes no core".to_owned(),
        );
    }
    match report.core_hard_limit {
        Some(0) => problems.push(
            "the hard core size limit (ulimit -Hc) is 0: no core will be written; raise it where the process is \
             started (LimitCORE= for a systemd unit, --ulimit core=-1 for docker) and restart it"
                .to_owned(),
        ),
        Some(n) if n < MIN_CORE_LIMIT => problems.push(format!(
            "the hard core size limit is {n} bytes, less than a page: no core will be written"
        )),
        Some(n) if n < report.rss_bytes && !is_pipe => warnings.push(format!(
            "the hard core size limit ({}) is below the process's RSS ({}): the core will be cut short",
            human_bytes(n),
            human_bytes(report.rss_bytes)
        )),
        _ => {}
    }
    if report.core_soft_limit != report.core_hard_limit && report.core_hard_limit != Some(0) {
        warnings.push(format!(
            "the soft core limit is {}: the agent raises it to the hard limit ({}) before aborting",
            limit_text(report.core_soft_limit),
            limit_text(report.core_hard_limit)
        ));
    }
    match report.dumpable {
        0 => problems.push(
            "the process is not dumpable (prctl PR_SET_DUMPABLE 0, or it changed credentials or ran a setuid \
             binary): the kernel writes no core"
                .to_owned(),
        ),
        2 if !report.core_pattern.starts_with('/') && !is_pipe => problems.push(
            "the process is dumpable only as root (suid_dumpable 2) and core_pattern is neither absolute nor a \
             pipe: the kernel writes no core"
                .to_owned(),
        ),
        _ => {}
    }
    if let Destination::File(core) = &destination {
        match dir {
            DirState::Missing => problems.push(format!(
                "the core's directory {} does not exist: the kernel cannot create the core there",
                core.dir
                    .as_deref()
                    .map_or_else(|| core.shown.clone(), |d| d.display().to_string())
            )),
            DirState::Open { owner, .. } => {
                if let Some(ids) = t.vars.ids
                    && !may_write(ids, &t.groups, *owner)
                {
                    problems.push(format!(
                        "uid {} may not write to {} (owner {}, mode {:o}): the kernel cannot create the core there",
                        ids.0,
                        core.dir.as_deref().unwrap_or(Path::new("?")).display(),
                        owner.0,
                        owner.2 & 0o7777
                    ));
                }
            }
            DirState::Unknown(why) => warnings.push(format!(
                "cannot look at the core's directory {}: {why}: whether the core lands there is not checked",
                core.dir.as_deref().unwrap_or(Path::new("?")).display()
            )),
            DirState::NotApplicable => {}
        }
        match report.free_bytes {
            Some(free) if free.saturating_mul(2) < report.rss_bytes => problems.push(format!(
                "only {} free where the core goes, far below the process's RSS ({}): the core would be cut short \
                 or not written",
                human_bytes(free),
                human_bytes(report.rss_bytes)
            )),
            Some(free) if free < report.rss_bytes => warnings.push(format!(
                "{} free where the core goes, below the process's RSS ({}): the core may be cut short",
                human_bytes(free),
                human_bytes(report.rss_bytes)
            )),
            None => warnings.push("free disk space where the core goes is unknown".to_owned()),
            Some(_) => {}
        }
        if t.core_uses_pid.is_none() {
            warnings.push(
                "cannot read /proc/sys/kernel/core_uses_pid: the core may be named with a .PID suffix".to_owned(),
            );
        }
    }
    if report.pid_namespace_init {
        warnings.push(format!(
            "pid {pid} is PID 1 of its PID namespace (a container's init): the kernel ignores its own SIGABRT, so \
             abort() falls back to a trapping instruction; expect SIGSEGV or SIGILL, and the container to stop"
        ));
    }
    if let Some(exe) = &t.exe {
        match exe.on_disk {
            Some(OnDisk::Replaced) | Some(OnDisk::Deleted) => warnings.push(format!(
                "the executable at {} is not the running image any more: gdb needs the running one to read the \
                 core; save it first: cp /proc/{pid}/exe ./{}.running",
                exe.path,
                t.name.as_deref().unwrap_or("exe")
            )),
            _ => {}
        }
    }
    Assessment {
        destination,
        problems,
        warnings,
    }
}

/// How the process ended, as far as `/proc` showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// A zombie: its wait status (field 52 of `/proc/<pid>/stat`).
    Zombie(i32),
    /// Gone before it was seen as a zombie (its parent reaped it), or
    /// another process has the PID now.
    Reaped,
    /// Still there when the wait ended; its state letter.
    StillRunning(char),
}

/// A wait status in parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal; whether a core was dumped.
    Signaled(i32, bool),
}

impl WaitStatus {
    /// Decodes a raw wait status.
    pub fn from_raw(status: i32) -> WaitStatus {
        let signal = status & 0x7f;
        if signal == 0 {
            WaitStatus::Exited((status >> 8) & 0xff)
        } else {
            WaitStatus::Signaled(signal, status & 0x80 != 0)
        }
    }
}

/// `SIGABRT`, `SIGSEGV`, … for the signals a crash ends with.
pub fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        31 => "SIGSYS",
        _ => return None,
    })
}

/// Waits up to `timeout` for the process that started at `start_time` at
/// `pid` to be gone: a zombie, no entry, or another process's.
fn wait_gone(pid: u32, start_time: u64, timeout: Duration) -> Ended {
    let until = Instant::now() + timeout;
    loop {
        let stat = match std::fs::read_to_string(procfs::dir(pid).join("stat")) {
            Ok(s) => s,
            Err(_) => return Ended::Reaped,
        };
        let state = procfs::parse_stat_state(&stat).unwrap_or('?');
        if procfs::parse_stat_start_time(&stat) != Some(start_time) {
            return Ended::Reaped;
        }
        // The thread group leader of a live process can be a zombie too
        // (it called pthread_exit): the process is gone once no other
        // thread is left.
        if matches!(state, 'Z' | 'X') && live_threads(pid) <= 1 {
            // Read again: the status is set once every thread is gone.
            let stat = std::fs::read_to_string(procfs::dir(pid).join("stat")).unwrap_or(stat);
            return match procfs::parse_stat_exit_code(&stat) {
                Some(code) => Ended::Zombie(code),
                None => Ended::Reaped,
            };
        }
        if Instant::now() >= until {
            return Ended::StillRunning(state);
        }
        std::thread::sleep(POLL);
    }
}

fn live_threads(pid: u32) -> usize {
    std::fs::read_dir(procfs::dir(pid).join("task")).map_or(0, |d| d.count())
}

/// A core file found after the abort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreFile {
    /// Its path as the target saw it.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Whether it was written after the abort was asked for (not a core
    /// left by an earlier crash).
    pub fresh: bool,
}

/// Looks for the core in `dir` (opened before the abort): the newest file
/// whose name `core.name` can expand to.
fn find_core(core: &CorePath, dir: &trust::Dir, since: SystemTime) -> Option<CoreFile> {
    let Some(shown_dir) = &core.dir else {
        return None;
    };
    let mut best: Option<(SystemTime, CoreFile)> = None;
    for entry in std::fs::read_dir(dir.fd_path()).ok()?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name_matches(&core.name, name) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        // File times have a coarser clock than SystemTime::now().
        let fresh = modified + Duration::from_secs(1) >= since;
        let file = CoreFile {
            path: shown_dir.join(name),
            size: meta.len(),
            fresh,
        };
        if best.as_ref().is_none_or(|(t, _)| modified > *t) {
            best = Some((modified, file));
        }
    }
    best.map(|(_, f)| f)
}

/// What happened after `Crash` was sent.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The agent's last report (with its soft limit raised).
    pub last_words: CrashReport,
    /// How it ended.
    pub ended: Ended,
    /// From the request to the end (or the end of the wait).
    pub waited: Duration,
    /// The core file, for a file pattern, when found.
    pub core: Option<CoreFile>,
}

/// The commands that open the core.
pub fn commands(
    exe: Option<&str>,
    dest: &Destination,
    core: Option<&CoreFile>,
    pid: u32,
) -> Vec<String> {
    let exe = exe.map(|e| shell_quote(procfs::strip_deleted(e)));
    let exe = exe.as_deref().unwrap_or("<executable>");
    match dest {
        Destination::File(c) => {
            let path = core.map_or_else(|| c.shown.clone(), |f| f.path.display().to_string());
            vec![format!("rust-gdb {exe} {}", shell_quote(&path))]
        }
        Destination::Pipe {
            kind: Handler::SystemdCoredump,
            ..
        } => vec![
            format!("coredumpctl info {pid}"),
            format!("coredumpctl debug --debugger=rust-gdb {pid}"),
            format!("coredumpctl dump {pid} --output=core.{pid} && rust-gdb {exe} core.{pid}"),
        ],
        Destination::Pipe {
            kind: Handler::Apport,
            ..
        } => vec![format!(
            "ls -t /var/lib/apport/coredump/ /var/crash/  # then: rust-gdb {exe} <core>"
        )],
        Destination::Pipe { .. } => vec![format!("rust-gdb {exe} <the core the handler saved>")],
        Destination::Nowhere => Vec::new(),
    }
}

/// `s` quoted for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:,@%=".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Asks the agent of `pid` for its crash report.
fn preflight(conn: connect::Connection) -> Result<CrashReport> {
    let pid = conn.pid;
    match conn.request(RequestKind::CrashPreflight)? {
        Answer::Crash(r) => Ok(r),
        other => Err(connect::wrong_answer(pid, "a crash report", &other)),
    }
}

/// Runs `delouse crash`.
pub fn run(opts: &Options) -> Result<Output> {
    let pid = opts.pid;
    let conn = connect::open(pid, Deadline::after(opts.timeout))?;
    let welcome = conn.welcome.clone();
    let report = preflight(conn)?;
    let target = target_info(pid, welcome.pid, &report);
    let dir = open_core_dir(pid, &assess_destination(&report, &target));
    let assessment = assess(&report, &target, &dir);
    let view = render::Report {
        pid,
        target: &target,
        report: &report,
        assessment: &assessment,
        dry_run: opts.dry_run,
        outcome: None,
    };
    let mut out = Output::default();
    let print = |view: &render::Report<'_>, paint: Paint| {
        if opts.json {
            render::json(view)
        } else {
            render::text(view, paint)
        }
    };
    if opts.dry_run {
        out.stdout = print(&view, Paint::for_stdout());
        return Ok(out);
    }
    let name = target.name.as_deref().unwrap_or("?");
    let shown_name = crate::sanitize::escape(name).into_owned();
    if !assessment.can_dump() && !opts.force {
        out.stdout = print(&view, Paint::for_stdout());
        out.failure = Some(CliError::error(format!(
            "pid {pid} not aborted: no core dump can be written ({}): fix that, or pass --force to abort it anyway",
            assessment.problems.join("; ")
        )));
        return Ok(out);
    }
    if !opts.yes {
        let preamble = render::text(&view, Paint::plain());
        prompt::confirm(&prompt::Question {
            preamble: &preamble,
            ask: &format!("abort pid {pid} ({shown_name}) and leave a core dump?"),
            no_terminal: &format!(
                "pid {pid} not aborted: no terminal to confirm on: pass --yes to abort it (see `delouse crash --help`)"
            ),
            declined: &format!("pid {pid} not aborted: not confirmed"),
        })?;
    }
    // A new connection: the agent closes one left idle while the question
    // waited. It must be the same process.
    let conn = connect::open(pid, Deadline::after(opts.timeout))?;
    if conn.welcome.start_time != welcome.start_time {
        return Err(CliError::no_agent(format!(
            "pid {pid} is another process than the one checked (it restarted meanwhile): not aborted; run delouse \
             crash again"
        )));
    }
    let asked = SystemTime::now();
    let started = Instant::now();
    let last_words = match conn.request(RequestKind::Crash { pid: welcome.pid }) {
        Ok(Answer::Crash(r)) => r,
        Ok(other) => return Err(connect::wrong_answer(pid, "a crash report", &other)),
        // The agent answers before it aborts; if the answer is lost but
        // the process is going, carry on.
        Err(e) if e.exit == Exit::NoAgent => report.clone(),
        Err(e) => return Err(e),
    };
    let ended = wait_gone(pid, welcome.start_time, opts.timeout);
    let waited = started.elapsed();
    let core = match (&assessment.destination, &dir) {
        (Destination::File(c), DirState::Open { dir, .. })
            if !matches!(ended, Ended::StillRunning(_)) =>
        {
            find_core(c, dir, asked)
        }
        _ => None,
    };
    let outcome = Outcome {
        last_words,
        ended,
        waited,
        core,
    };
    let view = render::Report {
        outcome: Some(&outcome),
        ..view
    };
    out.stdout = print(&view, Paint::for_stdout());
    match (&outcome.ended, &assessment.destination, &outcome.core, &dir) {
        (Ended::StillRunning(state), _, _, _) => {
            let hint = match state {
                'D' | 'R' => " (it may still be writing its core: a large process takes a while)",
                _ => "",
            };
            out.failure = Some(CliError::timeout(format!(
                "pid {pid} still exists {} after its agent was asked to abort, in state {state}{hint}: look again \
                 with `ps -p {pid}`, or wait longer with --timeout",
                human_duration(waited)
            )));
        }
        (_, Destination::File(c), None, DirState::Open { .. }) => {
            out.failure = Some(CliError::error(format!(
                "pid {pid} ended, but no core file matches {}: see the limits and the kernel log (dmesg) for why",
                c.shown
            )));
        }
        (_, Destination::File(_), Some(core), _) if !core.fresh => {
            out.warn(format!(
                "{} is older than the abort: it may be left from an earlier crash",
                core.path.display()
            ));
        }
        _ => {}
    }
    Ok(out)
}

/// The destination alone (to open its directory before judging).
fn assess_destination(report: &CrashReport, t: &TargetInfo) -> Destination {
    destination(
        &report.core_pattern,
        t.core_uses_pid.unwrap_or(false),
        &report.cwd,
        &t.vars,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            ns_pid: 7,
            pid: 4242,
            ns_tid: Some(9),
            tid: Some(4250),
            ids: Some((1000, 100)),
            dumpable: 1,
            hostname: Some("web/1".into()),
            thread_name: Some("delouse-agent".into()),
            exe: Some("/srv/app/bin/svc".into()),
            core_limit: None,
        }
    }

    fn text(pattern: &str) -> String {
        pieces_text(&expand(pattern, &vars()))
    }

    #[test]
    fn patterns_expand_like_the_kernel() {
        assert_eq!(text("core"), "core");
        assert_eq!(text("core.%p"), "core.7");
        assert_eq!(text("%P-%i-%I-%u-%g-%d-%s"), "4242-9-4250-1000-100-1-6");
        assert_eq!(text("%e.%h"), "delouse-agent.web!1");
        assert_eq!(text("%E"), "!srv!app!bin!svc");
        assert_eq!(text("%f@%c"), "svc@18446744073709551615");
        assert_eq!(text("100%%-%t-%q-%"), "100%-%t--");
        let p = expand("/c/core.%t.%p", &vars());
        assert_eq!(
            p,
            [
                Piece::Text("/c/core.".into()),
                Piece::Unknown('t'),
                Piece::Text(".7".into())
            ]
        );
        let mut v = vars();
        v.hostname = None;
        v.thread_name = Some("..".into());
        assert_eq!(pieces_text(&expand("%h-%e", &v)), "%h-!.");
    }

    #[test]
    fn names_match_unknown_pieces() {
        let p = expand("core.%t.%p", &vars());
        assert!(name_matches(&p, "core.1733300000.7"));
        assert!(!name_matches(&p, "core..7"));
        assert!(!name_matches(&p, "core.17x.7"));
        assert!(!name_matches(&p, "core.1.8"));
        let mut v = vars();
        v.hostname = None;
        let p = expand("%h-core", &v);
        assert!(name_matches(&p, "box-core"));
        assert!(name_matches(&p, "a-b-core"));
        assert!(!name_matches(&p, "-core"));
        assert!(name_matches(&expand("core", &v), "core"));
        assert!(!name_matches(&expand("core", &v), "core.1"));
    }

    #[test]
    fn destinations() {
        let v = vars();
        let file =
            |pattern: &str, uses_pid: bool| match destination(pattern, uses_pid, "/srv/app", &v) {
                Destination::File(c) => c,
                other => panic!("{other:?}"),
            };
        let c = file("core", false);
        assert_eq!(c.shown, "/srv/app/core");
        assert_eq!(c.dir.as_deref(), Some(Path::new("/srv/app/")));
        assert_eq!(c.name, [Piece::Text("core".into())]);
        assert_eq!(file("core", true).shown, "/srv/app/core.7");
        assert_eq!(file("core.%p", true).shown, "/srv/app/core.7");
        assert_eq!(file("core.%%p", true).shown, "/srv/app/core.%p.7");
        let c = file("/var/cores/%e.%t", false);
        assert_eq!(c.shown, "/var/cores/delouse-agent.%t");
        assert_eq!(c.dir.as_deref(), Some(Path::new("/var/cores/")));
        let c = file("cores/core", false);
        assert_eq!(c.dir.as_deref(), Some(Path::new("/srv/app/cores/")));
        let mut unknown_host = v.clone();
        unknown_host.hostname = None;
        let Destination::File(c) = destination("/var/%h/core", false, "/", &unknown_host) else {
            panic!()
        };
        assert_eq!(c.dir, None, "an unknown directory");
        assert_eq!(c.shown, "/var/%h/core");
        // An empty pattern with core_uses_pid names the file `.PID`.
        assert_eq!(file("", true).shown, "/srv/app/.7");
        assert_eq!(destination("", false, "/", &v), Destination::Nowhere);
        assert_eq!(
            destination(
                "|/usr/lib/systemd/systemd-coredump %P %u %g %s %t %c %h",
                true,
                "/",
                &v
            ),
            Destination::Pipe {
                handler: "/usr/lib/systemd/systemd-coredump".into(),
                kind: Handler::SystemdCoredump
            }
        );
        assert!(matches!(
            destination("|/usr/share/apport/apport -p%p", false, "/", &v),
            Destination::Pipe {
                kind: Handler::Apport,
                ..
            }
        ));
    }

    fn report() -> CrashReport {
        CrashReport {
            core_soft_limit: Some(0),
            core_hard_limit: None,
            core_pattern: "core".into(),
            dumpable: 1,
            pid_namespace_init: false,
            cwd: "/srv/app".into(),
            free_bytes: Some(10 << 30),
            rss_bytes: 40 << 20,
        }
    }

    fn info() -> TargetInfo {
        TargetInfo {
            pid: 4242,
            name: Some("svc".into()),
            exe: None,
            core_uses_pid: Some(false),
            groups: vec![],
            same_root: true,
            vars: vars(),
        }
    }

    #[test]
    fn assessments() {
        let dir = DirState::Unknown("not looked at".into());
        let a = assess(&report(), &info(), &dir);
        assert!(a.can_dump(), "{:?}", a.problems);
        assert!(
            a.warnings.iter().any(|w| w.contains("raises it")),
            "{:?}",
            a.warnings
        );

        let mut r = report();
        r.core_hard_limit = Some(0);
        let a = assess(&r, &info(), &dir);
        assert!(
            a.problems[0].contains("hard core size limit"),
            "{:?}",
            a.problems
        );
        assert!(!a.warnings.iter().any(|w| w.contains("raises it")));

        let mut r = report();
        r.dumpable = 0;
        assert!(assess(&r, &info(), &dir).problems[0].contains("not dumpable"));
        r.dumpable = 2;
        assert!(assess(&r, &info(), &dir).problems[0].contains("suid_dumpable"));
        r.core_pattern = "/cores/core".into();
        assert!(assess(&r, &info(), &dir).can_dump());

        let mut r = report();
        r.free_bytes = Some(10 << 20);
        assert!(assess(&r, &info(), &dir).problems[0].contains("far below"));
        r.free_bytes = Some(30 << 20);
        let a = assess(&r, &info(), &dir);
        assert!(a.can_dump() && a.warnings.iter().any(|w| w.contains("cut short")));

        let a = assess(&report(), &info(), &DirState::Missing);
        assert!(a.problems[0].contains("does not exist"), "{:?}", a.problems);

        let mut r = report();
        r.core_pattern = "|/usr/lib/systemd/systemd-coredump %P".into();
        r.free_bytes = None;
        r.pid_namespace_init = true;
        let a = assess(&r, &info(), &DirState::NotApplicable);
        assert!(a.can_dump(), "{:?}", a.problems);
        assert!(a.warnings.iter().any(|w| w.contains("PID 1")));
        assert!(!a.warnings.iter().any(|w| w.contains("free disk")));

        let mut r = report();
        r.core_pattern = String::new();
        let a = assess(&r, &info(), &dir);
        assert!(a.problems[0].contains("empty"), "{:?}", a.problems);
    }

    #[test]
    fn write_permission_by_mode_bits() {
        assert!(may_write((1000, 100), &[], (1000, 1000, 0o40700)));
        assert!(!may_write((1000, 100), &[], (0, 0, 0o40755)));
        assert!(may_write((1000, 100), &[], (0, 0, 0o41777)));
        assert!(may_write((1000, 100), &[27], (0, 27, 0o40770)));
        assert!(may_write((0, 0), &[], (5, 5, 0o40500)));
        let dir = DirState::Open {
            dir: trust::Dir::open(Path::new("/")).unwrap(),
            owner: (0, 0, 0o40755),
        };
        let a = assess(&report(), &info(), &dir);
        assert!(a.problems[0].contains("may not write"), "{:?}", a.problems);
    }

    #[test]
    fn wait_statuses() {
        assert_eq!(WaitStatus::from_raw(0x86), WaitStatus::Signaled(6, true));
        assert_eq!(WaitStatus::from_raw(6), WaitStatus::Signaled(6, false));
        assert_eq!(WaitStatus::from_raw(3 << 8), WaitStatus::Exited(3));
        assert_eq!(WaitStatus::from_raw(0), WaitStatus::Exited(0));
        assert_eq!(signal_name(6), Some("SIGABRT"));
        assert_eq!(signal_name(64), None);
    }

    #[test]
    fn gdb_and_coredumpctl_commands() {
        let v = vars();
        let dest = destination("core", true, "/srv/my app", &v);
        let cmds = commands(Some("/srv/bin/svc (deleted)"), &dest, None, 4242);
        assert_eq!(cmds, ["rust-gdb /srv/bin/svc '/srv/my app/core.7'"]);
        let found = CoreFile {
            path: "/srv/my app/core.7".into(),
            size: 1,
            fresh: true,
        };
        assert_eq!(
            commands(Some("/x"), &dest, Some(&found), 4242),
            ["rust-gdb /x '/srv/my app/core.7'"]
        );
        let pipe = destination("|/lib/systemd/systemd-coredump %P", false, "/", &v);
        let cmds = commands(None, &pipe, None, 4242);
        assert_eq!(cmds[0], "coredumpctl info 4242");
        assert!(cmds[1].contains("--debugger=rust-gdb 4242"));
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn waits_for_a_child_to_end() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = procfs::start_time(pid).unwrap();
        assert_eq!(
            wait_gone(pid, start, Duration::from_millis(20)),
            Ended::StillRunning('S')
        );
        assert_eq!(
            wait_gone(pid, start, Duration::from_secs(5)),
            Ended::Zombie(0)
        );
        child.wait().unwrap();
        assert_eq!(wait_gone(pid, start, Duration::from_secs(5)), Ended::Reaped);
    }
}
