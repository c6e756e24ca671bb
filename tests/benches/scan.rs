//! The relocation scan over a big heap, against its baseline in the same run (BENCHMARKS.md):
//!
//! - resolving every reference into the old build over 1 GiB of live heap holding 1,000,000
//!   objects (`ReloadReport::scan`: reading every writable word of the process and resolving the
//!   ones that point into the old build), against a plain loop that reads every word of the same
//!   mappings and counts those in the same range, on as many threads as the scan (every core);
//! - the whole reload of that process, phase by phase, printed once.
//!
//! Run with `cargo bench -p integration-tests --bench scan`.
#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::hint::black_box;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use integration_tests::BENCH;
use rehydrate::{LiveObject, ReloadReport, Runtime};

const OBJECTS: usize = 1_000_000;
const HEAP: usize = 1 << 30;

fn builds() -> (PathBuf, PathBuf) {
    integration_tests::bench_builds(
        &PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-modules"),
    )
}

/// Every readable and writable mapping but devices and generated code, as the scan reads them.
fn writable_mappings() -> Vec<Range<usize>> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let name = fields.get(5).copied().unwrap_or("");
            if !fields[1].starts_with("rw") || fields[1].contains('x') || name.starts_with("/dev/")
            {
                return None;
            }
            let (start, end) = fields[0].split_once('-')?;
            Some(usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?)
        })
        .collect()
}

/// The baseline: reads every word of every writable mapping and counts those in `target`, on
/// as many threads as the scan (every core), each taking the next 4 MiB piece as it finishes one.
fn plain_read_loop(target: &Range<usize>) -> usize {
    const PIECE: usize = 4 << 20;
    let pieces: Vec<Range<usize>> = writable_mappings()
        .into_iter()
        .flat_map(|m| {
            m.clone()
                .step_by(PIECE)
                .map(move |s| s..(s + PIECE).min(m.end))
        })
        .collect();
    let next = AtomicUsize::new(0);
    let work = || {
        let mut found = 0;
        while let Some(piece) = pieces.get(next.fetch_add(1, Ordering::Relaxed)) {
            let start = piece.start as *const usize;
            for i in 0..piece.len() / 8 {
                // SAFETY: a word of a readable mapping; nothing in this bench unmaps it meanwhile.
                let word = unsafe { start.add(i).read_volatile() };
                found += usize::from(word.wrapping_sub(target.start) < target.len());
            }
        }
        found
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        work()
            + helpers
                .into_iter()
                .map(|h| h.join().unwrap())
                .sum::<usize>()
    })
}

/// Ballast that fills the heap up to `HEAP`: words that point nowhere near a build.
fn ballast() -> Vec<u64> {
    let mapped: usize = writable_mappings().iter().map(|m| m.len()).sum();
    let words = HEAP.saturating_sub(mapped) / 8;
    (0..words as u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9))
        .collect()
}

fn print_phases(report: &ReloadReport) {
    println!(
        "whole reload of {} objects in 1 GiB: load {:?}, images {:?}, validate {:?}, scan {:?}, patch {:?}, \
         carry {:?}, relocate {:?}, unload {:?}, audit {:?}; {} vptrs re-pointed",
        report.objects,
        report.load,
        report.images,
        report.validate,
        report.scan,
        report.patch,
        report.carry,
        report.relocate,
        report.unload,
        report.audit_time,
        report.references.vptrs
    );
}

fn scan_one_gib(c: &mut Criterion) {
    let builds = builds();
    let mut runtime = Runtime::load(&builds.0).unwrap();
    let objects: Vec<LiveObject> = (0..OBJECTS)
        .map(|i| {
            runtime
                .create(BENCH.classes[i % BENCH.classes.len()])
                .unwrap()
        })
        .collect();
    let heap = ballast();
    let mapped: usize = writable_mappings().iter().map(|m| m.len()).sum();
    println!(
        "{} objects, {} MiB of writable memory",
        objects.len(),
        mapped >> 20
    );
    let mut group = c.benchmark_group("scan_1gib_1m_objects");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("baseline_plain_read_loop", |b| {
        b.iter(|| {
            let ranges = runtime.image_ranges();
            let target = ranges[0].start..ranges.last().unwrap().end;
            black_box(plain_read_loop(&target))
        })
    });
    let mut reloads = 0u64;
    group.bench_function("resolve_references", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let target = if reloads.is_multiple_of(2) {
                    &builds.1
                } else {
                    &builds.0
                };
                reloads += 1;
                let started = Instant::now();
                let report = runtime.reload(target).unwrap().rehydrate_all().unwrap();
                let _whole = started.elapsed();
                assert!(report.references.vptrs >= OBJECTS);
                if reloads == 1 {
                    print_phases(&report);
                }
                total += report.scan;
            }
            total
        })
    });
    group.finish();
    black_box(&heap);
    drop(objects);
}

criterion_group!(benches, scan_one_gib);
criterion_main!(benches);
