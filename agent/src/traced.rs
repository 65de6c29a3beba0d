//! `delouse::spawn` and `.traced()`: futures that trace themselves when the
//! agent asks, without stopping anything.

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use crate::collect::{self, EPOCH};
use crate::registry::{Slot, SlotKey, registry};
use crate::{capture, sys};

pin_project_lite::pin_project! {
    /// A future that traces itself when the agent asks: made by
    /// [`spawn`] or [`TracedExt::traced`].
    ///
    /// While no trace is asked for, polling it costs one relaxed load and a
    /// few relaxed stores beyond polling the inner future. When a trace is
    /// asked for, the agent wakes the task; its next poll runs the inner
    /// future once under tokio's task tracing (`tokio::runtime::dump`),
    /// where tokio's leaf futures record where they wait, return `Pending`
    /// and schedule their own wake-up, so the future loses no readiness.
    ///
    /// The future is registered with the agent from the end of its first
    /// poll (a future that completes in its first poll never is) until it
    /// is dropped, with its creation site, creation time and poll count.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct Traced<F> {
        #[pin]
        inner: F,
        location: &'static Location<'static>,
        created_ns: u64,
        // Registered after the first poll, by the polling thread: it is
        // usually the one that drops the task, so both touch one shard.
        registered: Option<(Arc<Slot>, SlotKey)>,
        seen_epoch: u64,
    }

    impl<F> PinnedDrop for Traced<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some((slot, key)) = this.registered.take() {
                registry().remove(&key);
                collect::settle_dropped(&slot);
            }
        }
    }
}

impl<F> Traced<F> {
    fn new(inner: F, location: &'static Location<'static>) -> Self {
        Traced {
            inner,
            location,
            created_ns: sys::coarse_now_ns(),
            registered: None,
            seen_epoch: EPOCH.load(Ordering::Relaxed),
        }
    }
}

impl<F: Future> Future for Traced<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let now = sys::coarse_now_ns();
        let Some((slot, _)) = this.registered.as_ref() else {
            // A task that finishes in its first poll never waits anywhere
            // worth tracing: it is registered only once it returns Pending.
            let poll = this.inner.poll(cx);
            if poll.is_pending() {
                let (slot, key) = registry().insert(this.location, *this.created_ns);
                if let Some(id) = tokio::task::try_id() {
                    let _ = slot.id.set(id);
                }
                slot.polls.store(1, Ordering::Relaxed);
                slot.last_poll_ns.store(now, Ordering::Relaxed);
                slot.waker.register(cx.waker());
                *this.seen_epoch = EPOCH.load(Ordering::Acquire);
                *this.registered = Some((slot, key));
            }
            return poll;
        };

        // Only this thread writes `polls`: polls of one future never overlap.
        let polls = slot.polls.load(Ordering::Relaxed);
        slot.polls.store(polls + 1, Ordering::Relaxed);
        slot.last_poll_ns.store(now, Ordering::Relaxed);
        slot.waker.register(cx.waker());

        let epoch = EPOCH.load(Ordering::Acquire);
        if epoch != *this.seen_epoch {
            *this.seen_epoch = epoch;
            if slot.pending.load(Ordering::Acquire) == epoch {
                return capture::poll_traced(this.inner, cx, slot, epoch);
            }
        }
        this.inner.poll(cx)
    }
}

/// Wraps any future so that it traces itself when asked; see [`Traced`].
///
/// Use it where [`spawn`] does not fit: `JoinSet::spawn`, `spawn_local`,
/// `tokio::task::Builder`, `FuturesUnordered`, or a runtime's own
/// `Handle::spawn`:
///
/// ```
/// use delouse::TracedExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut set = tokio::task::JoinSet::new();
/// set.spawn(async { 1 + 1 }.traced());
/// assert_eq!(set.join_next().await.unwrap().unwrap(), 2);
/// # }
/// ```
pub trait TracedExt: Future + Sized {
    /// Wraps `self`; the call site is recorded as where the task was spawned.
    #[track_caller]
    fn traced(self) -> Traced<Self> {
        Traced::new(self, Location::caller())
    }
}

impl<F: Future> TracedExt for F {}

/// A drop-in for [`tokio::spawn`] whose task traces itself when the agent
/// asks (`delouse tasks <pid>`).
///
/// The task is registered with the agent with the caller's location as its
/// spawn site.
///
/// # Panics
///
/// Like [`tokio::spawn`], when called outside a tokio runtime.
#[track_caller]
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(Traced::new(future, Location::caller()))
}
