//! `layout-gen`: the build-time half of hot reload for C++ modules.
//!
//! It parses a module's headers with libclang, computes the complete layout of each selected
//! class (bases by the Itanium C++ ABI, fields at absolute offsets, every vptr slot, padding),
//! and emits:
//!
//! - Rust tables for the host ([`emit::rust`]), typed by `rehydrate::tables`;
//! - a C++ shim for the module ([`emit::cpp`]): the exported descriptor, placement-construction
//!   and destruction thunks, and compile-time checks that the compiler agrees with the tables;
//! - readable and JSON layouts ([`inspect`]).
//!
//! Data flows one way: `clang_ast` (the only libclang user) → [`facts`] → `itanium` →
//! `ir` → emitters. C++ policy lives in plain modules the walk calls: `special_members`
//! (what can be constructed and destroyed) and `reach` (what generated code can name). A class
//! that cannot be described is left out with its reason ([`LayoutModel::skipped`]) unless the
//! request names it. The CLI and `build-support` both go through [`generate`].

mod clang_ast;
pub mod emit;
mod error;
pub mod facts;
pub mod inspect;
mod ir;
mod itanium;
mod reach;
mod request;
mod runs;
mod special_members;
mod write;

use std::path::{Path, PathBuf};

pub use error::{Diagnostic, Error};
pub use ir::{BaseSubobject, ClassLayout, FieldLayout, LayoutModel, SkippedClass};
pub use request::{Request, Selection, DEFAULT_ANNOTATION};
pub use write::write_if_changed;

/// Parses the request's headers and computes the layout of every selected class.
pub fn analyze(request: &Request) -> Result<LayoutModel, Error> {
    clang_ast::walk_then(request, |facts| ir::build(&facts))?
}

/// Parses the request's translation unit with libclang and does nothing else. This is the
/// baseline of the `generate` benchmark: the cost no layout tool built on libclang can avoid.
pub fn parse_only(request: &Request) -> Result<(), Error> {
    clang_ast::parse_only(request)
}

/// File names of the generated outputs inside the output directory.
pub const RUST_TABLES_FILE: &str = "layout_tables.rs";
/// See [`RUST_TABLES_FILE`].
pub const CPP_SHIM_FILE: &str = "rehydrate_shim.cpp";

/// What [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The analysed model.
    pub model: LayoutModel,
    /// Path of the Rust tables.
    pub rust_tables: PathBuf,
    /// Path of the C++ shim.
    pub cpp_shim: PathBuf,
    /// Which of the two files changed on disk (unchanged files are not rewritten).
    pub changed: Vec<PathBuf>,
}

/// Analyses the request and writes the Rust tables and the C++ shim into `out_dir`, rewriting
/// a file only when its contents change. Nothing is written when analysis fails.
///
/// The model is built while libclang cleans up, and the two files are generated concurrently,
/// each written as its text is generated.
pub fn generate(request: &Request, out_dir: &Path) -> Result<Generated, Error> {
    clang_ast::walk_then(request, |facts| {
        let model = ir::build(&facts)?;
        // The facts are large: free them beside the emitters.
        std::thread::scope(|scope| {
            scope.spawn(move || drop(facts));
            write_outputs(request, model, out_dir)
        })
    })?
}

/// Writes the Rust tables and the C++ shim of `model` (see [`generate`]).
fn write_outputs(
    request: &Request,
    model: LayoutModel,
    out_dir: &Path,
) -> Result<Generated, Error> {
    // The shim is compiled from wherever the build puts it, so it names headers absolutely;
    // the walk has already checked that they exist.
    let headers: Vec<PathBuf> = request
        .headers
        .iter()
        .map(|h| h.canonicalize().unwrap_or_else(|_| h.clone()))
        .collect();
    std::fs::create_dir_all(out_dir).map_err(|source| Error::Write {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let rust_tables = out_dir.join(RUST_TABLES_FILE);
    let cpp_shim = out_dir.join(CPP_SHIM_FILE);
    let (rust_changed, cpp_changed) = std::thread::scope(|scope| {
        let rust = scope.spawn(|| {
            write::write_streamed_if_changed(&rust_tables, |sink| {
                emit::rust::write_tables(&model, sink)
            })
        });
        let cpp = write::write_streamed_if_changed(&cpp_shim, |sink| {
            emit::cpp::write_shim(&model, &headers, sink)
        });
        let rust = rust
            .join()
            .expect("emitting the Rust tables does not panic");
        (rust, cpp)
    });
    let changed = [(rust_changed?, &rust_tables), (cpp_changed?, &cpp_shim)]
        .into_iter()
        .filter(|(changed, _)| *changed)
        .map(|(_, path)| path.clone())
        .collect();
    Ok(Generated {
        model,
        rust_tables,
        cpp_shim,
        changed,
    })
}

/// The header the benchmarks build on (layout-gen's `generate` and the runtime's constructor
/// analysis): `classes` polymorphic classes in namespace `bench`, all inline (roots, single and
/// multiple inheritance, a virtual base, private fields). Not API.
#[doc(hidden)]
pub fn benchmark_header(classes: usize) -> String {
    use std::fmt::Write as _;
    let mut header = String::from("#pragma once\nnamespace bench {\n");
    header.push_str("struct Shared { virtual ~Shared() {} long shared_id = 0; };\n");
    header.push_str(
        "struct Mixin { virtual ~Mixin() {} virtual int mix() const { return 0; } short m = 0; };\n",
    );
    for i in 0..classes {
        let bases = match i % 4 {
            0 => String::new(),
            1 => format!(" : C{}", i - 1),
            2 => format!(" : C{}, Mixin", i - 2),
            _ => " : virtual Shared".to_string(),
        };
        let _ = writeln!(
            header,
            "class C{i}{bases} {{\npublic:\n    virtual ~C{i}() {{}}\n    virtual int f{i}() const {{ return {i}; }}\n    \
             int a{i} = {i};\n    double b{i} = 0;\n    char c{i} = 0;\nprivate:\n    float hidden{i} = 0;\n}};"
        );
    }
    header.push_str("}  // namespace bench\n");
    header
}
