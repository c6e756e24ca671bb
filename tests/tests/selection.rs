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
    for class in [
        "sel::Node",
        "sel::Document",
        "sel::HoldsTemplates",
        "sel::FromVector",
        "sel::Enemy",
    ] {
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
    assert!(
        reason("sel::FromNested").contains("Nested<sel::WithType>"),
        "{}",
        reason("sel::FromNested")
    );

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
    let field = |name: &str| holds.fields.iter().find(|f| &*f.name == name).unwrap();
    let derived = field("derived");
    assert!(!derived.opaque, "Derived<int>'s dependent base is resolved");
    assert_eq!((derived.offset, derived.size), (0, 16));
    let through_member = field("through_member");
    assert!(
        through_member.opaque,
        "Nested<WithType>'s base is spelled through T::type"
    );
    assert_eq!((through_member.offset, through_member.size), (16, 24));
    let sized = field("sized");
    assert!(
        !sized.opaque,
        "Sized<4>'s base depends on a non-type parameter, resolved"
    );
    assert_eq!(sized.offset, 40);
    assert_eq!(
        holds.vptr_offsets,
        [0, 16, 40],
        "Base<T> is dynamic in all three"
    );
    assert_eq!(
        field("after").offset,
        104,
        "clang's offsets after the opaque member"
    );

    let include = format!("-I{}", rehydrate::include_dir().display());
    let fixture = format!("-I{}", header().parent().unwrap().display());
    for compiler in compilers() {
        let library = dir.path().join(format!(
            "libselection-{}.so",
            compiler.name.replace('+', "x")
        ));
        let mut args = vec![
            "-std=c++17",
            "-fPIC",
            "-shared",
            "-Wall",
            "-Wextra",
            &include,
            &fixture,
        ];
        if compiler.name == "g++" {
            args.push("-fno-gnu-unique");
        }
        compiler.compile(&[&generated.cpp_shim], &library, &args);
        // The probe measures every base offset on a real object and compares it with the
        // table (a resolved dependent base and a standard-library base among them).
        let runtime = rehydrate::Runtime::load(&library).unwrap();
        let unreloadable: Vec<String> = runtime
            .unreloadable_classes()
            .into_iter()
            .map(|c| format!("{}: {}", c.class, c.reason))
            .collect();
        assert!(
            unreloadable
                .iter()
                .all(|c| c.starts_with("sel::Node:") || c.starts_with("sel::Enemy:")),
            "{}: {unreloadable:?}",
            compiler.name
        );
    }
}

#[test]
fn a_class_named_in_the_request_that_cannot_be_described_fails_with_the_reason() {
    for (class, expected) in [
        ("sel::FromNested", "Nested<sel::WithType>"),
        (
            "sel::Nested<sel::WithType>",
            "depends on a template parameter",
        ),
    ] {
        let error = layout_gen::analyze(&request(&[], &[class])).unwrap_err();
        let message = error.to_string();
        assert!(message.contains(expected), "{class}: {message}");
    }
}
