//! What the benchmarks share: running the CLI, reading a target's memory,
//! and medians.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::util::cli_path;

/// The CLI's symbol cache in a run: `None` for none (every run reads the
/// debug info, as the first run on a machine does), else its directory.
pub type SymbolCache<'a> = Option<&'a Path>;

fn cli(cache: SymbolCache<'_>) -> Command {
    let mut cmd = Command::new(cli_path());
    cmd.env("DELOUSE_CACHE_DIR", cache.unwrap_or(Path::new("")));
    cmd
}

/// Wall time of `delouse <args>` with its output thrown away, in ms.
pub fn cli_wall_ms(args: &[&str], cache: SymbolCache<'_>) -> f64 {
    let start = Instant::now();
    let status = cli(cache)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("run delouse");
    assert!(status.success(), "delouse {args:?} failed: {status}");
    start.elapsed().as_secs_f64() * 1e3
}

/// The JSON `delouse <args> --json` prints.
pub fn cli_json(args: &[&str], cache: SymbolCache<'_>) -> serde_json::Value {
    let out = cli(cache)
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .expect("run delouse");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// `VmRSS` and `VmHWM` of `pid`, in kB.
pub fn memory_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
