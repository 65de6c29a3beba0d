//! `delouse tasks`: what every traced task is waiting on.

use std::time::{Duration, Instant};

use delouse_proto::{Answer, DumpPolicy, RequestKind, TasksMode};

use crate::Output;
use crate::connect::{self, Deadline};
use crate::error::{CliError, Exit, Result};
use crate::render::{Paint, tasks as render};
use crate::{prompt, symbolize, tree};

/// Options of `delouse tasks`.
#[derive(Debug, Clone)]
pub struct Options {
    /// The target.
    pub pid: u32,
    /// JSON instead of text.
    pub json: bool,
    /// The whole command's time budget.
    pub timeout: Duration,
    /// Ask for tokio's own dump of a whole runtime.
    pub whole_runtime: bool,
    /// That runtime's name (`main` when `None`).
    pub runtime: Option<String>,
    /// Consent given on the command line.
    pub yes: bool,
}

/// What a whole-runtime dump risks, shown before asking.
pub const WHOLE_RUNTIME_RISK: &str = "\
a whole-runtime dump runs tokio's own Handle::dump(), which cannot be made safe from outside.
measured on tokio 1.54.1: a worker that re-enters the dump barrier after a dump stops the
runtime in 6-9% of dumps and loses a worker in ~20% more; a worker blocked for over 250 ms, or
more than ~128 queued tasks, can hang the runtime for good. the process must then be restarted.
`delouse tasks PID` without --whole-runtime traces the tasks spawned with delouse::spawn
without stopping anything.";

/// Asks on the terminal, or refuses when there is none.
fn confirm(pid: u32) -> Result<()> {
    prompt::confirm(&prompt::Question {
        preamble: WHOLE_RUNTIME_RISK,
        ask: &format!("run a whole-runtime dump of pid {pid}?"),
        no_terminal: &format!(
            "whole-runtime dump of pid {pid} not run: no terminal to confirm on: pass --yes to accept the risk \
             (see `delouse tasks --help`)"
        ),
        declined: &format!("whole-runtime dump of pid {pid} not run: not confirmed"),
    })
}

/// Symbolizing gets what is left of the time budget, and at least this.
pub const MIN_SYMBOLIZE: Duration = Duration::from_secs(5);

/// Connects for a whole-runtime dump of `name`: first checks that there
/// is an agent and that the runtime exists and may be dumped, then asks
/// (unless `--yes`), then connects again for the request. The agent
/// closes a connection that sends no request for 10 s, so none is held
/// open while the question waits for an answer.
fn open_whole_runtime(opts: &Options, name: &str) -> Result<(connect::Connection, Instant)> {
    let pid = opts.pid;
    let start = Instant::now();
    let conn = connect::open(pid, Deadline::after(opts.timeout))?;
    check_runtime(&conn, name)?;
    if opts.yes {
        return Ok((conn, start));
    }
    drop(conn);
    confirm(pid)?;
    let start = Instant::now();
    let conn = connect::open(pid, Deadline::after(opts.timeout))?;
    check_runtime(&conn, name)?;
    Ok((conn, start))
}

/// Refuses early, from the welcome, what the agent would refuse anyway.
fn check_runtime(conn: &connect::Connection, name: &str) -> Result<()> {
    let pid = conn.pid;
    let runtimes = &conn.welcome.runtimes;
    let Some(rt) = runtimes.iter().find(|r| r.name == name) else {
        let names: Vec<&str> = runtimes.iter().map(|r| r.name.as_str()).collect();
        let known = if names.is_empty() {
            "it registered none: call delouse::init() inside the runtime, or Builder::runtime()"
                .to_owned()
        } else {
            format!("it has {}: pass one with --runtime", names.join(", "))
        };
        return Err(CliError::error(format!(
            "pid {pid} has no runtime named `{name}`: {known}"
        )));
    };
    match &rt.whole_runtime_dump {
        DumpPolicy::Allowed => Ok(()),
        DumpPolicy::Forbidden => Err(CliError::error(format!(
            "whole-runtime dumps of runtime `{name}` are forbidden by the application (pid {pid}): \
             use `delouse tasks {pid}` for traced tasks"
        ))),
        DumpPolicy::Unsupported => Err(CliError::new(
            Exit::Unsupported,
            format!(
                "pid {pid} was built without whole-runtime dump support (runtime `{name}`): build it with \
                 --cfg tokio_unstable on linux x86/x86_64/aarch64/s390x"
            ),
        )),
        DumpPolicy::Latched(why) => Err(CliError::error(format!(
            "runtime `{name}` of pid {pid} may not be dumped again: an earlier dump left it looking damaged ({}): \
             restart the process to dump it",
            crate::error::one_line(why)
        ))),
    }
}

/// Runs `delouse tasks`.
pub fn run(opts: &Options) -> Result<Output> {
    let pid = opts.pid;
    let (conn, mode, start) = if opts.whole_runtime {
        let name = opts.runtime.as_deref().unwrap_or("main");
        let (conn, start) = open_whole_runtime(opts, name)?;
        let mode = TasksMode::WholeRuntime {
            runtime: opts.runtime.clone(),
        };
        (conn, mode, start)
    } else {
        let start = Instant::now();
        let conn = connect::open(pid, Deadline::after(opts.timeout))?;
        (conn, TasksMode::Traced, start)
    };
    let deadline = conn.deadline();
    let dump = match conn.request(RequestKind::Tasks(mode))? {
        Answer::Tasks(dump) => dump,
        other => return Err(connect::wrong_answer(pid, "tasks", &other)),
    };
    let exchanged = Instant::now();
    let symbols = symbolize::symbolize_within(
        pid,
        &symbolize::Address::returns(&dump.frames),
        &dump.modules,
        deadline.remaining().max(MIN_SYMBOLIZE),
    );
    let symbolized = Instant::now();
    let groups = tree::group_tasks(&dump, &symbols.table);
    let grouped = Instant::now();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let timings = render::Timings {
        exchange_ms: ms(exchanged - start),
        symbolize_ms: ms(symbolized - exchanged),
        group_ms: ms(grouped - symbolized),
    };
    let cwd = std::env::current_dir().ok();
    let report = render::Report {
        pid,
        mode: &dump.mode,
        coverage: &dump.coverage,
        agent_elapsed_ms: dump.elapsed_us as f64 / 1000.0,
        total_ms: start.elapsed().as_secs_f64() * 1000.0,
        timings,
        groups: &groups,
    };
    let stdout = if opts.json {
        render::json(&report, cwd.as_deref())
    } else {
        render::text(&report, Paint::for_stdout(), cwd.as_deref())
    };
    let mut out = Output {
        stdout,
        ..Output::default()
    };
    for w in &symbols.warnings {
        out.warn(w);
    }
    Ok(out)
}
