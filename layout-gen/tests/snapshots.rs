//! Snapshots of the generated Rust tables and C++ shim for the fixture header. A change in the
//! generated code shows up as a diff; `cargo insta review` (or `INSTA_UPDATE=always`) rewrites
//! the expectations after a deliberate change. The generated code itself is compiled elsewhere:
//! the shim by `tests/tests/shim_compiles.rs`, the tables by `tests/tests/generated_tables.rs`.

use std::path::{Path, PathBuf};

use layout_gen::{Request, Selection};

fn model() -> layout_gen::LayoutModel {
    let request = Request {
        headers: vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shapes.hpp")],
        clang_args: vec![],
        selection: Selection {
            namespaces: vec!["fx".into()],
            classes: vec!["game::Pool<int>".into()],
            annotation: None,
        },
    };
    layout_gen::analyze(&request).expect("fixtures analyse")
}

#[test]
fn rust_tables() {
    insta::assert_snapshot!(layout_gen::emit::rust::tables(&model()));
}

#[test]
fn cpp_shim() {
    insta::assert_snapshot!(layout_gen::emit::cpp::shim(
        &model(),
        &[PathBuf::from("shapes.hpp")]
    ));
}

#[test]
fn inspect_text_of_a_virtual_diamond() {
    let model = model();
    let diamond = layout_gen::LayoutModel {
        classes: model
            .classes
            .into_iter()
            .filter(|c| c.name == "fx::Diamond" || c.name == "fx::Bits")
            .collect(),
        skipped: vec![],
    };
    let text = layout_gen::inspect::text(&diamond);
    // The definition's position is machine-specific; keep the file name only.
    let text = text.replace(
        &format!(
            "{}/",
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .canonicalize()
                .unwrap()
                .display()
        ),
        "",
    );
    insta::assert_snapshot!(text);
}
