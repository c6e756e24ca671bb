//! Bad input gets a typed error that names the culprit, and writes nothing.

use std::path::{Path, PathBuf};

use layout_gen::{Error, Request, Selection};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shapes.hpp")
}

fn select(headers: Vec<PathBuf>, classes: &[&str]) -> Request {
    Request {
        headers,
        clang_args: vec![],
        selection: Selection {
            classes: classes.iter().map(|c| c.to_string()).collect(),
            ..Selection::default()
        },
    }
}

#[test]
fn missing_header_is_named() {
    let missing = PathBuf::from("does/not/exist.hpp");
    let error = layout_gen::analyze(&select(vec![missing.clone()], &[])).unwrap_err();
    assert!(
        matches!(&error, Error::HeaderNotFound { path } if *path == missing),
        "{error:?}"
    );
    assert!(error.to_string().contains("does/not/exist.hpp"));
}

#[test]
fn syntax_error_gives_file_line_and_column_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let header = dir.path().join("broken.hpp");
    std::fs::write(
        &header,
        "struct Fine { int a; };\nstruct Broken { int b }\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let error = layout_gen::generate(&select(vec![header.clone()], &["Fine"]), &out).unwrap_err();
    let Error::Diagnostics { diagnostics } = &error else {
        panic!("expected diagnostics, got {error:?}")
    };
    let expected_position = format!("{}:2:", header.canonicalize().unwrap().display());
    assert!(
        diagnostics
            .iter()
            .any(|d| d.position.starts_with(&expected_position)
                && d.message.contains("expected ';'")),
        "{diagnostics:?}"
    );
    assert!(error.to_string().contains("broken.hpp:2:"), "{error}");
    assert!(!out.exists(), "nothing may be written on failure");
}

#[test]
fn unknown_class_is_named() {
    let error = layout_gen::analyze(&select(vec![fixture()], &["fx::Nope"])).unwrap_err();
    assert!(
        matches!(&error, Error::ClassNotFound { name, .. } if name == "fx::Nope"),
        "{error:?}"
    );
    assert!(error.to_string().contains("fx::Nope"));
}

#[test]
fn uninstantiated_template_is_named() {
    let error = layout_gen::analyze(&select(vec![fixture()], &["game::Pool"])).unwrap_err();
    assert!(
        matches!(&error, Error::UninstantiatedTemplate { name } if name == "game::Pool"),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("game::Pool<int>"),
        "the message suggests an instantiation: {error}"
    );
}

#[test]
fn incomplete_class_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let header = dir.path().join("forward.hpp");
    std::fs::write(&header, "namespace ns { struct Later; }\n").unwrap();
    let error = layout_gen::analyze(&select(vec![header], &["ns::Later"])).unwrap_err();
    assert!(
        matches!(&error, Error::IncompleteType { class, .. } if class == "ns::Later"),
        "{error:?}"
    );
}

#[test]
fn dependent_bases_of_templates_are_laid_out_and_unresolvable_ones_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let header = dir.path().join("dependent.hpp");
    std::fs::write(
        &header,
        "template <class T> struct B { virtual ~B() {} T t; };\n\
         template <class T> struct D : B<T> { int d = 0; };\n\
         struct Other { virtual ~Other() {} long o = 0; using type = int; };\n\
         template <class T, class U> struct Two : B<T>, B<U>, Other { int two = 0; };\n\
         template <int N> struct Sized : B<char[N]> { int s = N; };\n\
         template <class T> struct Nested : B<typename T::type> { int n = 0; };\n\
         template <class... Ts> struct PackBase { virtual ~PackBase() {} int n = sizeof...(Ts); };\n\
         template <class... Ts> struct Pack : PackBase<Ts...> { int p = 0; };\n",
    )
    .unwrap();
    let model = layout_gen::analyze(&select(
        vec![header.clone()],
        &["D<int>", "Two<int, double>"],
    ))
    .unwrap();
    let d = &model.classes[0];
    assert_eq!((d.name.as_str(), d.size), ("D<int>", 16));
    assert_eq!(model.classes[1].size, 56); // g++: sizeof(Two<int, double>) == 56, B<double> at 16, Other at 32
    assert_eq!(d.bases.len(), 1);
    assert_eq!((&*d.bases[0].name, d.bases[0].offset), ("B<int>", 0));
    let two = &model.classes[1];
    let bases: Vec<(&str, u64)> = two.bases.iter().map(|b| (&*b.name, b.offset)).collect();
    assert_eq!(bases, [("B<int>", 0), ("B<double>", 16), ("Other", 32)]);
    assert_eq!(two.vptr_offsets, [0, 16, 32]);
    // A non-type template parameter is substituted by its value.
    let sized = layout_gen::analyze(&select(vec![header.clone()], &["Sized<4>"])).unwrap();
    let bases: Vec<&str> = sized.classes[0].bases.iter().map(|b| &*b.name).collect();
    assert_eq!(bases, ["B<char[4]>"]);
    assert_eq!(sized.classes[0].size, 16);
    // A parameter pack is expanded into the base's arguments.
    let pack = layout_gen::analyze(&select(vec![header.clone()], &["Pack<int, double>"])).unwrap();
    let bases: Vec<&str> = pack.classes[0].bases.iter().map(|b| &*b.name).collect();
    assert_eq!(bases, ["PackBase<int, double>"]);
    assert_eq!(pack.classes[0].vptr_offsets, [0]);
    // A base that uses a member of a parameter (`T::type`) is not spelled: refused by name.
    let error = layout_gen::analyze(&select(vec![header], &["Nested<Other>"])).unwrap_err();
    assert!(
        matches!(&error, Error::IncompleteType { class, reason } if class == "Nested<Other>" && reason.contains("B<typename T::type>")),
        "{error:?}"
    );
}

#[test]
fn empty_namespace_selection_says_so() {
    let request = Request {
        headers: vec![fixture()],
        clang_args: vec![],
        selection: Selection {
            namespaces: vec!["nowhere".into()],
            ..Selection::default()
        },
    };
    let error = layout_gen::analyze(&request).unwrap_err();
    assert!(
        matches!(&error, Error::NothingSelected(why) if why.contains("nowhere")),
        "{error:?}"
    );
}
