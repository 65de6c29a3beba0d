//! What addresses of a file resolved to, kept on disk between runs, one
//! cache file per build id: reading, decompressing and indexing debug info
//! is most of the time `delouse` takes (libc's compressed debug file alone
//! tens of milliseconds), and the same few addresses of libc and of a
//! program come back in every dump.
//!
//! A build id names the exact code of a file, so what an offset resolved to
//! can only gain detail later (a debug file installed): results are kept
//! only when the file's debug info was found, so those resolved from the
//! symbol table alone are looked up again next time. The cache is an
//! optimization and nothing more: any error reading or writing it is
//! ignored.
//!
//! Where: `$DELOUSE_CACHE_DIR` (empty or relative: no cache), else
//! `$XDG_CACHE_HOME/delouse/symbols`, else `~/.cache/delouse/symbols`, those
//! two only where the part of the path that exists is the caller's.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::tree::Frame;

/// Entries kept per file; past it the cache of that file starts over.
const MAX_ENTRIES: usize = 50_000;
/// Cache files kept; the least recently written go first.
const MAX_FILES: usize = 200;
/// A cache file larger than this is not read.
const MAX_BYTES: u64 = 64 << 20;
/// What a cache file's name ends with; bumped when the format changes.
const SUFFIX: &str = ".sym1";

#[derive(Serialize, Deserialize)]
struct Stored {
    /// The CLI build that wrote it ([`writer`]): another may symbolize or
    /// post-process differently, so its entries are not used.
    version: String,
    entries: Vec<(u64, Vec<Frame>)>,
}

/// The cache of one file.
#[derive(Debug, Default)]
pub struct Cache {
    /// The cache file; `None` when there is no cache for this file.
    path: Option<PathBuf>,
    entries: HashMap<u64, Vec<Frame>>,
    changed: bool,
}

/// The CLI build: its version and, when it has one, its own build id (a
/// rebuild from changed sources keeps the version).
fn writer() -> &'static str {
    static WRITER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    WRITER.get_or_init(|| {
        let id = blazesym::helper::read_elf_build_id("/proc/self/exe")
            .ok()
            .flatten()
            .map(|id| id.iter().map(|b| format!("{b:02x}")).collect::<String>())
            .unwrap_or_default();
        format!("{} {id}", env!("CARGO_PKG_VERSION"))
    })
}

/// The cache directory, if there is one (never in unit tests: they do not
/// touch the user's cache).
pub fn dir() -> Option<PathBuf> {
    if cfg!(test) {
        return None;
    }
    let explicit = std::env::var_os("DELOUSE_CACHE_DIR");
    let chosen = explicit.is_some();
    let dir = dir_from(
        explicit,
        std::env::var_os("XDG_CACHE_HOME"),
        std::env::var_os("HOME"),
    )?;
    // Root with a user's HOME (`sudo -E`) would make root-owned directories
    // in the user's home that the user's own runs then cannot write: a
    // cache found from HOME is used only where it, or the part of its path
    // that exists, is ours.
    (chosen || ours_so_far(&dir)).then_some(dir)
}

/// Whether the first part of `path` that exists is owned by this process's
/// user.
fn ours_so_far(path: &Path) -> bool {
    path.ancestors()
        .find_map(|p| std::fs::symlink_metadata(p).ok())
        .is_some_and(|m| m.uid() == crate::procfs::own_uid())
}

fn dir_from(
    explicit: Option<std::ffi::OsString>,
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    if let Some(dir) = explicit {
        return absolute(dir);
    }
    if let Some(xdg) = xdg.and_then(absolute) {
        return Some(xdg.join("delouse/symbols"));
    }
    Some(home.and_then(absolute)?.join(".cache/delouse/symbols"))
}

impl Cache {
    /// The cache in `dir` of the ELF file at `file` (opened already), by
    /// its build id; an empty one without a build id or a directory.
    pub fn open(dir: Option<&Path>, file: &Path) -> Cache {
        let (Some(dir), Ok(Some(id))) = (dir, blazesym::helper::read_elf_build_id(file)) else {
            return Cache::default();
        };
        if id.is_empty() {
            return Cache::default();
        }
        let name: String = id.iter().map(|b| format!("{b:02x}")).collect();
        Cache::load(dir.join(name + SUFFIX))
    }

    fn load(path: PathBuf) -> Cache {
        // Only a regular file of our own: in a shared directory another
        // user could plant one that names functions wrongly.
        let entries = std::fs::symlink_metadata(&path)
            .ok()
            .filter(|m| m.is_file() && m.len() <= MAX_BYTES && m.uid() == crate::procfs::own_uid())
            .and_then(|_| std::fs::read(&path).ok())
            .and_then(|bytes| postcard::from_bytes::<Stored>(&bytes).ok())
            .filter(|s| s.version == writer())
            .map(|s| s.entries.into_iter().collect())
            .unwrap_or_default();
        Cache {
            path: Some(path),
            entries,
            changed: false,
        }
    }

    /// The frames `offset` resolved to before.
    pub fn get(&self, offset: u64) -> Option<&Vec<Frame>> {
        self.entries.get(&offset)
    }

    /// Keeps what `offset` resolved to.
    pub fn insert(&mut self, offset: u64, frames: &[Frame]) {
        if self.path.is_none() || frames.is_empty() {
            return;
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(offset, frames.to_vec());
        self.changed = true;
    }

    /// Writes the cache back if it gained entries: to a temporary file
    /// renamed over the old one, so that a reader never sees half a file.
    pub fn save(self) {
        let Some(path) = self.path.filter(|_| self.changed) else {
            return;
        };
        let Some(dir) = path.parent() else { return };
        if std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .is_err()
        {
            return;
        }
        let mut entries: Vec<(u64, Vec<Frame>)> = self.entries.into_iter().collect();
        entries.sort_unstable_by_key(|e| e.0);
        let stored = Stored {
            version: writer().to_owned(),
            entries,
        };
        let Ok(bytes) = postcard::to_stdvec(&stored) else {
            return;
        };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        // A new file, never one (or a link) already there.
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&bytes));
        if written.is_err() || std::fs::rename(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        prune(dir);
    }
}

/// Removes the least recently written cache files past [`MAX_FILES`].
fn prune(dir: &Path) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = read
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(SUFFIX))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() <= MAX_FILES {
        return;
    }
    files.sort();
    for (_, path) in &files[..files.len() - MAX_FILES] {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(line: Option<u32>) -> Frame {
        Frame {
            function: "f".into(),
            file: line.map(|_| "/src/f.rs".into()),
            line,
            column: None,
            inlined: false,
        }
    }

    #[test]
    fn where_the_cache_lives() {
        let os = |s: &str| Some(std::ffi::OsString::from(s));
        assert_eq!(dir_from(os("/c"), os("/x"), os("/h")), Some("/c".into()));
        assert_eq!(dir_from(os(""), os("/x"), os("/h")), None, "empty: off");
        assert_eq!(
            dir_from(None, os("/x"), os("/h")),
            Some("/x/delouse/symbols".into())
        );
        assert_eq!(
            dir_from(None, os("rel"), os("/h")),
            Some("/h/.cache/delouse/symbols".into()),
            "a relative XDG_CACHE_HOME is ignored"
        );
        assert_eq!(dir_from(None, None, None), None);
    }

    #[test]
    fn entries_survive_a_save_and_garbage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/ab".to_owned() + SUFFIX);
        let mut c = Cache::load(path.clone());
        c.insert(0x10, &[frame(Some(3)), frame(Some(4))]);
        c.insert(0x20, &[frame(None)]);
        c.insert(0x30, &[]);
        c.save();
        let c = Cache::load(path.clone());
        assert_eq!(c.get(0x10).map(Vec::len), Some(2));
        assert_eq!(c.get(0x20).map(Vec::len), Some(1));
        assert!(c.get(0x30).is_none());

        std::fs::write(&path, b"\xff\xff garbage").unwrap();
        assert!(Cache::load(path.clone()).entries.is_empty());
        let mut other = Stored {
            version: "0.0.0-other".into(),
            entries: vec![(0x10, vec![frame(Some(1))])],
        };
        std::fs::write(&path, postcard::to_stdvec(&other).unwrap()).unwrap();
        assert!(
            Cache::load(path.clone()).entries.is_empty(),
            "another version's entries are not used"
        );
        other.version = writer().into();
        std::fs::write(&path, postcard::to_stdvec(&other).unwrap()).unwrap();
        assert_eq!(Cache::load(path).get(0x10).unwrap()[0].line, Some(1));
    }

    #[test]
    fn only_our_own_paths_count() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ours_so_far(&dir.path().join("a/b/c")), "made by us");
        // `/` is root's: ours only when we are root.
        assert_eq!(
            ours_so_far(Path::new("/nonexistent-delouse/x")),
            crate::procfs::own_uid() == 0
        );
    }

    #[test]
    fn old_files_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..MAX_FILES + 3 {
            std::fs::write(dir.path().join(format!("{i}{SUFFIX}")), b"").unwrap();
        }
        std::fs::write(dir.path().join("other"), b"").unwrap();
        prune(dir.path());
        let left = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(left, MAX_FILES + 1, "other files stay");
    }
}
