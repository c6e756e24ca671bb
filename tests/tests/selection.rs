//! Selection never produces a shim that does not compile: classes generated code cannot name
//! (anonymous namespaces, private and protected member classes) and classes that cannot be laid
//! out are left out with the reason when selected by namespace, and refused by name; members
//! whose types cannot be laid out are kept as opaque fields. The shim of what is left compiles
//! warning-free with g++ and clang++.

use std::path::{Path, PathBuf};

use integration_tests::compilers;

fn header() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/selection/selection.hpp")
}

fn request(namespaces: &[&str], classes: &[&str]) -> layout_gen::Request {
    layout_gen::Request {
        headers: vec![header()],
        clang_args: vec!["-std=c++17".into()],
        selection: layout_gen::Selection {
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            classes: classes.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        },
    }
}

#[test]
fn left_out_classes_are_named_with_the_reason_and_the_shim_compiles() {
    let dir = tempfile::tempdir().unwrap();
    let generated = layout_gen::generate(&request(&["sel"], &[]), dir.path()).unwrap();
    let model = &generated.model;
    let kept: Vec<&str> = model.classes.iter().map(|c| c.name.as_str()).collect();
    for class in ["sel::Node", "sel::Document", "sel::HoldsTemplates"] {
        assert!(kept.contains(&class), "{class} kept: {kept:?}");
    }
    let reason = |class: &str| {
        model
            .skipped
            .iter()
            .find(|s| s.name == class)
            .map(|s| s.reason.clone())
            .unwrap_or_else(|| panic!("{class} is not listed as left out: {:?}", model.skipped))
    };
    assert!(reason("sel::Document::DepthTracker").contains("private member class of `Document`"));
    assert!(reason("sel::Document::Cursor").contains("protected member class"));
    assert!(reason("sel::(anonymous namespace)::Internal").contains("anonymous namespace"));
    assert!(reason("sel::FromVector").contains("std::vector<int>"));

    let document = model
        .classes
        .iter()
        .find(|c| c.name == "sel::Document")
        .unwrap();
    assert!(
        document.has_dummy_constructor && document.is_destructible,
        "a protected base destructor is fine"
    );
    let holds = model
        .classes
        .iter()
        .find(|c| c.name == "sel::HoldsTemplates")
        .unwrap();
    let derived = holds.fields.iter().find(|f| &*f.name == "derived").unwrap();
    assert!(
        derived.opaque,
        "Derived<int>'s dependent base hides its layout"
    );
    assert_eq!((derived.offset, derived.size), (0, 16));
    assert!(
        holds.vptr_offsets.contains(&0),
        "the vptr its declarations show: {:?}",
        holds.vptr_offsets
    );
    let after = holds.fields.iter().find(|f| &*f.name == "after").unwrap();
    assert_eq!(
        after.offset, 64,
        "clang's offsets for the members after the opaque ones"
    );

    let include = format!("-I{}", rehydrate::include_dir().display());
    let fixture = format!("-I{}", header().parent().unwrap().display());
    for compiler in compilers() {
        let object = dir
            .path()
            .join(format!("shim-{}.o", compiler.name.replace('+', "x")));
        compiler.compile(
            &[&generated.cpp_shim],
            &object,
            &["-std=c++17", "-c", "-Wall", "-Wextra", &include, &fixture],
        );
    }
}

#[test]
fn a_class_named_in_the_request_that_cannot_be_described_fails_with_the_reason() {
    for (class, expected) in [
        ("sel::FromVector", "std::vector<int>"),
        ("sel::Derived<int>", "depends on a template parameter"),
    ] {
        let error = layout_gen::analyze(&request(&[], &[class])).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(class) || message.contains(expected),
            "{class}: {message}"
        );
        assert!(message.contains(expected), "{class}: {message}");
    }
}
