//! The constructor analysis over every class of the 2,000-class benchmark module (layout-gen's
//! benchmark header, all inline, built with its shim by g++ -O2), against two baselines
//! measured in the same run on the same one thread:
//! - iced-x86 decoding, and nothing else, every function the analyses interpreted, each once
//!   per class (goal: the analysis takes at most 4x as long), measured two ways: a decoder
//!   set up for each function's bytes, and one decoder moved from function to function (as
//!   the analysis itself decodes: the stricter of the two);
//! - probing the same classes (three dummies each, constructors and destructors run; goal:
//!   the analysis is faster).
//!
//! The build's constructor index (class -> its constructors' symbols) is made with its ELF
//! index when the build is loaded, as the symbol table is, and timed on its own.
//!
//! Criterion's groups, then the three alternated in one loop, 51 rounds: the medians of the
//! rounds' ratios are the ones to report. Run with
//! `cargo bench -p integration-tests --bench analysis`.
#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::path::{Path, PathBuf};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use integration_tests::gxx;
use rehydrate::measure::{
    analyse_every_class, decode_what_was_analysed, decode_what_was_analysed_in_place,
    index_constructors, probe_every_class, readings,
};
use rehydrate::Runtime;

const CLASSES: usize = 2_000;

/// The benchmark header, its shim, one shared library.
fn build_module(dir: &Path) -> PathBuf {
    let header = dir.join("bench_classes.hpp");
    std::fs::write(&header, layout_gen::benchmark_header(CLASSES)).unwrap();
    let request = layout_gen::Request {
        headers: vec![header],
        clang_args: vec![],
        selection: layout_gen::Selection {
            namespaces: vec!["bench".into()],
            ..Default::default()
        },
    };
    let shim = layout_gen::generate(&request, &dir.join("generated"))
        .expect("the benchmark header's tables generate")
        .cpp_shim;
    let library = dir.join("libbench2000.so");
    let include = format!("-I{}", rehydrate::include_dir().display());
    let header_dir = format!("-I{}", dir.display());
    gxx().compile(
        &[&shim],
        &library,
        &[
            "-std=c++17",
            "-O2",
            "-fPIC",
            "-shared",
            "-fno-gnu-unique",
            &include,
            &header_dir,
        ],
    );
    library
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let library = build_module(dir.path());
    let runtime = Runtime::load(&library).unwrap();
    let readings = readings(&runtime);
    let analysed = analyse_every_class(&runtime);
    assert_eq!(analysed, readings.len());
    let probed = probe_every_class(&runtime);
    let decoded = decode_what_was_analysed(&runtime, &readings);
    assert_eq!(
        decode_what_was_analysed_in_place(&runtime, &readings),
        decoded,
        "both baselines decode the same instructions"
    );
    eprintln!(
        "{} classes: the analysis reads {}, the probe {probed}; the baseline decodes {decoded} instructions",
        CLASSES + 2,
        readings.len()
    );
    let mut group = c.benchmark_group("analysis_2000_classes");
    group.sample_size(10);
    group.bench_function("baseline_iced_decode_only", |b| {
        b.iter(|| decode_what_was_analysed(&runtime, &readings))
    });
    group.bench_function("baseline_iced_decode_only_one_decoder", |b| {
        b.iter(|| decode_what_was_analysed_in_place(&runtime, &readings))
    });
    group.bench_function("baseline_probe_every_class", |b| {
        b.iter(|| probe_every_class(&runtime))
    });
    group.bench_function("analyse_every_class", |b| {
        b.iter(|| analyse_every_class(&runtime))
    });
    group.finish();
    alternating(&runtime, &readings);
}

/// Rounds of [`alternating`].
const ROUNDS: usize = 51;

/// The three measured alternately, [`ROUNDS`] times; each ratio is the median of the rounds'
/// ratios: a shared machine whose speed drifts, or that another tenant loads for a while,
/// sees the same machine in the two workloads of one round.
fn alternating(runtime: &Runtime, readings: &rehydrate::measure::Readings) {
    let time = |work: &mut dyn FnMut()| {
        let started = Instant::now();
        work();
        started.elapsed().as_secs_f64()
    };
    let (mut decode, mut probe, mut analyse) = (Vec::new(), Vec::new(), Vec::new());
    let mut decode_in_place = Vec::new();
    let mut index = Vec::new();
    for _ in 0..ROUNDS {
        index.push(time(&mut || {
            std::hint::black_box(index_constructors(runtime));
        }));
        decode.push(time(&mut || {
            std::hint::black_box(decode_what_was_analysed(runtime, readings));
        }));
        decode_in_place.push(time(&mut || {
            std::hint::black_box(decode_what_was_analysed_in_place(runtime, readings));
        }));
        probe.push(time(&mut || {
            std::hint::black_box(probe_every_class(runtime));
        }));
        analyse.push(time(&mut || {
            std::hint::black_box(analyse_every_class(runtime));
        }));
    }
    let median = |samples: &[f64]| {
        let mut samples = samples.to_vec();
        samples.sort_by(f64::total_cmp);
        samples[samples.len() / 2]
    };
    let ratio = |work: &[f64], baseline: &[f64]| {
        let ratios: Vec<f64> = work.iter().zip(baseline).map(|(w, b)| w / b).collect();
        median(&ratios)
    };
    let ms = |seconds: f64| seconds * 1e3;
    eprintln!(
        "the constructor index, made once per build when its ELF file is read (not in the \
         analysis's time): {:.2} ms",
        ms(median(&index))
    );
    eprintln!(
        "alternating, {ROUNDS} rounds, medians: decode only {:.2} ms (one decoder: {:.2} ms), \
         probe {:.2} ms, analysis {:.2} ms; medians of the rounds' ratios: analysis / decode \
         {:.2}x (one decoder: {:.2}x; goal <= 4x), analysis / probe {:.2}x (goal < 1x)",
        ms(median(&decode)),
        ms(median(&decode_in_place)),
        ms(median(&probe)),
        ms(median(&analyse)),
        ratio(&analyse, &decode),
        ratio(&analyse, &decode_in_place),
        ratio(&analyse, &probe)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
