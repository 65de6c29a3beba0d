//! The real `delouse` binary against situations that need no agent: usage,
//! missing processes, processes without an agent, stale sockets, and sockets
//! that are not agents at all. (tests/ drives it against real agents.)

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_delouse");

/// Runs the CLI with no terminal, no colour and no socket directory of its
/// own; kills it if it runs for more than 30 s.
fn delouse(args: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("DELOUSE_SOCKET_DIR")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start delouse");
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    (out, start.elapsed())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The single line of stderr, asserting that there is exactly one.
fn one_line(out: &Output) -> String {
    let err = stderr(out);
    let line = err.strip_suffix('\n').unwrap_or(&err);
    assert!(
        !line.trim().is_empty() && !line.contains('\n'),
        "expected one line on stderr, got:\n{err}"
    );
    assert!(line.starts_with("delouse: error: "), "{line}");
    line.to_owned()
}

/// A `sleep` child (optionally with `DELOUSE_SOCKET_DIR` set), killed and
/// reaped on drop.
struct Sleeper(Child);

impl Sleeper {
    fn start(socket_dir: Option<&Path>) -> Self {
        Self::start_as(socket_dir, None)
    }

    /// A sleeper running as `uid` (through `setpriv`; needs root).
    fn start_as(socket_dir: Option<&Path>, uid: Option<u32>) -> Self {
        let mut cmd = match uid {
            None => Command::new("sleep"),
            Some(uid) => {
                let mut c = Command::new("setpriv");
                let id = uid.to_string();
                c.args([
                    "--reuid",
                    &id,
                    "--regid",
                    &id,
                    "--clear-groups",
                    "--",
                    "sleep",
                ]);
                c
            }
        };
        cmd.arg("30").stdin(Stdio::null()).stdout(Stdio::null());
        match socket_dir {
            Some(dir) => cmd.env("DELOUSE_SOCKET_DIR", dir),
            None => cmd.env_remove("DELOUSE_SOCKET_DIR"),
        };
        let child = cmd.spawn().expect("start sleep");
        // Wait until the child has exec'd `sleep`, so that its environ is
        // the one given above.
        let start = Instant::now();
        while std::fs::read_to_string(format!("/proc/{}/comm", child.id()))
            .map_or(true, |c| c.trim() != "sleep")
            && start.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        Sleeper(child)
    }

    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A PID with no process.
fn unused_pid() -> u32 {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    (1..max)
        .rev()
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .expect("a free pid")
}

#[test]
fn help_lists_the_commands() {
    let (out, _) = delouse(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("ps"), "{help}");
    assert!(help.contains("tasks"), "{help}");
    assert!(help.contains("threads"), "{help}");
    let (out, _) = delouse(&["threads", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--json", "--timeout", "--name", "--group"] {
        assert!(help.contains(flag), "{flag}: {help}");
    }
    let (out, _) = delouse(&["tasks", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--json",
        "--timeout",
        "--whole-runtime",
        "--runtime",
        "--yes",
    ] {
        assert!(help.contains(flag), "{flag}: {help}");
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["frobnicate"][..],
        &["tasks"],
        &["tasks", "not-a-pid"],
        &["tasks", "1", "--timeout", "soon"],
        &["tasks", "1", "--yes"],
        &["threads"],
        &["threads", "not-a-pid"],
        &["threads", "1", "--name"],
        &["threads", "1", "--whole-runtime"],
    ] {
        let (out, _) = delouse(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn missing_process_exits_3() {
    let pid = unused_pid().to_string();
    let (out, _) = delouse(&["tasks", &pid]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let line = one_line(&out);
    assert!(
        line.contains(&format!("no process with pid {pid}")),
        "{line}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn process_without_agent_exits_3_and_names_the_directories() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start(Some(dir.path()));
    let (out, _) = delouse(&["tasks", &sleeper.pid()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let line = one_line(&out);
    assert!(line.contains("no delouse agent in process"), "{line}");
    assert!(line.contains("looked in"), "{line}");
    assert!(line.contains(&dir.path().display().to_string()), "{line}");
    assert!(line.contains("delouse::init()"), "{line}");

    // Without the variable, the default directory for the uid is named.
    let plain = Sleeper::start(None);
    let (out, _) = delouse(&["tasks", &plain.pid()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(one_line(&out).contains("delouse-"), "{}", stderr(&out));
}

/// A listener at `<dir>/<pid>.sock` that answers every connection with
/// `reply` (if any), keeps it open for a while, and counts connections.
fn fake_agent(dir: &Path, pid: &str, reply: Option<Vec<u8>>) -> Arc<AtomicUsize> {
    let listener = UnixListener::bind(dir.join(format!("{pid}.sock"))).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            count.fetch_add(1, Ordering::SeqCst);
            let reply = reply.clone();
            std::thread::spawn(move || {
                if let Some(reply) = reply {
                    let _ = stream.write_all(&reply);
                }
                let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                let mut sink = [0u8; 256];
                while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    accepted
}

#[test]
fn garbage_on_the_socket_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start(Some(dir.path()));
    let accepted = fake_agent(
        dir.path(),
        &sleeper.pid(),
        Some(b"220 smtp.example ESMTP ready\r\n".to_vec()),
    );
    let (out, elapsed) = delouse(&["tasks", &sleeper.pid(), "--timeout", "3s"]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    let line = one_line(&out);
    assert!(line.contains("not a delouse agent"), "{line}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(accepted.load(Ordering::SeqCst) >= 1);
    assert!(out.stdout.is_empty());
}

#[test]
fn garbage_declaring_a_small_frame_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start(Some(dir.path()));
    fake_agent(
        dir.path(),
        &sleeper.pid(),
        Some(vec![0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef]),
    );
    let (out, elapsed) = delouse(&["tasks", &sleeper.pid(), "--timeout", "3s"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        one_line(&out).contains("not a delouse agent"),
        "{}",
        stderr(&out)
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[test]
fn a_silent_listener_times_out_with_exit_5() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start(Some(dir.path()));
    fake_agent(dir.path(), &sleeper.pid(), None);
    let (out, elapsed) = delouse(&["tasks", &sleeper.pid(), "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    one_line(&out);
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
}

/// `ps` with one agent that does not answer: a warning for it, and the last
/// line does not claim there is no agent at all.
#[test]
fn ps_says_when_the_agents_found_did_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start(Some(dir.path()));
    fake_agent(dir.path(), &sleeper.pid(), None);
    let out = delouse_in(dir.path(), &["ps"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("pid {}:", sleeper.pid())), "{err}");
    assert!(err.contains("no agent answered: 1 did not"), "{err}");
    assert!(
        !err.contains("no processes with a delouse agent found"),
        "{err}"
    );
}

#[test]
fn a_listener_that_never_accepts_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start(Some(dir.path()));
    // Bound and listening, never accepted: the connect itself succeeds
    // (backlog), the handshake gets no answer.
    let _listener = UnixListener::bind(dir.path().join(format!("{}.sock", sleeper.pid()))).unwrap();
    let (out, elapsed) = delouse(&["tasks", &sleeper.pid(), "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    one_line(&out);
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
}

#[test]
fn a_stale_socket_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start(Some(dir.path()));
    drop(UnixListener::bind(dir.path().join(format!("{}.sock", sleeper.pid()))).unwrap());
    let (out, _) = delouse(&["tasks", &sleeper.pid()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(one_line(&out).contains("stale socket"), "{}", stderr(&out));
}

#[test]
fn ps_ignores_and_cleans_stale_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join(format!("{}.sock", unused_pid()));
    drop(UnixListener::bind(&dead).unwrap());
    let run = |args: &[&str]| delouse_in(dir.path(), args);

    let out = run(&["ps", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a json array");
    assert!(json.is_array(), "{json}");
    let socket = dead.display().to_string();
    assert!(
        !json
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["socket"] == socket.as_str()),
        "{json}"
    );
    assert!(stderr(&out).contains("stale socket"), "{}", stderr(&out));
    assert!(dead.exists());

    let out = run(&["ps", "--clean"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!dead.exists(), "{}", stderr(&out));
    assert!(stderr(&out).contains("removed"), "{}", stderr(&out));
}

mod fake {
    //! A fake agent speaking the real protocol, to check how the CLI maps
    //! what an agent says.

    use super::*;
    use delouse_proto::frame;
    use delouse_proto::*;

    /// Field 22 of `/proc/<pid>/stat`.
    pub fn start_time(pid: &str) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        rest.split_whitespace().nth(19).unwrap().parse().unwrap()
    }

    pub fn welcome(pid: &str, start_time: u64) -> Welcome {
        Welcome {
            protocol_version: PROTOCOL_VERSION,
            agent_version: "0.0.0-fake".into(),
            pid: pid.parse().unwrap(),
            start_time,
            exe: "/bin/sleep".into(),
            runtimes: vec![RuntimeInfo {
                name: "main".into(),
                flavor: Flavor::MultiThread,
                workers: 2,
                alive_tasks: 3,
                whole_runtime_dump: DumpPolicy::Forbidden,
            }],
            capabilities: Capabilities {
                traces: TraceSupport::Available,
                registered_tasks: 2,
            },
        }
    }

    /// What a fake agent saw.
    #[derive(Default)]
    pub struct Seen {
        /// Connections accepted.
        pub connections: AtomicUsize,
        /// Hellos read.
        pub hellos: AtomicUsize,
        /// Requests read.
        pub requests: AtomicUsize,
    }

    impl Seen {
        pub fn get(&self) -> (usize, usize, usize) {
            (
                self.connections.load(Ordering::SeqCst),
                self.hellos.load(Ordering::SeqCst),
                self.requests.load(Ordering::SeqCst),
            )
        }
    }

    /// Serves every connection: reads the hello, sends `reply`, then (after
    /// a welcome) reads one request and sends `response`.
    pub fn serve(dir: &Path, pid: &str, reply: HelloReply, response: Response) -> Arc<Seen> {
        serve_with(dir, pid, reply, move |s| {
            let _ = frame::write(s, &response);
        })
    }

    /// [`serve`], with `on_request` doing what is done with a request.
    pub fn serve_with(
        dir: &Path,
        pid: &str,
        reply: HelloReply,
        on_request: impl Fn(&mut UnixStream) + Send + 'static,
    ) -> Arc<Seen> {
        let listener = UnixListener::bind(dir.join(format!("{pid}.sock"))).unwrap();
        let seen = Arc::new(Seen::default());
        let counts = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { break };
                counts.connections.fetch_add(1, Ordering::SeqCst);
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(_hello) = frame::read::<_, Hello>(&mut s, MAX_REQUEST_FRAME) else {
                    continue;
                };
                counts.hellos.fetch_add(1, Ordering::SeqCst);
                let _ = frame::write(&mut s, &reply);
                if matches!(reply, HelloReply::Welcome(_))
                    && frame::read::<_, Request>(&mut s, MAX_REQUEST_FRAME).is_ok()
                {
                    counts.requests.fetch_add(1, Ordering::SeqCst);
                    on_request(&mut s);
                }
            }
        });
        seen
    }

    /// Threads of every kind; no module maps the addresses, so they must
    /// render as bare addresses.
    pub fn thread_dump(pid: &str) -> ThreadDump {
        let thread = |tid: u32, name: &str, stack: ThreadStack| Thread {
            tid,
            name: name.into(),
            state: 'S',
            user_ms: 1200,
            system_ms: 300,
            syscall: Some(202),
            is_agent: false,
            stack,
        };
        let pid: u32 = pid.parse().unwrap();
        let mut agent = thread(
            pid + 1,
            "delouse-agent",
            ThreadStack::NotSampled("its own thread".into()),
        );
        agent.is_agent = true;
        ThreadDump {
            threads: vec![
                thread(
                    pid,
                    "sleep",
                    ThreadStack::Frames {
                        addresses: vec![0x1234, 0x5678],
                        truncated: true,
                    },
                ),
                agent,
                thread(pid + 2, "tokio-rt-worker", ThreadStack::SignalsBlocked),
                thread(pid + 3, "tokio-rt-worker", ThreadStack::NoAnswer),
            ],
            modules: vec![],
            signal: 34,
            max_handler_ns: 2500,
            elapsed_us: 1500,
        }
    }

    pub fn dump() -> TaskDump {
        TaskDump {
            mode: TasksMode::Traced,
            // No module maps these: they must render as bare addresses.
            frames: vec![0x1234, 0x5678],
            locations: vec![Location {
                file: "/src/app/src/main.rs".into(),
                line: 7,
                column: 5,
            }],
            tasks: vec![
                Task {
                    id: Some(1),
                    spawned_at: Some(0),
                    age_ms: Some(10),
                    polls: Some(1),
                    last_poll_ago_ms: Some(1),
                    // Index 9 is out of range: garbage must not panic.
                    state: TaskState::Traced(vec![vec![0, 1], vec![9]]),
                },
                Task {
                    id: None,
                    spawned_at: Some(42),
                    age_ms: None,
                    polls: None,
                    last_poll_ago_ms: None,
                    state: TaskState::NotPolledInTime,
                },
            ],
            coverage: Coverage {
                traced: 1,
                not_polled_in_time: 1,
                finished: 0,
                alive: Some(3),
                untraced: Some(1),
                notes: vec!["a note".into()],
            },
            modules: vec![],
            elapsed_us: 1500,
        }
    }
}

/// Runs `delouse <command> <pid> --timeout 5s <args>` against a fake agent
/// that shakes hands with `reply` and answers the request with `response`.
fn run_fake_command(
    command: &str,
    reply: impl FnOnce(&str) -> delouse_proto::HelloReply,
    response: delouse_proto::Response,
    args: &[&str],
) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start(Some(dir.path()));
    let pid = sleeper.pid();
    fake::serve(dir.path(), &pid, reply(&pid), response);
    let mut full = vec![command, pid.as_str(), "--timeout", "5s"];
    full.extend_from_slice(args);
    delouse(&full).0
}

fn run_fake(
    reply: impl FnOnce(&str) -> delouse_proto::HelloReply,
    response: delouse_proto::Response,
    args: &[&str],
) -> Output {
    run_fake_command("tasks", reply, response, args)
}

fn welcome_now(pid: &str) -> delouse_proto::HelloReply {
    delouse_proto::HelloReply::Welcome(fake::welcome(pid, fake::start_time(pid)))
}

#[test]
fn fake_agent_dump_renders_without_panicking() {
    let ok = Ok(delouse_proto::Answer::Tasks(fake::dump()));
    let out = run_fake(welcome_now, ok.clone(), &["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["mode"], "traced");
    assert_eq!(json["agent_elapsed_ms"], 1.5);
    assert_eq!(json["coverage"]["notes"][0], "a note");
    let groups = json["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{json}");
    let traced = groups.iter().find(|g| g["state"] == "traced").unwrap();
    assert_eq!(traced["spawned_at"], "/src/app/src/main.rs:7:5");
    assert_eq!(traced["tree"][0]["function"], "0x5678");
    assert_eq!(traced["tree"][0]["app"], false);
    let late = groups
        .iter()
        .find(|g| g["state"] == "not_polled_in_time")
        .unwrap();
    assert!(late["spawned_at"].is_null());
    assert_eq!(late["task_ids"].as_array().unwrap().len(), 0);

    let out = run_fake(welcome_now, ok, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("╼ 0x5678"), "{text}");
    assert!(
        text.contains("hint: 1 task was not polled in time"),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "colour without a terminal:\n{text}"
    );
}

#[test]
fn a_reused_pid_is_not_its_agent() {
    let ok = Ok(delouse_proto::Answer::Tasks(fake::dump()));
    let out = run_fake(
        |pid| delouse_proto::HelloReply::Welcome(fake::welcome(pid, fake::start_time(pid) + 1)),
        ok,
        &[],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        one_line(&out).contains("belongs to an earlier process"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn agent_errors_map_to_exit_codes() {
    use delouse_proto::{AgentError, ErrorKind};
    for (kind, code) in [
        (ErrorKind::Timeout, 5),
        (ErrorKind::Unsupported, 6),
        (ErrorKind::PermissionDenied, 4),
        (ErrorKind::InProgress, 1),
        (ErrorKind::Busy, 1),
        (ErrorKind::Refused, 1),
        (ErrorKind::Internal, 1),
    ] {
        let err = Err(AgentError::new(kind, "trace in progress\nsecond line"));
        let out = run_fake(welcome_now, err, &[]);
        assert_eq!(out.status.code(), Some(code), "{kind:?}: {}", stderr(&out));
        assert!(
            one_line(&out).contains("trace in progress second line"),
            "{}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn a_rejected_hello_says_which_protocol_this_cli_speaks() {
    use delouse_proto::{AgentError, ErrorKind, HelloReply};
    let out = run_fake(
        |_| {
            HelloReply::Rejected(AgentError::new(
                ErrorKind::VersionMismatch,
                "agent speaks protocol 2",
            ))
        },
        Ok(delouse_proto::Answer::Tasks(fake::dump())),
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = one_line(&out);
    assert!(
        line.contains("agent speaks protocol 2") && line.contains("this cli speaks protocol"),
        "{line}"
    );
}

#[test]
fn a_forbidden_whole_runtime_dump_is_refused_from_the_welcome() {
    let out = run_fake(
        welcome_now,
        Ok(delouse_proto::Answer::Tasks(fake::dump())),
        &["--whole-runtime", "--yes"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(one_line(&out).contains("forbidden"), "{}", stderr(&out));
}

#[test]
fn threads_unsupported_by_the_agent_exits_6() {
    use delouse_proto::{AgentError, ErrorKind};
    let err = Err(AgentError::new(
        ErrorKind::Unsupported,
        "thread backtraces are not available in this agent",
    ));
    let out = run_fake_command("threads", welcome_now, err, &[]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let line = one_line(&out);
    assert!(
        line.contains("thread backtraces are not available in this agent"),
        "{line}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn threads_maps_agent_errors_like_tasks() {
    use delouse_proto::{AgentError, ErrorKind};
    for (kind, code) in [
        (ErrorKind::Timeout, 5),
        (ErrorKind::PermissionDenied, 4),
        (ErrorKind::InProgress, 1),
    ] {
        let err = Err(AgentError::new(kind, "no"));
        let out = run_fake_command("threads", welcome_now, err, &["--json"]);
        assert_eq!(out.status.code(), Some(code), "{kind:?}: {}", stderr(&out));
        one_line(&out);
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn an_answer_to_another_request_is_a_bug_in_the_agent() {
    let tasks_answer = Ok(delouse_proto::Answer::Tasks(fake::dump()));
    let out = run_fake_command("threads", welcome_now, tasks_answer, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = one_line(&out);
    assert!(
        line.contains("answered another question") && line.contains("bug in its agent"),
        "{line}"
    );

    let threads_answer = Ok(delouse_proto::Answer::Threads(fake::thread_dump("1")));
    let out = run_fake_command("tasks", welcome_now, threads_answer, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        one_line(&out).contains("answered another question"),
        "{}",
        stderr(&out)
    );
}

/// A fake agent whose answer is made from the sleeper's pid.
fn run_fake_threads(args: &[&str]) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start(Some(dir.path()));
    let pid = sleeper.pid();
    let answer = Ok(delouse_proto::Answer::Threads(fake::thread_dump(&pid)));
    fake::serve(dir.path(), &pid, welcome_now(&pid), answer);
    let mut full = vec!["threads", pid.as_str(), "--timeout", "5s"];
    full.extend_from_slice(args);
    (delouse(&full).0, pid)
}

#[test]
fn fake_agent_threads_render_without_panicking() {
    let (out, pid) = run_fake_threads(&["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["pid"].to_string(), pid);
    assert_eq!(json["agent_elapsed_ms"], 1.5);
    assert_eq!(json["max_handler_us"], 2.5);
    assert_eq!(json["signal"], 34);
    assert!(json["timings"]["exchange_ms"].is_f64());
    assert!(json["timings"]["symbolize_ms"].is_f64());
    let threads = json["threads"].as_array().unwrap();
    assert_eq!(threads.len(), 4);
    let main = &threads[0];
    assert_eq!(main["role"], "main");
    assert_eq!(main["stack"], "frames");
    assert_eq!(main["truncated"], true);
    assert_eq!(main["frames"][0]["function"], "0x1234");
    assert_eq!(main["frames"][0]["address"], "0x1234");
    assert_eq!(main["frames"][1]["function"], "0x5678");
    assert_eq!(main["frames"][1]["app"], false);
    assert!(main["frames"][1]["file"].is_null());
    let roles: Vec<&str> = threads
        .iter()
        .map(|t| t["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["main", "delouse agent", "tokio", "tokio"]);
    let stacks: Vec<&str> = threads
        .iter()
        .map(|t| t["stack"].as_str().unwrap())
        .collect();
    assert_eq!(
        stacks,
        ["frames", "not sampled", "signals blocked", "no answer"]
    );

    let (out, _) = run_fake_threads(&["--name", "tokio", "--group"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("4 threads"), "{text}");
    assert!(
        text.contains("showing 2 of 4: name contains \"tokio\""),
        "{text}"
    );
    assert!(text.contains("signals blocked: not interrupted"), "{text}");
    assert!(text.contains("no answer before the deadline"), "{text}");
    assert!(!text.contains("delouse-agent"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour without a terminal:\n{text}"
    );

    let (out, _) = run_fake_threads(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("#0  0x1234"), "{text}");
    assert!(text.contains("… (stack walk stopped here)"), "{text}");
    assert!(text.contains("not sampled: its own thread"), "{text}");
}

/// Whether this test runs as root (and may chown files and switch users).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(2).map(|u| u == "0")
        })
        .unwrap_or(false)
}

/// Root, with `setpriv` to start a process as another user.
fn can_switch_users() -> bool {
    is_root()
        && Command::new("setpriv")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// `n` distinct PIDs with no process.
/// PIDs no process has now and none will get soon: free ones just below
/// the kernel's last handed-out PID, which it reaches again only after
/// wrapping around `pid_max`.
fn unused_pids(n: usize) -> Vec<u32> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    (300..last)
        .rev()
        .filter(|p| !Path::new(&format!("/proc/{p}")).exists())
        .take(n)
        .collect()
}

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

/// `delouse <args>` with `DELOUSE_SOCKET_DIR` set (for `ps`).
/// Runs the CLI with `dir` as its socket directory and as `TMPDIR`, so that
/// the fallback directories it also looks in (`$TMPDIR/delouse-<uid>`) hold
/// none of the machine's real sockets.
fn delouse_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("DELOUSE_SOCKET_DIR", dir)
        .env("TMPDIR", dir)
        .env_remove("XDG_RUNTIME_DIR")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn sockets_another_user_planted_are_not_trusted() {
    if !can_switch_users() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    use std::os::unix::fs::chown;
    let (target, planter) = (1001, 1002);
    for (dir_owner, socket_owner) in [(target, planter), (planter, target), (target, target)] {
        let dir = tempfile::tempdir().unwrap();
        let sleeper = Sleeper::start_as(Some(dir.path()), Some(target));
        let pid = sleeper.pid();
        let socket = dir.path().join(format!("{pid}.sock"));
        let seen = fake::serve(
            dir.path(),
            &pid,
            welcome_now(&pid),
            Ok(delouse_proto::Answer::Tasks(fake::dump())),
        );
        chown(&socket, Some(socket_owner), Some(socket_owner)).unwrap();
        chown(dir.path(), Some(dir_owner), Some(dir_owner)).unwrap();
        let (out, _) = delouse(&["tasks", &pid, "--timeout", "5s"]);
        if (dir_owner, socket_owner) == (target, target) {
            assert!(out.status.success(), "{}", stderr(&out));
            continue;
        }
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        let line = one_line(&out);
        let expected = if socket_owner == planter {
            format!(
                "{} is owned by uid {planter}, not the target's uid {target}: refusing to trust it",
                socket.display()
            )
        } else {
            format!(
                "socket directory {} is owned by uid {planter}, not the target's uid {target}: refusing to \
                 trust {}",
                dir.path().display(),
                socket.display()
            )
        };
        assert!(line.contains(&expected), "{line}");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(seen.get().0, 0, "it connected to an untrusted socket");
    }
}

#[test]
fn a_file_that_is_not_a_socket_is_not_connected_to() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start(Some(dir.path()));
    let pid = sleeper.pid();
    std::fs::write(dir.path().join(format!("{pid}.sock")), "").unwrap();
    let (out, _) = delouse(&["tasks", &pid]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let line = one_line(&out);
    assert!(
        line.contains("is not a socket (it is a regular file): refusing to trust it"),
        "{line}"
    );
}

#[test]
fn ps_lists_only_sockets_owned_by_the_owner_of_their_process() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start(Some(dir.path()));
    let pid = sleeper.pid();
    let seen = fake::serve(
        dir.path(),
        &pid,
        welcome_now(&pid),
        Ok(delouse_proto::Answer::Tasks(fake::dump())),
    );
    let listed = |out: &Output| {
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a json array");
        json.as_array()
            .unwrap()
            .iter()
            .any(|a| a["pid"].as_u64().is_some_and(|p| p.to_string() == pid))
    };
    let out = delouse_in(dir.path(), &["ps", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        listed(&out),
        "the fake agent is not listed: {}",
        stderr(&out)
    );
    if !is_root() {
        eprintln!("skipped the rest: needs root to chown");
        return;
    }
    use std::os::unix::fs::chown;
    let socket = dir.path().join(format!("{pid}.sock"));
    // Someone else's socket in the directory: not the directory owner's.
    chown(&socket, Some(1002), Some(1002)).unwrap();
    let out = delouse_in(dir.path(), &["ps", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!listed(&out), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        stderr(&out).contains("is owned by uid 1002, not uid 0 who owns"),
        "{}",
        stderr(&out)
    );
    // A directory and socket of uid 1002, for a process of root.
    chown(dir.path(), Some(1002), Some(1002)).unwrap();
    let hellos = seen.get().1;
    let out = delouse_in(dir.path(), &["ps", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!listed(&out), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        stderr(&out).contains(&format!(
            "is owned by uid 1002, but pid {pid} runs as uid 0: not trusted as its agent"
        )),
        "{}",
        stderr(&out)
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        seen.get().1,
        hellos,
        "it shook hands with an untrusted socket"
    );
    // And --clean leaves it: something listens there.
    let out = delouse_in(dir.path(), &["ps", "--clean"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(socket.exists());
}

#[test]
fn ps_clean_removes_only_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let pids = unused_pids(5);
    let path = |i: usize| dir.path().join(format!("{}.sock", pids[i]));
    std::fs::write(path(0), "keep me").unwrap();
    std::fs::create_dir(path(1)).unwrap();
    mkfifo(&path(2));
    // A link to a dead socket elsewhere.
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("x.sock");
    drop(UnixListener::bind(&target).unwrap());
    std::os::unix::fs::symlink(&target, path(3)).unwrap();
    drop(UnixListener::bind(path(4)).unwrap());

    let out = delouse_in(dir.path(), &["ps", "--clean"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    for (i, what) in [
        (0, "a regular file"),
        (1, "a directory"),
        (2, "a fifo"),
        (3, "a symbolic link"),
    ] {
        assert!(
            std::fs::symlink_metadata(path(i)).is_ok(),
            "{what} was removed: {err}"
        );
        assert!(
            err.contains(&format!(
                "{} is not a socket (it is {what}): ignored",
                path(i).display()
            )),
            "{err}"
        );
    }
    assert_eq!(std::fs::read_to_string(path(0)).unwrap(), "keep me");
    assert!(target.exists(), "the link's target was removed");
    assert!(!path(4).exists(), "the stale socket is still there: {err}");
    assert!(err.contains("removed 1 stale socket"), "{err}");
}

fn welcome_allowing_dumps(pid: &str) -> delouse_proto::HelloReply {
    let mut w = fake::welcome(pid, fake::start_time(pid));
    w.runtimes[0].whole_runtime_dump = delouse_proto::DumpPolicy::Allowed;
    delouse_proto::HelloReply::Welcome(w)
}

#[test]
fn whole_runtime_checks_the_target_before_asking() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start(Some(dir.path()));
    let pid = sleeper.pid();
    let mut dump = fake::dump();
    dump.mode = delouse_proto::TasksMode::WholeRuntime { runtime: None };
    let seen = fake::serve(
        dir.path(),
        &pid,
        welcome_allowing_dumps(&pid),
        Ok(delouse_proto::Answer::Tasks(dump)),
    );
    // A runtime it does not have is said at once, not after a question.
    let (out, _) = delouse(&[
        "tasks",
        &pid,
        "--whole-runtime",
        "--runtime",
        "nope",
        "--timeout",
        "5s",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = one_line(&out);
    assert!(line.contains("has no runtime named `nope`"), "{line}");
    assert!(line.contains("it has main"), "{line}");
    assert!(!line.contains("--yes"), "{line}");
    // Everything checks out, but there is no terminal to ask on: no request.
    let (out, elapsed) = delouse(&["tasks", &pid, "--whole-runtime", "--timeout", "5s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(one_line(&out).contains("--yes"), "{}", stderr(&out));
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(seen.get(), (2, 2, 0));
    // With --yes: one connection, one request.
    let (out, _) = delouse(&["tasks", &pid, "--whole-runtime", "--yes", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(seen.get(), (3, 3, 1));
}

#[test]
fn a_target_that_exits_while_answering_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start(Some(dir.path()));
    let pid = sleeper.pid();
    let victim = pid.clone();
    fake::serve_with(dir.path(), &pid, welcome_now(&pid), move |_| {
        let _ = Command::new("kill").args(["-9", &victim]).status();
        // Until it is a zombie (its parent, this test, reaps it later).
        let start = Instant::now();
        while std::fs::read_to_string(format!("/proc/{victim}/stat"))
            .is_ok_and(|s| !s[s.rfind(')').unwrap() + 1..].trim_start().starts_with('Z'))
            && start.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let (out, _) = delouse(&["tasks", &pid, "--timeout", "5s"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let line = one_line(&out);
    assert!(
        line.contains(&format!("pid {pid} exited while answering")),
        "{line}"
    );
}

#[test]
fn a_thread_id_names_its_process() {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let link = std::fs::read_link("/proc/thread-self").unwrap();
        let tid: u32 = link.file_name().unwrap().to_str().unwrap().parse().unwrap();
        tx.send(tid).unwrap();
        let _ = stop_rx.recv();
    });
    let tid = rx.recv().unwrap();
    let me = std::process::id();
    assert_ne!(tid, me);
    let (out, _) = delouse(&["tasks", &tid.to_string()]);
    drop(stop_tx);
    thread.join().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let line = one_line(&out);
    assert!(
        line.contains(&format!("{tid} is a thread of process {me}; use pid {me}")),
        "{line}"
    );
}

#[test]
fn timeouts_that_cannot_work_are_explained() {
    for (arg, says) in [
        ("inf", "durations must be finite"),
        ("0.0001s", "too short: the least is 1ms"),
        ("soon", "expected a number and a unit"),
    ] {
        let (out, _) = delouse(&["tasks", "1", "--timeout", arg]);
        assert_eq!(out.status.code(), Some(2), "{arg}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{arg}: {}", stderr(&out));
    }
    // A space between the number and its unit is fine.
    let pid = unused_pid().to_string();
    for arg in ["10 s", "1m 30s"] {
        let (out, _) = delouse(&["tasks", &pid, "--timeout", arg]);
        assert_eq!(out.status.code(), Some(3), "{arg}: {}", stderr(&out));
    }
}

#[test]
fn module_paths_from_the_agent_are_not_opened_blindly() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start(Some(dir.path()));
    let pid = sleeper.pid();
    let fifo = dir.path().join("evil.so");
    mkfifo(&fifo);
    let mut dump = fake::thread_dump(&pid);
    let module = |path: &str, start: u64| delouse_proto::Module {
        path: path.into(),
        start,
        end: start + 0x1000,
        file_offset: 0,
    };
    dump.modules = vec![
        module(&fifo.display().to_string(), 0x1000),
        module("/dev/zero", 0x5000),
    ];
    fake::serve(
        dir.path(),
        &pid,
        welcome_now(&pid),
        Ok(delouse_proto::Answer::Threads(dump)),
    );
    let (out, elapsed) = delouse(&["threads", &pid, "--timeout", "3s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("#0  0x1234 (evil.so+0x234)"), "{text}");
    assert!(text.contains("0x5678 (zero+0x677)"), "{text}");
    assert!(
        stderr(&out).contains("2 modules the agent named are not mapped so in /proc/"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn text_from_a_hostile_agent_cannot_drive_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start(Some(dir.path()));
    let pid = sleeper.pid();
    let mut dump = fake::thread_dump(&pid);
    dump.threads[0].name = "sleep\u{1b}]0;pwned\u{7}\u{1b}[2J\u{202e}".into();
    fake::serve(
        dir.path(),
        &pid,
        welcome_now(&pid),
        Ok(delouse_proto::Answer::Threads(dump)),
    );
    let (out, _) = delouse(&["threads", &pid, "--timeout", "5s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for c in ['\u{1b}', '\u{7}', '\u{202e}'] {
        assert!(!text.contains(c), "{c:?} in {text}");
    }
    assert!(
        text.contains("\"sleep\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{202e}\""),
        "{text}"
    );
    let (out, _) = delouse(&["threads", &pid, "--timeout", "5s", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["threads"][0]["name"],
        "sleep\u{1b}]0;pwned\u{7}\u{1b}[2J\u{202e}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains('\u{1b}'));

    use delouse_proto::{AgentError, ErrorKind};
    let err = Err(AgentError::new(
        ErrorKind::Refused,
        "no\u{1b}[2J\u{9b}31m\rrewritten",
    ));
    let out = run_fake(welcome_now, err, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = one_line(&out);
    for c in ['\u{1b}', '\u{9b}', '\r'] {
        assert!(!line.contains(c), "{c:?} in {line}");
    }
    assert!(line.contains("no\\u{1b}[2J\\u{9b}31m rewritten"), "{line}");
}

#[test]
fn an_agents_own_advice_is_not_doubled() {
    use delouse_proto::{AgentError, ErrorKind};
    for (kind, message) in [
        (ErrorKind::Busy, "agent is busy with 8 clients; try again"),
        (
            ErrorKind::InProgress,
            "trace in progress: another client is tracing; try again when it is done",
        ),
    ] {
        let out = run_fake(welcome_now, Err(AgentError::new(kind, message)), &[]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let line = one_line(&out);
        assert_eq!(line.matches("try again").count(), 1, "{line}");
        assert!(line.contains(message), "{line}");
        assert_eq!(line.matches("(agent in pid").count(), 1, "{line}");
    }
}
