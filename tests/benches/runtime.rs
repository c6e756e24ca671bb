//! Runtime benchmarks, each against a baseline measured in the same run (see BENCHMARKS.md):
//!
//! - `rehydrate_all` over 1,000,000 live objects of 8 classes with 1 to 5 vptr slots, against a
//!   loop writing the same 8-byte words to the same addresses on as many threads as the runtime
//!   patches with (every core), then both again pinned to one core;
//! - registering and unregistering an object from module code, against `malloc` + `free` of the
//!   same size, both in a C++ loop inside the module;
//! - tracking on one thread and untracking on another (producer/consumer), against `malloc` on
//!   one thread and `free` on the other;
//! - a whole reload (load, probe, validate, patch, unload) with 100,000 live objects.
//!
//! Run with `cargo bench -p integration-tests --bench runtime`.
#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use integration_tests::BENCH;
use rehydrate::{LiveObject, Runtime};

fn builds() -> (PathBuf, PathBuf) {
    integration_tests::bench_builds(
        &PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-modules"),
    )
}

fn populate(runtime: &Runtime, count: usize) -> Vec<LiveObject> {
    (0..count)
        .map(|i| {
            runtime
                .create(BENCH.classes[i % BENCH.classes.len()])
                .unwrap()
        })
        .collect()
}

/// Reloads alternately into the two builds and times only what `time` covers.
fn timed_reloads(
    runtime: &mut Runtime,
    builds: &(PathBuf, PathBuf),
    iterations: u64,
    whole: bool,
) -> Duration {
    let mut total = Duration::ZERO;
    for i in 0..iterations {
        let target = if i % 2 == 0 { &builds.1 } else { &builds.0 };
        let started = Instant::now();
        let reload = runtime.reload(target).unwrap();
        let patch_started = Instant::now();
        let report = reload.rehydrate_all().unwrap();
        assert!(report.old_image_unmapped);
        total += if whole {
            started.elapsed()
        } else {
            patch_started.elapsed()
        };
    }
    // Leave the runtime on build 1 whatever the count was.
    if iterations % 2 == 1 {
        runtime.reload(&builds.0).unwrap().rehydrate_all().unwrap();
    }
    total
}

/// One class's vptr words (offset, value) and the addresses of its objects.
type ClassWrites = (Vec<(usize, u64)>, Vec<usize>);

fn rehydrate_all_one_million(c: &mut Criterion) {
    let builds = builds();
    let mut runtime = Runtime::load(&builds.0).unwrap();
    let objects = populate(&runtime, 1_000_000);
    // The baseline writes the same words rehydrate_all writes, to the same addresses.
    let plan: Vec<ClassWrites> = BENCH
        .classes
        .iter()
        .map(|class| {
            let addresses: Vec<usize> = objects
                .iter()
                .filter(|o| o.class() == *class)
                .map(|o| o.as_ptr() as usize)
                .collect();
            // The vptr words as a live object holds them (vptr runs are whole words).
            let words = runtime
                .class_image(class)
                .unwrap()
                .implicit_runs()
                .into_iter()
                .flat_map(|run| run.step_by(8))
                .map(|offset| {
                    // SAFETY: a vptr slot inside a live object.
                    let word = unsafe { ((addresses[0] + offset) as *const u64).read_unaligned() };
                    (offset, word)
                })
                .collect();
            (words, addresses)
        })
        .collect();
    let slots: usize = plan.iter().map(|(w, a)| w.len() * a.len()).sum();
    eprintln!(
        "rehydrate_all: {} objects, {slots} vptr slots",
        objects.len()
    );

    // The runtime patches a class's objects on every core when there are many (and the
    // process's CPU affinity decides how many cores that is): the baseline writes on as many
    // threads, then both run again pinned to one core.
    for (label, pin) in [("all_cores", false), ("one_core", true)] {
        if pin {
            pin_to_one_core();
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        eprintln!("rehydrate_all {label}: {threads} thread(s)");
        let mut group = c.benchmark_group(format!("rehydrate_all_1m_objects_{label}"));
        group.sample_size(10);
        group.bench_function("baseline_plain_word_writes", |b| {
            b.iter(|| write_words_on_threads(&plan, threads))
        });
        group.bench_function("rehydrate_all", |b| {
            b.iter_custom(|n| timed_reloads(&mut runtime, &builds, n, false))
        });
        group.finish();
    }
    drop(objects);
}

/// The baseline's work: every class's words written to its objects, each class's objects split
/// into `threads` chunks written at once (as the runtime splits them).
fn write_words_on_threads(plan: &[ClassWrites], threads: usize) {
    for (words, addresses) in plan {
        let chunk = addresses.len().div_ceil(threads.max(1)).max(1);
        std::thread::scope(|scope| {
            for part in addresses.chunks(chunk) {
                scope.spawn(move || {
                    for &address in part {
                        for &(offset, word) in words {
                            // SAFETY: a vptr slot of a live object; the value is the one it holds.
                            unsafe {
                                (black_box(address + offset) as *mut u64).write_unaligned(word)
                            };
                        }
                    }
                });
            }
        });
    }
}

/// Restricts this process's threads (this one and those it starts) to the first allowed core.
fn pin_to_one_core() {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read and write it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        let first = (0..libc::CPU_SETSIZE as usize)
            .find(|&cpu| libc::CPU_ISSET(cpu, &set))
            .expect("some core is allowed");
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(first, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

fn register_unregister(c: &mut Criterion) {
    let builds = builds();
    let runtime = Runtime::load(&builds.0).unwrap();
    const COUNT: i32 = 1_000;
    const ROUNDS: i32 = 100;
    // SAFETY: the bench module exports these with these signatures.
    let (track_untrack, malloc_free) = unsafe {
        (
            *runtime
                .symbol::<unsafe extern "C" fn(i32, i32)>("bm_track_untrack")
                .unwrap(),
            *runtime
                .symbol::<unsafe extern "C" fn(i32, i32)>("bm_malloc_free")
                .unwrap(),
        )
    };
    let mut group = c.benchmark_group("register_unregister_100k_pairs");
    group.bench_function("baseline_malloc_free", |b| {
        b.iter(|| {
            // SAFETY: a plain C loop in the loaded module.
            unsafe { malloc_free(COUNT, ROUNDS) }
        })
    });
    group.bench_function("track_untrack", |b| {
        b.iter(|| {
            // SAFETY: as above; the module tracks and untracks objects it owns.
            unsafe { track_untrack(COUNT, ROUNDS) }
        })
    });
    group.finish();
    assert_eq!(runtime.live_objects(), 0);
}

type EachFn = unsafe extern "C" fn(i32, *mut *mut std::ffi::c_void);

/// `count` objects tracked here and untracked on a consumer thread, against `count` blocks
/// malloc'ed here and freed there; the hand-over (a channel round trip) is the same in both.
fn untrack_on_another_thread(c: &mut Criterion) {
    let builds = builds();
    let runtime = Runtime::load(&builds.0).unwrap();
    const COUNT: i32 = 1_000;
    // SAFETY: the bench module exports these with these signatures.
    let (new_objects, delete_objects, track, untrack, malloc_each, free_each) = unsafe {
        (
            *runtime
                .symbol::<unsafe extern "C" fn(i32) -> *mut *mut std::ffi::c_void>("bm_new_objects")
                .unwrap(),
            *runtime.symbol::<EachFn>("bm_delete_objects").unwrap(),
            *runtime.symbol::<EachFn>("bm_track_each").unwrap(),
            *runtime.symbol::<EachFn>("bm_untrack_each").unwrap(),
            *runtime.symbol::<EachFn>("bm_malloc_each").unwrap(),
            *runtime.symbol::<EachFn>("bm_free_each").unwrap(),
        )
    };
    // SAFETY: makes COUNT objects, deleted below.
    let objects = unsafe { new_objects(COUNT) } as usize;
    let blocks = vec![std::ptr::null_mut::<std::ffi::c_void>(); COUNT as usize];
    let blocks_address = blocks.as_ptr() as usize;
    let (to_consumer, jobs) = std::sync::mpsc::channel::<(EachFn, usize)>();
    let (to_producer, done) = std::sync::mpsc::channel::<()>();
    let consumer = std::thread::spawn(move || {
        for (work, array) in jobs {
            // SAFETY: one of the functions above on an array of COUNT pointers.
            unsafe { work(COUNT, array as *mut *mut std::ffi::c_void) };
            to_producer.send(()).unwrap();
        }
    });
    let handed_over = |produce: EachFn, consume: EachFn, array: usize| {
        // SAFETY: as above.
        unsafe { produce(COUNT, array as *mut *mut std::ffi::c_void) };
        to_consumer.send((consume, array)).unwrap();
        done.recv().unwrap();
    };
    let mut group = c.benchmark_group("untrack_on_another_thread_1k");
    group.bench_function("baseline_malloc_here_free_there", |b| {
        b.iter(|| handed_over(malloc_each, free_each, blocks_address))
    });
    group.bench_function("track_here_untrack_there", |b| {
        b.iter(|| handed_over(track, untrack, objects))
    });
    group.finish();
    drop(to_consumer); // ends the consumer's loop
    consumer.join().unwrap();
    assert_eq!(runtime.live_objects(), 0);
    // SAFETY: made above, untracked.
    unsafe { delete_objects(COUNT, objects as *mut *mut std::ffi::c_void) };
    drop(blocks);
}

fn whole_reload(c: &mut Criterion) {
    let builds = builds();
    let mut runtime = Runtime::load(&builds.0).unwrap();
    let objects = populate(&runtime, 100_000);
    let mut group = c.benchmark_group("whole_reload_100k_objects");
    group.sample_size(20);
    group.bench_function("load_probe_validate_patch_unload", |b| {
        b.iter_custom(|n| timed_reloads(&mut runtime, &builds, n, true))
    });
    group.finish();
    drop(objects);
}

criterion_group!(
    benches,
    rehydrate_all_one_million,
    register_unregister,
    untrack_on_another_thread,
    whole_reload
);
criterion_main!(benches);
