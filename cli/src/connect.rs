//! Finding an agent's socket, connecting, the handshake, and one request.
//!
//! Every blocking step (connect, each read, each write) is bounded by one
//! overall deadline, so a wedged agent or something that is not an agent at
//! all (a `socat` listener, garbage, a huge declared frame) ends in a clear
//! error instead of a hang.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use delouse_proto::frame::{self, FrameError};
use delouse_proto::location::{self, DirEnv};
use delouse_proto::{
    AgentError, Answer, ErrorKind, Hello, HelloReply, MAX_RESPONSE_FRAME, PROTOCOL_VERSION,
    Request, RequestKind, Response, Welcome,
};

use crate::error::{CliError, Result, io_text, is_timeout};
use crate::format::human_duration;
use crate::procfs;
use crate::trust::{self, Refusal};

/// This CLI's version, sent in the [`Hello`].
pub const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Largest [`HelloReply`] accepted. A welcome is a few hundred bytes; a
/// small cap makes a non-agent that declares a huge frame fail at once.
const MAX_HELLO_REPLY: u32 = 1024 * 1024;

/// Longest path `connect(2)` takes (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A point in time every step of one command must finish by.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    total: Duration,
}

impl Deadline {
    /// `total` from now.
    pub fn after(total: Duration) -> Self {
        Deadline {
            at: Instant::now() + total,
            total,
        }
    }

    /// Time left (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// The whole budget, for messages.
    pub fn total(&self) -> Duration {
        self.total
    }

    /// The `deadline_ms` to send with a request: what is left, minus a margin
    /// (10%, at least 200 ms, at most half) so that the agent answers, possibly
    /// partially, before this side gives up.
    pub fn request_ms(&self) -> u32 {
        request_ms(self.remaining())
    }
}

fn request_ms(remaining: Duration) -> u32 {
    let margin = (remaining / 10)
        .max(Duration::from_millis(200))
        .min(remaining / 2);
    let ms = (remaining - margin).as_millis();
    u32::try_from(ms).unwrap_or(u32::MAX).max(1)
}

/// A socket whose every read and write is bounded by a [`Deadline`].
#[derive(Debug)]
pub struct DeadlineStream {
    stream: UnixStream,
    deadline: Deadline,
}

impl DeadlineStream {
    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.remaining();
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        // A zero timeout means "none" to the socket API: never send it.
        Ok(left.max(Duration::from_millis(1)))
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.stream.set_write_timeout(Some(left))?;
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// Why a socket path could not be connected to.
#[derive(Debug)]
pub enum ConnectError {
    /// No file there.
    NotFound,
    /// This user may not reach it.
    PermissionDenied,
    /// A socket file nobody listens on: its agent is gone.
    Refused,
    /// The connect did not complete in time (the agent's backlog is full).
    TimedOut,
    /// Anything else.
    Other(io::Error),
}

impl ConnectError {
    fn from_io(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::NotFound => ConnectError::NotFound,
            io::ErrorKind::PermissionDenied => ConnectError::PermissionDenied,
            io::ErrorKind::ConnectionRefused => ConnectError::Refused,
            _ if is_timeout(&e) => ConnectError::TimedOut,
            _ => ConnectError::Other(e),
        }
    }
}

fn connect_now(path: &Path) -> io::Result<UnixStream> {
    if path.as_os_str().len() <= MAX_SOCKET_PATH {
        return UnixStream::connect(path);
    }
    // Too long for `sun_path`: reach the file through the directory's file
    // descriptor, which gives a short path.
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return UnixStream::connect(path);
    };
    let dir = std::fs::File::open(parent)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    if short.as_os_str().as_bytes().len() > MAX_SOCKET_PATH {
        return UnixStream::connect(path);
    }
    let stream = UnixStream::connect(&short);
    drop(dir);
    stream
}

/// Connects to the socket at `path`, giving up after `timeout`.
///
/// `connect(2)` on a Unix socket blocks while the listener's backlog is full
/// (an agent that stopped accepting), and std offers no timeout for it, so the
/// connect runs on a helper thread that is abandoned if it takes too long.
#[cfg(test)]
pub fn connect(path: &Path, timeout: Duration) -> std::result::Result<UnixStream, ConnectError> {
    connect_keeping(path, None, timeout)
}

/// Connects to a checked socket, through its directory's descriptor.
pub fn connect_to(
    socket: &trust::Socket,
    timeout: Duration,
) -> std::result::Result<UnixStream, ConnectError> {
    connect_keeping(&socket.inner(), Some(socket.dir.handle()), timeout)
}

/// [`connect`]; `keep` is held by the helper thread for as long as it
/// uses `path` (which may name a descriptor of it).
fn connect_keeping(
    path: &Path,
    keep: Option<Arc<File>>,
    timeout: Duration,
) -> std::result::Result<UnixStream, ConnectError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => {}
        Err(e) => return Err(ConnectError::from_io(e)),
    }
    let (tx, rx) = mpsc::channel();
    let owned = path.to_owned();
    let spawned = std::thread::Builder::new()
        .name("delouse-connect".into())
        .spawn(move || {
            let _keep = keep;
            let _ = tx.send(connect_now(&owned));
        });
    if spawned.is_err() {
        // No thread to spare: connect on this one.
        return connect_now(path).map_err(ConnectError::from_io);
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(ConnectError::from_io(e)),
        Err(_) => Err(ConnectError::TimedOut),
    }
}

/// Why a handshake failed.
#[derive(Debug)]
pub enum HandshakeError {
    /// No (whole) answer before the deadline.
    Timeout,
    /// The peer does not speak the protocol: the text says what was seen.
    NotAnAgent(String),
    /// The agent refused this client.
    Rejected(AgentError),
    /// The socket failed.
    Io(io::Error),
}

fn classify_handshake(e: FrameError) -> HandshakeError {
    match e {
        FrameError::Io(e) if is_timeout(&e) => HandshakeError::Timeout,
        FrameError::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) =>
        {
            HandshakeError::NotAnAgent("it closed the connection".into())
        }
        FrameError::Io(e) => HandshakeError::Io(e),
        FrameError::Closed => {
            HandshakeError::NotAnAgent("it closed the connection without a reply".into())
        }
        FrameError::TooLarge { len, .. } => {
            HandshakeError::NotAnAgent(format!("its first message declares {len} bytes"))
        }
        FrameError::Decode(_) => {
            HandshakeError::NotAnAgent("its reply is not a delouse welcome".into())
        }
        FrameError::Encode(e) => HandshakeError::Io(io::Error::other(e.to_string())),
    }
}

/// Sends the [`Hello`] and reads the agent's reply.
pub fn handshake(stream: &mut DeadlineStream) -> std::result::Result<Welcome, HandshakeError> {
    if let Err(e) = frame::write(stream, &Hello::new(CLIENT_VERSION)) {
        let closed = matches!(
            &e,
            FrameError::Io(io) if matches!(
                io.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            )
        );
        if !closed {
            return Err(classify_handshake(e));
        }
        // An agent over its connection cap (or refusing this uid) writes
        // its refusal and closes, maybe before the hello arrives: the
        // refusal is still there to read.
        return match frame::read::<_, HelloReply>(stream, MAX_HELLO_REPLY) {
            Ok(HelloReply::Rejected(refusal)) => Err(HandshakeError::Rejected(refusal)),
            Ok(HelloReply::Welcome(_)) | Err(_) => Err(classify_handshake(e)),
        };
    }
    let reply: HelloReply = frame::read(stream, MAX_HELLO_REPLY).map_err(classify_handshake)?;
    match reply {
        HelloReply::Welcome(w) => Ok(w),
        HelloReply::Rejected(e) => Err(HandshakeError::Rejected(e)),
    }
}

/// Which side to upgrade when the two protocol versions differ.
pub fn version_advice(agent_protocol: u32) -> String {
    if agent_protocol > PROTOCOL_VERSION {
        format!(
            "the agent speaks protocol {agent_protocol}, this cli ({CLIENT_VERSION}) speaks {PROTOCOL_VERSION}: \
             upgrade the delouse cli"
        )
    } else {
        format!(
            "the agent speaks protocol {agent_protocol}, this cli ({CLIENT_VERSION}) speaks {PROTOCOL_VERSION}: \
             upgrade the delouse crate in the target, or use an older delouse cli"
        )
    }
}

/// Why `pid` cannot answer at all, when it is stopped: no thread of it runs,
/// the agent's included.
fn stopped(pid: u32) -> Option<String> {
    let (state, _) = procfs::state_and_start_time(pid).ok()?;
    match state {
        'T' => Some(format!(
            "the process is stopped (state T, by SIGSTOP or a job control signal): resume it with `kill -CONT {pid}`"
        )),
        't' => Some(
            "the process is stopped by a debugger or tracer (state t): detach it (or `continue` in gdb) and retry"
                .to_owned(),
        ),
        _ => None,
    }
}

/// A handshake error as a [`CliError`].
pub fn handshake_error(
    e: HandshakeError,
    pid: u32,
    socket: &Path,
    deadline: &Deadline,
) -> CliError {
    let socket = socket.display();
    match e {
        HandshakeError::Timeout if let Some(why) = stopped(pid) => CliError::timeout(format!(
            "no handshake from pid {pid} within {}: {why}",
            human_duration(deadline.total())
        )),
        HandshakeError::Timeout => CliError::timeout(format!(
            "no handshake from pid {pid} within {}: {socket}: the agent may be busy with a long request (retry \
             with a longer --timeout) or stuck, or something other than a delouse agent listens there",
            human_duration(deadline.total())
        )),
        HandshakeError::NotAnAgent(what) => CliError::no_agent(format!(
            "not a delouse agent ({what}): {socket}: something else listens there, or its agent is far older or \
             newer than this cli ({CLIENT_VERSION})"
        )),
        HandshakeError::Rejected(err) => match err.kind {
            ErrorKind::VersionMismatch => CliError::error(format!(
                "the agent in pid {pid} refused this cli: {} (this cli speaks protocol {PROTOCOL_VERSION}, \
                 version {CLIENT_VERSION})",
                crate::error::one_line(&err.message)
            )),
            _ => CliError::from_agent(&err, pid),
        },
        HandshakeError::Io(e) => CliError::error(format!(
            "handshake with pid {pid} failed: {socket}: {}",
            io_text(&e)
        )),
    }
}

/// An open connection past a successful handshake.
#[derive(Debug)]
pub struct Connection {
    stream: DeadlineStream,
    deadline: Deadline,
    /// The PID as the CLI sees it.
    pub pid: u32,
    /// The socket it came through.
    pub socket: PathBuf,
    /// What the agent said about itself.
    pub welcome: Welcome,
}

impl Connection {
    /// The deadline the connection was opened with.
    pub fn deadline(&self) -> Deadline {
        self.deadline
    }

    /// Sends one request and reads its answer.
    pub fn request(mut self, kind: RequestKind) -> Result<Answer> {
        let pid = self.pid;
        let request = Request {
            deadline_ms: self.deadline.request_ms(),
            kind,
        };
        let total = human_duration(self.deadline.total());
        let start_time = self.welcome.start_time;
        let exited = || {
            CliError::no_agent(format!(
                "pid {pid} exited while answering (its agent closed the connection)"
            ))
        };
        let sent = frame::write(&mut self.stream, &request);
        if let Err(e) = sent {
            return Err(match e {
                FrameError::Io(e) if is_timeout(&e) => CliError::timeout(format!(
                    "pid {pid} did not take the request within {total}: the agent may be stuck"
                )),
                _ if target_exited(pid, start_time) => exited(),
                e => {
                    let why = match e {
                        FrameError::Io(e) => io_text(&e),
                        e => e.to_string(),
                    };
                    CliError::error(format!(
                        "sending the request to pid {pid} failed ({why}): {}: the agent may have closed the \
                         connection; retry",
                        self.socket.display()
                    ))
                }
            });
        }
        let response: Response = frame::read(&mut self.stream, MAX_RESPONSE_FRAME).map_err(|e| match e {
            FrameError::Io(e) if is_timeout(&e) => match stopped(pid) {
                Some(why) => CliError::timeout(format!("pid {pid} did not answer within {total}: {why}")),
                None => CliError::timeout(format!(
                    "pid {pid} did not answer within {total}: retry with a longer --timeout"
                )),
            },
            FrameError::Io(e) if is_closed(&e) && target_exited(pid, start_time) => exited(),
            FrameError::Io(e) => CliError::error(format!(
                "reading the answer of pid {pid} failed: {}: {}",
                self.socket.display(),
                io_text(&e)
            )),
            FrameError::Closed if target_exited(pid, start_time) => exited(),
            FrameError::Closed => CliError::error(format!(
                "the agent in pid {pid} closed the connection before answering: {}: it may have failed; see the \
                 target's stderr",
                self.socket.display()
            )),
            FrameError::TooLarge { len, max } => CliError::error(format!(
                "the answer of pid {pid} declares {len} bytes, over this cli's {max}-byte limit: {}: ask for less",
                self.socket.display()
            )),
            FrameError::Decode(_) | FrameError::Encode(_) => CliError::error(format!(
                "undecodable answer from pid {pid} (agent {}, cli {CLIENT_VERSION}): {}: use a cli of the agent's \
                 version",
                crate::sanitize::escape(&self.welcome.agent_version),
                self.socket.display()
            )),
        })?;
        response.map_err(|e| CliError::from_agent(&e, pid))
    }
}

/// Whether an I/O error means the peer closed the connection.
fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
    )
}

/// How long to wait for a process whose agent hung up to show as exited:
/// its sockets close before it becomes a zombie.
const EXIT_GRACE: Duration = Duration::from_millis(300);

/// Whether the process that started at `start_time` at `pid` has exited
/// (gone, a zombie, or another process at that pid now), waiting a moment
/// for it.
fn target_exited(pid: u32, start_time: u64) -> bool {
    let until = Instant::now() + EXIT_GRACE;
    loop {
        match procfs::state_and_start_time(pid) {
            Err(_) => return true,
            Ok((state, start)) if start != start_time || matches!(state, 'Z' | 'X' | 'x') => {
                return true;
            }
            Ok(_) => {}
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The error for an answer of another kind than the request's (`asked`):
/// the agent mixed up its answers, which is a bug.
pub fn wrong_answer(pid: u32, asked: &str, answer: &Answer) -> CliError {
    let got = match answer {
        Answer::Tasks(_) => "tasks",
        Answer::Threads(_) => "threads",
        Answer::Build(_) => "build facts",
        Answer::Crash(_) => "a crash report",
    };
    CliError::error(format!(
        "pid {pid} answered another question (asked for {asked}, got {got}): this is a bug in its agent"
    ))
}

/// Opens a stream on `path` bounded by `deadline` and does the handshake.
/// The outer error is a failed connect; the inner one a failed handshake.
type Opened = Result<(DeadlineStream, Welcome)>;

fn open_socket(
    pid: u32,
    socket: &trust::Socket,
    deadline: Deadline,
) -> std::result::Result<Opened, ConnectError> {
    let stream = connect_to(socket, deadline.remaining())?;
    let mut stream = DeadlineStream { stream, deadline };
    Ok(handshake(&mut stream)
        .map(|w| (stream, w))
        .map_err(|e| handshake_error(e, pid, &socket.path, &deadline)))
}

/// The target's socket directories, in the order the agent tried them.
pub fn target_dirs(pid: u32, uid: u32) -> Vec<PathBuf> {
    let env = procfs::environ(pid).map_or_else(DirEnv::current, |e| DirEnv::from_environ(&e));
    location::candidate_dirs(uid, &env, Path::new("/"))
}

/// `a, b and c`.
pub fn list_paths(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Finds the agent of `pid`, connects and shakes hands, all by `deadline`.
///
/// Only a socket the target's uid owns, in a directory that uid owns, is
/// connected to (see [`trust`]): anyone may create `/tmp/delouse-<uid>`
/// before the target does, and a root CLI must not talk to what they put
/// there.
pub fn open(pid: u32, deadline: Deadline) -> Result<Connection> {
    let no_process = || {
        CliError::no_agent(format!(
            "no process with pid {pid}: check the pid (`delouse ps` lists agents)"
        ))
    };
    if !procfs::exists(pid) {
        return Err(no_process());
    }
    if let Some(tgid) = procfs::thread_of(pid) {
        return Err(CliError::no_agent(format!(
            "{pid} is a thread of process {tgid}; use pid {tgid}"
        )));
    }
    let uid = match procfs::effective_uid(&pid.to_string()) {
        Ok(uid) => uid,
        Err(_) if !procfs::exists(pid) => return Err(no_process()),
        Err(e) => {
            return Err(CliError::error(format!(
                "cannot read /proc/{pid}/status: {}: is /proc mounted?",
                io_text(&e)
            )));
        }
    };
    let start_time = procfs::start_time(pid).map_err(|_| no_process())?;
    let dirs = target_dirs(pid, uid);
    let root = procfs::root(pid);
    let name = location::socket_file_name(pid);
    // In a container the agent names its socket with its own PID, seen
    // through the target's root.
    let ns_name = procfs::namespace_pid(pid)
        .filter(|&ns| ns != pid)
        .map(location::socket_file_name);

    // The target's `/` is usually ours; then its root adds nothing to look at.
    let same_root = same_file(&root, Path::new("/"));
    let mut stale: Option<PathBuf> = None;
    let mut denied: Option<PathBuf> = None;
    let mut root_denied = false;
    let mut other: Option<CliError> = None;
    let mut untrusted: Option<String> = None;
    for dir in &dirs {
        let inside = (!same_root).then(|| location::reroot(&root, dir));
        let candidates = [
            (Some((dir.clone(), name.clone())), false),
            (inside.clone().map(|d| (d, name.clone())), true),
            (inside.zip(ns_name.clone()), true),
        ];
        for (candidate, through_root) in candidates {
            let Some((dir, file_name)) = candidate else {
                continue;
            };
            let path = dir.join(&file_name);
            let mut note_denied = |path: PathBuf| {
                if through_root {
                    root_denied = true;
                } else {
                    denied.get_or_insert(path);
                }
            };
            let dir = match trust::Dir::open(&dir) {
                Ok(d) => d,
                Err(e) => {
                    match e.kind() {
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {}
                        io::ErrorKind::PermissionDenied => note_denied(path),
                        _ => {
                            other.get_or_insert_with(|| {
                                CliError::error(format!(
                                    "cannot open {}: {}",
                                    dir.display(),
                                    io_text(&e)
                                ))
                            });
                        }
                    }
                    continue;
                }
            };
            let socket = match trust::check(&dir, file_name.as_ref(), uid) {
                Ok(s) => s,
                Err(Refusal::Missing) => continue,
                Err(Refusal::Denied) => {
                    note_denied(path);
                    continue;
                }
                Err(Refusal::Untrusted(why)) => {
                    untrusted.get_or_insert(why);
                    continue;
                }
                Err(Refusal::Io(e)) => {
                    other.get_or_insert_with(|| {
                        CliError::error(format!(
                            "cannot look at {}: {}",
                            path.display(),
                            io_text(&e)
                        ))
                    });
                    continue;
                }
            };
            // A stopped process cannot answer: say so now rather than
            // after the whole timeout.
            if let Some(why) = stopped(pid) {
                return Err(CliError::timeout(format!("pid {pid} cannot answer: {why}")));
            }
            match open_socket(pid, &socket, deadline) {
                Ok(Ok((stream, welcome))) => {
                    check_welcome(pid, &path, start_time, &welcome)?;
                    return Ok(Connection {
                        stream,
                        deadline,
                        pid,
                        socket: path,
                        welcome,
                    });
                }
                Ok(Err(e)) => return Err(e),
                Err(ConnectError::NotFound) => {}
                Err(ConnectError::PermissionDenied) => note_denied(path),
                Err(ConnectError::Refused) => {
                    stale.get_or_insert(path);
                }
                Err(ConnectError::TimedOut) => {
                    let total = deadline.total();
                    let short = if total < Duration::from_secs(1) {
                        format!(" (or --timeout {} is too short)", human_duration(total))
                    } else {
                        String::new()
                    };
                    return Err(CliError::timeout(format!(
                        "connecting to pid {pid} did not complete within {}: {}: its agent is not accepting \
                         connections{short}",
                        human_duration(total),
                        path.display()
                    )));
                }
                Err(ConnectError::Other(e)) => {
                    other.get_or_insert_with(|| {
                        CliError::error(format!(
                            "cannot connect to pid {pid}: {}: {}",
                            path.display(),
                            io_text(&e)
                        ))
                    });
                }
            }
        }
    }
    if let Some(path) = stale {
        return Err(CliError::no_agent(format!(
            "stale socket {}: no agent listens there (the process that made it has exited, or its agent stopped): \
             run `delouse ps --clean` to remove stale sockets",
            path.display()
        )));
    }
    let own = procfs::own_uid();
    let other_user = own != 0 && own != uid;
    if let Some(path) = denied.or_else(|| (root_denied && other_user).then(|| root.clone())) {
        let advice = if other_user {
            format!("pid {pid} runs as uid {uid}: run delouse as that user or as root")
        } else {
            "check the directory's owner and mode".to_owned()
        };
        return Err(CliError::permission(format!(
            "permission denied: {}: {advice}",
            path.display()
        )));
    }
    if let Some(e) = other {
        return Err(e);
    }
    if let Some(why) = untrusted {
        return Err(CliError::no_agent(why));
    }
    let unseen = if root_denied {
        format!(
            "; could not look inside {}: permission denied",
            root.display()
        )
    } else {
        String::new()
    };
    Err(CliError::no_agent(format!(
        "no delouse agent in process {pid} (looked in {}{unseen}): does it call delouse::init()?",
        list_paths(&dirs)
    )))
}

/// Whether two paths name the same file (false when either is unreadable).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Checks that `welcome` comes from the process now at `pid`.
fn check_welcome(pid: u32, socket: &Path, start_time: u64, welcome: &Welcome) -> Result<()> {
    if welcome.protocol_version != PROTOCOL_VERSION {
        return Err(CliError::error(format!(
            "protocol mismatch with pid {pid}: {}",
            version_advice(welcome.protocol_version)
        )));
    }
    if welcome.start_time != start_time {
        return Err(CliError::no_agent(format!(
            "socket {} belongs to an earlier process with pid {pid}: the pid was reused (or the socket comes from \
             another pid namespace); no agent runs in the process now at that pid",
            socket.display()
        )));
    }
    Ok(())
}

/// What a quick look at one socket file found (for `delouse ps`).
#[derive(Debug)]
pub enum Probe {
    /// A live agent of the process now at that PID.
    Live(Box<Welcome>),
    /// Nobody listens: safe to remove.
    Dead,
    /// Something listens, but not for the process now at that PID (gone, or
    /// started at another time: another PID namespace, or a reused PID).
    Foreign,
    /// The file vanished while looking.
    Gone,
    /// Could not tell: the text says why.
    Unknown(CliError),
}

/// Probes the socket of `pid` within `timeout`.
pub fn probe(pid: u32, socket: &trust::Socket, timeout: Duration) -> Probe {
    let path = &socket.path;
    let deadline = Deadline::after(timeout);
    let start_time = procfs::start_time(pid).ok();
    let stream = match connect_to(socket, timeout) {
        Ok(s) => s,
        Err(ConnectError::NotFound) => return Probe::Gone,
        Err(ConnectError::Refused) => return Probe::Dead,
        Err(ConnectError::PermissionDenied) => {
            return Probe::Unknown(CliError::permission(format!(
                "permission denied: {}",
                path.display()
            )));
        }
        Err(ConnectError::TimedOut) => {
            return Probe::Unknown(CliError::timeout(format!(
                "pid {pid} did not accept a connection within {}: {}",
                human_duration(timeout),
                path.display()
            )));
        }
        Err(ConnectError::Other(e)) => {
            return Probe::Unknown(CliError::error(format!(
                "cannot connect: {}: {}",
                path.display(),
                io_text(&e)
            )));
        }
    };
    let mut stream = DeadlineStream { stream, deadline };
    match handshake(&mut stream) {
        Ok(w) => match start_time {
            None => Probe::Foreign,
            Some(t) if t != w.start_time => Probe::Foreign,
            Some(_) => Probe::Live(Box::new(w)),
        },
        Err(e) => Probe::Unknown(handshake_error(e, pid, path, &deadline)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn request_deadline_leaves_a_margin() {
        assert_eq!(request_ms(Duration::from_secs(10)), 9000);
        assert_eq!(request_ms(Duration::from_secs(1)), 800);
        assert_eq!(request_ms(Duration::from_millis(100)), 50);
        assert_eq!(request_ms(Duration::ZERO), 1);
    }

    #[test]
    fn version_advice_names_the_side_to_upgrade() {
        assert!(version_advice(PROTOCOL_VERSION + 1).contains("upgrade the delouse cli"));
        assert!(version_advice(0).contains("upgrade the delouse crate in the target"));
    }

    fn serve_once(reply: Vec<u8>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let _ = s.write_all(&reply);
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        (dir, path)
    }

    fn shake(path: &Path, timeout: Duration) -> std::result::Result<Welcome, HandshakeError> {
        let deadline = Deadline::after(timeout);
        let stream = connect(path, timeout).unwrap();
        handshake(&mut DeadlineStream { stream, deadline })
    }

    #[test]
    fn garbage_is_not_an_agent() {
        let (_dir, path) = serve_once(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec());
        let err = shake(&path, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, HandshakeError::NotAnAgent(_)), "{err:?}");
    }

    #[test]
    fn undecodable_small_frame_is_not_an_agent() {
        let (_dir, path) = serve_once(vec![0, 0, 0, 2, 0xff, 0xff]);
        let err = shake(&path, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, HandshakeError::NotAnAgent(_)), "{err:?}");
    }

    #[test]
    fn silence_times_out() {
        let (_dir, path) = serve_once(vec![0, 0, 0, 50]);
        let t = Instant::now();
        let err = shake(&path, Duration::from_millis(150)).unwrap_err();
        assert!(matches!(err, HandshakeError::Timeout), "{err:?}");
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn rejected_is_reported() {
        let reply = HelloReply::Rejected(AgentError::new(
            ErrorKind::VersionMismatch,
            "speaks protocol 2",
        ));
        let (_dir, path) = serve_once(frame::encode(&reply).unwrap());
        let err = shake(&path, Duration::from_secs(5)).unwrap_err();
        let HandshakeError::Rejected(e) = err else {
            panic!("{err:?}")
        };
        assert_eq!(e.kind, ErrorKind::VersionMismatch);
    }

    #[test]
    fn a_refusal_sent_before_the_hello_is_still_read() {
        // An agent over its connection cap writes Busy and closes without
        // reading: the hello then fails with EPIPE, and the refusal is there.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let reply = frame::encode(&HelloReply::Rejected(AgentError::new(
            ErrorKind::Busy,
            "agent of pid 1 is busy with 8 clients; try again",
        )))
        .unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(&reply).unwrap();
            drop(s);
            tx.send(()).unwrap();
        });
        let deadline = Deadline::after(Duration::from_secs(5));
        let stream = connect(&path, Duration::from_secs(5)).unwrap();
        rx.recv().unwrap();
        let err = handshake(&mut DeadlineStream { stream, deadline }).unwrap_err();
        let HandshakeError::Rejected(e) = err else {
            panic!("{err:?}")
        };
        assert_eq!(e.kind, ErrorKind::Busy);
        let e = handshake_error(HandshakeError::Rejected(e), 1, &path, &deadline);
        assert_eq!(e.exit, crate::error::Exit::Error);
        assert_eq!(
            e.message,
            "agent of pid 1 is busy with 8 clients; try again"
        );
    }

    #[test]
    fn a_peer_that_closes_without_a_reply_is_not_an_agent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            drop(listener.accept().unwrap());
            tx.send(()).unwrap();
        });
        let stream = connect(&path, Duration::from_secs(5)).unwrap();
        rx.recv().unwrap();
        let deadline = Deadline::after(Duration::from_secs(5));
        let err = handshake(&mut DeadlineStream { stream, deadline }).unwrap_err();
        assert!(matches!(err, HandshakeError::NotAnAgent(_)), "{err:?}");
    }

    #[test]
    fn an_exited_process_is_told_from_a_live_one() {
        let me = std::process::id();
        let start = procfs::start_time(me).unwrap();
        assert!(!target_exited(me, start));
        assert!(target_exited(me, start + 1), "another process at the pid");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = procfs::start_time(pid).unwrap_or(0);
        // A zombie until reaped, then gone: exited either way.
        let t = Instant::now();
        while procfs::state_and_start_time(pid).is_ok_and(|(s, _)| s != 'Z')
            && t.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(target_exited(pid, start));
        child.wait().unwrap();
        assert!(target_exited(pid, start));
    }

    #[test]
    fn missing_and_refused_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2.sock");
        assert!(matches!(
            connect(&path, Duration::from_secs(1)),
            Err(ConnectError::NotFound)
        ));
        drop(UnixListener::bind(&path).unwrap());
        assert!(matches!(
            connect(&path, Duration::from_secs(1)),
            Err(ConnectError::Refused)
        ));
    }

    #[test]
    fn long_socket_paths_connect() {
        let dir = tempfile::tempdir().unwrap();
        let mut long = dir.path().to_owned();
        while long.as_os_str().len() < 150 {
            long.push("a-rather-long-directory-name");
        }
        std::fs::create_dir_all(&long).unwrap();
        let path = long.join("3.sock");
        // Bind through a short path too: the listener side has the same limit.
        let short_dir = std::fs::File::open(&long).unwrap();
        let short = PathBuf::from(format!("/proc/self/fd/{}/3.sock", short_dir.as_raw_fd()));
        let _listener = UnixListener::bind(&short).unwrap();
        assert!(connect(&path, Duration::from_secs(1)).is_ok());
    }
}
