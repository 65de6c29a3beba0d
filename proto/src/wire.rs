//! Every message of the protocol.
//!
//! Compatibility rule: within one [`PROTOCOL_VERSION`], messages only grow
//! at their end (new enum variants after the existing ones, no removed or
//! reordered fields). postcard encodes enum variants by index and struct
//! fields in order, so anything else is a new protocol version.

use serde::{Deserialize, Serialize};

/// First bytes of every [`Hello`]: tells a delouse agent from anything else
/// listening on a socket.
pub const MAGIC: [u8; 8] = *b"DELOUSE\x01";

/// The protocol version this crate speaks. Both sides refuse another.
pub const PROTOCOL_VERSION: u32 = 1;

/// The first message of every connection, sent by the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: [u8; 8],
    /// The client's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// The client's crate version, for error messages.
    pub client_version: String,
}

impl Hello {
    /// A hello for this crate's protocol version.
    pub fn new(client_version: &str) -> Self {
        Hello {
            magic: MAGIC,
            protocol_version: PROTOCOL_VERSION,
            client_version: client_version.to_owned(),
        }
    }
}

/// The agent's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HelloReply {
    /// The agent speaks the client's protocol; a [`Request`] may follow.
    Welcome(Welcome),
    /// The agent cannot serve this client (protocol mismatch, bad magic);
    /// the agent closes the connection after sending this.
    Rejected(AgentError),
}

/// What an agent says about itself and its process when a client connects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The agent's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// The agent crate's version.
    pub agent_version: String,
    /// The process id, as the process sees it (its own PID namespace).
    pub pid: u32,
    /// Process start time in clock ticks since boot: field 22 of
    /// `/proc/<pid>/stat`. A client compares it with what it reads itself
    /// to tell a live agent from a reused PID.
    pub start_time: u64,
    /// `/proc/self/exe` as the agent reads it.
    pub exe: String,
    /// The runtimes the application registered, `main` first.
    pub runtimes: Vec<RuntimeInfo>,
    /// What this agent's build can do.
    pub capabilities: Capabilities,
}

/// One tokio runtime the application registered with the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// The name it was registered under (`main` for the one `init()` found).
    pub name: String,
    /// Scheduler flavour.
    pub flavor: Flavor,
    /// Worker threads (1 for `current_thread`).
    pub workers: u32,
    /// Tasks alive in this runtime (`RuntimeMetrics::num_alive_tasks`).
    pub alive_tasks: u64,
    /// Whether a whole-runtime dump of this runtime may be requested.
    pub whole_runtime_dump: DumpPolicy,
}

/// A tokio scheduler flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Flavor {
    /// `current_thread`.
    CurrentThread,
    /// `multi_thread`.
    MultiThread,
    /// A flavour this agent does not know.
    Other,
}

/// Whether [`TasksMode::WholeRuntime`] may run on a runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DumpPolicy {
    /// The agent will try, after its pre-dump checks.
    Allowed,
    /// The application forbade it (`Builder::whole_runtime_dumps(false)`).
    Forbidden,
    /// The agent's build cannot dump (no `tokio_unstable`, no `taskdump`,
    /// or an unsupported platform).
    Unsupported,
    /// An earlier dump left this runtime looking damaged; the agent will
    /// never dump it again in this process. The text says what was seen.
    Latched(String),
}

/// What an agent's build supports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Whether tasks spawned with `delouse::spawn` can trace themselves.
    pub traces: TraceSupport,
    /// Tasks currently registered by `delouse::spawn` or `.traced()`.
    pub registered_tasks: u64,
}

/// Whether traced tasks can produce traces in this process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TraceSupport {
    /// They can.
    Available,
    /// They cannot; the text names what is missing (a cfg, a feature, a
    /// platform, or a failed start-up probe) and how to get it.
    Unavailable(String),
}

/// One request, sent after a [`Welcome`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// How long the client waits for the answer, in milliseconds. The agent
    /// answers (possibly partially, saying so) before it runs out.
    pub deadline_ms: u32,
    /// What is asked.
    pub kind: RequestKind,
}

/// The kinds of request. New kinds are appended; an agent that cannot decode
/// a request answers [`ErrorKind::BadRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestKind {
    /// Async stack traces of tasks.
    Tasks(TasksMode),
    /// A backtrace of every OS thread of the process.
    Threads,
    /// What the agent knows of the build: its version, tokio's features.
    Build,
    /// Whether a core dump could be written now; changes nothing.
    CrashPreflight,
    /// Abort the process so that it leaves a core dump. Carries the PID the
    /// client means, as confirmation: the agent refuses any other.
    Crash {
        /// The target's PID, as the agent sees it (`Welcome::pid`).
        pid: u32,
    },
}

/// Which tasks a [`RequestKind::Tasks`] asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TasksMode {
    /// Tasks spawned with `delouse::spawn` or wrapped in `.traced()` trace
    /// themselves. Stops nothing.
    Traced,
    /// tokio's own `Handle::dump()` of one runtime: sees every task, but can
    /// stop the runtime for good (docs/tasks.md). Only sent when the person
    /// consented.
    WholeRuntime {
        /// The runtime's registered name; `None` means `main`.
        runtime: Option<String>,
    },
}

/// The agent's answer to a [`Request`].
pub type Response = Result<Answer, AgentError>;

/// A successful answer; the variant matches the [`RequestKind`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    /// Answer to [`RequestKind::Tasks`].
    Tasks(TaskDump),
    /// Answer to [`RequestKind::Threads`].
    Threads(ThreadDump),
    /// Answer to [`RequestKind::Build`].
    Build(BuildInfo),
    /// Answer to [`RequestKind::CrashPreflight`], and the last words before
    /// [`RequestKind::Crash`] aborts the process.
    Crash(CrashReport),
}

/// Why the agent did not answer a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentError {
    /// The class of failure; the CLI maps it to an exit code.
    pub kind: ErrorKind,
    /// One lowercase line: what failed and what to do.
    pub message: String,
}

impl AgentError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        AgentError {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AgentError {}

/// Classes of [`AgentError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The request could not be decoded or makes no sense.
    BadRequest,
    /// The two sides speak different protocol versions.
    VersionMismatch,
    /// The agent's build or platform cannot do this.
    Unsupported,
    /// Too many clients at once; try again.
    Busy,
    /// The same kind of request is already running (one trace at a time).
    InProgress,
    /// The work did not finish before the request's deadline.
    Timeout,
    /// The agent declined on purpose (forbidden, unsafe right now, latched).
    Refused,
    /// The peer's uid may not use this agent.
    PermissionDenied,
    /// A fault inside the agent; it keeps running.
    Internal,
}

/// Answer to [`TasksMode::Traced`] and [`TasksMode::WholeRuntime`].
///
/// Instruction addresses and source locations are interned: each distinct
/// one is sent once and referred to by its index, because 100k tasks parked
/// at the same line would otherwise repeat it 100k times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDump {
    /// How the traces were taken.
    pub mode: TasksMode,
    /// Distinct instruction addresses. Every address is a return address
    /// (the instruction after a call): subtract one before symbolizing.
    pub frames: Vec<u64>,
    /// Distinct spawn locations.
    pub locations: Vec<Location>,
    /// One entry per task.
    pub tasks: Vec<Task>,
    /// What the dump covered and what it missed.
    pub coverage: Coverage,
    /// The executable mappings of the process, to symbolize [`Self::frames`].
    pub modules: Vec<Module>,
    /// Time the agent spent on the request, in microseconds.
    pub elapsed_us: u64,
}

/// One task in a [`TaskDump`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// tokio's task id, when known (a `.traced()` future not yet polled
    /// inside a task has none).
    pub id: Option<u64>,
    /// Index into [`TaskDump::locations`] of where it was spawned.
    pub spawned_at: Option<u32>,
    /// Milliseconds since it was spawned, when known.
    pub age_ms: Option<u64>,
    /// Times it was polled, when known.
    pub polls: Option<u64>,
    /// Milliseconds since its last poll began, when known; `None` if never
    /// polled.
    pub last_poll_ago_ms: Option<u64>,
    /// The trace, or why there is none.
    pub state: TaskState,
}

/// What became of one task during a [`TaskDump`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskState {
    /// The task traced itself. One backtrace per tokio leaf future it was
    /// waiting on; each backtrace lists indexes into [`TaskDump::frames`],
    /// innermost (the leaf) first, outermost (the task's own future) last.
    /// An empty list means the task waits on something tokio does not
    /// trace (a non-tokio future, `std::future::pending`).
    Traced(Vec<Vec<u32>>),
    /// The task was not polled before the deadline: its worker is probably
    /// busy or blocked (`delouse threads` shows it).
    NotPolledInTime,
    /// The task finished while the trace was taken.
    Finished,
}

/// A source location (`file:line:column`), as `#[track_caller]` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Location {
    /// Source file, as the compiler recorded it.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

/// What a [`TaskDump`] covered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    /// Tasks in the dump that traced themselves.
    pub traced: u64,
    /// Tasks in the dump that were not polled before the deadline.
    pub not_polled_in_time: u64,
    /// Tasks that finished during the dump.
    pub finished: u64,
    /// Alive tasks summed over the registered runtimes, when known.
    pub alive: Option<u64>,
    /// Alive tasks that were spawned without delouse and so are not in a
    /// traced dump (`alive` minus registered tasks), when known.
    pub untraced: Option<u64>,
    /// Things the dump cannot see, for the person to read (for a
    /// whole-runtime dump: `LocalSet`, running and `spawn_blocking` tasks).
    pub notes: Vec<String>,
}

/// One executable mapping of the process (a line of `/proc/<pid>/maps`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Module {
    /// Path of the mapped file, as the target's mount namespace sees it.
    pub path: String,
    /// First address of the mapping.
    pub start: u64,
    /// One past the last address of the mapping.
    pub end: u64,
    /// File offset the mapping starts at.
    pub file_offset: u64,
}

impl Module {
    /// The module of `addr` in `modules`, if any.
    pub fn find(modules: &[Module], addr: u64) -> Option<&Module> {
        modules.iter().find(|m| m.start <= addr && addr < m.end)
    }
}

/// Answer to [`RequestKind::Threads`]: every OS thread of the process, with
/// what `/proc` says of it and, where it answered the agent's signal, its
/// call stack as raw addresses (the CLI symbolizes them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadDump {
    /// One entry per thread, in `/proc/<pid>/task` order.
    pub threads: Vec<Thread>,
    /// The executable mappings of the process, to symbolize the stacks.
    pub modules: Vec<Module>,
    /// The real-time signal the agent used.
    pub signal: i32,
    /// Longest time one thread spent in the agent's signal handler, in
    /// nanoseconds.
    pub max_handler_ns: u64,
    /// Time the agent spent on the request, in microseconds.
    pub elapsed_us: u64,
}

/// One OS thread in a [`ThreadDump`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thread {
    /// Kernel thread id.
    pub tid: u32,
    /// Thread name (`/proc/<pid>/task/<tid>/comm`).
    pub name: String,
    /// Scheduler state letter from `/proc/<pid>/task/<tid>/stat` (`R`
    /// running, `S` sleeping, `D` uninterruptible, `T` stopped, `Z`...).
    pub state: char,
    /// CPU time in user mode, in milliseconds.
    pub user_ms: u64,
    /// CPU time in kernel mode, in milliseconds.
    pub system_ms: u64,
    /// The system call the thread is blocked in, by number
    /// (`/proc/<pid>/task/<tid>/syscall`), when it is in one.
    pub syscall: Option<u64>,
    /// Whether this is the agent's own thread.
    pub is_agent: bool,
    /// The stack, or why there is none.
    pub stack: ThreadStack,
}

/// What the agent got of one thread's stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ThreadStack {
    /// The thread answered. Innermost first: the first address is the
    /// interrupted instruction itself, every later one a return address
    /// (symbolize `address - 1` for those). `truncated` says the unwinder
    /// stopped before the outermost frame (no unwind information for a
    /// frame, or the copied stack ran out).
    Frames {
        /// The addresses.
        addresses: Vec<u64>,
        /// Whether the walk stopped early.
        truncated: bool,
    },
    /// The thread blocks the agent's signal; it was not interrupted.
    SignalsBlocked,
    /// The thread did not answer the signal before the deadline (it may be
    /// stopped, in uninterruptible sleep, or gone).
    NoAnswer,
    /// The agent did not signal it; the text says why (its own thread).
    NotSampled(String),
}

/// What only the agent knows of the build it is part of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// The agent crate's version.
    pub agent_version: String,
    /// Whether the application was built with `--cfg tokio_unstable`.
    pub tokio_unstable: bool,
    /// Whether tokio's `taskdump` support is compiled in (the agent turns it
    /// on where tokio supports it).
    pub taskdump: bool,
    /// Whether task traces work, and why not.
    pub traces: TraceSupport,
    /// Whether the agent was built with debug assertions (a debug build).
    pub debug_assertions: bool,
    /// The target the agent was compiled for, e.g. `x86_64-linux`.
    pub target: String,
    /// The runtimes the application registered.
    pub runtimes: Vec<RuntimeInfo>,
}

/// Whether and where a core dump of the process would go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashReport {
    /// Soft core size limit in bytes (`None`: unlimited).
    pub core_soft_limit: Option<u64>,
    /// Hard core size limit in bytes (`None`: unlimited). The agent raises
    /// the soft limit to this before aborting.
    pub core_hard_limit: Option<u64>,
    /// `/proc/sys/kernel/core_pattern`, as the target reads it.
    pub core_pattern: String,
    /// `prctl(PR_GET_DUMPABLE)`: 0 means the kernel writes no core.
    pub dumpable: i32,
    /// Whether the process is PID 1 of its PID namespace (a container's init
    /// cannot be killed by its own SIGABRT's default action).
    pub pid_namespace_init: bool,
    /// The process's working directory (a relative core pattern lands there).
    pub cwd: String,
    /// Free bytes where a file pattern points, when it is a file pattern.
    pub free_bytes: Option<u64>,
    /// The process's resident memory in bytes: about the size of its core.
    pub rss_bytes: u64,
}
