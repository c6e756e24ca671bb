//! One loaded build of a module: its private shadow copy, the `dlopen` handle, the classes its
//! descriptor describes, and the host-API context handed to it.
//!
//! Every build is loaded from a copy with a unique name in its runtime's private folder (see
//! [`ShadowFolder`]), so the build may overwrite the original while it is loaded and an old and
//! a new build can be loaded at once (`dlopen` of a path already loaded would return the old
//! handle). Dropping a [`LoadedModule`] closes the library, then frees the host context the
//! module's callbacks reach, then deletes the copy.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};

use crate::abi::{
    self, ConstructFn, DescriptorFn, DestroyFn, ExitEntry, FieldDesc, HostApi, MeasureBasesFn,
    ModuleDesc,
};
use crate::address_table::AddressTable;
use crate::bindings::{Bindings, Owner};
use crate::error::Error;
use crate::image::Placement;
use crate::registry::{ClassSlot, Registry};

/// Prefix of the registry class name of an object whose `typeid` no class describes.
pub(crate) const UNKNOWN_TYPE_PREFIX: &str = "?";

/// One class as the module describes it, copied out of the descriptor.
#[derive(Debug, Clone)]
pub(crate) struct ModuleClass {
    pub name: Arc<str>,
    /// `typeid(T).name()`: the class's mangled name.
    pub type_id_name: String,
    pub size: usize,
    pub align: usize,
    /// Every declared member, in the descriptor's (offset) order.
    pub fields: Vec<ModuleField>,
    /// Every base subobject, in the descriptor's order (that of `measure_bases`).
    pub bases: Vec<ModuleBase>,
    pub vptr_offsets: Vec<usize>,
    /// Where each byte lies: in a field, a vptr slot, both or neither (see [`Placement`]).
    pub placement: Arc<[u8]>,
    pub construct: Option<ConstructFn>,
    pub destroy: Option<DestroyFn>,
    pub measure_bases: Option<MeasureBasesFn>,
}

/// One declared data member of a [`ModuleClass`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModuleField {
    pub name: String,
    /// The class that declares it.
    pub owner: String,
    pub type_name: String,
    /// Absolute byte offset.
    pub offset: usize,
    pub size: usize,
    /// (absolute bit offset, width) of a bit-field.
    pub bits: Option<(u64, u32)>,
}

impl ModuleField {
    /// `owner::name`.
    pub fn qualified(&self) -> String {
        format!("{}::{}", self.owner, self.name)
    }

    /// The bytes the member occupies (for a bit-field, the bytes its bits touch).
    pub fn byte_range(&self) -> Range<usize> {
        match self.bits {
            Some((offset_bits, width)) => {
                (offset_bits / 8) as usize..(offset_bits + u64::from(width)).div_ceil(8) as usize
            }
            None => self.offset..self.offset + self.size,
        }
    }
}

/// One base subobject of a [`ModuleClass`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModuleBase {
    pub name: String,
    /// Absolute byte offset.
    pub offset: usize,
    pub is_virtual: bool,
}

/// What the module's track/untrack callbacks reach. Owned by its [`LoadedModule`] as a raw
/// pointer (from `Box::into_raw`), so the pointer handed to the module keeps its provenance;
/// freed only after the library is closed.
struct ModuleHost {
    api: HostApi,
    /// Unique for the process's lifetime, so [`LAST_TYPE`] never matches another host.
    id: u64,
    registry: Arc<Registry>,
    bindings: Arc<Bindings>,
    /// The `dlopen` handle, for the module's own forwarder requests.
    library_handle: usize,
    /// The module's path, for messages.
    source: PathBuf,
    /// Keyed by the address of the `typeid(T).name()` string: within one module every
    /// `typeid` of a type returns the same string, so this avoids hashing the text.
    slot_of_type_name_address: AddressTable,
    /// The fallback, keyed by the text.
    slot_of_type: HashMap<Box<[u8]>, ClassSlot>,
}

/// A loaded build of a module.
pub(crate) struct LoadedModule {
    library: Option<Library>,
    /// From `Box::into_raw`; read by the module's callbacks through the pointer it was attached
    /// with; freed in `Drop` after the library is closed.
    host: NonNull<ModuleHost>,
    pub source: PathBuf,
    pub shadow: PathBuf,
    pub classes: Vec<ModuleClass>,
    by_name: HashMap<Arc<str>, usize>,
    /// Every address the build's mappings covered once loaded: reserved when it is unloaded.
    span: Range<usize>,
    /// The shim's static-destructor registrations; `None` for a descriptor without them.
    exits: Option<ExitList>,
}

/// The shim's functions over the module's static-destructor registrations.
#[derive(Clone, Copy)]
struct ExitList {
    entries: abi::ExitEntriesFn,
    run: abi::RunExitEntryFn,
    adopt: abi::AdoptExitEntryFn,
}

// SAFETY: `host` is owned by this value and, after `attach`, only read: through shared
// references by the callbacks (on any thread), whose mutable state is the thread-safe
// `Registry` and `Bindings`; `api.context` is a pointer to itself. The library handle may be
// used from any thread.
unsafe impl Send for LoadedModule {}
// SAFETY: as above: `&LoadedModule` gives only shared, read-only access to `host`.
unsafe impl Sync for LoadedModule {}

/// One runtime's private folder of shadow copies: created with mode 0700 under a random name
/// (`tempfile`), so no other runtime, in this process or another, shares or can predict it;
/// removed with everything in it when the runtime is gone.
pub(crate) struct ShadowFolder {
    folder: tempfile::TempDir,
    copies: AtomicU64,
}

impl ShadowFolder {
    /// A new private folder in the system's temporary directory (`TMPDIR`).
    pub fn new() -> std::io::Result<ShadowFolder> {
        use std::os::unix::fs::PermissionsExt;
        let folder = tempfile::Builder::new()
            .prefix("rehydrate-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()?;
        Ok(ShadowFolder {
            folder,
            copies: AtomicU64::new(0),
        })
    }

    /// Copies `source` to a name no other copy in this folder had.
    fn copy(&self, source: &Path) -> Result<PathBuf, Error> {
        let err = |source_error| Error::ShadowCopy {
            path: source.to_path_buf(),
            source: source_error,
        };
        let stem = source
            .file_stem()
            .map_or("module".into(), |s| s.to_string_lossy().into_owned());
        let number = self.copies.fetch_add(1, Ordering::Relaxed);
        let shadow = self.folder.path().join(format!("{stem}-{number}.so"));
        std::fs::copy(source, &shadow).map_err(err)?;
        Ok(shadow)
    }
}

/// Copies a NUL-terminated string from the descriptor.
///
/// # Safety
/// `text` is null or points to a NUL-terminated string that stays valid while the call runs.
unsafe fn owned(text: *const c_char) -> String {
    if text.is_null() {
        return String::new();
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}

/// Copies one member's description out of the descriptor.
///
/// # Safety
/// `desc`'s strings are null or NUL-terminated and valid while the call runs.
unsafe fn field(desc: &FieldDesc) -> ModuleField {
    ModuleField {
        // SAFETY: by the caller's contract.
        name: unsafe { owned(desc.name) },
        // SAFETY: as above.
        owner: unsafe { owned(desc.owner) },
        // SAFETY: as above.
        type_name: unsafe { owned(desc.type_name) },
        offset: desc.offset as usize,
        size: desc.size as usize,
        bits: (desc.bit_width != 0).then_some((desc.bit_offset, desc.bit_width)),
    }
}

/// A slice from the descriptor's pointer and count.
///
/// # Safety
/// `pointer` is null with `count == 0`, or points to `count` valid elements that outlive `'a`.
unsafe fn table<'a, T>(pointer: *const T, count: u64) -> &'a [T] {
    if pointer.is_null() || count == 0 {
        return &[];
    }
    // SAFETY: the caller guarantees `count` initialised elements at `pointer`.
    unsafe { std::slice::from_raw_parts(pointer, count as usize) }
}

impl LoadedModule {
    /// Loads `source` through a fresh shadow copy, reads its descriptor and attaches the host
    /// API, whose callbacks record objects in `registry`.
    pub fn load(
        source: &Path,
        folder: &ShadowFolder,
        registry: Arc<Registry>,
        bindings: Arc<Bindings>,
    ) -> Result<LoadedModule, Error> {
        if !source.is_file() {
            return Err(Error::ShadowCopy {
                path: source.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let shadow = folder.copy(source)?;
        let _images = crate::relocation::lock_images();
        let remove_shadow = |error| {
            let _ = std::fs::remove_file(&shadow);
            error
        };
        // RTLD_LOCAL keeps the module's symbols out of the global scope, so an old and a new
        // build loaded at once never bind to each other.
        let flags = RTLD_NOW | RTLD_LOCAL;
        // SAFETY: runs the module's initialisers; a module is trusted code built for this host.
        let opened = unsafe { Library::open(Some(&shadow), flags) };
        let library = opened.map_err(|e| {
            remove_shadow(Error::Load {
                path: source.to_path_buf(),
                source: e,
            })
        })?;
        let module =
            Self::describe(library, source, &shadow, registry, bindings).map_err(remove_shadow)?;
        tracing::debug!(module = %source.display(), shadow = %shadow.display(), classes = module.classes.len(), "loaded");
        Ok(module)
    }

    fn describe(
        library: Library,
        source: &Path,
        shadow: &Path,
        registry: Arc<Registry>,
        bindings: Arc<Bindings>,
    ) -> Result<LoadedModule, Error> {
        let missing = |symbol: &str| Error::MissingSymbol {
            path: source.to_path_buf(),
            symbol: symbol.to_string(),
        };
        let name = abi::DESCRIPTOR_SYMBOL.as_bytes();
        // SAFETY: the shim defines this symbol with exactly the `DescriptorFn` signature.
        let symbol = unsafe { library.get::<DescriptorFn>(name) };
        let descriptor: DescriptorFn = symbol
            .map(|s| *s)
            .map_err(|_| missing(abi::DESCRIPTOR_SYMBOL))?;
        // SAFETY: noexcept, no arguments; returns a static descriptor living as long as the library.
        let desc = unsafe { descriptor().as_ref() };
        let desc: &ModuleDesc = desc.ok_or_else(|| missing("a non-null descriptor"))?;
        if desc.abi_version != abi::ABI_VERSION {
            return Err(Error::AbiVersion {
                path: source.to_path_buf(),
                found: desc.abi_version,
                expected: abi::ABI_VERSION,
            });
        }
        let mut classes = Vec::new();
        let mut slot_of_type = HashMap::new();
        let mut slot_of_type_name_address = AddressTable::default();
        // SAFETY: the descriptor's arrays hold `class_count` (etc.) entries of static data.
        for class in unsafe { table(desc.classes, desc.class_count) } {
            // SAFETY: every string in the descriptor is a NUL-terminated static.
            let name: Arc<str> = Arc::from(unsafe { owned(class.name) });
            // SAFETY: as above.
            let type_id = unsafe { owned(class.type_id_name) };
            // SAFETY: as above.
            let fields: Vec<ModuleField> = unsafe { table(class.fields, class.field_count) }
                .iter()
                // SAFETY: as above.
                .map(|f| unsafe { field(f) })
                .collect();
            // SAFETY: as above.
            let bases = unsafe { table(class.bases, class.base_count) }
                .iter()
                .map(|b| ModuleBase {
                    // SAFETY: as above.
                    name: unsafe { owned(b.name) },
                    offset: b.offset as usize,
                    is_virtual: b.is_virtual != 0,
                })
                .collect();
            // SAFETY: as above.
            let vptr_offsets: Vec<usize> = unsafe { table(class.vptr_offsets, class.vptr_count) }
                .iter()
                .map(|&v| v as usize)
                .collect();
            let slot = registry.slot(&name);
            slot_of_type_name_address.insert(class.type_id_name as usize, u64::from(slot));
            slot_of_type.insert(type_id.clone().into_bytes().into_boxed_slice(), slot);
            classes.push(ModuleClass {
                name,
                type_id_name: type_id,
                size: class.size as usize,
                align: class.align as usize,
                placement: Placement::of(class.size as usize, &fields, &vptr_offsets),
                fields,
                bases,
                vptr_offsets,
                construct: class.construct,
                destroy: class.destroy,
                measure_bases: class.measure_bases,
            });
        }
        let by_name = classes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let raw = library.into_raw();
        // SAFETY: `raw` came from `into_raw` just above and is owned by this new value.
        let library = unsafe { Library::from_raw(raw) };
        let host = Box::new(ModuleHost {
            api: HostApi {
                abi_version: abi::ABI_VERSION,
                reserved: 0,
                context: std::ptr::null_mut(),
                track: track_callback,
                untrack: untrack_callback,
                forwarder: forwarder_callback,
            },
            id: NEXT_HOST_ID.fetch_add(1, Ordering::Relaxed),
            registry,
            bindings,
            library_handle: raw as usize,
            source: source.to_path_buf(),
            slot_of_type_name_address,
            slot_of_type,
        });
        let host = NonNull::new(Box::into_raw(host)).expect("a Box is never null");
        // The context is derived from the raw pointer, so the module's copy keeps its provenance.
        // SAFETY: `host` is the allocation just released; nothing else refers to it yet.
        unsafe { (*host.as_ptr()).api.context = host.as_ptr().cast() };
        // From here on, dropping `module` closes the library before freeing `host`.
        let span = loaded_span(shadow).unwrap_or(0..0);
        let module = LoadedModule {
            library: Some(library),
            host,
            source: source.to_path_buf(),
            shadow: shadow.to_path_buf(),
            classes,
            by_name,
            span,
            exits: match (
                desc.exit_entries,
                desc.run_exit_entry,
                desc.adopt_exit_entry,
            ) {
                (Some(entries), Some(run), Some(adopt)) => Some(ExitList {
                    entries,
                    run,
                    adopt,
                }),
                _ => None,
            },
        };
        // The table lives until the library is closed (see `Drop`).
        // SAFETY: `host` is valid; this only takes the address of its `api` field.
        let api = unsafe { &raw const (*host.as_ptr()).api };
        // SAFETY: `attach` is the shim's noexcept function taking a pointer to such a table.
        if unsafe { (desc.attach)(api) } != abi::ThunkStatus::Ok as i32 {
            return Err(Error::Attach {
                path: source.to_path_buf(),
            });
        }
        Ok(module)
    }

    /// The class called `name`.
    pub fn class(&self, name: &str) -> Option<&ModuleClass> {
        self.by_name.get(name).map(|&i| &self.classes[i])
    }

    /// The index of the class called `name`.
    pub fn class_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Every address the build's segments cover (`.bss` included), whole pages.
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// Whether the module's static-destructor registrations are known (the generated shim
    /// records them; a descriptor written by hand may not).
    pub fn knows_exit_entries(&self) -> bool {
        self.exits.is_some()
    }

    /// The module's static-destructor registrations, oldest first, as the shim stores them
    /// (complemented).
    pub fn exit_entries(&self) -> Vec<ExitEntry> {
        let (entries, count) = self.exit_array();
        (0..count)
            .map(|i| {
                // SAFETY: the shim's array holds `count` initialised entries (or `entries` is null and `count` 0).
                unsafe { entries.add(i).read() }
            })
            .collect()
    }

    /// The shim's array of registrations and its length (null and 0 when none).
    fn exit_array(&self) -> (*mut ExitEntry, usize) {
        let Some(exits) = self.exits else {
            return (std::ptr::null_mut(), 0);
        };
        let mut count = 0u64;
        // SAFETY: the shim's noexcept accessor; `count` is a valid out-parameter.
        let entries = unsafe { (exits.entries)(&mut count) };
        if entries.is_null() {
            return (entries, 0);
        }
        (entries, count as usize)
    }

    /// Takes registration `index` away: it will not run when the module is unloaded.
    pub fn forget_exit_entry(&self, index: usize) {
        let (entries, count) = self.exit_array();
        if index < count {
            // SAFETY: an entry of the shim's array; the runtime calls this only for a build no thread runs (a refused new build) or with every other thread stopped outside the old build, so no registration moves the array meanwhile.
            unsafe { (*entries.add(index)).function_complement = !0 };
        }
    }

    /// Runs registration `index` now (and keeps it); the exception's message if it threw.
    pub fn run_exit_entry(&self, index: usize) -> Result<(), String> {
        let Some(exits) = self.exits else {
            return Ok(());
        };
        let mut message = [0u8; 256];
        let (buffer, capacity) = (message.as_mut_ptr().cast(), message.len());
        // SAFETY: the shim's guarded function; the buffer has the capacity passed.
        let status = unsafe { (exits.run)(index as u64, buffer, capacity) };
        if status == abi::ThunkStatus::Ok as i32 {
            return Ok(());
        }
        let end = message
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(message.len());
        Err(String::from_utf8_lossy(&message[..end]).into_owned())
    }

    /// Records `function(argument)` as the module's newest registration (taken over from
    /// another build); false when the shim could not record it.
    ///
    /// # Safety
    /// `function` is a function taking one pointer, which stays mapped as long as this module.
    pub unsafe fn adopt_exit_entry(&self, function: usize, argument: usize) -> bool {
        let Some(exits) = self.exits else {
            return false;
        };
        // SAFETY: by the caller's contract `function` has this type.
        let function: unsafe extern "C" fn(*mut c_void) = unsafe { std::mem::transmute(function) };
        // SAFETY: the shim's noexcept recorder.
        unsafe { (exits.adopt)(function, argument as *mut c_void) == 0 }
    }

    /// The address of an exported symbol.
    pub fn symbol_address(&self, name: &str) -> Option<*const c_void> {
        // SAFETY: reading a symbol's address does not call or dereference it.
        unsafe { self.symbol::<*const c_void>(name) }.filter(|p| !p.is_null())
    }

    /// Looks up an exported symbol.
    ///
    /// # Safety
    /// `T` must be the symbol's true type, and the value must not be used after this module is
    /// unloaded.
    pub unsafe fn symbol<T: Copy>(&self, name: &str) -> Option<T> {
        let library = self.library.as_ref()?;
        // SAFETY: the caller guarantees the type.
        unsafe { library.get::<T>(name.as_bytes()) }
            .ok()
            .map(|s| *s)
    }
}

impl Drop for LoadedModule {
    fn drop(&mut self) {
        let images = crate::relocation::lock_images();
        if let Some(library) = self.library.take() {
            if let Err(error) = library.close() {
                tracing::warn!(module = %self.source.display(), %error, "dlclose failed");
            }
        }
        // The library, the only other holder of the pointer, was closed just above.
        // SAFETY: `host` came from `Box::into_raw` in `describe` and is freed only here.
        drop(unsafe { Box::from_raw(self.host.as_ptr()) });
        let unmapped = !crate::maps::is_mapped(&self.shadow);
        if unmapped && !self.span.is_empty() && !reserve(&self.span) {
            tracing::warn!(module = %self.source.display(), "the unloaded build's address range could not be reserved");
        }
        drop(images);
        let _ = std::fs::remove_file(&self.shadow);
        if !unmapped {
            tracing::warn!(
                module = %self.source.display(),
                "the module is still mapped after dlclose (STB_GNU_UNIQUE symbols? build with -fno-gnu-unique)"
            );
        }
    }
}

/// Every address the segments of the loaded object `path` cover, by the loader's own account
/// (`dl_iterate_phdr`): its file's mappings and the anonymous tail of `.bss` after them, which
/// `/proc/self/maps` does not name. Whole pages.
fn loaded_span(path: &Path) -> Option<Range<usize>> {
    struct Search {
        name: std::ffi::CString,
        span: Option<Range<usize>>,
    }
    /// Called by `dl_iterate_phdr` once per loaded object, with the `Search` as `data`.
    extern "C" fn visit(info: *mut libc::dl_phdr_info, _: usize, data: *mut c_void) -> i32 {
        // SAFETY: `data` is the `Search` passed to dl_iterate_phdr below, used by nothing else meanwhile.
        let search = unsafe { &mut *data.cast::<Search>() };
        // SAFETY: the loader hands a valid description of one loaded object.
        let info = unsafe { &*info };
        if info.dlpi_name.is_null() {
            return 0;
        }
        // SAFETY: a NUL-terminated name owned by the loader.
        if unsafe { CStr::from_ptr(info.dlpi_name) } != search.name.as_c_str() {
            return 0;
        }
        let base = info.dlpi_addr as usize;
        let count = info.dlpi_phnum as usize;
        // SAFETY: the loader's program headers of the object, `dlpi_phnum` of them.
        let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, count) };
        let loads = headers.iter().filter(|h| h.p_type == libc::PT_LOAD);
        let start = loads.clone().map(|h| base + h.p_vaddr as usize).min();
        let end = loads.map(|h| base + (h.p_vaddr + h.p_memsz) as usize).max();
        if let (Some(start), Some(end)) = (start, end) {
            search.span = Some(start & !4095..(end + 4095) & !4095);
        }
        1
    }
    use std::os::unix::ffi::OsStrExt;
    let mut search = Search {
        name: std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?,
        span: None,
    };
    // SAFETY: `visit` matches the callback type and only touches `search`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&raw mut search).cast()) };
    search.span
}

/// Reserves `range`, where an unloaded build lay, for the rest of the process (no access,
/// address space only): no later mapping takes it, so a stale value in it (in freed memory,
/// in a dead stack frame) is never mistaken for a reference into another build, and a stale
/// use faults at a known address. False when something else took part of it meanwhile.
fn reserve(range: &Range<usize>) -> bool {
    let Ok(reserved) = crate::maps::map_anonymous(range.start, range.len(), libc::PROT_NONE) else {
        return false;
    };
    if reserved as usize != range.start {
        // SAFETY: the mapping just made elsewhere, not used.
        unsafe { libc::munmap(reserved.cast(), range.len()) };
    }
    reserved as usize == range.start
}

/// Ids for [`ModuleHost`]s (0: none).
static NEXT_HOST_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The class this thread tracked last: (host id, `typeid` name address, slot). Objects
    /// come in runs of one type, and this sits next to the registry's own thread-local, so a
    /// hit costs no cache line of its own.
    static LAST_TYPE: Cell<(u64, usize, ClassSlot)> = const { Cell::new((0, 0, 0)) };
}

/// # Safety
/// Called by the module with the context it was attached with, a `typeid(...).name()` and an
/// object address.
unsafe extern "C" fn track_callback(
    context: *mut c_void,
    type_id_name: *const c_char,
    object: *mut c_void,
) -> i32 {
    // The module calls only while loaded, and its `ModuleHost` outlives it.
    // SAFETY: the context is the `ModuleHost` this module was attached with.
    let host = unsafe { &*(context as *const ModuleHost) };
    if type_id_name.is_null() || object.is_null() {
        return 1;
    }
    let (last_host, last_type, last_slot) = LAST_TYPE.get();
    let slot = if last_host == host.id && last_type == type_id_name as usize {
        last_slot
    } else {
        let slot = match host.slot_of_type_name_address.get(type_id_name as usize) {
            Some(slot) => slot as ClassSlot,
            None => slot_of_type_text(host, type_id_name),
        };
        LAST_TYPE.set((host.id, type_id_name as usize, slot));
        slot
    };
    if host.registry.insert(object as usize, slot) {
        0
    } else {
        1
    }
}

/// The slow path of [`track_callback`]: look the type up by its text.
#[cold]
#[inline(never)]
fn slot_of_type_text(host: &ModuleHost, type_id_name: *const c_char) -> ClassSlot {
    // SAFETY: `typeid(...).name()` is a NUL-terminated static string.
    let type_id = unsafe { CStr::from_ptr(type_id_name) }.to_bytes();
    match host.slot_of_type.get(type_id) {
        Some(&slot) => slot,
        None => {
            let name = format!("{UNKNOWN_TYPE_PREFIX}{}", String::from_utf8_lossy(type_id));
            tracing::warn!(type_id = %name, "the module tracked an object of a type it does not describe; reloads are refused while it lives");
            host.registry.slot(&name)
        }
    }
}

/// # Safety
/// As [`track_callback`].
unsafe extern "C" fn untrack_callback(context: *mut c_void, object: *mut c_void) {
    // SAFETY: as in `track_callback`.
    let host = unsafe { &*(context as *const ModuleHost) };
    host.registry.remove(object as usize);
}

/// # Safety
/// As [`track_callback`]; `symbol` is a NUL-terminated string.
unsafe extern "C" fn forwarder_callback(
    context: *mut c_void,
    symbol: *const c_char,
) -> *const c_void {
    // SAFETY: as in `track_callback`.
    let host = unsafe { &*(context as *const ModuleHost) };
    if symbol.is_null() {
        return std::ptr::null();
    }
    // SAFETY: the handle is this module's, open while the module can call; `symbol` is a C string.
    let target = unsafe { libc::dlsym(host.library_handle as *mut c_void, symbol) };
    if target.is_null() {
        return std::ptr::null();
    }
    // SAFETY: `symbol` is a NUL-terminated string.
    let name = unsafe { CStr::from_ptr(symbol) }.to_string_lossy();
    match host
        .bindings
        .bind(&name, &host.source, target, Owner::Module)
    {
        Ok((_, address)) => address,
        Err(error) => {
            tracing::error!(symbol = %name, %error, "cannot map a forwarder page");
            std::ptr::null()
        }
    }
}
