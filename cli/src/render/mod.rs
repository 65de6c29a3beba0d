//! Turning fetched answers into text or JSON. Nothing here does I/O: every
//! function returns the whole output as a string, so that it is printed in
//! one piece (and tested as a snapshot).

pub mod ps;
pub mod tasks;

use std::io::IsTerminal;

use anstyle::Style;

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
    #[cfg(test)]
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
