//! Asking a person before doing something that cannot be undone
//! (`tasks --whole-runtime`, `crash`): on a terminal only, and never by
//! default.

use std::io::{BufRead, IsTerminal, Write};

use crate::error::{CliError, Result};

/// What to ask, and what to say when it cannot be asked or is declined.
#[derive(Debug, Clone, Copy)]
pub struct Question<'a> {
    /// Printed on stderr before the question (may be empty).
    pub preamble: &'a str,
    /// The question, without the `[y/N]`.
    pub ask: &'a str,
    /// The error when stdin or stderr is not a terminal.
    pub no_terminal: &'a str,
    /// The error when the answer is not yes.
    pub declined: &'a str,
}

/// Whether both stdin and stderr are terminals, so that a question can be
/// asked and read.
pub fn can_ask() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Asks `q` on the terminal; anything but `y` or `yes` is a no. Without a
/// terminal nothing is asked and the answer is no.
pub fn confirm(q: &Question<'_>) -> Result<()> {
    if !can_ask() {
        return Err(CliError::error(q.no_terminal));
    }
    let mut err = std::io::stderr().lock();
    if !q.preamble.is_empty() {
        let _ = writeln!(err, "{}", q.preamble.trim_end());
    }
    let _ = write!(err, "{} [y/N] ", q.ask);
    let _ = err.flush();
    drop(err);
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        answer.clear();
    }
    if is_yes(&answer) {
        Ok(())
    } else {
        Err(CliError::error(q.declined))
    }
}

/// Whether a typed answer means yes.
fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yes_is_yes() {
        for yes in ["y\n", "Y", " yes \n", "YES"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yy", "sure", "y es"] {
            assert!(!is_yes(no), "{no:?}");
        }
    }
}
