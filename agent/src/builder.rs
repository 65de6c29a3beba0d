//! `init()`, `Builder`, and the state the agent thread shares with them.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use delouse_proto::{DumpPolicy, Flavor, RuntimeInfo, TraceSupport};
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::{procfs, server, socket, sys};

/// Why the agent could not start. The application keeps running without it.
#[derive(Debug)]
pub struct InitError(String);

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "delouse agent not started: {}", self.0)
    }
}

impl std::error::Error for InitError {}

/// Starts the agent with default settings.
///
/// Call it once, early, from inside the application's runtime (the first
/// line of `#[tokio::main] async fn main`): the runtime it finds with
/// `Handle::try_current()` is registered as `main`. See [`Builder`] for
/// other settings.
///
/// It returns at once; the agent runs on its own thread. A second call
/// does nothing and returns `Ok`.
///
/// # Errors
///
/// When no socket can be bound (no writable socket directory) or the agent
/// thread cannot be started. The application is not affected.
pub fn init() -> Result<(), InitError> {
    Builder::new().start()
}

/// Settings for the agent, for when [`init`] does not fit.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() {
/// let io = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// delouse::Builder::new()
///     .runtime("io", io.handle().clone())
///     .whole_runtime_dumps(false)
///     .start()
///     .ok();
/// # }
/// ```
#[derive(Debug)]
pub struct Builder {
    socket_dir: Option<PathBuf>,
    runtimes: Vec<(String, Handle)>,
    whole_runtime_dumps: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// Default settings: socket in the first usable directory of the rules
    /// in docs/guide.md, the current runtime (if any) as `main`,
    /// whole-runtime dumps allowed on request.
    pub fn new() -> Self {
        Builder {
            socket_dir: None,
            runtimes: Vec::new(),
            whole_runtime_dumps: true,
        }
    }

    /// Binds the socket in `dir` instead of the default directories.
    ///
    /// The CLI finds the socket only if it looks there too: run it with
    /// `DELOUSE_SOCKET_DIR` set to the same directory. Setting
    /// `DELOUSE_SOCKET_DIR` for the application instead needs no code.
    pub fn socket_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.socket_dir = Some(dir.into());
        self
    }

    /// Registers another runtime under `name`, for its metrics and for
    /// whole-runtime dumps. Tasks spawned on it with [`crate::spawn`] or
    /// `.traced()` are traced whether it is registered or not.
    pub fn runtime(mut self, name: impl Into<String>, handle: Handle) -> Self {
        self.runtimes.push((name.into(), handle));
        self
    }

    /// Whether `delouse tasks --whole-runtime` may run tokio's own
    /// `Handle::dump()` here (default: yes, after the person confirms).
    /// Such a dump can stop a runtime for good (docs/tasks.md); pass `false`
    /// to refuse it in this process.
    pub fn whole_runtime_dumps(mut self, allow: bool) -> Self {
        self.whole_runtime_dumps = allow;
        self
    }

    /// Starts the agent, or, when one runs already, adds this builder's
    /// runtimes to it and ignores its other settings.
    ///
    /// # Errors
    ///
    /// As [`init`].
    pub fn start(self) -> Result<(), InitError> {
        let _serial = START.lock().unwrap_or_else(|e| e.into_inner());
        let mut runtimes = Vec::new();
        if !self.runtimes.iter().any(|(name, _)| name == "main")
            && let Ok(handle) = Handle::try_current()
        {
            runtimes.push(Runtime::new("main".into(), handle));
        }
        runtimes.extend(self.runtimes.into_iter().map(|(n, h)| Runtime::new(n, h)));

        if let Some(shared) = AGENT.get() {
            let mut known = shared.lock_runtimes();
            for rt in runtimes {
                if !known.iter().any(|k| k.name == rt.name) {
                    known.push(rt);
                }
            }
            return Ok(());
        }

        let bound = socket::bind(self.socket_dir.as_deref()).map_err(InitError)?;
        sys::unlink_at_exit(&bound.path);
        let shared = Arc::new(Shared {
            pid: std::process::id(),
            start_time: procfs::start_time(),
            exe: procfs::exe(),
            uid: sys::euid(),
            runtimes: Mutex::new(runtimes),
            whole_runtime_dumps: self.whole_runtime_dumps,
            traces: OnceLock::new(),
        });
        let path = bound.path.clone();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("delouse-agent".into())
            .stack_size(1 << 20)
            .spawn(move || server::run(thread_shared, bound))
            .map_err(|e| {
                let _ = std::fs::remove_file(&path);
                InitError(format!("cannot start the agent thread: {e}"))
            })?;
        let _ = AGENT.set(shared);
        Ok(())
    }
}

static START: Mutex<()> = Mutex::new(());
static AGENT: OnceLock<Arc<Shared>> = OnceLock::new();

/// What the agent thread knows about its process.
pub(crate) struct Shared {
    pub(crate) pid: u32,
    pub(crate) start_time: u64,
    pub(crate) exe: String,
    pub(crate) uid: u32,
    runtimes: Mutex<Vec<Runtime>>,
    pub(crate) whole_runtime_dumps: bool,
    /// Set once the start-up probe ran.
    pub(crate) traces: OnceLock<TraceSupport>,
}

/// A runtime registered with the agent.
pub(crate) struct Runtime {
    pub(crate) name: String,
    pub(crate) handle: Handle,
    /// Set when a whole-runtime dump left the runtime looking damaged: the
    /// agent never dumps it again.
    pub(crate) latched: Arc<Mutex<Option<String>>>,
}

impl Runtime {
    fn new(name: String, handle: Handle) -> Self {
        Runtime {
            name,
            handle,
            latched: Arc::new(Mutex::new(None)),
        }
    }
}

impl Shared {
    pub(crate) fn lock_runtimes(&self) -> std::sync::MutexGuard<'_, Vec<Runtime>> {
        self.runtimes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn trace_support(&self) -> TraceSupport {
        self.traces.get().cloned().unwrap_or_else(|| {
            TraceSupport::Unavailable("the agent is still starting; try again".into())
        })
    }

    /// Alive tasks summed over the registered runtimes; `None` without any.
    pub(crate) fn alive_tasks(&self) -> Option<u64> {
        let rts = self.lock_runtimes();
        (!rts.is_empty()).then(|| {
            rts.iter()
                .map(|r| r.handle.metrics().num_alive_tasks() as u64)
                .sum()
        })
    }

    pub(crate) fn runtime_infos(&self) -> Vec<RuntimeInfo> {
        let dump_supported = crate::TOKIO_DUMPS;
        self.lock_runtimes()
            .iter()
            .map(|r| {
                let metrics = r.handle.metrics();
                let latched = r.latched.lock().unwrap_or_else(|e| e.into_inner()).clone();
                RuntimeInfo {
                    name: r.name.clone(),
                    flavor: match r.handle.runtime_flavor() {
                        RuntimeFlavor::CurrentThread => Flavor::CurrentThread,
                        RuntimeFlavor::MultiThread => Flavor::MultiThread,
                        _ => Flavor::Other,
                    },
                    workers: metrics.num_workers() as u32,
                    alive_tasks: metrics.num_alive_tasks() as u64,
                    whole_runtime_dump: match latched {
                        Some(why) => DumpPolicy::Latched(why),
                        None if !dump_supported => DumpPolicy::Unsupported,
                        None if !self.whole_runtime_dumps => DumpPolicy::Forbidden,
                        None => DumpPolicy::Allowed,
                    },
                }
            })
            .collect()
    }
}
