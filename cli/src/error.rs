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

    /// An error the agent sent, with where it came from. Its message says
    /// what to do already ("…; try again"): nothing is added to it but the
    /// pid, when the message does not name it, and for an internal error
    /// that it is a bug.
    pub fn from_agent(err: &AgentError, pid: u32) -> Self {
        let exit = exit_for_kind(err.kind);
        let what = one_line(&err.message);
        let mut line = if names_pid(&what, pid) {
            what
        } else {
            format!("{what} (agent in pid {pid})")
        };
        if err.kind == ErrorKind::Internal {
            line.push_str(": this is a bug in the delouse agent; the target keeps running");
        }
        Self::new(exit, line)
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

/// Whether `text` names `pid N` (not merely a longer number).
fn names_pid(text: &str, pid: u32) -> bool {
    let needle = format!("pid {pid}");
    text.match_indices(&needle).any(|(i, _)| {
        !text[i + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// `s` as one line that is safe to print: line breaks, tabs and other
/// white space become one space; every other character that could drive a
/// terminal (ESC, C1 controls, bidirectional overrides) becomes a visible
/// escape such as `\u{1b}` (see [`crate::sanitize`]). Whatever an agent (or
/// garbage on a socket) sends prints as one inert line.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut last_space = false;
    for c in s.trim().chars() {
        if c.is_whitespace() {
            if !last_space {
                out.push(' ');
            }
            last_space = true;
            continue;
        }
        last_space = false;
        out.push_str(&crate::sanitize::escape(c.encode_utf8(&mut [0; 4])));
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
        assert_eq!(one_line(" a\nb\r\n\tc \x1b[31m "), "a b c \\u{1b}[31m");
        assert_eq!(
            one_line("x\u{9b}2J\u{202e}y\u{2028}z"),
            "x\\u{9b}2J\\u{202e}y z"
        );
        let e = CliError::error("x\ny");
        assert_eq!(e.line(), "delouse: error: x y");
    }

    #[test]
    fn agent_messages_keep_their_own_advice() {
        let busy = AgentError::new(
            ErrorKind::Busy,
            "agent of pid 4242 is busy with 8 clients; try again",
        );
        let e = CliError::from_agent(&busy, 4242);
        assert_eq!(
            e.message,
            "agent of pid 4242 is busy with 8 clients; try again"
        );
        assert_eq!(e.exit, Exit::Error);
        // In another pid namespace the agent names another pid: say which.
        let e = CliError::from_agent(&busy, 99);
        assert_eq!(
            e.message,
            "agent of pid 4242 is busy with 8 clients; try again (agent in pid 99)"
        );
        let e = CliError::from_agent(&busy, 424);
        assert!(e.message.ends_with("(agent in pid 424)"), "{}", e.message);
        for (kind, message) in [
            (
                ErrorKind::InProgress,
                "trace in progress: another client is tracing pid 7; try again when it is done",
            ),
            (
                ErrorKind::Timeout,
                "runtime 'main' did not run the dump in time: its thread is probably blocked",
            ),
        ] {
            let e = CliError::from_agent(&AgentError::new(kind, message), 7);
            assert_eq!(
                e.message.matches("try again").count(),
                message.matches("try again").count()
            );
            assert!(!e.message.contains("--timeout"), "{}", e.message);
            assert!(e.message.starts_with(message), "{}", e.message);
        }
        let e = CliError::from_agent(&AgentError::new(ErrorKind::Internal, "no memory"), 7);
        assert_eq!(
            e.message,
            "no memory (agent in pid 7): this is a bug in the delouse agent; the target keeps running"
        );
    }

    #[test]
    fn io_errors_lose_their_os_error_tail() {
        let e = io::Error::from_raw_os_error(13);
        assert_eq!(io_text(&e), "permission denied");
    }
}
