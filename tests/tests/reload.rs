//! Reloads with real modules built by g++ and clang++ at -O0 and -O2.
//!
//! Objects are created both by the host and by the module's own C++ code, in every fixture
//! shape. After each reload: virtual calls through every base return the new build's values,
//! `typeid` and `dynamic_cast` work, every byte other than the compiler-written ones is
//! unchanged, every vptr slot of every live object points into the new build's mapping, and the
//! old build's mapping is gone from `/proc/self/maps` (a new build is often mapped at the old
//! address, so the last two checks are what make the test meaningful).

use std::ffi::{c_char, c_void, CString};
use std::path::{Path, PathBuf};

use integration_tests::{
    assert_vptrs_in_current_build, clangxx, gxx, object_bytes, tiny_library, Compiler, ModuleBuild,
    ObjectBytes, RELOAD_CLASSES,
};
use rehydrate::image::ByteClass;
use rehydrate::{CppOperation, Error, LiveObject, Runtime};

type CheckFn = unsafe extern "C" fn(*const c_char, *mut c_void) -> i32;
type MakeFn = unsafe extern "C" fn(*const c_char) -> *mut c_void;
type DestroyFn = unsafe extern "C" fn(*const c_char, *mut c_void);
type SetFieldsFn = unsafe extern "C" fn(*const c_char, *mut c_void, i32);
type VersionFn = unsafe extern "C" fn() -> i32;

fn modules_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("reload-modules");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Host-created and module-created objects of every fixture class, with distinct field values.
struct World {
    host: Vec<LiveObject>,
    module_made: Vec<(CString, usize)>,
}

fn populate(runtime: &Runtime) -> World {
    let mut host = Vec::new();
    let mut module_made = Vec::new();
    // SAFETY: the fixture exports these functions with these signatures.
    let make = unsafe { runtime.symbol::<MakeFn>("rl_make") }.unwrap();
    for class in RELOAD_CLASSES {
        let name = CString::new(class).unwrap();
        for _ in 0..2 {
            host.push(runtime.create(class).unwrap());
            // SAFETY: a fixture class name; the module tracks what it returns.
            let object = unsafe { make(name.as_ptr()) };
            assert!(!object.is_null());
            module_made.push((name.clone(), object as usize));
        }
    }
    // SAFETY: as above.
    let set_fields = unsafe { runtime.symbol::<SetFieldsFn>("rl_set_fields") }.unwrap();
    for (index, (class, address)) in runtime.live_object_addresses().into_iter().enumerate() {
        let class = CString::new(&*class).unwrap();
        // SAFETY: a live object of that class.
        unsafe {
            set_fields(
                class.as_ptr(),
                address as *mut c_void,
                1000 + 10 * index as i32,
            )
        };
    }
    assert_eq!(runtime.live_objects(), RELOAD_CLASSES.len() * 4);
    World { host, module_made }
}

fn destroy(runtime: &Runtime, world: World) {
    // SAFETY: the fixture's destroy function; each module-made object is destroyed once.
    let destroy = unsafe { runtime.symbol::<DestroyFn>("rl_destroy") }.unwrap();
    for (class, address) in &world.module_made {
        // SAFETY: as above.
        unsafe { destroy(class.as_ptr(), *address as *mut c_void) };
    }
    drop(world.host);
    assert_eq!(
        runtime.live_objects(),
        0,
        "every object unregistered itself"
    );
}

/// Every live object behaves as build `version` says, through every base.
fn check_behaviour(runtime: &Runtime, version: i32) {
    // SAFETY: the fixture exports these functions with these signatures.
    let (check, current) = unsafe {
        (
            runtime.symbol::<CheckFn>("rl_check").unwrap(),
            runtime.symbol::<VersionFn>("rl_version").unwrap(),
        )
    };
    // SAFETY: takes nothing.
    assert_eq!(unsafe { current() }, version);
    for (class, address) in runtime.live_object_addresses() {
        let name = CString::new(&*class).unwrap();
        // SAFETY: a live object of that class.
        let code = unsafe { check(name.as_ptr(), address as *mut c_void) };
        assert_eq!(
            code, 0,
            "{class} at {address:#x} misbehaves under build {version} (code {code})"
        );
    }
}

/// Every live object has vptr slots, and each points into the current build's mapping.
fn check_vptrs(runtime: &Runtime) {
    for (class, _) in runtime.live_object_addresses() {
        let offsets = runtime
            .vptr_offsets(&class)
            .unwrap_or_else(|e| panic!("{class}: {e}"));
        assert!(!offsets.is_empty(), "{class}");
    }
    assert_vptrs_in_current_build(runtime);
}

/// Every byte that is not compiler-written is as it was before.
fn check_state_kept(runtime: &Runtime, before: &[ObjectBytes]) {
    for (class, address, bytes) in before {
        let image = runtime.class_image(class).unwrap();
        let map = image.byte_map();
        // SAFETY: a live object of `bytes.len()` bytes.
        let now = unsafe { std::slice::from_raw_parts(*address as *const u8, bytes.len()) };
        for (offset, kind) in map.iter().enumerate() {
            if *kind != ByteClass::Implicit {
                assert_eq!(
                    now[offset], bytes[offset],
                    "{class} at {address:#x}: byte {offset} ({kind:?}) changed"
                );
            }
        }
    }
}

fn round_trip(compiler: Compiler, optimisation: &'static str) {
    let dir = modules_dir();
    let v1 = ModuleBuild::new(compiler.clone(), optimisation, 1).build(&dir);
    let v2 = ModuleBuild::new(compiler.clone(), optimisation, 2).build(&dir);
    let mut runtime = Runtime::load(&v1).unwrap();
    let world = populate(&runtime);
    check_vptrs(&runtime);
    check_behaviour(&runtime, 1);

    for (target, version) in [(&v2, 2), (&v1, 1), (&v2, 2)] {
        let before = object_bytes(&runtime);
        let old_shadow = runtime.shadow_path();
        let report = runtime.reload(target).unwrap().rehydrate_all().unwrap();
        assert_eq!(report.objects, RELOAD_CLASSES.len() * 4);
        assert!(report.old_image_unmapped, "the old build was unloaded");
        assert_eq!(
            report.audit.stale, 0,
            "nothing points into the old build: {report:#?}"
        );
        assert!(
            report.references.vptrs >= report.objects,
            "every object's vptrs were found by the scan too: {report:#?}"
        );
        assert!(
            rehydrate::maps::mappings_of(&old_shadow).is_empty(),
            "{} is still mapped",
            old_shadow.display()
        );
        assert!(!old_shadow.exists(), "the old shadow copy was deleted");
        check_vptrs(&runtime); // first: calling through a stale vptr would crash, not fail
        check_behaviour(&runtime, version);
        check_state_kept(&runtime, &before);
    }
    destroy(&runtime, world);
}

#[test]
fn gxx_o0_round_trip() {
    round_trip(gxx(), "-O0");
}

#[test]
fn gxx_o2_round_trip() {
    round_trip(gxx(), "-O2");
}

#[test]
fn clangxx_o0_round_trip() {
    round_trip(clangxx(), "-O0");
}

#[test]
fn clangxx_o2_round_trip() {
    round_trip(clangxx(), "-O2");
}

fn still_mapped(stem: &str) -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .any(|l| l.contains(stem))
}

#[test]
fn failed_reloads_roll_back_and_change_nothing() {
    let dir = modules_dir();
    let build = |version, fault, without_class| ModuleBuild {
        fixture: &integration_tests::RELOAD,
        compiler: gxx(),
        optimisation: "-O0",
        version,
        fault,
        without_class,
        flags: &[],
    };
    let v1 = build(1, None, None).build(&dir);
    let missing = dir.join("no-such-module.so");
    let corrupt = dir.join("libcorrupt.so");
    std::fs::write(&corrupt, b"\x7fELF this is not a shared library").unwrap();
    let no_descriptor = tiny_library(&dir, "no_descriptor", "extern \"C\" { int answer = 42; }\n");
    let wrong_abi = tiny_library(
        &dir,
        "wrong_abi",
        "#include \"rehydrate/module_abi.h\"\n\
         static int32_t attach(const rehydrate_host_api*) { return 0; }\n\
         static const rehydrate_module_desc desc = {99, 0, 0, nullptr, &attach};\n\
         extern \"C\" const rehydrate_module_desc* rehydrate_module_descriptor(void) { return &desc; }\n",
    );
    let class_missing = build(2, None, Some("rl::Single")).build(&dir);
    let layout_changed = build(2, Some("FAULT_LAYOUT_CHANGE"), None).build(&dir);
    let throwing = build(2, Some("FAULT_THROWING_CONSTRUCTOR"), None).build(&dir);
    let anomalous = build(2, Some("FAULT_ANOMALOUS"), None).build(&dir);

    let mut runtime = Runtime::load(&v1).unwrap();
    let world = populate(&runtime);
    let shadow = runtime.shadow_path();

    type Expectation = fn(&Error) -> bool;
    let cases: [(&str, &Path, Expectation); 8] = [
        (
            "missing file",
            &missing,
            |e| matches!(e, Error::ShadowCopy { path, .. } if path.ends_with("no-such-module.so")),
        ),
        (
            "corrupt file",
            &corrupt,
            |e| matches!(e, Error::Load { path, .. } if path.ends_with("libcorrupt.so")),
        ),
        (
            "no descriptor",
            &no_descriptor,
            |e| matches!(e, Error::MissingSymbol { symbol, .. } if symbol == "rehydrate_module_descriptor"),
        ),
        ("wrong ABI version", &wrong_abi, |e| {
            matches!(e, Error::AbiVersion { found: 99, .. })
        }),
        (
            "class missing",
            &class_missing,
            |e| matches!(e, Error::ClassMissing { class, objects: 4, .. } if class == "rl::Single"),
        ),
        (
            "layout changed",
            &layout_changed,
            // rl::Holder, which holds an rl::Single, moved too: both are reported.
            |e| {
                matches!(e, Error::ReloadRefused { problems } if problems.iter().any(|p| matches!(p, Error::LayoutChanged { class, changes, .. } if class == "rl::Single" && changes.iter().any(|c| c.contains("added_field"))))
                && problems.iter().any(|p| matches!(p, Error::LayoutChanged { class, .. } if class == "rl::Holder")))
            },
        ),
        (
            "throwing constructor",
            &throwing,
            // Every class derives from rl::Root, whose constructor throws: each is reported.
            |e| matches!(e, Error::ReloadRefused { problems } if problems.len() == 5 && problems.iter().all(|p| matches!(p, Error::CppException { operation: CppOperation::Construction, message, .. } if message.contains("refuses")))),
        ),
        (
            "anomalous bytes",
            &anomalous,
            |e| matches!(e, Error::ReloadRefused { problems } if problems.iter().all(|p| matches!(p, Error::Anomalous { offsets, .. } if !offsets.is_empty()))),
        ),
    ];
    for (label, target, expected) in cases {
        let before = object_bytes(&runtime);
        let error = match runtime.reload(target) {
            Ok(reload) => reload.rehydrate_all().expect_err(label),
            Err(error) => error,
        };
        assert!(expected(&error), "{label}: unexpected error {error:?}");
        assert!(!error.to_string().is_empty());
        assert_eq!(
            object_bytes(&runtime),
            before,
            "{label}: a live object changed"
        );
        assert_eq!(
            runtime.shadow_path(),
            shadow,
            "{label}: the old build is still current"
        );
        assert!(
            !rehydrate::maps::mappings_of(&shadow).is_empty(),
            "{label}: the old build is still loaded"
        );
        let stem = target.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(
            !still_mapped(&format!("/{stem}-")),
            "{label}: the failed build was unloaded"
        );
        check_vptrs(&runtime);
        check_behaviour(&runtime, 1);
    }

    // After all that, a good reload still works.
    let v2 = build(2, None, None).build(&dir);
    runtime.reload(&v2).unwrap().rehydrate_all().unwrap();
    check_vptrs(&runtime);
    check_behaviour(&runtime, 2);
    destroy(&runtime, world);
}

/// A C library built here and never reloaded.
fn never_reloaded_library(dir: &Path) -> libloading::Library {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/forwarders/library.c");
    let library = dir.join("libthird_party.so");
    gxx().compile(
        &[&source],
        &library,
        &["-x", "c", "-O2", "-fPIC", "-shared", "-Wall", "-Wextra"],
    );
    // SAFETY: a plain C library.
    unsafe { libloading::Library::new(&library) }.unwrap()
}

#[test]
fn forwarders_keep_a_never_reloaded_library_calling_the_current_build() {
    let dir = modules_dir();
    let v1 = ModuleBuild::new(gxx(), "-O2", 1).build(&dir);
    let v2 = ModuleBuild::new(gxx(), "-O2", 2).build(&dir);
    let no_callback = ModuleBuild {
        fault: Some("FAULT_NO_CALLBACK"),
        ..ModuleBuild::new(gxx(), "-O2", 2)
    }
    .build(&dir);
    let library = never_reloaded_library(&dir);
    // SAFETY: the library's functions have these signatures.
    let (store, call_stored) = unsafe {
        (
            *library
                .get::<unsafe extern "C" fn(*const c_void)>(b"library_store_callback")
                .unwrap(),
            *library
                .get::<unsafe extern "C" fn(i32) -> i32>(b"library_call_stored")
                .unwrap(),
        )
    };

    let mut runtime = Runtime::load(&v1).unwrap();
    let world = populate(&runtime);
    let host_bound = runtime.forwarder("rl_callback").unwrap();
    // SAFETY: the fixture exports it with this signature.
    let module_bound = unsafe {
        (*runtime
            .symbol::<unsafe extern "C" fn() -> *const c_void>("rl_forwarder_to_callback")
            .unwrap())()
    };
    assert!(
        !module_bound.is_null(),
        "the module got a forwarder through the host API"
    );

    for forwarder in [host_bound.address(), module_bound] {
        // SAFETY: a forwarder to `int rl_callback(int)`.
        unsafe { store(forwarder) };
        // SAFETY: calls the stored callback.
        assert_eq!(unsafe { call_stored(5) }, 1005, "v1 before the reload");
        runtime.reload(&v2).unwrap().rehydrate_all().unwrap();
        // SAFETY: as above; the library still holds the same address.
        let after = unsafe { call_stored(5) };
        assert_eq!(after, 2005, "v2 after the reload, through the same address");
        runtime.reload(&v1).unwrap().rehydrate_all().unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { call_stored(5) }, 1005, "v1 again");
    }

    // A build without the bound symbol fails the reload and changes nothing.
    let before = object_bytes(&runtime);
    let error = runtime
        .reload(&no_callback)
        .unwrap()
        .rehydrate_all()
        .unwrap_err();
    assert!(
        matches!(&error, Error::MissingSymbol { symbol, .. } if symbol == "rl_callback"),
        "{error:?}"
    );
    assert_eq!(object_bytes(&runtime), before);
    // SAFETY: as above.
    let still = unsafe { call_stored(5) };
    assert_eq!(still, 1005, "the forwarder still reaches the current build");
    assert!(
        integration_tests::under_valgrind()
            || rehydrate::maps::writable_and_executable_mappings().is_empty()
    );
    drop(host_bound);
    destroy(&runtime, world);
}

#[test]
fn stale_bytes_in_a_tracked_objects_padding_that_spell_an_old_address_do_not_refuse_the_reload() {
    // rl::Multi keeps `short multi_field` at offset 32 and padding up to 40: no address fits
    // in that word, whatever its bytes spell (freed memory leaves such bytes in padding).
    const WORD: usize = 32;
    let dir = modules_dir();
    let v1 = ModuleBuild::new(gxx(), "-O2", 1).build(&dir);
    let v2 = ModuleBuild::new(gxx(), "-O2", 2).build(&dir);
    let mut runtime = Runtime::load(&v1).unwrap();
    let object = runtime.create("rl::Multi").unwrap();
    // SAFETY: the fixture exports `rl_make` (only its address is taken).
    let inside_code = unsafe { runtime.symbol::<MakeFn>("rl_make") }.unwrap();
    let inside_code = *inside_code as usize + 1; // inside a function: nothing can map it
    let word = (object.as_ptr() as usize + WORD) as *mut usize;
    // SAFETY: bytes 32..40 of a live rl::Multi (its short field and padding).
    unsafe { word.write(inside_code) };
    let report = runtime.reload(&v2).unwrap().rehydrate_all().unwrap();
    assert!(report.old_image_unmapped);
    // SAFETY: as above; the object is still alive.
    let after = unsafe { word.read() };
    assert_eq!(after, inside_code, "the bytes are left as they were");
    assert!(
        report
            .references
            .unresolved_examples
            .iter()
            .any(|e| e.contains("rl::Multi") && e.contains("no address fits there")),
        "reported, not refused: {:#?}",
        report.references
    );
    assert_vptrs_in_current_build(&runtime);
    drop(object);
}
