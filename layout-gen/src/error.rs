//! The crate's one error type. Every variant names the header, class, field or path at fault.

use std::path::PathBuf;

/// A clang diagnostic of error severity, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// `file:line:col`, or the file alone when clang gave no position.
    pub position: String,
    /// Clang's message.
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: error: {}", self.position, self.message)
    }
}

/// Why layout generation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A header named in the request does not exist.
    #[error("header not found: {}", path.display())]
    HeaderNotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// libclang could not be loaded or is already in use by this process.
    #[error("libclang is unavailable: {0}")]
    Libclang(String),
    /// libclang could not produce a translation unit at all.
    #[error("libclang failed to parse {}", header.display())]
    ParseFailed {
        /// The first header of the request.
        header: PathBuf,
        /// libclang's reason.
        #[source]
        source: clang::SourceError,
    },
    /// The headers do not compile; every error diagnostic is listed.
    #[error("the headers do not compile:\n{}", list(diagnostics))]
    Diagnostics {
        /// Error diagnostics with `file:line:col`.
        diagnostics: Vec<Diagnostic>,
    },
    /// A class selected by name does not exist.
    #[error("class not found: {name} ({detail})")]
    ClassNotFound {
        /// The name as requested.
        name: String,
        /// What clang said about it.
        detail: String,
    },
    /// A class template was named without template arguments.
    #[error(
        "{name} is a class template, not a class: select an instantiation such as {name}<int>"
    )]
    UninstantiatedTemplate {
        /// The template's name as requested.
        name: String,
    },
    /// A class or one of its members has no complete, non-dependent type.
    #[error("{class} has no layout: {reason}")]
    IncompleteType {
        /// The class at fault.
        class: String,
        /// Which type is incomplete or dependent.
        reason: String,
    },
    /// The computed base layout disagrees with clang's size or offsets.
    #[error("cannot compute the layout of {class}: {detail}")]
    Layout {
        /// The class at fault.
        class: String,
        /// What disagreed.
        detail: String,
    },
    /// The selection matched no class.
    #[error("no class selected: {0}")]
    NothingSelected(String),
    /// Writing a generated file failed.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn list(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}
