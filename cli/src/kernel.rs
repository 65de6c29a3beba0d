//! Names of what the kernel reports by letter or number: scheduler states
//! of `/proc/<pid>/task/<tid>/stat` and system call numbers of
//! `/proc/<pid>/task/<tid>/syscall`.

/// The name of a scheduler state letter (`fs/proc/array.c`), if known.
pub fn state_name(state: char) -> Option<&'static str> {
    Some(match state {
        'R' => "running",
        'S' => "sleeping",
        'D' => "disk sleep",
        'T' => "stopped",
        't' => "tracing stop",
        'Z' => "zombie",
        'X' | 'x' => "dead",
        'I' => "idle",
        'P' => "parked",
        'W' => "waking",
        'K' => "wakekill",
        _ => return None,
    })
}

/// Blocking (and a few other common) system calls of x86_64, by number
/// (`arch/x86/entry/syscalls/syscall_64.tbl`).
const X86_64: &[(u64, &str)] = &[
    (0, "read"),
    (1, "write"),
    (2, "open"),
    (3, "close"),
    (4, "stat"),
    (5, "fstat"),
    (6, "lstat"),
    (7, "poll"),
    (8, "lseek"),
    (9, "mmap"),
    (10, "mprotect"),
    (11, "munmap"),
    (12, "brk"),
    (13, "rt_sigaction"),
    (14, "rt_sigprocmask"),
    (16, "ioctl"),
    (17, "pread64"),
    (18, "pwrite64"),
    (19, "readv"),
    (20, "writev"),
    (22, "pipe"),
    (23, "select"),
    (24, "sched_yield"),
    (25, "mremap"),
    (26, "msync"),
    (28, "madvise"),
    (32, "dup"),
    (33, "dup2"),
    (34, "pause"),
    (35, "nanosleep"),
    (39, "getpid"),
    (40, "sendfile"),
    (41, "socket"),
    (42, "connect"),
    (43, "accept"),
    (44, "sendto"),
    (45, "recvfrom"),
    (46, "sendmsg"),
    (47, "recvmsg"),
    (48, "shutdown"),
    (49, "bind"),
    (50, "listen"),
    (56, "clone"),
    (57, "fork"),
    (58, "vfork"),
    (59, "execve"),
    (60, "exit"),
    (61, "wait4"),
    (62, "kill"),
    (72, "fcntl"),
    (73, "flock"),
    (74, "fsync"),
    (75, "fdatasync"),
    (77, "ftruncate"),
    (101, "ptrace"),
    (128, "rt_sigtimedwait"),
    (130, "rt_sigsuspend"),
    (186, "gettid"),
    (200, "tkill"),
    (202, "futex"),
    (213, "epoll_create"),
    (219, "restart_syscall"),
    (228, "clock_gettime"),
    (230, "clock_nanosleep"),
    (231, "exit_group"),
    (232, "epoll_wait"),
    (233, "epoll_ctl"),
    (234, "tgkill"),
    (247, "waitid"),
    (257, "openat"),
    (270, "pselect6"),
    (271, "ppoll"),
    (275, "splice"),
    (281, "epoll_pwait"),
    (288, "accept4"),
    (290, "eventfd2"),
    (291, "epoll_create1"),
    (293, "pipe2"),
    (295, "preadv"),
    (296, "pwritev"),
    (299, "recvmmsg"),
    (307, "sendmmsg"),
    (318, "getrandom"),
    (425, "io_uring_setup"),
    (426, "io_uring_enter"),
    (435, "clone3"),
    (441, "epoll_pwait2"),
    (449, "futex_waitv"),
    (455, "futex_wait"),
];

/// The same for aarch64, whose numbers are the generic ones
/// (`include/uapi/asm-generic/unistd.h`).
const AARCH64: &[(u64, &str)] = &[
    (19, "eventfd2"),
    (20, "epoll_create1"),
    (21, "epoll_ctl"),
    (22, "epoll_pwait"),
    (23, "dup"),
    (24, "dup3"),
    (25, "fcntl"),
    (29, "ioctl"),
    (32, "flock"),
    (46, "ftruncate"),
    (56, "openat"),
    (57, "close"),
    (59, "pipe2"),
    (62, "lseek"),
    (63, "read"),
    (64, "write"),
    (65, "readv"),
    (66, "writev"),
    (67, "pread64"),
    (68, "pwrite64"),
    (69, "preadv"),
    (70, "pwritev"),
    (71, "sendfile"),
    (72, "pselect6"),
    (73, "ppoll"),
    (76, "splice"),
    (79, "newfstatat"),
    (80, "fstat"),
    (82, "fsync"),
    (83, "fdatasync"),
    (93, "exit"),
    (94, "exit_group"),
    (95, "waitid"),
    (98, "futex"),
    (101, "nanosleep"),
    (113, "clock_gettime"),
    (115, "clock_nanosleep"),
    (117, "ptrace"),
    (124, "sched_yield"),
    (128, "restart_syscall"),
    (129, "kill"),
    (130, "tkill"),
    (131, "tgkill"),
    (133, "rt_sigsuspend"),
    (134, "rt_sigaction"),
    (135, "rt_sigprocmask"),
    (137, "rt_sigtimedwait"),
    (172, "getpid"),
    (178, "gettid"),
    (198, "socket"),
    (200, "bind"),
    (201, "listen"),
    (202, "accept"),
    (203, "connect"),
    (206, "sendto"),
    (207, "recvfrom"),
    (210, "shutdown"),
    (211, "sendmsg"),
    (212, "recvmsg"),
    (214, "brk"),
    (215, "munmap"),
    (216, "mremap"),
    (220, "clone"),
    (221, "execve"),
    (222, "mmap"),
    (226, "mprotect"),
    (227, "msync"),
    (233, "madvise"),
    (242, "accept4"),
    (243, "recvmmsg"),
    (260, "wait4"),
    (269, "sendmmsg"),
    (278, "getrandom"),
    (425, "io_uring_setup"),
    (426, "io_uring_enter"),
    (435, "clone3"),
    (441, "epoll_pwait2"),
    (449, "futex_waitv"),
    (455, "futex_wait"),
];

/// The name of system call `number` on `arch` (a `std::env::consts::ARCH`
/// value), if this table knows it.
pub fn syscall_name_on(arch: &str, number: u64) -> Option<&'static str> {
    let table = match arch {
        "x86_64" => X86_64,
        "aarch64" => AARCH64,
        _ => return None,
    };
    table
        .binary_search_by_key(&number, |&(n, _)| n)
        .ok()
        .map(|i| table[i].1)
}

/// The name of system call `number` on this machine. The CLI runs on the
/// target's machine, so its architecture is the target's (a 32-bit target
/// under a 64-bit CLI gets numbers, not names: the tables differ).
pub fn syscall_name(number: u64) -> Option<&'static str> {
    syscall_name_on(std::env::consts::ARCH, number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_agree_with_the_c_library() {
        for (number, name) in [
            (libc::SYS_clone, "clone"),
            (libc::SYS_clone3, "clone3"),
            (libc::SYS_execve, "execve"),
            (libc::SYS_exit_group, "exit_group"),
            (libc::SYS_mmap, "mmap"),
            (libc::SYS_munmap, "munmap"),
            (libc::SYS_madvise, "madvise"),
            (libc::SYS_tgkill, "tgkill"),
            (libc::SYS_rt_sigprocmask, "rt_sigprocmask"),
            (libc::SYS_epoll_ctl, "epoll_ctl"),
            (libc::SYS_sched_yield, "sched_yield"),
            (libc::SYS_restart_syscall, "restart_syscall"),
            (libc::SYS_io_uring_setup, "io_uring_setup"),
            (libc::SYS_futex, "futex"),
            (libc::SYS_epoll_pwait, "epoll_pwait"),
        ] {
            assert_eq!(syscall_name(number as u64), Some(name), "{number}");
        }
    }

    #[test]
    fn tables_are_sorted_for_binary_search() {
        for table in [X86_64, AARCH64] {
            assert!(table.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }

    #[test]
    fn syscall_names_per_architecture() {
        let x = |n| syscall_name_on("x86_64", n);
        assert_eq!(x(0), Some("read"));
        assert_eq!(x(1), Some("write"));
        assert_eq!(x(7), Some("poll"));
        assert_eq!(x(17), Some("pread64"));
        assert_eq!(x(23), Some("select"));
        assert_eq!(x(35), Some("nanosleep"));
        assert_eq!(x(43), Some("accept"));
        assert_eq!(x(44), Some("sendto"));
        assert_eq!(x(45), Some("recvfrom"));
        assert_eq!(x(47), Some("recvmsg"));
        assert_eq!(x(61), Some("wait4"));
        assert_eq!(x(202), Some("futex"));
        assert_eq!(x(230), Some("clock_nanosleep"));
        assert_eq!(x(232), Some("epoll_wait"));
        assert_eq!(x(270), Some("pselect6"));
        assert_eq!(x(271), Some("ppoll"));
        assert_eq!(x(281), Some("epoll_pwait"));
        assert_eq!(x(288), Some("accept4"));
        assert_eq!(x(441), Some("epoll_pwait2"));
        assert_eq!(x(9999), None);
        let a = |n| syscall_name_on("aarch64", n);
        assert_eq!(a(98), Some("futex"));
        assert_eq!(a(101), Some("nanosleep"));
        assert_eq!(a(115), Some("clock_nanosleep"));
        assert_eq!(a(22), Some("epoll_pwait"));
        assert_eq!(a(73), Some("ppoll"));
        assert_eq!(a(63), Some("read"));
        assert_eq!(a(64), Some("write"));
        assert_eq!(a(202), Some("accept"), "not futex: that is x86_64");
        assert_eq!(syscall_name_on("s390x", 0), None);
        assert_eq!(syscall_name_on("x86", 0), None);
    }

    #[test]
    fn state_letters() {
        let cases = [
            ('R', "running"),
            ('S', "sleeping"),
            ('D', "disk sleep"),
            ('T', "stopped"),
            ('t', "tracing stop"),
            ('Z', "zombie"),
            ('X', "dead"),
            ('I', "idle"),
        ];
        for (c, name) in cases {
            assert_eq!(state_name(c), Some(name), "{c}");
        }
        assert_eq!(state_name('?'), None);
    }
}
