//! layout-gen's decision whether a class can be default-constructed (`new (p) T`) and destroyed
//! from unrelated code, for a corpus of special-member situations, equals what
//! `std::is_default_constructible` and `std::is_destructible` say with g++ and with clang++.
//! (The shim's `static_assert`s would otherwise be the first to find a disagreement, failing the
//! user's build.)

use std::path::Path;

use integration_tests::{compilers, run};

#[test]
fn layout_gen_agrees_with_both_compilers_type_traits() {
    let header = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/special/special.hpp");
    let model = layout_gen::analyze(&layout_gen::Request {
        headers: vec![header.clone()],
        clang_args: vec!["-std=c++17".into()],
        selection: layout_gen::Selection {
            namespaces: vec!["sp".into()],
            ..Default::default()
        },
    })
    .expect("the corpus analyses");
    assert!(model.skipped.is_empty(), "{:?}", model.skipped);
    assert!(model.classes.len() >= 30, "{} classes", model.classes.len());
    let dir = tempfile::tempdir().unwrap();
    let driver = dir.path().join("traits.cpp");
    let mut program = format!(
        "#include <cstdio>\n#include <type_traits>\n#include \"{}\"\nint main() {{\n",
        header.display()
    );
    for class in &model.classes {
        program.push_str(&format!(
            "    std::printf(\"%d %d\\n\", (int)std::is_default_constructible<{0}>::value, (int)std::is_destructible<{0}>::value);\n",
            class.name
        ));
    }
    program.push_str("}\n");
    std::fs::write(&driver, program).unwrap();
    for compiler in compilers() {
        let exe = dir
            .path()
            .join(format!("traits-{}", compiler.name.replace('+', "x")));
        // `-w`: the corpus is odd on purpose (a defaulted constructor that is deleted, ...).
        compiler.compile(&[&driver], &exe, &["-std=c++17", "-w"]);
        let printed = run(&exe);
        let mut disagreements = Vec::new();
        for (class, line) in model.classes.iter().zip(printed.lines()) {
            let compiler_says = line == "1 1" || line == "1 0";
            let destructible = line.ends_with(" 1");
            if (class.has_dummy_constructor, class.is_destructible) != (compiler_says, destructible)
            {
                disagreements.push(format!(
                    "{}: layout-gen (default-constructible {}, destructible {}), {} ({line})",
                    class.name, class.has_dummy_constructor, class.is_destructible, compiler.name
                ));
            }
        }
        assert_eq!(printed.lines().count(), model.classes.len());
        assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    }
}
