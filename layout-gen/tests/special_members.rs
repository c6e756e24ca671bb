//! Which classes the runtime may construct and destroy: deleted and inaccessible special members.

use layout_gen::{Request, Selection};

#[test]
fn deleted_and_private_special_members_rule_out_dummies() {
    let dir = tempfile::tempdir().unwrap();
    let header = dir.path().join("special.hpp");
    std::fs::write(
        &header,
        "namespace sm {\n\
         struct NoDefault { NoDefault() = delete; NoDefault(int) {} virtual ~NoDefault() {} int a; };\n\
         struct NoDestructor { ~NoDestructor() = delete; int b; };\n\
         struct PrivateDestructor { private: ~PrivateDestructor() {} int c; };\n\
         struct Defaulted { Defaulted() = default; virtual ~Defaulted() = default; int d; };\n\
         struct Implicit { virtual void f() {} int e; };\n\
         }\n",
    )
    .unwrap();
    let model = layout_gen::analyze(&Request {
        headers: vec![header],
        clang_args: vec![],
        selection: Selection {
            namespaces: vec!["sm".into()],
            ..Selection::default()
        },
    })
    .unwrap();
    let flags = |name: &str| {
        let class = model
            .classes
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("{name} analysed"));
        (class.has_dummy_constructor, class.is_destructible)
    };
    assert_eq!(flags("sm::NoDefault"), (false, true));
    assert_eq!(flags("sm::NoDestructor"), (false, false));
    assert_eq!(flags("sm::PrivateDestructor"), (false, false));
    assert_eq!(flags("sm::Defaulted"), (true, true));
    assert_eq!(flags("sm::Implicit"), (true, true));
}
