//! One loaded build of a module: its private shadow copy, the `dlopen` handle, the classes its
//! descriptor describes, and the host-API context handed to it.
//!
//! Every build is loaded from a copy with a unique name in a private folder, so the build may
//! overwrite the original while it is loaded and an old and a new build can be loaded at once
//! (`dlopen` of a path already loaded would return the old handle). Dropping a
//! [`LoadedModule`] closes the library and deletes the copy.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};

use crate::abi::{self, ConstructFn, DescriptorFn, DestroyFn, HostApi, MeasureBasesFn, ModuleDesc};
use crate::address_table::AddressTable;
use crate::bindings::{Bindings, Owner};
use crate::error::Error;
use crate::registry::{ClassSlot, Registry};

/// Prefix of the registry class name of an object whose `typeid` no class describes.
pub(crate) const UNKNOWN_TYPE_PREFIX: &str = "?";

/// One class as the module describes it, copied out of the descriptor.
#[derive(Debug, Clone)]
pub(crate) struct ModuleClass {
    pub name: Arc<str>,
    pub size: usize,
    pub align: usize,
    pub layout_hash: u64,
    /// (owner::name, byte range) of every declared member.
    pub fields: Vec<(String, Range<usize>)>,
    pub vptr_offsets: Vec<usize>,
    pub construct: Option<ConstructFn>,
    pub destroy: Option<DestroyFn>,
    pub measure_bases: Option<MeasureBasesFn>,
    pub base_offsets: Vec<(String, usize)>,
}

/// What the module's track/untrack callbacks reach. Boxed so its address is stable; it lives
/// as long as the module.
struct ModuleHost {
    api: HostApi,
    /// Unique for the process's lifetime, so [`LAST_TYPE`] never matches another host.
    id: u64,
    registry: Arc<Registry>,
    bindings: Arc<Bindings>,
    /// The `dlopen` handle, for the module's own forwarder requests.
    library_handle: usize,
    /// Keyed by the address of the `typeid(T).name()` string: within one module every
    /// `typeid` of a type returns the same string, so this avoids hashing the text.
    slot_of_type_name_address: AddressTable,
    /// The fallback, keyed by the text.
    slot_of_type: HashMap<Box<[u8]>, ClassSlot>,
}

// SAFETY: `api.context` points at the `ModuleHost` itself and is only dereferenced by the
// callbacks, which touch nothing but the thread-safe `Registry` and the immutable type map.
unsafe impl Send for ModuleHost {}
// SAFETY: as above: shared access only reads immutable data or goes through the thread-safe
// `Registry`.
unsafe impl Sync for ModuleHost {}

/// A loaded build of a module.
pub(crate) struct LoadedModule {
    // Field order matters: the library is closed before the host context it may point at.
    library: Option<Library>,
    /// Read by the module's callbacks through the pointer it was attached with.
    _host: Box<ModuleHost>,
    pub source: PathBuf,
    pub shadow: PathBuf,
    pub classes: Vec<ModuleClass>,
    by_name: HashMap<Arc<str>, usize>,
}

static SHADOW_COUNTER: AtomicU64 = AtomicU64::new(0);

fn shadow_folder() -> std::io::Result<PathBuf> {
    let folder = std::env::temp_dir().join(format!("rehydrate-{}", std::process::id()));
    std::fs::create_dir_all(&folder)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(folder)
}

fn make_shadow_copy(source: &Path) -> Result<PathBuf, Error> {
    let err = |source_error| Error::ShadowCopy {
        path: source.to_path_buf(),
        source: source_error,
    };
    let stem = source
        .file_stem()
        .map_or("module".into(), |s| s.to_string_lossy().into_owned());
    let number = SHADOW_COUNTER.fetch_add(1, Ordering::Relaxed);
    let shadow = shadow_folder()
        .map_err(err)?
        .join(format!("{stem}-{number}.so"));
    std::fs::copy(source, &shadow).map_err(err)?;
    Ok(shadow)
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
        registry: Arc<Registry>,
        bindings: Arc<Bindings>,
    ) -> Result<LoadedModule, Error> {
        if !source.is_file() {
            return Err(Error::ShadowCopy {
                path: source.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let shadow = make_shadow_copy(source)?;
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
            let fields = unsafe { table(class.fields, class.field_count) }
                .iter()
                .map(|f| {
                    let range = if f.bit_width == 0 {
                        f.offset as usize..(f.offset + f.size) as usize
                    } else {
                        (f.bit_offset / 8) as usize
                            ..(f.bit_offset + u64::from(f.bit_width)).div_ceil(8) as usize
                    };
                    // SAFETY: as above.
                    let owner = unsafe { owned(f.owner) };
                    // SAFETY: as above.
                    let name = unsafe { owned(f.name) };
                    (format!("{owner}::{name}"), range)
                })
                .collect();
            // SAFETY: as above.
            let base_offsets = unsafe { table(class.bases, class.base_count) }
                .iter()
                // SAFETY: as above.
                .map(|b| (unsafe { owned(b.name) }, b.offset as usize))
                .collect();
            // SAFETY: as above.
            let vptr_offsets = unsafe { table(class.vptr_offsets, class.vptr_count) }
                .iter()
                .map(|&v| v as usize)
                .collect();
            let slot = registry.slot(&name);
            slot_of_type_name_address.insert(class.type_id_name as usize, u64::from(slot));
            slot_of_type.insert(type_id.into_bytes().into_boxed_slice(), slot);
            classes.push(ModuleClass {
                name,
                size: class.size as usize,
                align: class.align as usize,
                layout_hash: class.layout_hash,
                fields,
                vptr_offsets,
                construct: class.construct,
                destroy: class.destroy,
                measure_bases: class.measure_bases,
                base_offsets,
            });
        }
        let by_name = classes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let mut host = Box::new(ModuleHost {
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
            library_handle: 0,
            slot_of_type_name_address,
            slot_of_type,
        });
        host.api.context = (&*host as *const ModuleHost).cast_mut().cast();
        let raw = library.into_raw();
        host.library_handle = raw as usize;
        // SAFETY: `raw` came from `into_raw` just above and is owned by this new value.
        let library = unsafe { Library::from_raw(raw) };
        // The table lives in `host`, which is dropped only after the library is closed.
        // SAFETY: `attach` is the shim's noexcept function taking a pointer to this table.
        if unsafe { (desc.attach)(&host.api) } != abi::ThunkStatus::Ok as i32 {
            return Err(Error::Attach {
                path: source.to_path_buf(),
            });
        }
        Ok(LoadedModule {
            library: Some(library),
            _host: host,
            source: source.to_path_buf(),
            shadow: shadow.to_path_buf(),
            classes,
            by_name,
        })
    }

    /// The class called `name`.
    pub fn class(&self, name: &str) -> Option<&ModuleClass> {
        self.by_name.get(name).map(|&i| &self.classes[i])
    }

    /// The index of the class called `name`.
    pub fn class_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
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
        if let Some(library) = self.library.take() {
            if let Err(error) = library.close() {
                tracing::warn!(module = %self.source.display(), %error, "dlclose failed");
            }
        }
        let _ = std::fs::remove_file(&self.shadow);
        if let Some(folder) = self.shadow.parent() {
            let _ = std::fs::remove_dir(folder); // only succeeds once the last copy is gone
        }
        if !crate::maps::mappings_of(&self.shadow).is_empty() {
            tracing::warn!(
                module = %self.source.display(),
                "the module is still mapped after dlclose (STB_GNU_UNIQUE symbols? build with -fno-gnu-unique)"
            );
        }
    }
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
            tracing::warn!(type_id = %name, "the module tracked an object of a type it does not describe");
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
    match host.bindings.bind(&name, target, Owner::Module) {
        Ok((_, address)) => address,
        Err(error) => {
            tracing::error!(symbol = %name, %error, "cannot map a forwarder page");
            std::ptr::null()
        }
    }
}
