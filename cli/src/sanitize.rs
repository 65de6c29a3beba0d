//! Text that came from a target (its agent's answers, the names and paths
//! in the ELF files it maps, its `/proc` entries) made safe to print: no
//! character of it may move the cursor, restyle the terminal, break a line
//! or a table cell, or reorder what is shown (bidirectional overrides).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as is: C0 and C1 control
/// characters (ESC, CR, LF, TAB, DEL, U+0080–U+009F …), bidirectional
/// overrides, isolates and marks, and the Unicode line and paragraph
/// separators.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every unsafe character written as a visible escape:
/// `\u{1b}`, `\u{9}`, `\u{202e}`.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A serialized JSON document with the unsafe characters `serde_json`
/// leaves as they are (it escapes only U+0000–U+001F) written as `\uXXXX`
/// escapes too: DEL, the C1 controls and the bidirectional controls. They
/// can only be inside strings, so the document means the same.
pub fn json(doc: String) -> String {
    if !doc.chars().any(is_unsafe) {
        return doc;
    }
    let mut out = String::with_capacity(doc.len() + 16);
    for c in doc.chars() {
        if is_unsafe(c) && c != '\n' {
            // Every unsafe character is in the Basic Multilingual Plane.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_characters_become_visible() {
        assert_eq!(escape("plain::name<T>"), "plain::name<T>");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(escape("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape("x\r\n\ty"), "x\\u{d}\\u{a}\\u{9}y");
        assert_eq!(escape("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escape("\u{7f}"), "\\u{7f}");
        assert_eq!(escape("evil\u{202e}txt.rs"), "evil\\u{202e}txt.rs");
        assert_eq!(escape("\u{2066}a\u{2069}"), "\\u{2066}a\\u{2069}");
        // Other text stays as it is.
        assert_eq!(escape("größe · 名前 → ok"), "größe · 名前 → ok");
    }

    #[test]
    fn json_keeps_its_meaning_without_raw_controls() {
        let name = "a\u{1b}b\u{7f}c\u{9b}d\u{202e}e\u{2028}f";
        let doc = serde_json::to_string(&serde_json::json!({ "name": name })).unwrap();
        // serde_json escapes C0 controls but not DEL, C1 or bidi controls.
        assert!(doc.contains("\\u001b"), "{doc}");
        assert!(doc.contains('\u{9b}') && doc.contains('\u{202e}'), "{doc}");
        let safe = json(doc + "\n");
        assert!(!safe.trim_end().chars().any(is_unsafe), "{safe:?}");
        assert!(safe.ends_with("}\n"), "{safe:?}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["name"], name);
    }
}
