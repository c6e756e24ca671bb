//! Forwarders with real C code: every kind of argument passes through untouched, calls keep
//! landing in one of the two targets while another thread re-points the forwarder, and no
//! mapping is ever writable and executable at once.

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use integration_tests::gxx;
use libloading::Library;
use rehydrate::maps::writable_and_executable_mappings;
use rehydrate::Forwarder;

fn callees() -> &'static Library {
    static LIBRARY: OnceLock<Library> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("forwarders");
        std::fs::create_dir_all(&dir).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/forwarders/callees.cpp");
        let library = dir.join("libcallees.so");
        gxx().compile(
            &[&source],
            &library,
            &[
                "-O2",
                "-fPIC",
                "-shared",
                "-fno-gnu-unique",
                "-Wall",
                "-Wextra",
            ],
        );
        // SAFETY: a plain library of extern "C" functions and data.
        unsafe { Library::new(&library) }.unwrap()
    })
}

fn symbol(name: &str) -> *const c_void {
    // SAFETY: reading a symbol's address; the library stays loaded for the whole test run.
    unsafe { *callees().get::<*const c_void>(name.as_bytes()).unwrap() }
}

fn no_writable_executable_mapping() {
    let offenders = writable_and_executable_mappings();
    assert!(
        offenders.is_empty(),
        "writable+executable mappings: {offenders:?}"
    );
}

fn received<T: Copy, const N: usize>(name: &str) -> [T; N] {
    // SAFETY: the callee library exports arrays of at least N elements of T under these names.
    unsafe { *(symbol(name) as *const [T; N]) }
}

#[test]
fn six_integer_eight_vector_and_stack_arguments_pass_through() {
    type Many = unsafe extern "C" fn(
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        f64,
        f64,
        f64,
        f64,
        f64,
        f64,
        f64,
        f64,
        i64,
        f64,
        i64,
        f64,
    ) -> f64;
    let forwarder = Forwarder::new(symbol("many_arguments"), "many_arguments").unwrap();
    // SAFETY: the target has exactly this signature.
    let call: Many = unsafe { std::mem::transmute(forwarder.address()) };
    // SAFETY: as above.
    let sum = unsafe {
        call(
            1, -2, 3, -4, 5, -6, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 700, 8.25, -900, 9.75,
        )
    };
    let ints: [i64; 8] = received("many_received_ints");
    let doubles: [f64; 10] = received("many_received_doubles");
    assert_eq!(ints, [1, -2, 3, -4, 5, -6, 700, -900]);
    assert_eq!(
        doubles,
        [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.25, 9.75]
    );
    let expected: f64 = ints.iter().map(|&v| v as f64).sum::<f64>() + doubles.iter().sum::<f64>();
    assert_eq!(sum, expected, "the double return value passes through");
    no_writable_executable_mapping();
}

#[test]
fn variadic_callee_gets_al_and_every_argument() {
    type Variadic = unsafe extern "C" fn(i32, ...) -> f64;
    let forwarder = Forwarder::new(symbol("variadic_sum"), "variadic_sum").unwrap();
    // SAFETY: the target is `double variadic_sum(int, ...)`.
    let call: Variadic = unsafe { std::mem::transmute(forwarder.address()) };
    // SAFETY: three (long, double) pairs, as the callee reads them.
    let sum = unsafe { call(3, 10i64, 0.5f64, -20i64, 1.25f64, 30i64, 2.0f64) };
    assert_eq!(sum, 10.0 * 0.5 - 20.0 * 1.25 + 30.0 * 2.0);
    let count: [i32; 1] = received("variadic_received_count");
    assert_eq!(count, [3]);
    assert_eq!(received::<i64, 3>("variadic_received_ints"), [10, -20, 30]);
    assert_eq!(
        received::<f64, 3>("variadic_received_doubles"),
        [0.5, 1.25, 2.0]
    );
}

#[repr(C)]
#[derive(Debug, PartialEq)]
struct Big {
    values: [i64; 8],
}

#[test]
fn large_struct_returned_through_hidden_pointer() {
    let forwarder = Forwarder::new(symbol("make_big"), "make_big").unwrap();
    type MakeBig = unsafe extern "C" fn(i64) -> Big;
    // SAFETY: the target is `Big make_big(long)`.
    let call: MakeBig = unsafe { std::mem::transmute(forwarder.address()) };
    // SAFETY: as above.
    let big = unsafe { call(7) };
    assert_eq!(
        big,
        Big {
            values: [70, 71, 72, 73, 74, 75, 76, 77]
        }
    );
}

#[test]
fn calls_land_in_one_of_the_two_targets_while_another_thread_repoints() {
    let one = symbol("target_one");
    let two = symbol("target_two");
    let forwarder = Forwarder::new(one, "one").unwrap();
    type Unary = unsafe extern "C" fn(i64) -> i64;
    // SAFETY: both targets are `long f(long)`.
    let call: Unary = unsafe { std::mem::transmute(forwarder.address()) };
    let stop = AtomicBool::new(false);
    let (mut seen_one, mut seen_two) = (0u64, 0u64);
    std::thread::scope(|scope| {
        let callers: Vec<_> = (0..2)
            .map(|t| {
                let stop = &stop;
                scope.spawn(move || {
                    let (mut a, mut b) = (0u64, 0u64);
                    for i in 0..2_000_000i64 {
                        let x = i * 2 + t;
                        // SAFETY: as above.
                        match unsafe { call(x) } - x {
                            1000 => a += 1,
                            2000 => b += 1,
                            other => panic!("call landed elsewhere: offset {other}"),
                        }
                    }
                    stop.store(true, Ordering::Relaxed);
                    (a, b)
                })
            })
            .collect();
        let mut flips = 0u64;
        while !stop.load(Ordering::Relaxed) {
            forwarder.retarget(if flips.is_multiple_of(2) { two } else { one });
            flips += 1;
        }
        for caller in callers {
            let (a, b) = caller.join().unwrap();
            seen_one += a;
            seen_two += b;
        }
        assert!(
            flips > 100,
            "the forwarder was re-pointed many times ({flips})"
        );
    });
    assert_eq!(seen_one + seen_two, 4_000_000);
    assert!(
        seen_one > 0 && seen_two > 0,
        "both targets were reached ({seen_one}, {seen_two})"
    );
    no_writable_executable_mapping();
}

#[test]
fn no_mapping_is_writable_and_executable_while_pages_are_being_made() {
    let done = AtomicBool::new(false);
    let samples = AtomicU64::new(0);
    let target = symbol("target_one");
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                no_writable_executable_mapping();
                samples.fetch_add(1, Ordering::Relaxed);
            }
        });
        while samples.load(Ordering::Relaxed) == 0 {
            std::hint::spin_loop();
        }
        // Keep mapping new code/data page pairs (each written, then protected) until the sampler
        // has read the maps many times meanwhile.
        let mut forwarders = Vec::new();
        while forwarders.len() < 5_000 || samples.load(Ordering::Relaxed) < 50 {
            forwarders.extend((0..512).map(|_| Forwarder::new(target, "target").unwrap()));
        }
        done.store(true, Ordering::Relaxed);
        type Unary = unsafe extern "C" fn(i64) -> i64;
        let call = |f: &Forwarder| {
            // SAFETY: every forwarder forwards to `long target_one(long)`.
            let function: Unary = unsafe { std::mem::transmute(f.address()) };
            // SAFETY: as above.
            unsafe { function(1) }
        };
        let calls: i64 = forwarders.iter().map(call).sum();
        assert_eq!(calls, forwarders.len() as i64 * 1001);
    });
}
