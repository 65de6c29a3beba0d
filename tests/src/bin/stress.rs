//! Threads busy in the places where interrupting them is most dangerous,
//! for `delouse threads` to sample again and again. Plain threads, each in
//! a loop that never ends:
//!
//! - `malloc-churn-<i>` (`--malloc N`, default 2): allocate, touch and free
//!   blocks of 16 B to 1 MiB, up to 64 alive at once. The mmap threshold is
//!   pinned at 128 KiB (`mallopt`), so big blocks are mapped and unmapped
//!   every time instead of glibc raising the threshold after the first free
//!   (`--pin-mmap-threshold 0` leaves glibc's default);
//! - `dlopen-churn`: `dlopen`, `dlsym`, `dlclose` of a library the process
//!   has not loaded otherwise (the first of libz, libbz2, liblzma, libexpat
//!   that is present; libm as a last resort), so every round maps and
//!   unmaps it and takes the loader's lock;
//! - `panic-churn`: `panic!` caught by `std::panic::catch_unwind`, so the
//!   thread is often mid-unwind (a panic hook keeps these panics quiet);
//! - `backtrace-churn`: `std::backtrace::Backtrace::force_capture()`
//!   (`_Unwind_Backtrace`, `dl_iterate_phdr`);
//! - `mmap-neighbour` (`--mmap-neighbour 0` turns it off): a thread
//!   `stack-neighbour` runs on a stack the target maps itself
//!   (`pthread_attr_setstack`), with an anonymous mapping right above it
//!   that `mmap-neighbour` unmaps and maps again in a loop. glibc's malloc
//!   makes the same layout by chance when it maps a big block next to a
//!   thread's stack and frees it; this makes it certain;
//! - `heartbeat`: wakes up every 10 ms and records its longest gap, and its
//!   longest stall (a gap less the time it waited for a CPU; see `Ticker`);
//! - with `--spawn-churn 1` (default 0), `spawn-churn` starts short-lived
//!   threads (`short-lived`, each sleeps up to 2 ms, then exits) one after
//!   another, so threads come and go while they are sampled.
//!
//! The churn threads run at niceness `--nice N` (default 19): they take
//! whatever CPU is left, so they are busy whenever they are interrupted,
//! yet they do not starve the heartbeat or the CLI on a machine with two
//! cores, which would drown the delays the agent itself may cause.
//!
//! Plus a multi-thread runtime (2 workers) with the agent and an untraced
//! tokio heartbeat (what `check` reports).
//!
//! `stats`: `hb_max_gap_ms=<g> hb_max_stall_ms=<s> hb_ticks=<n> malloc=<n>
//! dlopen=<n> panics=<n> backtraces=<n> remaps=<n> spawns=<n>
//! dlopen_lib=<name>`; the counters count rounds of each loop and keep
//! advancing while the target is healthy.

use std::ffi::{CStr, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use delouse_tests::{Control, Heartbeat, Ticker, XorShift, flag, gettid, init_agent};

/// Libraries to churn, by preference; none of them is a dependency of the
/// test targets, so `dlclose` really unmaps it.
const LIBRARIES: [(&CStr, &CStr); 5] = [
    (c"libz.so.1", c"zlibVersion"),
    (c"libbz2.so.1.0", c"BZ2_bzlibVersion"),
    (c"liblzma.so.5", c"lzma_version_string"),
    (c"libexpat.so.1", c"XML_ExpatVersion"),
    (c"libm.so.6", c"cos"),
];

#[derive(Default)]
struct Counters {
    malloc: AtomicU64,
    dlopen: AtomicU64,
    panics: AtomicU64,
    backtraces: AtomicU64,
    remaps: AtomicU64,
    spawns: AtomicU64,
}

/// Starts a churn loop on a thread of its own, at niceness `nice`.
fn spawn_loop(name: String, nice: i32, body: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            // SAFETY: setpriority on the calling thread (Linux applies
            // PRIO_PROCESS with a thread id to that thread alone).
            unsafe { libc::setpriority(libc::PRIO_PROCESS, gettid(), nice) };
            body()
        })
        .expect("spawn a churn thread");
}

fn malloc_churn(seed: u64, rounds: &AtomicU64) -> ! {
    let mut rng = XorShift::new(seed);
    let mut live: Vec<Vec<u8>> = Vec::with_capacity(64);
    loop {
        // Sizes spread over orders of magnitude: 2^4 .. 2^20 bytes.
        let size = 1usize << (4 + rng.below(17));
        let size = size + rng.below(size as u64) as usize;
        let mut block = Vec::<u8>::with_capacity(size);
        // Touch one byte a page, so big blocks really fault in.
        block.resize(size.min(64), 1);
        let ptr = block.as_mut_ptr();
        for off in (0..size).step_by(4096) {
            // SAFETY: `off` < capacity; writing a byte of our own block.
            unsafe { ptr.add(off).write_volatile(1) };
        }
        if live.len() < 64 {
            live.push(block);
        } else {
            let i = rng.below(64) as usize;
            live[i] = block;
        }
        if rng.below(8) == 0 {
            live.truncate(rng.below(64) as usize);
        }
        rounds.fetch_add(1, Ordering::Relaxed);
    }
}

/// The first library of [`LIBRARIES`] that loads and was not loaded yet.
fn pick_library() -> (&'static CStr, &'static CStr) {
    for (name, symbol) in LIBRARIES {
        // SAFETY: dlopen with a valid C string; RTLD_NOLOAD only asks.
        let loaded = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
        if !loaded.is_null() {
            // SAFETY: a handle dlopen just returned.
            unsafe { libc::dlclose(loaded) };
            continue;
        }
        // SAFETY: as above; these libraries run no unusual constructors.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if !handle.is_null() {
            // SAFETY: a handle dlopen just returned.
            unsafe { libc::dlclose(handle) };
            return (name, symbol);
        }
    }
    LIBRARIES[LIBRARIES.len() - 1]
}

fn dlopen_churn(name: &CStr, symbol: &CStr, rounds: &AtomicU64) -> ! {
    loop {
        // SAFETY: valid C strings; the handle is closed once, after use.
        unsafe {
            let handle = libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if !handle.is_null() {
                let sym: *mut c_void = libc::dlsym(handle, symbol.as_ptr());
                std::hint::black_box(sym);
                libc::dlclose(handle);
            }
        }
        rounds.fetch_add(1, Ordering::Relaxed);
    }
}

fn panic_churn(rounds: &AtomicU64) -> ! {
    let mut n = 0u64;
    loop {
        n += 1;
        let caught = std::panic::catch_unwind(|| {
            if std::hint::black_box(n) > 0 {
                panic!("churn {n}");
            }
        });
        std::hint::black_box(caught.is_err());
        rounds.fetch_add(1, Ordering::Relaxed);
    }
}

fn backtrace_churn(rounds: &AtomicU64) -> ! {
    loop {
        let bt = std::backtrace::Backtrace::force_capture();
        std::hint::black_box(&bt);
        rounds.fetch_add(1, Ordering::Relaxed);
    }
}

fn spawn_churn(seed: u64, rounds: &AtomicU64) -> ! {
    let mut rng = XorShift::new(seed);
    loop {
        let nap = Duration::from_micros(rng.below(2000));
        let short = std::thread::Builder::new()
            .name("short-lived".into())
            .spawn(move || std::thread::sleep(nap))
            .expect("spawn a short-lived thread");
        let _ = short.join();
        rounds.fetch_add(1, Ordering::Relaxed);
    }
}

/// The stack of the `stack-neighbour` thread, and the mapping above it.
const NEIGHBOUR_STACK: usize = 256 * 1024;
const NEIGHBOUR_ABOVE: usize = 256 * 1024;

extern "C" fn stack_neighbour(_: *mut c_void) -> *mut c_void {
    // SAFETY: naming the calling thread (15 bytes and a NUL fit).
    unsafe { libc::prctl(libc::PR_SET_NAME, c"stack-neighbour".as_ptr()) };
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Starts `stack-neighbour` on a stack mapped here, then unmaps and maps
/// again the page run right above that stack, forever.
fn mmap_neighbour(rounds: &AtomicU64) -> ! {
    let total = NEIGHBOUR_STACK + NEIGHBOUR_ABOVE;
    // SAFETY: a fresh anonymous mapping; the thread gets its lower part as
    // its stack and never sees the upper part, which only this loop
    // touches (by mapping and unmapping it).
    let above = unsafe {
        let base = libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert!(base != libc::MAP_FAILED, "mmap the neighbour's stack");
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setstack(&mut attr, base, NEIGHBOUR_STACK);
        let mut thread: libc::pthread_t = 0;
        let rc = libc::pthread_create(&mut thread, &attr, stack_neighbour, std::ptr::null_mut());
        assert_eq!(rc, 0, "pthread_create");
        libc::pthread_attr_destroy(&mut attr);
        base.cast::<u8>().add(NEIGHBOUR_STACK).cast::<c_void>()
    };
    // Whether `above` is mapped by this loop now. When another thread's
    // mapping took the hole meanwhile, it is left alone and tried again.
    let mut mapped = true;
    loop {
        // SAFETY: only a run this loop mapped itself is unmapped;
        // MAP_FIXED_NOREPLACE never replaces a mapping someone else made in
        // the hole (the call fails instead).
        unsafe {
            if mapped {
                libc::munmap(above, NEIGHBOUR_ABOVE);
                mapped = false;
            }
            let again = libc::mmap(
                above,
                NEIGHBOUR_ABOVE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            );
            if again == above {
                mapped = true;
            } else if again != libc::MAP_FAILED {
                // A kernel that does not know the flag put it elsewhere.
                libc::munmap(again, NEIGHBOUR_ABOVE);
            }
        }
        rounds.fetch_add(1, Ordering::Relaxed);
    }
}

/// Panics of the panic churn stay quiet; every other panic is reported as
/// usual.
fn quiet_churn_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() != Some("panic-churn") {
            default(info);
        }
    }));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mallocs: u64 = flag("malloc", 2);
    if flag("pin-mmap-threshold", 1) != 0 {
        // SAFETY: mallopt only sets an allocator parameter.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
    }
    init_agent();
    let spawns: u64 = flag("spawn-churn", 0);
    let nice: i32 = flag("nice", 19);
    let neighbour: u64 = flag("mmap-neighbour", 1);

    let clock = Heartbeat::new();
    clock.spawn_untraced();
    quiet_churn_panics();

    let counters = Arc::new(Counters::default());
    let seed = XorShift::clock_seed();
    for i in 0..mallocs {
        let c = counters.clone();
        spawn_loop(format!("malloc-churn-{i}"), nice, move || {
            malloc_churn(seed.wrapping_add(i), &c.malloc)
        });
    }
    let (lib, symbol) = pick_library();
    let c = counters.clone();
    spawn_loop("dlopen-churn".into(), nice, move || {
        dlopen_churn(lib, symbol, &c.dlopen)
    });
    let c = counters.clone();
    spawn_loop("panic-churn".into(), nice, move || panic_churn(&c.panics));
    let c = counters.clone();
    spawn_loop("backtrace-churn".into(), nice, move || {
        backtrace_churn(&c.backtraces)
    });
    if neighbour != 0 {
        let c = counters.clone();
        spawn_loop("mmap-neighbour".into(), nice, move || {
            mmap_neighbour(&c.remaps)
        });
    }
    if spawns > 0 {
        let c = counters.clone();
        spawn_loop("spawn-churn".into(), nice, move || {
            spawn_churn(seed ^ 0x5eed, &c.spawns)
        });
    }
    let heartbeat = Ticker::start("heartbeat", Duration::from_millis(10));

    // Every loop has gone round once before `ready`.
    let all_started = || {
        [
            &counters.malloc,
            &counters.dlopen,
            &counters.panics,
            &counters.backtraces,
        ]
        .iter()
        .all(|c| c.load(Ordering::Relaxed) > 0)
            && heartbeat.ticks() > 0
    };
    while !all_started() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let lib = lib.to_string_lossy().into_owned();
    Control::new(tokio::runtime::Handle::current(), clock)
        .stats(move || {
            format!(
                "hb_max_gap_ms={} hb_max_stall_ms={} hb_ticks={} malloc={} dlopen={} \
                 panics={} backtraces={} remaps={} spawns={} dlopen_lib={lib}",
                heartbeat.max_gap_us() / 1000,
                heartbeat.max_stall_us() / 1000,
                heartbeat.ticks(),
                counters.malloc.load(Ordering::Relaxed),
                counters.dlopen.load(Ordering::Relaxed),
                counters.panics.load(Ordering::Relaxed),
                counters.backtraces.load(Ordering::Relaxed),
                counters.remaps.load(Ordering::Relaxed),
                counters.spawns.load(Ordering::Relaxed),
            )
        })
        .start();
    std::future::pending::<()>().await;
}
