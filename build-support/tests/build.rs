//! build-support against real compilers and libclang: what it builds, what it skips when
//! nothing changed, and how it reports errors.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use build_support::{BuildError, Module};

const HEADER: &str = r#"#pragma once
#include "rehydrate/module_abi.h"
namespace demo {
struct REHYDRATE_RELOADABLE Shape {
    virtual ~Shape() = default;
    virtual int sides() const { return 0; }
    int id = 0;
};
struct REHYDRATE_RELOADABLE Square final : Shape {
    int sides() const override;
    float side = 1;
};
}
"#;

const SOURCE: &str = r#"#include "shapes.hpp"
namespace demo {
int Square::sides() const { return 4; }
}
// An inline function with a static local: g++ gives `counter` STB_GNU_UNIQUE binding unless
// the module is built with -fno-gnu-unique, and such a library can never be unloaded.
inline int& counter() { static int value = 0; return value; }
extern "C" int demo_count() { return ++counter(); }
"#;

/// A module folder with `shapes.hpp` and `shapes.cpp`, and the module built from it into `out`.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(header: &str, source: &str) -> Project {
        let dir = tempfile::tempdir().expect("temporary folder");
        std::fs::write(dir.path().join("shapes.hpp"), header).expect("write header");
        std::fs::write(dir.path().join("shapes.cpp"), source).expect("write source");
        Project { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn out(&self) -> PathBuf {
        self.path("out")
    }

    /// The module as a build script would describe it; cargo's settings set by hand.
    fn module(&self) -> Module {
        let mut module = Module::new("shapes");
        module
            .header(self.path("shapes.hpp"))
            .source(self.path("shapes.cpp"))
            .include(self.dir.path())
            .annotated()
            .out_dir(self.out());
        let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
        module
            .cc_build()
            .target(&target)
            .host(&target)
            .opt_level(0)
            .debug(false);
        module
    }
}

/// Builds `project`, expecting an error of the kind `expected` accepts and no library; returns
/// the error's message followed by its causes (`source()`), one per line.
fn failure(project: &Project, expected: impl Fn(&BuildError) -> bool) -> String {
    let error = project.module().build().expect_err("the build fails");
    let mut message = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(next) = cause {
        message.push_str(&format!("\ncaused by: {next}"));
        cause = next.source();
    }
    assert!(expected(&error), "unexpected error: {message}");
    assert!(!project.out().join("libshapes.so").exists(), "{message}");
    message
}

/// Every file under `dir` with its modification time.
fn mtimes(dir: &Path) -> Vec<(PathBuf, SystemTime)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let modified = path.metadata().and_then(|m| m.modified()).expect("mtime");
                files.push((path, modified));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn builds_a_loadable_library_then_rebuilds_only_what_changed() {
    let project = Project::new(HEADER, SOURCE);
    let first = project.module().build().expect("first build");
    assert_eq!(first.classes, 2);
    assert_eq!(
        first.compiled.len(),
        2,
        "the source and the shim: {first:?}"
    );
    assert!(first.linked);
    assert!(first.inputs.contains(&project.path("shapes.hpp")));
    for file in [
        "libshapes.so",
        "layout_tables.rs",
        "rehydrate_shim.cpp",
        "recipe.json",
        "module.rs",
    ] {
        assert!(project.out().join(file).is_file(), "{file} was not written");
    }
    let runtime = rehydrate::Runtime::load(&first.library).expect("the library loads");
    let square = runtime
        .create("demo::Square")
        .expect("the module's shim constructs");
    drop(square);
    drop(runtime);

    // Nothing changed: nothing runs and no file is touched.
    let before = mtimes(&project.out());
    let second = project.module().build().expect("second build");
    assert!(second.was_up_to_date(), "{second:?}");
    assert_eq!(mtimes(&project.out()), before);

    // Rewriting a file with the same contents changes nothing either (content, not mtime).
    std::fs::write(project.path("shapes.cpp"), SOURCE).expect("rewrite source");
    assert!(project
        .module()
        .build()
        .expect("third build")
        .was_up_to_date());
    assert_eq!(mtimes(&project.out()), before);

    // A real edit recompiles that translation unit alone and relinks.
    let edited = SOURCE.replace("return 4;", "return 40;");
    std::fs::write(project.path("shapes.cpp"), edited).expect("edit source");
    let fourth = project.module().build().expect("fourth build");
    assert_eq!(fourth.compiled, vec![project.path("shapes.cpp")]);
    assert!(fourth.linked && fourth.generated.is_empty(), "{fourth:?}");
}

#[test]
fn a_substitute_compiles_in_place_of_its_source_and_a_stray_one_is_refused() {
    let project = Project::new(HEADER, SOURCE);
    let recipe = project.module().recipe().expect("recipe");
    let edited = project.path("edited.cpp");
    std::fs::write(&edited, SOURCE.replace("return 4;", "return 40;")).expect("write");
    let swap = |replace: PathBuf| build_support::Substitution {
        replace,
        with: edited.clone(),
    };
    let dir = project.path("live");
    let report = recipe
        .build_with(&dir, &[swap(project.path("shapes.cpp"))], |_| {})
        .expect("substituted build");
    assert!(report.compiled.contains(&edited), "{report:?}");
    assert!(!report.compiled.contains(&project.path("shapes.cpp")));

    let stray = project.path("elsewhere.cpp");
    let error = recipe
        .build_with(&project.path("stray"), &[swap(stray)], |_| {})
        .expect_err("not a source");
    assert!(
        error
            .to_string()
            .contains("elsewhere.cpp: not a source of module `shapes`"),
        "{error}"
    );
    assert!(
        !project.path("stray").exists(),
        "nothing is written for a refused build"
    );
}

#[test]
fn the_library_has_no_gnu_unique_symbols_and_no_undefined_ones() {
    let project = Project::new(HEADER, SOURCE);
    let report = project.module().build().expect("build");
    let symbols = Command::new("readelf")
        .args(["--dyn-syms", "-W"])
        .arg(&report.library)
        .output()
        .expect("readelf runs");
    let symbols = String::from_utf8_lossy(&symbols.stdout);
    assert!(symbols.contains("demo_count"), "{symbols}");
    assert!(
        !symbols.contains("UNIQUE"),
        "STB_GNU_UNIQUE symbols keep the library mapped:\n{symbols}"
    );

    // -Wl,-z,defs: a symbol defined nowhere fails the link, naming the symbol.
    let project = Project::new(
        HEADER,
        &format!("{SOURCE}\nint missing();\nint use() {{ return missing(); }}\n"),
    );
    let message = failure(&project, |e| matches!(e, BuildError::Link { .. }));
    assert!(message.contains("missing"), "{message}");
}

#[test]
fn a_header_error_names_the_file_and_line() {
    let broken = HEADER.replace("int id = 0;", "int id = ;");
    let project = Project::new(&broken, SOURCE);
    let message = failure(&project, |e| matches!(e, BuildError::Layout { .. }));
    let (error, cause) = message.split_once("\ncaused by: ").expect("a cause");
    assert!(
        !error.contains("shapes.hpp:7:"),
        "the cause is not repeated: {message}"
    );
    assert!(cause.contains("shapes.hpp:7:"), "{message}");
}

#[test]
fn outside_a_build_script_the_output_folder_must_be_named() {
    let mut module = Module::new("nowhere");
    module.header("nowhere.hpp").source("nowhere.cpp");
    // Test binaries do not get OUT_DIR from cargo (only build scripts do).
    assert!(std::env::var_os("OUT_DIR").is_none());
    let error = module.output_dir().expect_err("no silent fallback to `.`");
    assert!(matches!(error, BuildError::NoOutputDir { .. }), "{error}");
    assert!(error.to_string().contains(".out_dir("), "{error}");
}

#[test]
fn a_source_error_names_the_file_and_line() {
    let project = Project::new(HEADER, &SOURCE.replace("return 4;", "return four;"));
    let message = failure(&project, |e| matches!(e, BuildError::Compile { .. }));
    assert!(message.contains("shapes.cpp:3:"), "{message}");
    assert!(message.contains("four"), "{message}");
}

#[test]
fn a_class_whose_layout_clang_and_the_compiler_disagree_on_is_named() {
    // The analysis sees `side` as a float, the compiler (through a define only it gets) as a
    // double: the shim's static_asserts catch it and name the class.
    let header = HEADER
        .replace("float side = 1;", "SIDE_TYPE side = 1;")
        .replace(
            "namespace demo {",
            "#ifndef SIDE_TYPE\n#define SIDE_TYPE float\n#endif\nnamespace demo {",
        );
    let project = Project::new(&header, SOURCE);
    let mut module = project.module();
    module.cc_build().define("SIDE_TYPE", "double");
    let message = module.build().expect_err("layout mismatch").to_string();
    assert!(message.contains("demo::Square"), "{message}");
    assert!(message.contains("rehydrate_shim.cpp:"), "{message}");
    assert!(
        message.contains("checks of the shim:\n")
            && message.contains("layout_check<3, __builtin_offsetof(::demo::Square, side), 12>")
            && message.contains("template struct class_check<::demo::Square, "),
        "{message}"
    );
}

/// Set in the child process of `build_or_exit_reports_and_exits_non_zero`.
const CHILD: &str = "BUILD_SUPPORT_TEST_BROKEN_PROJECT";

#[test]
fn build_or_exit_reports_and_exits_non_zero() {
    if let Some(dir) = std::env::var_os(CHILD) {
        // The child: behave as a build script whose header is broken.
        let project = Project {
            dir: tempfile::TempDir::new_in(dir).expect("folder"),
        };
        std::fs::write(
            project.path("shapes.hpp"),
            HEADER.replace("int id = 0;", "int id = ;"),
        )
        .expect("header");
        std::fs::write(project.path("shapes.cpp"), SOURCE).expect("source");
        project.module().build_or_exit();
        unreachable!("build_or_exit returned on a broken header");
    }
    let parent = tempfile::tempdir().expect("folder");
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "build_or_exit_reports_and_exits_non_zero",
            "--nocapture",
        ])
        .env(CHILD, parent.path())
        .output()
        .expect("child runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: building module `shapes` failed"),
        "{stderr}"
    );
    assert!(stderr.contains("shapes.hpp:7:"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn clang_builds_the_module_too_without_gcc_only_flags() {
    let project = Project::new(HEADER, SOURCE);
    let mut module = project.module();
    let clang = ["clang++-19", "clang++"]
        .into_iter()
        .find(|name| Command::new(name).arg("--version").output().is_ok())
        .expect("scripts/setup.sh installs clang");
    module.cc_build().compiler(clang);
    let recipe = module.recipe().expect("recipe");
    assert!(!recipe.compiler.is_gcc, "{:?}", recipe.compiler);
    let report = module.build().expect("clang build");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let runtime = rehydrate::Runtime::load(&report.library).expect("the library loads");
    drop(runtime.create("demo::Square").expect("constructs"));
}

/// Builds `project` with a compiler wrapper that, after compiling `shapes.cpp`, waits until the
/// test has rewritten `edited` (so the edit lands after the compiler read its inputs but before
/// the build finishes); then the next build must compile `shapes.cpp` again.
fn an_edit_saved_during_the_compile_is_not_lost(edited: &str, from: &str, to: &str) {
    use std::time::{Duration, Instant};
    let project = Project::new(HEADER, SOURCE);
    let compiled = project.path("compiled.marker");
    let saved = project.path("saved.marker");
    let wrapper = project.path("slow-c++");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             g++ \"$@\" || exit $?\n\
             case \"$*\" in *shapes.cpp*)\n\
               touch '{compiled}'\n\
               i=0; while [ ! -e '{saved}' ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done;;\n\
             esac\n",
            compiled = compiled.display(),
            saved = saved.display()
        ),
    )
    .expect("write the wrapper");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let module = || {
        let mut module = project.module();
        module.cc_build().compiler(&wrapper);
        module
    };
    std::thread::scope(|scope| {
        let first = scope.spawn(|| module().build().expect("first build"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !compiled.exists() {
            assert!(Instant::now() < deadline, "the compiler never ran");
            std::thread::sleep(Duration::from_millis(20));
        }
        let path = project.path(edited);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains(from));
        std::fs::write(&path, text.replace(from, to)).expect("save the edit");
        std::fs::write(&saved, "").expect("marker");
        let first = first.join().expect("the build thread");
        assert!(first.compiled.contains(&project.path("shapes.cpp")));
    });
    let second = module().build().expect("second build");
    assert!(
        second.compiled.contains(&project.path("shapes.cpp")),
        "the edit of {edited} saved during the first compile is compiled now: {second:?}"
    );
    let third = module().build().expect("third build");
    assert!(third.was_up_to_date(), "{third:?}");
}

#[test]
fn a_source_saved_during_its_compile_is_compiled_again() {
    an_edit_saved_during_the_compile_is_not_lost("shapes.cpp", "return 4;", "return 5;");
}

#[test]
fn a_header_saved_during_a_compile_that_read_it_first_is_compiled_again() {
    an_edit_saved_during_the_compile_is_not_lost(
        "shapes.hpp",
        "float side = 1;",
        "float side = 2;",
    );
}
