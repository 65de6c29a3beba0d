//! `CrashPreflight` and `Crash`: where a core dump would go, and a
//! deliberate abort that leaves one (docs/crash.md).

use std::path::{Path, PathBuf};

use delouse_proto::{AgentError, Answer, BuildInfo, CrashReport, ErrorKind, Response};

use crate::builder::Shared;
use crate::sys;

/// What a core dump of this process would need, read now.
pub(crate) fn preflight() -> CrashReport {
    let (core_soft_limit, core_hard_limit) = sys::core_limits();
    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern")
        .map(|p| p.trim_end().to_owned())
        .unwrap_or_default();
    let cwd = std::env::current_dir().unwrap_or_default();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("")
            .to_owned()
    };
    let free_bytes = core_dir(&core_pattern, &cwd).and_then(|d| sys::free_bytes(&d));
    CrashReport {
        core_soft_limit,
        core_hard_limit,
        pid_namespace_init: field("NSpid:").split_whitespace().last() == Some("1"),
        rss_bytes: field("VmRSS:")
            .split_whitespace()
            .next()
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024,
        core_pattern,
        dumpable: sys::dumpable(),
        cwd: cwd.to_string_lossy().into_owned(),
        free_bytes,
    }
}

/// The directory a file `core_pattern` writes into; `None` for a pipe.
fn core_dir(pattern: &str, cwd: &Path) -> Option<PathBuf> {
    if pattern.starts_with('|') || pattern.is_empty() {
        return None;
    }
    let path = cwd.join(pattern);
    Some(match pattern.rfind('/') {
        Some(_) => path.parent()?.to_owned(),
        None => cwd.to_owned(),
    })
}

/// Checks a `Crash` request; the abort itself happens after the answer is
/// sent ([`abort_for_core_dump`]).
pub(crate) fn confirm(shared: &Shared, pid: u32) -> Response {
    if pid != shared.pid {
        return Err(AgentError::new(
            ErrorKind::Refused,
            format!(
                "crash refused: the request names pid {pid} but this is pid {}",
                shared.pid
            ),
        ));
    }
    sys::raise_core_limit();
    Ok(Answer::Crash(preflight()))
}

/// Aborts the process, from the agent's thread, so that the kernel writes a
/// core dump (where the limits and `core_pattern` allow).
#[inline(never)]
pub(crate) fn abort_for_core_dump() -> ! {
    std::process::abort()
}

/// What the agent knows of the build.
pub(crate) fn build(shared: &Shared) -> BuildInfo {
    let traces = shared.trace_support();
    BuildInfo {
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        tokio_unstable: cfg!(tokio_unstable),
        taskdump: crate::TOKIO_DUMPS,
        traces,
        debug_assertions: cfg!(debug_assertions),
        target: format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
        runtimes: shared.runtime_infos(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_directory_of_patterns() {
        let cwd = Path::new("/srv/app");
        assert_eq!(core_dir("core", cwd).unwrap(), Path::new("/srv/app"));
        assert_eq!(
            core_dir("/var/cores/core.%p", cwd).unwrap(),
            Path::new("/var/cores")
        );
        assert_eq!(
            core_dir("cores/core", cwd).unwrap(),
            Path::new("/srv/app/cores")
        );
        assert_eq!(core_dir("|/usr/lib/systemd/systemd-coredump %P", cwd), None);
    }

    #[test]
    fn preflight_reads_this_process() {
        let r = preflight();
        assert!(r.rss_bytes > 0);
        assert!(!r.cwd.is_empty());
        assert!(r.core_pattern.len() < 1024);
    }
}
