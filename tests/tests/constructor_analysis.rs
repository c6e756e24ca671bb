//! The static constructor analysis against the other sources, on real modules: for every class
//! of the analysis fixture, built by g++ and clang++ at -O0, -O2, -O3 and -O2
//! -march=x86-64-v3, each with default visibility, hidden visibility and -Bsymbolic, the
//! analysis must find an image, its vptr offsets must be the table's and clang's own record
//! layout's, each vptr must point at the vtable of the class (or of the base whose subobject it
//! is), and for classes with a default constructor it must equal the probe's, word for word.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use integration_tests::record_layouts::{parse_dump, vptr_offsets};
use integration_tests::{
    clangxx, compilers, ModuleBuild, ANALYSIS, ANALYSIS_CLASSES,
    ANALYSIS_WITHOUT_DEFAULT_CONSTRUCTOR,
};
use rehydrate::analysis::Analysis;
use rehydrate::{ProbePolicy, Runtime};

/// Optimisation and linkage variants: every optimisation level with default visibility,
/// hidden visibility (vtables then come from `lea`, not the GOT) and `-Bsymbolic`.
const VARIANTS: [(&str, &[&str]); 12] = [
    ("-O0", &[]),
    ("-O0", &["-fvisibility=hidden"]),
    ("-O0", &["-Wl,-Bsymbolic"]),
    ("-O2", &[]),
    ("-O2", &["-fvisibility=hidden"]),
    ("-O2", &["-Wl,-Bsymbolic"]),
    ("-O3", &[]),
    ("-O3", &["-fvisibility=hidden"]),
    ("-O3", &["-Wl,-Bsymbolic"]),
    ("-O2", &["-march=x86-64-v3"]),
    ("-O2", &["-march=x86-64-v3", "-fvisibility=hidden"]),
    ("-O2", &["-march=x86-64-v3", "-Wl,-Bsymbolic"]),
];

fn modules_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("analysis-modules");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture_header() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/analysis/analysis.hpp")
}

/// The vptr offsets of every class, as clang's `-fdump-record-layouts` prints them.
fn clang_vptr_offsets() -> BTreeMap<String, Vec<usize>> {
    let dir = modules_dir();
    let source = dir.join("dump.cpp");
    let mut text = format!("#include \"{}\"\n", fixture_header().display());
    for (k, class) in ANALYSIS_CLASSES.iter().enumerate() {
        // a use of each class, so clang lays it out
        text.push_str(&format!("unsigned long size_{k} = sizeof({class});\n"));
    }
    std::fs::write(&source, text).unwrap();
    let out = Command::new(clangxx().program)
        .args([
            "-std=c++17",
            "-fsyntax-only",
            "-Xclang",
            "-fdump-record-layouts",
        ])
        .arg(&source)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dumps = parse_dump(&String::from_utf8_lossy(&out.stdout));
    ANALYSIS_CLASSES
        .iter()
        .map(|class| {
            let vptrs = vptr_offsets(&dumps, class)
                .unwrap_or_else(|| panic!("clang dumped no layout of {class}"));
            (
                class.to_string(),
                vptrs.into_iter().map(|v| v as usize).collect(),
            )
        })
        .collect()
}

#[test]
fn the_analysis_agrees_with_the_probe_the_table_and_clang_for_every_build() {
    let clang = clang_vptr_offsets();
    let dir = modules_dir();
    let mut problems = Vec::new();
    let mut checked = 0;
    for compiler in compilers() {
        for (optimisation, flags) in VARIANTS {
            let library = ModuleBuild {
                flags,
                ..ModuleBuild::of(&ANALYSIS, compiler.clone(), optimisation, 1)
            }
            .build(&dir);
            let runtime = Runtime::load_with(&library, ProbePolicy::Always).unwrap();
            let inspections = runtime.inspect();
            assert_eq!(inspections.len(), ANALYSIS_CLASSES.len());
            for inspection in inspections {
                let class = inspection.class.as_str();
                let label = format!("{} {optimisation} {flags:?} {class}", compiler.name);
                checked += 1;
                let Analysis::Found(reading) = &inspection.analysis else {
                    problems.push(format!(
                        "{label}: the analysis gave up: {:?}",
                        inspection.analysis
                    ));
                    continue;
                };
                // every function interpreted is named (a PLT stub is not listed: the function
                // it jumps to is)
                let names = &inspection.names;
                let unnamed: Vec<_> = reading
                    .followed(names)
                    .filter(|f| f.starts_with("0x"))
                    .collect();
                if !unnamed.is_empty() {
                    problems.push(format!(
                        "{label}: functions followed without a name: {unnamed:?}"
                    ));
                }
                let words = reading.words(names);
                let vptrs: Vec<usize> = words
                    .iter()
                    .filter(|w| names.vtable(w).is_some())
                    .map(|w| w.offset)
                    .collect();
                if vptrs != inspection.table_vptr_slots {
                    problems.push(format!(
                        "{label}: analysis vptrs {vptrs:?}, table {:?}",
                        inspection.table_vptr_slots
                    ));
                }
                match clang.get(class) {
                    Some(expected) if *expected == vptrs => {}
                    other => problems.push(format!(
                        "{label}: analysis vptrs {vptrs:?}, clang's layout {other:?}"
                    )),
                }
                // the primary vptr of a dynamic class points into its own vtable group
                if let Some(first) = words
                    .iter()
                    .find(|w| w.offset == 0 && names.vtable(w).is_some())
                {
                    let own = format!("vtable for {class}+");
                    if !names.holds(first).starts_with(&own) {
                        problems.push(format!(
                            "{label}: the vptr at 0 holds {}, not {own}..",
                            names.holds(first)
                        ));
                    }
                }
                for word in words.iter().filter(|w| names.vtable(w).is_some()) {
                    if !names.holds(word).starts_with("vtable for an::") {
                        problems.push(format!(
                            "{label}: offset {} holds {}",
                            word.offset,
                            names.holds(word)
                        ));
                    }
                }
                let constructible = !ANALYSIS_WITHOUT_DEFAULT_CONSTRUCTOR.contains(&class);
                match (&inspection.probe, constructible) {
                    (Some(Ok(probed)), true) => {
                        if *probed != words {
                            problems.push(format!("{label}: analysis {words:?}, probe {probed:?}"));
                        }
                    }
                    (None, false) => {}
                    (probe, _) => {
                        problems.push(format!("{label}: unexpected probe result {probe:?}"))
                    }
                }
                if !inspection.agrees() || inspection.image_source != Ok("analysis") {
                    problems.push(format!(
                        "{label}: sources disagree or the image is not the analysis's: {:?} {:?}",
                        inspection.disagreements, inspection.image_source
                    ));
                }
            }
        }
    }
    assert_eq!(checked, 2 * VARIANTS.len() * ANALYSIS_CLASSES.len());
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
