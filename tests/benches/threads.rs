//! Stopping the world for a reload's commit, against a plain `rehydrate_all` with no other
//! thread, in the same run (see BENCHMARKS.md):
//!
//! - `rehydrate_all` of the threads fixture with no other thread (the baseline), and with 8
//!   busy threads calling into the module through a forwarder between bits of host work;
//! - of the latter, the stop itself: from the stop's request until every thread is parked
//!   (`ReloadReport::threads.stop_latency`), and the stopped interval (`pause`);
//! - the stop latency with 8 threads blocked in a system call (waiting on a channel).
//!
//! Run with `cargo bench -p integration-tests --bench threads`.
#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use integration_tests::{gxx, ModuleBuild, THREADS};
use rehydrate::{ReloadReport, Runtime};

type CallFn = unsafe extern "C" fn(*const u8, i64) -> i64;

fn builds() -> [PathBuf; 2] {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-threads");
    std::fs::create_dir_all(&dir).unwrap();
    [1, 2].map(|v| ModuleBuild::of(&THREADS, gxx(), "-O2", v).build(&dir))
}

/// Reloads `iterations` times, alternating builds; the sum of what `measure` takes of each.
fn reloads(
    runtime: &mut Runtime,
    builds: &[PathBuf; 2],
    iterations: u64,
    measure: impl Fn(&ReloadReport, Duration) -> Duration,
) -> Duration {
    let mut total = Duration::ZERO;
    for i in 0..iterations {
        let reload = runtime.reload(&builds[(i % 2 == 0) as usize]).unwrap();
        let started = Instant::now();
        let report = reload.rehydrate_all().unwrap();
        total += measure(&report, started.elapsed());
    }
    if iterations % 2 == 1 {
        runtime.reload(&builds[0]).unwrap().rehydrate_all().unwrap();
    }
    total
}

/// 8 threads that call `th_work` through a forwarder between about a microsecond of host work
/// each, until `stop`.
fn busy_threads(
    runtime: &Runtime,
    object: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    let forwarder = runtime.forwarder("th_work").unwrap();
    let call_at = forwarder.address() as usize;
    std::mem::forget(forwarder); // bound for the whole run
    (0..8)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seed = t as u64;
                while !stop.load(SeqCst) {
                    seed = (0..200).fold(seed, |a, i| {
                        a.wrapping_mul(6364136223846793005).wrapping_add(i)
                    });
                    // SAFETY: a forwarder of `long th_work(const Worker*, long)`, a live object.
                    let call: CallFn = unsafe { std::mem::transmute(call_at) };
                    // SAFETY: as above.
                    std::hint::black_box(unsafe {
                        call(object as *const u8, (seed % 1000) as i64)
                    });
                }
            })
        })
        .collect()
}

fn stop_the_world(c: &mut Criterion) {
    let builds = builds();
    let mut runtime = Runtime::load(&builds[0]).unwrap();
    let worker = runtime.create("th::Busy").unwrap();
    let object = worker.as_ptr() as usize;
    let mut group = c.benchmark_group("stop the world");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));

    group.bench_function("rehydrate_all, no other thread (baseline)", |b| {
        b.iter_custom(|n| reloads(&mut runtime, &builds, n, |_, whole| whole))
    });

    let (sender, receiver) = std::sync::mpsc::channel::<()>();
    let receiver = Arc::new(std::sync::Mutex::new(receiver));
    let blocked: Vec<_> = (0..8)
        .map(|_| {
            let receiver = receiver.clone();
            std::thread::spawn(move || {
                let _ = receiver.lock().map(|r| r.recv());
            })
        })
        .collect();
    group.bench_function("stop latency, 8 threads blocked", |b| {
        b.iter_custom(|n| reloads(&mut runtime, &builds, n, |r, _| r.threads.stop_latency))
    });
    drop(sender);
    for thread in blocked {
        thread.join().unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let busy = busy_threads(&runtime, object, &stop);
    group.bench_function("rehydrate_all, 8 busy threads", |b| {
        b.iter_custom(|n| reloads(&mut runtime, &builds, n, |_, whole| whole))
    });
    group.bench_function("stop latency, 8 busy threads", |b| {
        b.iter_custom(|n| reloads(&mut runtime, &builds, n, |r, _| r.threads.stop_latency))
    });
    group.bench_function("pause, 8 busy threads", |b| {
        b.iter_custom(|n| reloads(&mut runtime, &builds, n, |r, _| r.threads.pause))
    });
    stop.store(true, SeqCst);
    for thread in busy {
        thread.join().unwrap();
    }
    group.finish();
    drop(worker);
}

criterion_group!(benches, stop_the_world);
criterion_main!(benches);
