//! Forwarder costs, against baselines in the same run: calling an empty function through a
//! forwarder vs through a plain function pointer (goal <= 1.3x); creating and re-pointing a
//! forwarder. Memory per forwarder is printed (goal <= 32 bytes).
//!
//! The forwarder is placed near its target (see `rehydrate::forwarder`); a second measurement
//! shows the cost when it is not (re-pointed to a target terabytes away).
//!
//! Run with `cargo bench -p rehydrate --bench forwarder`.
#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::ffi::c_void;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rehydrate::forwarder::{Forwarder, THUNK_SIZE};

#[inline(never)]
extern "C" fn empty() {}

#[inline(never)]
extern "C" fn other() {}

fn calls(c: &mut Criterion) {
    eprintln!(
        "memory per forwarder: {} bytes ({THUNK_SIZE} code + {THUNK_SIZE} slot)",
        2 * THUNK_SIZE
    );
    let forwarder = Forwarder::new(empty as *const c_void, "empty").unwrap();
    // SAFETY: the forwarder forwards to `empty`, which has this type.
    let through_forwarder: extern "C" fn() = unsafe { std::mem::transmute(forwarder.address()) };
    // The same thunk cost when the thunk is far from its target: made for a function in the C
    // library (so placed near it), then re-pointed at `empty` in this executable.
    let far = Forwarder::new(libc::getpid as *const c_void, "getpid").unwrap();
    far.retarget(empty as *const c_void);
    // SAFETY: the forwarder now forwards to `empty`, which has this type.
    let through_far_forwarder: extern "C" fn() = unsafe { std::mem::transmute(far.address()) };
    let plain: extern "C" fn() = empty;
    let mut group = c.benchmark_group("call_empty_function_1000x");
    group.bench_function("baseline_function_pointer", |b| {
        b.iter(|| {
            let f = black_box(plain);
            for _ in 0..1000 {
                f();
            }
        })
    });
    group.bench_function("through_forwarder", |b| {
        b.iter(|| {
            let f = black_box(through_forwarder);
            for _ in 0..1000 {
                f();
            }
        })
    });
    group.bench_function("through_forwarder_far_from_target", |b| {
        b.iter(|| {
            let f = black_box(through_far_forwarder);
            for _ in 0..1000 {
                f();
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("forwarder_management");
    let mut flip = false;
    group.bench_function("retarget", |b| {
        b.iter(|| {
            flip = !flip;
            forwarder.retarget(if flip {
                other as *const c_void
            } else {
                empty as *const c_void
            });
        })
    });
    group.finish();
}

criterion_group!(benches, calls);
criterion_main!(benches);
