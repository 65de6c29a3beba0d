//! Stand-in for `capture` and `whole` in builds where tokio cannot trace
//! tasks: traced futures poll normally, and trace and whole-runtime dump
//! requests get "unsupported" with what is missing.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::{Arc, Mutex};
use std::time::Instant;

use delouse_proto::{AgentError, ErrorKind, TaskDump};

use crate::registry::Slot;

pub(crate) fn poll_traced<F: Future>(
    inner: Pin<&mut F>,
    cx: &mut Context<'_>,
    _slot: &Slot,
    _epoch: u64,
) -> Poll<F::Output> {
    inner.poll(cx)
}

/// Why traces are unavailable in this build.
pub(crate) async fn probe() -> Result<(), String> {
    Err(missing())
}

fn missing() -> String {
    let platform_ok = cfg!(all(
        target_os = "linux",
        any(
            target_arch = "aarch64",
            target_arch = "x86",
            target_arch = "x86_64",
            target_arch = "s390x"
        )
    ));
    if !platform_ok {
        format!(
            "task traces are unsupported on {}/{}: tokio traces tasks only on linux \
             (x86, x86_64, aarch64, s390x)",
            std::env::consts::OS,
            std::env::consts::ARCH
        )
    } else {
        "task traces are unsupported by this build: tokio was compiled without \
         `--cfg tokio_unstable`; add `rustflags = [\"--cfg\", \"tokio_unstable\"]` under \
         `[build]` in the application's .cargo/config.toml and rebuild"
            .to_owned()
    }
}

/// Whole-runtime dumps need the same build support as traces.
pub(crate) async fn dump(
    _name: &str,
    _handle: tokio::runtime::Handle,
    _latched: Arc<Mutex<Option<String>>>,
    _deadline: Instant,
) -> Result<TaskDump, AgentError> {
    Err(AgentError::new(
        ErrorKind::Unsupported,
        missing().replacen("task traces are", "whole-runtime dumps are", 1),
    ))
}
