//! The agent over its real socket, from inside one process: handshake,
//! traced dump, and a second client during a trace.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use delouse_proto::frame;
use delouse_proto::*;

fn exchange(path: &PathBuf, kind: RequestKind, deadline_ms: u32) -> (Welcome, Response) {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    frame::write(&mut s, &Hello::new("test")).unwrap();
    let welcome = match frame::read(&mut s, MAX_RESPONSE_FRAME).unwrap() {
        HelloReply::Welcome(w) => w,
        HelloReply::Rejected(e) => panic!("rejected: {e}"),
    };
    frame::write(&mut s, &Request { deadline_ms, kind }).unwrap();
    (welcome, frame::read(&mut s, MAX_RESPONSE_FRAME).unwrap())
}

async fn parked_forever(mut rx: tokio::sync::mpsc::Receiver<()>) {
    rx.recv().await;
}

#[test]
fn traced_dump_over_the_socket() {
    let dir = std::env::temp_dir().join(format!("delouse-agent-test-{}", std::process::id()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut senders = Vec::new();
    rt.block_on(async {
        delouse::Builder::new().socket_dir(&dir).start().unwrap();
        delouse::init().unwrap(); // a second call is harmless
        for _ in 0..100 {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            senders.push(tx);
            delouse::spawn(parked_forever(rx));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    });
    let path = dir.join(format!("{}.sock", std::process::id()));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !path.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (welcome, response) = exchange(&path, RequestKind::Tasks(TasksMode::Traced), 3000);
    assert_eq!(welcome.pid, std::process::id());
    assert_eq!(welcome.runtimes.len(), 1);
    assert_eq!(welcome.runtimes[0].name, "main");
    assert_eq!(welcome.capabilities.traces, TraceSupport::Available);
    let Ok(Answer::Tasks(dump)) = response else {
        panic!("{response:?}")
    };
    assert_eq!(dump.coverage.traced, 100, "{:?}", dump.coverage);
    assert_eq!(dump.tasks.len(), 100);
    for task in &dump.tasks {
        let TaskState::Traced(bts) = &task.state else {
            panic!("{task:?}")
        };
        assert!(!bts.is_empty() && !bts[0].is_empty(), "{task:?}");
        assert!(task.id.is_some());
    }
    assert_eq!(dump.locations.len(), 1);
    assert!(dump.locations[0].file.ends_with("socket.rs"));
    // Every frame sits in a module the answer lists.
    for &ip in &dump.frames {
        assert!(Module::find(&dump.modules, ip).is_some(), "{ip:#x}");
    }
    // The tasks still work after being traced.
    rt.block_on(async {
        for tx in &senders {
            tx.send(()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks(),
            0
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}
