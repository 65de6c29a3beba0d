//! Stand-in for `threads` where the signal handler cannot read registers.

use std::time::Instant;

use delouse_proto::{AgentError, ErrorKind, Response};

use crate::builder::Shared;

pub(crate) async fn dump(_shared: &Shared, _deadline: Instant) -> Response {
    Err(AgentError::new(
        ErrorKind::Unsupported,
        format!(
            "thread backtraces are supported on linux x86_64 and aarch64, not {}/{}",
            std::env::consts::OS,
            std::env::consts::ARCH
        ),
    ))
}
