//! The runtime: one loaded build of a module, the probe images of its classes, its live
//! objects, and reloads.
//!
//! ```no_run
//! # fn main() -> Result<(), rehydrate::Error> {
//! let mut runtime = rehydrate::Runtime::load("target/libgame.so")?;
//! let robot = runtime.create("world::Robot")?;
//! // ... the module is edited and rebuilt ...
//! let report = runtime.reload("target/libgame.so")?.rehydrate_all()?;
//! println!("{} objects now run the new code", report.objects);
//! # Ok(()) }
//! ```
//!
//! # Threads
//!
//! Other threads may run module code while a reload is prepared. The process's memory is
//! scanned while they run; then every other thread is stopped (see `threads`), and the commit
//! goes ahead only when none of them executes in the old build or will return into it;
//! otherwise the threads run on and the stop is tried again until [`Reload::deadline`], and
//! then the reload is refused, naming the thread and the function ([`Error::ThreadInOldBuild`]).
//! With the threads stopped, memory is scanned again for references they wrote since the
//! first scan (an object made by old code meanwhile, a function pointer stored) and their
//! registers are read: both are re-pointed like any other reference (a value no scan had seen
//! makes the reload plan again). Then the commit writes (tracked objects, carried globals,
//! references, registers, forwarders) and the threads are released. Threads blocked in a
//! system call or running host code stop at once. A host that wants no retries passes its
//! threads through [`Runtime::gate`] while they call module code.
//!
//! [`Runtime::reload`] takes `&mut self`, so no other use of the runtime overlaps a reload;
//! dropping a [`LiveObject`] on another thread during a reload is safe (its destructor runs
//! entirely before or entirely after the commit, in the build current at that moment).
//!
//! # Lock order
//!
//! First the host's **gate** ([`ModuleGate`], closed by a reload before anything else and
//! opened after the unload), then two locks, always in this order: the **build lock**
//! (`Shared::current`, read by anything that runs module code on behalf of the host: creating
//! and destroying objects; written by the commit), then the **registry** (`Registry::stop` and
//! the slow paths of tracking and untracking, which module code may take while the host holds
//! the build lock, for example a destructor that untracks its children). The forwarder
//! bindings' lock comes after both, and the forwarder pool's (with its traps) after that.
//! The process-wide **image lock** (`relocation::lock_images`: held while any runtime maps or
//! unmaps a build, and from a reload's scan to its audit) comes after the build lock and the
//! registry. A reload destroys the fresh values of carried globals before it stops the
//! registry, and releases the registry before it closes the old build (static destructors may
//! untrack objects). Every lock the stopped window needs (the bindings') is taken before the
//! world is stopped: a stopped thread must not hold it. Reloads of different runtimes in one
//! process run one after the other.

use std::alloc::{alloc, dealloc, Layout};
use std::marker::PhantomData;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::bindings::{Bindings, Owner};
use crate::error::{CppOperation, Error};
use crate::image::{ClassImage, ImageFailure, Writes};
use crate::images::{images_of, ClassInspection, ProbePolicy};
use crate::layout_gate::{changed_layouts, layout_changes};
use crate::module::{LoadedModule, ShadowFolder, UNKNOWN_TYPE_PREFIX};
use crate::registry::{self, ClassSlot, Registry, Stopped};
use crate::relocation::{
    self, Audit, BuildImage, GlobalsReport, Holder, Outdated, RegisterWord, RelocationCounts,
};
use crate::threads::{self, Blocked, InRange, ModuleGate, ThreadsReport};

/// One loaded build, the image of each of its classes (same order as its classes) with what
/// each source said, and its ELF symbols.
struct Build {
    module: LoadedModule,
    images: Vec<Result<ClassImage, ImageFailure>>,
    inspections: Vec<ClassInspection>,
    elf: BuildImage,
}

impl Build {
    fn load(
        path: &Path,
        shadows: &ShadowFolder,
        registry: &Arc<Registry>,
        bindings: &Arc<Bindings>,
        policy: ProbePolicy,
    ) -> Result<(Build, Duration, Duration), Error> {
        let started = Instant::now();
        let module = LoadedModule::load(path, shadows, registry.clone(), bindings.clone())?;
        let elf =
            BuildImage::of(&module.shadow, module.span()).map_err(|reason| Error::Symbols {
                path: path.to_path_buf(),
                reason,
            })?;
        let loaded = started.elapsed();
        let started = Instant::now();
        let (images, inspections) = images_of(&module, &elf, policy);
        let build = Build {
            module,
            images,
            inspections,
            elf,
        };
        for class in build.unreloadable() {
            tracing::warn!(
                module = %path.display(), class = %class.class, reason = %class.reason,
                "live objects of this class cannot be reloaded"
            );
        }
        Ok((build, loaded, started.elapsed()))
    }

    /// Every class whose image could not be made, with the reason.
    fn unreloadable(&self) -> Vec<UnreloadableClass> {
        self.module
            .classes
            .iter()
            .zip(&self.images)
            .filter_map(|(class, image)| {
                let failure = image.as_ref().err()?;
                if matches!(failure, ImageFailure::NotConstructible) {
                    return None; // reloaded through the symbol mapping
                }
                Some(UnreloadableClass {
                    class: class.name.clone(),
                    reason: failure.to_error(&class.name).to_string(),
                })
            })
            .collect()
    }

    /// The index of `class` in this build, or the error naming the class and the module.
    fn index_of(&self, class: &str) -> Result<usize, Error> {
        self.module
            .class_index(class)
            .ok_or_else(|| Error::UnknownClass {
                class: class.to_string(),
                path: self.module.source.clone(),
            })
    }

    fn image(&self, index: usize) -> Result<&ClassImage, Error> {
        self.images[index]
            .as_ref()
            .map_err(|failure| failure.to_error(&self.module.classes[index].name))
    }
}

/// What a runtime and everything it handed out share. See the module docs for the lock order.
struct Shared {
    registry: Arc<Registry>,
    /// When the probe runs, for every build loaded.
    probe_policy: ProbePolicy,
    bindings: Arc<Bindings>,
    /// The host's gate around calls into the module, closed by every reload.
    gate: ModuleGate,
    /// The build lock.
    current: RwLock<Build>,
    /// Declared after `current`, so it is removed after the last build's copy is closed.
    shadows: ShadowFolder,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Build> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Build> {
        self.current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A module and everything alive in it. See the module docs for the flow and the threading
/// contract.
pub struct Runtime {
    shared: Arc<Shared>,
}

/// An object the host created through [`Runtime::create`]; destroyed (with the destructor of
/// the build loaded at that time) when dropped. Keeps the module loaded while it lives.
///
/// `Send` and `Sync`: it may be dropped on any thread, also while another thread reloads (the
/// destructor runs under the build lock, entirely in one build). The handle itself only hands
/// out the address; what a thread does with the C++ object behind it is the caller's affair.
pub struct LiveObject {
    address: NonNull<u8>,
    layout: Layout,
    slot: ClassSlot,
    shared: Arc<Shared>,
}

// SAFETY: the only thread-bound state is the address, which the handle never dereferences
// except in `Drop`, which takes the build lock and goes through the thread-safe registry.
unsafe impl Send for LiveObject {}
// SAFETY: `&LiveObject` only reads the address and the class name (through the registry's lock).
unsafe impl Sync for LiveObject {}

/// A reload in progress: the new build is loaded and probed next to the old one; nothing has
/// been written. [`Reload::rehydrate_all`] commits it; dropping it rolls back (the new build is
/// unloaded and the old one stays).
#[must_use = "a reload does nothing until rehydrate_all() is called"]
pub struct Reload<'rt> {
    runtime: &'rt mut Runtime,
    new: Build,
    load_time: Duration,
    images_time: Duration,
    strict: bool,
    deadline: Duration,
}

/// How long a reload waits, by default, for the host's threads to leave the old build.
pub const DEFAULT_RELOAD_DEADLINE: Duration = Duration::from_secs(2);

/// A class whose live objects a reload would refuse, and why (see
/// [`Runtime::unreloadable_classes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreloadableClass {
    /// The class.
    pub class: Arc<str>,
    /// Why, for people to read.
    pub reason: String,
}

/// What a committed reload did, with the time of each phase.
#[derive(Debug, Clone)]
pub struct ReloadReport {
    /// Live objects patched.
    pub objects: usize,
    /// Classes that had live objects.
    pub classes: usize,
    /// Loading the new build (shadow copy, `dlopen`, descriptor).
    pub load: Duration,
    /// Reading every class's image of the new build: the constructor analysis, and the probe
    /// where the analysis gave up (or for every class, with [`ProbePolicy::Always`]).
    pub images: Duration,
    /// Checking every live object against the old build's image.
    pub validate: Duration,
    /// Copying the new implicit bytes into every live object.
    pub patch: Duration,
    /// Scanning the process's writable memory and resolving every reference into the old
    /// build (before the commit point).
    pub scan: Duration,
    /// Rewriting those references.
    pub relocate: Duration,
    /// What was re-pointed, by kind, and what was left alone.
    pub references: RelocationCounts,
    /// The module's globals carried into the new build, and those that start fresh.
    pub globals: GlobalsReport,
    /// Destroying the carried globals' fresh values, copying the old ones in and handing
    /// their destructors over.
    pub carry: Duration,
    /// Unloading the old build.
    pub unload: Duration,
    /// `/proc/self/maps` no longer shows the old build.
    pub old_image_unmapped: bool,
    /// When the old build is still mapped: why, as far as the runtime can tell.
    pub old_image_kept_because: Option<String>,
    /// The old build's former range is reserved (no access), so a stale use faults there.
    pub old_range_reserved: bool,
    /// Scanning again after the unload: what still points into the old build's former range.
    pub audit: Audit,
    /// How long the audit took.
    pub audit_time: Duration,
    /// How the other threads were stopped for the commit, and for how long.
    pub threads: ThreadsReport,
}

/// A symbol of the current build, usable while the runtime is borrowed (a reload needs
/// `&mut Runtime`, so the value cannot outlive the build it came from through this guard).
pub struct ModuleSymbol<'rt, T> {
    value: T,
    _runtime: PhantomData<&'rt Runtime>,
}

impl<T> std::ops::Deref for ModuleSymbol<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl Runtime {
    /// Loads the module at `path` (through a private shadow copy) and reads the image of each
    /// of its classes from its constructors' code (probing only where that gives up).
    pub fn load(path: impl AsRef<Path>) -> Result<Runtime, Error> {
        Runtime::load_with(path, ProbePolicy::default())
    }

    /// [`Runtime::load`], with the probe run as `probe_policy` says, for this build and every
    /// later one.
    pub fn load_with(path: impl AsRef<Path>, probe_policy: ProbePolicy) -> Result<Runtime, Error> {
        let path = path.as_ref();
        let shadows = ShadowFolder::new().map_err(|source| Error::ShadowCopy {
            path: path.to_path_buf(),
            source,
        })?;
        let registry = Arc::new(Registry::default());
        let bindings = Arc::new(Bindings::default());
        let (build, load, images) =
            Build::load(path, &shadows, &registry, &bindings, probe_policy)?;
        tracing::info!(module = %path.display(), ?load, ?images, "module loaded");
        Ok(Runtime {
            shared: Arc::new(Shared {
                registry,
                probe_policy,
                bindings,
                gate: ModuleGate::default(),
                current: RwLock::new(build),
                shadows,
            }),
        })
    }

    /// Creates a live object of `class` with its default constructor (`new (p) T`).
    pub fn create(&self, class: &str) -> Result<LiveObject, Error> {
        let build = self.shared.read();
        let description = &build.module.classes[build.index_of(class)?];
        let construct = description
            .construct
            .ok_or_else(|| Error::NotConstructible {
                class: class.to_string(),
            })?;
        let layout = Layout::from_size_align(description.size.max(1), description.align.max(1))
            .expect("class sizes and alignments from the descriptor are valid");
        // SAFETY: the layout has a non-zero size.
        let address = NonNull::new(unsafe { alloc(layout) })
            .unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        let mut message = [0u8; 512];
        let (buffer, capacity) = (message.as_mut_ptr().cast(), message.len());
        // SAFETY: the class's noexcept placement constructor; `address` has its size and alignment.
        let status = unsafe { construct(address.as_ptr().cast(), buffer, capacity) };
        if status != 0 {
            // SAFETY: allocated above with this layout; the constructor did not complete.
            unsafe { dealloc(address.as_ptr(), layout) };
            let end = message
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(message.len());
            return Err(Error::CppException {
                operation: CppOperation::Construction,
                class: class.to_string(),
                message: String::from_utf8_lossy(&message[..end]).into_owned(),
            });
        }
        let slot = self.shared.registry.slot(class);
        self.shared.registry.insert(address.as_ptr() as usize, slot);
        Ok(LiveObject {
            address,
            layout,
            slot,
            shared: self.shared.clone(),
        })
    }

    /// Loads and probes a new build of the module next to the current one. Nothing is written
    /// until [`Reload::rehydrate_all`]; any error leaves everything as it was.
    pub fn reload(&mut self, path: impl AsRef<Path>) -> Result<Reload<'_>, Error> {
        let shared = &self.shared;
        let (new, load_time, images_time) = Build::load(
            path.as_ref(),
            &shared.shadows,
            &shared.registry,
            &shared.bindings,
            shared.probe_policy,
        )?;
        tracing::info!(module = %path.as_ref().display(), load = ?load_time, probe = ?images_time, "new build loaded and its classes read");
        Ok(Reload {
            strict: false,
            deadline: DEFAULT_RELOAD_DEADLINE,
            runtime: self,
            new,
            load_time,
            images_time,
        })
    }

    /// The gate the host's threads pass through while they call module code: every reload
    /// closes it, waits for the threads inside to leave (until its deadline) and opens it when
    /// done, so the world it stops finds no thread in the old build. Optional: without it a
    /// reload stops the threads wherever they are and tries again while one is in the old
    /// build. See [`ModuleGate`].
    pub fn gate(&self) -> ModuleGate {
        self.shared.gate.clone()
    }

    /// A stable address for the module's exported function `symbol`, for code that is never
    /// reloaded: every reload re-points it to the new build's `symbol` before the old build is
    /// unloaded, and a new build without `symbol` fails the reload. Released when the handle
    /// is dropped (calling it afterwards aborts).
    pub fn forwarder(&self, symbol: &str) -> Result<BoundForwarder, Error> {
        let build = self.shared.read();
        let target = build
            .module
            .symbol_address(symbol)
            .ok_or_else(|| Error::MissingSymbol {
                path: build.module.source.clone(),
                symbol: symbol.to_string(),
            })?;
        let (id, address) = self
            .shared
            .bindings
            .bind(symbol, &build.module.source, target, Owner::Host)
            .map_err(|source| Error::Forwarder {
                symbol: symbol.to_string(),
                source,
            })?;
        Ok(BoundForwarder {
            id,
            address,
            shared: self.shared.clone(),
        })
    }

    /// Looks up a function the current build exports.
    ///
    /// # Safety
    /// `T` must be the symbol's true type, and the value must not be copied out of the guard
    /// and used after a reload.
    pub unsafe fn symbol<T: Copy>(&self, name: &str) -> Result<ModuleSymbol<'_, T>, Error> {
        let build = self.shared.read();
        // SAFETY: the caller guarantees the type; the guard's lifetime keeps reloads away.
        let value = unsafe { build.module.symbol::<T>(name) };
        let value = value.ok_or_else(|| Error::MissingSymbol {
            path: build.module.source.clone(),
            symbol: name.to_string(),
        })?;
        Ok(ModuleSymbol {
            value,
            _runtime: PhantomData,
        })
    }

    /// Number of live objects (host-created and module-tracked): a sum of per-thread counters,
    /// cheap enough to call every frame. While other threads track or untrack it is a recent
    /// value, not a snapshot.
    pub fn live_objects(&self) -> usize {
        self.shared.registry.len()
    }

    /// A snapshot of every live object as (class, complete-object address). Taking it stops
    /// the registry (threads that track or untrack meanwhile wait, under a microsecond plus
    /// the copy), so it is for tools and tests, not for every frame.
    pub fn live_object_addresses(&self) -> Vec<(Arc<str>, usize)> {
        let objects = self.shared.registry.stop();
        objects
            .addresses()
            .map(|(class, address)| (class.clone(), address))
            .collect()
    }

    /// Every class of the current build whose live objects could not be reloaded, with the
    /// reason (a throwing constructor, bytes
    /// that change differently in every dummy, a table the compiler disagrees with). Also
    /// logged (`tracing`, warn) when a build is loaded.
    pub fn unreloadable_classes(&self) -> Vec<UnreloadableClass> {
        self.shared.read().unreloadable()
    }

    /// What each source (constructor analysis, probe, table, vtable symbols) says about every
    /// class of the current build, and whether they agree: what `rehydrate inspect` prints.
    pub fn inspect(&self) -> Vec<ClassInspection> {
        self.shared.read().inspections.clone()
    }

    /// The image of `class` in the current build.
    pub fn class_image(&self, class: &str) -> Result<ClassImage, Error> {
        let build = self.shared.read();
        build.image(build.index_of(class)?).cloned()
    }

    /// Vptr offsets of `class` according to the current build's descriptor.
    pub fn vptr_offsets(&self, class: &str) -> Result<Vec<usize>, Error> {
        let build = self.shared.read();
        let index = build.index_of(class)?;
        Ok(build.module.classes[index].vptr_offsets.clone())
    }

    /// Path of the current build's private shadow copy (what `/proc/self/maps` shows).
    pub fn shadow_path(&self) -> PathBuf {
        self.shared.read().module.shadow.clone()
    }

    /// Address ranges the current build occupies: its file's mappings, and the anonymous
    /// tail of its `.bss` when it has one.
    pub fn image_ranges(&self) -> Vec<Range<usize>> {
        let build = self.shared.read();
        let mut ranges = crate::maps::mappings_of(&build.module.shadow);
        let span = build.module.span();
        if let Some(end) = ranges.iter().map(|r| r.end).max() {
            if end < span.end {
                ranges.push(end..span.end);
            }
        }
        ranges
    }
}

/// A forwarder bound to a module symbol (see [`Runtime::forwarder`]).
///
/// `Send` and `Sync`: its address may be called from any thread, and the handle only reads the
/// bindings through their lock.
pub struct BoundForwarder {
    id: u64,
    address: *const std::ffi::c_void,
    shared: Arc<Shared>,
}

// SAFETY: `address` is a stable code address, never dereferenced by the handle; the bindings
// are behind a mutex.
unsafe impl Send for BoundForwarder {}
// SAFETY: as above.
unsafe impl Sync for BoundForwarder {}

/// The thread-safety the docs promise, checked when the crate compiles.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Runtime>();
    send_and_sync::<LiveObject>();
    send_and_sync::<BoundForwarder>();
    send_and_sync::<ModuleGate>();
};

impl BoundForwarder {
    /// The stable address to hand to foreign code; transmute it to the function's type.
    pub fn address(&self) -> *const std::ffi::c_void {
        self.address
    }

    /// Where it forwards to now.
    pub fn target(&self) -> *const std::ffi::c_void {
        self.shared
            .bindings
            .target(self.id)
            .unwrap_or(std::ptr::null())
    }
}

impl Drop for BoundForwarder {
    fn drop(&mut self) {
        self.shared.bindings.unbind(self.id);
    }
}

impl LiveObject {
    /// The complete object's address, to pass to the module's functions.
    pub fn as_ptr(&self) -> *mut std::ffi::c_void {
        self.address.as_ptr().cast()
    }

    /// The object's class.
    pub fn class(&self) -> String {
        self.shared.registry.class_name(self.slot).to_string()
    }
}

impl Drop for LiveObject {
    fn drop(&mut self) {
        let address = self.address.as_ptr();
        // The lock order: the build lock (held while the destructor, which may untrack other
        // objects, runs), then the registry.
        let build = self.shared.read();
        self.shared.registry.remove(address as usize);
        let class = self.shared.registry.class_name(self.slot);
        match build.module.class(&class).and_then(|c| c.destroy) {
            Some(destroy) => {
                let mut message = [0u8; 256];
                let (buffer, capacity) = (message.as_mut_ptr().cast(), message.len());
                // The destructor is the current build's, whose vptrs the object carries.
                // SAFETY: the object was built by this class's constructor; destroyed once.
                let status = unsafe { destroy(address.cast(), buffer, capacity) };
                if status != 0 {
                    tracing::error!(%class, "the destructor threw; the object's memory is freed anyway");
                }
            }
            None => {
                tracing::warn!(%class, "no accessible destructor; freeing the object's memory without one")
            }
        }
        // SAFETY: allocated in `Runtime::create` with this layout.
        unsafe { dealloc(address, self.layout) };
    }
}

impl Reload<'_> {
    /// Also refuses the reload for a word in the heap or an anonymous mapping that points at
    /// something the new build lacks (a function it dropped, a global that shrank). By
    /// default such words are reported ([`RelocationCounts::lost_in_anonymous_memory`]) and
    /// left as they are: a scan cannot tell freed memory from live, and freed memory is full
    /// of stale addresses, so the default would refuse reloads for nothing; a live one that
    /// is used faults in the old build's reserved range. Words in the data of loaded objects,
    /// in carried globals and in tracked objects always refuse.
    pub fn refusing_lost_heap_words(mut self) -> Self {
        self.strict = true;
        self
    }

    /// How long [`Reload::rehydrate_all`] may wait for the host's threads: to leave the
    /// [`ModuleGate`], and to be stopped outside the old build (it stops them, and while one
    /// executes in the old build or will return into it, lets them run and tries again). Past
    /// it the reload is refused, naming the thread and the function. Default:
    /// [`DEFAULT_RELOAD_DEADLINE`].
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Path of the new build's shadow copy.
    pub fn new_shadow_path(&self) -> &Path {
        &self.new.module.shadow
    }

    /// Validates every live object against the old build, resolves every reference into the
    /// old build found in the process's writable memory, then commits: copies the new build's
    /// implicit bytes (vptrs) into each tracked object, carries the module's globals into the
    /// new build, re-points every reference, makes the new build current, unloads the old one
    /// and audits. On error nothing has been written and the old build stays current.
    pub fn rehydrate_all(self) -> Result<ReloadReport, Error> {
        let Reload {
            runtime,
            new,
            load_time,
            images_time,
            strict,
            deadline,
        } = self;
        let shared = runtime.shared.clone();
        let deadline_at = Instant::now() + deadline;
        // The lock order: the gate, the build lock, the registry (see the module docs).
        let started = Instant::now();
        let gate = shared
            .gate
            .close(deadline_at)
            .map_err(|inside| Error::GateBusy {
                threads: inside,
                waited: started.elapsed(),
            })?;
        let gate_wait = started.elapsed();
        let mut current = shared.write();

        // The carried globals' fresh values are destroyed by the new build's code, which nothing
        // uses yet: before the registry is stopped (their destructors may untrack objects) and
        // before the world is (they may allocate). A refused reload then keeps them from being
        // destroyed again when the new build is unloaded.
        let started = Instant::now();
        let changed_layouts = changed_layouts(&current.module, &new.module);
        let mut globals = relocation::plan_globals(
            &current.elf,
            &new.elf,
            &current.module,
            &new.module,
            &changed_layouts,
        );
        globals.destroy_fresh_values(&new.module);
        let mut carry_time = started.elapsed();
        let refuse = |error: Error| {
            globals.forget_destroyed_values(&new.module);
            error
        };

        let objects = shared.registry.stop();
        let started = Instant::now();
        let plan = validate(&objects, &current, &new).map_err(refuse)?;
        let forwarders = shared
            .bindings
            .resolve(|symbol| new.module.symbol_address(symbol))
            .map_err(|symbol| {
                refuse(Error::MissingSymbol {
                    path: new.module.source.clone(),
                    symbol,
                })
            })?;
        let validate_time = started.elapsed();

        // Until the audit: no build of any runtime in the process is mapped or unmapped.
        let images = relocation::lock_images();
        // Every lock the commit needs is taken before the world stops.
        let bindings = shared.bindings.lock_for_commit();
        let (mut scan_time, mut catch_up_time, mut attempts) = (Duration::ZERO, Duration::ZERO, 0);
        let (relocation, world) = loop {
            // Scanned while the other threads run, then stopped, then scanned again for what
            // they wrote meanwhile; a value the plan never saw makes it plan again.
            let started = Instant::now();
            let mut relocation = relocation::plan(
                &current.elf,
                &new.elf,
                &globals.carries,
                &changed_layouts,
                strict,
                |location| tracked_holder(&objects, &current, location),
            )
            .map_err(|problems| {
                refuse(Error::UnresolvableReferences {
                    path: current.module.source.clone(),
                    problems,
                })
            })?;
            scan_time += started.elapsed();
            let (world, tries) = match threads::stop_outside(&current.elf.range(), deadline_at) {
                Ok(stopped) => stopped,
                Err((blocked, _)) => return Err(refuse(thread_error(blocked, &current, deadline))),
            };
            attempts += tries;
            let started = Instant::now();
            // Only other threads can have written references since the scan.
            let caught_up = if world.len() == 0 {
                Ok(0)
            } else {
                // SAFETY: every other thread is stopped; the carried globals' old bytes are in the old build, which is loaded.
                unsafe { relocation.catch_up(&current.elf, |m| world.holds_stack_pointer(m)) }
            };
            catch_up_time += started.elapsed();
            // A register that cannot be re-pointed is a thread still using the old build.
            let blocking_register = || {
                world.first_register(|value| {
                    relocation.register_word(&current.elf, &new.elf, value) == RegisterWord::Blocks
                })
            };
            let retry = match caught_up {
                Err(outdated) => Retry::Outdated(outdated),
                Ok(_) => match blocking_register() {
                    None => break (relocation, world),
                    Some((tid, register, address)) => {
                        Retry::Blocked(Blocked::InRange(InRange::Register {
                            tid,
                            register,
                            address,
                        }))
                    }
                },
            };
            drop(world);
            drop(relocation);
            if Instant::now() >= deadline_at {
                return Err(refuse(match retry {
                    Retry::Outdated(outdated) => outdated_error(outdated, &current, deadline),
                    Retry::Blocked(blocked) => thread_error(blocked, &current, deadline),
                }));
            }
            tracing::debug!(
                ?retry,
                "memory or a register changed since the scan: planning again"
            );
        };

        // The world is stopped: from here until it is released nothing allocates, frees or
        // takes a lock, and nothing can fail.
        let started = Instant::now();
        for step in &plan {
            for slots in objects.slot_arrays(step.slot) {
                patch_stopped(slots, step.image);
            }
        }
        let patch_time = started.elapsed();
        let started = Instant::now();
        // SAFETY: both builds are loaded, the plan was made from them just now with the fresh values destroyed, and every other thread is stopped.
        unsafe { globals.copy_values(&current.elf, &new.elf) };
        globals.forget_old_registrations(&current.module);
        carry_time += started.elapsed();
        let started = Instant::now();
        // SAFETY: the words were found just now with the registry stopped; every other thread is stopped; the new build becomes current below and stays loaded while anything can use them.
        unsafe { relocation.apply(&current.elf, &new.elf) };
        let registers = world.rewrite_registers(|value| {
            match relocation.register_word(&current.elf, &new.elf, value) {
                RegisterWord::Rewrite(to) => Some(to),
                RegisterWord::Keep | RegisterWord::Blocks => None,
            }
        });
        let relocate_time = started.elapsed();
        bindings.apply(&forwarders); // before the old build goes away
        let stop_latency = world.latency();
        let stopped = world.len();
        let pause = world.resume();

        let classes = plan.len();
        drop(plan); // it borrows the new build, which becomes current now
        let old = std::mem::replace(&mut *current, new);

        let (references, unresolved) = relocation.finish();
        drop(bindings);
        // SAFETY: the new build is loaded and the values were copied.
        let globals = unsafe { globals.hand_over_destructors(&current.elf, &current.module) };
        let object_count = objects.len();
        // The old build's static destructors below may untrack objects.
        drop(objects);
        drop(current);
        let started = Instant::now();
        let old_shadow = old.module.shadow.clone();
        let Build {
            module: old_module,
            images: old_images,
            inspections: _,
            elf: old_elf,
        } = old;
        drop(old_images);
        drop(old_module); // dlclose; the module's static destructors may untrack objects
        let unload_time = started.elapsed();
        drop(gate);
        let old_image_unmapped = !crate::maps::is_mapped(&old_shadow);
        let old_image_kept_because = (!old_image_unmapped).then(|| why_still_mapped(&old_elf));
        if let Some(why) = &old_image_kept_because {
            tracing::warn!(path = %old_shadow.display(), "the old build is still mapped: {why}");
        }
        let old_range_reserved = old_image_unmapped && crate::maps::is_reserved(&old_elf.range());
        let started = Instant::now();
        let audit = relocation::audit(&old_elf, &unresolved);
        let audit_time = started.elapsed();
        drop(images);
        if audit.stale > 0 {
            tracing::error!(stale = audit.stale, examples = ?audit.examples, "words still point into the unloaded build");
        }

        let report = ReloadReport {
            objects: object_count,
            classes,
            load: load_time,
            images: images_time,
            validate: validate_time,
            patch: patch_time,
            scan: scan_time,
            relocate: relocate_time,
            references,
            globals,
            carry: carry_time,
            unload: unload_time,
            old_image_unmapped,
            old_image_kept_because,
            old_range_reserved,
            audit,
            audit_time,
            threads: ThreadsReport {
                stopped,
                attempts,
                gate_wait,
                stop_latency,
                catch_up: catch_up_time,
                registers_rewritten: registers,
                pause,
            },
        };
        tracing::info!(
            objects = report.objects, load = ?report.load, images = ?report.images, validate = ?report.validate,
            scan = ?report.scan, patch = ?report.patch, relocate = ?report.relocate, unload = ?report.unload,
            audit = ?report.audit_time, references = ?report.references, threads = ?report.threads,
            "reload committed"
        );
        Ok(report)
    }
}

/// Why a stopped world could not commit: the reload plans again.
#[derive(Debug)]
enum Retry {
    /// Memory holds references the plan never saw.
    Outdated(Outdated),
    /// A stopped thread holds a register that cannot be re-pointed.
    Blocked(Blocked),
}

/// The refusal for a reload whose deadline passed while other threads kept writing references
/// into the old build that no plan had resolved.
fn outdated_error(outdated: Outdated, old: &Build, waited: Duration) -> Error {
    let what = match outdated {
        Outdated::UnknownValue(location, offset) => {
            let pointee = old
                .elf
                .index()
                .symbol_at(offset)
                .map(|s| format!("`{}`+{:#x}", s.demangled(), offset - s.start))
                .unwrap_or_else(|| format!("virtual address {offset:#x}"));
            format!("the word at {location:#x} came to point at {pointee}, which no scan had seen")
        }
        Outdated::TooManyNewWords => "more words than the catch-up scan had room for".into(),
        Outdated::TooManyMappings => "more mappings than the catch-up scan had room for".into(),
    };
    Error::ReferencesKeptChanging {
        path: old.module.source.clone(),
        what,
        waited,
    }
}

/// The refusal for a reload whose deadline passed while a thread was in the old build (or
/// did not stop): names the thread and the function.
fn thread_error(blocked: Blocked, old: &Build, waited: Duration) -> Error {
    let function = |address: usize, returning: bool| {
        let image = &old.elf;
        // A return address is the instruction after the call: the call is in the function.
        let looked_up = address - usize::from(returning) - image.base();
        image
            .index()
            .symbol_at(looked_up as u64)
            .map(|s| {
                format!(
                    "`{}`+{:#x}",
                    s.demangled(),
                    address - image.base() - s.start as usize
                )
            })
            .unwrap_or_else(|| format!("{address:#x}"))
    };
    let path = old.module.source.clone();
    match blocked {
        Blocked::InRange(found) => {
            let (tid, place) = match found {
                InRange::Executing { tid, address } => {
                    (tid, format!("is executing {} in", function(address, false)))
                }
                InRange::Returning { tid, address } => {
                    (tid, format!("will return into {} of", function(address, true)))
                }
                InRange::Register { tid, register, address } => (
                    tid,
                    format!(
                        "holds {} in register {}, an address of",
                        function(address, false),
                        threads::register_name(register)
                    ),
                ),
                InRange::Unknown { tid, address } => (
                    tid,
                    format!("has a stack that could not be unwound past {address:#x}, so it may return into"),
                ),
            };
            Error::ThreadInOldBuild {
                thread: threads::thread_name(tid),
                tid,
                place,
                path,
                waited,
            }
        }
        Blocked::NotStopped(not_stopped) if not_stopped.signal_taken => Error::StopSignalTaken {
            signal: threads::stop_signal(),
        },
        Blocked::NotStopped(not_stopped) => {
            let tid = not_stopped.tids.first().copied().unwrap_or(0);
            Error::ThreadDidNotStop {
                thread: threads::thread_name(tid),
                tid,
                others: not_stopped.tids.len().saturating_sub(1),
                signal: threads::stop_signal(),
                waited: not_stopped.waited,
            }
        }
    }
}

/// Why the old build `old` may still be mapped after its `dlclose`, for the report.
fn why_still_mapped(old: &BuildImage) -> String {
    let index = old.index();
    if index.registers_thread_local_destructors() {
        let names: Vec<String> = index
            .thread_locals()
            .iter()
            .filter(|name| !name.starts_with("__tls_")) // the compiler's guard
            .map(|name| crate::analysis::demangle(name))
            .collect();
        return format!(
            "it has thread_local objects with destructors ({}): glibc keeps such a library \
             loaded while a thread that constructed one of them lives (their values are not \
             carried; the old build stays mapped until those threads exit)",
            names.join(", ")
        );
    }
    "another handle keeps it open (a dlopen of the shadow copy outside the runtime, or a \
     library flagged NODELETE)"
        .to_string()
}

/// The tracked object whose bytes hold `location`, with the field there (for messages) and
/// whether an address fits in the word there.
fn tracked_holder(objects: &Stopped, build: &Build, location: usize) -> Option<Holder> {
    for (slot, name) in objects.classes() {
        let Some(class) = build.module.class(name) else {
            continue;
        };
        for slots in objects.slot_arrays(slot) {
            for &address in slots.iter().filter(|&&a| registry::is_object(a)) {
                if !(address..address + class.size).contains(&location) {
                    continue;
                }
                let offset = location - address;
                let field = class
                    .fields
                    .iter()
                    .find(|f| f.byte_range().contains(&offset))
                    .map_or_else(
                        || format!("offset {offset}"),
                        |f| format!("field {}", f.qualified()),
                    );
                let word = offset..offset + 8;
                let may_hold_address = class.vptr_offsets.contains(&offset)
                    || class.fields.iter().any(|f| {
                        let bytes = f.byte_range();
                        f.bits.is_none() && bytes.start <= word.start && word.end <= bytes.end
                    });
                return Some(Holder {
                    what: format!("tracked {name} object {address:#x}, {field}"),
                    may_hold_address,
                });
            }
        }
    }
    None
}

/// One class to patch: its registry slot and the new build's image of it.
struct PatchStep<'new> {
    slot: ClassSlot,
    image: &'new ClassImage,
}

/// Checks every class with live objects; every problem found is reported (one error, or
/// [`Error::ReloadRefused`] listing them all).
fn validate<'new>(
    objects: &Stopped,
    old: &Build,
    new: &'new Build,
) -> Result<Vec<PatchStep<'new>>, Error> {
    let mut plan = Vec::new();
    let mut problems = Vec::new();
    for (slot, name) in objects.classes() {
        let count = objects.count(slot);
        if count == 0 {
            continue;
        }
        match validate_class(objects, slot, name, count, old, new) {
            Ok(Some(step)) => plan.push(step),
            Ok(None) => {}
            Err(problem) => problems.push(problem),
        }
    }
    match problems.len() {
        0 => Ok(plan),
        1 => Err(problems.remove(0)),
        _ => Err(Error::ReloadRefused { problems }),
    }
}

/// Checks the live objects of one class; `None` when they need no patch.
fn validate_class<'new>(
    objects: &Stopped,
    slot: ClassSlot,
    name: &str,
    count: usize,
    old: &Build,
    new: &'new Build,
) -> Result<Option<PatchStep<'new>>, Error> {
    if let Some(type_id) = name.strip_prefix(UNKNOWN_TYPE_PREFIX) {
        return Err(Error::UntrackableType {
            class: demangle_type(type_id),
            type_id_name: type_id.to_string(),
            objects: count,
        });
    }
    let Some(old_index) = old.module.class_index(name) else {
        // Only the new build describes the class: its objects were made by the new build's
        // static initialisers and already carry its implicit bytes.
        made_by_new_build(objects, slot, name, new)?;
        return Ok(None);
    };
    let old_class = &old.module.classes[old_index];
    let new_index = new
        .module
        .class_index(name)
        .ok_or_else(|| Error::ClassMissing {
            class: name.to_string(),
            objects: count,
            path: new.module.source.clone(),
        })?;
    let new_class = &new.module.classes[new_index];
    let changes = layout_changes(old_class, new_class);
    if !changes.is_empty() {
        return Err(Error::LayoutChanged {
            class: name.to_string(),
            objects: count,
            changes,
        });
    }
    if without_probe(old, old_index) || without_probe(new, new_index) {
        // No dummy can be built: the scan re-points the objects' vptrs by symbol (and refuses
        // what it cannot map), with the layout checked exactly above.
        return Ok(None);
    }
    let old_image = old.image(old_index)?;
    let new_image = new.image(new_index)?;
    if new_image.implicit_runs() != old_image.implicit_runs() {
        return Err(Error::LayoutChanged {
            class: name.to_string(),
            objects: count,
            changes: vec![format!(
                "the compiler-written bytes moved from {:?} to {:?}",
                old_image.implicit_runs(),
                new_image.implicit_runs()
            )],
        });
    }
    let stale = objects
        .slot_arrays(slot)
        .find_map(|slots| first_stale_object(slots, &old_image.writes, &new_image.writes));
    if let Some((address, offset)) = stale {
        return Err(Error::StaleObject {
            address,
            class: name.to_string(),
            offset,
        });
    }
    Ok(Some(PatchStep {
        slot,
        image: new_image,
    }))
}

/// Whether the class at `index` has no probe image only because it has no usable default
/// constructor (a constructor that throws, anomalous bytes or a table the compiler disagrees
/// with still refuse).
fn without_probe(build: &Build, index: usize) -> bool {
    matches!(build.images[index], Err(ImageFailure::NotConstructible))
}

/// A `typeid(...).name()` (`N4game6PlayerE`) as people write the type (`game::Player`), through
/// the name of its type-info string symbol; the mangled name when it does not demangle.
fn demangle_type(type_id_name: &str) -> String {
    const PREFIX: &str = "typeinfo name for ";
    cpp_demangle::Symbol::new(format!("_ZTS{type_id_name}"))
        .ok()
        .map(|symbol| symbol.to_string())
        .and_then(|text| text.strip_prefix(PREFIX).map(str::to_string))
        .unwrap_or_else(|| type_id_name.to_string())
}

/// Checks that every object of `slot`, a class the old build does not describe, is already
/// the new build's: the error names the first that is not.
fn made_by_new_build(
    objects: &Stopped,
    slot: ClassSlot,
    name: &str,
    new: &Build,
) -> Result<(), Error> {
    let index = new.index_of(name)?;
    if without_probe(new, index) {
        return Ok(()); // the scan checks and maps whatever vptrs they hold
    }
    let image = new.image(index)?;
    let stale = objects
        .slot_arrays(slot)
        .find_map(|slots| first_stale_object(slots, &image.writes, &image.writes));
    match stale {
        Some((address, offset)) => Err(Error::StaleObject {
            address,
            class: name.to_string(),
            offset,
        }),
        None => Ok(()),
    }
}

/// Above this many objects of one class, validation and patching use every core.
const PARALLEL_THRESHOLD: usize = 32 * 1024;

/// Runs `work` on `objects` (a class's slot array, with free entries), split into one chunk
/// per core when there are many.
fn for_chunks<R: Send>(objects: &[usize], work: impl Fn(&[usize]) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if objects.len() < PARALLEL_THRESHOLD || cores == 1 {
        return vec![work(objects)];
    }
    let chunk = objects.len().div_ceil(cores);
    std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = objects
            .chunks(chunk)
            .map(|part| scope.spawn(move || work(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("validation and patching do not panic"))
            .collect()
    })
}

/// The first object whose implicit bytes are neither the old build's nor already the new
/// build's (an object the new build's static initialisers made), and the offset where it
/// differs from the old build's.
fn first_stale_object(objects: &[usize], old: &Writes, new: &Writes) -> Option<(usize, usize)> {
    let found = for_chunks(objects, |part| {
        part.iter()
            .filter(|&&address| registry::is_object(address))
            .find_map(|&address| {
                // SAFETY: registered live objects of the class both images were probed from.
                let differs = unsafe { old.first_difference(address) }?;
                // SAFETY: as above.
                unsafe { new.first_difference(address) }.map(|_| (address, differs))
            })
    });
    found.into_iter().flatten().next()
}

/// Writes the new build's implicit bytes into every object, on this thread: the world is
/// stopped, so no thread may be started and nothing allocated.
fn patch_stopped(objects: &[usize], image: &ClassImage) {
    for &address in objects
        .iter()
        .filter(|&&address| registry::is_object(address))
    {
        // SAFETY: validated live objects of this class; every other thread is stopped.
        unsafe { image.writes.apply(address) };
    }
}

/// Hooks for the constructor-analysis benchmark (`tests/benches/analysis.rs`); not API.
#[doc(hidden)]
pub mod measure {
    use super::Runtime;
    use crate::analysis::{decode_spans, decode_spans_in_place, Analyser, Analysis, Process, Span};

    /// Where the functions lie that the analyses of every class of a build that gave an
    /// image interpreted (what the baselines decode), per class.
    pub struct Readings(Vec<Vec<Span>>);

    impl Readings {
        /// How many classes.
        pub fn len(&self) -> usize {
            self.0.len()
        }

        /// Whether there are none.
        pub fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
    }

    /// Analyses every class of the current build (as a load does); returns how many gave an
    /// image.
    pub fn analyse_every_class(runtime: &Runtime) -> usize {
        let build = runtime.shared.read();
        let process = Process::snapshot(&build.elf);
        let mut analyser = Analyser::new(&process);
        build
            .module
            .classes
            .iter()
            .filter(|class| matches!(analyser.analyse(class), Analysis::Found(_)))
            .count()
    }

    /// The functions the analyses of every class of the current build that gave an image
    /// interpreted (what [`decode_what_was_analysed`] decodes), looked up once here.
    pub fn readings(runtime: &Runtime) -> Readings {
        let build = runtime.shared.read();
        let process = Process::snapshot(&build.elf);
        let mut analyser = Analyser::new(&process);
        let readings = build
            .module
            .classes
            .iter()
            .filter_map(|class| match analyser.analyse(class) {
                Analysis::Found(reading) => Some(reading.spans(&process)),
                Analysis::GaveUp { .. } => None,
            })
            .collect();
        Readings(readings)
    }

    /// Decodes with iced-x86 alone, once each, every function the analyses interpreted;
    /// returns the instructions decoded.
    pub fn decode_what_was_analysed(runtime: &Runtime, readings: &Readings) -> usize {
        let build = runtime.shared.read();
        let process = Process::snapshot(&build.elf);
        readings
            .0
            .iter()
            .map(|spans| decode_spans(&process, spans))
            .sum()
    }

    /// [`decode_what_was_analysed`] with one decoder moved from function to function, as the
    /// analysis decodes (no decoder set up per function); returns the instructions decoded.
    pub fn decode_what_was_analysed_in_place(runtime: &Runtime, readings: &Readings) -> usize {
        let build = runtime.shared.read();
        let process = Process::snapshot(&build.elf);
        let mut decoder = None;
        readings
            .0
            .iter()
            .map(|spans| decode_spans_in_place(&process, spans, &mut decoder))
            .sum()
    }

    /// Indexes the current build's constructors by class again, as reading its ELF file does
    /// once per build (outside the analysis's time); returns how many classes have one.
    pub fn index_constructors(runtime: &Runtime) -> usize {
        let build = runtime.shared.read();
        crate::analysis::constructors::ConstructorIndex::of(build.elf.index().symbols()).classes()
    }

    /// Probes every class of the current build with a usable default constructor; returns how
    /// many gave an image.
    pub fn probe_every_class(runtime: &Runtime) -> usize {
        let build = runtime.shared.read();
        build
            .module
            .classes
            .iter()
            .filter(|class| class.construct.is_some())
            .filter(|class| crate::probe::probe(class).is_ok())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::demangle_type;

    #[test]
    fn type_names_are_demangled() {
        assert_eq!(demangle_type("N4game6PlayerE"), "game::Player");
        assert_eq!(demangle_type("N2lc11UndescribedE"), "lc::Undescribed");
        assert_eq!(demangle_type("i"), "int");
        assert_eq!(demangle_type("not a mangling"), "not a mangling");
    }
}
