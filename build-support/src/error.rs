//! The crate's error type. Every variant names the module, file or program at fault; compiler
//! diagnostics are kept verbatim, so their `file:line:col` positions reach the user.

use std::path::PathBuf;

/// Why building a module failed. Nothing that was built before stays half-written: outputs are
/// renamed into place only when complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// layout-gen rejected the headers (clang diagnostics with file:line:col, or the class at
    /// fault).
    #[error("layout-gen failed for module `{module}`")]
    Layout {
        /// The module's name.
        module: String,
        /// What layout-gen said.
        #[source]
        error: layout_gen::Error,
    },
    /// No output folder: neither [`crate::Module::out_dir`] was set nor `OUT_DIR` (cargo sets it
    /// for build scripts).
    #[error("module `{module}` has no output folder: call .out_dir(...) outside a build script")]
    NoOutputDir {
        /// The module's name.
        module: String,
    },
    /// No C++ compiler could be determined (from `CXX`, the target, or the `cc::Build`).
    #[error("no C++ compiler for module `{module}`: {message}")]
    Compiler {
        /// The module's name.
        module: String,
        /// What `cc` said.
        message: String,
    },
    /// The module has nothing to compile.
    #[error("module `{module}` has no sources: add them with `.source(...)`")]
    NoSources {
        /// The module's name.
        module: String,
    },
    /// A substitution names a file that is not one of the module's sources.
    #[error("cannot compile {} in place of {}: not a source of module `{module}`", with.display(), replace.display())]
    NotASource {
        /// The module's name.
        module: String,
        /// The path the substitution names.
        replace: PathBuf,
        /// The file it would have compiled instead.
        with: PathBuf,
    },
    /// The compiler rejected a source file; its diagnostics follow verbatim.
    #[error("{compiler} failed to compile {}:\n{diagnostics}", source_file.display())]
    Compile {
        /// The file that failed (the substitute, when one was compiled in its place).
        source_file: PathBuf,
        /// The compiler program.
        compiler: String,
        /// The compiler's standard error.
        diagnostics: String,
    },
    /// Linking the shared library failed; the linker's diagnostics follow verbatim.
    #[error("linking {} failed:\n{diagnostics}", library.display())]
    Link {
        /// The library being linked.
        library: PathBuf,
        /// The linker's standard error.
        diagnostics: String,
    },
    /// A program could not be started.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// Reading or writing a file failed.
    #[error("cannot read or write {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// A saved recipe could not be read back.
    #[error("cannot read the recipe {}", path.display())]
    Recipe {
        /// The recipe file.
        path: PathBuf,
        /// What was wrong with it.
        #[source]
        error: serde_json::Error,
    },
}

impl BuildError {
    /// An [`BuildError::Io`] for `path`, for `map_err`.
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
        move |error| BuildError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}
