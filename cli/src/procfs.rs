//! What the CLI reads about a process from `/proc`.

use std::io;
use std::path::PathBuf;
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

/// Field 3 (the state: `R`, `S`, `Z` …) of the contents of a
/// `/proc/<pid>/stat` file.
pub fn parse_stat_state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Field 52 (`exit_code`) of the contents of a `/proc/<pid>/stat` file:
/// for a zombie, the wait status its parent will reap (signal number in
/// the low 7 bits, 0x80 when a core was dumped, else the exit code << 8).
/// The kernel shows 0 to a reader that may not ptrace the process.
pub fn parse_stat_exit_code(stat: &str) -> Option<i32> {
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(52 - 3)?
        .parse()
        .ok()
}

/// The real uid and gid in the contents of a `/proc/<pid>/status` file:
/// the first numbers of its `Uid:` and `Gid:` lines.
pub fn parse_status_real_ids(status: &str) -> Option<(u32, u32)> {
    let first = |key: &str| -> Option<u32> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].split_whitespace().next()?.parse().ok()
    };
    Some((first("Uid:")?, first("Gid:")?))
}

/// The state and start time of `pid`.
pub fn state_and_start_time(pid: u32) -> io::Result<(char, u64)> {
    let stat = std::fs::read_to_string(dir(pid).join("stat"))?;
    parse_stat_state(&stat)
        .zip(parse_stat_start_time(&stat))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed stat"))
}

/// The thread group (process) id in the contents of a `/proc/<pid>/status`
/// file: the `Tgid:` line. It differs from the pid asked for when that is
/// a thread other than a process's first one.
pub fn parse_status_tgid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Tgid:"))?;
    line["Tgid:".len()..].trim().parse().ok()
}

/// The process `pid` is a thread of, when that is another process.
pub fn thread_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(dir(pid).join("status")).ok()?;
    parse_status_tgid(&status).filter(|&tgid| tgid != pid)
}

/// One line of a `/proc/<pid>/maps` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// The permissions, such as `r-xp`.
    pub perms: String,
    /// The file offset of `start`.
    pub offset: u64,
    /// The inode of the file; 0 for memory that no file backs.
    pub inode: u64,
    /// The path, with runs of white space made one space (as the agent
    /// sends it); empty for anonymous memory.
    pub path: String,
}

impl Mapping {
    /// Whether a file backs it (not anonymous memory, `[heap]`, `[vdso]` …).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }
}

/// The contents of a `/proc/<pid>/maps` file.
pub fn parse_maps(maps: &str) -> Vec<Mapping> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let (start, end) = f.next()?.split_once('-')?;
            let perms = f.next()?.to_owned();
            let offset = u64::from_str_radix(f.next()?, 16).ok()?;
            let _dev = f.next()?;
            let inode = f.next()?.parse().ok()?;
            let path = f.collect::<Vec<_>>().join(" ");
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                perms,
                offset,
                inode,
                path,
            })
        })
        .collect()
}

/// The memory map of `pid`.
pub fn maps(pid: u32) -> io::Result<Vec<Mapping>> {
    Ok(parse_maps(&std::fs::read_to_string(dir(pid).join("maps"))?))
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
    fn stat_state_and_status_tgid() {
        let fields: Vec<String> = (4..=30).map(|i| i.to_string()).collect();
        let stat = format!("42 (a) Z) Z {}\n", fields.join(" "));
        assert_eq!(parse_stat_state(&stat), Some('Z'));
        assert_eq!(parse_stat_start_time(&stat), Some(22));
        let me = std::process::id();
        let (state, start) = state_and_start_time(me).unwrap();
        assert_ne!(state, 'Z');
        assert_eq!(start, start_time(me).unwrap());
        assert_eq!(
            parse_status_tgid("Name:\tx\nTgid:\t4242\nPid:\t4250\n"),
            Some(4242)
        );
        assert_eq!(parse_status_tgid("Pid:\t1\n"), None);
        assert_eq!(thread_of(me), None);
    }

    #[test]
    fn maps_lines() {
        let text = "\
55d0c0a00000-55d0c0a21000 r-xp 00002000 08:01 1234   /usr/bin/my  app (deleted)
7f00-7f10 rw-p 00000000 00:00 0 
7ffd033ab000-7ffd033ad000 r-xp 00000000 00:00 0                          [vdso]
";
        let m = parse_maps(text);
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[0],
            Mapping {
                start: 0x55d0_c0a0_0000,
                end: 0x55d0_c0a2_1000,
                perms: "r-xp".into(),
                offset: 0x2000,
                inode: 1234,
                path: "/usr/bin/my app (deleted)".into(),
            }
        );
        assert!(m[0].is_file());
        assert!(!m[1].is_file() && m[1].path.is_empty());
        assert!(!m[2].is_file());
        assert!(!maps(std::process::id()).unwrap().is_empty());
    }

    #[test]
    fn zombie_exit_code_and_real_ids() {
        let fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        let stat = format!("42 (a (b)) {}\n", fields.join(" "));
        assert_eq!(parse_stat_exit_code(&stat), Some(52));
        assert_eq!(parse_stat_exit_code("42 (x) Z 1 2 3"), None);
        assert_eq!(
            parse_status_real_ids("Uid:\t1000\t0\t0\t0\nGid:\t100\t5\t5\t5\n"),
            Some((1000, 100))
        );
        assert_eq!(parse_status_real_ids("Uid:\t1\n"), None);
    }

    #[test]
    fn deleted_suffix() {
        assert_eq!(strip_deleted("/a/b (deleted)"), "/a/b");
        assert_eq!(strip_deleted("/a/b"), "/a/b");
    }
}
