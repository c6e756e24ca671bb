//! Scanning the process's writable memory for words that point into a range (the old build).
//!
//! Memory is read through `process_vm_readv` on the process itself, into a small buffer: a
//! mapping that another thread unmaps meanwhile is then an error the scan skips, not a crash,
//! and uninitialised heap bytes are read by the kernel, not by this code.

use std::ops::Range;

/// One writable mapping of the process.
#[derive(Debug, Clone)]
pub(crate) struct Region {
    pub range: Range<usize>,
    /// The mapping's name in `/proc/self/maps` (a path, `[heap]`, or empty).
    pub name: String,
    /// The thread whose stack this is (0: a thread stack whose thread is unknown, found by its
    /// guard page): words here are reported, never rewritten.
    pub stack_of: Option<u32>,
}

/// A word found pointing into the scanned-for range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    /// Where the word is.
    pub location: usize,
    /// Its value minus the start of the range: the runtime's own lists must not hold values
    /// that look like references into the old build while it scans.
    pub offset: u64,
}

/// The largest no-access mapping taken for a thread stack's guard.
const MAX_GUARD: usize = 1 << 20;

/// Every readable and writable mapping except `excluded` (the builds' own images) and device
/// mappings; thread stacks are marked.
pub(crate) fn writable_regions(excluded: &[Range<usize>]) -> Vec<Region> {
    let stacks = thread_stack_pointers();
    let mappings = crate::maps::all();
    let mut regions = Vec::new();
    for (i, mapping) in mappings.iter().enumerate() {
        let (start, end) = (mapping.range.start, mapping.range.end);
        if !mapping.readable_and_writable() || mapping.name.starts_with("/dev/") {
            continue;
        }
        if excluded.iter().any(|e| e.start < end && start < e.end) {
            continue;
        }
        // A thread stack made by pthreads is an anonymous mapping right above its no-access
        // guard (glibc: one page unless the thread asked for more; a malloc arena's unused
        // tail, which the next arena follows, is megabytes), with the thread's descriptor at
        // its top. The guard can merge with a neighbouring reservation, so the descriptor
        // alone also tells.
        let follows_guard = i > 0 && {
            let below = &mappings[i - 1];
            below.range.end == start
                && below.no_access_anonymous()
                && below.range.len() <= MAX_GUARD
        };
        let anonymous = mapping.name.is_empty();
        let stack_of = stacks
            .iter()
            .find(|(_, sp)| (start..end).contains(sp))
            .map(|&(tid, _)| tid)
            .or_else(|| (mapping.name == "[stack]").then(std::process::id))
            .or_else(|| {
                (anonymous && (follows_guard || holds_thread_descriptor(&mapping.range)))
                    .then_some(0)
            });
        regions.push(Region {
            range: mapping.range.clone(),
            name: mapping.name.clone(),
            stack_of,
        });
    }
    regions
}

/// How far below its end a mapping is searched for a thread descriptor (glibc puts it in the
/// last `sizeof(struct pthread)` bytes, about 2.3 KiB, aligned to the static TLS alignment).
const DESCRIPTOR_SEARCH: usize = 8 * 1024;

/// Whether the top of `range` holds a glibc thread descriptor (`struct pthread`, which glibc
/// puts at the top of every thread stack it makes or is given). On x86-64 it starts with the
/// TCB header: its first word (`tcb`) and third word (`self`) hold its own address, and its
/// sixth (`stack_guard`) the stack protector's canary, which every thread of the process shares.
fn holds_thread_descriptor(range: &Range<usize>) -> bool {
    let canary = stack_canary();
    let from = range.end.saturating_sub(DESCRIPTOR_SEARCH).max(range.start);
    let mut words = vec![0usize; (range.end - from) / 8];
    let read = read_own_memory(from, &mut words) / 8;
    (0..read.saturating_sub(5)).any(|i| {
        let at = from + 8 * i;
        words[i] == at && words[i + 2] == at && words[i + 5] == canary
    })
}

/// This thread's stack protector canary (`%fs:0x28` on x86-64 glibc).
fn stack_canary() -> usize {
    let canary: usize;
    // SAFETY: reads one word of this thread's TCB, which glibc keeps mapped for the thread's life.
    unsafe {
        std::arch::asm!("mov {}, qword ptr fs:[0x28]", out(reg) canary, options(nostack, readonly, preserves_flags))
    };
    canary
}

/// (thread id, a stack pointer) of every thread: this one's from a local's address, the
/// others' from `/proc/self/task/*/syscall` (which shows it while the thread is in a system
/// call, as a thread waiting for the reload to end is).
fn thread_stack_pointers() -> Vec<(u32, usize)> {
    let here = 0u8;
    // SAFETY: gettid has no preconditions.
    let this_thread = unsafe { libc::gettid() } as u32;
    let mut stacks = vec![(this_thread, std::ptr::addr_of!(here) as usize)];
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return stacks;
    };
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        if tid == this_thread {
            continue;
        }
        let Ok(syscall) = std::fs::read_to_string(task.path().join("syscall")) else {
            continue;
        };
        // "nr arg1 ... arg6 sp pc" while in a system call, "running" otherwise.
        let fields: Vec<&str> = syscall.split_whitespace().collect();
        if fields.len() == 9 {
            let sp = fields[7].trim_start_matches("0x");
            if let Ok(sp) = usize::from_str_radix(sp, 16) {
                stacks.push((tid, sp));
            }
        }
    }
    stacks
}

/// Bytes read per system call.
const CHUNK: usize = 256 * 1024;

/// Reads memory for a scan through one buffer, which it clears when dropped: its copies hold
/// references into a build, and freed memory holding them would look like live references
/// to a later scan.
pub(crate) struct Scanner {
    buffer: Vec<usize>,
}

impl Scanner {
    pub fn new() -> Scanner {
        Scanner {
            buffer: vec![0; CHUNK / 8],
        }
    }

    /// Calls `found` for every aligned word in `range` whose value lies in `target`.
    pub fn scan(
        &mut self,
        range: &Range<usize>,
        target: &Range<usize>,
        mut found: impl FnMut(Found),
    ) {
        let mut at = range.start;
        while at < range.end {
            let length = CHUNK.min(range.end - at);
            let read = read_own_memory(at, &mut self.buffer[..length / 8]);
            if read == 0 {
                at += 4096; // unmapped meanwhile, or not readable after all: skip a page
                continue;
            }
            for (i, &word) in self.buffer[..read / 8].iter().enumerate() {
                if word.wrapping_sub(target.start) < target.end - target.start {
                    found(Found {
                        location: at + 8 * i,
                        offset: (word - target.start) as u64,
                    });
                }
            }
            at += read;
        }
    }
}

impl Drop for Scanner {
    fn drop(&mut self) {
        for word in &mut self.buffer {
            // SAFETY: a valid, aligned element of the buffer; volatile so the clearing is not dropped as a store before a free.
            unsafe { std::ptr::write_volatile(word, 0) };
        }
    }
}

/// Copies this process's memory at `address` into `buffer`; the bytes copied (0 on failure,
/// a multiple of 8 otherwise).
fn read_own_memory(address: usize, buffer: &mut [usize]) -> usize {
    let local = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len() * 8,
    };
    let remote = libc::iovec {
        iov_base: address as *mut _,
        iov_len: buffer.len() * 8,
    };
    // SAFETY: the kernel writes at most `iov_len` bytes into `buffer`, which has them; the remote side is only read, and an unmapped address is an error, not a fault.
    let read = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    if read <= 0 {
        return 0;
    }
    read as usize & !7
}
