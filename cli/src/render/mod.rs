//! Turning fetched answers into text or JSON. Nothing here does I/O: every
//! function returns the whole output as a string, so that it is printed in
//! one piece (and tested as a snapshot).

pub mod crash;
pub mod elf;
pub mod ps;
pub mod tasks;
pub mod threads;

use std::io::IsTerminal;
use std::path::Path;

use anstyle::Style;

use crate::paths;
use crate::sanitize::escape;
use crate::tree::Frame;

/// Whether and how to colour text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paint {
    /// Emit ANSI styles.
    pub color: bool,
}

impl Paint {
    /// Colour when stdout is a terminal and `NO_COLOR` is unset or empty.
    pub fn for_stdout() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Paint {
            color: !no_color && std::io::stdout().is_terminal(),
        }
    }

    /// No colour.
    pub fn plain() -> Self {
        Paint { color: false }
    }

    fn styled(&self, style: Style, s: &str) -> String {
        if self.color && !s.is_empty() {
            format!("{}{s}{}", style.render(), style.render_reset())
        } else {
            s.to_owned()
        }
    }

    /// Bold text.
    pub fn bold(&self, s: &str) -> String {
        self.styled(Style::new().bold(), s)
    }

    /// Dimmed text.
    pub fn dim(&self, s: &str) -> String {
        self.styled(Style::new().dimmed(), s)
    }

    /// Text in the warning colour.
    pub fn warn(&self, s: &str) -> String {
        self.styled(
            Style::new().fg_color(Some(anstyle::AnsiColor::Yellow.into())),
            s,
        )
    }
}

/// `file:line:column` of a frame, the file shortened and safe to print.
pub fn frame_location(f: &Frame, cwd: Option<&Path>) -> Option<String> {
    let file = escape(&paths::shorten(f.file.as_deref()?, cwd)).into_owned();
    Some(match (f.line, f.column) {
        (Some(l), Some(c)) if c > 0 => format!("{file}:{l}:{c}"),
        (Some(l), _) => format!("{file}:{l}"),
        _ => file,
    })
}

/// Whether a frame is the application's own code (by its source file).
pub fn is_app(f: &Frame) -> bool {
    f.file.as_deref().is_some_and(paths::is_app)
}

/// One frame: the function, where it is, whether it was inlined; the
/// application's frames bold, library frames dimmed. Names and paths come
/// from the target's files: they are printed with [`escape`].
pub fn frame_text(f: &Frame, paint: Paint, cwd: Option<&Path>) -> String {
    frame_text_as(f, is_app(f), paint, cwd)
}

/// [`frame_text`] for a frame known to be the application's or not.
pub fn frame_text_as(f: &Frame, app: bool, paint: Paint, cwd: Option<&Path>) -> String {
    let mut s = String::new();
    let function = escape(&f.function);
    s.push_str(&if app {
        paint.bold(&function)
    } else {
        paint.dim(&function)
    });
    if let Some(loc) = frame_location(f, cwd) {
        let at = format!(" at {loc}");
        s.push_str(&if app { at } else { paint.dim(&at) });
    }
    if f.inlined {
        s.push_str(&paint.dim(" [inlined]"));
    }
    s
}
