//! What to analyse: headers, clang arguments, and which classes to describe.

use std::path::PathBuf;

/// The annotation that marks a class in a header (`REHYDRATE_RELOADABLE` in
/// `rehydrate/module_abi.h` expands to it under clang).
pub const DEFAULT_ANNOTATION: &str = "rehydrate";

/// Which classes to describe. An empty selection takes every class defined in the named headers.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Selection {
    /// Qualified names, template instantiations included (`game::Pool<int>`).
    pub classes: Vec<String>,
    /// Every class defined in these namespaces (nested namespaces included).
    pub namespaces: Vec<String>,
    /// Every class carrying `__attribute__((annotate("<this>")))`.
    pub annotation: Option<String>,
}

impl Selection {
    /// Whether nothing was asked for explicitly.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty() && self.namespaces.is_empty() && self.annotation.is_none()
    }
}

/// One analysis: the headers of a module, how to compile them, and what to select.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Request {
    /// Headers to include, in order.
    pub headers: Vec<PathBuf>,
    /// Extra clang arguments: include directories, defines, `-std=`.
    pub clang_args: Vec<String>,
    /// The classes to describe.
    pub selection: Selection,
}
