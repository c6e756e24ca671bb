//! The module descriptor is defined twice, `#[repr(C)]` in `rehydrate::abi` and in the C header
//! the shim includes. This test compiles the header with both compilers and checks that every
//! size, alignment and offset matches the Rust view.

use std::mem::{align_of, offset_of, size_of};

use integration_tests::{compilers, run};
use rehydrate::abi::{BaseDesc, ClassDesc, ExitEntry, FieldDesc, HostApi, ModuleDesc};

/// `(C++ expression, value on the Rust side)` pairs.
fn rust_view() -> Vec<(String, usize)> {
    let mut facts = Vec::new();
    macro_rules! record {
        ($rust:ty, $c:literal, [$($field:ident),*]) => {
            facts.push((format!("sizeof({})", $c), size_of::<$rust>()));
            facts.push((format!("alignof({})", $c), align_of::<$rust>()));
            $(facts.push((format!("offsetof({}, {})", $c, stringify!($field)), offset_of!($rust, $field)));)*
        };
    }
    record!(
        FieldDesc,
        "rehydrate_field_desc",
        [name, owner, type_name, offset, size, bit_offset, bit_width, access]
    );
    record!(
        BaseDesc,
        "rehydrate_base_desc",
        [name, offset, is_virtual, reserved]
    );
    record!(
        ClassDesc,
        "rehydrate_class_desc",
        [
            name,
            type_id_name,
            size,
            align,
            layout_hash,
            base_count,
            bases,
            field_count,
            fields,
            vptr_count,
            vptr_offsets,
            construct,
            destroy,
            measure_bases
        ]
    );
    record!(
        ModuleDesc,
        "rehydrate_module_desc",
        [
            abi_version,
            reserved,
            class_count,
            classes,
            attach,
            exit_entries,
            run_exit_entry,
            adopt_exit_entry
        ]
    );
    record!(
        ExitEntry,
        "rehydrate_exit_entry",
        [function_complement, argument_complement]
    );
    record!(
        HostApi,
        "rehydrate_host_api",
        [abi_version, reserved, context, track, untrack, forwarder]
    );
    facts
}

#[test]
fn rust_and_c_views_of_the_descriptor_agree() {
    let facts = rust_view();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("abi_view.cpp");
    let mut program = String::from(
        "#include <cstdio>\n#include <cstddef>\n#include \"rehydrate/module_abi.h\"\nint main() {\n",
    );
    for (expr, _) in &facts {
        program.push_str(&format!("    std::printf(\"%zu\\n\", (size_t)({expr}));\n"));
    }
    program.push_str("    std::printf(\"%u\\n\", REHYDRATE_ABI_VERSION);\n    return 0;\n}\n");
    std::fs::write(&source, program).unwrap();
    let include = format!("-I{}", rehydrate::include_dir().display());

    for compiler in compilers() {
        let exe = dir
            .path()
            .join(format!("abi_view_{}", compiler.name.replace('+', "x")));
        compiler.compile(
            &[&source],
            &exe,
            &[&include, "-Wall", "-Wextra", "-std=c++17"],
        );
        let printed: Vec<usize> = run(&exe).lines().map(|l| l.parse().unwrap()).collect();
        for ((expr, rust_value), c_value) in facts.iter().zip(&printed) {
            assert_eq!(
                rust_value, c_value,
                "{}: {expr} differs (Rust {rust_value}, C {c_value})",
                compiler.name
            );
        }
        assert_eq!(
            printed.len(),
            facts.len() + 1,
            "{} printed too few lines",
            compiler.name
        );
        assert_eq!(
            printed[facts.len()],
            rehydrate::abi::ABI_VERSION as usize,
            "ABI version differs"
        );
    }
}
