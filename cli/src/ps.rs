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

/// The socket files in `dirs`, as (pid, path), and warnings about
/// directories that could not be read.
fn socket_files(dirs: &[PathBuf]) -> (Vec<(u32, PathBuf)>, Vec<String>) {
    let mut files = Vec::new();
    let mut warnings = Vec::new();
    let mut seen = HashSet::new();
    for dir in dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                warnings.push(format!("cannot read {}: {}", dir.display(), io_text(&e)));
                continue;
            }
        };
        for entry in entries.flatten() {
            let Some(pid) = location::parse_socket_file_name(&entry.file_name()) else {
                continue;
            };
            let path = entry.path();
            if seen.insert(path.clone()) {
                files.push((pid, path));
            }
        }
    }
    files.sort();
    (files, warnings)
}

fn probe_all(files: &[(u32, PathBuf)]) -> Vec<Probe> {
    if files.len() <= 1 {
        return files
            .iter()
            .map(|(pid, path)| connect::probe(*pid, path, PROBE_TIMEOUT))
            .collect();
    }
    let threads = files.len().min(MAX_THREADS);
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|(pid, path)| connect::probe(*pid, path, PROBE_TIMEOUT))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(files.chunks(chunk))
            .flat_map(|(h, part)| {
                h.join().unwrap_or_else(|_| {
                    part.iter()
                        .map(|_| Probe::Unknown(crate::error::CliError::error("probe failed")))
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
    let mut dead = Vec::new();
    let mut foreign = 0usize;
    for ((pid, path), probe) in files.iter().zip(probes) {
        match probe {
            Probe::Live(welcome) => agents.push(Agent {
                pid: *pid,
                name: procfs::comm(*pid),
                uptime: uptime.map(|u| procfs::running_for(welcome.start_time, u)),
                socket: path.clone(),
                welcome: *welcome,
            }),
            Probe::Dead => dead.push(path.clone()),
            Probe::Foreign => foreign += 1,
            Probe::Gone => {}
            Probe::Unknown(e) => warnings.push(format!("pid {pid}: {}", e.message)),
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
        for path in &dead {
            if !matches!(
                connect::connect(path, PROBE_TIMEOUT),
                Err(connect::ConnectError::Refused)
            ) {
                continue;
            }
            match std::fs::remove_file(path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => out.warn(format!("cannot remove {}: {}", path.display(), io_text(&e))),
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

    #[test]
    fn finds_socket_files_and_skips_others() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["12.sock", "x.sock", "13.sock.tmp", "0.sock"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let missing = dir.path().join("missing");
        let (files, warnings) =
            socket_files(&[dir.path().to_owned(), missing, dir.path().to_owned()]);
        assert_eq!(files, vec![(12, dir.path().join("12.sock"))]);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn probes_tell_dead_from_gone() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join("1.sock");
        drop(UnixListener::bind(&dead).unwrap());
        let files = vec![(1, dead), (2, dir.path().join("2.sock"))];
        let probes = probe_all(&files);
        assert!(matches!(probes[0], Probe::Dead), "{:?}", probes[0]);
        assert!(matches!(probes[1], Probe::Gone), "{:?}", probes[1]);
    }
}
