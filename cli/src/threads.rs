//! `delouse threads`: a backtrace of every OS thread of a process.
//!
//! The agent interrupts each thread with a signal and sends raw instruction
//! addresses (DESIGN §7); this side symbolizes them, tells tokio's workers
//! from its blocking threads by their frames, and renders.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use delouse_proto::{Answer, Module, RequestKind, Thread, ThreadDump, ThreadStack};

use crate::Output;
use crate::connect::{self, Deadline};
use crate::error::Result;
use crate::procfs;
use crate::render::{Paint, is_app, threads as render};
use crate::symbolize::{self, Address};
use crate::tree::{Frame, SymbolTable};

/// Options of `delouse threads`.
#[derive(Debug, Clone)]
pub struct Options {
    /// The target.
    pub pid: u32,
    /// JSON instead of text.
    pub json: bool,
    /// The whole command's time budget.
    pub timeout: Duration,
    /// Show only threads whose name contains one of these (all if empty).
    pub names: Vec<String>,
    /// Merge threads with identical stacks.
    pub group: bool,
}

/// What each stack line means, for `delouse threads --help`.
pub const STACK_STATES: &str = "\
Each thread's stack is listed innermost frame first (#0 is where it was interrupted);
inlined calls are frames of their own, marked [inlined]. Instead of frames a thread
may show:
  signals blocked: not interrupted
      it blocks the agent's signal, so its stack cannot be taken
  no answer before the deadline
      it did not run the agent's handler in time: stopped, in uninterruptible
      sleep (state D), or gone
  not sampled: WHY
      the agent did not signal it: its own thread, or the request's deadline
      came before its turn (a short --timeout on thousands of threads)
A last line says when frames may be missing or wrong (`truncated` and `walk` in
--json):
  … (stack walk stopped here)
      no unwind information, a frame outside every module, or too deep
  … (walk ended before the thread's start: outer frames may be missing)
      the walk ended in a function threads do not start in
  … (interrupted inside the panic/exception unwinder: frames past it may be wrong)
      caught in _Unwind_Resume and kin, which rewrite their own frame";

/// What a thread is, as far as its frames, its id and its name tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The delouse agent's own thread.
    Agent,
    /// A tokio worker: runs a `multi_thread` worker loop, or drives a
    /// `current_thread` runtime's `block_on`.
    Worker,
    /// A thread of tokio's blocking pool (`spawn_blocking`).
    Blocking,
    /// The process's first thread.
    Main,
    /// Named like a tokio thread, with no frames that tell a worker from a
    /// blocking thread (both are named `tokio-rt-worker`).
    Tokio,
    /// Anything else.
    Other,
}

impl Role {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "delouse agent",
            Role::Worker => "tokio worker",
            Role::Blocking => "tokio blocking",
            Role::Main => "main",
            Role::Tokio => "tokio",
            Role::Other => "other",
        }
    }

    /// The text name.
    pub fn label(self) -> &'static str {
        match self {
            Role::Tokio => "tokio worker or blocking",
            r => r.as_str(),
        }
    }
}

/// One logical frame of a thread's stack, with the address it came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StackFrame {
    /// The frame.
    pub frame: Frame,
    /// The address as the stack held it.
    pub address: u64,
    /// Whether it is the application's own code.
    pub app: bool,
}

/// A thread as shown.
#[derive(Debug, Clone)]
pub struct ThreadView<'a> {
    /// What the agent sent.
    pub thread: &'a Thread,
    /// What it is.
    pub role: Role,
    /// Its logical frames, innermost first (empty without a stack).
    pub frames: Vec<StackFrame>,
    /// How the walk of its stack ended.
    pub end: WalkEnd,
}

/// How a stack walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkEnd {
    /// At the function a thread starts in (`clone3`, `_start`, ...), or
    /// there is no stack.
    Complete,
    /// The agent's unwinder stopped early: no unwind information, a frame
    /// outside every module, an unreadable stack or the frame limit.
    Stopped,
    /// The walk ended as if complete, but not at a thread's start: in code
    /// without unwind information that the unwinder took for the outermost
    /// frame, so outer frames may be missing.
    Unrooted,
    /// Interrupted inside the C++/Rust unwinder (libgcc's `_Unwind_Resume`
    /// and kin), which, to jump to a landing pad, writes the registers it
    /// will restore over its own frame: the frames past it may be wrong.
    InUnwinder,
}

impl WalkEnd {
    /// Whether frames may be missing or wrong.
    pub fn cut_short(self) -> bool {
        self != WalkEnd::Complete
    }

    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            WalkEnd::Complete => "complete",
            WalkEnd::Stopped => "stopped",
            WalkEnd::Unrooted => "unrooted",
            WalkEnd::InUnwinder => "in unwinder",
        }
    }
}

/// The unwinder's entry points that end by installing a landing pad's
/// registers over their own frame.
const UNWINDER_ENTRIES: &[&str] = &[
    "_Unwind_Resume",
    "_Unwind_RaiseException",
    "_Unwind_ForcedUnwind",
    "_Unwind_Resume_or_Rethrow",
];

/// Functions the outermost frame of a thread is in: where the C library
/// starts the main thread and new threads (glibc, musl).
const THREAD_ROOTS: &[&str] = &[
    "_start",
    "_start_c",
    "__libc_start_main",
    "__libc_start_call_main",
    "clone",
    "clone3",
    "__clone",
    "__clone3",
    "__clone_internal",
    "start_thread",
];

fn is_thread_root(function: &str) -> bool {
    let f = function.strip_prefix("__GI_").unwrap_or(function);
    THREAD_ROOTS.contains(&f)
}

/// How the walk of `stack` ended, given its frames.
pub fn walk_end(stack: &ThreadStack, frames: &[StackFrame]) -> WalkEnd {
    match stack {
        ThreadStack::Frames {
            truncated: true, ..
        } => WalkEnd::Stopped,
        ThreadStack::Frames { .. } => {
            if frames
                .iter()
                .take(2)
                .any(|f| UNWINDER_ENTRIES.contains(&f.frame.function.as_str()))
            {
                return WalkEnd::InUnwinder;
            }
            match frames.last() {
                // Without a name (a C library without its debug symbols
                // hides `start_thread` and `clone3`) there is nothing to
                // judge by: the unwinder's word stands.
                Some(f) if f.frame.is_unresolved() => WalkEnd::Complete,
                Some(f) if !is_thread_root(&f.frame.function) => WalkEnd::Unrooted,
                _ => WalkEnd::Complete,
            }
        }
        _ => WalkEnd::Complete,
    }
}

/// How the threads of a dump answered (all of them, shown or not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Threads in the dump.
    pub threads: usize,
    /// Threads with a stack.
    pub answered: usize,
    /// Threads that block the agent's signal.
    pub signals_blocked: usize,
    /// Threads that did not answer in time.
    pub no_answer: usize,
    /// Threads the agent did not signal.
    pub not_sampled: usize,
}

/// Counts the threads of `dump` by how they answered.
pub fn counts(dump: &ThreadDump) -> Counts {
    let mut c = Counts {
        threads: dump.threads.len(),
        ..Counts::default()
    };
    for t in &dump.threads {
        match t.stack {
            ThreadStack::Frames { .. } => c.answered += 1,
            ThreadStack::SignalsBlocked => c.signals_blocked += 1,
            ThreadStack::NoAnswer => c.no_answer += 1,
            ThreadStack::NotSampled(_) => c.not_sampled += 1,
        }
    }
    c
}

/// Whether a thread named `name` is shown, given the `--name` patterns.
pub fn name_matches(patterns: &[String], name: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| name.contains(p.as_str()))
}

/// The addresses of one stack, each with its kind: the first is the
/// interrupted instruction itself, every later one a return address.
fn stack_addresses(addresses: &[u64]) -> impl Iterator<Item = Address> + '_ {
    addresses.iter().enumerate().map(|(i, &a)| {
        if i == 0 {
            Address::Interrupted(a)
        } else {
            Address::Return(a)
        }
    })
}

/// Every distinct address of the stacks of `threads`, to symbolize once:
/// the workers of a runtime share most of their frames.
pub fn distinct_addresses(threads: &[&Thread]) -> Vec<Address> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for t in threads {
        if let ThreadStack::Frames { addresses, .. } = &t.stack {
            out.extend(stack_addresses(addresses).filter(|&a| seen.insert(a)));
        }
    }
    out
}

/// The last segment of a function's path, without generic arguments or
/// closure and async-body suffixes: `a::B<T>::run::{{closure}}` and
/// `<a::B as c::D>::run` give `run`.
fn last_segment(name: &str) -> &str {
    let mut depth = 0i32;
    let mut segments = Vec::new();
    let mut start = 0;
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'<' | b'(' | b'[' => depth += 1,
            b'>' | b')' | b']' => depth -= 1,
            b':' if depth == 0 && bytes.get(i + 1) == Some(&b':') => {
                segments.push(&name[start..i]);
                start = i + 2;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    segments.push(&name[start..]);
    segments
        .into_iter()
        .rev()
        .map(|s| &s[..s.find('<').unwrap_or(s.len())])
        .find(|s| !s.is_empty() && !s.starts_with('{'))
        .unwrap_or(name)
}

/// Whether `f` is code of a tokio module: by its path when the debug info
/// names functions in full, else by its source file.
fn in_tokio_module(f: &Frame, path: &str, file: &str) -> bool {
    f.function.contains(path)
        || f.file
            .as_deref()
            .is_some_and(|p| p.ends_with(file) && p.contains("tokio"))
}

/// A frame only a tokio worker has: the `multi_thread` worker loop
/// (`worker::run`, `worker::Context::run`; not `worker::Handle::schedule_task`,
/// which any thread that spawns a task runs), or a `current_thread`
/// runtime's `block_on`.
fn is_worker_frame(f: &Frame) -> bool {
    let last = last_segment(&f.function);
    (last == "run"
        && in_tokio_module(
            f,
            "tokio::runtime::scheduler::multi_thread::worker::",
            "/src/runtime/scheduler/multi_thread/worker.rs",
        ))
        || ((last == "block_on" || f.function.contains("CoreGuard"))
            && in_tokio_module(
                f,
                "tokio::runtime::scheduler::current_thread::",
                "/src/runtime/scheduler/current_thread/mod.rs",
            ))
}

/// A frame only a blocking-pool thread has: the pool's thread loop
/// (`blocking::pool::Inner::run`; not `BlockingPool::shutdown`, which the
/// thread dropping a runtime runs).
fn is_blocking_frame(f: &Frame) -> bool {
    last_segment(&f.function) == "run"
        && in_tokio_module(
            f,
            "tokio::runtime::blocking::pool::",
            "/src/runtime/blocking/pool.rs",
        )
}

/// Whether a thread name is one tokio gives its threads by default:
/// `tokio-rt-worker`, or `tokio-runtime-worker` cut to 15 bytes by the kernel.
fn is_tokio_name(name: &str) -> bool {
    name == "tokio-rt-worker" || name.starts_with("tokio-runtime-w")
}

/// What `thread` is. `main_tid` is the process id as the target sees it
/// (its main thread's id); `frames` its symbolized stack.
pub fn role(thread: &Thread, main_tid: u32, frames: &[StackFrame]) -> Role {
    if thread.is_agent {
        Role::Agent
    } else if frames.iter().any(|f| is_worker_frame(&f.frame)) {
        // Before the blocking check: multi_thread workers run on threads of
        // the blocking pool, so they have its frames too.
        Role::Worker
    } else if frames.iter().any(|f| is_blocking_frame(&f.frame)) {
        Role::Blocking
    } else if thread.tid == main_tid {
        Role::Main
    } else if is_tokio_name(&thread.name) {
        Role::Tokio
    } else {
        Role::Other
    }
}

/// What each distinct address of a dump resolved to.
#[derive(Debug)]
pub struct Resolved {
    index: HashMap<Address, usize>,
    frames: SymbolTable,
    in_exe: Vec<bool>,
}

impl Resolved {
    /// `frames[i]` are the logical frames of `addrs[i]` (physical function
    /// first), as [`symbolize::symbolize`] gives them; `exe` is the target's
    /// executable as its module map names it.
    pub fn new(addrs: &[Address], frames: SymbolTable, modules: &[Module], exe: &str) -> Self {
        let exe = procfs::strip_deleted(exe);
        let exe_mapped = modules
            .iter()
            .any(|m| procfs::strip_deleted(&m.path) == exe);
        let in_exe = addrs
            .iter()
            .map(|a| {
                // Without the executable in the map, trust the source paths.
                !exe_mapped
                    || a.lookup()
                        .and_then(|a| Module::find(modules, a))
                        .is_some_and(|m| procfs::strip_deleted(&m.path) == exe)
            })
            .collect();
        Resolved {
            index: addrs.iter().enumerate().map(|(i, &a)| (a, i)).collect(),
            frames,
            in_exe,
        }
    }

    /// The logical frames of `addr`, innermost first.
    fn stack_frames(&self, addr: Address) -> Vec<StackFrame> {
        let address = addr.value();
        let Some((logical, in_exe)) = self
            .index
            .get(&addr)
            .and_then(|&i| Some((self.frames.get(i)?, self.in_exe[i])))
        else {
            return vec![StackFrame {
                frame: symbolize::unresolved(address, None),
                address,
                app: false,
            }];
        };
        // The table has the physical function first.
        logical
            .iter()
            .rev()
            .map(|f| StackFrame {
                frame: f.clone(),
                address,
                // Library code compiled from paths that look like the
                // application's (libc's debug info) is still a library's.
                app: in_exe && is_app(f),
            })
            .collect()
    }
}

/// The threads ready to show.
pub fn views<'a>(
    threads: &[&'a Thread],
    main_tid: u32,
    resolved: &Resolved,
) -> Vec<ThreadView<'a>> {
    threads
        .iter()
        .map(|&thread| {
            let mut frames = Vec::new();
            if let ThreadStack::Frames { addresses, .. } = &thread.stack {
                for addr in stack_addresses(addresses) {
                    frames.extend(resolved.stack_frames(addr));
                }
            }
            ThreadView {
                thread,
                role: role(thread, main_tid, &frames),
                end: walk_end(&thread.stack, &frames),
                frames,
            }
        })
        .collect()
}

/// What makes two stacks the same: kind, addresses, truncation, reason.
type StackKey<'a> = (u8, &'a [u64], bool, &'a str);

fn stack_key(stack: &ThreadStack) -> StackKey<'_> {
    match stack {
        ThreadStack::Frames {
            addresses,
            truncated,
        } => (0, addresses, *truncated, ""),
        ThreadStack::SignalsBlocked => (1, &[], false, ""),
        ThreadStack::NoAnswer => (2, &[], false, ""),
        ThreadStack::NotSampled(why) => (3, &[], false, why),
    }
}

/// The part of a thread name that threads of one pool share: `worker-12`
/// gives `worker-`.
pub fn name_prefix(name: &str) -> &str {
    name.trim_end_matches(|c: char| c.is_ascii_digit())
}

/// Threads with the same name prefix, role and stack, as indexes into
/// `views`; the largest groups first, else in the order of the threads.
pub fn group(views: &[ThreadView<'_>]) -> Vec<Vec<usize>> {
    type Key<'k> = (&'k str, Role, StackKey<'k>);
    let mut index: HashMap<Key<'_>, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, v) in views.iter().enumerate() {
        let key = (
            name_prefix(&v.thread.name),
            v.role,
            stack_key(&v.thread.stack),
        );
        match index.get(&key) {
            Some(&g) => groups[g].push(i),
            None => {
                index.insert(key, groups.len());
                groups.push(vec![i]);
            }
        }
    }
    // Stable: equal sizes keep the threads' order.
    groups.sort_by_key(|g| std::cmp::Reverse(g.len()));
    groups
}

/// Runs `delouse threads`.
pub fn run(opts: &Options) -> Result<Output> {
    let pid = opts.pid;
    let start = Instant::now();
    let deadline = Deadline::after(opts.timeout);
    let conn = connect::open(pid, deadline)?;
    // Thread ids are the target's (its PID namespace's): its main thread's
    // id is the pid it sees itself as.
    let main_tid = conn.welcome.pid;
    let conn_exe = conn.welcome.exe.clone();
    let dump = match conn.request(RequestKind::Threads)? {
        Answer::Threads(dump) => dump,
        other => return Err(connect::wrong_answer(pid, "threads", &other)),
    };
    let exchanged = Instant::now();
    let shown: Vec<&Thread> = dump
        .threads
        .iter()
        .filter(|t| name_matches(&opts.names, &t.name))
        .collect();
    let addrs = distinct_addresses(&shown);
    let symbols = symbolize::symbolize_within(
        pid,
        &addrs,
        &dump.modules,
        deadline.remaining().max(crate::tasks::MIN_SYMBOLIZE),
    );
    let warnings = symbols.warnings;
    let resolved = Resolved::new(&addrs, symbols.table, &dump.modules, &conn_exe);
    let views = views(&shown, main_tid, &resolved);
    let symbolized = Instant::now();
    let groups = opts.group.then(|| group(&views));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let report = render::Report {
        pid,
        counts: counts(&dump),
        agent_elapsed_ms: dump.elapsed_us as f64 / 1000.0,
        total_ms: ms(start.elapsed()),
        max_handler_us: dump.max_handler_ns as f64 / 1000.0,
        signal: dump.signal,
        timings: render::Timings {
            exchange_ms: ms(exchanged - start),
            symbolize_ms: ms(symbolized - exchanged),
        },
        names: &opts.names,
        all_names: dump.threads.iter().map(|t| t.name.as_str()).collect(),
        threads: &views,
        groups: groups.as_deref(),
    };
    let cwd = std::env::current_dir().ok();
    let stdout = if opts.json {
        render::json(&report, cwd.as_deref())
    } else {
        render::text(&report, Paint::for_stdout(), cwd.as_deref())
    };
    let mut out = Output {
        stdout,
        ..Output::default()
    };
    for w in &warnings {
        out.warn(w);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tree::tests::frame;

    const TOKIO: &str = "/h/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src";

    pub(crate) fn thread(tid: u32, name: &str, stack: ThreadStack) -> Thread {
        Thread {
            tid,
            name: name.into(),
            state: 'S',
            user_ms: 1000,
            system_ms: 230,
            syscall: Some(202),
            is_agent: false,
            stack,
        }
    }

    pub(crate) fn frames(addresses: &[u64]) -> ThreadStack {
        ThreadStack::Frames {
            addresses: addresses.to_vec(),
            truncated: false,
        }
    }

    /// Symbols of a fake program, keyed by the address looked up.
    fn lookup(addr: Address) -> Vec<Frame> {
        let f = |name: &str, file: &str, line| frame(name, file, line, false);
        let worker = format!("{TOKIO}/runtime/scheduler/multi_thread/worker.rs");
        let pool = format!("{TOKIO}/runtime/blocking/pool.rs");
        let ct = format!("{TOKIO}/runtime/scheduler/current_thread/mod.rs");
        match addr {
            // Interrupted in the futex syscall wrapper: looked up as is.
            Address::Interrupted(0x100) => vec![f("syscall", "/glibc/syscall.S", 38)],
            Address::Return(0x100) => vec![f("WRONG: 0x100 is not a return address", "/x", 1)],
            Address::Interrupted(0x200) => vec![f("app::spin", "/app/src/main.rs", 7)],
            // Return addresses: 0x... + 1, looked up at 0x....
            Address::Return(a) => match a.wrapping_sub(1) {
                0x1000 => vec![
                    f(
                        "std::sys::sync::condvar::futex::Condvar::wait",
                        "/rustc/abc/library/std/src/sys/sync/condvar/futex.rs",
                        60,
                    ),
                    frame(
                        "std::sys::pal::unix::futex::futex_wait",
                        "/rustc/abc/library/std/src/sys/pal/unix/futex.rs",
                        70,
                        true,
                    ),
                ],
                0x2000 => vec![
                    f(
                        "tokio::runtime::scheduler::multi_thread::worker::Context::run",
                        &worker,
                        500,
                    ),
                    frame(
                        "tokio::runtime::scheduler::multi_thread::worker::Context::park",
                        &worker,
                        700,
                        true,
                    ),
                ],
                0x3000 => vec![f("tokio::runtime::blocking::pool::Inner::run", &pool, 480)],
                0x4000 => vec![f(
                    "std::sys::pal::unix::thread::Thread::new::thread_start",
                    "/rustc/abc/library/std/src/sys/pal/unix/thread.rs",
                    100,
                )],
                0x5000 => vec![f("app::main", "/app/src/main.rs", 20)],
                // Line tables only: bare names, found by file.
                0x6000 => vec![
                    f(
                        "tokio::runtime::blocking::pool::Spawner::spawn_thread::{{closure}}",
                        &pool,
                        420,
                    ),
                    frame("run", &worker, 480, true),
                ],
                0x7000 => vec![f(
                    "tokio::runtime::scheduler::current_thread::CoreGuard::block_on",
                    &ct,
                    800,
                )],
                // Spawning from a blocking thread runs worker.rs code.
                0x8000 => vec![f(
                    "tokio::runtime::scheduler::multi_thread::worker::<impl tokio::runtime::scheduler::multi_thread::handle::Handle>::schedule_task",
                    &worker,
                    1100,
                )],
                0x9000 => vec![f(
                    "tokio::runtime::blocking::pool::BlockingPool::shutdown",
                    &pool,
                    300,
                )],
                0xa000 => vec![f("app::work", "/app/src/work.rs", 3)],
                // Where threads start.
                0xb000 => vec![f("clone3", "/glibc/clone3.S", 81)],
                0xc000 => vec![f("_start", "/glibc/start.S", 115)],
                0xd000 => vec![f("_Unwind_Resume", "/gcc/unwind.inc", 241)],
                _ => vec![symbolize::unresolved(a, None)],
            },
            Address::Interrupted(a) => vec![symbolize::unresolved(a, None)],
        }
    }

    /// libc below 0x200 (its debug info names sources like an
    /// application's), the executable above.
    fn modules() -> Vec<Module> {
        let m = |path: &str, start, end| Module {
            path: path.into(),
            start,
            end,
            file_offset: 0,
        };
        vec![
            m("/usr/lib/libc.so.6", 0x100, 0x200),
            m("/app/bin/app (deleted)", 0x200, 0x10000),
        ]
    }

    /// The views of `threads` symbolized with [`lookup`]; pid 100.
    pub(crate) fn fake_views<'a>(threads: &[&'a Thread]) -> Vec<ThreadView<'a>> {
        let addrs = distinct_addresses(threads);
        let symbols: SymbolTable = addrs.iter().map(|&a| lookup(a)).collect();
        let resolved = Resolved::new(&addrs, symbols, &modules(), "/app/bin/app");
        views(threads, 100, &resolved)
    }

    pub(crate) fn sample_dump() -> ThreadDump {
        let mut main = thread(100, "app", frames(&[0x100, 0x1001, 0x5001, 0xc001]));
        main.syscall = Some(202);
        let mut agent = thread(
            101,
            "delouse-agent",
            ThreadStack::NotSampled("the agent's own thread".into()),
        );
        agent.is_agent = true;
        agent.syscall = Some(232);
        let w1 = thread(
            102,
            "tokio-rt-worker",
            frames(&[0x100, 0x1001, 0x2001, 0x3001, 0x4001, 0xb001]),
        );
        let w2 = thread(
            103,
            "tokio-rt-worker",
            frames(&[0x100, 0x1001, 0x2001, 0x3001, 0x4001, 0xb001]),
        );
        let mut busy = thread(
            104,
            "tokio-rt-worker",
            ThreadStack::Frames {
                addresses: vec![0x200, 0xa001, 0x3001],
                truncated: true,
            },
        );
        busy.state = 'R';
        busy.syscall = None;
        busy.user_ms = 65_000;
        busy.system_ms = 10;
        let mut masked = thread(105, "signal-waiter", ThreadStack::SignalsBlocked);
        masked.syscall = Some(128);
        let mut stuck = thread(106, "tokio-rt-worker", ThreadStack::NoAnswer);
        stuck.state = 'D';
        stuck.syscall = Some(9999);
        ThreadDump {
            threads: vec![main, agent, w1, w2, busy, masked, stuck],
            modules: vec![],
            signal: 34,
            max_handler_ns: 3210,
            elapsed_us: 2150,
        }
    }

    fn role_of(stack: &[u64], name: &str, tid: u32) -> Role {
        let t = thread(tid, name, frames(stack));
        fake_views(&[&t])[0].role
    }

    fn end_of(stack: ThreadStack) -> WalkEnd {
        let t = thread(7, "x", stack);
        fake_views(&[&t])[0].end
    }

    #[test]
    fn walks_are_complete_only_at_a_thread_start() {
        assert_eq!(end_of(frames(&[0x100, 0x1001, 0xb001])), WalkEnd::Complete);
        assert_eq!(end_of(frames(&[0x100, 0x5001, 0xc001])), WalkEnd::Complete);
        assert_eq!(
            end_of(frames(&[0x100, 0x1001])),
            WalkEnd::Unrooted,
            "ends in Condvar::wait: outer frames missing"
        );
        assert_eq!(
            end_of(frames(&[0x100, 0xdead1])),
            WalkEnd::Complete,
            "ends in a function without a name: the unwinder's word stands"
        );
        assert_eq!(
            end_of(ThreadStack::Frames {
                addresses: vec![0x100, 0xb001],
                truncated: true
            }),
            WalkEnd::Stopped,
            "the agent's word wins"
        );
        assert_eq!(end_of(frames(&[])), WalkEnd::Complete, "no frames at all");
        assert_eq!(
            end_of(frames(&[0x150, 0xd001, 0x5001, 0xc001])),
            WalkEnd::InUnwinder,
            "rooted, but past a landing pad being installed"
        );
        assert_eq!(
            end_of(frames(&[0x100, 0x1001, 0x2001, 0xd001, 0xc001])),
            WalkEnd::Complete,
            "the unwinder deeper down is a frame like any other"
        );
        assert_eq!(end_of(ThreadStack::NoAnswer), WalkEnd::Complete);
        assert!(is_thread_root("__GI___clone3"));
        assert!(!is_thread_root("clone3_helper"));
    }

    #[test]
    fn roles_come_from_frames_then_ids_then_names() {
        let worker = role_of(&[0x100, 0x1001, 0x2001, 0x3001], "tokio-rt-worker", 7);
        assert_eq!(worker, Role::Worker, "workers run on blocking-pool threads");
        assert_eq!(
            role_of(&[0x100, 0x1001, 0x3001], "tokio-rt-worker", 7),
            Role::Blocking
        );
        assert_eq!(
            role_of(&[0x100, 0x6001], "tokio-rt-worker", 7),
            Role::Worker,
            "bare `run` in worker.rs"
        );
        assert_eq!(
            role_of(&[0x100, 0x7001, 0x5001], "app", 100),
            Role::Worker,
            "current_thread block_on"
        );
        assert_eq!(
            role_of(&[0x100, 0x8001, 0x3001], "tokio-rt-worker", 7),
            Role::Blocking,
            "spawning is not a worker"
        );
        assert_eq!(
            role_of(&[0x100, 0x9001, 0x5001], "app", 100),
            Role::Main,
            "dropping a runtime is not blocking"
        );
        assert_eq!(role_of(&[0x100, 0x5001], "app", 100), Role::Main);
        assert_eq!(role_of(&[0x100], "tokio-rt-worker", 7), Role::Tokio);
        assert_eq!(role_of(&[0x100], "tokio-runtime-w", 7), Role::Tokio);
        assert_eq!(role_of(&[0x100], "my-pool-3", 7), Role::Other);
        let mut agent = thread(7, "x", ThreadStack::NoAnswer);
        agent.is_agent = true;
        assert_eq!(role(&agent, 7, &[]), Role::Agent);
        let stuck = thread(7, "tokio-rt-worker", ThreadStack::NoAnswer);
        assert_eq!(role(&stuck, 1, &[]), Role::Tokio);
        assert_eq!(role(&stuck, 7, &[]), Role::Main);
    }

    #[test]
    fn first_address_is_interrupted_the_rest_return_addresses() {
        let t = thread(1, "x", frames(&[0x100, 0x1001, 0x100]));
        let addrs = distinct_addresses(&[&t]);
        assert_eq!(
            addrs,
            [
                Address::Interrupted(0x100),
                Address::Return(0x1001),
                Address::Return(0x100)
            ]
        );
        let v = fake_views(&[&t]);
        let names: Vec<&str> = v[0]
            .frames
            .iter()
            .map(|f| f.frame.function.as_str())
            .collect();
        assert_eq!(names[0], "syscall");
        // Inlined frames come before the function they were inlined into.
        assert_eq!(names[1], "std::sys::pal::unix::futex::futex_wait");
        assert!(v[0].frames[1].frame.inlined);
        assert_eq!(names[2], "std::sys::sync::condvar::futex::Condvar::wait");
        assert!(
            names[3].starts_with("WRONG"),
            "a later 0x100 is a return address: {names:?}"
        );
        assert_eq!(v[0].frames[1].address, 0x1001);
    }

    #[test]
    fn only_the_executables_code_is_the_applications() {
        let t = thread(1, "x", frames(&[0x100, 0x5001, 0xffff_0001]));
        let v = fake_views(&[&t]);
        let app: Vec<(&str, bool)> = v[0]
            .frames
            .iter()
            .map(|f| (f.frame.function.as_str(), f.app))
            .collect();
        assert_eq!(
            app,
            [
                ("syscall", false),
                ("app::main", true),
                ("0xffff0001", false)
            ]
        );
        // With no executable in the map, the source paths decide.
        let addrs = distinct_addresses(&[&t]);
        let symbols: SymbolTable = addrs.iter().map(|&a| lookup(a)).collect();
        let resolved = Resolved::new(&addrs, symbols, &[], "/app/bin/app");
        assert!(views(&[&t], 1, &resolved)[0].frames[0].app);
    }

    #[test]
    fn shared_addresses_are_symbolized_once() {
        let d = sample_dump();
        let all: Vec<&Thread> = d.threads.iter().collect();
        let addrs = distinct_addresses(&all);
        let unique: HashSet<_> = addrs.iter().collect();
        assert_eq!(unique.len(), addrs.len());
        assert_eq!(addrs.len(), 10, "{addrs:x?}");
    }

    #[test]
    fn last_segments() {
        assert_eq!(last_segment("a::B<T>::run::{{closure}}"), "run");
        assert_eq!(last_segment("<a::B as c::D>::run"), "run");
        assert_eq!(last_segment("run<F>"), "run");
        assert_eq!(last_segment("a::b::{closure#0}<u8>"), "b");
        assert_eq!(
            last_segment("drop_in_place<tokio::x::Inner>"),
            "drop_in_place"
        );
        assert_eq!(last_segment("{closure#0}"), "{closure#0}");
    }

    #[test]
    fn counts_and_name_filters() {
        let d = sample_dump();
        assert_eq!(
            counts(&d),
            Counts {
                threads: 7,
                answered: 4,
                signals_blocked: 1,
                no_answer: 1,
                not_sampled: 1
            }
        );
        assert!(name_matches(&[], "x"));
        let p = vec!["tokio".to_owned(), "app".to_owned()];
        assert!(name_matches(&p, "tokio-rt-worker"));
        assert!(name_matches(&p, "app"));
        assert!(!name_matches(&p, "delouse-agent"));
    }

    #[test]
    fn identical_stacks_group() {
        let d = sample_dump();
        let all: Vec<&Thread> = d.threads.iter().collect();
        let v = fake_views(&all);
        let groups = group(&v);
        assert_eq!(groups[0], [2, 3]);
        assert_eq!(groups.len(), 6);
        let a = thread(1, "pool-1", ThreadStack::NoAnswer);
        let b = thread(2, "pool-12", ThreadStack::NoAnswer);
        let c = thread(3, "other-1", ThreadStack::NoAnswer);
        let v = fake_views(&[&a, &c, &b]);
        assert_eq!(group(&v), [vec![0, 2], vec![1]]);
        assert_eq!(name_prefix("worker-12"), "worker-");
    }
}
