//! Runtime side of hot reload for C++ modules.
//!
//! This crate owns the types that the build-time generator (`layout-gen`) and a reloaded C++
//! module agree on:
//!
//! - [`tables`]: the field-offset tables the host compiles in (generated Rust, `include!`-ed);
//! - [`abi`]: the `#[repr(C)]` module descriptor that the generated C++ shim exports, mirrored
//!   field for field in `include/rehydrate/module_abi.h`.
//!
//! and the runtime itself: [`Runtime`] loads a module through a shadow copy, reads which bytes
//! of each class are the compiler's from its constructors' machine code ([`analysis`]; a probe
//! runs the default constructor where that gives up), tracks live objects, and reloads with `runtime.reload(path)?.rehydrate_all()?`,
//! validating every live object first and rolling back on any error.

pub mod abi;
mod address_table;
pub mod analysis;
mod barrier;
mod bindings;
mod error;
pub mod forwarder;
mod hidden;
pub mod image;
mod images;
mod layout_gate;
#[doc(hidden)] // for tests: where a module is mapped, and whether any page is writable+executable
pub mod maps;
mod module;
mod probe;
mod registry;
mod relocation;
mod runtime;
pub mod tables;
mod threads;
mod valgrind;

pub use error::{CppOperation, Error};
pub use forwarder::Forwarder;
pub use images::{ClassInspection, ProbePolicy};
pub use relocation::{Audit, FreshGlobal, GlobalsReport, RelocationCounts};
#[doc(hidden)] // for the constructor-analysis benchmark
pub use runtime::measure;
pub use runtime::{
    BoundForwarder, LiveObject, ModuleSymbol, Reload, ReloadReport, Runtime, UnreloadableClass,
    DEFAULT_RELOAD_DEADLINE,
};
pub use threads::{stop_signal, GateGuard, ModuleGate, ThreadsReport};

/// Path of the C/C++ include directory holding `rehydrate/module_abi.h`, for build scripts and
/// tests that compile a module's shim.
pub fn include_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("include")
}

/// Includes what `build_support::Module::build` wrote for the module `name`: `NAME`,
/// `LIBRARY` (the built shared library, for [`Runtime::load`]), `RECIPE` (for rebuilding at run
/// time) and the layout table of every selected class, with `CLASSES` listing them.
///
/// ```ignore
/// mod world {
///     rehydrate::include_module!("world");
/// }
/// let runtime = rehydrate::Runtime::load(world::LIBRARY)?;
/// ```
#[macro_export]
macro_rules! include_module {
    ($name:literal) => {
        include!(concat!(env!("OUT_DIR"), "/rehydrate/", $name, "/module.rs"));
    };
}
