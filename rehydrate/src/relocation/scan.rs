//! Scanning the process's writable memory for words that point into a range (the old build).
//!
//! Memory is read in place, by a search that survives a page unmapped meanwhile (see
//! [`super::in_place`]). Under valgrind, or when the host holds the fault signals, it is copied
//! through `process_vm_readv` on the process itself into a small buffer instead: a mapping
//! unmapped meanwhile is then an error the scan skips, and uninitialised heap bytes are read by
//! the kernel, not by this code.

use std::ops::Range;

use crate::hidden::HiddenRange;

/// One writable mapping of the process.
#[derive(Debug, Clone)]
pub(crate) struct Region {
    /// Where it lies (kept complemented: see [`crate::hidden`]).
    pub span: HiddenRange,
    /// The mapping's name in `/proc/self/maps` (a path, `[heap]`, or empty).
    pub name: String,
    /// The thread whose stack this is (0: a thread stack whose thread is unknown, found by its
    /// glibc descriptor): words here are reported, never rewritten.
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

/// Every readable and writable mapping except `excluded` (the builds' own images) and device
/// mappings; thread stacks are marked.
pub(crate) fn writable_regions(excluded: &[Range<usize>]) -> Vec<Region> {
    let stacks = thread_stack_pointers();
    let maps = crate::maps::text();
    let valgrind = crate::valgrind::running();
    let mut regions = Vec::with_capacity(crate::maps::lines(maps.as_bytes()).count());
    let mut previous: Option<crate::maps::MappingRef<'_>> = None;
    for mapping in crate::maps::lines(maps.as_bytes()) {
        let (start, end) = (mapping.range.start, mapping.range.end);
        let scanned = scanned(&mapping, previous.as_ref(), valgrind, excluded);
        previous = Some(mapping.clone());
        if !scanned {
            continue;
        }
        // A thread stack made by glibc holds the thread's descriptor at its top (a thread in
        // a system call also shows its stack pointer). Its no-access guard below does not
        // tell: any anonymous mapping may follow a small no-access one (an allocator's guard,
        // an unloaded build's reserved range, valgrind's reservations), and a heap taken for a
        // stack would have its references reported instead of re-pointed.
        let anonymous = mapping.name.is_empty();
        let stack_of = stacks
            .iter()
            .find(|(_, sp)| (start..end).contains(sp))
            .map(|&(tid, _)| tid)
            .or_else(|| (mapping.name == "[stack]").then(std::process::id))
            .or_else(|| (anonymous && holds_thread_descriptor(&mapping.range)).then_some(0));
        regions.push(Region {
            span: HiddenRange::new(&mapping.range),
            name: mapping.name.to_string(),
            stack_of,
        });
    }
    regions
}

/// Every mapping in `maps_text` (read by `maps::read_without_allocating`) that a scan reads,
/// except thread stacks (`is_stack`); allocates nothing.
pub(crate) fn for_each_scanned_mapping(
    maps_text: &[u8],
    excluded: &[Range<usize>],
    is_stack: impl Fn(&Range<usize>) -> bool,
    mut each: impl FnMut(&Range<usize>),
) {
    let valgrind = crate::valgrind::running();
    let mut previous: Option<crate::maps::MappingRef<'_>> = None;
    for mapping in crate::maps::lines(maps_text) {
        if scanned(&mapping, previous.as_ref(), valgrind, excluded)
            && !is_stack(&mapping.range)
            && mapping.name != "[stack]"
        {
            each(&mapping.range);
        }
        previous = Some(mapping);
    }
}

/// Whether a scan reads `mapping` (`previous`: the mapping before it): readable and writable,
/// not generated code, not a device, not valgrind's own, not in `excluded` (the builds).
fn scanned(
    mapping: &crate::maps::MappingRef<'_>,
    previous: Option<&crate::maps::MappingRef<'_>>,
    valgrind: bool,
    excluded: &[Range<usize>],
) -> bool {
    let (start, end) = (mapping.range.start, mapping.range.end);
    // Writable and executable memory is generated code (a JIT's), not data; but valgrind
    // gives the program's heap that protection too.
    let generated_code = mapping.perms.as_bytes().get(2) == Some(&b'x') && !valgrind;
    let valgrinds = valgrind && is_valgrinds(mapping, previous);
    let in_a_build = excluded.iter().any(|e| e.start < end && start < e.end);
    let device = mapping.name.starts_with("/dev/");
    mapping.readable_and_writable() && !(generated_code || valgrinds || in_a_build || device)
}

/// Whether `mapping` is valgrind's own (its tool's image and the memory right after it, where
/// its segment tables live): its tables hold the process's addresses, and rewriting them would
/// corrupt valgrind.
fn is_valgrinds(
    mapping: &crate::maps::MappingRef<'_>,
    previous: Option<&crate::maps::MappingRef<'_>>,
) -> bool {
    let tool = |m: &crate::maps::MappingRef<'_>| {
        m.name.contains("/valgrind/") && !m.name.contains("vgpreload")
    };
    // Under memcheck, valgrind's other memory is told word by word (see `crate::valgrind`):
    // the anonymous mapping after the tool's image may then be the program's heap.
    tool(mapping)
        || (!crate::valgrind::memcheck_answers()
            && previous.is_some_and(|p| {
                mapping.name.is_empty() && p.range.end == mapping.range.start && tool(p)
            }))
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
    // on this thread's stack, not in the heap: a copy of a stack's top holds return
    // addresses into the builds (see `crate::hidden`)
    let mut top = [0usize; DESCRIPTOR_SEARCH / 8];
    let words = &mut top[..(range.end - from) / 8];
    let read = read_own_memory(from, words) / 8;
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

/// The largest piece of a region one thread scans at a time (its words are numbered by `u32`).
pub(crate) const PIECE: usize = 4 << 20;

/// Every aligned word of `regions` whose value lies in `target`, in address order, as runs of
/// words with the index of their region; read on every core (`threads`), each thread taking
/// the next piece of memory as it finishes one.
pub(crate) fn scan_regions(
    regions: &[Region],
    target: &Range<usize>,
    threads: usize,
) -> Vec<(usize, Vec<Found>)> {
    let each = |_: &mut (), words: &mut Vec<Found>, _: &Piece, word| words.push(word);
    let (_, lists) = scan_pieces(regions, target, threads, || (), each);
    lists
        .into_iter()
        .map(|(piece, words)| (piece.region, words))
        .collect()
}

/// A piece of a region that one scan thread reads at a time (at most [`PIECE`] bytes).
#[derive(Debug, Clone)]
pub(crate) struct Piece {
    /// The index of its region.
    pub region: usize,
    /// Where it lies (kept complemented: see [`crate::hidden`]).
    pub span: HiddenRange,
}

/// Reads every aligned word of `regions` whose value lies in `target` on `threads` threads,
/// each taking the next piece of memory as it finishes one, and hands each to `each` on the
/// thread that read it: with that thread's state (made by `new_state`), the list of the piece
/// being read and the piece. Returns every thread's state and the pieces' lists that are not
/// empty, in address order.
pub(crate) fn scan_pieces<S: Send, T: Send>(
    regions: &[Region],
    target: &Range<usize>,
    threads: usize,
    new_state: impl Fn() -> S + Sync,
    each: impl Fn(&mut S, &mut Vec<T>, &Piece, Found) + Sync,
) -> (Vec<S>, Vec<(Piece, Vec<T>)>) {
    let pieces: Vec<Piece> = regions
        .iter()
        .enumerate()
        .flat_map(|(region, r)| {
            let range = r.span.get();
            range.clone().step_by(PIECE).map(move |start| Piece {
                region,
                span: HiddenRange::new(&(start..(start + PIECE).min(range.end))),
            })
        })
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut scanner = Scanner::new();
        let mut state = new_state();
        let mut lists: Vec<(usize, Vec<T>)> = Vec::new(); // (piece, its list)
        loop {
            let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(piece) = pieces.get(index) else {
                break;
            };
            let mut list = Vec::new();
            scanner.scan(&piece.span.get(), target, |word| {
                each(&mut state, &mut list, piece, word)
            });
            if !list.is_empty() {
                lists.push((index, list));
            }
        }
        (state, lists)
    };
    let threads = threads.clamp(1, pieces.len().max(1));
    let (states, mut lists) = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        let (state, lists) = work();
        let (mut states, mut all) = (vec![state], lists);
        for helper in helpers {
            let (state, lists) = helper.join().expect("a scan thread does not panic");
            states.push(state);
            all.extend(lists);
        }
        (states, all)
    });
    lists.sort_unstable_by_key(|&(piece, _)| piece);
    let lists = lists
        .into_iter()
        .map(|(piece, list)| (pieces[piece].clone(), list))
        .collect();
    (states, lists)
}

/// How many threads a scan uses: every core the process may run on (one under valgrind,
/// which runs one thread at a time anyway).
pub(crate) fn scan_threads() -> usize {
    if crate::valgrind::running() {
        return 1;
    }
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Reads memory for a scan, in place where it can; otherwise through one buffer, which it
/// clears when dropped: its copies hold references into a build, and freed memory holding them
/// would look like live references to a later scan.
pub(crate) struct Scanner {
    buffer: Vec<usize>,
    /// Whether the buffer was used (and must be cleared).
    copied: bool,
}

impl Scanner {
    /// A scanner; its buffer is made here, not while the world is stopped.
    pub fn new() -> Scanner {
        Scanner {
            buffer: vec![0; CHUNK / 8],
            copied: false,
        }
    }

    /// Calls `found` for every aligned word in `range` whose value lies in `target`.
    pub fn scan(
        &mut self,
        range: &Range<usize>,
        target: &Range<usize>,
        mut found: impl FnMut(Found),
    ) {
        // A driver's mapping of device memory (video memory, registers: VM_IO or VM_PFNMAP)
        // must not be read here, uncached and perhaps with side effects; the kernel refuses to
        // copy from it, so a range whose first word it does not copy goes the copy's way,
        // which skips whatever the kernel refuses (as every scan did before reading in place).
        let mut first = [0usize; 1];
        let in_place = read_own_memory(range.start, &mut first) == 8
            && super::in_place::scan(range, target, |location, offset| {
                found(Found { location, offset })
            });
        if !in_place {
            self.copy_and_scan(range, target, found);
        }
    }

    /// [`Scanner::scan`] through the buffer.
    fn copy_and_scan(
        &mut self,
        range: &Range<usize>,
        target: &Range<usize>,
        mut found: impl FnMut(Found),
    ) {
        self.copied = true;
        let mut at = range.start;
        while at < range.end {
            let length = CHUNK.min(range.end - at);
            let read = read_own_memory(at, &mut self.buffer[..length / 8]);
            if read == 0 {
                at += 4096; // unmapped meanwhile, or not readable after all: skip a page
                continue;
            }
            for (i, &word) in self.buffer[..read / 8].iter().enumerate() {
                let location = at + 8 * i;
                if word.wrapping_sub(target.start) < target.end - target.start
                    && crate::valgrind::program_holds(location)
                {
                    found(Found {
                        location,
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
        if !self.copied {
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_planted_word_is_found_once_in_address_order_whatever_the_thread_count() {
        // 10 MiB: several pieces; the target range is one no real pointer falls into.
        let mut memory = vec![0usize; 10 << 17];
        let target = 0x0000_1234_0000_0000..0x0000_1234_0001_0000;
        let planted: Vec<usize> = (0..memory.len()).step_by(40_961).collect();
        for (n, &i) in planted.iter().enumerate() {
            memory[i] = target.start + 8 * n;
        }
        let start = memory.as_ptr() as usize;
        let regions = [Region {
            span: HiddenRange::new(&(start..start + 8 * memory.len())),
            name: String::new(),
            stack_of: None,
        }];
        for threads in [1, 2, 3] {
            let found: Vec<(usize, Found)> = scan_regions(&regions, &target, threads)
                .into_iter()
                .flat_map(|(region, words)| words.into_iter().map(move |w| (region, w)))
                .collect();
            let locations: Vec<usize> = found.iter().map(|(_, w)| w.location).collect();
            let expected: Vec<usize> = planted.iter().map(|&i| start + 8 * i).collect();
            assert_eq!(locations, expected, "{threads} thread(s)");
            assert!(found
                .iter()
                .enumerate()
                .all(|(n, (_, w))| w.offset == 8 * n as u64));
        }
    }
}
