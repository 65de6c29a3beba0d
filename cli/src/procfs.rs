//! What the CLI reads about a process from `/proc`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` times. `sysconf(_SC_CLK_TCK)`
/// is 100 on every Linux architecture delouse supports (x86, x86_64, aarch64,
/// s390x): the kernel's `USER_HZ` is fixed at 100 for them.
pub const CLK_TCK: u64 = 100;

/// `/proc/<pid>`.
pub fn dir(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}"))
}

/// `/proc/<pid>/root`: the process's `/`.
pub fn root(pid: u32) -> PathBuf {
    dir(pid).join("root")
}

/// Whether a process with this PID exists (in the caller's PID namespace).
pub fn exists(pid: u32) -> bool {
    std::fs::symlink_metadata(dir(pid)).is_ok()
}

/// The effective uid in the contents of a `/proc/<pid>/status` file: the
/// second number of its `Uid:` line.
pub fn parse_status_euid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line["Uid:".len()..].split_whitespace().nth(1)?.parse().ok()
}

/// The PID in the process's own (innermost) PID namespace: the last number
/// of the `NSpid:` line of a `/proc/<pid>/status` file. An agent in a
/// container names its socket with this PID.
pub fn parse_status_nspid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line["NSpid:".len()..]
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The PID of `pid` in its own PID namespace, when it can be read.
pub fn namespace_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(dir(pid).join("status")).ok()?;
    parse_status_nspid(&status)
}

/// The effective uid of `pid` (`"self"` works too).
pub fn effective_uid(pid: &str) -> io::Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_euid(&status)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Uid line in status"))
}

/// The effective uid of this process.
pub fn own_uid() -> u32 {
    effective_uid("self").unwrap_or(u32::MAX)
}

/// Field 22 (start time, in clock ticks since boot) of the contents of a
/// `/proc/<pid>/stat` file. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after the last `)`.
pub fn parse_stat_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts with field 3 (state); field 22 is the 20th after it.
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// The start time of `pid` in clock ticks since boot.
pub fn start_time(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(dir(pid).join("stat"))?;
    parse_stat_start_time(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed stat"))
}

/// The command name of `pid` (`/proc/<pid>/comm`).
pub fn comm(pid: u32) -> Option<String> {
    let s = std::fs::read_to_string(dir(pid).join("comm")).ok()?;
    Some(s.trim_end_matches('\n').to_owned())
}

/// The environment of `pid`, if this user may read it.
pub fn environ(pid: u32) -> Option<Vec<u8>> {
    std::fs::read(dir(pid).join("environ")).ok()
}

/// Where `/proc/<pid>/exe` points, without a ` (deleted)` suffix.
pub fn exe(pid: u32) -> Option<PathBuf> {
    let link = std::fs::read_link(dir(pid).join("exe")).ok()?;
    Some(strip_deleted(&link.to_string_lossy()).into())
}

/// `path` without the ` (deleted)` the kernel appends to replaced files.
pub fn strip_deleted(path: &str) -> &str {
    path.strip_suffix(" (deleted)").unwrap_or(path)
}

/// Seconds since boot (first number of `/proc/uptime`).
pub fn uptime() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/uptime").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// How long a process that started `start_ticks` after boot has been
/// running, given the current `uptime` in seconds.
pub fn running_for(start_ticks: u64, uptime: f64) -> Duration {
    let started = start_ticks as f64 / CLK_TCK as f64;
    Duration::from_secs_f64((uptime - started).max(0.0))
}

/// `path` if it exists, else the same path under `/proc/<pid>/root`.
pub fn reachable_path(pid: u32, path: &Path) -> PathBuf {
    if path.exists() {
        return path.to_owned();
    }
    let rerooted = delouse_proto::location::reroot(&root(pid), path);
    if rerooted.exists() {
        rerooted
    } else {
        path.to_owned()
    }
}

/// The address range of the `[vdso]` line of a `/proc/<pid>/maps` file.
pub fn parse_maps_vdso(maps: &str) -> Option<(u64, u64)> {
    let line = maps.lines().find(|l| l.trim_end().ends_with(" [vdso]"))?;
    let (start, end) = line.split_whitespace().next()?.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    (start < end).then_some((start, end))
}

/// Where this process's own vDSO is mapped.
pub fn own_vdso() -> Option<(u64, u64)> {
    parse_maps_vdso(&std::fs::read_to_string("/proc/self/maps").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_uid_is_the_effective_one() {
        let status = "Name:\tx\nUmask:\t0022\nUid:\t1000\t1001\t1002\t1003\nGid:\t5 5 5 5\n";
        assert_eq!(parse_status_euid(status), Some(1001));
        assert_eq!(parse_status_euid("Name: x\n"), None);
        assert_eq!(parse_status_euid("Uid:\t1000\n"), None);
    }

    #[test]
    fn namespace_pid_is_the_innermost() {
        assert_eq!(
            parse_status_nspid("Pid:\t900\nNSpid:\t900\t12\t1\n"),
            Some(1)
        );
        assert_eq!(parse_status_nspid("NSpid:\t77\n"), Some(77));
        assert_eq!(parse_status_nspid("Pid:\t77\n"), None);
        let me = std::process::id();
        assert!(namespace_pid(me).is_some());
    }

    #[test]
    fn stat_start_time_survives_odd_command_names() {
        let fields: Vec<String> = (3..=30).map(|i| i.to_string()).collect();
        let stat = format!("42 (a) b (c) {}\n", fields.join(" "));
        assert_eq!(parse_stat_start_time(&stat), Some(22));
        assert_eq!(parse_stat_start_time("42 (x) S 1 2"), None);
        assert_eq!(parse_stat_start_time("garbage"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        assert!(exists(me));
        assert!(start_time(me).unwrap() > 0);
        assert_eq!(effective_uid(&me.to_string()).unwrap(), own_uid());
        assert!(uptime().unwrap() > 0.0);
    }

    #[test]
    fn running_time() {
        assert_eq!(running_for(1000, 20.0), Duration::from_secs(10));
        assert_eq!(running_for(5000, 20.0), Duration::ZERO);
    }

    #[test]
    fn vdso_range() {
        let maps = "7f00-7f10 r-xp 00000000 08:01 12 /usr/lib/libc.so.6\n\
                    7ffd033ab000-7ffd033ad000 r-xp 00000000 00:00 0                          [vdso]\n";
        assert_eq!(
            parse_maps_vdso(maps),
            Some((0x7ffd_033a_b000, 0x7ffd_033a_d000))
        );
        assert_eq!(parse_maps_vdso("7f00-7f10 r-xp 0 0:0 0 /x [vdso]x\n"), None);
    }

    #[test]
    fn deleted_suffix() {
        assert_eq!(strip_deleted("/a/b (deleted)"), "/a/b");
        assert_eq!(strip_deleted("/a/b"), "/a/b");
    }
}
