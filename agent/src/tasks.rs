//! `Tasks` requests: the traced dump (every task traces itself) and the
//! entry to tokio's whole-runtime dump.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use delouse_proto::{
    AgentError, Answer, Coverage, ErrorKind, Location, Response, Task, TaskDump, TaskState,
    TasksMode, TraceSupport,
};

use crate::builder::Shared;
use crate::collect::{Collect, Outcome};
use crate::exclusive::Exclusive;
use crate::registry::{Slot, registry};
use crate::{procfs, sys, whole};

/// One task dump at a time, traced or whole-runtime: a traced dump wakes
/// every task and refills the run queues, which is what a whole-runtime
/// dump must not meet.
static DUMPING: AtomicBool = AtomicBool::new(false);

fn in_progress(shared: &Shared) -> AgentError {
    AgentError::new(
        ErrorKind::InProgress,
        format!(
            "trace in progress: another client is dumping the tasks of pid {}; try again when it is done",
            shared.pid
        ),
    )
}

/// A traced dump ends early when no task answered for this long.
const STALL: Duration = Duration::from_secs(1);

/// Time kept back from the client's deadline to build and send the answer.
fn collect_deadline(start: Instant, deadline: Instant) -> Instant {
    let budget = deadline.saturating_duration_since(start);
    let reserve = (budget / 5).clamp(Duration::from_millis(20), Duration::from_millis(500));
    start + budget.saturating_sub(reserve)
}

/// Wakes every registered task and collects what each one traced of itself.
pub(crate) async fn traced(shared: &Shared, deadline: Instant) -> Response {
    if let TraceSupport::Unavailable(why) = shared.trace_support() {
        return Err(AgentError::new(ErrorKind::Unsupported, why));
    }
    let Some(_exclusive) = Exclusive::take(&DUMPING) else {
        return Err(in_progress(shared));
    };
    let start = Instant::now();
    let until = collect_deadline(start, deadline);

    let collect = Collect::begin();
    let epoch = collect.epoch;
    let mut snapshot: Vec<Arc<Slot>> = Vec::with_capacity(registry().len());
    registry().for_each(|slot| {
        collect.remaining.fetch_add(1, Ordering::AcqRel);
        slot.pending.store(epoch, Ordering::Release);
        snapshot.push(slot.clone());
    });
    collect.publish();
    for slot in &snapshot {
        slot.waker.wake();
    }

    // Wait for every answer, or the deadline, or a stall: tasks behind a
    // blocked worker never answer, and the person should not wait out the
    // whole timeout to learn so.
    let mut left = collect.remaining.load(Ordering::Acquire);
    let mut progress = Instant::now();
    while left > 0 {
        let notified = collect.done.notified();
        let wake = until.min(progress + STALL);
        let timed_out = tokio::time::timeout_at(wake.into(), notified)
            .await
            .is_err();
        let now_left = collect.remaining.load(Ordering::Acquire);
        if now_left < left {
            progress = Instant::now();
        }
        left = now_left;
        if timed_out && (Instant::now() >= until || progress.elapsed() >= STALL) {
            break;
        }
    }

    // Whoever settles a slot first wins: slots the agent settles here were
    // not polled in time; the others hold their task's answer.
    let unanswered: Vec<bool> = snapshot
        .iter()
        .map(|slot| {
            slot.pending
                .compare_exchange(epoch, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
        .collect();
    collect.end();

    let dump = build_dump(shared, &snapshot, &unanswered, epoch, start);
    Ok(Answer::Tasks(dump))
}

fn build_dump(
    shared: &Shared,
    snapshot: &[Arc<Slot>],
    unanswered: &[bool],
    epoch: u64,
    start: Instant,
) -> TaskDump {
    let now = sys::coarse_now_ns();
    let ms_since = |ns: u64| now.saturating_sub(ns) / 1_000_000;
    let mut interner = Interner::default();
    let mut coverage = Coverage {
        traced: 0,
        not_polled_in_time: 0,
        finished: 0,
        alive: shared.alive_tasks(),
        untraced: None,
        notes: Vec::new(),
    };
    let mut tasks = Vec::with_capacity(snapshot.len());
    for (slot, &unanswered) in snapshot.iter().zip(unanswered) {
        let answer = slot.answer.lock().unwrap_or_else(|e| e.into_inner()).take();
        let state = match answer {
            Some((e, Outcome::Traced(frames))) if e == epoch && !unanswered => {
                coverage.traced += 1;
                TaskState::Traced(
                    frames
                        .split(|&ip| ip == 0)
                        .take(frames.iter().filter(|&&ip| ip == 0).count())
                        .map(|bt| bt.iter().map(|&ip| interner.frame(ip)).collect())
                        .collect(),
                )
            }
            Some((e, Outcome::Finished)) if e == epoch && !unanswered => {
                coverage.finished += 1;
                TaskState::Finished
            }
            _ => {
                coverage.not_polled_in_time += 1;
                TaskState::NotPolledInTime
            }
        };
        let last_poll = slot.last_poll_ns.load(Ordering::Relaxed);
        tasks.push(Task {
            id: slot.id.get().and_then(|id| id.to_string().parse().ok()),
            spawned_at: Some(interner.location(slot.location)),
            age_ms: Some(ms_since(slot.spawned_ns)),
            polls: Some(slot.polls.load(Ordering::Relaxed)),
            last_poll_ago_ms: (last_poll != 0).then(|| ms_since(last_poll)),
            state,
        });
    }
    let live = snapshot.len() as u64 - coverage.finished;
    coverage.untraced = coverage.alive.map(|alive| alive.saturating_sub(live));
    TaskDump {
        mode: TasksMode::Traced,
        frames: interner.frames,
        locations: interner.locations,
        tasks,
        coverage,
        modules: procfs::modules(),
        elapsed_us: start.elapsed().as_micros() as u64,
    }
}

#[derive(Default)]
struct Interner {
    frames: Vec<u64>,
    frame_ids: HashMap<u64, u32>,
    locations: Vec<Location>,
    location_ids: HashMap<(&'static str, u32, u32), u32>,
}

impl Interner {
    fn frame(&mut self, ip: u64) -> u32 {
        match self.frame_ids.entry(ip) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                self.frames.push(ip);
                *e.insert(self.frames.len() as u32 - 1)
            }
        }
    }

    fn location(&mut self, loc: &'static std::panic::Location<'static>) -> u32 {
        match self
            .location_ids
            .entry((loc.file(), loc.line(), loc.column()))
        {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                self.locations.push(Location {
                    file: loc.file().to_owned(),
                    line: loc.line(),
                    column: loc.column(),
                });
                *e.insert(self.locations.len() as u32 - 1)
            }
        }
    }
}

/// tokio's own `Handle::dump()` of one runtime, after the checks in
/// `whole`.
pub(crate) async fn whole_runtime(
    shared: &Shared,
    runtime: Option<String>,
    deadline: Instant,
) -> Response {
    let name = runtime.unwrap_or_else(|| "main".into());
    if !shared.whole_runtime_dumps {
        return Err(AgentError::new(
            ErrorKind::Refused,
            "the application forbids whole-runtime dumps (Builder::whole_runtime_dumps(false)); \
             use a traced dump (delouse tasks without --whole-runtime)",
        ));
    }
    let found = shared
        .lock_runtimes()
        .iter()
        .find(|r| r.name == name)
        .map(|r| (r.handle.clone(), r.latched.clone()));
    let Some((handle, latched)) = found else {
        let known: Vec<String> = shared
            .lock_runtimes()
            .iter()
            .map(|r| r.name.clone())
            .collect();
        return Err(AgentError::new(
            ErrorKind::BadRequest,
            format!(
                "no runtime named '{name}' in pid {} (registered: {})",
                shared.pid,
                known.join(", ")
            ),
        ));
    };
    let Some(_exclusive) = Exclusive::take(&DUMPING) else {
        return Err(in_progress(shared));
    };
    let start = Instant::now();
    let mut dump = whole::dump(&name, handle, latched, deadline).await?;
    dump.elapsed_us = start.elapsed().as_micros() as u64;
    Ok(Answer::Tasks(dump))
}
