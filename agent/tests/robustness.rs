//! The agent under awkward clients, over its real socket: concurrent trace
//! requests, more clients than it serves, and a cleaner that removes its
//! socket directory.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use delouse_proto::frame;
use delouse_proto::*;

fn hello(path: &Path) -> (UnixStream, HelloReply) {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    frame::write(&mut s, &Hello::new("test")).unwrap();
    let reply = frame::read(&mut s, MAX_RESPONSE_FRAME).unwrap();
    (s, reply)
}

fn tasks(path: &Path, deadline_ms: u32) -> Response {
    let (mut s, reply) = hello(path);
    assert!(matches!(reply, HelloReply::Welcome(_)), "{reply:?}");
    let kind = RequestKind::Tasks(TasksMode::Traced);
    frame::write(&mut s, &Request { deadline_ms, kind }).unwrap();
    frame::read(&mut s, MAX_RESPONSE_FRAME).unwrap()
}

fn wait_for(path: &Path, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn awkward_clients() {
    let dir: PathBuf = std::env::temp_dir().join(format!("delouse-robust-{}", std::process::id()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        delouse::Builder::new().socket_dir(&dir).start().unwrap();
        delouse::spawn(std::future::pending::<()>());
        tokio::task::yield_now().await;
    });
    let path = dir.join(format!("{}.sock", std::process::id()));
    assert!(wait_for(&path, Duration::from_secs(5)));

    // One trace at a time, however many clients ask: block the only worker
    // so that a trace waits for its stall timeout, then ask three times.
    rt.spawn(async { std::thread::sleep(Duration::from_millis(2500)) });
    std::thread::sleep(Duration::from_millis(100));
    let clients: Vec<_> = (0..3)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200 * i));
                tasks(&path, 8000)
            })
        })
        .collect();
    let answers: Vec<Response> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let dumps = answers.iter().filter(|a| a.is_ok()).count();
    let refused = answers
        .iter()
        .filter(|a| matches!(a, Err(e) if e.kind == ErrorKind::InProgress))
        .count();
    assert_eq!((dumps, refused), (1, 2), "{answers:?}");
    std::thread::sleep(Duration::from_millis(2500));

    // Over the connection cap, a client still reads a "busy" answer.
    let idle: Vec<UnixStream> = (0..8)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let (_s, reply) = hello(&path);
    assert!(
        matches!(&reply, HelloReply::Rejected(e) if e.kind == ErrorKind::Busy),
        "{reply:?}"
    );
    drop(idle);

    // A cleaner removes the whole socket directory: the agent makes it again.
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        wait_for(&path, Duration::from_secs(8)),
        "socket not re-created"
    );
    assert!(tasks(&path, 3000).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}
