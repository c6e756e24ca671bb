//! `build.rs` integration: generate a module's layout tables and C++ shim from a build script.
//!
//! ```no_run
//! // build.rs
//! build_support::Module::new("world")
//!     .header("module/world.hpp")
//!     .namespace("world")
//!     .generate_or_exit();
//! // src/main.rs
//! // include!(concat!(env!("OUT_DIR"), "/rehydrate/world/layout_tables.rs"));
//! ```
//!
//! Files go to `$OUT_DIR/rehydrate/<module>/` and are rewritten only when their contents change;
//! every header gets a `cargo:rerun-if-changed`. A failure prints every clang diagnostic with
//! file and line and exits non-zero; it never panics.

use std::path::{Path, PathBuf};

use layout_gen::Request;
pub use layout_gen::{Error, Generated};

/// One C++ module: its headers, which classes to describe, and how to parse them.
#[derive(Debug, Clone)]
pub struct Module {
    name: String,
    request: Request,
}

impl Module {
    /// A module called `name` (the folder under `$OUT_DIR/rehydrate/`).
    pub fn new(name: &str) -> Self {
        Module {
            name: name.to_string(),
            request: Request::default(),
        }
    }

    /// Adds a header (relative paths are relative to the crate's manifest directory).
    pub fn header(&mut self, path: impl AsRef<Path>) -> &mut Self {
        self.request.headers.push(manifest_relative(path.as_ref()));
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

    /// Adds a clang argument (`-I...`, `-D...`, `-std=...`).
    pub fn clang_arg(&mut self, arg: &str) -> &mut Self {
        self.request.clang_args.push(arg.to_string());
        self
    }

    /// The folder the generated files go to.
    pub fn out_dir(&self) -> PathBuf {
        let out = std::env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo for build scripts");
        PathBuf::from(out).join("rehydrate").join(&self.name)
    }

    /// Generates the Rust tables and the C++ shim into [`Module::out_dir`].
    pub fn generate(&self) -> Result<Generated, Error> {
        for header in &self.request.headers {
            println!("cargo:rerun-if-changed={}", header.display());
        }
        layout_gen::generate(&self.request, &self.out_dir())
    }

    /// [`Module::generate`], or print the error (every diagnostic with file and line) and exit
    /// with status 1: the form a build script wants.
    pub fn generate_or_exit(&self) -> Generated {
        self.generate().unwrap_or_else(|error| {
            eprintln!(
                "error: layout-gen failed for module `{}`:\n{error}",
                self.name
            );
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            std::process::exit(1)
        })
    }
}

fn manifest_relative(path: &Path) -> PathBuf {
    match std::env::var_os("CARGO_MANIFEST_DIR") {
        Some(dir) if path.is_relative() => PathBuf::from(dir).join(path),
        _ => path.to_path_buf(),
    }
}
