//! The constructor analysis leaves no address of the build it reads in memory it frees. A
//! reload's scan reads every word of the process; memory the runtime freed is handed out
//! again, and a new object's uninitialised member can still hold what was there. A raw vtable
//! address left in freed scratch would then be taken for a reference into the build and
//! re-pointed at the next reload, changing the object (the runtime keeps such addresses
//! complemented; an enum's unused bytes, and iced-x86's own buffers, had to be seen to).
//!
//! This test binary's global allocator zeroes every block allocated while a build's range is
//! watched, reads every block freed meanwhile word by word, and counts the words in that
//! range. It watches the constructor analysis of every class of the analysis fixture (g++ and
//! clang++, -O0, -O2 and -O2 -march=x86-64-v3: calls followed, branches joined, vector
//! stores, instructions not modelled), with the readings the analysis returns dropped, as a load's are at the next
//! reload.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use integration_tests::{compilers, ModuleBuild, ANALYSIS};
use rehydrate::Runtime;

/// Reads every freed block for words in the watched range before freeing it.
struct Watching;

/// The watched range (`END` 0: nothing watched).
static START: AtomicUsize = AtomicUsize::new(0);
static END: AtomicUsize = AtomicUsize::new(0);
/// Words found in the range, and the first one with the size of the block it was in.
static FOUND: AtomicUsize = AtomicUsize::new(0);
static FIRST_WORD: AtomicUsize = AtomicUsize::new(0);
static FIRST_BLOCK_SIZE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator with its own arguments; `dealloc`
// first reads the block being freed, which is still allocated and `layout.size()` bytes long.
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let pointer = unsafe { System.alloc(layout) };
        if END.load(Relaxed) != 0 && !pointer.is_null() {
            // what an earlier owner left in the block is not this block's owner's: a word
            // found when it is freed was written while it was allocated
            // SAFETY: the block was just allocated with `layout.size()` bytes.
            unsafe { pointer.write_bytes(0, layout.size()) };
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        let (start, end) = (START.load(Relaxed), END.load(Relaxed));
        if end != 0 {
            let words = pointer.align_offset(8);
            let first = words.min(layout.size());
            let count = (layout.size() - first) / 8;
            for k in 0..count {
                // SAFETY: within the block being freed, 8-aligned.
                let word = unsafe { (pointer.add(first) as *const usize).add(k).read() };
                if (start..end).contains(&word) {
                    found(word, layout.size());
                }
            }
        }
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(pointer, layout) }
    }
}

/// Counts a word found in the watched range in a freed block of `block_size` bytes. To see
/// who freed it: `gdb -ex 'break freed_memory::found' --args <this test binary>`, then `bt`.
#[inline(never)]
fn found(word: usize, block_size: usize) {
    if FOUND.fetch_add(1, Relaxed) == 0 {
        FIRST_WORD.store(word, Relaxed);
        FIRST_BLOCK_SIZE.store(block_size, Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Watching = Watching;

#[test]
fn the_constructor_analysis_frees_no_address_of_the_build() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("freed-memory");
    std::fs::create_dir_all(&dir).unwrap();
    let mut watched = 0;
    let variants: [(&str, &[&str]); 3] =
        [("-O0", &[]), ("-O2", &[]), ("-O2", &["-march=x86-64-v3"])];
    for compiler in compilers() {
        for (optimisation, flags) in variants {
            let library = ModuleBuild {
                flags,
                ..ModuleBuild::of(&ANALYSIS, compiler.clone(), optimisation, 1)
            }
            .build(&dir);
            let runtime = Runtime::load(&library).unwrap();
            let ranges = runtime.image_ranges();
            let start = ranges.iter().map(|r| r.start).min().unwrap();
            let end = ranges.iter().map(|r| r.end).max().unwrap();
            FOUND.store(0, Relaxed);
            START.store(start, Relaxed);
            END.store(end, Relaxed);
            let analysed = rehydrate::measure::analyse_every_class(&runtime);
            END.store(0, Relaxed);
            let found = FOUND.load(Relaxed);
            let label = format!("{} {optimisation} {flags:?}", compiler.name);
            assert!(analysed > 0, "{label}: nothing analysed");
            assert_eq!(
                found,
                0,
                "{label}: the analysis of {analysed} classes freed {found} words \
                 pointing into the build (the first: {:#x}, in a block of {} bytes; the build \
                 is mapped at {start:#x}..{end:#x})",
                FIRST_WORD.load(Relaxed),
                FIRST_BLOCK_SIZE.load(Relaxed),
            );
            watched += analysed;
        }
    }
    assert!(watched > 0);
}
