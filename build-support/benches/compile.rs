//! Compiling a module's translation units in parallel, against the same build one unit at a
//! time (the baseline, measured in the same run): the example's module (two sources and the
//! shim) and a generated module of 40 sources. Every iteration builds from an empty folder.
//!
//! Run with `cargo bench -p build-support --bench compile`.
#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use build_support::{Module, Recipe};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

const SOURCES: usize = 40;

/// A module of `SOURCES` translation units, each with a little real C++ in it.
fn forty_file_module(dir: &Path) -> Module {
    // Standard-library members are not laid out yet (issue 15): they live in the sources.
    let mut header = String::from("#pragma once\nnamespace many {\n");
    for i in 0..SOURCES {
        let _ = writeln!(
            header,
            "struct Part{i} {{ virtual ~Part{i}(); virtual int work(int) const; int values[4] = {{}}; const char* label = \"\"; }};"
        );
    }
    header.push_str("}\n");
    std::fs::write(dir.join("many.hpp"), header).unwrap();
    let mut module = Module::new("many");
    module
        .header(dir.join("many.hpp"))
        .include(dir)
        .std("c++17")
        .namespace("many");
    for i in 0..SOURCES {
        let source = dir.join(format!("part{i}.cpp"));
        std::fs::write(
            &source,
            format!(
                "#include \"many.hpp\"\n#include <algorithm>\n#include <map>\n#include <string>\n#include <vector>\nnamespace many {{\n\
                 Part{i}::~Part{i}() {{}}\n\
                 int Part{i}::work(int x) const {{\n\
                 std::map<int, std::string> seen;\n\
                 for (int v : values) seen[v] = label;\n\
                 std::vector<int> sorted(values, values + 4);\n\
                 std::sort(sorted.begin(), sorted.end());\n\
                 return x + {i} + static_cast<int>(seen.size() + sorted.size());\n}}\n}}\n"
            ),
        )
        .unwrap();
        module.source(source);
    }
    module
}

/// The example project's module, as its build.rs describes it.
fn example_module() -> Module {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../example-project/module");
    let mut module = Module::new("world");
    module
        .header(root.join("world.hpp"))
        .source(root.join("world.cpp"))
        .source(root.join("behaviour.cpp"))
        .include(&root)
        .std("c++17")
        .annotated();
    module
}

/// `module`'s recipe, as a build script on this machine would have it.
fn recipe_of(mut module: Module, out: &Path) -> Recipe {
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    module.out_dir(out);
    module
        .cc_build()
        .target(&target)
        .host(&target)
        .opt_level(0)
        .debug(false);
    module.recipe().unwrap()
}

fn bench_module(c: &mut Criterion, group_name: &str, recipe: Recipe, out: PathBuf) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut group = c.benchmark_group(group_name);
    group.sample_size(10);
    for (label, jobs) in [("baseline_one_at_a_time", 1), ("parallel_all_cores", cores)] {
        let recipe = Recipe {
            jobs: Some(jobs),
            ..recipe.clone()
        };
        group.bench_function(label, |b| {
            b.iter_batched(
                || {
                    let _ = std::fs::remove_dir_all(&out);
                },
                |()| recipe.build(&out).unwrap(),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn compile(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let sources = dir.path().join("src");
    std::fs::create_dir_all(&sources).unwrap();
    let many = recipe_of(forty_file_module(&sources), &dir.path().join("many-out"));
    let example = recipe_of(example_module(), &dir.path().join("example-out"));
    bench_module(
        c,
        "build_example_module",
        example,
        dir.path().join("example-out"),
    );
    bench_module(c, "build_40_file_module", many, dir.path().join("many-out"));
}

criterion_group!(benches, compile);
criterion_main!(benches);
