//! Second oracle: the generated shim compiles warning-free with g++ and clang++ at
//! `-Wall -Wextra` (so every `static_assert` on sizes and field offsets, private members
//! included, holds for both compilers), and at run time the descriptor it exports agrees with
//! the compiler on every base offset, measured on real objects; and the tables' padding is
//! exactly the bytes a real constructor leaves untouched outside every field (the runtime's
//! probe, on the shim built as a shared library by each compiler).

use integration_tests::{compilers, run, shapes_request};
use rehydrate::image::ByteClass;

/// Walks the descriptor: constructs every constructible class in a buffer filled with a
/// sentinel, measures its bases with the compiler's casts, compares with the table, destroys it.
const DRIVER: &str = r#"
#include <cstdio>
#include <cstring>
#include <cstdint>
#include <new>
#include "rehydrate/module_abi.h"
extern "C" const rehydrate_module_desc* rehydrate_module_descriptor(void) noexcept;
int main() {
    const rehydrate_module_desc* module = rehydrate_module_descriptor();
    if (module->abi_version != REHYDRATE_ABI_VERSION) { std::printf("bad abi\n"); return 1; }
    int failures = 0;
    for (uint64_t c = 0; c < module->class_count; ++c) {
        const rehydrate_class_desc& cls = module->classes[c];
        std::printf("class %s\n", cls.name);
        if (!cls.construct) continue;
        void* place = ::operator new(cls.size, std::align_val_t(cls.align));
        std::memset(place, 0xA5, cls.size);
        char error[256] = {0};
        if (cls.construct(place, error, sizeof error) != REHYDRATE_STATUS_OK) { std::printf("construct %s: %s\n", cls.name, error); ++failures; continue; }
        std::printf("constructed %s\n", cls.name);
        if (cls.measure_bases) {
            uint64_t offsets[64];
            cls.measure_bases(place, offsets);
            for (uint64_t b = 0; b < cls.base_count; ++b) {
                if (offsets[b] != cls.bases[b].offset) {
                    std::printf("MISMATCH %s base %s: table %llu, compiler %llu\n", cls.name, cls.bases[b].name,
                                (unsigned long long)cls.bases[b].offset, (unsigned long long)offsets[b]);
                    ++failures;
                }
            }
        }
        if (cls.destroy && cls.destroy(place, error, sizeof error) != REHYDRATE_STATUS_OK) { ++failures; }
        ::operator delete(place, std::align_val_t(cls.align));
    }
    std::printf("failures %d\n", failures);
    return failures == 0 ? 0 : 1;
}
"#;

#[test]
fn shim_compiles_with_both_compilers_and_agrees_on_base_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let request = shapes_request();
    let generated = layout_gen::generate(&request, dir.path()).expect("generate");
    let driver = dir.path().join("driver.cpp");
    std::fs::write(&driver, DRIVER).unwrap();
    let include = format!("-I{}", rehydrate::include_dir().display());

    let constructible: Vec<&str> = generated
        .model
        .classes
        .iter()
        .filter(|c| c.has_dummy_constructor)
        .map(|c| c.name.as_str())
        .collect();
    assert!(constructible.contains(&"fx::Deep") && !constructible.contains(&"fx::Abstract"));

    for compiler in compilers() {
        let exe = dir
            .path()
            .join(format!("driver-{}", compiler.name.replace('+', "x")));
        compiler.compile(
            &[&generated.cpp_shim, &driver],
            &exe,
            &["-std=c++17", "-Wall", "-Wextra", "-O1", &include],
        );
        let printed = run(&exe);
        for class in &generated.model.classes {
            assert!(
                printed.contains(&format!("class {}\n", class.name)),
                "{}: descriptor lacks {}",
                compiler.name,
                class.name
            );
        }
        for name in &constructible {
            assert!(
                printed.contains(&format!("constructed {name}\n")),
                "{}: {name} was not constructed:\n{printed}",
                compiler.name
            );
        }
        assert!(
            printed.ends_with("failures 0\n"),
            "{}:\n{printed}",
            compiler.name
        );
    }
}

#[test]
fn the_tables_padding_is_what_the_compilers_constructors_leave_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let generated = layout_gen::generate(&shapes_request(), dir.path()).expect("generate");
    let include = format!("-I{}", rehydrate::include_dir().display());
    for compiler in compilers() {
        let library = dir
            .path()
            .join(format!("libshapes-{}.so", compiler.name.replace('+', "x")));
        let mut args = vec!["-std=c++17", "-O1", "-fPIC", "-shared", &include];
        if compiler.name == "g++" {
            args.push("-fno-gnu-unique");
        }
        compiler.compile(&[&generated.cpp_shim], &library, &args);
        let runtime = rehydrate::Runtime::load(&library).unwrap();
        let mut checked = 0;
        for class in generated
            .model
            .classes
            .iter()
            .filter(|c| c.has_dummy_constructor)
        {
            let image = runtime.class_image(&class.name).unwrap();
            let untouched: Vec<u64> = (0..class.size)
                .filter(|&b| image.byte_map()[b as usize] == ByteClass::Padding)
                .collect();
            let padding: Vec<u64> = class.padding.iter().flat_map(|r| r.start..r.end).collect();
            assert_eq!(
                padding, untouched,
                "{}: {}'s table padding (left) is not what its constructor leaves untouched (right)",
                compiler.name, class.name
            );
            let written: Vec<u64> = (0..class.size)
                .filter(|&b| image.byte_map()[b as usize] == ByteClass::Implicit)
                .collect();
            let vptrs: Vec<u64> = class.vptr_offsets.iter().flat_map(|&v| v..v + 8).collect();
            assert_eq!(
                vptrs, written,
                "{}: {}'s vptr bytes",
                compiler.name, class.name
            );
            checked += 1;
        }
        assert!(
            checked >= 10,
            "{}: only {checked} classes checked",
            compiler.name
        );
    }
}
