//! The `layout-gen` command line as a user runs it.

use std::process::Command;

#[test]
fn inspect_finds_the_rehydrate_header_without_an_include_flag() {
    let dir = tempfile::tempdir().unwrap();
    let header = dir.path().join("uses_abi.hpp");
    std::fs::write(
        &header,
        "#include \"rehydrate/module_abi.h\"\n\
         namespace t { struct REHYDRATE_RELOADABLE A { virtual ~A(); int x; }; }\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_layout-gen"))
        .arg("inspect")
        .arg(&header)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("t::A") && stdout.contains("int x"),
        "{stdout}"
    );
}
