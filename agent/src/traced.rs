//! `delouse::spawn` and `.traced()` (stub: pass-through for now).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    /// A future that traces itself when the agent asks.
    pub struct Traced<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future> Future for Traced<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

/// Wraps any future so that it traces itself.
pub trait TracedExt: Future + Sized {
    /// Wraps `self`.
    #[track_caller]
    fn traced(self) -> Traced<Self> {
        Traced { inner: self }
    }
}

impl<F: Future> TracedExt for F {}

/// A drop-in for `tokio::spawn`.
#[track_caller]
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future.traced())
}
