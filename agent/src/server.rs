//! The agent thread: its own `current_thread` runtime, the accept loop and
//! one task per connection. Nothing here runs on the application's runtime,
//! so the agent answers while that runtime is saturated or wedged.

use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use delouse_proto::frame::{self, FrameError};
use delouse_proto::{
    AgentError, Answer, Capabilities, ErrorKind, Hello, HelloReply, MAGIC, MAX_REQUEST_FRAME,
    PROTOCOL_VERSION, Request, RequestKind, Response, TasksMode, TraceSupport, Welcome,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;

use crate::builder::Shared;
use crate::registry::registry;
use crate::socket::{self, Bound};
use crate::{capture, crash, sys, tasks, threads};

/// Clients served at once; more get an immediate "busy".
const MAX_CONNECTIONS: usize = 8;
/// Clients over the cap answered "busy" at once; more are closed unanswered.
const MAX_REFUSALS: usize = 32;
/// Time a client has to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a client has to send its request after the welcome.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the agent spends writing one answer before dropping the client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the agent checks that its socket file is still there.
const SOCKET_CHECK: Duration = Duration::from_secs(5);
/// Bounds on a request's deadline.
const MIN_DEADLINE: Duration = Duration::from_millis(100);
const MAX_DEADLINE: Duration = Duration::from_secs(120);

/// Body of the agent thread.
pub(crate) fn run(shared: Arc<Shared>, bound: Bound) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => {
            let _ = std::fs::remove_file(&bound.path);
            return;
        }
    };
    rt.block_on(serve(shared, bound));
}

async fn serve(shared: Arc<Shared>, mut bound: Bound) {
    let support = match capture::probe().await {
        Ok(()) => TraceSupport::Available,
        Err(why) => TraceSupport::Unavailable(why),
    };
    let _ = shared.traces.set(support);

    let Ok(mut listener) = listen(&bound) else {
        let _ = std::fs::remove_file(&bound.path);
        return;
    };
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let mut check = tokio::time::interval(SOCKET_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // A hand-written select: the agent does without tokio's macros.
        let event = std::future::poll_fn(|cx| {
            if let Poll::Ready(accepted) = listener.poll_accept(cx) {
                return Poll::Ready(Some(accepted));
            }
            check.poll_tick(cx).map(|_| None)
        })
        .await;
        match event {
            Some(Ok((stream, _))) => {
                // Over the cap a client still gets a "busy" answer, from a
                // second, bounded pool; past that it is simply closed.
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(connection(shared.clone(), stream, permit, true));
                    }
                    Err(_) => {
                        if let Ok(permit) = refusals.clone().try_acquire_owned() {
                            tokio::spawn(connection(shared.clone(), stream, permit, false));
                        }
                    }
                }
            }
            // Out of file descriptors and the like: back off, keep going.
            Some(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            None => {
                if let Some(new) = socket::rebind_if_replaced(&bound)
                    && let Ok(l) = listen(&new)
                {
                    listener = l;
                    bound = new;
                }
            }
        }
    }
}

fn listen(bound: &Bound) -> std::io::Result<tokio::net::UnixListener> {
    tokio::net::UnixListener::from_std(bound.listener.try_clone()?)
}

async fn connection(
    shared: Arc<Shared>,
    mut stream: UnixStream,
    permit: OwnedSemaphorePermit,
    admitted: bool,
) {
    // A panic in here ends only this task (tokio catches it); the agent and
    // the application go on.
    let _ = session(&shared, &mut stream, admitted).await;
    drop(permit);
}

async fn session(
    shared: &Shared,
    stream: &mut UnixStream,
    admitted: bool,
) -> Result<(), FrameError> {
    // Read the hello before any refusal: a client still writing it would
    // otherwise see its write fail and never read the answer.
    let hello: Hello = receive(stream, HELLO_TIMEOUT).await?;
    if let Some(refusal) = refuse_peer(shared, stream) {
        return send(stream, &HelloReply::Rejected(refusal)).await;
    }
    if !admitted {
        let busy = AgentError::new(
            ErrorKind::Busy,
            format!(
                "agent of pid {} is busy with {MAX_CONNECTIONS} clients; try again",
                shared.pid
            ),
        );
        return send(stream, &HelloReply::Rejected(busy)).await;
    }
    if hello.magic != MAGIC {
        let stranger = AgentError::new(
            ErrorKind::BadRequest,
            "not a delouse client: its hello lacks delouse's magic bytes",
        );
        return send(stream, &HelloReply::Rejected(stranger)).await;
    }
    if hello.protocol_version != PROTOCOL_VERSION {
        let which = if hello.protocol_version > PROTOCOL_VERSION {
            "upgrade the delouse crate in the application"
        } else {
            "upgrade the delouse CLI"
        };
        let mismatch = AgentError::new(
            ErrorKind::VersionMismatch,
            format!(
                "protocol mismatch: agent {} speaks protocol {PROTOCOL_VERSION}, client {} speaks {}: {which}",
                env!("CARGO_PKG_VERSION"),
                hello.client_version,
                hello.protocol_version
            ),
        );
        return send(stream, &HelloReply::Rejected(mismatch)).await;
    }
    send(stream, &HelloReply::Welcome(welcome(shared))).await?;

    let mut crash = false;
    let response: Response = match receive::<Request>(stream, REQUEST_TIMEOUT).await {
        Ok(request) => {
            crash = matches!(request.kind, RequestKind::Crash { .. });
            handle(shared, request).await
        }
        Err(FrameError::Decode(_)) => Err(AgentError::new(
            ErrorKind::BadRequest,
            format!(
                "unknown request: the CLI is newer than this agent ({}); upgrade the delouse crate in the application",
                env!("CARGO_PKG_VERSION")
            ),
        )),
        Err(e) => return Err(e),
    };
    let sent = send(stream, &response).await;
    if crash && response.is_ok() {
        // Asked for, confirmed by PID, and announced: the last thing the
        // agent does.
        crash::abort_for_core_dump();
    }
    // A dump of many tasks allocated on every worker's malloc arena and
    // freed here; hand those pages back rather than keep them resident.
    drop(response);
    sys::trim_heap();
    sent
}

/// Only the agent's own uid and root may use it.
fn refuse_peer(shared: &Shared, stream: &UnixStream) -> Option<AgentError> {
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            return Some(AgentError::new(
                ErrorKind::PermissionDenied,
                format!("cannot read the client's credentials: {e}"),
            ));
        }
    };
    (uid != shared.uid && uid != 0).then(|| {
        AgentError::new(
            ErrorKind::PermissionDenied,
            format!(
                "uid {uid} may not use the agent of pid {}: run as uid {} or root",
                shared.pid, shared.uid
            ),
        )
    })
}

fn welcome(shared: &Shared) -> Welcome {
    Welcome {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: shared.pid,
        start_time: shared.start_time,
        exe: shared.exe.clone(),
        runtimes: shared.runtime_infos(),
        capabilities: Capabilities {
            traces: shared.trace_support(),
            registered_tasks: registry().len() as u64,
        },
    }
}

async fn handle(shared: &Shared, request: Request) -> Response {
    let budget =
        Duration::from_millis(u64::from(request.deadline_ms)).clamp(MIN_DEADLINE, MAX_DEADLINE);
    let deadline = Instant::now() + budget;
    match request.kind {
        RequestKind::Tasks(TasksMode::Traced) => tasks::traced(shared, deadline).await,
        RequestKind::Tasks(TasksMode::WholeRuntime { runtime }) => {
            tasks::whole_runtime(shared, runtime, deadline).await
        }
        RequestKind::Threads => threads::dump(shared, deadline).await,
        RequestKind::Build => Ok(Answer::Build(crash::build(shared))),
        RequestKind::CrashPreflight => Ok(Answer::Crash(crash::preflight())),
        RequestKind::Crash { pid } => crash::confirm(shared, pid),
    }
}

async fn receive<T: serde::de::DeserializeOwned>(
    stream: &mut UnixStream,
    limit: Duration,
) -> Result<T, FrameError> {
    let read = async {
        let mut header = [0u8; 4];
        stream.read_exact(&mut header).await?;
        let len = frame::body_len(header, MAX_REQUEST_FRAME)?;
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await?;
        frame::decode(&body)
    };
    timeout(limit, read)
        .await
        .unwrap_or_else(|_| Err(FrameError::Io(std::io::ErrorKind::TimedOut.into())))
}

async fn send<T: serde::Serialize>(stream: &mut UnixStream, msg: &T) -> Result<(), FrameError> {
    let bytes = frame::encode(msg)?;
    let write = async {
        stream.write_all(&bytes).await?;
        stream.flush().await?;
        Ok(())
    };
    timeout(WRITE_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| Err(FrameError::Io(std::io::ErrorKind::TimedOut.into())))
}
