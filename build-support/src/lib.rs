//! `build.rs` integration for hot-reloadable C++ modules, in the spirit of `cxx-build`: name the
//! headers, sources and classes; get the layout tables, the C++ shim and a shared library built
//! with the flags reload safety needs.
//!
//! ```no_run
//! // build.rs
//! build_support::Module::new("world")
//!     .header("module/world.hpp")
//!     .source("module/world.cpp")
//!     .include("module")
//!     .annotated()
//!     .build_or_exit();
//! ```
//! ```ignore
//! // src/main.rs
//! mod world {
//!     rehydrate::include_module!("world"); // LIBRARY, RECIPE, and every class's table
//! }
//! let runtime = rehydrate::Runtime::load(world::LIBRARY)?;
//! ```
//!
//! Everything goes to `$OUT_DIR/rehydrate/<module>/`: `layout_tables.rs`, `rehydrate_shim.cpp`,
//! `obj/`, `lib<module>.so`, `recipe.json` and `module.rs` (what `include_module!` includes).
//! Files are rewritten only when their contents change, a translation unit is recompiled only
//! when a file it reads changed, and every header, source and included file gets a
//! `cargo:rerun-if-changed`. Failures print the compiler's or clang's diagnostics with file and
//! line and exit non-zero; nothing panics.
//!
//! The [`cc::Build`] underneath ([`Module::cc_build`]) picks the compiler (`CXX`), optimisation
//! and debug settings from cargo as usual, and takes any extra flags, includes, defines and
//! files. A [`Recipe`] saved beside the library lets the host rebuild the module the same way
//! while it runs.

mod compile;
mod error;
mod recipe;

use std::path::{Path, PathBuf};

pub use compile::Compiler;
pub use error::BuildError;
pub use layout_gen::{Error, Generated};
pub use recipe::{BuildReport, Recipe, Stage, Substitution};

/// The file [`Module::build`] writes for the host (`rehydrate::include_module!` includes it).
pub const MODULE_FILE: &str = "module.rs";
/// The file the [`Recipe`] is saved to.
pub const RECIPE_FILE: &str = "recipe.json";

/// One C++ module: its headers, sources, which classes to describe, and how to compile them.
#[derive(Debug, Clone)]
pub struct Module {
    name: String,
    request: layout_gen::Request,
    cc: cc::Build,
    link_args: Vec<String>,
    out_dir: Option<PathBuf>,
}

impl Module {
    /// A module called `name`: the folder under `$OUT_DIR/rehydrate/` and the library
    /// `lib<name>.so`. It compiles as C++ with the runtime's headers on the include path.
    pub fn new(name: &str) -> Self {
        let mut cc = cc::Build::new();
        cc.cpp(true).pic(true).cargo_metadata(false);
        let mut module = Module {
            name: name.to_string(),
            request: layout_gen::Request::default(),
            cc,
            link_args: Vec::new(),
            out_dir: None,
        };
        module.include(rehydrate::include_dir());
        module
    }

    /// Adds a header to analyse (relative paths are relative to the crate's manifest directory).
    pub fn header(&mut self, path: impl AsRef<Path>) -> &mut Self {
        self.request.headers.push(manifest_relative(path.as_ref()));
        self
    }

    /// Adds a C++ source file to compile into the module.
    pub fn source(&mut self, path: impl AsRef<Path>) -> &mut Self {
        self.cc.file(manifest_relative(path.as_ref()));
        self
    }

    /// Adds an include directory, for both clang's analysis and the compiler.
    pub fn include(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        let dir = manifest_relative(dir.as_ref());
        self.request.clang_args.push(format!("-I{}", dir.display()));
        self.cc.include(dir);
        self
    }

    /// Defines a preprocessor macro, for both clang's analysis and the compiler.
    pub fn define(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        self.request.clang_args.push(match value {
            Some(value) => format!("-D{name}={value}"),
            None => format!("-D{name}"),
        });
        self.cc.define(name, value);
        self
    }

    /// Sets the language standard (`c++17`, `c++20`), for both clang and the compiler.
    pub fn std(&mut self, standard: &str) -> &mut Self {
        self.request.clang_args.push(format!("-std={standard}"));
        self.cc.std(standard);
        self
    }

    /// Selects a class by qualified name (template instantiations too).
    pub fn class(&mut self, name: &str) -> &mut Self {
        self.request.selection.classes.push(name.to_string());
        self
    }

    /// Selects every class in a namespace.
    pub fn namespace(&mut self, name: &str) -> &mut Self {
        self.request.selection.namespaces.push(name.to_string());
        self
    }

    /// Selects every class marked `REHYDRATE_RELOADABLE`.
    pub fn annotated(&mut self) -> &mut Self {
        self.request.selection.annotation = Some(layout_gen::DEFAULT_ANNOTATION.to_string());
        self
    }

    /// Adds an argument for clang's analysis only (the compiler gets flags through
    /// [`Module::cc_build`]).
    pub fn clang_arg(&mut self, arg: &str) -> &mut Self {
        self.request.clang_args.push(arg.to_string());
        self
    }

    /// Adds an argument for the link step (`-lfoo`, `-Wl,...`).
    pub fn link_arg(&mut self, arg: &str) -> &mut Self {
        self.link_args.push(arg.to_string());
        self
    }

    /// The underlying [`cc::Build`], for flags, files, compiler choice and the rest. Its
    /// settings are captured when the module is built.
    pub fn cc_build(&mut self) -> &mut cc::Build {
        &mut self.cc
    }

    /// Puts the outputs in `dir` instead of `$OUT_DIR/rehydrate/<name>` (for building outside a
    /// build script).
    pub fn out_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.out_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The folder the outputs go to: `$OUT_DIR/rehydrate/<name>` unless set with
    /// [`Module::out_dir`]; an error outside a build script when it was not set.
    pub fn output_dir(&self) -> Result<PathBuf, BuildError> {
        if let Some(dir) = &self.out_dir {
            return Ok(dir.clone());
        }
        let out = std::env::var_os("OUT_DIR").ok_or_else(|| BuildError::NoOutputDir {
            module: self.name.clone(),
        })?;
        Ok(PathBuf::from(out).join("rehydrate").join(&self.name))
    }

    /// The complete description of this module's build, as the host can replay it.
    pub fn recipe(&self) -> Result<Recipe, BuildError> {
        let tool = self
            .cc
            .try_get_compiler()
            .map_err(|error| BuildError::Compiler {
                module: self.name.clone(),
                message: error.to_string(),
            })?;
        let lossy = |s: &std::ffi::OsStr| s.to_string_lossy().into_owned();
        Ok(Recipe {
            name: self.name.clone(),
            layout: self.request.clone(),
            sources: self.cc.get_files().map(Path::to_path_buf).collect(),
            compiler: Compiler {
                program: tool.path().to_path_buf(),
                args: tool.args().iter().map(|a| lossy(a)).collect(),
                env: tool.get_envs().map(|(k, v)| (lossy(k), lossy(v))).collect(),
                is_gcc: tool.is_like_gnu() && !tool.is_like_clang(),
            },
            link_args: self.link_args.clone(),
            jobs: None,
        })
    }

    /// Generates, compiles and links the module into [`Module::output_dir`], saves its
    /// [`Recipe`] and writes `module.rs` for the host; prints `cargo:rerun-if-changed` for every
    /// input and `cargo:warning` for compiler warnings.
    pub fn build(&self) -> Result<BuildReport, BuildError> {
        for header in &self.request.headers {
            println!("cargo:rerun-if-changed={}", header.display());
        }
        let recipe = self.recipe()?;
        for source in &recipe.sources {
            println!("cargo:rerun-if-changed={}", source.display());
        }
        let dir = self.output_dir()?;
        let report = recipe.build(&dir)?;
        for input in &report.inputs {
            println!("cargo:rerun-if-changed={}", input.display());
        }
        for line in report.warnings.iter().flat_map(|w| w.lines()) {
            println!("cargo:warning={line}");
        }
        let recipe_path = dir.join(RECIPE_FILE);
        recipe.save(&recipe_path)?;
        let module_file = dir.join(MODULE_FILE);
        recipe::write_if_changed(&module_file, &host_module(&recipe, &report, &recipe_path))?;
        Ok(report)
    }

    /// [`Module::build`], or print the error (diagnostics with file and line) and exit with
    /// status 1: the form a build script wants.
    pub fn build_or_exit(&self) -> BuildReport {
        self.build().unwrap_or_else(|error| self.exit_with(&error))
    }

    /// Generates only the Rust tables and the C++ shim into [`Module::output_dir`] (no compiling),
    /// for crates that build the module some other way.
    pub fn generate(&self) -> Result<Generated, BuildError> {
        for header in &self.request.headers {
            println!("cargo:rerun-if-changed={}", header.display());
        }
        layout_gen::generate(&self.request, &self.output_dir()?).map_err(|error| {
            BuildError::Layout {
                module: self.name.clone(),
                error,
            }
        })
    }

    /// [`Module::generate`], or print the error and exit with status 1.
    pub fn generate_or_exit(&self) -> Generated {
        self.generate()
            .unwrap_or_else(|error| self.exit_with(&error))
    }

    fn exit_with(&self, error: &BuildError) -> ! {
        eprintln!("error: building module `{}` failed\n{error}", self.name);
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            eprintln!("  caused by: {cause}");
            source = cause.source();
        }
        std::process::exit(1)
    }
}

/// The Rust file the host includes: where the library and the recipe are, and the tables.
fn host_module(recipe: &Recipe, report: &BuildReport, recipe_path: &Path) -> String {
    format!(
        "// Generated by build-support for module `{name}`. Do not edit: rerun the build instead.\n\n\
         /// The module's name.\n\
         #[allow(dead_code)]\n\
         pub const NAME: &str = {name:?};\n\
         /// The shared library `build.rs` built: load it with `rehydrate::Runtime::load`.\n\
         #[allow(dead_code)]\n\
         pub const LIBRARY: &str = {library:?};\n\
         /// How it was built, for rebuilding at run time: `build_support::Recipe::load(RECIPE)`.\n\
         #[allow(dead_code)]\n\
         pub const RECIPE: &str = {recipe_path:?};\n\n\
         include!({tables:?});\n",
        name = recipe.name,
        library = report.library.display().to_string(),
        recipe_path = recipe_path.display().to_string(),
        tables = report.rust_tables.display().to_string(),
    )
}

fn manifest_relative(path: &Path) -> PathBuf {
    match std::env::var_os("CARGO_MANIFEST_DIR") {
        Some(dir) if path.is_relative() => PathBuf::from(dir).join(path),
        _ => path.to_path_buf(),
    }
}
