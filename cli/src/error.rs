//! Exit codes and the one error type every command returns.
//!
//! An error is printed as one lowercase line on stderr:
//! `delouse: error: <what failed>: <where>: <what to do>`. The message of a
//! [`CliError`] is everything after `delouse: error: `.

use std::fmt;
use std::io;

use delouse_proto::{AgentError, ErrorKind};

/// The failing exit statuses of `delouse` (DESIGN §10). 0 is success and 2
/// a usage error, which clap reports on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Something failed.
    Error = 1,
    /// No such process, no agent in it, or a stale socket.
    NoAgent = 3,
    /// The target or its socket may not be used by this user.
    PermissionDenied = 4,
    /// The target did not answer in time.
    Timeout = 5,
    /// The target's build cannot do this.
    Unsupported = 6,
}

impl Exit {
    /// The numeric status.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A failure with the exit status it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// The exit status.
    pub exit: Exit,
    /// One line: what failed, where, what to do.
    pub message: String,
}

impl CliError {
    /// An error with an explicit status.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        CliError {
            exit,
            message: message.into(),
        }
    }

    /// A generic failure (exit 1).
    pub fn error(message: impl Into<String>) -> Self {
        Self::new(Exit::Error, message)
    }

    /// No agent, no process, stale socket (exit 3).
    pub fn no_agent(message: impl Into<String>) -> Self {
        Self::new(Exit::NoAgent, message)
    }

    /// Permission denied (exit 4).
    pub fn permission(message: impl Into<String>) -> Self {
        Self::new(Exit::PermissionDenied, message)
    }

    /// Timed out (exit 5).
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(Exit::Timeout, message)
    }

    /// An error the agent sent, with where it came from.
    pub fn from_agent(err: &AgentError, pid: u32) -> Self {
        let exit = exit_for_kind(err.kind);
        let what = one_line(&err.message);
        let hint = match err.kind {
            ErrorKind::Busy => ": try again in a moment",
            ErrorKind::InProgress => ": wait for it to finish and try again",
            ErrorKind::Timeout => ": retry with a longer --timeout",
            ErrorKind::Internal => ": this is a bug in the delouse agent; the target keeps running",
            _ => "",
        };
        Self::new(exit, format!("{what} (agent in pid {pid}){hint}"))
    }

    /// The line printed on stderr.
    pub fn line(&self) -> String {
        format!("delouse: error: {}", one_line(&self.message))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// The exit status for an [`ErrorKind`] the agent reported.
pub fn exit_for_kind(kind: ErrorKind) -> Exit {
    match kind {
        ErrorKind::Timeout => Exit::Timeout,
        ErrorKind::Unsupported => Exit::Unsupported,
        ErrorKind::PermissionDenied => Exit::PermissionDenied,
        ErrorKind::BadRequest
        | ErrorKind::VersionMismatch
        | ErrorKind::Busy
        | ErrorKind::InProgress
        | ErrorKind::Refused
        | ErrorKind::Internal => Exit::Error,
    }
}

/// `s` with line breaks and control characters replaced, so that whatever
/// an agent (or garbage on a socket) sends prints as one line.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut last_space = false;
    for c in s.trim().chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        out.push(c);
    }
    out
}

/// Whether an I/O error means "nobody answered before the deadline".
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The lowercase text of an I/O error, without the "(os error N)" tail.
pub fn io_text(e: &io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => &s[..i],
        None => &s[..],
    };
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Result of a command.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_exit_codes() {
        assert_eq!(exit_for_kind(ErrorKind::Timeout).code(), 5);
        assert_eq!(exit_for_kind(ErrorKind::Unsupported).code(), 6);
        assert_eq!(exit_for_kind(ErrorKind::PermissionDenied).code(), 4);
        for k in [
            ErrorKind::Busy,
            ErrorKind::InProgress,
            ErrorKind::Refused,
            ErrorKind::BadRequest,
            ErrorKind::Internal,
            ErrorKind::VersionMismatch,
        ] {
            assert_eq!(exit_for_kind(k).code(), 1, "{k:?}");
        }
    }

    #[test]
    fn messages_become_one_line() {
        assert_eq!(one_line(" a\nb\r\n\tc \x1b[31m "), "a b c [31m");
        let e = CliError::error("x\ny");
        assert_eq!(e.line(), "delouse: error: x y");
    }

    #[test]
    fn io_errors_lose_their_os_error_tail() {
        let e = io::Error::from_raw_os_error(13);
        assert_eq!(io_text(&e), "permission denied");
    }
}
