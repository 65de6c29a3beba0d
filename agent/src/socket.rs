//! Choosing the socket directory, binding `<pid>.sock`, and putting the
//! socket back when a cleaner removed it.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use delouse_proto::location::{self, DirEnv};

use crate::sys;

/// A bound socket: its path and the inode it got, to notice replacement.
pub(crate) struct Bound {
    pub(crate) listener: UnixListener,
    pub(crate) path: PathBuf,
    pub(crate) ino: u64,
}

/// Binds `<pid>.sock` in the first usable directory: `explicit` (from
/// `Builder::socket_dir`) if given, else the rules of
/// `delouse_proto::location`.
pub(crate) fn bind(explicit: Option<&Path>) -> Result<Bound, String> {
    let uid = sys::euid();
    let mut dirs: Vec<PathBuf> = explicit.map(Path::to_owned).into_iter().collect();
    dirs.extend(location::candidate_dirs(
        uid,
        &DirEnv::current(),
        Path::new("/"),
    ));
    let name = location::socket_file_name(std::process::id());
    let mut tried = Vec::new();
    for dir in &dirs {
        match prepare_dir(dir, uid).and_then(|()| bind_at(&dir.join(&name))) {
            Ok(bound) => return Ok(bound),
            Err(why) => tried.push(format!("{}: {why}", dir.display())),
        }
    }
    Err(format!(
        "no usable socket directory ({}); set DELOUSE_SOCKET_DIR to a directory this user owns",
        tried.join("; ")
    ))
}

/// Binds at `path` again if the file there is gone or is not ours, making
/// its directory again when a cleaner removed that too.
pub(crate) fn rebind_if_replaced(bound: &Bound) -> Option<Bound> {
    match fs::symlink_metadata(&bound.path) {
        Ok(m) if m.ino() == bound.ino => None,
        _ => {
            let dir = bound.path.parent()?;
            prepare_dir(dir, sys::euid()).ok()?;
            bind_at(&bound.path).ok()
        }
    }
}

fn prepare_dir(dir: &Path, uid: u32) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| e.to_string())?;
    let meta = fs::metadata(dir).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Err("not a directory".into());
    }
    if meta.uid() != uid {
        return Err(format!("owned by uid {}, not {uid}", meta.uid()));
    }
    // Tighten only directories that are delouse's own; a directory named by
    // DELOUSE_SOCKET_DIR keeps the mode its owner gave it.
    let ours = dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "delouse" || n.starts_with("delouse-"));
    if ours && meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn bind_at(path: &Path) -> Result<Bound, String> {
    // A file at our own PID's name is left by an earlier process that had
    // this PID and was killed: it cannot be a live agent.
    if fs::symlink_metadata(path).is_ok() {
        fs::remove_file(path)
            .map_err(|e| format!("cannot remove stale {}: {e}", path.display()))?;
    }
    // Bound at its final path: a bind-then-rename confuses tmpfiles cleaners.
    let listener = UnixListener::bind(path).map_err(|e| e.to_string())?;
    let cleanup = |e: std::io::Error| {
        let _ = fs::remove_file(path);
        e.to_string()
    };
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(cleanup)?;
    listener.set_nonblocking(true).map_err(cleanup)?;
    let ino = fs::symlink_metadata(path).map_err(cleanup)?.ino();
    Ok(Bound {
        listener,
        path: path.to_owned(),
        ino,
    })
}
