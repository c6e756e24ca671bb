//! `generate` over a header of 2,000 polymorphic classes, against libclang parsing the same
//! translation unit alone (the baseline, measured in the same run). Report the ratio
//! generate / parse (criterion's two groups, then the two alternated in one loop); the budget is
//! 1.5x.
//!
//! Run with `cargo bench -p layout-gen --bench generate`.
#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::path::Path;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use layout_gen::{Request, Selection};

const CLASSES: usize = 2_000;

fn write_header(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("bench_classes.hpp");
    std::fs::write(&path, layout_gen::benchmark_header(CLASSES)).unwrap();
    path
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let request = Request {
        headers: vec![write_header(dir.path())],
        clang_args: vec![],
        selection: Selection {
            namespaces: vec!["bench".into()],
            ..Selection::default()
        },
    };
    let out = dir.path().join("out");
    let mut group = c.benchmark_group("generate_2000_classes");
    group.sample_size(10);
    group.bench_function("baseline_libclang_parse_only", |b| {
        b.iter(|| layout_gen::parse_only(&request).unwrap())
    });
    group.bench_function("layout_gen_generate", |b| {
        // Every run writes both files, as a first build would: the previous run's output is
        // removed beforehand, outside the timed part.
        b.iter_batched(
            || {
                let _ = std::fs::remove_dir_all(&out);
            },
            |()| layout_gen::generate(&request, &out).unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.finish();
    alternating(&request, &out);
}

/// The same two measured alternately in one process, parse then generate, 15 times, and the
/// ratio of the medians: on a shared machine whose speed drifts over a minute, criterion's two
/// groups (one after the other) can see different machines; this sees the same one.
fn alternating(request: &Request, out: &Path) {
    let (mut parse, mut generate) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        let started = std::time::Instant::now();
        layout_gen::parse_only(request).unwrap();
        parse.push(started.elapsed());
        let _ = std::fs::remove_dir_all(out);
        let started = std::time::Instant::now();
        let generated = layout_gen::generate(request, out).unwrap();
        generate.push(started.elapsed());
        drop(generated);
    }
    parse.sort();
    generate.sort();
    let (parse, generate) = (parse[7], generate[7]);
    eprintln!(
        "alternating, medians of 15: parse {:.1} ms, generate {:.1} ms, ratio {:.2}x",
        parse.as_secs_f64() * 1e3,
        generate.as_secs_f64() * 1e3,
        generate.as_secs_f64() / parse.as_secs_f64()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
