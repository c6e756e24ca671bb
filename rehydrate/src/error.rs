//! The runtime's error type. Every variant names the path, symbol, class, field or object at
//! fault; causes stay in `source()`.

use std::path::PathBuf;

/// What C++ code of the module was running when it threw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CppOperation {
    /// A constructor (creating an object, or a probe dummy).
    Construction,
    /// A destructor.
    Destruction,
}

impl std::fmt::Display for CppOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CppOperation::Construction => "construction",
            CppOperation::Destruction => "destruction",
        })
    }
}

/// Why loading, probing or reloading a module failed. A failed reload has changed nothing: the
/// old module is still loaded and every live object is byte-for-byte as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The module file could not be copied to its private shadow location.
    #[error("cannot make a shadow copy of {}", path.display())]
    ShadowCopy {
        /// The module path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `dlopen` refused the module.
    #[error("cannot load module {}", path.display())]
    Load {
        /// The module path.
        path: PathBuf,
        /// The loader's error.
        #[source]
        source: libloading::Error,
    },
    /// The module does not export a symbol the runtime needs.
    #[error("module {} does not export `{symbol}` (was the layout-gen shim compiled in?)", path.display())]
    MissingSymbol {
        /// The module path.
        path: PathBuf,
        /// The symbol.
        symbol: String,
    },
    /// The module's shim speaks another descriptor version.
    #[error("module {} has descriptor ABI version {found}, this runtime speaks {expected}: regenerate its shim", path.display())]
    AbiVersion {
        /// The module path.
        path: PathBuf,
        /// Version in the module.
        found: u32,
        /// Version of this runtime.
        expected: u32,
    },
    /// The module rejected the runtime's function table.
    #[error("module {} refused the runtime's function table", path.display())]
    Attach {
        /// The module path.
        path: PathBuf,
    },
    /// No class of this name is described by the module.
    #[error("class {class} is not described by module {}", path.display())]
    UnknownClass {
        /// The class.
        class: String,
        /// The module path.
        path: PathBuf,
    },
    /// A constructor or destructor thunk reported a C++ exception.
    #[error("{operation} of {class} threw a C++ exception: {message}")]
    CppException {
        /// What was running.
        operation: CppOperation,
        /// The class.
        class: String,
        /// The exception's `what()`.
        message: String,
    },
    /// The class cannot build a dummy (abstract, or no accessible default constructor).
    #[error("{class} has no usable default constructor, so it cannot be created or probed")]
    NotConstructible {
        /// The class.
        class: String,
    },
    /// Probing found bytes that change differently in every dummy outside any declared field.
    #[error("{class} cannot be rehydrated: bytes {offsets:?} change differently in every dummy and belong to no field")]
    Anomalous {
        /// The class.
        class: String,
        /// The anomalous byte offsets.
        offsets: Vec<usize>,
    },
    /// The compiler and the generated table disagree about the class (stale tables).
    #[error("{class} does not match its generated table: {detail}")]
    TableMismatch {
        /// The class.
        class: String,
        /// What differs.
        detail: String,
    },
    /// The sources of a class's compiler-written bytes (the constructor analysis, the probe,
    /// the table's vptr slots, the vtable symbols) disagree: the class refuses to reload.
    #[error("the compiler-written bytes of {class} are in doubt: {}", disagreements.join("; "))]
    ImageDisagreement {
        /// The class.
        class: String,
        /// Each disagreement: the offset and what each source said.
        disagreements: Vec<String>,
    },
    /// A forwarder page could not be mapped.
    #[error("cannot make a forwarder for `{symbol}`")]
    Forwarder {
        /// The symbol.
        symbol: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A class with live objects is absent from the new module.
    #[error("class {class} has {objects} live object(s) but the new module {} does not describe it", path.display())]
    ClassMissing {
        /// The class.
        class: String,
        /// How many objects are live.
        objects: usize,
        /// The new module.
        path: PathBuf,
    },
    /// A class with live objects has a different layout in the new module.
    #[error("the layout of {class} changed, so its {objects} live object(s) cannot be kept: {}", changes.join("; "))]
    LayoutChanged {
        /// The class.
        class: String,
        /// How many objects are live.
        objects: usize,
        /// What moved (`field hp: offset 8 -> 12`).
        changes: Vec<String>,
    },
    /// A live object's implicit bytes are not the old module's: it was not made by this module,
    /// or something overwrote its vptrs.
    #[error("live object {address:#x} of class {class} has unexpected implicit bytes at offset {offset}")]
    StaleObject {
        /// The object's address.
        address: usize,
        /// Its class.
        class: String,
        /// The first byte that differs.
        offset: usize,
    },
    /// A build's ELF file could not be read for its symbols.
    #[error("cannot read the symbols of module {}: {reason}", path.display())]
    Symbols {
        /// The module path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Memory holds references into the old build that cannot be mapped into the new one.
    #[error("the reload is refused: memory holds references into {} that the new build cannot take over: {}", path.display(), problems.join("; "))]
    UnresolvableReferences {
        /// The old module.
        path: PathBuf,
        /// Each kind of reference: what it points at, why it cannot be mapped, and what holds it.
        problems: Vec<String>,
    },
    /// Another thread was executing in the old build, or would return into it, every time the
    /// reload stopped the world until its deadline (see `Reload::deadline`).
    #[error("the reload is refused: thread `{thread}` (tid {tid}) {place} the old build of {} after {waited:?} of retries", path.display())]
    ThreadInOldBuild {
        /// The thread's name (`?` once it is gone).
        thread: String,
        /// Its id.
        tid: u32,
        /// Where it was: "is executing `game::Enemy::think()`+0x1c in", "will return into ... of".
        place: String,
        /// The old module.
        path: PathBuf,
        /// How long the reload tried.
        waited: std::time::Duration,
    },
    /// A thread did not stop when signalled (it blocks the stop signal, or is in an
    /// uninterruptible wait).
    #[error("the reload is refused: thread `{thread}` (tid {tid}){} did not stop within {waited:?} (does it block signal {signal}?)", if *others > 0 { format!(" and {others} other(s)") } else { String::new() })]
    ThreadDidNotStop {
        /// The thread's name.
        thread: String,
        /// Its id.
        tid: u32,
        /// How many other threads did not stop either.
        others: usize,
        /// The stop signal (`rehydrate::stop_signal()`).
        signal: i32,
        /// How long the stop waited.
        waited: std::time::Duration,
    },
    /// Other threads kept writing references into the old build that no scan had resolved,
    /// until the reload's deadline.
    #[error("the reload is refused: other threads kept writing references into {} faster than the reload could resolve them ({what}) for {waited:?}", path.display())]
    ReferencesKeptChanging {
        /// The old module.
        path: PathBuf,
        /// The last one seen.
        what: String,
        /// How long the reload tried.
        waited: std::time::Duration,
    },
    /// The signal the runtime stops threads with already has a handler that is not the
    /// runtime's (the host's or a library's); the runtime does not take it over.
    #[error("the reload is refused: signal {signal} (SIGRTMIN+6), which stops the other threads for the commit, already has another handler")]
    StopSignalTaken {
        /// The signal (`rehydrate::stop_signal()`).
        signal: i32,
    },
    /// Threads stayed inside the host's `ModuleGate` until the reload's deadline.
    #[error("the reload is refused: {threads} thread(s) were still inside the module gate after {waited:?}")]
    GateBusy {
        /// Threads inside.
        threads: usize,
        /// How long the reload waited.
        waited: std::time::Duration,
    },
    /// A reload found several problems; each is listed.
    #[error("the reload is refused: {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    ReloadRefused {
        /// Every problem found, one per class.
        problems: Vec<Error>,
    },
    /// The module tracked an object whose dynamic type no described class has.
    #[error(
        "{objects} live object(s) have type {class} (typeid name {type_id_name}), which no class of the module describes"
    )]
    UntrackableType {
        /// The type, demangled (`game::Player`).
        class: String,
        /// `typeid(...).name()` of the object, as the compiler mangles it.
        type_id_name: String,
        /// How many.
        objects: usize,
    },
}
