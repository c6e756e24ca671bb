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

fn modules_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("untracked-modules");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn build(compiler: &Compiler, optimisation: &'static str, version: u32) -> PathBuf {
    ModuleBuild::of(&UNTRACKED, compiler.clone(), optimisation, version).build(&modules_dir())
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

type TouchFn = unsafe extern "C" fn(*mut c_void);
type StateFn = unsafe extern "C" fn(*const c_void, *mut i64, i32) -> i32;
type StateTextFn = unsafe extern "C" fn(i32) -> *const c_char;

/// `Noisy` objects alive, as the never-reloaded tally library counts them.
fn noisy_alive() -> i32 {
    let path = integration_tests::tally_library(&modules_dir());
    // SAFETY: the tally library is a plain C library (the module already loaded it).
    let tally = unsafe { libloading::Library::new(path) }.unwrap();
    // SAFETY: it exports `tally_alive` with this signature.
    unsafe {
        (*tally
            .get::<unsafe extern "C" fn() -> i32>(b"tally_alive")
            .unwrap())()
    }
}

fn touch_state(runtime: &Runtime, world: *mut c_void) {
    // SAFETY: the fixture exports `ut_touch_state` with this signature.
    unsafe { (*runtime.symbol::<TouchFn>("ut_touch_state").unwrap())(world) }
}

/// The module's state as `ut_state` reports it, and its two strings.
fn state(runtime: &Runtime, world: *mut c_void) -> (Vec<i64>, [String; 2]) {
    // SAFETY: the fixture exports `ut_state` with this signature.
    let read = unsafe { runtime.symbol::<StateFn>("ut_state") }.unwrap();
    let mut out = [0i64; 32];
    // SAFETY: a world made by the module; `out` has room for 32 values.
    let n = unsafe { read(world, out.as_mut_ptr(), 32) } as usize;
    // SAFETY: the fixture exports `ut_state_text` with this signature.
    let text = unsafe { runtime.symbol::<StateTextFn>("ut_state_text") }.unwrap();
    let texts = [0, 1].map(|i| {
        // SAFETY: NUL-terminated strings of the module's globals.
        unsafe { CStr::from_ptr(text(i)) }
            .to_string_lossy()
            .into_owned()
    });
    (out[..n].to_vec(), texts)
}

const LONG_NAME: &str = "a long name that certainly lives on the heap, not in the string";

/// What `ut_state` returns after `touches` calls of `ut_touch_state` with build `v` loaded;
/// `frames` and `resized` are what the current build has seen of the state that starts
/// fresh at every reload (see the fixture).
fn expected_state(v: i64, touches: i64, frames: i64, resized: i64) -> (Vec<i64>, [String; 2]) {
    let t = touches;
    let values = vec![
        t,
        t,
        t,
        t,
        12 * v * t,
        5 + t,
        LONG_NAME.len() as i64 + t,
        t,
        t * (t + 1) / 2,
        1,
        frames,
        5 + 10 * t,
        t,
        1,
        2 + 3 + 4,
        30 * v,
        -10 * v,
        resized,
    ];
    let texts = [
        format!("short{}", "!".repeat(t as usize)),
        format!("{LONG_NAME}{}", "+".repeat(t as usize)),
    ];
    (values, texts)
}

fn reload_untracked_world(compiler: Compiler, optimisation: &'static str) {
    let v1 = build(&compiler, optimisation, 1);
    let v2 = build(&compiler, optimisation, 2);
    let mut runtime = Runtime::load(&v1).unwrap();
    // SAFETY: the fixture exports `ut_make_world` with this signature.
    let world = unsafe { (*runtime.symbol::<MakeFn>("ut_make_world").unwrap())() };
    assert_eq!(play(&runtime, world), expected(1));
    let mut touches = 1;
    touch_state(&runtime, world);
    assert_eq!(state(&runtime, world), expected_state(1, touches, 1, 1));
    // The static Noisy, the row of three and the function-local one.
    assert_eq!(noisy_alive(), 5);
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
        touches += 1;
        touch_state(&runtime, world);
        let report = runtime.reload(path).unwrap().rehydrate_all().unwrap();
        let context = format!(
            "{} {optimisation}, reload {step}: {report:#?}",
            compiler.name
        );
        // Every piece of state kept its value, but the marked global and the resized one.
        assert_eq!(
            state(&runtime, world),
            expected_state(version, touches, 0, 0),
            "{context}"
        );
        assert_eq!(
            noisy_alive(),
            5,
            "{context}: each Noisy destroyed exactly once"
        );
        let globals = &report.globals;
        for name in [
            "ut::touches",
            "ut::picked",
            "ut::scores",
            "ut::noisy_row",
            "ut::spare_circle",
        ] {
            assert!(
                globals.carried.iter().any(|c| c.starts_with(name)),
                "{context}: {name}"
            );
        }
        let fresh = |name: &str, reason: &str| {
            globals
                .fresh
                .iter()
                .any(|f| f.name == name && f.reason.contains(reason))
        };
        assert!(
            fresh("ut::frames_this_session", "REHYDRATE_RESET_ON_RELOAD"),
            "{context}"
        );
        assert!(fresh("ut::resized", "size changed from"), "{context}");
        assert!(
            fresh("ut::touches_on_this_thread", "thread_local"),
            "{context}"
        );
        // The new build's own first_noisy, noisy_row and two strings at least (the compilers
        // differ on the rest); noisy_alive above shows none was missed or destroyed twice.
        assert!(globals.fresh_values_destroyed >= 4, "{context}");
        // The function-local Noisy, which the new build had not reached.
        assert!(globals.destructors_handed_over >= 1, "{context}");
        assert!(report.old_image_unmapped, "{context}");
        assert!(report.old_range_reserved, "{context}");
        assert_eq!(report.audit.stale, 0, "{context}");
        // 3 shapes, the shared one and its control block, Both's two, 4 pooled.
        assert!(report.references.vptrs >= 11, "{context}");
        // 3 effects, and each std::function's manager and invoker.
        assert!(report.references.functions >= 3 + 6, "{context}");
        assert!(report.references.data >= 3, "{context}");
        // The three literals' old bytes are copied at the first reload; later reloads find
        // them in the copy, outside any build (other words counted then are freed memory's,
        // which memcheck hides from the scan).
        assert!(
            step > 0
                || (report.references.read_only_data >= 3
                    && report.references.read_only_copy_bytes > 0),
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
    drop(runtime);
    assert_eq!(
        noisy_alive(),
        0,
        "the last build's unload destroyed every Noisy"
    );
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

/// The bytes of the current build's writable data (every global of the module, `.bss`'s
/// anonymous tail included).
fn module_data(runtime: &Runtime) -> Vec<u8> {
    let shadow = runtime.shadow_path().to_string_lossy().into_owned();
    let image = runtime.image_ranges();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut bytes = Vec::new();
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (start, end) = fields[0].split_once('-').unwrap();
        let range =
            usize::from_str_radix(start, 16).unwrap()..usize::from_str_radix(end, 16).unwrap();
        let name = fields.get(5).copied().unwrap_or("");
        let inside = image
            .iter()
            .any(|r| r.start <= range.start && range.end <= r.end);
        if fields[1].starts_with("rw") && inside && (name == shadow || name.is_empty()) {
            // SAFETY: a readable mapping of the loaded build, read while nothing writes it.
            bytes.extend_from_slice(unsafe {
                std::slice::from_raw_parts(range.start as *const u8, range.len())
            });
        }
    }
    assert!(!bytes.is_empty(), "the build has writable data");
    bytes
}

/// Reloads v1 into a v2 built with `fault` after `prepare`; checks the refusal names every
/// one of `named`, and that no object, global or value changed.
fn refuses(fault: &'static str, strict: bool, prepare: &str, named: &[&str]) {
    let compiler = integration_tests::gxx();
    let v1 = build(&compiler, "-O2", 1);
    let faulty = ModuleBuild {
        fault: Some(fault),
        ..ModuleBuild::of(&UNTRACKED, compiler, "-O2", 2)
    }
    .build(&modules_dir());
    let mut runtime = Runtime::load(&v1).unwrap();
    // SAFETY: the fixture exports `ut_make_world` with this signature.
    let world = unsafe { (*runtime.symbol::<MakeFn>("ut_make_world").unwrap())() };
    touch_state(&runtime, world);
    if !prepare.is_empty() {
        // SAFETY: the fixture exports `prepare` as a function without arguments.
        unsafe { (*runtime.symbol::<unsafe extern "C" fn()>(prepare).unwrap())() };
    }
    // The state first: reading it fills the fixture's lazy table, which the second read finds.
    let checksum = |runtime: &Runtime| {
        let state = state(runtime, world);
        (world_bytes(runtime, world), module_data(runtime), state)
    };
    checksum(&runtime);
    let before = checksum(&runtime);
    let reload = runtime.reload(&faulty).unwrap();
    let reload = if strict {
        reload.refusing_lost_heap_words()
    } else {
        reload
    };
    let error = reload.rehydrate_all().unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, rehydrate::Error::UnresolvableReferences { .. }),
        "{fault}: {message}"
    );
    for part in named {
        assert!(message.contains(part), "{fault}: no {part:?} in {message}");
    }
    let after = checksum(&runtime);
    assert!(
        after.0 == before.0,
        "{fault}: the world's objects are unchanged"
    );
    if after.1 != before.1 {
        let first = after.1.iter().zip(&before.1).position(|(a, b)| a != b);
        panic!(
            "{fault}: the module's globals changed, first at byte {first:?} of {} (image {:x?})",
            before.1.len(),
            runtime.image_ranges()
        );
    }
    assert_eq!(
        after.2, before.2,
        "{fault}: the module's state is unchanged"
    );
    assert_eq!(
        play(&runtime, world),
        expected(1),
        "{fault}: the old build still runs"
    );
    // SAFETY: the fixture exports `ut_destroy_world`; the world was made by the module.
    unsafe { (*runtime.symbol::<DestroyFn>("ut_destroy_world").unwrap())(world) };
}

#[test]
fn a_function_that_a_carried_global_points_at_and_the_new_build_lacks_refuses_the_reload() {
    refuses(
        "FAULT_NO_HEAL",
        false,
        "",
        &[
            "heal(int)",
            "does not define",
            "the global `ut::favourite_effect`+0x0",
        ],
    );
}

#[test]
fn strictly_heap_words_pointing_at_a_lost_function_refuse_the_reload_too() {
    // The world's pickups (this thread's malloc arena: an anonymous mapping) hold `heal` in a
    // function pointer and a std::function.
    refuses(
        "FAULT_NO_HEAL",
        true,
        "",
        &["heal(int)", "in an anonymous mapping"],
    );
}

#[test]
fn a_pointer_into_a_global_that_shrank_refuses_the_reload() {
    refuses(
        "FAULT_SHRUNK_HISTORY",
        false,
        "",
        &[
            "`ut::history`+0x18",
            "is only 16 bytes",
            "the global `ut::cursor`+0x0",
        ],
    );
}

#[test]
fn a_vptr_of_a_class_whose_subobjects_moved_refuses_the_reload() {
    refuses(
        "FAULT_SWAPPED_BASES",
        false,
        "",
        &[
            "vtable for ut::Mixed",
            "subobjects changed",
            "the global `ut::mixed`",
        ],
    );
}

/// v2 adds a field to `ut::Circle` in its padding (the size stays): objects of it that nothing
/// tracks (in the heap, in the module's pool) cannot be kept, whatever memory holds them.
#[test]
fn an_untracked_object_of_a_class_whose_layout_changed_refuses_the_reload() {
    refuses(
        "FAULT_CIRCLE_LAYOUT",
        false,
        "",
        &[
            "vtable for ut::Circle",
            "layout changed",
            "field ut::Circle::shine added",
            "in an anonymous mapping",
        ],
    );
}

/// The same change with no `ut::Circle` in the heap: the global one starts fresh (its bytes
/// would be read with the new layout), named with the reason; everything else is carried.
#[test]
fn a_global_object_of_a_class_whose_layout_changed_starts_fresh() {
    let compiler = integration_tests::gxx();
    let v1 = build(&compiler, "-O2", 1);
    let faulty = ModuleBuild {
        fault: Some("FAULT_CIRCLE_LAYOUT"),
        ..ModuleBuild::of(&UNTRACKED, compiler, "-O2", 2)
    }
    .build(&modules_dir());
    let mut runtime = Runtime::load(&v1).unwrap();
    let report = runtime.reload(&faulty).unwrap().rehydrate_all().unwrap();
    let globals = &report.globals;
    let fresh = globals
        .fresh
        .iter()
        .find(|f| f.name == "ut::spare_circle")
        .unwrap_or_else(|| panic!("ut::spare_circle is not fresh: {globals:#?}"));
    assert!(
        fresh.reason.contains("layout changed") && fresh.reason.contains("vtable for ut::Circle"),
        "{}",
        fresh.reason
    );
    assert!(!globals
        .carried
        .iter()
        .any(|c| c.starts_with("ut::spare_circle")));
    assert!(globals.carried.iter().any(|c| c.starts_with("ut::touches")));
    assert!(report.old_image_unmapped);
    assert_eq!(report.audit.stale, 0, "{report:#?}");
}

/// A thread_local object with a destructor, constructed on this thread: glibc keeps the old
/// build loaded past its `dlclose` until the thread exits; the reload still re-points
/// everything, and the report says why the old build is still mapped.
#[test]
fn a_thread_local_object_with_a_destructor_keeps_the_old_build_mapped_and_the_report_says_why() {
    let compiler = integration_tests::gxx();
    let build = |version| {
        ModuleBuild {
            fault: Some("FAULT_THREAD_LOCAL_STRING"),
            ..ModuleBuild::of(&UNTRACKED, compiler.clone(), "-O2", version)
        }
        .build(&modules_dir())
    };
    let (v1, v2) = (build(1), build(2));
    let mut runtime = Runtime::load(&v1).unwrap();
    // SAFETY: the fixture exports `ut_make_world` with this signature.
    let world = unsafe { (*runtime.symbol::<MakeFn>("ut_make_world").unwrap())() };
    touch_state(&runtime, world); // constructs the thread_local string on this thread
    let report = runtime.reload(&v2).unwrap().rehydrate_all().unwrap();
    assert!(
        !report.old_image_unmapped,
        "glibc keeps the old build loaded"
    );
    let why = report
        .old_image_kept_because
        .as_deref()
        .unwrap_or_else(|| panic!("no reason given: {report:#?}"));
    assert!(
        why.contains("thread_local") && why.contains("ut::per_thread_name"),
        "{why}"
    );
    assert_eq!(report.audit.stale, 0, "{report:#?}");
    assert_eq!(play(&runtime, world), expected(2));
    // SAFETY: the fixture exports `ut_destroy_world`; the world was made by the module.
    unsafe { (*runtime.symbol::<DestroyFn>("ut_destroy_world").unwrap())(world) };
}

#[test]
fn a_pointer_into_the_middle_of_a_function_refuses_the_reload() {
    // Any v2 would do: the word points inside old code, which nothing can map.
    refuses(
        "FAULT_SHRUNK_HISTORY",
        false,
        "ut_hold_inside_code",
        &[
            "points inside the function",
            "triple(int)`+0x1",
            "the global `ut::resume_point`",
        ],
    );
}
