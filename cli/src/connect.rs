//! Finding an agent's socket, connecting, the handshake, and one request.
//!
//! Every blocking step (connect, each read, each write) is bounded by one
//! overall deadline, so a wedged agent or something that is not an agent at
//! all (a `socat` listener, garbage, a huge declared frame) ends in a clear
//! error instead of a hang.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
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
pub fn connect(path: &Path, timeout: Duration) -> std::result::Result<UnixStream, ConnectError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => {}
        Err(e) => return Err(ConnectError::from_io(e)),
    }
    let (tx, rx) = mpsc::channel();
    let owned = path.to_owned();
    let spawned = std::thread::Builder::new()
        .name("delouse-connect".into())
        .spawn(move || {
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
    frame::write(stream, &Hello::new(CLIENT_VERSION)).map_err(classify_handshake)?;
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

/// A handshake error as a [`CliError`].
pub fn handshake_error(
    e: HandshakeError,
    pid: u32,
    socket: &Path,
    deadline: &Deadline,
) -> CliError {
    let socket = socket.display();
    match e {
        HandshakeError::Timeout => CliError::timeout(format!(
            "no handshake from pid {pid} within {}: {socket}: the agent may be stuck, or something other than a \
             delouse agent listens there",
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
    /// Sends one request and reads its answer.
    pub fn request(mut self, kind: RequestKind) -> Result<Answer> {
        let pid = self.pid;
        let request = Request {
            deadline_ms: self.deadline.request_ms(),
            kind,
        };
        let total = human_duration(self.deadline.total());
        let sent = frame::write(&mut self.stream, &request);
        if let Err(e) = sent {
            return Err(match e {
                FrameError::Io(e) if is_timeout(&e) => CliError::timeout(format!(
                    "pid {pid} did not take the request within {total}: the agent may be stuck"
                )),
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
            FrameError::Io(e) if is_timeout(&e) => CliError::timeout(format!(
                "pid {pid} did not answer within {total}: retry with a longer --timeout"
            )),
            FrameError::Io(e) => CliError::error(format!(
                "reading the answer of pid {pid} failed: {}: {}",
                self.socket.display(),
                io_text(&e)
            )),
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
                self.welcome.agent_version,
                self.socket.display()
            )),
        })?;
        response.map_err(|e| CliError::from_agent(&e, pid))
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
    path: &Path,
    deadline: Deadline,
) -> std::result::Result<Opened, ConnectError> {
    let stream = connect(path, deadline.remaining())?;
    let mut stream = DeadlineStream { stream, deadline };
    Ok(handshake(&mut stream)
        .map(|w| (stream, w))
        .map_err(|e| handshake_error(e, pid, path, &deadline)))
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
pub fn open(pid: u32, deadline: Deadline) -> Result<Connection> {
    let no_process = || {
        CliError::no_agent(format!(
            "no process with pid {pid}: check the pid (`delouse ps` lists agents)"
        ))
    };
    if !procfs::exists(pid) {
        return Err(no_process());
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
    for dir in &dirs {
        let direct = dir.join(&name);
        let inside = (!same_root).then(|| location::reroot(&root, dir));
        let rerooted = inside.as_ref().map(|d| d.join(&name));
        let rerooted_ns = inside
            .as_ref()
            .zip(ns_name.as_ref())
            .map(|(d, n)| d.join(n));
        let candidates = [(Some(direct), false), (rerooted, true), (rerooted_ns, true)];
        for (path, through_root) in candidates {
            let Some(path) = path else { continue };
            match open_socket(pid, &path, deadline) {
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
                Err(ConnectError::PermissionDenied) if through_root => root_denied = true,
                Err(ConnectError::PermissionDenied) => {
                    denied.get_or_insert(path);
                }
                Err(ConnectError::Refused) => {
                    stale.get_or_insert(path);
                }
                Err(ConnectError::TimedOut) => {
                    return Err(CliError::timeout(format!(
                        "connecting to pid {pid} did not complete within {}: {}: its agent is not accepting \
                         connections",
                        human_duration(deadline.total()),
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

/// Probes the socket of `pid` at `path` within `timeout`.
pub fn probe(pid: u32, path: &Path, timeout: Duration) -> Probe {
    let deadline = Deadline::after(timeout);
    let start_time = procfs::start_time(pid).ok();
    let stream = match connect(path, timeout) {
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
