//! Tracing one task from inside its own poll, and the start-up probe that
//! checks this tokio supports it safely.
//!
//! Built only where tokio's `runtime::dump` exists: `--cfg tokio_unstable`,
//! the `taskdump` feature, Linux on x86, x86_64, aarch64 or s390x.

use std::ffi::c_void;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use tokio::runtime::dump::{Trace, TraceMeta, trace_with};

use crate::collect::{self, Outcome};
use crate::registry::Slot;

/// Frames kept per backtrace, from the leaf up.
const MAX_DEPTH: usize = 128;
/// Backtraces kept per task (one per tokio leaf it waits on, e.g. each arm
/// of a `join!`).
const MAX_LEAVES: usize = 256;

/// Stands between tokio's `Root` and the task's future. Without a frame of
/// its own here, the task's outermost `async fn` gets inlined into
/// `Root::poll`, where the walk stops, and vanishes from the trace.
struct Shim<'a, F>(Pin<&'a mut F>);

impl<F: Future> Future for Shim<'_, F> {
    type Output = F::Output;

    #[inline(never)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.0.as_mut().poll(cx)
    }
}

/// Polls `inner` once under tokio's tracing and records where it waits.
pub(crate) fn poll_traced<F: Future>(
    inner: Pin<&mut F>,
    cx: &mut Context<'_>,
    slot: &Slot,
    epoch: u64,
) -> Poll<F::Output> {
    let mut frames = Vec::new();
    let mut leaves = 0;
    let mut root = Trace::root(Shim(inner));
    let result = trace_with(
        || Pin::new(&mut root).poll(cx),
        |meta| {
            if leaves < MAX_LEAVES {
                leaves += 1;
                walk(meta, &mut frames);
                frames.push(0);
            }
        },
    );
    frames.shrink_to_fit();
    collect::settle(slot, epoch, Outcome::Traced(frames));
    if result.is_pending() {
        // tokio defers a wake of each leaf it stopped, but only when the poll
        // runs on a tokio scheduler; a future polled elsewhere (an executor
        // of another crate) would be stranded. One extra poll is cheap.
        cx.waker().wake_by_ref();
    }
    result
}

/// Appends the return addresses between tokio's leaf function and the trace
/// root to `frames`, innermost first. Only walks: the CLI symbolizes.
fn walk(meta: &TraceMeta, frames: &mut Vec<u64>) {
    let Some(root) = meta.root_addr else {
        return;
    };
    let start = frames.len();
    let mut above_leaf = false;
    backtrace::trace(|frame| {
        let function = frame.symbol_address() as *const c_void;
        if std::ptr::eq(function, root) {
            return false;
        }
        if above_leaf && !frame.ip().is_null() {
            frames.push(frame.ip() as u64);
        }
        if std::ptr::eq(function, meta.trace_leaf_addr) {
            above_leaf = true;
        }
        frames.len() - start < MAX_DEPTH
    });
}

struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Checks that this tokio wakes a leaf future it stopped while tracing.
///
/// Traced tasks rely on it: a leaf that returns `Pending` under tracing
/// before registering its waker is only polled again because tokio defers a
/// wake of it. tokio#8043 removed that wake and tokio#8434 shows tasks then
/// stranded for good, so the agent checks the behaviour itself rather than
/// trusting a version number. Must run inside a task on a tokio runtime.
pub(crate) async fn probe() -> Result<(), String> {
    let (_tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let mut cx = Context::from_waker(&waker);
    let mut leaves = 0;
    let polled = trace_with(|| Pin::new(&mut rx).poll(&mut cx), |_| leaves += 1);
    // The deferred wake fires once the scheduler regains control.
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    let wakes = counter.0.load(Ordering::SeqCst);
    match (polled.is_pending(), leaves, wakes) {
        (true, 1.., 1..) => Ok(()),
        (_, 0, _) => Err(
            "task traces are off: tokio's tracing did not stop at a leaf future in the start-up probe"
                .into(),
        ),
        _ => Err("task traces are off: this tokio does not wake a leaf future it stops while \
                  tracing, which strands traced tasks (tokio#8434); use tokio 1.54.1 or a \
                  release that restores the wake"
            .into()),
    }
}
