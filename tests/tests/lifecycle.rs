//! Object lifetimes around reloads, with real modules: destructors that untrack module-made
//! children while another thread reloads, objects made by static initialisers, types the module
//! does not describe, objects whose vptrs were overwritten, a module whose descriptor disagrees
//! with its compiler, rollback by dropping a `Reload`, and several runtimes at once.

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use integration_tests::{
    assert_vptrs_in_current_build, clangxx, gxx, object_bytes, tiny_library, with_deadline,
    Compiler, ModuleBuild, LIFECYCLE, RELOAD_CLASSES,
};
use rehydrate::{Error, LiveObject, Runtime};

type VersionFn = unsafe extern "C" fn() -> i32;
type AddressFn = unsafe extern "C" fn() -> *mut c_void;
type DestroyFn = unsafe extern "C" fn(*mut c_void);
type MakeToolFn = unsafe extern "C" fn(i32) -> *mut c_void;
type CheckToolFn = unsafe extern "C" fn(*mut c_void, i32) -> i32;

fn modules_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lifecycle-modules");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn builds(compiler: Compiler) -> (PathBuf, PathBuf) {
    let dir = modules_dir();
    (
        ModuleBuild::of(&LIFECYCLE, compiler.clone(), "-O2", 1).build(&dir),
        ModuleBuild::of(&LIFECYCLE, compiler, "-O2", 2).build(&dir),
    )
}

fn version(runtime: &Runtime) -> i32 {
    // SAFETY: the fixture exports `int lc_version(void)`.
    let current = unsafe { runtime.symbol::<VersionFn>("lc_version") }.unwrap();
    // SAFETY: takes nothing.
    unsafe { current() }
}

fn destructors_untracking_children_while_another_thread_reloads(compiler: Compiler) {
    let (v1, v2) = builds(compiler);
    with_deadline(Duration::from_secs(60), move || {
        const PARENTS: usize = 300;
        const RELOADS: usize = 40;
        let mut runtime = Runtime::load(&v1).unwrap();
        let parents: Vec<LiveObject> = (0..PARENTS)
            .map(|_| runtime.create("lc::Parent").unwrap())
            .collect();
        // One static child, and two children per parent, tracked by the module's constructor.
        assert_eq!(runtime.live_objects(), 1 + 3 * PARENTS);
        let (send, receive) = mpsc::channel::<LiveObject>();
        let dropper = std::thread::spawn(move || {
            let mut dropped = 0;
            for parent in receive {
                drop(parent); // ~Parent untracks and deletes its two children
                dropped += 1;
                if dropped % 8 == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            dropped
        });
        let mut parents = parents.into_iter();
        for round in 0..RELOADS {
            for parent in parents.by_ref().take(PARENTS / RELOADS / 2) {
                send.send(parent).unwrap();
            }
            let target = if round % 2 == 0 { &v2 } else { &v1 };
            runtime.reload(target).unwrap().rehydrate_all().unwrap();
            assert_eq!(version(&runtime), if round % 2 == 0 { 2 } else { 1 });
        }
        let kept: Vec<LiveObject> = parents.collect();
        drop(send);
        let dropped = dropper.join().unwrap();
        assert_eq!(dropped + kept.len(), PARENTS);
        assert_eq!(runtime.live_objects(), 1 + 3 * kept.len());
        assert_vptrs_in_current_build(&runtime);
        drop(kept);
        assert_eq!(runtime.live_objects(), 1, "only the static child is left");
    });
}

#[test]
fn gxx_destructors_untracking_children_while_another_thread_reloads() {
    destructors_untracking_children_while_another_thread_reloads(gxx());
}

#[test]
fn clangxx_destructors_untracking_children_while_another_thread_reloads() {
    destructors_untracking_children_while_another_thread_reloads(clangxx());
}

#[test]
fn objects_made_by_static_initialisers_are_tracked_once_the_runtime_attaches() {
    for compiler in [gxx(), clangxx()] {
        let (v1, v2) = builds(compiler.clone());
        let mut runtime = Runtime::load(&v1).unwrap();
        let made_before_attach = |runtime: &Runtime| {
            // SAFETY: the fixture exports `void* lc_made_before_attach(void)`.
            let get = unsafe { runtime.symbol::<AddressFn>("lc_made_before_attach") }.unwrap();
            // SAFETY: takes nothing.
            unsafe { get() as usize }
        };
        let early = made_before_attach(&runtime);
        assert_eq!(
            runtime.live_object_addresses(),
            vec![("lc::Child".into(), early)],
            "{}: the static initialiser's object is tracked",
            compiler.name
        );
        runtime.reload(&v2).unwrap().rehydrate_all().unwrap();
        // The old build's static destructor untracked its object; the new build's is tracked
        // (beside the `lc::Fresh` the second build's static initialiser makes).
        let early = made_before_attach(&runtime);
        let children: Vec<_> = runtime
            .live_object_addresses()
            .into_iter()
            .filter(|(class, _)| &**class == "lc::Child")
            .collect();
        assert_eq!(
            children,
            vec![("lc::Child".into(), early)],
            "{}",
            compiler.name
        );
        assert_vptrs_in_current_build(&runtime);
    }
}

#[test]
fn objects_of_a_class_only_the_new_build_describes_are_accepted() {
    let dir = modules_dir();
    let v1_without_fresh = ModuleBuild {
        without_class: Some("lc::Fresh"),
        ..ModuleBuild::of(&LIFECYCLE, gxx(), "-O2", 1)
    }
    .build(&dir);
    let (_, v2) = builds(gxx());
    let mut runtime = Runtime::load(&v1_without_fresh).unwrap();
    let parent = runtime.create("lc::Parent").unwrap();
    runtime.reload(&v2).unwrap().rehydrate_all().unwrap();
    let classes: Vec<String> = runtime
        .live_object_addresses()
        .into_iter()
        .map(|(class, _)| class.to_string())
        .collect();
    assert!(classes.contains(&"lc::Fresh".to_string()), "{classes:?}");
    assert_vptrs_in_current_build(&runtime);
    drop(parent);
}

fn shadow_is_gone(shadow: &Path) -> bool {
    rehydrate::maps::mappings_of(shadow).is_empty() && !shadow.exists()
}

#[test]
fn dropping_a_reload_rolls_back() {
    let (v1, v2) = builds(gxx());
    let mut runtime = Runtime::load(&v1).unwrap();
    let parent = runtime.create("lc::Parent").unwrap();
    let before = object_bytes(&runtime);
    let shadow = runtime.shadow_path();
    let reload = runtime.reload(&v2).unwrap();
    let new_shadow = reload.new_shadow_path().to_path_buf();
    assert!(!rehydrate::maps::mappings_of(&new_shadow).is_empty());
    drop(reload);
    assert!(shadow_is_gone(&new_shadow), "the new build was unloaded");
    assert_eq!(runtime.shadow_path(), shadow, "the old build is current");
    assert_eq!(version(&runtime), 1);
    assert_eq!(object_bytes(&runtime), before, "no object changed");
    assert_vptrs_in_current_build(&runtime);
    drop(parent);
}

#[test]
fn an_object_of_a_type_the_module_does_not_describe_refuses_the_reload() {
    let (v1, v2) = builds(gxx());
    let mut runtime = Runtime::load(&v1).unwrap();
    // SAFETY: the fixture exports these with these signatures.
    let (make, destroy) = unsafe {
        (
            *runtime.symbol::<AddressFn>("lc_make_undescribed").unwrap(),
            *runtime
                .symbol::<DestroyFn>("lc_destroy_undescribed")
                .unwrap(),
        )
    };
    // SAFETY: takes nothing; the module tracks what it returns.
    let undescribed = unsafe { make() };
    let before = object_bytes(&runtime);
    let error = runtime.reload(&v2).unwrap().rehydrate_all().unwrap_err();
    assert!(
        matches!(&error, Error::UntrackableType { class, type_id_name, objects: 1 } if class == "lc::Undescribed" && type_id_name.contains("Undescribed")),
        "{error:?}"
    );
    assert!(error.to_string().contains("lc::Undescribed"), "{error}");
    assert_eq!(object_bytes(&runtime), before);
    assert_eq!(version(&runtime), 1);
    // SAFETY: made above by this build; destroyed once.
    unsafe { destroy(undescribed) };
    runtime.reload(&v2).unwrap().rehydrate_all().unwrap();
    assert_eq!(version(&runtime), 2);
}

#[test]
fn a_refused_reload_lists_every_problem() {
    let (v1, v2) = builds(gxx());
    let mut runtime = Runtime::load(&v1).unwrap();
    let parent = runtime.create("lc::Parent").unwrap();
    let child = runtime.create("lc::Child").unwrap();
    // SAFETY: the fixture exports these with these signatures.
    let (make, destroy) = unsafe {
        (
            *runtime.symbol::<AddressFn>("lc_make_undescribed").unwrap(),
            *runtime
                .symbol::<DestroyFn>("lc_destroy_undescribed")
                .unwrap(),
        )
    };
    // SAFETY: takes nothing; the module tracks what it returns.
    let undescribed = unsafe { make() };
    // SAFETY: both classes have their vptr at 0; restored below, nothing calls it meanwhile.
    let parent_vptr = unsafe { (parent.as_ptr() as *const usize).read() };
    // SAFETY: as above.
    unsafe { (parent.as_ptr() as *mut usize).write((child.as_ptr() as *const usize).read()) };
    let error = runtime.reload(&v2).unwrap().rehydrate_all().unwrap_err();
    match &error {
        Error::ReloadRefused { problems } => {
            assert_eq!(problems.len(), 2, "{problems:?}");
            assert!(problems
                .iter()
                .any(|p| matches!(p, Error::StaleObject { class, .. } if class == "lc::Parent")));
            assert!(problems
                .iter()
                .any(|p| matches!(p, Error::UntrackableType { .. })));
        }
        other => panic!("expected every problem, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("lc::Parent") && message.contains("Undescribed"),
        "{message}"
    );
    // SAFETY: as above.
    unsafe { (parent.as_ptr() as *mut usize).write(parent_vptr) };
    // SAFETY: made above by this build; destroyed once.
    unsafe { destroy(undescribed) };
    runtime.reload(&v2).unwrap().rehydrate_all().unwrap();
}

#[test]
fn an_object_whose_vptr_was_overwritten_refuses_the_reload() {
    let (v1, v2) = builds(gxx());
    let mut runtime = Runtime::load(&v1).unwrap();
    let parent = runtime.create("lc::Parent").unwrap();
    let child = runtime.create("lc::Child").unwrap();
    let vptr_of = |object: &LiveObject| {
        // SAFETY: both classes have their vptr at offset 0.
        unsafe { (object.as_ptr() as *const usize).read() }
    };
    let parent_vptr = vptr_of(&parent);
    // SAFETY: the parent's vptr slot; restored below, and nothing calls it meanwhile.
    unsafe { (parent.as_ptr() as *mut usize).write(vptr_of(&child)) };
    let before = object_bytes(&runtime);
    let error = runtime.reload(&v2).unwrap().rehydrate_all().unwrap_err();
    match &error {
        Error::StaleObject {
            address,
            class,
            offset,
        } => {
            assert_eq!(
                (*address, class.as_str(), *offset),
                (parent.as_ptr() as usize, "lc::Parent", 0)
            );
        }
        other => panic!("expected StaleObject, got {other:?}"),
    }
    assert_eq!(object_bytes(&runtime), before, "nothing was patched");
    // SAFETY: as above.
    unsafe { (parent.as_ptr() as *mut usize).write(parent_vptr) };
    runtime.reload(&v2).unwrap().rehydrate_all().unwrap();
    assert_vptrs_in_current_build(&runtime);
}

/// A module whose hand-written descriptor places the base `tm::B` at offset 8 while the
/// compiler puts it at 0.
const WRONG_BASE_OFFSET: &str = r#"
#include <new>
#include "rehydrate/module_abi.h"
namespace tm { struct B { virtual ~B() {} long b = 1; }; struct D : B { long d = 2; }; }
static int32_t construct(void* place, char*, size_t) { ::new (place) tm::D; return 0; }
static int32_t destroy(void* object, char*, size_t) { static_cast<tm::D*>(object)->~D(); return 0; }
static int32_t measure(const void* object, uint64_t* offsets) {
    auto* d = static_cast<const tm::D*>(object);
    offsets[0] = reinterpret_cast<const char*>(static_cast<const tm::B*>(d)) - reinterpret_cast<const char*>(d);
    return 0;
}
static const rehydrate_base_desc bases[] = {{"tm::B", 8, 0, 0}};
static const rehydrate_field_desc fields[] = {
    {"b", "tm::B", "long", 8, 8, UINT64_MAX, 0, 0}, {"d", "tm::D", "long", 16, 8, UINT64_MAX, 0, 0}};
static const uint64_t vptrs[] = {0};
static const rehydrate_class_desc classes[] = {{"tm::D", "N2tm1DE", sizeof(tm::D), alignof(tm::D), 0,
    1, bases, 2, fields, 1, vptrs, &construct, &destroy, &measure}};
static int32_t attach(const rehydrate_host_api*) { return 0; }
static const rehydrate_module_desc desc = {REHYDRATE_ABI_VERSION, 0, 1, classes, &attach};
extern "C" const rehydrate_module_desc* rehydrate_module_descriptor(void) { return &desc; }
"#;

#[test]
fn a_descriptor_that_disagrees_with_the_compiler_refuses_the_reload() {
    let library = tiny_library(&modules_dir(), "wrong_base_offset", WRONG_BASE_OFFSET);
    let mut runtime = Runtime::load(&library).unwrap();
    let image = runtime.class_image("tm::D").unwrap_err();
    let names_the_base = |e: &Error| matches!(e, Error::TableMismatch { class, detail } if class == "tm::D" && detail.contains("base tm::B is at offset 0 but the table says 8"));
    assert!(names_the_base(&image), "{image:?}");
    let object = runtime.create("tm::D").unwrap();
    let error = runtime
        .reload(&library)
        .unwrap()
        .rehydrate_all()
        .unwrap_err();
    assert!(names_the_base(&error), "{error:?}");
    drop(object);
}

/// A descriptor whose vptr slots are stale: it says 0 and 8, the compiler put the vptr at 0 and
/// `s` at 8.
const WRONG_VPTR_SLOT: &str = r#"
#include <new>
#include "rehydrate/module_abi.h"
namespace tm { struct S { virtual ~S() {} long s = 1; }; }
static int32_t construct(void* place, char*, size_t) { ::new (place) tm::S; return 0; }
static int32_t destroy(void* object, char*, size_t) { static_cast<tm::S*>(object)->~S(); return 0; }
static const rehydrate_field_desc fields[] = {{"s", "tm::S", "long", 8, 8, UINT64_MAX, 0, 0}};
static const uint64_t vptrs[] = {0, 8};
static const rehydrate_class_desc classes[] = {{"tm::S", "N2tm1SE", sizeof(tm::S), alignof(tm::S), 0,
    0, nullptr, 1, fields, 2, vptrs, &construct, &destroy, nullptr}};
static int32_t attach(const rehydrate_host_api*) { return 0; }
static const rehydrate_module_desc desc = {REHYDRATE_ABI_VERSION, 0, 1, classes, &attach};
extern "C" const rehydrate_module_desc* rehydrate_module_descriptor(void) { return &desc; }
"#;

#[test]
fn a_class_whose_sources_disagree_refuses_to_reload_and_says_where() {
    let library = tiny_library(&modules_dir(), "wrong_vptr_slot", WRONG_VPTR_SLOT);
    let mut runtime = Runtime::load(&library).unwrap();
    let names_the_slot = |e: &Error| {
        matches!(e, Error::ImageDisagreement { class, disagreements } if class == "tm::S"
            && disagreements.iter().any(|d| d == "offset 8: the table has a vptr slot, the probe found the constant 0x1 there"))
    };
    let image = runtime.class_image("tm::S").unwrap_err();
    assert!(names_the_slot(&image), "{image}");
    let inspection = runtime.inspect().remove(0);
    assert!(!inspection.agrees());
    match &inspection.analysis {
        rehydrate::analysis::Analysis::GaveUp { reason, .. } => assert!(
            reason.contains(
                "the table's vptr slot at offset 8 holds a constant that is not a vtable address"
            ),
            "{reason}"
        ),
        found => panic!("the analysis cannot agree with a stale table: {found:?}"),
    }
    assert!(
        matches!(inspection.probe, Some(Ok(_))),
        "{:?}",
        inspection.probe
    );
    let object = runtime.create("tm::S").unwrap();
    // SAFETY: a live tm::S (16 bytes) that nothing else touches meanwhile.
    let bytes = || unsafe { std::slice::from_raw_parts(object.as_ptr().cast::<u8>(), 16) }.to_vec();
    let before = bytes();
    let error = runtime
        .reload(&library)
        .unwrap()
        .rehydrate_all()
        .unwrap_err();
    assert!(names_the_slot(&error), "{error}");
    assert_eq!(bytes(), before, "a refused reload changes nothing");
    drop(object);
}

#[test]
fn several_runtimes_load_and_reload_at_once_each_in_a_private_folder() {
    let dir = modules_dir();
    let v1 = ModuleBuild::new(gxx(), "-O0", 1).build(&dir);
    let v2 = ModuleBuild::new(gxx(), "-O0", 2).build(&dir);
    let folders: Vec<PathBuf> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut runtime = Runtime::load(&v1).unwrap();
                    let objects: Vec<LiveObject> = RELOAD_CLASSES
                        .iter()
                        .map(|class| runtime.create(class).unwrap())
                        .collect();
                    let folder = runtime.shadow_path().parent().unwrap().to_path_buf();
                    for round in 0..6 {
                        let target = if round % 2 == 0 { &v2 } else { &v1 };
                        let old = runtime.shadow_path();
                        let report = runtime.reload(target).unwrap().rehydrate_all().unwrap();
                        assert_eq!(report.objects, objects.len());
                        assert!(shadow_is_gone(&old));
                        assert_eq!(runtime.shadow_path().parent().unwrap(), folder);
                        assert_vptrs_in_current_build(&runtime);
                    }
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(&folder).unwrap().permissions().mode();
                    assert_eq!(mode & 0o777, 0o700, "{} is private", folder.display());
                    drop(objects);
                    drop(runtime);
                    assert!(
                        !folder.exists(),
                        "{} removed with its runtime",
                        folder.display()
                    );
                    folder
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut distinct = folders.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        folders.len(),
        "one folder per runtime: {folders:?}"
    );
}

type FillFn = unsafe extern "C" fn(*mut c_void, i32);
type CheckFn = unsafe extern "C" fn(*mut c_void, i32) -> i32;

/// Objects with `std::string`, `std::vector` and `std::map` members (their tables list them as
/// members of their own) keep every element across reloads, and the new build reads them.
#[test]
fn standard_library_members_keep_their_contents_across_reloads() {
    for compiler in [gxx(), clangxx()] {
        let dir = modules_dir();
        let v1 =
            ModuleBuild::of(&integration_tests::STDLIB, compiler.clone(), "-O2", 1).build(&dir);
        let v2 =
            ModuleBuild::of(&integration_tests::STDLIB, compiler.clone(), "-O2", 2).build(&dir);
        let mut runtime = Runtime::load(&v1).unwrap();
        // st::Tool has only `Tool(int)`: it cannot be probed, and reloads by symbols.
        assert!(runtime.class_image("st::Tool").is_err());
        let unreloadable = runtime.unreloadable_classes();
        assert!(unreloadable.is_empty(), "{unreloadable:?}");
        // SAFETY: the fixture exports these with these signatures.
        let make_tool = unsafe { *runtime.symbol::<MakeToolFn>("st_make_tool").unwrap() };
        let tools: Vec<usize> = (0..5)
            // SAFETY: takes a count; the module tracks the tool it returns.
            .map(|uses| unsafe { make_tool(uses) } as usize)
            .collect();
        let check_tools = |runtime: &Runtime| {
            // SAFETY: the fixture exports this with this signature.
            let check = unsafe { *runtime.symbol::<CheckToolFn>("st_check_tool").unwrap() };
            for (uses, &tool) in tools.iter().enumerate() {
                // SAFETY: a live tool made by st_make_tool(uses).
                let code = unsafe { check(tool as *mut c_void, uses as i32) };
                assert_eq!(code, 0, "{}: tool {uses}", compiler.name);
            }
        };
        check_tools(&runtime);
        let objects: Vec<LiveObject> = (0..20)
            .map(|_| runtime.create("st::Inventory").unwrap())
            .collect();
        let call = |runtime: &Runtime, check: bool| {
            // SAFETY: the fixture exports these with these signatures.
            let (fill, verify) = unsafe {
                (
                    *runtime.symbol::<FillFn>("st_fill").unwrap(),
                    *runtime.symbol::<CheckFn>("st_check").unwrap(),
                )
            };
            for (seed, object) in objects.iter().enumerate() {
                if check {
                    // SAFETY: a live st::Inventory.
                    let code = unsafe { verify(object.as_ptr(), seed as i32) };
                    assert_eq!(code, 0, "{}: object {seed} (code {code})", compiler.name);
                } else {
                    // SAFETY: as above.
                    unsafe { fill(object.as_ptr(), seed as i32) };
                }
            }
        };
        call(&runtime, false);
        call(&runtime, true);
        for target in [&v2, &v1, &v2] {
            let old = runtime.shadow_path();
            let report = runtime.reload(target).unwrap().rehydrate_all().unwrap();
            assert!(report.old_image_unmapped && shadow_is_gone(&old));
            assert_vptrs_in_current_build(&runtime);
            call(&runtime, true);
            check_tools(&runtime);
        }
        assert_eq!(version_of(&runtime), 2);
        // SAFETY: the fixture exports this with this signature.
        let destroy_tool = unsafe { *runtime.symbol::<DestroyFn>("st_destroy_tool").unwrap() };
        for &tool in &tools {
            // SAFETY: made by st_make_tool; destroyed once.
            unsafe { destroy_tool(tool as *mut c_void) };
        }
        drop(objects);
    }
}

fn version_of(runtime: &Runtime) -> i32 {
    // SAFETY: the fixture exports `int st_version(void)`.
    let current = unsafe { runtime.symbol::<VersionFn>("st_version") }.unwrap();
    // SAFETY: takes nothing.
    unsafe { current() }
}

/// The selection fixture's ordinary classes (protected base destructor, private nested class,
/// resolved dependent bases, standard-library members and bases) reload with their contents.
#[test]
fn ordinary_classes_of_the_oracle_fixture_reload_with_their_contents() {
    for compiler in [gxx(), clangxx()] {
        let dir = modules_dir();
        let build = |version| {
            ModuleBuild::of(
                &integration_tests::SELECTION,
                compiler.clone(),
                "-O2",
                version,
            )
            .build(&dir)
        };
        let (v1, v2) = (build(1), build(2));
        let mut runtime = Runtime::load(&v1).unwrap();
        let unreloadable: Vec<String> = runtime
            .unreloadable_classes()
            .iter()
            .map(|c| c.class.to_string())
            .collect();
        // sel::Enemy has no default constructor: not probed, reloaded by symbols.
        assert!(unreloadable.is_empty(), "{unreloadable:?}");
        assert!(runtime.class_image("sel::Enemy").is_err());
        let documents: Vec<LiveObject> = (0..5)
            .map(|_| runtime.create("sel::Document").unwrap())
            .collect();
        let holders: Vec<LiveObject> = (0..5)
            .map(|_| runtime.create("sel::HoldsTemplates").unwrap())
            .collect();
        let vectors: Vec<LiveObject> = (0..5)
            .map(|_| runtime.create("sel::FromVector").unwrap())
            .collect();
        let call = |runtime: &Runtime, name: &str, object: &LiveObject, seed: usize| {
            // SAFETY: the fixture exports these with these signatures, for these classes.
            unsafe {
                if name.contains("check") {
                    (*runtime.symbol::<CheckFn>(name).unwrap())(object.as_ptr(), seed as i32)
                } else {
                    (*runtime.symbol::<FillFn>(name).unwrap())(object.as_ptr(), seed as i32);
                    0
                }
            }
        };
        for (seed, (document, holder)) in documents.iter().zip(&holders).enumerate() {
            call(&runtime, "sel_fill_document", document, seed);
            call(&runtime, "sel_fill_holder", holder, seed);
        }
        for target in [&v2, &v1] {
            let old = runtime.shadow_path();
            let report = runtime.reload(target).unwrap().rehydrate_all().unwrap();
            assert_eq!(report.objects, 15);
            assert!(report.old_image_unmapped && shadow_is_gone(&old));
            assert_vptrs_in_current_build(&runtime);
            for (seed, (document, holder)) in documents.iter().zip(&holders).enumerate() {
                assert_eq!(
                    call(&runtime, "sel_check_document", document, seed),
                    0,
                    "{}",
                    compiler.name
                );
                assert_eq!(
                    call(&runtime, "sel_check_holder", holder, seed),
                    0,
                    "{}",
                    compiler.name
                );
            }
        }
        drop((documents, holders, vectors));
    }
}
