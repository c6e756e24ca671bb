//! A real open-source C++ library, not written here and not modified, reloaded while its
//! objects are alive: Box2D 2.4.1 from Debian's source package (`scripts/fetch-third-party.sh`),
//! built into the module with a small scene driver (`fixtures/box2d`). Box2D keeps its contacts
//! and joints in its own block allocator (vptrs nobody tracks), its contact manager points at
//! default filter and listener objects that are globals of the library, and `b2Contact` fills a
//! static table of create/destroy function pointers on first use.
//!
//! The simulation is stepped, reloaded v1 → v2 → v1 between steps, and must end bitwise equal
//! to a run that never reloaded; after each reload nothing points into the old build.

use std::ffi::c_void;
use std::path::{Path, PathBuf};

use integration_tests::{compilers, Compiler};
use rehydrate::{ReloadReport, Runtime};

type MakeFn = unsafe extern "C" fn() -> *mut c_void;
type StepFn = unsafe extern "C" fn(*mut c_void, i32);
type SnapshotFn = unsafe extern "C" fn(*const c_void, *mut f32, i32) -> i32;
type CountsFn = unsafe extern "C" fn(*const c_void, *mut i32, *mut i32, *mut i32);
type VersionFn = unsafe extern "C" fn() -> i32;
type DestroyFn = unsafe extern "C" fn(*mut c_void);

fn box2d_source() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../third-party/box2d-2.4.1");
    assert!(
        source.join("src").is_dir(),
        "{} is missing: run `bash scripts/fetch-third-party.sh` (scripts/test.sh does)",
        source.display()
    );
    source
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/box2d")
}

fn modules_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("box2d-modules");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn common_flags(compiler: &Compiler) -> Vec<String> {
    let mut flags = vec!["-std=c++17".to_string(), "-O2".into(), "-fPIC".into()];
    if compiler.name == "g++" {
        flags.push("-fno-gnu-unique".into());
    }
    flags.push(format!("-I{}", box2d_source().join("include").display()));
    flags.push(format!("-I{}", box2d_source().join("src").display()));
    flags
}

/// Box2D's translation units compiled once for `compiler`, two at a time.
fn library_objects(compiler: &Compiler) -> Vec<PathBuf> {
    let out = modules_dir().join(format!("box2d-objects-{}", compiler.name));
    std::fs::create_dir_all(&out).unwrap();
    let mut sources: Vec<PathBuf> = Vec::new();
    for group in ["collision", "common", "dynamics", "rope"] {
        for entry in std::fs::read_dir(box2d_source().join("src").join(group)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "cpp") {
                sources.push(path);
            }
        }
    }
    sources.sort();
    let flags = common_flags(compiler);
    let objects: Vec<PathBuf> = sources
        .iter()
        .map(|s| out.join(s.file_stem().unwrap()).with_extension("o"))
        .collect();
    std::thread::scope(|scope| {
        for half in [0, 1] {
            let (sources, objects, flags) = (&sources, &objects, &flags);
            scope.spawn(move || {
                for (source, object) in sources.iter().zip(objects).skip(half).step_by(2) {
                    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
                    args.push("-c");
                    compiler.compile(&[source], object, &args);
                }
            });
        }
    });
    objects
}

/// The module: Box2D, the scene driver built as `version`, and the shim.
fn module(compiler: &Compiler, objects: &[PathBuf], version: u32) -> PathBuf {
    let dir = modules_dir();
    let define = format!("-DMODULE_VERSION={version}");
    let generated = dir.join(format!("box2d-{}-v{version}-generated", compiler.name));
    let include_rehydrate = format!("-I{}", rehydrate::include_dir().display());
    let request = layout_gen::Request {
        headers: vec![fixture().join("scene.hpp")],
        clang_args: vec![define.clone(), include_rehydrate.clone()],
        selection: layout_gen::Selection {
            classes: vec!["bx::Scene".into()],
            ..Default::default()
        },
    };
    let shim = layout_gen::generate(&request, &generated)
        .expect("the scene's tables generate")
        .cpp_shim;
    let library = dir.join(format!("libbox2d-scene-{}-v{version}.so", compiler.name));
    let mut args: Vec<String> = common_flags(compiler);
    args.extend(["-shared".into(), define, include_rehydrate]);
    args.push(format!("-I{}", fixture().display()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let scene = fixture().join("scene.cpp");
    let mut inputs: Vec<&Path> = vec![&scene, &shim];
    inputs.extend(objects.iter().map(PathBuf::as_path));
    compiler.compile(&inputs, &library, &args);
    library
}

struct Scene<'r> {
    runtime: &'r Runtime,
    scene: *mut c_void,
}

impl Scene<'_> {
    fn make(runtime: &Runtime) -> Scene<'_> {
        // SAFETY: the driver exports `bx_make_scene` with this signature.
        let scene = unsafe { (*runtime.symbol::<MakeFn>("bx_make_scene").unwrap())() };
        Scene { runtime, scene }
    }

    fn step(&self, steps: i32) {
        // SAFETY: the driver exports `bx_step` with this signature; the scene is live.
        unsafe { (*self.runtime.symbol::<StepFn>("bx_step").unwrap())(self.scene, steps) };
    }

    /// Every body's state, as bits (bitwise comparison).
    fn snapshot(&self) -> Vec<u32> {
        // SAFETY: the driver exports `bx_snapshot` with this signature.
        let snapshot = unsafe { self.runtime.symbol::<SnapshotFn>("bx_snapshot") }.unwrap();
        let mut out = vec![0f32; 1024];
        // SAFETY: a live scene; `out` has room for 1024 floats.
        let n = unsafe { snapshot(self.scene, out.as_mut_ptr(), 1024) } as usize;
        assert!(n <= out.len());
        out[..n].iter().map(|f| f.to_bits()).collect()
    }

    /// (bodies, contacts, joints).
    fn counts(&self) -> (i32, i32, i32) {
        let (mut bodies, mut contacts, mut joints) = (0, 0, 0);
        // SAFETY: the driver exports `bx_counts` with this signature; three out-parameters.
        unsafe {
            (*self.runtime.symbol::<CountsFn>("bx_counts").unwrap())(
                self.scene,
                &mut bodies,
                &mut contacts,
                &mut joints,
            )
        };
        (bodies, contacts, joints)
    }

    fn destroy(self) {
        // SAFETY: the driver exports `bx_destroy_scene`; the scene was made by the driver.
        unsafe {
            (*self
                .runtime
                .symbol::<DestroyFn>("bx_destroy_scene")
                .unwrap())(self.scene)
        };
    }
}

fn version(runtime: &Runtime) -> i32 {
    // SAFETY: the driver exports `bx_version` with this signature.
    unsafe { (*runtime.symbol::<VersionFn>("bx_version").unwrap())() }
}

/// Steps of each stretch between reloads.
const STRETCH: i32 = 90;

fn reload_a_running_simulation(compiler: &Compiler) {
    let objects = library_objects(compiler);
    let v1 = module(compiler, &objects, 1);
    let v2 = module(compiler, &objects, 2);

    // The reference: the same steps, never reloaded.
    let reference = {
        let runtime = Runtime::load(&v1).unwrap();
        let scene = Scene::make(&runtime);
        scene.step(3 * STRETCH);
        let snapshot = scene.snapshot();
        scene.destroy();
        snapshot
    };

    let mut runtime = Runtime::load(&v1).unwrap();
    let scene = Scene::make(&runtime).scene;
    let stepped = |runtime: &Runtime| Scene { runtime, scene }.step(STRETCH);
    stepped(&runtime);
    let (bodies, contacts, joints) = Scene {
        runtime: &runtime,
        scene,
    }
    .counts();
    assert!(
        contacts > 10 && joints == 9,
        "{bodies} bodies, {contacts} contacts, {joints} joints"
    );
    for (step, (path, expected_version)) in [(&v2, 2), (&v1, 1)].into_iter().enumerate() {
        // Kept complemented: the reload re-points every word whose value lies in the old build.
        let old_ranges: Vec<(usize, usize)> = runtime
            .image_ranges()
            .iter()
            .map(|r| (!r.start, !r.end))
            .collect();
        let report = runtime.reload(path).unwrap().rehydrate_all().unwrap();
        let context = format!("{} reload {step}: {report:#?}", compiler.name);
        assert_reload_left_nothing_behind(&report, &context);
        // Box2D's contacts and the world's shapes are polymorphic, all untracked.
        assert!(
            report.references.vptrs as i32 >= contacts + bodies,
            "{context}"
        );
        let new_ranges = runtime.image_ranges();
        let apart = |&(start, end): &(usize, usize)| {
            new_ranges
                .iter()
                .all(|new| new.end <= !start || !end <= new.start)
        };
        assert!(
            old_ranges.iter().all(apart),
            "{context}: the new build {new_ranges:x?} overlaps the old one {old_ranges:x?}"
        );
        assert_eq!(version(&runtime), expected_version, "{context}");
        stepped(&runtime);
    }
    let reloaded = Scene {
        runtime: &runtime,
        scene,
    };
    assert_eq!(
        reloaded.snapshot(),
        reference,
        "{}: the reloaded simulation continues bitwise as one that never reloaded",
        compiler.name
    );
    reloaded.destroy();
}

fn assert_reload_left_nothing_behind(report: &ReloadReport, context: &str) {
    assert!(report.old_image_unmapped, "{context}");
    assert!(report.old_range_reserved, "{context}");
    assert_eq!(report.audit.stale, 0, "{context}");
    let carried = |name: &str| report.globals.carried.iter().any(|c| c == name);
    for global in [
        "b2Contact::s_registers",
        "b2Contact::s_initialized",
        "b2_defaultFilter",
        "b2_defaultListener",
    ] {
        assert!(carried(global), "{context}: {global} carried");
    }
    assert!(
        report.references.functions > 0,
        "{context}: the register table re-pointed"
    );
    assert!(
        report.references.data > 0,
        "{context}: pointers to the default listener"
    );
}

#[test]
fn box2d_keeps_simulating_bitwise_across_reloads() {
    for compiler in compilers() {
        reload_a_running_simulation(&compiler);
    }
}

/// Box2D itself as the module: every class its headers define (the public ones and the
/// contact headers of `src/dynamics`) described by the shim.
fn whole_library_module(compiler: &Compiler, objects: &[PathBuf]) -> PathBuf {
    let dir = modules_dir();
    let mut headers: Vec<PathBuf> = std::fs::read_dir(box2d_source().join("include/box2d"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .chain(
            std::fs::read_dir(box2d_source().join("src/dynamics"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().ends_with("_contact.h")),
        )
        .filter(|p| p.extension().is_some_and(|e| e == "h"))
        .collect();
    headers.sort();
    let generated = dir.join(format!("box2d-whole-{}-generated", compiler.name));
    let request = layout_gen::Request {
        headers,
        clang_args: vec![
            format!("-I{}", box2d_source().join("include").display()),
            format!("-I{}", box2d_source().join("src").display()),
        ],
        selection: layout_gen::Selection::default(),
    };
    let shim = layout_gen::generate(&request, &generated)
        .expect("Box2D's tables generate")
        .cpp_shim;
    let library = dir.join(format!("libbox2d-whole-{}.so", compiler.name));
    let mut args: Vec<String> = common_flags(compiler);
    args.extend([
        "-shared".into(),
        format!("-I{}", rehydrate::include_dir().display()),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut inputs: Vec<&Path> = vec![&shim];
    inputs.extend(objects.iter().map(PathBuf::as_path));
    compiler.compile(&inputs, &library, &args);
    library
}

/// The constructor analysis over every polymorphic class of Box2D: where it gives up it says
/// why (the list is printed), it never disagrees with the probe or the table, and it reads
/// the classes without a default constructor (most of them) that the probe cannot.
#[test]
fn the_constructor_analysis_reads_box2d() {
    for compiler in compilers() {
        let objects = library_objects(&compiler);
        let library = whole_library_module(&compiler, &objects);
        let runtime = Runtime::load_with(&library, rehydrate::ProbePolicy::Always).unwrap();
        let polymorphic: Vec<_> = runtime
            .inspect()
            .into_iter()
            .filter(|c| !c.table_vptr_slots.is_empty())
            .collect();
        let mut handled = 0;
        let mut probed = 0;
        eprintln!(
            "{}: {} polymorphic classes",
            compiler.name,
            polymorphic.len()
        );
        for class in &polymorphic {
            assert!(
                class.agrees(),
                "{}: {}: {:?}",
                compiler.name,
                class.class,
                class.disagreements
            );
            if matches!(class.probe, Some(Ok(_))) {
                probed += 1;
            }
            match &class.analysis {
                rehydrate::analysis::Analysis::Found(reading) => {
                    handled += 1;
                    if let Some(Ok(words)) = &class.probe {
                        assert_eq!(
                            &reading.words(&class.names),
                            words,
                            "{}: {}",
                            compiler.name,
                            class.class
                        );
                    }
                }
                rehydrate::analysis::Analysis::GaveUp { reason, .. } => {
                    eprintln!("  gave up on {}: {reason}", class.class)
                }
            }
        }
        eprintln!(
            "{}: the analysis reads {handled} of {} polymorphic classes; the probe {probed}",
            compiler.name,
            polymorphic.len()
        );
        assert!(polymorphic.len() >= 30, "{}", polymorphic.len());
        assert!(handled > probed, "{handled} read, {probed} probed");
    }
}
