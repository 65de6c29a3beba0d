//! `Threads` requests: a backtrace of every OS thread.

use std::time::Instant;

use delouse_proto::{AgentError, ErrorKind, Response};

use crate::builder::Shared;

pub(crate) async fn dump(shared: &Shared, _deadline: Instant) -> Response {
    Err(AgentError::new(
        ErrorKind::Unsupported,
        format!(
            "thread backtraces are not available in agent {} of pid {} yet",
            env!("CARGO_PKG_VERSION"),
            shared.pid
        ),
    ))
}
