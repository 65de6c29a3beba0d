//! The few system calls the agent needs that std does not wrap. Every
//! `unsafe` block of the crate lives here or, for the signal handler of
//! `delouse threads`, in `threads/signal.rs`.

use std::ffi::CString;
use std::sync::OnceLock;

/// Effective uid of this process.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A cheap monotonic clock in nanoseconds (CLOCK_MONOTONIC_COARSE: a few
/// milliseconds of resolution, read from the vDSO without a system call).
/// Used on every poll of a traced task, where `Instant::now()` would cost
/// several times more.
pub(crate) fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant
    // the kernel has supported since 2.6.32. On failure `ts` stays zero.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

static SOCKET_PATH: OnceLock<CString> = OnceLock::new();

extern "C" fn remove_socket_at_exit() {
    if let Some(path) = SOCKET_PATH.get() {
        // SAFETY: `path` is a valid NUL-terminated string that lives for the
        // rest of the process (a `static`). unlink only reads it.
        unsafe { libc::unlink(path.as_ptr()) };
    }
}

/// Removes `path` when the process exits normally (`exit()`, return from
/// `main`; `std::process::exit` runs no Rust destructors, so an `atexit`
/// hook is the only way). Only the first call registers a path.
pub(crate) fn unlink_at_exit(path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    if SOCKET_PATH.set(c).is_ok() {
        // SAFETY: the hook is an `extern "C" fn()` that touches only a
        // `static`, so it stays valid whenever exit handlers run.
        unsafe { libc::atexit(remove_socket_at_exit) };
    }
}

/// Hands freed heap memory back to the kernel after a large trace, whose
/// per-task buffers were freed on many threads' malloc arenas.
pub(crate) fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[allow(
    clippy::unnecessary_cast,
    reason = "rlim_t is narrower on some targets"
)]
fn rlimit_bytes(v: libc::rlim_t) -> Option<u64> {
    (v != libc::RLIM_INFINITY).then_some(v as u64)
}

/// Soft and hard core size limits (`None`: unlimited).
pub(crate) fn core_limits() -> (Option<u64>, Option<u64>) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to be filled in.
    if unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut lim) } != 0 {
        return (Some(0), Some(0));
    }
    (rlimit_bytes(lim.rlim_cur), rlimit_bytes(lim.rlim_max))
}

/// Raises the soft core size limit to the hard one.
pub(crate) fn raise_core_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers to a local rlimit; raising the soft limit up
    // to the hard one needs no privilege.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_CORE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_CORE, &lim);
        }
    }
}

/// `prctl(PR_GET_DUMPABLE)`: whether the kernel may write a core.
pub(crate) fn dumpable() -> i32 {
    // SAFETY: PR_GET_DUMPABLE takes no pointer arguments.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }
}

/// Free bytes, for an unprivileged writer, on the file system of `dir`.
pub(crate) fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: a zeroed statvfs is valid to be filled in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is valid.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}
