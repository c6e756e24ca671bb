//! The analyser on hand-assembled code (the bytes `as` made of the source below), and on
//! random and mutated bytes: it stays within its budget and never panics.

use super::explore::{Explorer, MAX_STEPS};
use super::process::Process;
use super::state::{State, Writer};
use super::value::Value;
use super::GiveUp;

// .intel_syntax noprefix
// .text
// const_store:
//   movabs rax, 0x1122334455667788
//   mov [rdi], rax
//   ret
// vector_pair:
//   movabs rax, 0x1111
//   movabs rdx, 0x2222
//   movq xmm0, rax
//   movq xmm1, rdx
//   punpcklqdq xmm0, xmm1
//   movups [rdi+8], xmm0
//   ret
// avx_pair:
//   movabs rax, 0x3333
//   movabs rdx, 0x4444
//   vmovq xmm0, rax
//   vpinsrq xmm0, xmm0, rdx, 1
//   vinserti128 ymm0, ymm0, xmm0, 1
//   vmovdqu [rdi], ymm0
//   vzeroupper
//   ret
// counted_loop:
//   xor eax, eax
//   lea rdx, [rdi+8]
// 1:
//   mov qword ptr [rdx], 7
//   add rdx, 16
//   add eax, 1
//   cmp eax, 3
//   jne 1b
//   ret
// disagree:
//   test esi, esi
//   je 2f
//   mov qword ptr [rdi], 1
//   ret
// 2:
//   mov qword ptr [rdi], 2
//   ret
// agree:
//   test esi, esi
//   je 3f
//   mov qword ptr [rdi], 5
//   mov dword ptr [rdi+8], esi
//   ret
// 3:
//   mov qword ptr [rdi], 5
//   ret
// indirect:
//   jmp rsi
// forever:
//   jmp forever
// spill_and_call:
//   push rbp
//   mov rbp, rsp
//   sub rsp, 16
//   mov [rbp-8], rdi
//   call helper
//   mov rax, [rbp-8]
//   mov qword ptr [rax+16], 9
//   leave
//   ret
// helper:
//   xor edi, edi
//   mov qword ptr [rdi], 0
//   ret
// unknown_loop:
//   mov rax, rdi
// 4:
//   mov qword ptr [rax], 3
//   add rax, 8
//   cmp rax, rsi
//   jne 4b
//   ret
const CODE: [u8; 232] = [
    0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x48, 0x89, 0x07, 0xc3, 0x48, 0xb8,
    0x11, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x48, 0xba, 0x22, 0x22, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x66, 0x48, 0x0f, 0x6e, 0xc0, 0x66, 0x48, 0x0f, 0x6e, 0xca, 0x66, 0x0f, 0x6c, 0xc1,
    0x0f, 0x11, 0x47, 0x08, 0xc3, 0x48, 0xb8, 0x33, 0x33, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x48,
    0xba, 0x44, 0x44, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc4, 0xe1, 0xf9, 0x6e, 0xc0, 0xc4, 0xe3,
    0xf9, 0x22, 0xc2, 0x01, 0xc4, 0xe3, 0x7d, 0x38, 0xc0, 0x01, 0xc5, 0xfe, 0x7f, 0x07, 0xc5, 0xf8,
    0x77, 0xc3, 0x31, 0xc0, 0x48, 0x8d, 0x57, 0x08, 0x48, 0xc7, 0x02, 0x07, 0x00, 0x00, 0x00, 0x48,
    0x83, 0xc2, 0x10, 0x83, 0xc0, 0x01, 0x83, 0xf8, 0x03, 0x75, 0xed, 0xc3, 0x85, 0xf6, 0x74, 0x08,
    0x48, 0xc7, 0x07, 0x01, 0x00, 0x00, 0x00, 0xc3, 0x48, 0xc7, 0x07, 0x02, 0x00, 0x00, 0x00, 0xc3,
    0x85, 0xf6, 0x74, 0x0b, 0x48, 0xc7, 0x07, 0x05, 0x00, 0x00, 0x00, 0x89, 0x77, 0x08, 0xc3, 0x48,
    0xc7, 0x07, 0x05, 0x00, 0x00, 0x00, 0xc3, 0xff, 0xe6, 0xeb, 0xfe, 0x55, 0x48, 0x89, 0xe5, 0x48,
    0x83, 0xec, 0x10, 0x48, 0x89, 0x7d, 0xf8, 0xe8, 0x0e, 0x00, 0x00, 0x00, 0x48, 0x8b, 0x45, 0xf8,
    0x48, 0xc7, 0x40, 0x10, 0x09, 0x00, 0x00, 0x00, 0xc9, 0xc3, 0x31, 0xff, 0x48, 0xc7, 0x07, 0x00,
    0x00, 0x00, 0x00, 0xc3, 0x48, 0x89, 0xf8, 0x48, 0xc7, 0x00, 0x03, 0x00, 0x00, 0x00, 0x48, 0x83,
    0xc0, 0x08, 0x48, 0x39, 0xf0, 0x75, 0xf0, 0xc3,
];

const CONST_STORE: usize = 0x00;
const VECTOR_PAIR: usize = 0x0e;
const AVX_PAIR: usize = 0x35;
const COUNTED_LOOP: usize = 0x62;
const DISAGREE: usize = 0x7c;
const AGREE: usize = 0x90;
const INDIRECT: usize = 0xa7;
const FOREVER: usize = 0xa9;
const SPILL_AND_CALL: usize = 0xab;
const UNKNOWN_LOOP: usize = 0xd4;
const ENTRIES: [usize; 10] = [
    CONST_STORE,
    VECTOR_PAIR,
    AVX_PAIR,
    COUNTED_LOOP,
    DISAGREE,
    AGREE,
    INDIRECT,
    FOREVER,
    SPILL_AND_CALL,
    UNKNOWN_LOOP,
];

/// Code in a page of its own, readable and executable (never run: only read), `int3` after it.
struct Page {
    start: *mut u8,
}

const PAGE: usize = 4096;

impl Page {
    fn with(code: &[u8]) -> Page {
        assert!(code.len() <= PAGE);
        let start =
            crate::maps::map_anonymous(0, PAGE, libc::PROT_READ | libc::PROT_WRITE).unwrap();
        // SAFETY: a fresh private mapping of PAGE writable bytes.
        let page = unsafe { std::slice::from_raw_parts_mut(start, PAGE) };
        page.fill(0xCC);
        page[..code.len()].copy_from_slice(code);
        let code_protection = libc::PROT_READ | libc::PROT_EXEC;
        // SAFETY: the mapping made above, now read-only and executable as code is.
        let protected = unsafe { libc::mprotect(start.cast(), PAGE, code_protection) };
        assert_eq!(protected, 0);
        Page { start }
    }

    /// The state the function at `entry` returns with (`None`: no path returns).
    fn run(&self, entry: usize) -> (Result<Option<State>, GiveUp>, usize) {
        let start = self.start as u64;
        let process = Process::of_code(start..start + PAGE as u64);
        let mut explorer = Explorer::new(&process);
        explorer.start(64);
        let mut state = State::at_constructor_entry();
        let outcome = explorer.run(start + entry as u64, &mut state, 0);
        let returned = outcome.map(|returns| returns.then_some(state));
        (returned, explorer.trace.steps)
    }

    fn returned(&self, entry: usize) -> State {
        match self.run(entry).0 {
            Ok(Some(state)) => state,
            other => panic!("entry {entry:#x}: {other:?}"),
        }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: the mapping `with` made; nothing refers to it any more.
        unsafe { libc::munmap(self.start.cast(), PAGE) };
    }
}

fn word(state: &State, at: i64) -> Value {
    state.object.load(at, 8)
}

#[test]
fn constants_stored_through_this_are_found() {
    let page = Page::with(&CODE);
    let state = page.returned(CONST_STORE);
    assert_eq!(word(&state, 0), Value::constant(0x1122_3344_5566_7788));
    assert_eq!(state.object.cells().count(), 1);
}

#[test]
fn two_words_in_one_vector_store_are_both_found() {
    let page = Page::with(&CODE);
    let sse = page.returned(VECTOR_PAIR);
    assert_eq!(word(&sse, 8), Value::constant(0x1111));
    assert_eq!(word(&sse, 16), Value::constant(0x2222));
    let avx = page.returned(AVX_PAIR);
    for (at, value) in [(0, 0x3333), (8, 0x4444), (16, 0x3333), (24, 0x4444)] {
        assert_eq!(word(&avx, at), Value::constant(value), "offset {at}");
    }
}

#[test]
fn a_loop_with_a_known_count_is_followed_to_its_end() {
    let state = Page::with(&CODE).returned(COUNTED_LOOP);
    for at in [8, 24, 40] {
        assert_eq!(word(&state, at), Value::constant(7), "offset {at}");
    }
    assert_eq!(state.object.cells().count(), 3);
}

#[test]
fn paths_keep_only_what_they_agree_on() {
    let page = Page::with(&CODE);
    let disagree = page.returned(DISAGREE);
    assert_eq!(word(&disagree, 0), Value::UNKNOWN);
    assert!(disagree
        .object
        .cells()
        .all(|(_, c)| c.writer == Writer::Disagreement));
    let agree = page.returned(AGREE);
    assert_eq!(word(&agree, 0), Value::constant(5));
    assert_eq!(agree.object.load(8, 4), Value::UNKNOWN);
}

#[test]
fn what_it_cannot_follow_is_a_reason_not_a_guess() {
    let page = Page::with(&CODE);
    let (indirect, _) = page.run(INDIRECT);
    assert!(indirect.unwrap_err().what.contains("indirect jump"));
    let (forever, steps) = page.run(FOREVER);
    assert!(forever.unwrap_err().what.contains("a loop it cannot bound"));
    assert_eq!(steps, MAX_STEPS + 1);
}

#[test]
fn this_survives_a_spill_to_the_stack_and_a_call() {
    let state = Page::with(&CODE).returned(SPILL_AND_CALL);
    assert_eq!(word(&state, 16), Value::constant(9));
    assert_eq!(state.object.cells().count(), 1);
}

#[test]
fn a_loop_with_an_unknown_bound_ends_by_joining() {
    let state = Page::with(&CODE).returned(UNKNOWN_LOOP);
    assert_eq!(word(&state, 0), Value::constant(3));
}

/// Random code, and the code above with a few bytes changed: every analysis ends (within
/// the budget) without a panic.
#[test]
fn random_and_mutated_code_is_analysed_within_the_budget() {
    let mut random = fastrand::Rng::with_seed(0x5EED);
    for round in 0..1500 {
        let mut code: Vec<u8> = if round % 2 == 0 {
            let length = random.usize(1..256);
            (0..length).map(|_| random.u8(..)).collect()
        } else {
            let mut code = CODE.to_vec();
            for _ in 0..random.usize(1..5) {
                let at = random.usize(..code.len());
                code[at] = random.u8(..);
            }
            code
        };
        code.truncate(PAGE);
        let entry = if round % 2 == 0 {
            0
        } else {
            ENTRIES[random.usize(..ENTRIES.len())]
        };
        let (_, steps) = Page::with(&code).run(entry);
        assert!(steps <= MAX_STEPS + 1, "round {round}: {steps} steps");
    }
}
