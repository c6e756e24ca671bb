//! Helpers shared by the integration tests: finding the two C++ compilers and running them.
//!
//! Tests build real C++ with real compilers; nothing here mocks a compiler or a loader.

pub mod record_layouts;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A C++ compiler the tests build with.
#[derive(Debug, Clone)]
pub struct Compiler {
    /// Short name for messages (`g++`, `clang++`).
    pub name: &'static str,
    /// Executable to run.
    pub program: PathBuf,
}

/// Both compilers the project supports. Panics with the install command when one is missing:
/// the README's test command installs them, so a missing compiler is a set-up error.
pub fn compilers() -> Vec<Compiler> {
    vec![gxx(), clangxx()]
}

/// The GNU C++ compiler.
pub fn gxx() -> Compiler {
    Compiler {
        name: "g++",
        program: find_program(&["g++"]),
    }
}

/// The clang C++ compiler (the versioned Debian name first).
pub fn clangxx() -> Compiler {
    Compiler {
        name: "clang++",
        program: find_program(&["clang++-19", "clang++"]),
    }
}

fn find_program(candidates: &[&str]) -> PathBuf {
    for candidate in candidates {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {candidate}"))
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string());
        if let Some(path) = found.filter(|p| !p.is_empty()) {
            return PathBuf::from(path);
        }
    }
    panic!("none of {candidates:?} is installed; run `bash scripts/setup.sh` first")
}

impl Compiler {
    /// Compiles `sources` into `output` with `args`, panicking with the compiler's own output
    /// (file:line diagnostics) on failure. The output is written beside and renamed into
    /// place under a name no other compilation shares: a test's child process builds the same
    /// library while the parent's tests load it, two tests of one process may build the same
    /// object, and a reader must never see half a file.
    pub fn compile(&self, sources: &[&Path], output: &Path, args: &[&str]) {
        static COMPILATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let compilation = COMPILATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut partial = output.file_name().unwrap_or_default().to_os_string();
        partial.push(format!(".{}-{compilation}.partial", std::process::id()));
        let partial = output.with_file_name(partial);
        let result = Command::new(&self.program)
            .args(args)
            .args(sources)
            .arg("-o")
            .arg(&partial)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.program.display()));
        assert!(
            result.status.success(),
            "{} failed on {:?}:\n{}",
            self.name,
            sources,
            String::from_utf8_lossy(&result.stderr)
        );
        let warnings = String::from_utf8_lossy(&result.stderr);
        assert!(
            !warnings.contains("warning:"),
            "{} warned on {:?}:\n{warnings}",
            self.name,
            sources
        );
        std::fs::rename(&partial, output)
            .unwrap_or_else(|e| panic!("cannot rename {} into place: {e}", partial.display()));
    }
}

/// Whether this test process runs under valgrind, which maps all of the program's memory
/// writable and executable: a test's "no writable+executable mapping" check means nothing
/// there (it still runs natively).
pub fn under_valgrind() -> bool {
    std::env::var_os("LD_PRELOAD").is_some_and(|p| p.to_string_lossy().contains("vgpreload"))
}

/// Runs a program and returns its standard output, panicking when it fails.
pub fn run(program: &Path) -> String {
    let out = Command::new(program)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} failed: {}\n{}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("program printed UTF-8")
}

/// A C++ module kept under `tests/fixtures/`.
#[derive(Debug)]
pub struct Fixture {
    /// Folder under `tests/fixtures/`.
    pub folder: &'static str,
    /// The header layout-gen reads.
    pub header: &'static str,
    /// The module's sources.
    pub sources: &'static [&'static str],
    /// Whether the module links the never-reloaded tally library ([`tally_library`]).
    pub links_tally: bool,
    /// The classes the shim describes.
    pub classes: &'static [&'static str],
}

/// Every class of the reload fixture.
pub const RELOAD_CLASSES: [&str; 5] = [
    "rl::Single",
    "rl::Multi",
    "rl::Diamond",
    "rl::Holder",
    "rl::Deep",
];

/// The reload fixture: every shape, in two versions, with fault injection.
pub static RELOAD: Fixture = Fixture {
    folder: "reload",
    header: "shapes.hpp",
    sources: &["module.cpp"],
    links_tally: false,
    classes: &RELOAD_CLASSES,
};

/// Every class the lifecycle fixture's shim describes (`lc::Undescribed` is left out on purpose).
pub const LIFECYCLE_CLASSES: [&str; 3] = ["lc::Child", "lc::Parent", "lc::Fresh"];

/// The lifecycle fixture: a parent whose constructor and destructor track and untrack children
/// with module code, an object made by a static initialiser, and an undescribed type.
pub static LIFECYCLE: Fixture = Fixture {
    folder: "lifecycle",
    header: "lifecycle.hpp",
    sources: &["lifecycle.cpp"],
    links_tally: false,
    classes: &LIFECYCLE_CLASSES,
};

/// The standard-library fixture: classes with `std::string`, `std::vector` and `std::map` members.
pub static STDLIB: Fixture = Fixture {
    folder: "stdlib",
    header: "stdlib.hpp",
    sources: &["stdlib.cpp"],
    links_tally: false,
    classes: &["st::Component", "st::Inventory", "st::Tool"],
};

/// The selection fixture as a module: a document class with a protected base destructor, a class
/// of template and standard-library members, a class deriving from `std::vector<int>`.
pub static SELECTION: Fixture = Fixture {
    folder: "selection",
    header: "selection.hpp",
    sources: &["selection.cpp"],
    links_tally: false,
    classes: &[
        "sel::Document",
        "sel::HoldsTemplates",
        "sel::FromVector",
        "sel::Derived<int>",
        "sel::Enemy",
    ],
};

/// The untracked fixture: ordinary game code whose objects nobody tracks (plain `new`, a pool,
/// `make_shared`), with function pointers, `std::function`s, string literals and pointers to
/// the module's globals; only `ut::Circle` is described, nothing relies on it.
pub static UNTRACKED: Fixture = Fixture {
    folder: "untracked",
    header: "untracked.hpp",
    sources: &["untracked.cpp", "state.cpp"],
    links_tally: true,
    classes: &["ut::Circle"],
};

/// The threads fixture: objects other threads call into while the main thread reloads, and
/// a function that keeps a thread inside the module.
pub static THREADS: Fixture = Fixture {
    folder: "threads",
    header: "threads.hpp",
    sources: &["threads.cpp"],
    links_tally: false,
    classes: &["th::Worker", "th::Busy"],
};

/// The constructor-analysis fixture: every inheritance shape, polymorphic members and
/// arrays, templates, standard-library members; classes without a default constructor, with
/// private constructors, with a loop and with branches in the constructor.
pub static ANALYSIS: Fixture = Fixture {
    folder: "analysis",
    header: "analysis.hpp",
    sources: &["analysis.cpp"],
    links_tally: false,
    classes: &ANALYSIS_CLASSES,
};

/// The classes of [`ANALYSIS`]: those with a default constructor first, then
/// [`ANALYSIS_WITHOUT_DEFAULT_CONSTRUCTOR`].
pub const ANALYSIS_CLASSES: [&str; 24] = [
    "an::Base",
    "an::Single",
    "an::Left",
    "an::Right",
    "an::Multiple",
    "an::Top",
    "an::VLeft",
    "an::VRight",
    "an::Diamond",
    "an::Holder",
    "an::Deep1",
    "an::Deep2",
    "an::Deep3",
    "an::Deep4",
    "an::Box<int>",
    "an::Pair<double>",
    "an::Interfaces",
    "an::WithLibrary",
    "an::Configured",
    "an::ConfiguredDiamond",
    "an::Singleton",
    "an::Factory",
    "an::Grid",
    "an::Branchy",
];

/// The classes of [`ANALYSIS`] without a usable default constructor: the last six.
pub const ANALYSIS_WITHOUT_DEFAULT_CONSTRUCTOR: &[&str] =
    ANALYSIS_CLASSES.split_at(ANALYSIS_CLASSES.len() - 6).1;

/// The benchmark fixture: 8 classes with 1 to 5 vptr slots.
pub static BENCH: Fixture = Fixture {
    folder: "bench",
    header: "bench.hpp",
    sources: &["bench.cpp"],
    links_tally: false,
    classes: &[
        "bm::K1", "bm::K2", "bm::K3", "bm::K4", "bm::K5", "bm::K6", "bm::K7", "bm::K8",
    ],
};

/// One build of a fixture module.
#[derive(Debug, Clone)]
pub struct ModuleBuild {
    /// The module.
    pub fixture: &'static Fixture,
    /// Compiler to build with.
    pub compiler: Compiler,
    /// Optimisation flag (`-O0`, `-O2`).
    pub optimisation: &'static str,
    /// `MODULE_VERSION`.
    pub version: u32,
    /// A `FAULT_*` macro to define, if any.
    pub fault: Option<&'static str>,
    /// A class to leave out of the shim (so the module does not describe it).
    pub without_class: Option<&'static str>,
    /// More compiler flags (`-march=x86-64-v3`, `-fvisibility=hidden`, `-Wl,-Bsymbolic`).
    pub flags: &'static [&'static str],
}

impl ModuleBuild {
    /// A plain build of the reload fixture's `version`.
    pub fn new(compiler: Compiler, optimisation: &'static str, version: u32) -> Self {
        ModuleBuild {
            fixture: &RELOAD,
            compiler,
            optimisation,
            version,
            fault: None,
            without_class: None,
            flags: &[],
        }
    }

    /// A plain build of `fixture`'s `version`.
    pub fn of(
        fixture: &'static Fixture,
        compiler: Compiler,
        optimisation: &'static str,
        version: u32,
    ) -> Self {
        ModuleBuild {
            fixture,
            ..ModuleBuild::new(compiler, optimisation, version)
        }
    }

    fn name(&self) -> String {
        let flags: String = self
            .flags
            .iter()
            .map(|f| f.trim_start_matches('-').replace(['=', ',', '-'], "_"))
            .map(|f| format!("-{f}"))
            .collect();
        format!(
            "{}-{}{}{flags}-v{}{}{}",
            self.fixture.folder,
            self.compiler.name.replace('+', "x"),
            self.optimisation,
            self.version,
            self.fault.map(|f| format!("-{f}")).unwrap_or_default(),
            self.without_class
                .map(|c| format!("-without-{}", c.replace("::", "_")))
                .unwrap_or_default(),
        )
    }

    /// Builds the module into `dir` (once per process and variant) and returns the library.
    pub fn build(&self, dir: &Path) -> PathBuf {
        static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
        let name = self.name();
        let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, path)) = built.iter().find(|(n, _)| *n == name) {
            return path.clone();
        }
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(self.fixture.folder);
        let generated = dir.join(format!("{name}-generated"));
        let mut defines = vec![format!("-DMODULE_VERSION={}", self.version)];
        if let Some(fault) = self.fault {
            defines.push(format!("-D{fault}"));
        }
        let include_rehydrate = format!("-I{}", rehydrate::include_dir().display());
        let classes: Vec<String> = self
            .fixture
            .classes
            .iter()
            .filter(|c| Some(**c) != self.without_class)
            .map(|c| c.to_string())
            .collect();
        let request = layout_gen::Request {
            headers: vec![fixture.join(self.fixture.header)],
            clang_args: defines
                .iter()
                .cloned()
                .chain([include_rehydrate.clone()])
                .collect(),
            selection: layout_gen::Selection {
                classes,
                ..Default::default()
            },
        };
        let shim = layout_gen::generate(&request, &generated)
            .expect("the fixture's tables generate")
            .cpp_shim;
        let library = dir.join(format!("lib{name}.so"));
        let include_fixture = format!("-I{}", fixture.display());
        let mut args: Vec<&str> = vec![
            "-std=c++17",
            self.optimisation,
            "-fPIC",
            "-shared",
            "-Wall",
            "-Wextra",
        ];
        args.extend([include_fixture.as_str(), include_rehydrate.as_str()]);
        args.extend(defines.iter().map(String::as_str));
        args.extend(self.flags);
        if self.compiler.name == "g++" {
            args.push("-fno-gnu-unique");
        }
        let mut inputs: Vec<PathBuf> = self
            .fixture
            .sources
            .iter()
            .map(|source| fixture.join(source))
            .collect();
        inputs.push(shim);
        if self.fixture.links_tally {
            inputs.push(tally_library(dir));
        }
        let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
        self.compiler.compile(&inputs, &library, &args);
        built.push((name, library.clone()));
        library
    }
}

/// A library that is never reloaded and counts the module's objects of one kind, so a test
/// can tell whether each was destroyed exactly once: `tally_add(+1)` in a constructor,
/// `tally_add(-1)` in the destructor, `tally_alive()` the balance. Built once per test run;
/// a module links it by its path (no soname: the module's `DT_NEEDED` is that path).
/// The first call's `dir` holds it.
pub fn tally_library(dir: &Path) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let source = dir.join("tally.cpp");
            std::fs::write(
                &source,
                "static int alive = 0;\n\
                 extern \"C\" void tally_add(int change) { alive += change; }\n\
                 extern \"C\" int tally_alive(void) { return alive; }\n",
            )
            .unwrap();
            let library = dir.join(format!("libtally-{}.so", std::process::id()));
            gxx().compile(&[&source], &library, &["-fPIC", "-shared", "-O2"]);
            library
        })
        .clone()
}

/// The benchmark module (`BENCH`) built by g++ at -O2 in its two versions, into `dir`.
pub fn bench_builds(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let build = |version| {
        ModuleBuild {
            fixture: &BENCH,
            ..ModuleBuild::new(gxx(), "-O2", version)
        }
        .build(dir)
    };
    (build(1), build(2))
}

/// A tiny shared library from C++ source (for hand-written, malformed or inconsistent
/// modules), built with g++ into `dir`.
pub fn tiny_library(dir: &Path, name: &str, source: &str) -> PathBuf {
    let cpp = dir.join(format!("{name}.cpp"));
    std::fs::write(&cpp, source).unwrap();
    let library = dir.join(format!("lib{name}.so"));
    let include = format!("-I{}", rehydrate::include_dir().display());
    gxx().compile(
        &[&cpp],
        &library,
        &[
            "-std=c++17",
            "-fPIC",
            "-shared",
            "-fno-gnu-unique",
            &include,
        ],
    );
    library
}

/// One live object's class, address and bytes.
pub type ObjectBytes = (String, usize, Vec<u8>);

/// The bytes of every live object whose class the current build has an image of, sorted: to
/// show that a failed reload changed nothing, or which bytes a reload kept.
pub fn object_bytes(runtime: &rehydrate::Runtime) -> Vec<ObjectBytes> {
    let mut objects: Vec<ObjectBytes> = runtime
        .live_object_addresses()
        .into_iter()
        .filter_map(|(class, address)| {
            let size = runtime.class_image(&class).ok()?.byte_map().len();
            // SAFETY: `size` bytes of a live object, which the runtime tracks.
            let bytes = unsafe { std::slice::from_raw_parts(address as *const u8, size) }.to_vec();
            Some((class.to_string(), address, bytes))
        })
        .collect();
    objects.sort();
    objects
}

/// Every vptr slot of every live object points into the current build's mapping (checked
/// before anything calls through one: a stale vptr would crash, not fail).
pub fn assert_vptrs_in_current_build(runtime: &rehydrate::Runtime) {
    let ranges = runtime.image_ranges();
    assert!(!ranges.is_empty(), "the current build is mapped");
    for (class, address) in runtime.live_object_addresses() {
        for offset in runtime.vptr_offsets(&class).unwrap() {
            // SAFETY: a vptr slot inside a live object.
            let vptr = unsafe { ((address + offset) as *const usize).read_unaligned() };
            assert!(
                ranges.iter().any(|r| r.contains(&vptr)),
                "{class} at {address:#x}: vptr at +{offset} = {vptr:#x} is outside the current build {ranges:x?}"
            );
        }
    }
}

/// The layout fixture header shared with layout-gen's own tests.
pub fn shapes_header() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../layout-gen/tests/fixtures/shapes.hpp")
        .canonicalize()
        .expect("the layout fixture exists")
}

/// Every class of the layout fixture: namespace `fx` and the template instantiation.
pub fn shapes_request() -> layout_gen::Request {
    layout_gen::Request {
        headers: vec![shapes_header()],
        clang_args: vec![],
        selection: layout_gen::Selection {
            namespaces: vec!["fx".into()],
            classes: vec!["game::Pool<int>".into()],
            annotation: None,
        },
    }
}

/// Runs `work` on a thread and fails the test if it has not finished after `deadline` (a hang).
pub fn with_deadline(deadline: std::time::Duration, work: impl FnOnce() + Send + 'static) {
    let (done, finished) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        work();
        let _ = done.send(());
    });
    match finished.recv_timeout(deadline) {
        Ok(()) => worker.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // The worker panicked: report its panic.
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("no progress after {deadline:?}: deadlock")
        }
    }
}
