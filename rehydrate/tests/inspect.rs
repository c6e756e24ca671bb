//! `rehydrate inspect` on a real module (a hand-written descriptor compiled by g++, so no
//! generator is needed): text, `--class`, `--json` as the README documents it, and clear
//! errors for a missing module or class.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Two classes: `tm::D` (a base, a default constructor) and `tm::E` (only `E(int)`, defined
/// out of line and kept by a factory).
const MODULE: &str = r#"
#include <new>
#include "rehydrate/module_abi.h"
namespace tm {
struct B { virtual ~B() {} long b = 1; };
struct D : B { long d = 2; };
struct E { explicit E(int v); virtual ~E(); virtual int value() const; int v; };
E::E(int v) : v(v) {}
E::~E() = default;
int E::value() const { return v; }
}
extern "C" tm::E* make_e(int v) { return new tm::E(v); }
static int32_t construct_d(void* place, char*, size_t) { ::new (place) tm::D; return 0; }
static int32_t destroy_d(void* object, char*, size_t) { static_cast<tm::D*>(object)->~D(); return 0; }
static int32_t destroy_e(void* object, char*, size_t) { static_cast<tm::E*>(object)->~E(); return 0; }
static int32_t measure_d(const void* object, uint64_t* offsets) {
    auto* d = static_cast<const tm::D*>(object);
    offsets[0] = reinterpret_cast<const char*>(static_cast<const tm::B*>(d)) - reinterpret_cast<const char*>(d);
    return 0;
}
static const rehydrate_base_desc bases_d[] = {{"tm::B", 0, 0, 0}};
static const rehydrate_field_desc fields_d[] = {
    {"b", "tm::B", "long", 8, 8, UINT64_MAX, 0, 0}, {"d", "tm::D", "long", 16, 8, UINT64_MAX, 0, 0}};
static const rehydrate_field_desc fields_e[] = {{"v", "tm::E", "int", 8, 4, UINT64_MAX, 0, 0}};
static const uint64_t vptrs[] = {0};
static const rehydrate_class_desc classes[] = {
    {"tm::D", "N2tm1DE", sizeof(tm::D), alignof(tm::D), 0, 1, bases_d, 2, fields_d, 1, vptrs,
     &construct_d, &destroy_d, &measure_d},
    {"tm::E", "N2tm1EE", sizeof(tm::E), alignof(tm::E), 0, 0, nullptr, 1, fields_e, 1, vptrs,
     nullptr, &destroy_e, nullptr}};
static int32_t attach(const rehydrate_host_api*) { return 0; }
static const rehydrate_module_desc desc = {REHYDRATE_ABI_VERSION, 0, 2, classes, &attach};
extern "C" const rehydrate_module_desc* rehydrate_module_descriptor(void) { return &desc; }
"#;

fn module(dir: &Path) -> PathBuf {
    let source = dir.join("inspected.cpp");
    std::fs::write(&source, MODULE).unwrap();
    let library = dir.join("libinspected.so");
    let out = Command::new("g++")
        .args(["-std=c++17", "-O2", "-fPIC", "-shared", "-fno-gnu-unique"])
        .arg(format!("-I{}", rehydrate::include_dir().display()))
        .arg(&source)
        .arg("-o")
        .arg(&library)
        .output()
        .expect("g++ runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    library
}

fn inspect(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rehydrate"))
        .arg("inspect")
        .args(args)
        .output()
        .expect("the inspector runs")
}

#[test]
fn inspect_prints_what_each_source_said() {
    let dir = tempfile::tempdir().unwrap();
    let library = module(dir.path());
    let path = library.to_str().unwrap();

    let out = inspect(&[path, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["module"], path);
    let classes = report["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 2);
    let (d, e) = (&classes[0], &classes[1]);
    assert_eq!(d["class"], "tm::D");
    assert_eq!(d["table_vptr_slots"], serde_json::json!([0]));
    assert_eq!(d["analysis"]["status"], "found");
    let d_words = &d["analysis"]["words"];
    assert_eq!(d_words[0]["offset"], 0);
    assert_eq!(d_words[0]["vtable"], "_ZTVN2tm1DE");
    assert_eq!(d_words[0]["address_point"], 16);
    assert_eq!(d_words[0]["holds"], "vtable for tm::D+0x10");
    assert_eq!(d["probe"]["status"], "ok");
    assert_eq!(d["probe"]["words"], *d_words);
    assert_eq!(d["agree"], true);
    assert_eq!(d["image_source"], "analysis");
    assert!(d["no_image"].is_null());

    assert_eq!(e["class"], "tm::E");
    assert!(e["probe"].is_null(), "no default constructor: not probed");
    assert_eq!(e["analysis"]["status"], "found");
    assert_eq!(
        e["analysis"]["constructor"],
        "tm::E::E(int) (complete-object constructor)"
    );
    assert_eq!(e["analysis"]["words"][0]["vtable"], "_ZTVN2tm1EE");
    assert_eq!(e["image_source"], "analysis");

    let text = inspect(&[path, "--class", "tm::E"]);
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.starts_with("tm::E (16 bytes)\n  table vptr slots: 0\n"),
        "{text}"
    );
    assert!(text.contains("       0: vtable for tm::E+0x10\n"), "{text}");
    assert!(
        text.contains("  probe: not run (no usable default constructor)\n"),
        "{text}"
    );
    assert!(
        text.contains("  agree: yes (the runtime uses the analysis's image)\n"),
        "{text}"
    );
    assert!(!text.contains("tm::D"), "{text}");
}

#[test]
fn inspect_names_what_it_cannot_find() {
    let dir = tempfile::tempdir().unwrap();
    let library = module(dir.path());
    let out = inspect(&[library.to_str().unwrap(), "--class", "tm::Nope"]);
    assert!(!out.status.success());
    let message = String::from_utf8(out.stderr).unwrap();
    assert!(message.contains("describes no class tm::Nope"), "{message}");

    let missing = dir.path().join("libmissing.so");
    let out = inspect(&[missing.to_str().unwrap()]);
    assert!(!out.status.success());
    let message = String::from_utf8(out.stderr).unwrap();
    assert!(message.contains("libmissing.so"), "{message}");
}
