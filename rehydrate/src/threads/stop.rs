//! Stopping every other thread of the process, as a garbage collector's stop-the-world does on
//! Linux: each thread is sent a real-time signal (with the stop's generation as its value) and
//! parks in the handler, after recording where it is: its program counter and the return address of every frame of its stack, unwound through the unwind tables
//! (`_Unwind_Backtrace`, which with glibc 2.35+ and libgcc 12+ finds them through
//! `_dl_find_object`, without a lock). The stopper waits until every thread the kernel lists
//! has parked, listing again for threads created meanwhile, then reads the positions; dropping
//! the [`StoppedWorld`] releases them.
//!
//! While the world is stopped the stopper must allocate nothing and take no lock another
//! thread may hold: a parked thread may hold the allocator's. Everything the stop itself needs
//! (the slots the handlers write, the lists of threads) is made before the first signal.
//!
//! A thread blocked in a system call is interrupted by the signal, parks like any other, and
//! goes back to its call when released (`SA_RESTART`; calls that never restart return
//! `EINTR`, as under any signal). A thread that blocks the signal never parks: the stop then
//! fails after its timeout, naming it.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::tasks::{current_tid, list_tids};

/// Return addresses kept per thread; a deeper stack is read as incomplete.
const MAX_FRAMES: usize = 512;

/// Words of registers a slot keeps: 16 general registers, 16 XMM registers of two words.
const REGISTERS: usize = 16 + 32;

/// Where RSP is among the kept registers.
const STACK_POINTER: usize = 15;

/// The names of the kept registers, for messages.
const REGISTER_NAMES: [&str; 16] = [
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi", "rsi", "rbp", "rbx", "rdx", "rax",
    "rcx", "rsp",
];

/// The indices of the register words a relocation may rewrite: all but the stack pointer.
fn rewritable(registers: &[usize; REGISTERS]) -> impl Iterator<Item = usize> + '_ {
    (0..registers.len()).filter(|&i| i != STACK_POINTER)
}

/// The name of kept register word `index`.
pub(crate) fn register_name(index: usize) -> String {
    match index {
        0..=15 => REGISTER_NAMES[index].to_string(),
        _ => format!("xmm{} (word {})", (index - 16) / 2, (index - 16) % 2),
    }
}

/// What one parked thread recorded about itself.
#[repr(C)]
struct Slot {
    /// The thread's id (written before it counts itself parked).
    tid: u32,
    /// Whether the unwinding reached the outermost frame.
    complete: bool,
    /// The interrupted context the kernel saved on the thread's stack (restored when the
    /// handler returns): rewriting a register here rewrites the thread's register.
    context: *mut libc::ucontext_t,
    pc: usize,
    /// The general registers but the program counter (R8-R15, RDI, RSI, RBP, RBX, RDX, RAX,
    /// RCX, RSP) and the low 128 bits of XMM0-15, as two words each.
    registers: [usize; REGISTERS],
    frame_count: usize,
    frames: [usize; MAX_FRAMES],
}

/// The generation of the stop in progress (0: none). Handlers of another generation return.
static ACTIVE: AtomicU32 = AtomicU32::new(0);
/// The last generation released (a futex word the parked handlers wait on).
static RELEASED: AtomicU32 = AtomicU32::new(0);
/// Handlers running (a futex word the stopper waits on before it reuses the slots).
static INSIDE: AtomicU32 = AtomicU32::new(0);
/// Threads parked in the active generation (a futex word the stopper waits on).
static PARKED: AtomicU32 = AtomicU32::new(0);
/// Slots taken in the active generation.
static CLAIMED: AtomicUsize = AtomicUsize::new(0);
/// A thread parked without a slot: its position is unknown.
static OVERFLOW: AtomicBool = AtomicBool::new(false);
/// The slots: `CAPACITY` of them, mapped by the stopper before the stop.
static SLOTS: AtomicPtr<Slot> = AtomicPtr::new(std::ptr::null_mut());
static CAPACITY: AtomicUsize = AtomicUsize::new(0);

/// One stop at a time in the process; holds the generation counter.
static STOPPER: Mutex<u32> = Mutex::new(0);

/// The signal that parks threads: `SIGRTMIN + 6` (glibc keeps the first real-time signals to
/// itself; `SIGRTMIN()` is the first one left).
pub fn stop_signal() -> i32 {
    libc::SIGRTMIN() + 6
}

/// How long one stop waits for every thread to park before it gives up.
pub(crate) const PARK_TIMEOUT: Duration = Duration::from_millis(200);

/// Every other thread parked, with where each is; released when dropped.
pub(crate) struct StoppedWorld {
    generation: u32,
    slots: *const Slot,
    parked: usize,
    requested: Instant,
    parked_at: Instant,
    /// The stop's lists of threads: freed after the release (fields drop after `drop`).
    _lists: [Vec<u32>; 3],
    _one_stop: std::sync::MutexGuard<'static, u32>,
}

/// Where one parked thread is.
pub(crate) struct ThreadPosition<'w> {
    pub tid: u32,
    pub pc: usize,
    /// Register words (see [`register_name`]).
    pub registers: &'w [usize; REGISTERS],
    /// Return addresses, innermost first (the handler's own frames among them).
    pub frames: &'w [usize],
    /// Whether `frames` reach the outermost frame.
    pub complete: bool,
}

/// The first reason a thread keeps a range of code in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InRange {
    /// The thread executes there (its program counter).
    Executing { tid: u32, address: usize },
    /// A frame of its stack returns there.
    Returning { tid: u32, address: usize },
    /// A register holds an address there (a function pointer about to be called, a pointer
    /// to a global): after the commit the thread would use the old build.
    Register {
        tid: u32,
        register: usize,
        address: usize,
    },
    /// Its stack could not be unwound to its end (a frame without unwind tables, or deeper
    /// than this runtime reads): where it returns to is unknown.
    Unknown { tid: u32, address: usize },
}

/// Why the world could not be stopped: threads that did not park in time (none listed: the
/// stop signal has a handler that is not the runtime's).
#[derive(Debug, Clone)]
pub(crate) struct NotStopped {
    pub tids: Vec<u32>,
    pub waited: Duration,
    pub signal_taken: bool,
}

impl StoppedWorld {
    /// Every parked thread's position.
    pub fn threads(&self) -> impl Iterator<Item = ThreadPosition<'_>> {
        (0..self.parked).map(move |i| {
            // SAFETY: slots below `parked` were written by handlers that then parked (the counter's SeqCst increment orders their writes before our read), and stay mapped and unwritten until this world is released.
            let slot = unsafe { &*self.slots.add(i) };
            ThreadPosition {
                tid: slot.tid,
                pc: slot.pc,
                registers: &slot.registers,
                frames: &slot.frames[..slot.frame_count.min(MAX_FRAMES)],
                complete: slot.complete,
            }
        })
    }

    /// Whether `range` holds the stack pointer of a parked thread or of this one (it is a
    /// thread's stack). Allocates nothing.
    pub fn holds_stack_pointer(&self, range: &Range<usize>) -> bool {
        let here = 0u8;
        range.contains(&(std::ptr::addr_of!(here) as usize))
            || self
                .threads()
                .any(|t| range.contains(&t.registers[STACK_POINTER]))
    }

    /// The first register word of a parked thread (tid, register index, value) for which
    /// `blocks` is true. Allocates nothing.
    pub fn first_register(&self, blocks: impl Fn(usize) -> bool) -> Option<(u32, usize, usize)> {
        self.threads().find_map(|t| {
            let register = rewritable(t.registers).find(|&i| blocks(t.registers[i]))?;
            Some((t.tid, register, t.registers[register]))
        })
    }

    /// Rewrites the saved registers of every parked thread: each word for which `map` gives a
    /// new value takes it when the thread is released (the stack pointer is left alone).
    /// Returns how many were rewritten. Allocates nothing.
    pub fn rewrite_registers(&self, map: impl Fn(usize) -> Option<usize>) -> usize {
        let mut rewritten = 0;
        for i in 0..self.parked {
            // SAFETY: a slot of a parked handler (see `threads`); its context lies on that thread's stack, which is not used until the thread is released.
            let slot = unsafe { &*self.slots.add(i) };
            // SAFETY: as above: the saved context of a parked thread, written by no one else.
            let context = unsafe { &mut *slot.context };
            for register in rewritable(&slot.registers) {
                let Some(value) = map(slot.registers[register]) else {
                    continue;
                };
                rewritten += 1;
                if register < 16 {
                    context.uc_mcontext.gregs[register] = value as i64;
                    continue;
                }
                // SAFETY: the kernel's saved floating-point state: the register was read from it.
                let Some(vector) = (unsafe { context.uc_mcontext.fpregs.as_mut() }) else {
                    continue;
                };
                let (xmm, half) = ((register - 16) / 2, (register - 16) % 2);
                let elements = &mut vector._xmm[xmm].element;
                elements[2 * half] = value as u32;
                elements[2 * half + 1] = (value >> 32) as u32;
            }
        }
        rewritten
    }

    /// How many threads are parked.
    pub fn len(&self) -> usize {
        self.parked
    }

    /// From the request to the moment the last thread parked.
    pub fn latency(&self) -> Duration {
        self.parked_at - self.requested
    }

    /// The first thread that executes in `code`, returns into it, or cannot be read.
    /// Allocates nothing.
    pub fn first_in(&self, code: &Range<usize>) -> Option<InRange> {
        for thread in self.threads() {
            let tid = thread.tid;
            if code.contains(&thread.pc) {
                return Some(InRange::Executing {
                    tid,
                    address: thread.pc,
                });
            }
            if let Some(&address) = thread.frames.iter().find(|a| code.contains(a)) {
                return Some(InRange::Returning { tid, address });
            }
            if !thread.complete {
                let address = thread.frames.last().copied().unwrap_or(thread.pc);
                return Some(InRange::Unknown { tid, address });
            }
        }
        None
    }

    /// Releases every thread; returns how long they were stopped (from the last park).
    pub fn resume(self) -> Duration {
        self.parked_at.elapsed()
        // `Drop` releases them.
    }
}

impl Drop for StoppedWorld {
    fn drop(&mut self) {
        release(self.generation);
    }
}

/// Stops every other thread of the process, waiting at most `timeout` for all of them to park.
pub(crate) fn stop_world(timeout: Duration) -> Result<StoppedWorld, NotStopped> {
    // Without the handler no signal is sent: a lone thread stops nothing.
    let installed = install_handler();
    let mut generation = STOPPER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let requested = Instant::now();
    let me = current_tid();
    let mut capacity = 64;
    loop {
        // Everything the stop needs, made before the first signal.
        let mut probe = Vec::with_capacity(4096);
        list_tids(&mut probe);
        capacity = capacity.max(2 * probe.len() + 32);
        let slots = ensure_slots(capacity);
        let mut listed: Vec<u32> = Vec::with_capacity(capacity);
        let mut signalled: Vec<u32> = Vec::with_capacity(capacity);
        *generation = generation.wrapping_add(1).max(1);
        let this = *generation;
        CLAIMED.store(0, SeqCst);
        PARKED.store(0, SeqCst);
        OVERFLOW.store(false, SeqCst);
        ACTIVE.store(this, SeqCst);

        // From here until released: no allocation.
        let lists = (&mut listed, &mut signalled);
        let outcome = park_all(this, me, lists, installed, requested, timeout);
        match outcome {
            Parked::All { parked } => {
                return Ok(StoppedWorld {
                    generation: this,
                    slots,
                    parked,
                    requested,
                    parked_at: Instant::now(),
                    _lists: [probe, listed, signalled],
                    _one_stop: generation,
                })
            }
            Parked::Overflow => {
                release(this);
                capacity *= 2;
            }
            Parked::SignalTaken => {
                release(this);
                return Err(NotStopped {
                    tids: Vec::new(),
                    waited: requested.elapsed(),
                    signal_taken: true,
                });
            }
            Parked::TimedOut => {
                release(this);
                // Released: allocating is safe again. The slots stay mapped until the next
                // stop (this thread holds the stopper's lock) and no handler writes them.
                let parked_tids: Vec<u32> = (0..PARKED.load(SeqCst) as usize)
                    .take(capacity)
                    // SAFETY: slots of handlers that parked in this generation.
                    .map(|i| unsafe { (*slots.add(i)).tid })
                    .collect();
                let tids = listed
                    .iter()
                    .copied()
                    .filter(|t| *t != me && !parked_tids.contains(t))
                    .collect();
                return Err(NotStopped {
                    tids,
                    waited: requested.elapsed(),
                    signal_taken: false,
                });
            }
        }
    }
}

enum Parked {
    All {
        parked: usize,
    },
    Overflow,
    TimedOut,
    /// Another thread exists, and the stop signal is not the runtime's to send.
    SignalTaken,
}

/// Signals every listed thread until all have parked; allocates nothing (`listed` and
/// `signalled` have the capacity they need). `installed`: whether the signal's handler is the
/// runtime's (without it, another thread cannot be stopped).
fn park_all(
    generation: u32,
    me: u32,
    (listed, signalled): (&mut Vec<u32>, &mut Vec<u32>),
    installed: bool,
    requested: Instant,
    timeout: Duration,
) -> Parked {
    loop {
        if !list_tids(listed) {
            return Parked::Overflow;
        }
        let mut sent = false;
        for &tid in listed.iter() {
            if tid == me || signalled.contains(&tid) {
                continue;
            }
            if !installed {
                return Parked::SignalTaken;
            }
            if signalled.len() == signalled.capacity() {
                return Parked::Overflow;
            }
            if send(tid, generation) {
                signalled.push(tid);
                sent = true;
            }
        }
        if OVERFLOW.load(SeqCst) {
            return Parked::Overflow;
        }
        let parked = PARKED.load(SeqCst);
        let slots = SLOTS.load(SeqCst);
        let claimed = CLAIMED.load(SeqCst).min(CAPACITY.load(SeqCst));
        let is_parked = |tid: u32| {
            (0..claimed).any(|i| {
                // SAFETY: claimed slots are written before the handler counts itself parked; a slot not yet written reads as tid 0, which no thread has.
                let parked = unsafe { std::ptr::addr_of!((*slots.add(i)).tid).read_volatile() };
                parked == tid
            })
        };
        let all = listed.iter().all(|&t| t == me || is_parked(t));
        if all && !sent && parked as usize == claimed {
            return Parked::All { parked: claimed };
        }
        if requested.elapsed() > timeout {
            return Parked::TimedOut;
        }
        futex_wait(&PARKED, parked, Some(Duration::from_micros(200)));
    }
}

/// Sends the stop signal carrying `generation` to thread `tid`; false if it is gone.
fn send(tid: u32, generation: u32) -> bool {
    // SAFETY: an all-zero siginfo is valid; the fields below are those rt_tgsigqueueinfo reads.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    info.si_signo = stop_signal();
    info.si_code = libc::SI_QUEUE;
    // siginfo_t's union: si_pid (u32) at 16, si_uid (u32) at 20, si_value at 24 on x86-64.
    let raw = std::ptr::addr_of_mut!(info).cast::<u8>();
    // SAFETY: within the 128-byte siginfo_t, at the offsets of the kernel's `_rt` member.
    unsafe {
        raw.add(16)
            .cast::<u32>()
            .write_unaligned(libc::getpid() as u32);
        raw.add(20).cast::<u32>().write_unaligned(libc::getuid());
        raw.add(24)
            .cast::<usize>()
            .write_unaligned(generation as usize);
    }
    // SAFETY: sends a signal whose handler is installed; `info` is valid for the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            libc::getpid(),
            tid as libc::c_int,
            stop_signal(),
            std::ptr::addr_of!(info),
        )
    };
    result == 0
}

/// Releases the threads parked in `generation` and waits until every handler has returned.
fn release(generation: u32) {
    RELEASED.store(generation, SeqCst);
    futex_wake(&RELEASED, i32::MAX);
    ACTIVE.store(0, SeqCst);
    loop {
        let inside = INSIDE.load(SeqCst);
        if inside == 0 {
            break;
        }
        futex_wait(&INSIDE, inside, Some(Duration::from_millis(1)));
    }
}

/// Where the slots lie (empty before the first stop). They hold the stopped threads' registers
/// and return addresses as they are, references into a build among them: a scan of the
/// process leaves them out (they change at every stop, and are the runtime's own).
pub(crate) fn slots_range() -> std::ops::Range<usize> {
    let start = SLOTS.load(SeqCst) as usize;
    start..start + CAPACITY.load(SeqCst) * std::mem::size_of::<Slot>()
}

/// The slots, at least `capacity` of them (the stopper's lock is held and no handler runs).
fn ensure_slots(capacity: usize) -> *const Slot {
    if CAPACITY.load(SeqCst) < capacity {
        let old = SLOTS.load(SeqCst);
        let old_capacity = CAPACITY.load(SeqCst);
        let bytes = capacity * std::mem::size_of::<Slot>();
        let fresh = crate::maps::map_anonymous(0, bytes, libc::PROT_READ | libc::PROT_WRITE)
            .expect("mapping the stop's thread slots");
        CAPACITY.store(0, SeqCst);
        SLOTS.store(fresh.cast(), SeqCst);
        CAPACITY.store(capacity, SeqCst);
        if !old.is_null() {
            // SAFETY: the previous slots, which no handler uses (none runs between stops).
            unsafe { libc::munmap(old.cast(), old_capacity * std::mem::size_of::<Slot>()) };
        }
    }
    let slots = SLOTS.load(SeqCst);
    for i in 0..capacity {
        // SAFETY: within the mapping; no handler runs between stops.
        unsafe { std::ptr::addr_of_mut!((*slots.add(i)).tid).write(0) };
    }
    slots
}

/// Installs the stop signal's handler once, and runs the unwinder once on this thread (its
/// first use initialises tables, which a handler must not do). False when another handler
/// holds the signal (the host's or a library's): the runtime does not take it over.
fn install_handler() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // SAFETY: all-zero sigactions are valid; the first call only reads the current one; the handler installed is async-signal-safe (see `on_stop_signal`).
        unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            libc::sigaction(stop_signal(), std::ptr::null(), &mut current);
            if current.sa_sigaction != libc::SIG_DFL && current.sa_sigaction != libc::SIG_IGN {
                return false;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop_signal as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(stop_signal(), &action, std::ptr::null_mut()) != 0 {
                return false;
            }
        }
        let mut frames = [0usize; 8];
        let mut count = 0;
        unwind_into(&mut frames, &mut count);
        true
    })
}

/// The signal handler: records this thread's position in a slot, counts itself parked and
/// waits until released. Async-signal-safe: atomics, raw system calls and the unwinder only.
extern "C" fn on_stop_signal(
    _signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: errno is this thread's; restored before returning.
    let errno = unsafe { *libc::__errno_location() };
    INSIDE.fetch_add(1, SeqCst);
    // SAFETY: the kernel passes a valid siginfo; si_value is where `send` put the generation.
    let generation = unsafe { (*info).si_value().sival_ptr as usize as u32 };
    if generation != 0 && ACTIVE.load(SeqCst) == generation {
        park(generation, context);
    }
    INSIDE.fetch_sub(1, SeqCst);
    futex_wake(&INSIDE, i32::MAX);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Records where this thread is, then waits for `generation` to be released.
fn park(generation: u32, context: *mut libc::c_void) {
    let index = CLAIMED.fetch_add(1, SeqCst);
    if index < CAPACITY.load(SeqCst) {
        // SAFETY: slot `index` is this handler's alone (claimed above) and mapped until the stopper releases this generation and every handler has returned.
        let slot = unsafe { &mut *SLOTS.load(SeqCst).add(index) };
        // SAFETY: the kernel passes the interrupted context as a ucontext_t.
        let registers = unsafe { &(*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
        slot.context = context.cast();
        slot.pc = registers[libc::REG_RIP as usize] as usize;
        for (word, &register) in slot.registers.iter_mut().zip(&registers[..16]) {
            *word = register as usize;
        }
        // SAFETY: the kernel's saved floating-point state, when it saved one.
        if let Some(vector) = unsafe {
            (*context.cast::<libc::ucontext_t>())
                .uc_mcontext
                .fpregs
                .as_ref()
        } {
            for (i, xmm) in vector._xmm.iter().enumerate() {
                let low = u64::from(xmm.element[0]) | (u64::from(xmm.element[1]) << 32);
                let high = u64::from(xmm.element[2]) | (u64::from(xmm.element[3]) << 32);
                slot.registers[16 + 2 * i] = low as usize;
                slot.registers[17 + 2 * i] = high as usize;
            }
        }
        slot.frame_count = 0;
        let reached_end = unwind_into(&mut slot.frames, &mut slot.frame_count);
        // Complete only if the unwinding went through the signal frame into the interrupted
        // code: an unwinder that stops at a trampoline it does not know (valgrind's) reports
        // the end of the stack too early.
        let frames = &slot.frames[..slot.frame_count.min(MAX_FRAMES)];
        slot.complete = reached_end && frames.contains(&slot.pc);
        // SAFETY: as above; published by the SeqCst increment below.
        unsafe { std::ptr::addr_of_mut!(slot.tid).write_volatile(current_tid()) };
    } else {
        OVERFLOW.store(true, SeqCst);
    }
    PARKED.fetch_add(1, SeqCst);
    futex_wake(&PARKED, 1);
    loop {
        let released = RELEASED.load(SeqCst);
        if released.wrapping_sub(generation) as i32 >= 0 {
            break;
        }
        futex_wait(&RELEASED, released, None);
    }
}

#[repr(C)]
struct UnwindContext {
    _opaque: [u8; 0],
}

extern "C" {
    // libgcc's unwinder (libgcc_s, which Rust's standard library links on Linux).
    fn _Unwind_Backtrace(
        trace: extern "C" fn(*mut UnwindContext, *mut libc::c_void) -> libc::c_int,
        data: *mut libc::c_void,
    ) -> libc::c_int;
    fn _Unwind_GetIPInfo(context: *mut UnwindContext, ip_before_insn: *mut libc::c_int) -> usize;
}

/// `_Unwind_Reason_Code` values.
const URC_NO_REASON: libc::c_int = 0;
const URC_NORMAL_STOP: libc::c_int = 4;
const URC_END_OF_STACK: libc::c_int = 5;

struct Frames<'a> {
    frames: &'a mut [usize],
    count: &'a mut usize,
}

/// Every return address of this thread's stack into `frames`; true when the unwinding reached
/// the outermost frame with room to spare.
fn unwind_into(frames: &mut [usize], count: &mut usize) -> bool {
    extern "C" fn each(context: *mut UnwindContext, data: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `data` is the `Frames` passed below, alive for the whole unwinding.
        let frames = unsafe { &mut *data.cast::<Frames>() };
        if *frames.count == frames.frames.len() {
            return URC_NORMAL_STOP;
        }
        let mut before = 0;
        // SAFETY: a context the unwinder passes to its callback.
        let ip = unsafe { _Unwind_GetIPInfo(context, &mut before) };
        frames.frames[*frames.count] = ip;
        *frames.count += 1;
        URC_NO_REASON
    }
    let mut data = Frames { frames, count };
    // SAFETY: `each` only writes within `data`, which outlives the call.
    let reason = unsafe { _Unwind_Backtrace(each, std::ptr::addr_of_mut!(data).cast()) };
    reason == URC_END_OF_STACK
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let timespec = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let timespec_ptr = timespec
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: a futex wait on a live aligned u32; the kernel only reads it and the timespec.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            timespec_ptr,
        )
    };
}

fn futex_wake(word: &AtomicU32, count: i32) {
    // SAFETY: a futex wake on a live aligned u32.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            count,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn busy_and_blocked_threads_park_with_their_positions_and_run_on_when_released() {
        let spins = AtomicU64::new(0);
        let done = AtomicBool::new(false);
        let (sender, receiver) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|scope| {
            let mut tids = Vec::new();
            let (tid_sender, tid_receiver) = std::sync::mpsc::channel();
            for _ in 0..4 {
                let tid_sender = tid_sender.clone();
                let (spins, done) = (&spins, &done);
                scope.spawn(move || {
                    tid_sender.send(current_tid()).unwrap();
                    while !done.load(SeqCst) {
                        spins.fetch_add(1, SeqCst);
                    }
                });
            }
            let blocked = {
                let tid_sender = tid_sender.clone();
                scope.spawn(move || {
                    tid_sender.send(current_tid()).unwrap();
                    receiver.recv().unwrap(); // blocked in futex
                })
            };
            for _ in 0..5 {
                tids.push(tid_receiver.recv().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
            for _ in 0..3 {
                let world = stop_world(Duration::from_secs(5)).expect("every thread parks");
                let positions: Vec<(u32, usize, bool, usize)> = world
                    .threads()
                    .map(|t| (t.tid, t.pc, t.complete, t.frames.len()))
                    .collect::<Vec<_>>();
                let frozen = spins.load(SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                assert_eq!(
                    spins.load(SeqCst),
                    frozen,
                    "a busy thread ran while stopped"
                );
                let latency = world.latency();
                let pause = world.resume();
                assert!(pause >= Duration::from_millis(5) && latency < Duration::from_secs(5));
                for tid in &tids {
                    let (_, pc, complete, frames) = positions
                        .iter()
                        .find(|p| p.0 == *tid)
                        .unwrap_or_else(|| panic!("thread {tid} not parked: {positions:?}"));
                    assert!(*pc != 0 && *complete && *frames > 2, "{positions:?}");
                }
                assert!(!positions.iter().any(|p| p.0 == current_tid()));
                let before = spins.load(SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                assert!(spins.load(SeqCst) > before, "released threads run on");
            }
            sender.send(()).unwrap();
            blocked.join().unwrap();
            done.store(true, SeqCst);
        });
    }

    #[test]
    fn a_thread_blocking_the_signal_is_named_and_the_others_run_on() {
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let (tid_sender, tid_receiver) = std::sync::mpsc::channel();
            let done = &done;
            scope.spawn(move || {
                // SAFETY: blocks one signal for this thread only.
                unsafe {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, stop_signal());
                    libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                }
                tid_sender.send(current_tid()).unwrap();
                while !done.load(SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                // Unblocked with the stale signal pending: its handler must return at once.
                // SAFETY: as above.
                unsafe {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, stop_signal());
                    libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                }
            });
            let blocker = tid_receiver.recv().unwrap();
            let refused = stop_world(Duration::from_millis(50))
                .err()
                .expect("cannot stop");
            assert_eq!(refused.tids, vec![blocker]);
            done.store(true, SeqCst);
        });
        // The world stops again once the thread is gone.
        let world = stop_world(Duration::from_secs(5)).expect("no blocker left");
        drop(world);
    }
}
