//! `Threads` over the agent's real socket, from inside one process.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use delouse_proto::frame;
use delouse_proto::*;

#[inline(never)]
fn sleeper_marker(rx: std::sync::mpsc::Receiver<()>) {
    let _ = rx.recv_timeout(Duration::from_secs(30));
}

#[test]
fn every_thread_is_listed_and_sampled() {
    let dir = std::env::temp_dir().join(format!("delouse-threads-test-{}", std::process::id()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { delouse::Builder::new().socket_dir(&dir).start().unwrap() });
    let (tx, rx) = std::sync::mpsc::channel();
    let sleeper = std::thread::Builder::new()
        .name("sleeper".into())
        .spawn(move || sleeper_marker(rx))
        .unwrap();
    let path = dir.join(format!("{}.sock", std::process::id()));
    for _ in 0..500 {
        if path.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(50));

    for _ in 0..20 {
        let mut s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        frame::write(&mut s, &Hello::new("test")).unwrap();
        let _: HelloReply = frame::read(&mut s, MAX_RESPONSE_FRAME).unwrap();
        frame::write(
            &mut s,
            &Request {
                deadline_ms: 3000,
                kind: RequestKind::Threads,
            },
        )
        .unwrap();
        let response: Response = frame::read(&mut s, MAX_RESPONSE_FRAME).unwrap();
        let Ok(Answer::Threads(dump)) = response else {
            panic!("{response:?}")
        };
        let mut tids: Vec<u32> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
            .collect();
        tids.sort_unstable();
        let listed: Vec<u32> = dump.threads.iter().map(|t| t.tid).collect();
        assert_eq!(listed, tids);
        assert_eq!(dump.threads.iter().filter(|t| t.is_agent).count(), 1);
        let sleeper = dump.threads.iter().find(|t| t.name == "sleeper").unwrap();
        let ThreadStack::Frames { addresses, .. } = &sleeper.stack else {
            panic!("{sleeper:?}")
        };
        // The walk gets past libc's futex wait into the Rust caller.
        assert!(addresses.len() >= 4, "{addresses:x?}");
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let in_exe = addresses
            .iter()
            .filter(|&&a| {
                Module::find(&dump.modules, a).is_some_and(|m| std::path::Path::new(&m.path) == exe)
            })
            .count();
        assert!(in_exe >= 2, "{addresses:x?} {:?}", dump.modules);
        assert!(dump.max_handler_ns > 0 && dump.max_handler_ns < 50_000_000);
    }
    tx.send(()).unwrap();
    sleeper.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
