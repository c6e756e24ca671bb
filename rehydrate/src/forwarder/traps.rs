//! Traps: where the slot of a released forwarder points, so that a call through a stale
//! callback aborts the process with a message naming what the forwarder was bound to, instead
//! of running anything.
//!
//! Each released forwarder gets a trap of its own, because a jump through a slot leaves no trace
//! of which thunk it came from. On x86-64 a trap is 16 bytes in a trap page:
//! `mov edi, <id>; jmp qword ptr [rip + disp32]`, the jump going through the handler's address
//! stored in the page's first 8 bytes. Trap pages are written while read/write, then made
//! read+execute for good, and never unmapped. Elsewhere (and if a page cannot be mapped) every
//! released forwarder shares one handler that cannot name it.

use std::sync::Mutex;

/// Bytes per trap.
const TRAP_SIZE: usize = 16;
/// The first trap's offset in its page (the handler's address is stored before it).
const FIRST_TRAP: usize = 16;

/// The released forwarders' descriptions by trap id, and the page new traps are taken from.
struct Traps {
    descriptions: Vec<String>,
    /// Base of the current trap page and the id of its first trap.
    page: Option<(usize, usize)>,
}

static TRAPS: Mutex<Traps> = Mutex::new(Traps {
    descriptions: Vec::new(),
    page: None,
});

/// Where a slot that was never handed out points.
pub(super) fn unused() -> usize {
    unused_forwarder_called as *const () as usize
}

extern "C" fn unused_forwarder_called() -> ! {
    eprintln!("rehydrate: a forwarder thunk that was never handed out was called; aborting");
    std::process::abort();
}

/// A trap for a forwarder released now, described by `description`; returns its address.
pub(super) fn released(description: String) -> usize {
    let mut traps = TRAPS.lock().unwrap_or_else(|p| p.into_inner());
    let id = traps.descriptions.len();
    traps.descriptions.push(description);
    trap_address(&mut traps, id).unwrap_or(released_forwarder_called_unnamed as *const () as usize)
}

extern "C" fn released_forwarder_called_unnamed() -> ! {
    eprintln!("rehydrate: a released forwarder was called; aborting");
    std::process::abort();
}

/// The handler every trap jumps to, with the trap's id in the first argument register.
extern "C" fn released_forwarder_called(id: u32) -> ! {
    // `try_lock`: the thread that called may be the one holding the lock.
    let description = TRAPS
        .try_lock()
        .ok()
        .and_then(|traps| traps.descriptions.get(id as usize).cloned())
        .unwrap_or_else(|| format!("trap {id}"));
    eprintln!("rehydrate: a released forwarder was called: {description}; aborting");
    std::process::abort();
}

#[cfg(target_arch = "x86_64")]
fn trap_address(traps: &mut Traps, id: usize) -> Option<usize> {
    let page = super::pool()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .page_size;
    let per_page = (page - FIRST_TRAP) / TRAP_SIZE;
    let (base, first) = match traps.page {
        Some((base, first)) if id < first + per_page => (base, first),
        _ => {
            let base = map_trap_page(page, id)?;
            traps.page = Some((base, id));
            (base, id)
        }
    };
    Some(base + FIRST_TRAP + (id - first) * TRAP_SIZE)
}

#[cfg(not(target_arch = "x86_64"))]
fn trap_address(_traps: &mut Traps, _id: usize) -> Option<usize> {
    None
}

/// The x86-64 trap at `offset` in its page for trap `id`: `mov edi, id` (5 bytes), then
/// `jmp qword ptr [rip + disp32]` (6 bytes) through the page's first word, `int3` padding.
#[cfg(target_arch = "x86_64")]
fn x86_64_trap(offset: usize, id: u32) -> [u8; TRAP_SIZE] {
    let after_jump = i32::try_from(offset + 11).expect("a trap page is small");
    let mut bytes = [0xCC; TRAP_SIZE];
    bytes[0] = 0xBF;
    bytes[1..5].copy_from_slice(&id.to_le_bytes());
    bytes[5..7].copy_from_slice(&[0xFF, 0x25]);
    bytes[7..11].copy_from_slice(&(-after_jump).to_le_bytes());
    bytes
}

/// Maps a trap page whose traps have the ids from `first` on; `None` if it cannot.
#[cfg(target_arch = "x86_64")]
fn map_trap_page(page: usize, first: usize) -> Option<usize> {
    let Ok(base) = crate::maps::map_anonymous(0, page, libc::PROT_READ | libc::PROT_WRITE)
        .map(|b| b.cast::<libc::c_void>())
    else {
        tracing::warn!("cannot map a trap page for released forwarders; they abort unnamed");
        return None;
    };
    let handler = released_forwarder_called as *const () as usize;
    // SAFETY: the first word of the fresh, writable, page-aligned mapping.
    unsafe { (base as *mut usize).write(handler) };
    for (k, offset) in (FIRST_TRAP..page - TRAP_SIZE + 1)
        .step_by(TRAP_SIZE)
        .enumerate()
    {
        let id = u32::try_from(first + k).unwrap_or(u32::MAX);
        let trap = x86_64_trap(offset, id);
        // SAFETY: inside the fresh, writable mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(trap.as_ptr(), (base as *mut u8).add(offset), TRAP_SIZE)
        };
    }
    // SAFETY: our own mapping; from now on it is read+execute for good.
    if unsafe { libc::mprotect(base, page, libc::PROT_READ | libc::PROT_EXEC) } != 0 {
        // SAFETY: our own mapping, never handed out.
        unsafe { libc::munmap(base, page) };
        return None;
    }
    Some(base as usize)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn a_trap_loads_its_id_and_jumps_through_the_first_word_of_its_page() {
        // mov edi, 0x01020304; jmp [rip - 27] (the jump ends at 16 + 11 = 27).
        assert_eq!(
            x86_64_trap(16, 0x0102_0304),
            [
                0xBF, 0x04, 0x03, 0x02, 0x01, 0xFF, 0x25, 0xE5, 0xFF, 0xFF, 0xFF, 0xCC, 0xCC, 0xCC,
                0xCC, 0xCC
            ]
        );
    }
}
