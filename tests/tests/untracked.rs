//! Reloading a module whose objects nobody tracks: the world is made by module code with plain
//! `new`, `make_unique`, `make_shared` and a pool of its own, and holds vptrs (also of a
//! secondary base whose address point moves in v2), function pointers, `std::function`s with
//! lambdas, pointers to string literals and to a default listener global. After every reload
//! each value comes from the new build, the literals read the same bytes, the audit finds
//! nothing pointing into the old build, and the old build's range is no-access (a missed
//! reference would fault in `ut_play`).

use std::ffi::{c_char, c_void, CStr};
use std::path::PathBuf;

use integration_tests::{compilers, Compiler, ModuleBuild, UNTRACKED};
use rehydrate::Runtime;

type MakeFn = unsafe extern "C" fn() -> *mut c_void;
type PlayFn = unsafe extern "C" fn(*const c_void, *mut i64, i32) -> i64;
type TextFn = unsafe extern "C" fn(*const c_void, i32) -> *const c_char;
type DestroyFn = unsafe extern "C" fn(*mut c_void);
type ObjectsFn = unsafe extern "C" fn(*const c_void, *mut *const c_void, *mut u64, i32) -> i32;

/// (address, size) of every object the world owns.
fn objects_of(runtime: &Runtime, world: *mut c_void) -> Vec<(*const u8, usize)> {
    // SAFETY: the fixture exports `ut_objects` with this signature.
    let objects = unsafe { runtime.symbol::<ObjectsFn>("ut_objects") }.unwrap();
    let mut addresses = [std::ptr::null(); 32];
    let mut sizes = [0u64; 32];
    // SAFETY: a world made by the module; both arrays have room for 32 entries.
    let n = unsafe { objects(world, addresses.as_mut_ptr(), sizes.as_mut_ptr(), 32) } as usize;
    assert!(n <= 32);
    addresses[..n]
        .iter()
        .zip(&sizes[..n])
        .map(|(&address, &size)| (address.cast::<u8>(), size as usize))
        .collect()
}

/// Every word of every object the world owns whose value lies in one of `ranges` (kept
/// complemented, see the caller), as (object index, offset, value).
fn words_into(
    runtime: &Runtime,
    world: *mut c_void,
    ranges: &[(usize, usize)],
) -> Vec<(usize, usize, usize)> {
    let mut found = Vec::new();
    for (i, (address, size)) in objects_of(runtime, world).into_iter().enumerate() {
        for offset in (0..size / 8).map(|w| 8 * w) {
            // SAFETY: inside a live object the module reported, aligned (objects are).
            let value = unsafe { address.add(offset).cast::<usize>().read() };
            if ranges
                .iter()
                .any(|&(start, end)| (!start..!end).contains(&value))
            {
                found.push((i, offset, value));
            }
        }
    }
    found
}

fn build(compiler: &Compiler, optimisation: &'static str, version: u32) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("untracked-modules");
    std::fs::create_dir_all(&dir).unwrap();
    ModuleBuild::of(&UNTRACKED, compiler.clone(), optimisation, version).build(&dir)
}

/// What `ut_play` returns with build `v` loaded (see the fixture).
fn expected(v: i64) -> Vec<i64> {
    let mut values = vec![12 * v, 40 * v, 7 + 1000 * v, 12 * v, 20 * v, 10 * v];
    values.extend([12 * v, 10 * v, 12 * v, 30 * v]);
    values.extend([50 - 7 * v, 150 * v, 1 + 100 * v, 1]);
    values.extend([50 + 5 * v, 50 + 1000 * v, 1 + 100 * v, 1]);
    values.extend([50 - 7 * v, 50 + 5 * v, 1 + 100 * v, 1]);
    values
}

fn play(runtime: &Runtime, world: *mut c_void) -> Vec<i64> {
    // SAFETY: the fixture exports `ut_play` with this signature.
    let play = unsafe { runtime.symbol::<PlayFn>("ut_play") }.unwrap();
    let mut out = [0i64; 64];
    // SAFETY: a world made by the module; `out` has room for 64 values.
    let n = unsafe { play(world, out.as_mut_ptr(), out.len() as i32) };
    out[..n as usize].to_vec()
}

fn texts(runtime: &Runtime, world: *mut c_void) -> Vec<String> {
    // SAFETY: the fixture exports `ut_text` with this signature.
    let text = unsafe { runtime.symbol::<TextFn>("ut_text") }.unwrap();
    (0..3)
        .map(|i| {
            // SAFETY: a world made by the module; each text is a NUL-terminated string.
            unsafe { CStr::from_ptr(text(world, i)) }
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

fn reload_untracked_world(compiler: Compiler, optimisation: &'static str) {
    let v1 = build(&compiler, optimisation, 1);
    let v2 = build(&compiler, optimisation, 2);
    let mut runtime = Runtime::load(&v1).unwrap();
    // SAFETY: the fixture exports `ut_make_world` with this signature.
    let world = unsafe { (*runtime.symbol::<MakeFn>("ut_make_world").unwrap())() };
    assert_eq!(play(&runtime, world), expected(1));
    let texts_before = texts(&runtime, world);
    assert_eq!(texts_before[0], "a short literal");

    // The check below sees references: before any reload the world is full of them.
    let loaded: Vec<(usize, usize)> = runtime
        .image_ranges()
        .iter()
        .map(|r| (!r.start, !r.end))
        .collect();
    assert!(words_into(&runtime, world, &loaded).len() >= 11);

    for (step, (path, version)) in [(&v2, 2), (&v1, 1), (&v2, 2)].into_iter().enumerate() {
        // Kept complemented: the reload re-points every word in memory whose value lies in the
        // old build, and these addresses would be such words.
        let old_ranges: Vec<(usize, usize)> = runtime
            .image_ranges()
            .iter()
            .map(|r| (!r.start, !r.end))
            .collect();
        let report = runtime.reload(path).unwrap().rehydrate_all().unwrap();
        let context = format!(
            "{} {optimisation}, reload {step}: {report:#?}",
            compiler.name
        );
        assert!(report.old_image_unmapped, "{context}");
        assert!(report.old_range_reserved, "{context}");
        assert_eq!(report.audit.stale, 0, "{context}");
        // 3 shapes, the shared one and its control block, Both's two, 4 pooled.
        assert!(report.references.vptrs >= 11, "{context}");
        // 3 effects, and each std::function's manager and invoker.
        assert!(report.references.functions >= 3 + 6, "{context}");
        assert!(report.references.data >= 3, "{context}");
        assert!(report.references.read_only_data >= 3, "{context}");
        // The literals' old bytes are copied at the first reload; later reloads find them in
        // the copy, outside any build.
        assert!(
            step > 0 || report.references.read_only_copy_bytes > 0,
            "{context}"
        );
        let new_ranges = runtime.image_ranges();
        let overlapping: Vec<_> = old_ranges
            .iter()
            .map(|&(start, end)| !start..!end)
            .filter(|old| {
                new_ranges
                    .iter()
                    .any(|new| new.start < old.end && old.start < new.end)
            })
            .collect();
        assert!(
            overlapping.is_empty(),
            "{context}: the new build {new_ranges:x?} overlaps the old one at {overlapping:x?}"
        );
        let left_behind = words_into(&runtime, world, &old_ranges);
        assert!(
            left_behind.is_empty(),
            "{context}: (object, offset, value) {left_behind:x?}"
        );
        assert_eq!(play(&runtime, world), expected(version), "{context}");
        assert_eq!(texts(&runtime, world), texts_before, "{context}");
    }
    // SAFETY: the fixture exports `ut_destroy_world`; the world was made by the module.
    unsafe { (*runtime.symbol::<DestroyFn>("ut_destroy_world").unwrap())(world) };
}

#[test]
fn untracked_objects_function_pointers_and_literals_follow_every_reload() {
    for compiler in compilers() {
        for optimisation in ["-O0", "-O2"] {
            reload_untracked_world(compiler.clone(), optimisation);
        }
    }
}

/// The bytes of every object the world owns.
fn world_bytes(runtime: &Runtime, world: *mut c_void) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (address, size) in objects_of(runtime, world) {
        // SAFETY: a live object the module reported, `size` bytes long.
        bytes.extend_from_slice(unsafe { std::slice::from_raw_parts(address, size) });
    }
    bytes
}

#[test]
fn a_function_that_live_pointers_hold_and_the_new_build_lacks_refuses_the_reload() {
    let compiler = integration_tests::gxx();
    let v1 = build(&compiler, "-O2", 1);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("untracked-modules");
    let faulty = ModuleBuild {
        fault: Some("FAULT_NO_HEAL"),
        ..ModuleBuild::of(&UNTRACKED, compiler, "-O2", 2)
    }
    .build(&dir);
    let mut runtime = Runtime::load(&v1).unwrap();
    // SAFETY: the fixture exports `ut_make_world` with this signature.
    let world = unsafe { (*runtime.symbol::<MakeFn>("ut_make_world").unwrap())() };
    let before = world_bytes(&runtime, world);
    let error = runtime
        .reload(&faulty)
        .unwrap()
        .rehydrate_all()
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, rehydrate::Error::UnresolvableReferences { .. }),
        "{message}"
    );
    assert!(
        message.contains("heal(int)") && message.contains("does not define"),
        "{message}"
    );
    assert_eq!(world_bytes(&runtime, world), before, "nothing was written");
    assert_eq!(
        play(&runtime, world),
        expected(1),
        "the old build still runs"
    );
    // SAFETY: the fixture exports `ut_destroy_world`; the world was made by the module.
    unsafe { (*runtime.symbol::<DestroyFn>("ut_destroy_world").unwrap())(world) };
}
