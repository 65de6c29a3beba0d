//! Helpers for the integration tests: start a target program, talk to its
//! control loop, run the `delouse` CLI under a watchdog, read its JSON.

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a target has to print `ready <pid>` and bind its socket.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a target has to answer one control command (`check` alone
/// takes up to 3 s).
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// The default watchdog of one CLI run: past it the CLI is killed and the
/// test fails, so a hang fails instead of stalling CI.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the tests one at a time. They measure answers against time bounds
/// and check that workers stay alive on a machine with few cores; a dozen
/// targets and CLIs at once would make that noise.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The path of a target program of this package.
pub fn bin_path(name: &str) -> PathBuf {
    PathBuf::from(match name {
        "heartbeat" => env!("CARGO_BIN_EXE_heartbeat"),
        "leak" => env!("CARGO_BIN_EXE_leak"),
        "wake_storm" => env!("CARGO_BIN_EXE_wake_storm"),
        "random_wakeups" => env!("CARGO_BIN_EXE_random_wakeups"),
        "blocked" => env!("CARGO_BIN_EXE_blocked"),
        "current_thread" => env!("CARGO_BIN_EXE_current_thread"),
        "plain" => env!("CARGO_BIN_EXE_plain"),
        "threads" => env!("CARGO_BIN_EXE_threads"),
        "stress" => env!("CARGO_BIN_EXE_stress"),
        other => panic!("no target program named '{other}'"),
    })
}

/// The cargo target directory and profile directory this test binary was
/// built into: it lives in `<target>/<profile>/deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary in <target>/<profile>/deps")
        .to_owned()
}

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    profile_dir()
        .parent()
        .expect("profile directory inside the target directory")
        .to_owned()
}

/// The `delouse` CLI: `$DELOUSE_BIN`, else `<target>/<profile>/delouse`.
pub fn cli_path() -> PathBuf {
    if let Some(bin) = std::env::var_os("DELOUSE_BIN") {
        return PathBuf::from(bin);
    }
    let path = profile_dir().join("delouse");
    assert!(
        path.is_file(),
        "the delouse CLI is not at {}: run `cargo build -p delouse-cli` first \
         (or `cargo test --workspace`), or set DELOUSE_BIN",
        path.display()
    );
    path
}

/// A running target program, killed (by its PID) and reaped on drop.
pub struct Target {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    socket_dir: tempfile::TempDir,
}

/// What `Target::start` waits for before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// `ready <pid>` only.
    Ready,
    /// `ready <pid>`, then the agent's socket `<pid>.sock`.
    Socket,
}

impl Target {
    /// Starts target program `name` of this package with `args`, in a fresh
    /// socket directory, and waits for its `ready` line and agent socket.
    pub fn start(name: &str, args: &[&str]) -> Target {
        Target::launch(name, &bin_path(name), args, None, Wait::Socket)
    }

    /// Starts a program given by path (the no-unstable fixture).
    pub fn launch(name: &str, exe: &Path, args: &[&str], cwd: Option<&Path>, wait: Wait) -> Target {
        let socket_dir = tempfile::Builder::new()
            .prefix("delouse-test-")
            .tempdir()
            .expect("create a socket directory");
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .env("DELOUSE_SOCKET_DIR", socket_dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", exe.display()));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut target = Target {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            socket_dir,
        };
        target.wait_ready(wait);
        target
    }

    fn wait_ready(&mut self, wait: Wait) {
        let deadline = Instant::now() + READY_TIMEOUT;
        // `ready <pid>` must be the first line.
        match self.lines.recv_timeout(READY_TIMEOUT) {
            Ok(line) if line == format!("ready {}", self.pid()) => {}
            Ok(line) => panic!(
                "{}: expected 'ready {}', got '{line}'",
                self.name,
                self.pid()
            ),
            Err(RecvTimeoutError::Timeout) => {
                panic!("{}: no 'ready' line within {READY_TIMEOUT:?}", self.name)
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait();
                panic!("{}: exited before 'ready': {status:?}", self.name)
            }
        }
        if wait == Wait::Ready {
            return;
        }
        let socket = self.socket_path();
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "{}: printed 'ready' but its agent socket {} did not appear \
                 within {READY_TIMEOUT:?}",
                self.name,
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The target's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The target's PID as a CLI argument.
    pub fn pid_arg(&self) -> String {
        self.pid().to_string()
    }

    /// The target's `DELOUSE_SOCKET_DIR`.
    pub fn socket_dir(&self) -> &Path {
        self.socket_dir.path()
    }

    /// Where the target's agent binds its socket.
    pub fn socket_path(&self) -> PathBuf {
        self.socket_dir().join(format!("{}.sock", self.pid()))
    }

    /// Sends one control command and returns the target's one-line answer.
    pub fn send(&mut self, command: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: send '{command}': {e}", self.name));
        match self.lines.recv_timeout(REPLY_TIMEOUT) {
            Ok(line) => line,
            Err(e) => panic!("{}: no answer to '{command}': {e}", self.name),
        }
    }

    /// Runs `check` (every worker alive?).
    pub fn check(&mut self) -> Check {
        let line = self.send("check");
        Check::parse(&line).unwrap_or_else(|| panic!("{}: bad check answer '{line}'", self.name))
    }

    /// Asserts that every worker of the target's runtime is alive.
    pub fn assert_alive(&mut self) -> Check {
        let check = self.check();
        assert!(
            check.alive == check.total && check.total > 0,
            "{}: not every worker is alive: {}",
            self.name,
            check.line
        );
        check
    }

    /// Runs `stats`.
    pub fn stats(&mut self) -> Stats {
        Stats::parse(&self.send("stats"))
    }

    /// Sends a command that answers `key=value ...`.
    pub fn send_stats(&mut self, command: &str) -> Stats {
        Stats::parse(&self.send(command))
    }

    /// Polls `stats` until `done` holds or `timeout` passes; returns the last
    /// stats.
    pub fn wait_stats(&mut self, timeout: Duration, done: impl Fn(&Stats) -> bool) -> Stats {
        let deadline = Instant::now() + timeout;
        loop {
            let stats = self.stats();
            if done(&stats) || Instant::now() >= deadline {
                return stats;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Closes the target's stdin and waits up to `timeout` for it to exit.
    pub fn close_stdin(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.stdin = None;
        self.wait_exit(timeout)
    }

    /// Sends `quit` and waits up to `timeout` for the target to exit.
    pub fn quit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "quit").expect("send quit");
        stdin.flush().expect("send quit");
        self.wait_exit(timeout)
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the target") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How the target ended, if it has: `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait for the target")
    }

    /// Panics, saying how the target ended, if it is not running any more
    /// (`after` says what happened before).
    pub fn assert_running(&mut self, after: &str) {
        if let Some(status) = self.exited() {
            panic!("{} ended ({}) {after}", self.name, describe_status(status));
        }
    }

    /// Sends `signal` to the target.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our
        // own child, not yet reaped, so the PID cannot have been reused.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill -{signal} {pid}: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Kills the target with SIGKILL (no exit hooks run) and reaps it.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.child.wait().expect("reap the killed target");
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stdin = None;
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// An exit status in words: `exit code 1`, `killed by signal 11 (SIGSEGV),
/// core dumped`.
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    let Some(signal) = status.signal() else {
        return format!("{status:?}");
    };
    let name = match signal {
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGILL => " (SIGILL)",
        s if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&s) => " (a real-time signal)",
        _ => "",
    };
    let core = if status.core_dumped() {
        ", core dumped"
    } else {
        ""
    };
    format!("killed by signal {signal}{name}{core}")
}

/// An answer to `check`: `alive <n> of <total> heartbeat_max_gap_ms=<g> ...`.
#[derive(Debug, Clone)]
pub struct Check {
    pub alive: usize,
    pub total: usize,
    pub heartbeat_max_gap_ms: Option<u64>,
    pub line: String,
}

impl Check {
    fn parse(line: &str) -> Option<Check> {
        let mut words = line.split_whitespace();
        if words.next()? != "alive" {
            return None;
        }
        let alive = words.next()?.parse().ok()?;
        if words.next()? != "of" {
            return None;
        }
        let total = words.next()?.parse().ok()?;
        let stats = Stats::parse(&words.collect::<Vec<_>>().join(" "));
        Some(Check {
            alive,
            total,
            heartbeat_max_gap_ms: stats.get("heartbeat_max_gap_ms"),
            line: line.to_owned(),
        })
    }
}

/// An answer to `stats`: `key=value ...`.
#[derive(Debug, Clone)]
pub struct Stats {
    pairs: Vec<(String, String)>,
    pub line: String,
}

impl Stats {
    fn parse(line: &str) -> Stats {
        let pairs = line
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Stats {
            pairs,
            line: line.to_owned(),
        }
    }

    /// The value of `key` as a number.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.text(key)?.parse().ok()
    }

    /// The value of `key`, as written.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` as a number; panics when it is missing.
    pub fn num(&self, key: &str) -> u64 {
        self.get(key)
            .unwrap_or_else(|| panic!("no number '{key}' in stats '{}'", self.line))
    }
}

/// One run of the `delouse` CLI, to be started.
pub struct Cli {
    args: Vec<String>,
    socket_dir: Option<PathBuf>,
    timeout: Duration,
}

/// Runs `delouse args...` to completion (watchdog [`CLI_TIMEOUT`], stdin
/// not a terminal, no `DELOUSE_SOCKET_DIR` of its own: `tasks` must find
/// the target's socket through `/proc/<pid>/environ`).
pub fn delouse(args: &[&str]) -> Run {
    Cli::new(args).run()
}

impl Cli {
    /// `delouse args...`.
    pub fn new(args: &[&str]) -> Cli {
        Cli {
            args: args.iter().map(|a| a.to_string()).collect(),
            socket_dir: None,
            timeout: CLI_TIMEOUT,
        }
    }

    /// Runs the CLI with `DELOUSE_SOCKET_DIR` set (what `ps` scans).
    pub fn socket_dir(mut self, dir: &Path) -> Cli {
        self.socket_dir = Some(dir.to_owned());
        self
    }

    /// Starts the CLI in the background.
    pub fn spawn(self) -> Running {
        let mut cmd = Command::new(cli_path());
        cmd.args(&self.args)
            .env_remove("DELOUSE_SOCKET_DIR")
            .env("DELOUSE_CACHE_DIR", symbol_cache())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &self.socket_dir {
            cmd.env("DELOUSE_SOCKET_DIR", dir);
        }
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", cli_path().display()));
        let stdout = drain(child.stdout.take().expect("piped stdout"));
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        Running {
            args: self.args,
            timeout: self.timeout,
            child,
            start,
            stdout,
            stderr,
        }
    }

    /// Runs the CLI to completion.
    pub fn run(self) -> Run {
        self.spawn().finish()
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The symbol cache the CLI runs of this test process share: a directory
/// of their own, emptied when the process first uses it, so the suite never
/// reads or fills the user's cache, and later runs read what earlier runs
/// cached.
fn symbol_cache() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("symbol-cache");
        let _ = std::fs::remove_dir_all(&dir);
        dir
    })
}

/// A CLI run in progress.
pub struct Running {
    args: Vec<String>,
    timeout: Duration,
    child: Child,
    start: Instant,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

impl Running {
    /// Waits for the CLI to exit; kills it and fails the test when it runs
    /// over its watchdog.
    pub fn finish(mut self) -> Run {
        let deadline = self.start + self.timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for the CLI") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = self.start.elapsed();
        let stdout = self.stdout.join().unwrap_or_default();
        let stderr = self.stderr.join().unwrap_or_default();
        let Some(status) = status else {
            panic!(
                "delouse {} ran over {:?} and was killed\nstdout: {stdout}\nstderr: {stderr}",
                self.args.join(" "),
                self.timeout
            );
        };
        Run {
            args: self.args,
            status,
            stdout,
            stderr,
            elapsed,
        }
    }
}

/// A finished CLI run.
pub struct Run {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Asserts exit code 0.
    pub fn ok(self) -> Run {
        assert_eq!(self.code(), Some(0), "expected success:\n{self}");
        self
    }

    /// Asserts exit code `code`.
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(self.code(), Some(code), "expected exit {code}:\n{self}");
        self
    }

    /// Stdout parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }

    /// Stderr, asserted to be exactly one non-empty line.
    pub fn error_line(&self) -> &str {
        let line = self.stderr.strip_suffix('\n').unwrap_or(&self.stderr);
        assert!(
            !line.trim().is_empty() && !line.contains('\n'),
            "expected one line on stderr:\n{self}"
        );
        line
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ delouse {}", self.args.join(" "))?;
        writeln!(f, "exit: {:?} after {:?}", self.code(), self.elapsed)?;
        let cut = |s: &str| s.chars().take(4000).collect::<String>();
        writeln!(f, "stdout:\n{}", cut(&self.stdout))?;
        write!(f, "stderr:\n{}", cut(&self.stderr))
    }
}

/// `delouse tasks <pid> --json [extra...]`, asserted to succeed.
pub fn tasks_json(pid: u32, extra: &[&str]) -> Value {
    let pid_arg = pid.to_string();
    let mut args = vec!["tasks", pid_arg.as_str(), "--json"];
    args.extend_from_slice(extra);
    let run = delouse(&args).ok();
    let json = run.json();
    assert_eq!(json["pid"].as_u64(), Some(u64::from(pid)), "{run}");
    json
}

/// `coverage.<key>` of a `tasks --json` answer.
pub fn coverage(json: &Value, key: &str) -> Option<u64> {
    json["coverage"][key].as_u64()
}

/// The groups of a `tasks --json` answer.
pub fn groups(json: &Value) -> &[Value] {
    json["groups"].as_array().map_or(&[], Vec::as_slice)
}

/// The root nodes of a group's tree.
pub fn tree(group: &Value) -> &[Value] {
    group["tree"].as_array().map_or(&[], Vec::as_slice)
}

fn children(node: &Value) -> &[Value] {
    node["children"].as_array().map_or(&[], Vec::as_slice)
}

/// A predicate on tree nodes.
pub type NodePred<'a> = &'a dyn Fn(&Value) -> bool;

/// Whether some node of `nodes` (or below) matches `pred`.
pub fn any_node(nodes: &[Value], pred: NodePred<'_>) -> bool {
    nodes.iter().any(|n| pred(n) || any_node(children(n), pred))
}

/// Whether the tree holds a chain of nodes matching `preds` in order, each
/// at or below the node matching the one before.
pub fn has_chain(nodes: &[Value], preds: &[NodePred<'_>]) -> bool {
    nodes.iter().any(|n| chain_from(n, preds))
}

fn chain_from(node: &Value, preds: &[NodePred<'_>]) -> bool {
    let Some((first, rest)) = preds.split_first() else {
        return true;
    };
    (first(node) && chain_from(node, rest)) || children(node).iter().any(|c| chain_from(c, preds))
}

/// The function name of a node, as the CLI sent it.
pub fn function(node: &Value) -> &str {
    node["function"].as_str().unwrap_or("")
}

/// Whether the node's function is the Rust function `name` (last path
/// segment), ignoring `{{closure}}`/`{closure#0}` segments that async fn
/// bodies add and a symbol hash.
pub fn is_fn(node: &Value, name: &str) -> bool {
    let is_hash = |seg: &str| {
        seg.len() == 17 && seg.starts_with('h') && seg[1..].bytes().all(|b| b.is_ascii_hexdigit())
    };
    function(node)
        .split("::")
        .filter(|seg| !seg.starts_with('{') && !is_hash(seg))
        .last()
        == Some(name)
}

/// The node's source file ends with `suffix`.
pub fn file_ends_with(node: &Value, suffix: &str) -> bool {
    node["file"].as_str().is_some_and(|f| f.ends_with(suffix))
}

/// The node's source line.
pub fn line(node: &Value) -> Option<u64> {
    node["line"].as_u64()
}

/// A compact rendering of the groups, for assertion messages.
pub fn describe(json: &Value) -> String {
    fn node(out: &mut String, n: &Value, depth: usize) {
        out.push_str(&format!(
            "{:indent$}{} {}:{} app={}\n",
            "",
            function(n),
            n["file"].as_str().unwrap_or("?"),
            n["line"],
            n["app"],
            indent = 4 + 2 * depth
        ));
        for c in children(n) {
            node(out, c, depth + 1);
        }
    }
    let mut out = format!("coverage: {}\n", json["coverage"]);
    for g in groups(json).iter().take(20) {
        out.push_str(&format!(
            "  group count={} state={} spawned_at={}\n",
            g["count"], g["state"], g["spawned_at"]
        ));
        for n in tree(g) {
            node(&mut out, n, 0);
        }
    }
    out
}

/// The 1-based line of `source` that carries `// TRACE-MARK: <name>`.
pub fn marker_line(source: &str, name: &str) -> u64 {
    let marker = format!("// TRACE-MARK: {name}");
    let mut found = source
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_end().ends_with(&marker));
    let (index, _) = found
        .next()
        .unwrap_or_else(|| panic!("no '{marker}' in the source"));
    assert!(found.next().is_none(), "'{marker}' appears twice");
    index as u64 + 1
}

/// The 1-based column of `needle` on the line marked `name`, as
/// `Location::caller()` reports it for a call `needle(...)`.
pub fn marker_column(source: &str, name: &str, needle: &str) -> u64 {
    let line = source
        .lines()
        .nth(marker_line(source, name) as usize - 1)
        .expect("marked line");
    let byte = line
        .find(needle)
        .unwrap_or_else(|| panic!("no '{needle}' on the line marked '{name}'"));
    line[..byte].chars().count() as u64 + 1
}

/// Builds the no-unstable fixture without `--cfg tokio_unstable` and
/// returns the path of its binary.
///
/// `RUSTFLAGS=""` overrides the workspace's `.cargo/config.toml` (found by
/// walking up from the fixture's directory), and `CARGO_ENCODED_RUSTFLAGS`,
/// which would win over it, is removed. Built into `<target>/no-unstable`
/// so that its tokio (without the cfg) is compiled once and then cached.
pub fn build_no_unstable_fixture() -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/no-unstable");
    let target = target_dir().join("no-unstable");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--quiet", "--manifest-path"])
        .arg(fixture.join("Cargo.toml"))
        .current_dir(&fixture)
        .env("RUSTFLAGS", "")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_TARGET_DIR", &target)
        .stdin(Stdio::null())
        .output()
        .expect("run cargo build for the no-unstable fixture");
    assert!(
        out.status.success(),
        "building the no-unstable fixture failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("debug/no-unstable")
}

/// The entry of `ps --json` for `pid`, if listed.
pub fn ps_entry(ps: &Value, pid: u32) -> Option<&Value> {
    ps.as_array()
        .expect("ps --json answers an array")
        .iter()
        .find(|p| p["pid"].as_u64() == Some(u64::from(pid)))
}
