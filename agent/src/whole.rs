//! tokio's own whole-runtime dump (`Handle::dump()`), behind the guard
//! described in docs/tasks.md.
//!
//! On tokio 1.54.1 this dump cannot be made safe from outside: a worker
//! blocked past tokio's 250 ms barrier timeout, or more than ~128 tasks in
//! the local run queues, hang the runtime for good, and even behind this
//! guard a worker that re-enters the dump barrier after a dump stops the
//! runtime in some dumps. So it runs only on request, one at a time, after
//! the checks below, and a runtime that looked damaged afterwards is never
//! dumped again.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use delouse_proto::{AgentError, Coverage, ErrorKind, Task, TaskDump, TaskState, TasksMode};
use tokio::runtime::{Handle, RuntimeFlavor, RuntimeMetrics};

use crate::procfs;

/// Samples per pre-dump window, 1 ms apart: `worker_poll_count` is published
/// only every ~61 polls or at a park, so the window must be a few ms long.
const WINDOW_SAMPLES: usize = 6;
/// How long the agent watches the workers after a dump.
const WATCH: Duration = Duration::from_millis(350);
/// A worker that neither parks nor polls for this long after a dump is
/// taken as lost in tokio's dump barrier.
const STUCK: Duration = Duration::from_millis(150);

fn err(kind: ErrorKind, message: String) -> AgentError {
    AgentError::new(kind, message)
}

/// Dumps runtime `name` with tokio's `Handle::dump()`.
pub(crate) async fn dump(
    name: &str,
    handle: Handle,
    latched: Arc<Mutex<Option<String>>>,
    deadline: Instant,
) -> Result<TaskDump, AgentError> {
    if let Some(why) = latched.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        return Err(err(
            ErrorKind::Refused,
            format!("no more whole-runtime dumps of runtime '{name}' in this process: {why}"),
        ));
    }
    let (dump, warning) = match handle.runtime_flavor() {
        RuntimeFlavor::MultiThread => multi_thread(name, &handle, &latched, deadline).await?,
        RuntimeFlavor::CurrentThread => (current_thread(name, &handle, deadline).await?, None),
        _ => {
            return Err(err(
                ErrorKind::Unsupported,
                format!("runtime '{name}' has a scheduler flavour this agent cannot dump"),
            ));
        }
    };
    let mut dump = to_task_dump(name, &handle, dump);
    dump.coverage.notes.extend(warning);
    Ok(dump)
}

async fn multi_thread(
    name: &str,
    handle: &Handle,
    latched: &Arc<Mutex<Option<String>>>,
    deadline: Instant,
) -> Result<(tokio::runtime::Dump, Option<String>), AgentError> {
    let metrics = handle.metrics();
    preflight(name, &metrics, deadline).await?;

    // Drive the dump on a thread of its own, polled in a tight loop: the
    // sooner the requesting future sees the result, the shorter the window
    // in which a worker can re-enter tokio's dump barrier alone.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let dump_handle = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("delouse-dump".into())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                spin_until(dump_handle.dump(), deadline)
            }));
            let _ = tx.send(outcome.ok().flatten());
        });
    if let Err(e) = spawned {
        return Err(err(
            ErrorKind::Internal,
            format!("cannot start the dump thread: {e}"),
        ));
    }
    let dump = rx.await.ok().flatten();

    let damage = watch(&metrics).await;
    let Some(dump) = dump else {
        let why = format!(
            "a dump did not finish within its deadline{}",
            damage.map(|d| format!(" and {d}")).unwrap_or_default()
        );
        *latched.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
        return Err(err(
            ErrorKind::Timeout,
            format!(
                "whole-runtime dump of runtime '{name}' did not finish in time ({why}); the runtime may be stuck: no more dumps of it in this process"
            ),
        ));
    };
    let warning = damage.map(|damage| {
        *latched.lock().unwrap_or_else(|e| e.into_inner()) = Some(damage.clone());
        format!(
            "warning: {damage}: runtime '{name}' may now be hung; check it (delouse threads, \
             delouse tasks) and restart the process if it is; no more whole-runtime dumps of it"
        )
    });
    Ok((dump, warning))
}

/// Polls `fut` without pause until it is ready or `deadline` passes.
fn spin_until<F: Future>(fut: F, deadline: Instant) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return Some(out);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::hint::spin_loop();
    }
}

#[derive(Clone)]
struct Sample {
    park_unpark: Vec<u64>,
    polls: Vec<u64>,
    queued: usize,
}

fn sample(m: &RuntimeMetrics) -> Sample {
    let n = m.num_workers();
    Sample {
        park_unpark: (0..n).map(|w| m.worker_park_unpark_count(w)).collect(),
        polls: (0..n).map(|w| m.worker_poll_count(w)).collect(),
        queued: (0..n).map(|w| m.worker_local_queue_depth(w)).sum::<usize>()
            + m.global_queue_depth(),
    }
}

/// Waits until every worker is parked or making progress and the run
/// queues are empty over one window, or refuses at the deadline, naming
/// what it saw.
async fn preflight(name: &str, m: &RuntimeMetrics, deadline: Instant) -> Result<(), AgentError> {
    // Keep half the budget for the dump itself.
    let until = Instant::now() + deadline.saturating_duration_since(Instant::now()) / 2;
    let mut last_problem;
    loop {
        let mut window = Vec::with_capacity(WINDOW_SAMPLES);
        for i in 0..WINDOW_SAMPLES {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            window.push(sample(m));
        }
        let (first, last) = (&window[0], &window[WINDOW_SAMPLES - 1]);
        let stuck: Vec<usize> = (0..first.polls.len())
            .filter(|&w| last.park_unpark[w] % 2 == 0 && last.polls[w] == first.polls[w])
            .collect();
        let queued = window.iter().map(|s| s.queued).max().unwrap_or(0);
        if stuck.is_empty() && queued == 0 {
            return Ok(());
        }
        last_problem = if stuck.is_empty() {
            format!("its run queues never drained ({queued} tasks queued)")
        } else {
            let names: Vec<String> = stuck.iter().map(|&w| describe_worker(m, w)).collect();
            format!(
                "{} neither parked nor polled a task: probably blocked",
                names.join(", ")
            )
        };
        if Instant::now() >= until {
            return Err(err(
                ErrorKind::Refused,
                format!(
                    "refusing to dump runtime '{name}': {last_problem}; a whole-runtime dump now would hang it (a traced dump is safe)"
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn describe_worker(m: &RuntimeMetrics, w: usize) -> String {
    match m.worker_thread_id(w) {
        Some(id) => format!("worker {w} ({id:?})"),
        None => format!("worker {w}"),
    }
}

/// Watches the workers after a dump: one that neither parks nor polls for
/// `STUCK` is taken as lost in the dump barrier.
async fn watch(m: &RuntimeMetrics) -> Option<String> {
    let start = Instant::now();
    let mut prev = sample(m);
    let mut quiet_since: Vec<Instant> = vec![start; m.num_workers()];
    while start.elapsed() < WATCH {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = sample(m);
        for (w, quiet) in quiet_since.iter_mut().enumerate() {
            let parked = now.park_unpark[w] % 2 == 1;
            if parked || now.polls[w] != prev.polls[w] || now.park_unpark[w] != prev.park_unpark[w]
            {
                *quiet = Instant::now();
            } else if quiet.elapsed() >= STUCK {
                return Some(format!(
                    "after a whole-runtime dump {} looked stuck for {} ms (tokio's dump barrier miscounted)",
                    describe_worker(m, w),
                    STUCK.as_millis()
                ));
            }
        }
        prev = now;
    }
    None
}

async fn current_thread(
    name: &str,
    handle: &Handle,
    deadline: Instant,
) -> Result<tokio::runtime::Dump, AgentError> {
    // From another thread, dump() of a current_thread runtime sees no tasks:
    // it must run on the runtime's own thread.
    let inner = handle.clone();
    let task = handle.spawn(async move { inner.dump().await });
    let abort = task.abort_handle();
    match tokio::time::timeout_at(deadline.into(), task).await {
        Ok(Ok(dump)) => Ok(dump),
        Ok(Err(e)) => Err(err(
            ErrorKind::Internal,
            format!("whole-runtime dump of runtime '{name}' failed on the runtime's thread: {e}"),
        )),
        Err(_) => {
            abort.abort();
            Err(err(
                ErrorKind::Timeout,
                format!(
                    "runtime '{name}' did not run the dump in time: its thread is probably blocked (delouse threads shows it)"
                ),
            ))
        }
    }
}

fn to_task_dump(name: &str, handle: &Handle, dump: tokio::runtime::Dump) -> TaskDump {
    let mut frames = Vec::new();
    let mut frame_ids = std::collections::HashMap::new();
    let mut tasks = Vec::new();
    for task in dump.tasks().iter() {
        // tokio hands out resolved backtraces only; the addresses are sent
        // and the CLI symbolizes them as for traced dumps.
        let backtraces = task
            .trace()
            .resolve_backtraces()
            .iter()
            .map(|bt| {
                bt.frames()
                    .map(|f| {
                        let ip = f.ip() as u64;
                        *frame_ids.entry(ip).or_insert_with(|| {
                            frames.push(ip);
                            frames.len() as u32 - 1
                        })
                    })
                    .collect()
            })
            .collect();
        tasks.push(Task {
            id: task.id().to_string().parse().ok(),
            spawned_at: None,
            age_ms: None,
            polls: None,
            last_poll_ago_ms: None,
            state: TaskState::Traced(backtraces),
        });
    }
    let alive = handle.metrics().num_alive_tasks() as u64;
    let traced = tasks.len() as u64;
    TaskDump {
        mode: TasksMode::WholeRuntime {
            runtime: Some(name.to_owned()),
        },
        frames,
        locations: Vec::new(),
        tasks,
        coverage: Coverage {
            traced,
            not_polled_in_time: 0,
            finished: 0,
            alive: Some(alive),
            untraced: Some(alive.saturating_sub(traced)),
            notes: vec![
                "whole-runtime dumps leave out tasks that were running at the time, tasks in a LocalSet and spawn_blocking tasks".into(),
            ],
        },
        modules: procfs::modules(),
        elapsed_us: 0,
    }
}
