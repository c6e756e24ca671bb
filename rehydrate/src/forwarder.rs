//! Forwarders: stable callback addresses for code that is never reloaded.
//!
//! A forwarder is a tiny thunk in an executable page that jumps through its own slot in a
//! paired read/write data page. The address of the thunk never changes; re-pointing it is one
//! atomic store into the slot, safe while other threads call through it.
//!
//! - Pages come in pairs: a code page, then the data page right after it, so thunk `i` and slot
//!   `i` are always one page apart and every thunk has the same encoding. New pairs are mapped on
//!   demand. Pages are never unmapped and a released thunk is never handed out again: foreign
//!   code may keep an address forever, and a stale callback must not silently call whatever a
//!   later forwarder was bound to. A released forwarder's slot points at a trap of its own that
//!   aborts the process with a message naming what the forwarder was bound to (see `traps`).
//! - A forwarder is placed near its first target: in a page pair mapped inside the same 1 GiB
//!   of address space when there is room. Measured on this project's machine (AMD EPYC), the
//!   thunk's indirect jump costs about 0.3 ns when thunk and target are that close and about
//!   1.9 ns when they are terabytes apart (a PIE executable and the shared-library area): the
//!   branch predictor handles far targets on a slower path. After a reload the new build is
//!   mapped in the same area, so the forwarder stays near.
//! - No page is ever writable and executable at once: a code page is written while it is
//!   read/write, then made read+execute for good. Only data pages change afterwards.
//! - x86-64: `jmp qword ptr [rip + disp32]` (6 bytes, padded with `int3` to 8). It touches no
//!   register and no stack, so integer and vector argument registers, `AL` for variadic callees,
//!   stack arguments and return values all pass through.
//! - aarch64 (encoded and unit-tested, not run here): `ldr x16, <slot>; br x16`. x16 (IP0) is the
//!   register the AAPCS64 reserves for exactly this kind of veneer.

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use rustc_hash::FxHashMap;

/// Bytes of code per thunk (and bytes of data per slot).
pub const THUNK_SIZE: usize = 8;

/// The x86-64 thunk for a slot `page_size` bytes after it: `jmp [rip + page_size - 6]`, `int3`
/// padding.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // tested on every target
pub(crate) fn x86_64_thunk(page_size: usize) -> [u8; THUNK_SIZE] {
    let displacement = i32::try_from(page_size - 6).expect("a page is smaller than 2 GiB");
    let d = displacement.to_le_bytes();
    [0xFF, 0x25, d[0], d[1], d[2], d[3], 0xCC, 0xCC]
}

/// The aarch64 thunk for a slot `page_size` bytes after it: `ldr x16, #page_size` (literal,
/// PC-relative), `br x16`.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))] // tested on every target
pub(crate) fn aarch64_thunk(page_size: usize) -> [u8; THUNK_SIZE] {
    assert!(
        page_size % 4 == 0 && page_size < (1 << 20),
        "LDR (literal) reaches +-1 MiB in words"
    );
    let imm19 = (page_size / 4) as u32;
    let ldr_x16 = 0x5800_0000 | (imm19 << 5) | 16;
    let br_x16: u32 = 0xD61F_0200;
    let mut bytes = [0u8; THUNK_SIZE];
    bytes[..4].copy_from_slice(&ldr_x16.to_le_bytes());
    bytes[4..].copy_from_slice(&br_x16.to_le_bytes());
    bytes
}

fn native_thunk(page_size: usize) -> [u8; THUNK_SIZE] {
    #[cfg(target_arch = "x86_64")]
    return x86_64_thunk(page_size);
    #[cfg(target_arch = "aarch64")]
    return aarch64_thunk(page_size);
}

mod traps;

/// One code page and its data page.
struct PagePair {
    code: usize,
    slots: &'static [AtomicUsize],
}

/// Forwarders are kept near their targets at this granularity: 1 GiB.
const NEIGHBOURHOOD_BITS: u32 = 30;

/// The 1 GiB-aligned block of address space holding `address`.
fn neighbourhood(address: usize) -> usize {
    address >> NEIGHBOURHOOD_BITS
}

struct Pool {
    page_size: usize,
    pairs: Vec<PagePair>,
    /// Free thunks (pair, index) by the neighbourhood their pair serves.
    free: FxHashMap<usize, Vec<(u32, u32)>>,
}

fn pool() -> &'static Mutex<Pool> {
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        Mutex::new(Pool {
            page_size,
            pairs: Vec::new(),
            free: FxHashMap::default(),
        })
    })
}

/// Maps two read/write anonymous pages: at `hint` exactly (`MAP_FIXED_NOREPLACE`, which never
/// replaces an existing mapping; a kernel that ignores the flag treats it as a hint, so the
/// result is checked), or anywhere when `hint` is `None`.
fn map_pair(hint: Option<usize>, page: usize) -> std::io::Result<*mut c_void> {
    let length = 2 * page;
    let (address, placement) = match hint {
        Some(hint) => (hint as *mut c_void, libc::MAP_FIXED_NOREPLACE),
        None => (std::ptr::null_mut(), 0),
    };
    // SAFETY: an anonymous private mapping; NOREPLACE never touches an existing mapping.
    let base = unsafe {
        libc::mmap(
            address,
            length,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | placement,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    if hint.is_some_and(|hint| base as usize != hint) {
        // SAFETY: the mapping just made, unused.
        unsafe { libc::munmap(base, length) };
        return Err(std::io::Error::from(std::io::ErrorKind::AddrInUse));
    }
    Ok(base)
}

/// Two read/write pages inside the neighbourhood of `near` when there is room (tried at steps
/// of 64 MiB below and above it), anywhere otherwise.
fn map_pair_near(near: usize, page: usize) -> std::io::Result<*mut c_void> {
    const STEP: usize = 64 << 20;
    let wanted = neighbourhood(near);
    let start = near & !(page - 1);
    let candidates =
        (1..=16).flat_map(|k| [start.checked_sub(k * STEP), start.checked_add(k * STEP)]);
    let inside = |&hint: &usize| {
        hint != 0 && neighbourhood(hint) == wanted && neighbourhood(hint + 2 * page - 1) == wanted
    };
    candidates
        .flatten()
        .filter(inside)
        .find_map(|hint| map_pair(Some(hint), page).ok())
        .map_or_else(|| map_pair(None, page), Ok)
}

impl Pool {
    /// A free thunk (pair, index) for a target at `near`, from a new pair if none is free.
    fn take_free(&mut self, near: usize) -> std::io::Result<(u32, u32)> {
        let serves = neighbourhood(near);
        if let Some(thunk) = self.free.get_mut(&serves).and_then(Vec::pop) {
            return Ok(thunk);
        }
        self.grow(near)?;
        let free = self.free.get_mut(&serves).and_then(Vec::pop);
        Ok(free.expect("grow adds free thunks for `near`"))
    }

    /// Maps a new pair for targets near `near`: thunks written while the code page is
    /// read/write, then read+execute.
    fn grow(&mut self, near: usize) -> std::io::Result<()> {
        let page = self.page_size;
        let base = map_pair_near(near, page)?;
        let code = base as usize;
        let thunk = native_thunk(page);
        let count = page / THUNK_SIZE;
        for index in 0..count {
            // SAFETY: inside the freshly mapped, writable code page.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    thunk.as_ptr(),
                    (code + index * THUNK_SIZE) as *mut u8,
                    THUNK_SIZE,
                )
            };
        }
        // The data page; an AtomicUsize has a usize's layout.
        let first = (code + page) as *const AtomicUsize;
        // SAFETY: the second page of our mapping: aligned, `count` slots long, never unmapped.
        let slots: &'static [AtomicUsize] = unsafe { std::slice::from_raw_parts(first, count) };
        for slot in slots {
            slot.store(traps::unused(), Ordering::Relaxed);
        }
        #[cfg(target_arch = "aarch64")]
        // SAFETY: flushes the instruction cache for the page just written.
        unsafe {
            extern "C" {
                fn __clear_cache(start: *mut libc::c_char, end: *mut libc::c_char);
            }
            __clear_cache(code as *mut _, (code + page) as *mut _);
        }
        // SAFETY: the first page of our own mapping; from now on it is read+execute for good.
        if unsafe { libc::mprotect(base, page, libc::PROT_READ | libc::PROT_EXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let pair = self.pairs.len() as u32;
        let serves = neighbourhood(near);
        let free = self.free.entry(serves).or_default();
        free.extend((0..count as u32).rev().map(|i| (pair, i)));
        self.pairs.push(PagePair { code, slots });
        Ok(())
    }
}

/// A stable callable address that forwards to a target which can change at any time.
///
/// Dropping it releases it for good: its address is never handed out again, and calling it
/// afterwards aborts the process with a message naming the forwarder's `label`.
#[derive(Debug)]
pub struct Forwarder {
    code: usize,
    slot: &'static AtomicUsize,
    label: String,
}

impl Forwarder {
    /// A forwarder to `target`, a function with any signature, placed near it when possible.
    /// `label` says what it is bound to (`on_event of libgame.so`), for the message a call
    /// after its release aborts with.
    pub fn new(target: *const c_void, label: impl Into<String>) -> std::io::Result<Forwarder> {
        let mut pool = pool().lock().unwrap_or_else(|p| p.into_inner());
        let (pair, index) = pool.take_free(target as usize)?;
        let pages = &pool.pairs[pair as usize];
        let slot = &pages.slots[index as usize];
        slot.store(target as usize, Ordering::Release);
        Ok(Forwarder {
            code: pages.code + index as usize * THUNK_SIZE,
            slot,
            label: label.into(),
        })
    }

    /// The stable address to hand out; transmute it to the target's function-pointer type.
    pub fn address(&self) -> *const c_void {
        self.code as *const c_void
    }

    /// The current target.
    pub fn target(&self) -> *const c_void {
        self.slot.load(Ordering::Acquire) as *const c_void
    }

    /// Re-points the forwarder: one atomic store; a concurrent call lands in the old or the new
    /// target, never elsewhere.
    pub fn retarget(&self, target: *const c_void) {
        self.slot.store(target as usize, Ordering::Release);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let description = format!(
            "forwarder {:#x} (bound to {}, last target {:#x})",
            self.code,
            self.label,
            self.target() as usize
        );
        // The thunk is not returned to the pool: its address stays this forwarder's.
        self.slot
            .store(traps::released(description), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_64_encoding_is_jmp_rip_relative_to_the_next_page() {
        // jmp qword ptr [rip + 0xffa]: the slot is 4096 bytes after the thunk start, and rip
        // points 6 bytes in.
        assert_eq!(
            x86_64_thunk(4096),
            [0xFF, 0x25, 0xFA, 0x0F, 0x00, 0x00, 0xCC, 0xCC]
        );
    }

    #[test]
    fn aarch64_encoding_is_ldr_literal_x16_then_br_x16() {
        // ldr x16, #4096 = 0x58008010 (imm19 = 1024), br x16 = 0xd61f0200.
        assert_eq!(
            aarch64_thunk(4096),
            [0x10, 0x80, 0x00, 0x58, 0x00, 0x02, 0x1F, 0xD6]
        );
        // 16 KiB pages: imm19 = 4096.
        assert_eq!(
            u32::from_le_bytes(aarch64_thunk(16384)[..4].try_into().unwrap()),
            0x5802_0010
        );
    }

    type BinaryFn = extern "C" fn(i64, i64) -> i64;

    extern "C" fn add(a: i64, b: i64) -> i64 {
        a + b
    }
    extern "C" fn sub(a: i64, b: i64) -> i64 {
        a - b
    }

    #[test]
    fn calls_go_to_the_current_target_and_released_addresses_are_never_reused() {
        let forwarder = Forwarder::new(add as *const c_void, "add").unwrap();
        // SAFETY: the forwarder forwards to functions of exactly this type.
        let call: BinaryFn = unsafe { std::mem::transmute(forwarder.address()) };
        assert_eq!(call(40, 2), 42);
        forwarder.retarget(sub as *const c_void);
        assert_eq!(call(40, 2), 38);
        let released: Vec<usize> = std::iter::once(forwarder)
            .chain((0..600).map(|_| Forwarder::new(add as *const c_void, "add").unwrap()))
            .map(|f| f.address() as usize)
            .collect();
        // More than a page of thunks, so the new ones come from several pairs.
        let fresh: Vec<Forwarder> = (0..1200)
            .map(|_| Forwarder::new(add as *const c_void, "add").unwrap())
            .collect();
        for forwarder in &fresh {
            assert!(
                !released.contains(&(forwarder.address() as usize)),
                "released address {:?} handed out again",
                forwarder.address()
            );
        }
    }

    /// Set in the child process of the test below.
    const CALL_RELEASED: &str = "REHYDRATE_TEST_CALL_RELEASED_FORWARDER";

    #[test]
    fn child_calls_a_released_forwarder() {
        if std::env::var_os(CALL_RELEASED).is_none() {
            return; // only does something as the child of the test below
        }
        let forwarder = Forwarder::new(add as *const c_void, "add_in_the_child").unwrap();
        // SAFETY: as above.
        let call: BinaryFn = unsafe { std::mem::transmute(forwarder.address()) };
        drop(forwarder);
        call(1, 2); // aborts
        unreachable!("a released forwarder returned");
    }

    #[test]
    fn a_call_through_a_released_forwarder_aborts_naming_its_binding() {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "forwarder::tests::child_calls_a_released_forwarder",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env(CALL_RELEASED, "1")
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGABRT),
            "the child aborts: {output:?}"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("released forwarder") && stderr.contains("add_in_the_child"),
            "the message names the binding: {stderr}"
        );
    }

    #[test]
    fn forwarders_are_placed_near_their_targets() {
        // A target in this executable and one in the C library: far apart from each other.
        for target in [add as *const c_void, libc::strlen as *const c_void] {
            let forwarder = Forwarder::new(target, "target").unwrap();
            assert_eq!(
                neighbourhood(forwarder.address() as usize),
                neighbourhood(target as usize),
                "forwarder {:?} for target {target:?}",
                forwarder.address()
            );
        }
    }

    #[test]
    fn many_forwarders_take_new_pages_and_no_page_is_writable_and_executable() {
        let forwarders: Vec<Forwarder> = (0..2000)
            .map(|_| Forwarder::new(add as *const c_void, "add").unwrap())
            .collect();
        for (i, forwarder) in forwarders.iter().enumerate() {
            // SAFETY: as above.
            let call: BinaryFn = unsafe { std::mem::transmute(forwarder.address()) };
            assert_eq!(call(i as i64, 1), i as i64 + 1);
        }
        assert!(crate::maps::writable_and_executable_mappings().is_empty());
    }
}
