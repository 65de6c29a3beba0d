//! `delouse ps`: every process with a delouse agent this user can reach.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use delouse_proto::location::{self, DirEnv};

use crate::Output;
use crate::connect::{self, Probe};
use crate::error::{Result, io_text};
use crate::procfs;
use crate::render::ps::{self as render, Agent};
use crate::trust::{self, Refusal};

/// How long one socket may take to connect and shake hands.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long to wait before checking again that a refused socket is dead.
const RECHECK_DELAY: Duration = Duration::from_millis(100);

/// Probing threads at most.
const MAX_THREADS: usize = 16;

/// Options of `delouse ps`.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// JSON instead of a table.
    pub json: bool,
    /// Remove stale socket files.
    pub clean: bool,
}

/// The directories to scan: every uid's when root, else this user's own.
pub fn scan_dirs() -> Vec<PathBuf> {
    let env = DirEnv::current();
    let uid = procfs::own_uid();
    if uid == 0 {
        location::all_uid_dirs(&env)
    } else {
        location::candidate_dirs(uid, &env, Path::new("/"))
    }
}

/// A socket file named for a pid, in one of the scanned directories.
#[derive(Debug)]
struct Found {
    /// The pid its name stands for.
    pid: u32,
    /// The socket, checked to be a socket owned by its directory's owner.
    socket: trust::Socket,
}

/// The socket files in `dirs`, by pid, and warnings about directories that
/// could not be read and files that are not trusted.
///
/// A file is kept only if it is a socket owned by the owner of its
/// directory, and a directory named for a uid (`<tmp>/delouse-<uid>`,
/// `/run/user/<uid>/delouse`) only if that uid owns it: anyone may create
/// `/tmp/delouse-<uid>` before that user's first agent does.
fn socket_files(dirs: &[PathBuf]) -> (Vec<Found>, Vec<String>) {
    let mut files = Vec::new();
    let mut warnings = Vec::new();
    let mut seen = HashSet::new();
    for path in dirs {
        let dir = match trust::Dir::open(path) {
            Ok(d) => d,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                continue;
            }
            Err(e) => {
                warnings.push(format!("cannot read {}: {}", path.display(), io_text(&e)));
                continue;
            }
        };
        if let Some(uid) = trust::uid_of_dir(path)
            && dir.owner() != uid
        {
            warnings.push(format!(
                "{} is owned by uid {}, not uid {uid}: its sockets are not trusted",
                path.display(),
                dir.owner()
            ));
            continue;
        }
        let entries = match std::fs::read_dir(dir.fd_path()) {
            Ok(e) => e,
            Err(e) => {
                warnings.push(format!("cannot read {}: {}", path.display(), io_text(&e)));
                continue;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = location::parse_socket_file_name(&name) else {
                continue;
            };
            let file = path.join(&name);
            if !seen.insert(file.clone()) {
                continue;
            }
            match trust::socket(&dir, &name) {
                Ok(socket) if socket.owner != dir.owner() => warnings.push(format!(
                    "{} is owned by uid {}, not uid {} who owns {}: ignored",
                    file.display(),
                    socket.owner,
                    dir.owner(),
                    path.display()
                )),
                Ok(socket) => files.push(Found { pid, socket }),
                Err(Refusal::Missing) => {}
                Err(Refusal::Untrusted(_)) => {
                    let what = std::fs::symlink_metadata(dir.inner(&name))
                        .map_or("not a socket", |m| trust::kind(m.file_type()));
                    warnings.push(format!(
                        "{} is not a socket (it is {what}): ignored",
                        file.display()
                    ));
                }
                Err(Refusal::Denied) => {
                    warnings.push(format!(
                        "cannot look at {}: permission denied",
                        file.display()
                    ));
                }
                Err(Refusal::Io(e)) => {
                    warnings.push(format!(
                        "cannot look at {}: {}",
                        file.display(),
                        io_text(&e)
                    ));
                }
            }
        }
    }
    files.sort_by(|a, b| (a.pid, &a.socket.path).cmp(&(b.pid, &b.socket.path)));
    (files, warnings)
}

/// Probes one socket file. One whose owner is not the owner of the process
/// now at its pid cannot be that process's agent: it is only connected to,
/// to tell a dead one (safe to remove) from one that something listens on,
/// and never shaken hands with.
fn probe_one(found: &Found) -> (Probe, Option<String>) {
    let socket = &found.socket;
    let pid = found.pid;
    match procfs::effective_uid(&pid.to_string()) {
        Ok(uid) if uid != socket.owner => {
            let probe = match connect::connect_to(socket, PROBE_TIMEOUT) {
                Err(connect::ConnectError::Refused) => return (Probe::Dead, None),
                Err(connect::ConnectError::NotFound) => return (Probe::Gone, None),
                _ => Probe::Foreign,
            };
            let why = format!(
                "{} is owned by uid {}, but pid {pid} runs as uid {uid}: not trusted as its agent",
                socket.path.display(),
                socket.owner
            );
            (probe, Some(why))
        }
        _ => (connect::probe(pid, socket, PROBE_TIMEOUT), None),
    }
}

fn probe_all(files: &[Found]) -> Vec<(Probe, Option<String>)> {
    if files.len() <= 1 {
        return files.iter().map(probe_one).collect();
    }
    let threads = files.len().min(MAX_THREADS);
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(probe_one).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .zip(files.chunks(chunk))
            .flat_map(|(h, part)| {
                h.join().unwrap_or_else(|_| {
                    part.iter()
                        .map(|_| {
                            (
                                Probe::Unknown(crate::error::CliError::error("probe failed")),
                                None,
                            )
                        })
                        .collect()
                })
            })
            .collect()
    })
}

/// Runs `delouse ps`.
pub fn run(opts: Options) -> Result<Output> {
    let dirs = scan_dirs();
    let (files, mut warnings) = socket_files(&dirs);
    let probes = probe_all(&files);
    let uptime = procfs::uptime();

    let mut agents = Vec::new();
    let mut dead: Vec<&trust::Socket> = Vec::new();
    let mut foreign = 0usize;
    let mut silent = 0usize;
    for (found, (probe, warning)) in files.iter().zip(probes) {
        let pid = found.pid;
        warnings.extend(warning);
        match probe {
            Probe::Live(welcome) => agents.push(Agent {
                pid,
                name: procfs::comm(pid),
                uptime: uptime.map(|u| procfs::running_for(welcome.start_time, u)),
                socket: found.socket.path.clone(),
                welcome: *welcome,
            }),
            Probe::Dead => dead.push(&found.socket),
            Probe::Foreign => foreign += 1,
            Probe::Gone => {}
            Probe::Unknown(e) => {
                silent += 1;
                warnings.push(format!("pid {pid}: {}", e.message));
            }
        }
    }

    let mut out = Output::default();
    for w in warnings {
        out.warn(w);
    }
    if opts.clean {
        // An agent binds, then listens: between the two a connect is refused
        // too. Look again a moment later before removing anything.
        if !dead.is_empty() {
            std::thread::sleep(RECHECK_DELAY);
        }
        let mut removed = 0;
        for socket in dead {
            // Only a socket still refusing connections, and still the very
            // socket probed (never a file, directory, fifo or symbolic link
            // put at its name since), is removed.
            if !matches!(
                connect::connect_to(socket, PROBE_TIMEOUT),
                Err(connect::ConnectError::Refused)
            ) || !socket.unchanged()
            {
                continue;
            }
            match std::fs::remove_file(socket.inner()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => out.warn(format!(
                    "cannot remove {}: {}",
                    socket.path.display(),
                    io_text(&e)
                )),
            }
        }
        if removed > 0 {
            out.info(format!(
                "removed {removed} stale socket{}",
                if removed == 1 { "" } else { "s" }
            ));
        }
        if foreign > 0 {
            out.info(format!(
                "kept {foreign} socket{} that answer{} for no process now at {} pid (another pid namespace, or a \
                 reused pid); remove by hand if you are sure",
                if foreign == 1 { "" } else { "s" },
                if foreign == 1 { "s" } else { "" },
                if foreign == 1 { "its" } else { "their" },
            ));
        }
    } else {
        let stale = dead.len() + foreign;
        if stale > 0 {
            out.info(format!(
                "{stale} stale socket{} ignored (run `delouse ps --clean` to remove {})",
                if stale == 1 { "" } else { "s" },
                if stale == 1 { "it" } else { "them" }
            ));
        }
    }

    if opts.json {
        out.stdout = render::json(&agents);
    } else if agents.is_empty() && silent > 0 {
        out.info(format!(
            "no agent answered: {silent} did not (see above; looked in {})",
            connect::list_paths(&dirs)
        ));
    } else if agents.is_empty() {
        out.info(format!(
            "no processes with a delouse agent found (looked in {})",
            connect::list_paths(&dirs)
        ));
    } else {
        out.stdout = render::table(&agents);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn paths(files: &[Found]) -> Vec<(u32, PathBuf)> {
        files
            .iter()
            .map(|f| (f.pid, f.socket.path.clone()))
            .collect()
    }

    #[test]
    fn finds_socket_files_and_skips_others() {
        let dir = tempfile::tempdir().unwrap();
        let _listeners: Vec<UnixListener> = ["12.sock", "x.sock", "13.sock.tmp", "0.sock"]
            .iter()
            .map(|name| UnixListener::bind(dir.path().join(name)).unwrap())
            .collect();
        let missing = dir.path().join("missing");
        let (files, warnings) =
            socket_files(&[dir.path().to_owned(), missing, dir.path().to_owned()]);
        assert_eq!(paths(&files), vec![(12, dir.path().join("12.sock"))]);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn files_that_are_not_sockets_are_ignored_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("21.sock"), "").unwrap();
        std::fs::create_dir(dir.path().join("22.sock")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("23.sock")).unwrap();
        let (files, warnings) = socket_files(&[dir.path().to_owned()]);
        assert!(files.is_empty(), "{files:?}");
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        for w in ["a regular file", "a directory", "a symbolic link"] {
            assert!(
                warnings
                    .iter()
                    .any(|x| x.contains(&format!("is not a socket (it is {w}): ignored"))),
                "{w}: {warnings:?}"
            );
        }
    }

    #[test]
    fn a_directory_named_for_another_uid_is_not_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        let other = procfs::own_uid().wrapping_add(1);
        let dir = tmp.path().join(format!("delouse-{other}"));
        std::fs::create_dir(&dir).unwrap();
        let _l = UnixListener::bind(dir.join("12.sock")).unwrap();
        let (files, warnings) = socket_files(std::slice::from_ref(&dir));
        assert!(files.is_empty(), "{files:?}");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains(&format!(
                "is owned by uid {}, not uid {other}",
                procfs::own_uid()
            )),
            "{warnings:?}"
        );
    }

    #[test]
    fn probes_tell_dead_from_gone() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join("1.sock");
        let gone = dir.path().join("2.sock");
        drop(UnixListener::bind(&dead).unwrap());
        let keep = UnixListener::bind(&gone).unwrap();
        let (files, _) = socket_files(&[dir.path().to_owned()]);
        drop(keep);
        std::fs::remove_file(&gone).unwrap();
        let probes = probe_all(&files);
        assert!(matches!(probes[0].0, Probe::Dead), "{:?}", probes[0]);
        assert!(matches!(probes[1].0, Probe::Gone), "{:?}", probes[1]);
    }
}
