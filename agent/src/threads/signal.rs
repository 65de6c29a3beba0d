//! Interrupting threads to copy their stacks: the signal handler, the arena
//! it writes into, and `tgkill`. Every `unsafe` block of `delouse threads`
//! is here.
//!
//! The handler is the only code that runs on the application's threads. It
//! takes no lock, allocates nothing and does not unwind: it saves three or
//! four registers and copies the stack from the interrupted stack pointer up
//! to the end of its mapping (bounded) into a slot of a preallocated arena.
//! Unwinding happens later on the agent thread (`unwind.rs`).
//!
//! The arena is never unmapped, so a signal that arrives late (a thread that
//! had the signal pending past the deadline) writes into memory that is
//! still there; its pages are handed back to the kernel after each request.

use std::ffi::c_int;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// Largest slice of one thread's stack that is copied.
pub(crate) const STACK_CAP: usize = 512 * 1024;

const EMPTY: u64 = 0;
const ARMED: u64 = 1;
const WRITING: u64 = 2;
const DONE: u64 = 3;
/// A slot whose handler never finished: never armed again.
const DEAD: u64 = 4;

fn pack(tid: u32, state: u64) -> u64 {
    (u64::from(tid) << 32) | state
}

/// One thread's slot. The state word is `tid << 32 | state`, so a handler
/// only ever claims the slot armed for its own thread.
#[repr(C)]
struct Slot {
    state: AtomicU64,
    pc: u64,
    sp: u64,
    fp: u64,
    lr: u64,
    len: u64,
    handler_ns: u64,
}

/// Start of the arena mapping; the rest is laid out after it.
#[repr(C)]
struct Header {
    slots: usize,
    maps: usize,
    /// `maps` pairs `[start, end)` of readable mappings, sorted, so the
    /// handler finds the end of the stack it runs on.
    maps_len: usize,
}

struct Arena {
    base: *mut u8,
    size: usize,
    slots: usize,
    maps: usize,
}

// SAFETY: the arena is plain memory shared with signal handlers through
// atomics; the agent touches its non-atomic parts only while no slot is
// being written (see `Capture`).
unsafe impl Send for Arena {}

impl Arena {
    fn layout(slots: usize, maps: usize) -> (usize, usize, usize, usize) {
        let header = size_of::<Header>();
        let slots_off = header.next_multiple_of(64);
        let maps_off = (slots_off + slots * size_of::<Slot>()).next_multiple_of(64);
        let data_off = (maps_off + maps * 16).next_multiple_of(4096);
        let size = data_off + slots * STACK_CAP;
        (slots_off, maps_off, data_off, size)
    }

    fn new(slots: usize, maps: usize) -> Option<Arena> {
        let (_, _, _, size) = Self::layout(slots, maps);
        // SAFETY: an anonymous private mapping of `size` bytes; no file, no
        // fixed address. NORESERVE: only touched pages cost memory.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let base = base.cast::<u8>();
        // SAFETY: the mapping is fresh, zeroed, and large enough for the
        // header at its start; a zeroed Slot is a valid EMPTY slot.
        unsafe {
            base.cast::<Header>().write(Header {
                slots,
                maps,
                maps_len: 0,
            })
        };
        Some(Arena {
            base,
            size,
            slots,
            maps,
        })
    }

    /// Slot `i`; every caller iterates `0..self.slots`.
    fn slot(&self, i: usize) -> &Slot {
        let (slots_off, ..) = Self::layout(self.slots, self.maps);
        let i = i.min(self.slots - 1);
        // SAFETY: `i` is in bounds; slots are 64-byte aligned within the
        // mapping, which lives for the rest of the process.
        unsafe { &*self.base.add(slots_off).cast::<Slot>().add(i) }
    }

    fn data(&self, i: usize) -> *mut u8 {
        let (_, _, data_off, _) = Self::layout(self.slots, self.maps);
        // SAFETY: in bounds of the mapping for every slot index.
        unsafe { self.base.add(data_off + i * STACK_CAP) }
    }
}

/// The arena handlers write into; null before the first request.
static ARENA: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
/// The signal the handler is installed for; 0 before.
static SIGNAL: AtomicUsize = AtomicUsize::new(0);

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime is async-signal-safe; `ts` is valid.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

extern "C" fn handler(_sig: c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: reading and restoring errno of this thread, as handlers must.
    let errno = unsafe { *libc::__errno_location() };
    let start = now_ns();
    let base = ARENA.load(Ordering::Acquire);
    if !base.is_null() && !ctx.is_null() {
        // SAFETY: a non-null ARENA points at a live arena whose header was
        // written before it was published; `ctx` is the kernel's ucontext.
        unsafe { capture(base, ctx.cast(), start) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// The handler's work. Only atomics, reads of the arena header and a bounded
/// copy of this thread's own stack.
///
/// # Safety
///
/// `base` must be a published arena and `uc` the handler's ucontext.
unsafe fn capture(base: *mut u8, uc: *const libc::ucontext_t, start: u64) {
    // SAFETY: gettid has no preconditions and is async-signal-safe.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
    // SAFETY: the header is at the start of the arena.
    let header = unsafe { &*base.cast::<Header>() };
    let arena = Arena {
        base,
        size: 0,
        slots: header.slots,
        maps: header.maps,
    };
    let armed = pack(tid, ARMED);
    let Some(i) = (0..arena.slots).find(|&i| arena.slot(i).state.load(Ordering::Acquire) == armed)
    else {
        return;
    };
    let slot = arena.slot(i);
    if slot
        .state
        .compare_exchange(
            armed,
            pack(tid, WRITING),
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        return;
    }
    // SAFETY: the kernel passes a valid ucontext to an SA_SIGINFO handler.
    let (pc, sp, fp, lr) = unsafe { registers(uc) };
    let (_, maps_off, ..) = Arena::layout(arena.slots, arena.maps);
    // SAFETY: `maps_len` pairs were written before the slot was armed.
    let maps = unsafe {
        std::slice::from_raw_parts(
            base.add(maps_off).cast::<[u64; 2]>(),
            header.maps_len.min(header.maps),
        )
    };
    let end = match maps.binary_search_by(|m| {
        if m[1] <= sp {
            std::cmp::Ordering::Less
        } else if m[0] > sp {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    }) {
        Ok(m) => maps[m][1],
        Err(_) => sp,
    };
    let want = (end.saturating_sub(sp) as usize).min(STACK_CAP);
    // SAFETY: the destination is this slot's own STACK_CAP bytes.
    let len = unsafe { copy_own_memory(sp, arena.data(i), want) };
    // SAFETY: slots other than this one are never written here, so the
    // slot's plain fields are this handler's alone between WRITING and DONE.
    unsafe {
        let s = ptr::from_ref(slot).cast_mut();
        (*s).pc = pc;
        (*s).sp = sp;
        (*s).fp = fp;
        (*s).lr = lr;
        (*s).len = len as u64;
        (*s).handler_ns = now_ns().saturating_sub(start);
    }
    let _ = slot.state.compare_exchange(
        pack(tid, WRITING),
        pack(tid, DONE),
        Ordering::AcqRel,
        Ordering::Acquire,
    );
}

/// Copies up to `len` bytes of this process's memory at `from` to `to`, and
/// returns how many it copied. The range is where the stack should be, but
/// the kernel joins a thread's stack with adjacent anonymous mappings, and
/// another thread may unmap such a neighbour at any moment: a plain copy
/// could fault, and a fault in this handler kills the process. So the copy
/// goes through `process_vm_readv` on our own pid, which stops at the first
/// page that is not there instead of faulting, one page per iovec so that a
/// partial read keeps every page before the hole.
///
/// # Safety
///
/// `to` must be valid for writes of `len` bytes.
unsafe fn copy_own_memory(from: u64, to: *mut u8, len: usize) -> usize {
    const PAGE: usize = 4096;
    const CHUNKS: usize = STACK_CAP / PAGE + 1;
    let mut remote = [libc::iovec {
        iov_base: ptr::null_mut(),
        iov_len: 0,
    }; CHUNKS];
    let mut n = 0;
    let mut at = from as usize;
    let stop = at.saturating_add(len);
    while at < stop && n < CHUNKS {
        let next = ((at / PAGE) + 1) * PAGE;
        let chunk_end = next.min(stop);
        remote[n] = libc::iovec {
            iov_base: at as *mut libc::c_void,
            iov_len: chunk_end - at,
        };
        n += 1;
        at = chunk_end;
    }
    let local = libc::iovec {
        iov_base: to.cast(),
        iov_len: len,
    };
    // SAFETY: process_vm_readv only reads our own memory into `local`
    // (valid per the caller); it fails or stops early on unmapped pages.
    let got = unsafe {
        libc::process_vm_readv(
            libc::getpid(),
            &local,
            1,
            remote.as_ptr(),
            n as libc::c_ulong,
            0,
        )
    };
    if got < 0 { 0 } else { got as usize }
}

/// pc, sp, frame pointer and link register of the interrupted context.
///
/// # Safety
///
/// `uc` must point at a valid ucontext.
#[cfg(target_arch = "x86_64")]
unsafe fn registers(uc: *const libc::ucontext_t) -> (u64, u64, u64, u64) {
    // SAFETY: the caller guarantees `uc`.
    let g = unsafe { &(*uc).uc_mcontext.gregs };
    (
        g[libc::REG_RIP as usize] as u64,
        g[libc::REG_RSP as usize] as u64,
        g[libc::REG_RBP as usize] as u64,
        0,
    )
}

/// # Safety
///
/// `uc` must point at a valid ucontext.
#[cfg(target_arch = "aarch64")]
unsafe fn registers(uc: *const libc::ucontext_t) -> (u64, u64, u64, u64) {
    // SAFETY: the caller guarantees `uc`.
    let m = unsafe { &(*uc).uc_mcontext };
    (m.pc, m.sp, m.regs[29], m.regs[30])
}

fn current_handler(sig: c_int) -> Option<usize> {
    // SAFETY: a zeroed sigaction is valid to be overwritten by the query.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: querying only (null new action); `old` is valid.
    (unsafe { libc::sigaction(sig, ptr::null(), &mut old) } == 0).then_some(old.sa_sigaction)
}

/// The signal to use, installing the handler on a free real-time signal the
/// first time. A signal whose handler someone else replaced is given up for
/// another. `None` when no real-time signal is free.
pub(crate) fn signal() -> Option<c_int> {
    let ours = handler as extern "C" fn(c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize;
    let current = SIGNAL.load(Ordering::Acquire) as c_int;
    if current != 0 && current_handler(current) == Some(ours) {
        return Some(current);
    }
    // Search from the top: libraries that take real-time signals tend to
    // take the low ones.
    for sig in (libc::SIGRTMIN()..=libc::SIGRTMAX()).rev() {
        if current_handler(sig) != Some(libc::SIG_DFL) {
            continue;
        }
        // SAFETY: a zeroed sigaction is a valid starting point.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = ours;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        // SAFETY: `sa_mask` is a valid sigset to fill.
        unsafe { libc::sigfillset(&mut action.sa_mask) };
        // SAFETY: installs our handler, which is async-signal-safe, for a
        // signal nobody handles. It is never reset to the default action:
        // a signal still pending would then kill the process.
        if unsafe { libc::sigaction(sig, &action, ptr::null_mut()) } == 0 {
            SIGNAL.store(sig as usize, Ordering::Release);
            return Some(sig);
        }
    }
    None
}

/// Sends `sig` to thread `tid` of this process.
pub(crate) fn tgkill(tid: u32, sig: c_int) -> bool {
    // SAFETY: tgkill only sends a signal; our pid makes sure it cannot reach
    // a thread of another process that reused the tid.
    unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid as libc::pid_t, sig) == 0 }
}

/// The calling thread's kernel id.
pub(crate) fn gettid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// What one thread's handler saved.
pub(crate) struct Saved {
    pub(crate) pc: u64,
    pub(crate) sp: u64,
    pub(crate) fp: u64,
    pub(crate) lr: u64,
    pub(crate) stack: Vec<u8>,
    pub(crate) handler_ns: u64,
}

/// One capture in progress. Only one at a time (the caller serializes).
pub(crate) struct Capture {
    arena: Arena,
    tids: Vec<u32>,
}

static CURRENT: std::sync::Mutex<Option<Arena>> = std::sync::Mutex::new(None);

impl Capture {
    /// Arms one slot per thread of `tids`, with `maps` (sorted readable
    /// mappings) for the handler to find stack ends.
    pub(crate) fn arm(tids: &[u32], maps: &[[u64; 2]]) -> Option<Capture> {
        let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        let fits = current
            .as_ref()
            .is_some_and(|a| a.slots >= tids.len() + dead_slots(a) && a.maps >= maps.len());
        if !fits {
            // The old arena stays mapped: a late handler may still look at
            // it. Its pages were handed back after its last use.
            let arena = Arena::new((tids.len() * 2).max(64), (maps.len() * 2).max(256))?;
            ARENA.store(arena.base, Ordering::Release);
            *current = Some(arena);
        }
        let arena = current.take()?;
        let (_, maps_off, ..) = Arena::layout(arena.slots, arena.maps);
        // SAFETY: no slot is armed (the previous capture closed them all),
        // so no handler reads the map table while it is rewritten; it fits
        // in its reserved space (checked above).
        unsafe {
            ptr::copy_nonoverlapping(
                maps.as_ptr(),
                arena.base.add(maps_off).cast::<[u64; 2]>(),
                maps.len(),
            );
            (*arena.base.cast::<Header>()).maps_len = maps.len();
        }
        let mut next = 0;
        let mut slot_tids = vec![0u32; arena.slots];
        for &tid in tids {
            while arena.slot(next).state.load(Ordering::Acquire) & 0xff == DEAD {
                next += 1;
            }
            arena
                .slot(next)
                .state
                .store(pack(tid, ARMED), Ordering::Release);
            slot_tids[next] = tid;
            next += 1;
        }
        Some(Capture {
            arena,
            tids: slot_tids,
        })
    }

    /// How many armed threads have answered.
    pub(crate) fn answered(&self) -> usize {
        (0..self.arena.slots)
            .filter(|&i| self.arena.slot(i).state.load(Ordering::Acquire) & 0xff == DONE)
            .count()
    }

    /// Disarms what did not answer and returns what did, by tid.
    pub(crate) fn finish(self) -> Vec<(u32, Saved)> {
        let mut saved = Vec::new();
        for i in 0..self.arena.slots {
            let tid = self.tids[i];
            if tid == 0 {
                continue;
            }
            let slot = self.arena.slot(i);
            // Unanswered: disarm. A handler mid-copy: give it a moment.
            if slot
                .state
                .compare_exchange(pack(tid, ARMED), EMPTY, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                continue;
            }
            for _ in 0..50 {
                if slot.state.load(Ordering::Acquire) != pack(tid, WRITING) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            if slot.state.load(Ordering::Acquire) != pack(tid, DONE) {
                slot.state.store(pack(tid, DEAD), Ordering::Release);
                continue;
            }
            // SAFETY: DONE was set by the handler after its last write, with
            // Release; the Acquire load above makes the writes visible, and
            // no handler writes this slot until it is armed again.
            let s = unsafe { &*ptr::from_ref(slot) };
            let len = (s.len as usize).min(STACK_CAP);
            // SAFETY: the handler copied `len` bytes there.
            let stack = unsafe { std::slice::from_raw_parts(self.arena.data(i), len) }.to_vec();
            saved.push((
                tid,
                Saved {
                    pc: s.pc,
                    sp: s.sp,
                    fp: s.fp,
                    lr: s.lr,
                    stack,
                    handler_ns: s.handler_ns,
                },
            ));
            slot.state.store(EMPTY, Ordering::Release);
        }
        let (_, _, data_off, _) = Arena::layout(self.arena.slots, self.arena.maps);
        // SAFETY: hands the stack copies' pages back; the range is inside
        // the mapping. A late handler writing there gets fresh zero pages.
        unsafe {
            libc::madvise(
                self.arena.base.add(data_off).cast(),
                self.arena.size - data_off,
                libc::MADV_DONTNEED,
            )
        };
        *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.arena);
        saved
    }
}

fn dead_slots(a: &Arena) -> usize {
    (0..a.slots)
        .filter(|&i| a.slot(i).state.load(Ordering::Acquire) & 0xff == DEAD)
        .count()
}
