//! Running under valgrind: whether the process is, and, under memcheck, whether a word is a
//! value the program holds (not valgrind's own memory, not a freed block, not bytes it never
//! wrote).
//!
//! A reload reads every writable mapping; under valgrind some of them are valgrind's own (its
//! translations and tables, which hold the program's addresses, code addresses of the old build
//! among them). Rewriting those corrupts valgrind, and counting them would make the audit see
//! references the program does not hold; `/proc/self/maps` cannot tell them from the
//! program's, memcheck's client requests can.

use std::sync::OnceLock;

/// Whether the process runs under valgrind (which preloads its `vgpreload` libraries).
pub(crate) fn running() -> bool {
    static RUNNING: OnceLock<bool> = OnceLock::new();
    *RUNNING.get_or_init(|| {
        std::env::var_os("LD_PRELOAD").is_some_and(|p| p.to_string_lossy().contains("vgpreload"))
    })
}

/// memcheck's `VG_USERREQ__GET_VBITS` (`VG_USERREQ_TOOL_BASE('M','C') + 8`, memcheck.h).
const MEMCHECK_GET_VBITS: usize = (b'M' as usize) << 24 | (b'C' as usize) << 16 | 8;
/// What it answers when it filled in the validity bits.
const GOT_VBITS: usize = 1;
/// What it answers when some byte is not addressable by the program.
const NOT_ADDRESSABLE: usize = 3;

/// Whether the word at `address` is a value the program holds: false only when memcheck says
/// the program may not address it (valgrind's own memory, freed blocks, dead stack frames) or
/// never wrote it (the stale bytes of a fresh allocation, which were a freed block's a moment
/// before: a scan must judge them the same both times); true when not under valgrind, or
/// under another tool, which answers nothing.
pub(crate) fn program_holds(address: usize) -> bool {
    if !running() {
        return true;
    }
    let mut vbits = [0u8; 8];
    match get_vbits(address, &mut vbits) {
        NOT_ADDRESSABLE => false,
        GOT_VBITS => vbits == [0; 8], // a set bit is an undefined bit
        _ => true,
    }
}

/// Whether memcheck answers client requests (valgrind runs with memcheck, not another tool):
/// then [`program_holds`] tells valgrind's own memory from the program's.
pub(crate) fn memcheck_answers() -> bool {
    static ANSWERS: OnceLock<bool> = OnceLock::new();
    *ANSWERS.get_or_init(|| {
        let word = 0u64;
        running() && get_vbits(std::ptr::addr_of!(word) as usize, &mut [0; 8]) != 0
    })
}

/// memcheck's validity bits of the word at `address`, into `vbits`; what it answers (0 when
/// nothing does).
fn get_vbits(address: usize, vbits: &mut [u8; 8]) -> usize {
    let request = [
        MEMCHECK_GET_VBITS,
        address,
        vbits.as_mut_ptr() as usize,
        8,
        0,
        0,
    ];
    client_request(&request, 0)
}

/// A valgrind client request (valgrind.h, amd64: `rdi` rotated by 128 bits in all, a no-op on
/// a real CPU, then `xchg rbx, rbx`; `rax` points at the request and its arguments; the answer
/// comes back in `rdx`, which holds `default` when nothing answers).
fn client_request(request: &[usize; 6], default: usize) -> usize {
    let answer: usize;
    // SAFETY: the sequence changes no register on a real CPU (rdi turns a full circle); under valgrind, memcheck reads the request array and writes only the 8 vbits it points at, which live for the call.
    unsafe {
        std::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            in("rax") request.as_ptr(),
            inout("rdx") default => answer,
            inout("rdi") 0usize => _,
            options(nostack),
        );
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_valgrind_every_word_counts_as_the_programs() {
        let word = 0u64;
        assert!(running() || program_holds(std::ptr::addr_of!(word) as usize));
        // The request itself is a no-op on a real CPU: the default comes back.
        if !running() {
            assert_eq!(client_request(&[MEMCHECK_GET_VBITS, 0, 0, 8, 0, 0], 77), 77);
        }
    }
}
