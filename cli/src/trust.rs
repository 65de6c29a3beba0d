//! Which socket files may be an agent's. Run as root, the CLI must not talk
//! to a socket another user planted where the target's agent would be: a
//! socket is trusted only if it is a socket, owned by the target's uid, in
//! a directory owned by that uid too (its mode does not matter: a
//! `DELOUSE_SOCKET_DIR` keeps the mode its owner gave it).
//!
//! A directory is looked at through a descriptor of its own
//! ([`Dir::open`]), and its files through `/proc/self/fd/N/<name>`: what was
//! checked is what is connected to or removed, even if someone swaps the
//! directory's path for a symbolic link meanwhile.

use std::ffi::{OsStr, OsString};
use std::fs::{File, FileType, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open directory (an `O_PATH` descriptor: opening it reads nothing and
/// cannot block).
#[derive(Debug, Clone)]
pub struct Dir {
    fd: Arc<File>,
    path: PathBuf,
    owner: u32,
}

impl Dir {
    /// Opens the directory at `path` (following symbolic links: the
    /// directory they lead to is the one checked).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(path)?;
        let meta = file.metadata()?;
        if !meta.is_dir() {
            return Err(io::ErrorKind::NotADirectory.into());
        }
        Ok(Dir {
            fd: Arc::new(file),
            path: path.to_owned(),
            owner: meta.uid(),
        })
    }

    /// The path it was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The uid that owns it.
    pub fn owner(&self) -> u32 {
        self.owner
    }

    /// `/proc/self/fd/N`: this very directory.
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// `name` inside this very directory, as a short path.
    pub fn inner(&self, name: &OsStr) -> PathBuf {
        self.fd_path().join(name)
    }

    /// What keeps [`Dir::fd_path`] valid: hold it while a path made from it
    /// is in use on another thread.
    pub fn handle(&self) -> Arc<File> {
        self.fd.clone()
    }
}

/// A socket file as checked.
#[derive(Debug, Clone)]
pub struct Socket {
    /// Its directory.
    pub dir: Dir,
    /// Its name in the directory.
    pub name: OsString,
    /// Its path, for messages.
    pub path: PathBuf,
    /// The uid that owns it.
    pub owner: u32,
    /// Its inode, to notice a replacement.
    pub ino: u64,
}

impl Socket {
    /// The short path that reaches this file through its directory's
    /// descriptor.
    pub fn inner(&self) -> PathBuf {
        self.dir.inner(&self.name)
    }

    /// Whether the file at its name is still this socket.
    pub fn unchanged(&self) -> bool {
        std::fs::symlink_metadata(self.inner())
            .is_ok_and(|m| m.file_type().is_socket() && m.ino() == self.ino)
    }
}

/// Why a socket file was not taken.
#[derive(Debug)]
pub enum Refusal {
    /// No such file.
    Missing,
    /// This user may not look into the directory.
    Denied,
    /// The file is there but is not to be trusted: the text says why.
    Untrusted(String),
    /// Could not look.
    Io(io::Error),
}

/// `a regular file`, `a directory`.
pub fn kind(t: FileType) -> &'static str {
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a fifo"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn lstat(dir: &Dir, name: &OsStr) -> Result<Metadata, Refusal> {
    std::fs::symlink_metadata(dir.inner(name)).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Refusal::Missing,
        io::ErrorKind::PermissionDenied => Refusal::Denied,
        _ => Refusal::Io(e),
    })
}

/// The socket `name` in `dir`, whoever owns it; anything but a socket (a
/// regular file, a symbolic link, a fifo) is refused.
pub fn socket(dir: &Dir, name: &OsStr) -> Result<Socket, Refusal> {
    let path = dir.path().join(name);
    let meta = lstat(dir, name)?;
    if !meta.file_type().is_socket() {
        return Err(Refusal::Untrusted(format!(
            "{} is not a socket (it is {}): refusing to trust it",
            path.display(),
            kind(meta.file_type())
        )));
    }
    Ok(Socket {
        dir: dir.clone(),
        name: name.to_owned(),
        path,
        owner: meta.uid(),
        ino: meta.ino(),
    })
}

/// The socket `name` in `dir` if it may be the agent of a process of `uid`:
/// a socket owned by `uid` in a directory owned by `uid`.
pub fn check(dir: &Dir, name: &OsStr, uid: u32) -> Result<Socket, Refusal> {
    let socket = socket(dir, name)?;
    if socket.owner != uid {
        return Err(Refusal::Untrusted(format!(
            "{} is owned by uid {}, not the target's uid {uid}: refusing to trust it",
            socket.path.display(),
            socket.owner
        )));
    }
    if dir.owner() != uid {
        return Err(Refusal::Untrusted(format!(
            "socket directory {} is owned by uid {}, not the target's uid {uid}: refusing to trust {}",
            dir.path().display(),
            dir.owner(),
            socket.path.display()
        )));
    }
    Ok(socket)
}

/// The uid a socket directory's name is for: `…/delouse-<uid>` (in the
/// temporary directory), or `/run/user/<uid>/delouse`.
pub fn uid_of_dir(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    if let Some(uid) = name.strip_prefix("delouse-") {
        return uid.parse().ok();
    }
    if name != "delouse" {
        return None;
    }
    let parent = path.parent()?;
    if parent.parent()? != Path::new("/run/user") {
        return None;
    }
    parent.file_name()?.to_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn me() -> u32 {
        crate::procfs::own_uid()
    }

    #[test]
    fn sockets_of_the_uid_are_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let _l = UnixListener::bind(dir.path().join("5.sock")).unwrap();
        let d = Dir::open(dir.path()).unwrap();
        assert_eq!(d.owner(), me());
        let s = check(&d, OsStr::new("5.sock"), me()).unwrap();
        assert_eq!(s.path, dir.path().join("5.sock"));
        assert!(s.unchanged());
        assert!(s.inner().starts_with("/proc/self/fd/"));
        assert!(matches!(
            check(&d, OsStr::new("6.sock"), me()),
            Err(Refusal::Missing)
        ));
        // Someone else's uid: refused, naming the owner.
        let Err(Refusal::Untrusted(why)) = check(&d, OsStr::new("5.sock"), me() + 1) else {
            panic!()
        };
        assert!(
            why.contains(&format!(
                "5.sock is owned by uid {}, not the target's uid {}: refusing to trust it",
                me(),
                me() + 1
            )),
            "{why}"
        );
    }

    #[test]
    fn only_sockets_are_sockets() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("1.sock"), "").unwrap();
        std::fs::create_dir(dir.path().join("2.sock")).unwrap();
        std::os::unix::fs::symlink("/dev/null", dir.path().join("3.sock")).unwrap();
        let d = Dir::open(dir.path()).unwrap();
        for (name, what) in [
            ("1.sock", "a regular file"),
            ("2.sock", "a directory"),
            ("3.sock", "a symbolic link"),
        ] {
            let Err(Refusal::Untrusted(why)) = socket(&d, OsStr::new(name)) else {
                panic!("{name}")
            };
            assert!(
                why.contains(&format!("is not a socket (it is {what})")),
                "{why}"
            );
        }
        assert!(Dir::open(&dir.path().join("1.sock")).is_err());
        // A path that is a fifo opens as nothing, and does not block.
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        assert!(Dir::open(&fifo).is_err());
    }

    #[test]
    fn directory_names_carry_a_uid() {
        assert_eq!(uid_of_dir(Path::new("/tmp/delouse-1001")), Some(1001));
        assert_eq!(uid_of_dir(Path::new("/run/user/7/delouse")), Some(7));
        assert_eq!(uid_of_dir(Path::new("/srv/x/delouse")), None);
        assert_eq!(uid_of_dir(Path::new("/tmp/delouse-x")), None);
        assert_eq!(uid_of_dir(Path::new("/srv/sockets")), None);
    }
}
