//! The module descriptor: the `#[repr(C)]` contract between the runtime and a module's shim.
//!
//! The generated C++ shim exports [`DESCRIPTOR_SYMBOL`], an `extern "C"` function returning a
//! pointer to a static [`ModuleDesc`]. Every type here is mirrored, field for field, by
//! `include/rehydrate/module_abi.h`, which the shim includes; the `abi_mirror` test compiles that
//! header and checks that both views agree on every size and offset. Any change here must bump
//! [`ABI_VERSION`] and change the header in the same commit.
//!
//! Every thunk the shim exports catches all C++ exceptions: it returns a [`ThunkStatus`] code and
//! writes the exception's message into the caller's buffer, so no exception crosses into Rust.

use std::ffi::{c_char, c_void};

/// Version of this descriptor layout; the shim writes it into [`ModuleDesc::abi_version`].
pub const ABI_VERSION: u32 = 5;

/// Name of the exported function returning the module's descriptor.
pub const DESCRIPTOR_SYMBOL: &str = "rehydrate_module_descriptor";

/// Result codes of the shim's thunks.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThunkStatus {
    /// The operation completed.
    Ok = 0,
    /// A C++ exception was caught; its message is in the error buffer.
    CppException = 1,
}

/// Signature of [`ClassDesc::construct`]: default-initialises (`new (place) T`) an object in
/// `place`, which must be `size` bytes aligned to `align`.
pub type ConstructFn =
    unsafe extern "C" fn(place: *mut c_void, error: *mut c_char, error_capacity: usize) -> i32;

/// Signature of [`ClassDesc::destroy`]: runs the destructor of the object at `object`.
pub type DestroyFn =
    unsafe extern "C" fn(object: *mut c_void, error: *mut c_char, error_capacity: usize) -> i32;

/// Signature of [`ClassDesc::measure_bases`]: writes, for the constructed object at `object`,
/// the byte offset of every base subobject as the compiler computes it (`static_cast` along the
/// table's path), in the order of [`ClassDesc::bases`]. `offsets` holds `base_count` entries.
pub type MeasureBasesFn = unsafe extern "C" fn(object: *const c_void, offsets: *mut u64) -> i32;

/// Signature of [`ModuleDesc::attach`]: hands the module the runtime's [`HostApi`]. The module
/// keeps the pointer until the next `attach` (or forever); the runtime keeps the table alive for
/// as long as the module is loaded.
pub type AttachFn = unsafe extern "C" fn(api: *const HostApi) -> i32;

/// Signature of [`HostApi::track`]: records a live object the module's own code created.
/// `type_id_name` is `typeid(*object).name()`; `object` is the complete object's address.
/// Returns 0 when the object was recorded.
pub type TrackFn = unsafe extern "C" fn(
    context: *mut c_void,
    type_id_name: *const c_char,
    object: *mut c_void,
) -> i32;

/// Signature of [`HostApi::untrack`]: forgets a live object before the module destroys it.
pub type UntrackFn = unsafe extern "C" fn(context: *mut c_void, object: *mut c_void);

/// Signature of [`HostApi::forwarder`]: a stable address that forwards to the module's exported
/// function `symbol` in whichever build is current (re-pointed at every reload). Null when this
/// build does not export `symbol`.
pub type ForwarderFn =
    unsafe extern "C" fn(context: *mut c_void, symbol: *const c_char) -> *const c_void;

/// The table of functions the runtime hands a module when it loads it (no `-rdynamic`, no
/// global symbol lookup). Mirrored by `rehydrate_host_api` in the C header.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HostApi {
    /// [`ABI_VERSION`] of the runtime.
    pub abi_version: u32,
    /// Always 0.
    pub reserved: u32,
    /// Passed back to every function.
    pub context: *mut c_void,
    /// Records a live object.
    pub track: TrackFn,
    /// Forgets a live object.
    pub untrack: UntrackFn,
    /// Hands out a forwarder bound to one of the module's exported functions.
    pub forwarder: ForwarderFn,
}

/// Signature of the exported [`DESCRIPTOR_SYMBOL`] function.
pub type DescriptorFn = unsafe extern "C" fn() -> *const ModuleDesc;

/// One data member, as in [`crate::tables::FieldEntry`].
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FieldDesc {
    /// NUL-terminated member name.
    pub name: *const c_char,
    /// NUL-terminated qualified name of the declaring class.
    pub owner: *const c_char,
    /// NUL-terminated type of the member, as clang spells it.
    pub type_name: *const c_char,
    /// Absolute byte offset.
    pub offset: u64,
    /// `sizeof` the member's type.
    pub size: u64,
    /// Absolute bit offset of a bit-field; `u64::MAX` for other members.
    pub bit_offset: u64,
    /// Bit-field width; 0 for other members.
    pub bit_width: u32,
    /// 0 public, 1 protected, 2 private.
    pub access: u32,
}

/// One base subobject, as in [`crate::tables::BaseEntry`].
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BaseDesc {
    /// NUL-terminated qualified name of the base class.
    pub name: *const c_char,
    /// Absolute byte offset.
    pub offset: u64,
    /// 1 for a virtual base, 0 otherwise.
    pub is_virtual: u32,
    /// Always 0.
    pub reserved: u32,
}

/// One class the module describes.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ClassDesc {
    /// NUL-terminated qualified name.
    pub name: *const c_char,
    /// NUL-terminated `typeid(T).name()`: how objects the module tracks are identified.
    pub type_id_name: *const c_char,
    /// `sizeof`.
    pub size: u64,
    /// `alignof`.
    pub align: u64,
    /// Same value as the host table's [`crate::tables::ClassTable::layout_hash`].
    pub layout_hash: u64,
    /// Number of entries in `bases`.
    pub base_count: u64,
    /// Base subobjects.
    pub bases: *const BaseDesc,
    /// Number of entries in `fields`.
    pub field_count: u64,
    /// Data members.
    pub fields: *const FieldDesc,
    /// Number of entries in `vptr_offsets`.
    pub vptr_count: u64,
    /// Vptr slots, ascending.
    pub vptr_offsets: *const u64,
    /// Placement default-construction; null when the class has no usable dummy constructor.
    pub construct: Option<ConstructFn>,
    /// Destructor; null when the destructor is not accessible.
    pub destroy: Option<DestroyFn>,
    /// The compiler's base offsets on a live object; null when the class has no base.
    pub measure_bases: Option<MeasureBasesFn>,
}

/// One static-destructor registration of the module, as the shim records it: both words
/// complemented (a scan for references into a build must never re-point them). A null
/// function (complement `!0`) is a registration the runtime took away.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitEntry {
    /// `!function`.
    pub function_complement: usize,
    /// `!argument`.
    pub argument_complement: usize,
}

/// Signature of [`ModuleDesc::exit_entries`]: the module's registrations, oldest first; writes
/// their number into `count` (the pointer is null when there are none).
pub type ExitEntriesFn = unsafe extern "C" fn(count: *mut u64) -> *mut ExitEntry;

/// Signature of [`ModuleDesc::run_exit_entry`]: runs registration `index` now, catching any
/// exception, and keeps it.
pub type RunExitEntryFn =
    unsafe extern "C" fn(index: u64, error: *mut c_char, error_capacity: usize) -> i32;

/// Signature of [`ModuleDesc::adopt_exit_entry`]: records a registration taken over from
/// another build of the module, as the newest. Returns 0 when recorded.
pub type AdoptExitEntryFn =
    unsafe extern "C" fn(function: unsafe extern "C" fn(*mut c_void), argument: *mut c_void) -> i32;

/// The module's self-description.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleDesc {
    /// [`ABI_VERSION`] of the shim that built this descriptor.
    pub abi_version: u32,
    /// Always 0.
    pub reserved: u32,
    /// Number of entries in `classes`.
    pub class_count: u64,
    /// Described classes.
    pub classes: *const ClassDesc,
    /// Hands the module the runtime's function table.
    pub attach: AttachFn,
    /// The module's static-destructor registrations; null in a descriptor written by hand
    /// (the runtime then carries none of the module's globals into a new build).
    pub exit_entries: Option<ExitEntriesFn>,
    /// Runs one registration now.
    pub run_exit_entry: Option<RunExitEntryFn>,
    /// Takes over a registration of another build.
    pub adopt_exit_entry: Option<AdoptExitEntryFn>,
}
