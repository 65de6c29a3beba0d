//! OS threads for `delouse threads`: a multi-thread runtime (2 workers)
//! with the agent and an untraced heartbeat, plus plain threads that stay
//! where they are, so the set of threads is stable once `ready` is printed:
//!
//! - `sleeper` sleeps in `sleeper_sleep()` (`#[inline(never)]`), on the line
//!   marked `TRACE-MARK: thread-sleep`;
//! - `sigblocker` blocks every signal (`pthread_sigmask(SIG_BLOCK, <full
//!   set>)`), then sleeps in `blocker_sleep()`;
//! - one `spawn_blocking` task waits for good in `blocking_wait()`, so the
//!   blocking pool has one thread (named `tokio-rt-worker`, like the
//!   workers);
//! - `ticker` wakes up every millisecond and records its longest gap: a
//!   stop of the whole process (a debugger's) shows in it;
//! - `--threads N` (default 0) more threads, `idle-<i>`, parked for good;
//! - with `--nocfi 1` (x86_64), `nocfi` sleeps in `nocfi_sleep`, assembly
//!   without unwind information that moved the stack pointer;
//! - `vforker` waits for the command `vfork <secs>`, then `vfork`s (a raw
//!   `clone(CLONE_VM | CLONE_VFORK)`) a child that sleeps `<secs>` seconds
//!   with raw system calls and exits. Meanwhile the thread is in
//!   uninterruptible sleep (state `D`): a signal stays pending until the
//!   child is gone, so it cannot answer one in time.
//!
//! `ready` comes once every one of these threads is asleep.
//!
//! The application owns SIGUSR1: its handler (installed with `sigaction`)
//! counts deliveries. Commands:
//!
//! - `sigusr1`: sends SIGUSR1 to the process (`kill(getpid(), SIGUSR1)`),
//!   waits up to 2 s for the count to move, answers `sigusr1=<count>`;
//! - `vfork <secs>`: starts the vfork above, answers `vforking <secs>` once
//!   the thread is in state `D`;
//! - `gap`: `ticker_max_gap_us=<g> ticker_max_stall_us=<s>`, the ticker's
//!   longest gap since the previous `gap` (or the start), and its longest
//!   stall (a gap less the time it waited for a CPU; see `Ticker`).
//!
//! `stats`: `threads=N sleeper_tid=<t> blocker_tid=<t> blocking_tid=<t>
//! vforker_tid=<t> vforks_done=<n> ticker_ticks=<n> sigusr1=<count>`.

use std::ffi::{c_int, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use delouse_tests::{Control, Heartbeat, Ticker, Tid, flag, init_agent, thread_state};

/// How long a thread has to get to sleep before the target gives up.
const SETTLE: Duration = Duration::from_secs(10);

static SIGUSR1_COUNT: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_sigusr1(_: c_int) {
    SIGUSR1_COUNT.fetch_add(1, Ordering::Relaxed);
}

fn install_sigusr1() {
    // SAFETY: a zeroed sigaction is a valid value to fill in; the handler
    // only touches an atomic, which is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigusr1 as extern "C" fn(c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()) != 0 {
            eprintln!("sigaction(SIGUSR1): {}", std::io::Error::last_os_error());
            std::process::exit(1);
        }
    }
}

/// Sends SIGUSR1 to the process and waits for the handler to count it.
fn raise_sigusr1() -> String {
    let before = SIGUSR1_COUNT.load(Ordering::Relaxed);
    // SAFETY: kill(2) on our own pid; the handler is installed.
    let rc = unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
    if rc != 0 {
        return format!("error kill: {}", std::io::Error::last_os_error());
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while SIGUSR1_COUNT.load(Ordering::Relaxed) == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    format!("sigusr1={}", SIGUSR1_COUNT.load(Ordering::Relaxed))
}

#[inline(never)]
fn sleeper_sleep(tid: &Tid) -> ! {
    tid.set_current();
    loop {
        std::thread::sleep(Duration::from_secs(3600)); // TRACE-MARK: thread-sleep
    }
}

// A function without unwind information (no CFI directives, so no FDE in
// `.eh_frame`) that moves the stack pointer, then sleeps for good with raw
// `nanosleep` calls. The words at the stack pointer, where an unwinder
// without rules guesses the return address to be, hold 8: no code.
#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".pushsection .text.nocfi_sleep,\"ax\",@progbits",
    ".globl nocfi_sleep",
    ".type nocfi_sleep,@function",
    "nocfi_sleep:",
    "push rbx",
    "push rbp",
    "sub rsp, 72",
    "mov qword ptr [rsp], 8",
    "mov qword ptr [rsp + 8], 8",
    "2:",
    "mov qword ptr [rsp + 16], 3600",
    "mov qword ptr [rsp + 24], 0",
    "mov eax, 35",
    "lea rdi, [rsp + 16]",
    "xor esi, esi",
    "syscall",
    "jmp 2b",
    ".size nocfi_sleep, . - nocfi_sleep",
    ".popsection",
);

#[cfg(target_arch = "x86_64")]
unsafe extern "C" {
    fn nocfi_sleep() -> !;
}

#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn nocfi(tid: &Tid) -> ! {
    tid.set_current();
    // SAFETY: `nocfi_sleep` takes no arguments, touches only its own stack
    // frame and never returns.
    unsafe { nocfi_sleep() }
}

#[inline(never)]
fn blocker_sleep(tid: &Tid) -> ! {
    // SAFETY: `all` is a valid sigset for sigfillset to fill; blocking
    // signals on the calling thread has no memory-safety preconditions.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
        if rc != 0 {
            eprintln!("pthread_sigmask: error {rc}");
            std::process::exit(1);
        }
    }
    tid.set_current();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[inline(never)]
fn blocking_wait(tid: &Tid, forever: &std::sync::mpsc::Receiver<()>) {
    tid.set_current();
    let _ = forever.recv();
}

#[inline(never)]
fn idle_park(tid: &Tid) -> ! {
    tid.set_current();
    loop {
        std::thread::park();
    }
}

/// The vfork child: it shares the parent's memory, so it makes raw system
/// calls only (no allocation, no locks): sleeps `arg` seconds, then exits.
extern "C" fn vfork_child(arg: *mut c_void) -> c_int {
    let nap = libc::timespec {
        tv_sec: arg as usize as libc::time_t,
        tv_nsec: 0,
    };
    // SAFETY: nanosleep and exit with valid arguments; `exit` (not
    // `exit_group`) ends this child alone and runs no exit handlers.
    unsafe {
        libc::syscall(
            libc::SYS_nanosleep,
            &nap,
            std::ptr::null_mut::<libc::timespec>(),
        );
        libc::syscall(libc::SYS_exit, 0);
    }
    0
}

#[inline(never)]
fn vforker(tid: &Tid, requests: &mpsc::Receiver<u64>, done: &AtomicU64) {
    tid.set_current();
    let mut child_stack = vec![0u8; 64 * 1024];
    while let Ok(secs) = requests.recv() {
        let top = (child_stack.as_mut_ptr() as usize + child_stack.len()) & !15;
        // SAFETY: the child runs `vfork_child` on its own stack, which lives
        // (in `child_stack`) until this thread resumes after the child
        // exits; CLONE_VFORK suspends this thread until then.
        let pid = unsafe {
            libc::clone(
                vfork_child,
                top as *mut c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                secs as usize as *mut c_void,
            )
        };
        if pid > 0 {
            let mut status = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        } else {
            eprintln!("clone: {}", std::io::Error::last_os_error());
        }
        done.fetch_add(1, Ordering::AcqRel);
    }
}

/// Asks the vforker for a vfork of `secs` and waits until it is in it.
fn start_vfork(requests: &mpsc::Sender<u64>, tid: u32, arg: &str) -> String {
    let Ok(secs) = arg.parse::<u64>() else {
        return format!("error bad seconds '{arg}'");
    };
    if requests.send(secs).is_err() {
        return "error the vforker is gone".into();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while thread_state(tid) != Some('D') {
        if Instant::now() >= deadline {
            return format!("error the vforker is in state {:?}", thread_state(tid));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    format!("vforking {secs}")
}

fn spawn_named(name: String, body: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .name(name)
        .spawn(body)
        .expect("spawn a thread");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    install_sigusr1();
    init_agent();
    let extra: usize = flag("threads", 0);

    let clock = Heartbeat::new();
    clock.spawn_untraced();

    let sleeper = Tid::new();
    let tid = sleeper.clone();
    spawn_named("sleeper".into(), move || sleeper_sleep(&tid));
    let blocker = Tid::new();
    let tid = blocker.clone();
    spawn_named("sigblocker".into(), move || blocker_sleep(&tid));

    // The sender lives in main, which never returns: the task waits for good.
    let (_forever_tx, forever_rx) = std::sync::mpsc::channel::<()>();
    let blocking = Tid::new();
    let tid = blocking.clone();
    drop(tokio::task::spawn_blocking(move || {
        blocking_wait(&tid, &forever_rx)
    }));

    let idle: Vec<Tid> = (0..extra)
        .map(|i| {
            let tid = Tid::new();
            let t = tid.clone();
            spawn_named(format!("idle-{i}"), move || idle_park(&t));
            tid
        })
        .collect();
    // x86_64 only: the thread's function is written in assembly.
    let nocfi_thread = (cfg!(target_arch = "x86_64") && flag("nocfi", 0u8) == 1).then(|| {
        let tid = Tid::new();
        #[cfg(target_arch = "x86_64")]
        {
            let t = tid.clone();
            spawn_named("nocfi".into(), move || nocfi(&t));
        }
        tid
    });
    let vfork = Tid::new();
    let vforks_done = Arc::new(AtomicU64::new(0));
    let (vfork_tx, vfork_rx) = mpsc::channel::<u64>();
    let (tid, done) = (vfork.clone(), vforks_done.clone());
    spawn_named("vforker".into(), move || vforker(&tid, &vfork_rx, &done));
    let ticker = Ticker::start("ticker", Duration::from_millis(1));

    let sleeper_tid = sleeper.wait_asleep("sleeper", SETTLE);
    let blocker_tid = blocker.wait_asleep("sigblocker", SETTLE);
    let blocking_tid = blocking.wait_asleep("blocking", SETTLE);
    let vforker_tid = vfork.wait_asleep("vforker", SETTLE);
    for (i, tid) in idle.iter().enumerate() {
        tid.wait_asleep(&format!("idle-{i}"), SETTLE);
    }
    if let Some(tid) = &nocfi_thread {
        tid.wait_asleep("nocfi", SETTLE);
    }

    let stats_ticker = ticker.clone();
    Control::new(tokio::runtime::Handle::current(), clock)
        .stats(move || {
            format!(
                "threads={extra} sleeper_tid={sleeper_tid} blocker_tid={blocker_tid} \
                 blocking_tid={blocking_tid} vforker_tid={vforker_tid} vforks_done={} \
                 ticker_ticks={} sigusr1={}",
                vforks_done.load(Ordering::Acquire),
                stats_ticker.ticks(),
                SIGUSR1_COUNT.load(Ordering::Relaxed)
            )
        })
        .command("sigusr1", |_| raise_sigusr1())
        .command("vfork", move |arg| start_vfork(&vfork_tx, vforker_tid, arg))
        .command("gap", move |_| {
            let (gap, stall) = ticker.take_max_gap_us();
            format!("ticker_max_gap_us={gap} ticker_max_stall_us={stall}")
        })
        .start();
    std::future::pending::<()>().await;
    drop(_forever_tx);
}
