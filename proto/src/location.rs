//! Where an agent's socket lives. The agent and the CLI compute the same
//! ordered list of directories from the same inputs, so the CLI finds the
//! socket the agent chose.
//!
//! For a process of uid `U`, in order:
//!
//! 1. `$DELOUSE_SOCKET_DIR`, if set and not empty;
//! 2. `$XDG_RUNTIME_DIR/delouse`, if `$XDG_RUNTIME_DIR` is owned by `U`;
//! 3. `/run/user/U/delouse`, if `/run/user/U` exists and is owned by `U`;
//! 4. `$TMPDIR/delouse-U` (`/tmp/delouse-U` without `TMPDIR`).
//!
//! The agent uses the first it can create (mode 0700) that is owned by `U`,
//! and binds `<pid>.sock` there. The CLI reads the target's environment from
//! `/proc/<pid>/environ` when it may, so both sides see the same variables.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Environment variable that overrides the socket directory.
pub const SOCKET_DIR_ENV: &str = "DELOUSE_SOCKET_DIR";

/// The environment variables the directory rules read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirEnv {
    /// `DELOUSE_SOCKET_DIR`.
    pub socket_dir: Option<OsString>,
    /// `XDG_RUNTIME_DIR`.
    pub xdg_runtime_dir: Option<OsString>,
    /// `TMPDIR`.
    pub tmpdir: Option<OsString>,
}

impl DirEnv {
    /// The variables of the current process.
    pub fn current() -> Self {
        DirEnv {
            socket_dir: std::env::var_os(SOCKET_DIR_ENV),
            xdg_runtime_dir: std::env::var_os("XDG_RUNTIME_DIR"),
            tmpdir: std::env::var_os("TMPDIR"),
        }
    }

    /// The variables found in the contents of a `/proc/<pid>/environ` file
    /// (NUL-separated `KEY=value` entries).
    pub fn from_environ(environ: &[u8]) -> Self {
        let mut env = DirEnv::default();
        for entry in environ.split(|&b| b == 0) {
            let Some(eq) = entry.iter().position(|&b| b == b'=') else {
                continue;
            };
            let value = Some(OsStr::from_bytes(&entry[eq + 1..]).to_owned());
            match &entry[..eq] {
                b"DELOUSE_SOCKET_DIR" => env.socket_dir = value,
                b"XDG_RUNTIME_DIR" => env.xdg_runtime_dir = value,
                b"TMPDIR" => env.tmpdir = value,
                _ => {}
            }
        }
        env
    }
}

fn non_empty(v: &Option<OsString>) -> Option<&OsString> {
    v.as_ref().filter(|v| !v.is_empty())
}

fn owned_by(path: &Path, uid: u32) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_dir() && m.uid() == uid)
}

/// The temporary directory the rules use: `$TMPDIR`, else `/tmp`.
pub fn tmp_dir(env: &DirEnv) -> PathBuf {
    non_empty(&env.tmpdir).map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
}

/// The ordered candidate socket directories for a process of `uid` with
/// environment `env`. Ownership of `XDG_RUNTIME_DIR` and `/run/user/<uid>`
/// is checked on the file system, as seen from the caller (`root` is where
/// the target's `/` is, e.g. `/proc/<pid>/root`, or `/`).
pub fn candidate_dirs(uid: u32, env: &DirEnv, root: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = non_empty(&env.socket_dir) {
        dirs.push(PathBuf::from(dir));
    }
    if let Some(xdg) = non_empty(&env.xdg_runtime_dir) {
        let xdg = PathBuf::from(xdg);
        if owned_by(&reroot(root, &xdg), uid) {
            dirs.push(xdg.join("delouse"));
        }
    }
    let run_user = PathBuf::from(format!("/run/user/{uid}"));
    if owned_by(&reroot(root, &run_user), uid) {
        dirs.push(run_user.join("delouse"));
    }
    dirs.push(tmp_dir(env).join(format!("delouse-{uid}")));
    dirs.dedup();
    dirs
}

/// `path` (absolute, as a process with root directory `root` sees it) as
/// seen from the caller.
pub fn reroot(root: &Path, path: &Path) -> PathBuf {
    if root == Path::new("/") {
        return path.to_owned();
    }
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// The socket file name of `pid`: `<pid>.sock`.
pub fn socket_file_name(pid: u32) -> String {
    format!("{pid}.sock")
}

/// The PID a socket file name stands for, if it is one.
pub fn parse_socket_file_name(name: &OsStr) -> Option<u32> {
    let name = name.to_str()?;
    let pid = name.strip_suffix(".sock")?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok().filter(|&p| p > 0)
}

/// Directories that may hold sockets of any uid, for a scan run as root:
/// `/run/user/*/delouse` and `<tmp>/delouse-*`, plus `$DELOUSE_SOCKET_DIR`.
pub fn all_uid_dirs(env: &DirEnv) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = non_empty(&env.socket_dir) {
        dirs.push(PathBuf::from(dir));
    }
    if let Some(xdg) = non_empty(&env.xdg_runtime_dir) {
        dirs.push(PathBuf::from(xdg).join("delouse"));
    }
    if let Ok(entries) = std::fs::read_dir("/run/user") {
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path().join("delouse"))
            .filter(|p| p.is_dir())
            .collect();
        found.sort();
        dirs.extend(found);
    }
    let tmp = tmp_dir(env);
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("delouse-"))
                    .is_some_and(|uid| uid.parse::<u32>().is_ok())
            })
            .map(|e| e.path())
            .collect();
        found.sort();
        dirs.extend(found);
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(socket: Option<&str>, xdg: Option<&str>, tmp: Option<&str>) -> DirEnv {
        DirEnv {
            socket_dir: socket.map(Into::into),
            xdg_runtime_dir: xdg.map(Into::into),
            tmpdir: tmp.map(Into::into),
        }
    }

    #[test]
    fn override_comes_first_and_tmp_last() {
        let dirs = candidate_dirs(4242, &env(Some("/x"), None, Some("/t")), Path::new("/"));
        assert_eq!(dirs.first().unwrap(), Path::new("/x"));
        assert_eq!(dirs.last().unwrap(), Path::new("/t/delouse-4242"));
    }

    #[test]
    fn empty_variables_are_ignored() {
        let dirs = candidate_dirs(4242, &env(Some(""), Some(""), Some("")), Path::new("/"));
        assert_eq!(dirs, vec![PathBuf::from("/tmp/delouse-4242")]);
    }

    #[test]
    fn xdg_dir_of_another_uid_is_skipped() {
        let tmp = std::env::temp_dir();
        // The temp dir is not owned by uid 4242 (nobody owns it under that id).
        let dirs = candidate_dirs(4242, &env(None, tmp.to_str(), None), Path::new("/"));
        assert!(!dirs.contains(&tmp.join("delouse")), "{dirs:?}");
    }

    #[test]
    fn environ_parsing() {
        let e = DirEnv::from_environ(
            b"A=1\0TMPDIR=/t\0XDG_RUNTIME_DIR=/r=x\0DELOUSE_SOCKET_DIR=\0junk\0",
        );
        assert_eq!(e, env(Some(""), Some("/r=x"), Some("/t")));
    }

    #[test]
    fn socket_names() {
        assert_eq!(socket_file_name(17), "17.sock");
        assert_eq!(parse_socket_file_name(OsStr::new("17.sock")), Some(17));
        for bad in [
            "0.sock",
            ".sock",
            "17",
            "x17.sock",
            "+1.sock",
            "17.sock.tmp",
        ] {
            assert_eq!(parse_socket_file_name(OsStr::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn reroot_joins_under_proc_root() {
        assert_eq!(
            reroot(Path::new("/proc/9/root"), Path::new("/run/x")),
            Path::new("/proc/9/root/run/x")
        );
        assert_eq!(
            reroot(Path::new("/"), Path::new("/run/x")),
            Path::new("/run/x")
        );
    }
}
