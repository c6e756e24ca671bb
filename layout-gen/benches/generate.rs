//! `generate` over a header of 2,000 polymorphic classes, against libclang parsing the same
//! translation unit alone (the baseline, measured in the same run). Report the ratio
//! generate / parse; the goal is at most 1.3x.
//!
//! Run with `cargo bench -p layout-gen --bench generate`.
#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::fmt::Write as _;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use layout_gen::{Request, Selection};

const CLASSES: usize = 2_000;

/// A header of `CLASSES` polymorphic classes: roots, single and multiple inheritance, a virtual
/// base, polymorphic members, private fields.
fn write_header(dir: &Path) -> std::path::PathBuf {
    let mut header = String::from("#pragma once\nnamespace bench {\n");
    header.push_str("struct Shared { virtual ~Shared() {} long shared_id = 0; };\n");
    header.push_str("struct Mixin { virtual ~Mixin() {} virtual int mix() const { return 0; } short m = 0; };\n");
    for i in 0..CLASSES {
        let bases = match i % 4 {
            0 => String::new(),
            1 => format!(" : C{}", i - 1),
            2 => format!(" : C{}, Mixin", i - 2),
            _ => " : virtual Shared".to_string(),
        };
        let _ = writeln!(
            header,
            "class C{i}{bases} {{\npublic:\n    virtual ~C{i}() {{}}\n    virtual int f{i}() const {{ return {i}; }}\n    \
             int a{i} = {i};\n    double b{i} = 0;\n    char c{i} = 0;\nprivate:\n    float hidden{i} = 0;\n}};"
        );
    }
    header.push_str("}  // namespace bench\n");
    let path = dir.join("bench_classes.hpp");
    std::fs::write(&path, header).unwrap();
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
