//! Every live object the runtime knows, grouped by the thread that tracked it and by class, so
//! that tracking costs no shared lock and a reload can still patch each class in a tight loop.
//!
//! Objects come from two places: the host (`Runtime::create`) and the module's own C++ code
//! (`rehydrate::track` through the host API). Both record the complete object's address and a
//! class slot. Registering and unregistering are O(1) from any thread:
//!
//! - Each thread records into its own [`Shard`] (found through a thread-local), bracketed by
//!   its `busy` flag: no atomic read-modify-write, no lock, nothing shared is written. The
//!   handshake with a reload uses the asymmetric barrier of [`crate::barrier`].
//! - A reload (or any reader of the whole set) calls [`Registry::stop`]: it takes the registry
//!   lock, raises `stopped`, waits until no shard is busy, and then owns every shard until the
//!   returned [`Stopped`] view is dropped. A thread that tracks meanwhile sees `stopped` and
//!   waits on the registry lock. (That is the registry's own consistency; where other threads
//!   may be while a reload commits is stated once in `crate::runtime`: stopped, outside the
//!   old build.)
//! - Untracking an object on another thread than the one that tracked it finds it through a
//!   `stop` (about 0.3 µs instead of about 20 ns, see BENCHMARKS.md); so does tracking from a thread
//!   whose thread-locals are already destroyed.
//!
//! Within a shard each class keeps its objects in a slot array with a free list, so removing
//! one never moves another, and an [`AddressTable`] maps each address to its class and index.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rustc_hash::FxHashMap;

use crate::address_table::AddressTable;
use crate::barrier;

/// Index of a class in the registry; stable for the registry's lifetime, across reloads.
pub(crate) type ClassSlot = u32;

/// Free entries of [`ClassObjects::slots`] hold this bit, set in no user-space address, and
/// the index of the next free entry (a list threaded through the array itself, so removing and
/// reusing an entry touches nothing else).
const FREE_BIT: usize = 1 << (usize::BITS - 1);
/// The end of the free list.
const NO_FREE: u32 = u32::MAX;

/// Whether an entry of a slot array (see [`Stopped::slot_arrays`]) is a live object's address
/// rather than a free entry.
#[inline]
pub(crate) fn is_object(entry: usize) -> bool {
    entry & FREE_BIT == 0
}

/// The objects of one class in one shard.
#[derive(Debug)]
struct ClassObjects {
    /// Complete-object addresses, with free entries (see [`FREE_BIT`]) where objects were
    /// removed.
    slots: Vec<usize>,
    /// The first free entry of `slots`, or [`NO_FREE`].
    first_free: u32,
    /// How many entries of `slots` are free.
    free_count: usize,
}

impl Default for ClassObjects {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            first_free: NO_FREE,
            free_count: 0,
        }
    }
}

impl ClassObjects {
    fn len(&self) -> usize {
        self.slots.len() - self.free_count
    }

    /// Stores `address` in a free entry (or a new one) and returns its index.
    #[inline]
    fn store(&mut self, address: usize) -> u32 {
        if self.first_free == NO_FREE {
            self.slots.push(address);
            return (self.slots.len() - 1) as u32;
        }
        let index = self.first_free;
        let entry = &mut self.slots[index as usize];
        self.first_free = (*entry & !FREE_BIT) as u32;
        *entry = address;
        self.free_count -= 1;
        index
    }

    /// Frees the entry at `index`.
    #[inline]
    fn free(&mut self, index: u32) {
        self.slots[index as usize] = FREE_BIT | self.first_free as usize;
        self.first_free = index;
        self.free_count += 1;
    }
}

/// The objects one thread recorded.
#[derive(Debug, Default)]
struct ShardObjects {
    /// Indexed by class slot; grown on first use of a slot.
    classes: Vec<ClassObjects>,
    /// address -> `slot << 32 | index in that class's slots`
    where_is: AddressTable,
}

impl ShardObjects {
    #[inline]
    fn insert(&mut self, address: usize, slot: ClassSlot) -> bool {
        if self.classes.len() <= slot as usize {
            self.classes
                .resize_with(slot as usize + 1, ClassObjects::default);
        }
        let class = &mut self.classes[slot as usize];
        self.where_is.insert_with(address, || {
            (u64::from(slot) << 32) | u64::from(class.store(address))
        })
    }

    #[inline]
    fn remove(&mut self, address: usize) -> bool {
        let Some(place) = self.where_is.remove(address) else {
            return false;
        };
        let (slot, index) = ((place >> 32) as usize, place as u32);
        self.classes[slot].free(index);
        true
    }

    fn class(&self, slot: ClassSlot) -> Option<&ClassObjects> {
        self.classes.get(slot as usize)
    }
}

/// One thread's objects and the flag that brackets its every change.
///
/// Access protocol for `objects`: the owning thread while its `busy` flag is set and the
/// registry is not stopped, or whoever holds the registry lock with the registry stopped (or,
/// for the owning thread only, holds the registry lock at all).
#[derive(Debug, Default)]
struct Shard {
    busy: AtomicBool,
    /// Set when the registry is dropped, so the thread-local entry can be pruned.
    retired: AtomicBool,
    /// How many objects `objects` holds, stored by whoever changed it last (no read-modify-write
    /// on the hot path), for [`Registry::len`].
    live: AtomicUsize,
    objects: UnsafeCell<ShardObjects>,
}

impl Shard {
    /// Publishes the object count after a change of `objects`, which must be this shard's.
    fn publish_len(&self, objects: &ShardObjects) {
        self.live.store(objects.where_is.len(), Ordering::Relaxed);
    }
}

// SAFETY: `objects` is only reached under the access protocol above, which gives one thread at
// a time exclusive access; the flags are atomics.
unsafe impl Sync for Shard {}

/// Clears a shard's `busy` flag when the change it brackets ends, even by unwinding.
struct BusyGuard<'a>(&'a Shard);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

/// The shards a thread owns, one per registry it has used: (registry id, shard). Dropping it
/// (at thread exit) clears [`LAST_SHARD`].
#[derive(Default)]
struct OwnShards(Vec<(u64, Arc<Shard>)>);

impl Drop for OwnShards {
    fn drop(&mut self) {
        let _ = LAST_SHARD.try_with(|last| last.set((0, std::ptr::null())));
    }
}

thread_local! {
    /// Keeps this thread's shards alive and findable.
    static OWN_SHARDS: RefCell<OwnShards> = RefCell::default();
    /// The shard this thread used last and its registry id (0: none): the hot path's shortcut
    /// past [`OWN_SHARDS`]. It has no destructor, so it stays readable while other
    /// thread-locals are destroyed. The pointee is kept alive by [`OWN_SHARDS`] or, after
    /// that is gone, by the registry, which is alive whenever its id can be passed in.
    static LAST_SHARD: Cell<(u64, *const Shard)> = const { Cell::new((0, std::ptr::null())) };
}

/// Registry ids, so a thread-local entry never matches a later registry.
static NEXT_REGISTRY_ID: AtomicU64 = AtomicU64::new(1);

/// What the registry lock guards: class names and the list of shards.
#[derive(Debug, Default)]
struct World {
    names: Vec<Arc<str>>,
    slot_of: FxHashMap<Arc<str>, ClassSlot>,
    shards: Vec<Arc<Shard>>,
}

/// Thread-safe registry of live objects.
#[derive(Debug)]
pub(crate) struct Registry {
    id: u64,
    /// Raised while a [`Stopped`] view exists (or is being taken).
    stopped: AtomicBool,
    world: Mutex<World>,
}

impl Default for Registry {
    fn default() -> Self {
        barrier::init();
        Self {
            id: NEXT_REGISTRY_ID.fetch_add(1, Ordering::Relaxed),
            stopped: AtomicBool::new(false),
            world: Mutex::default(),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        for shard in &self.lock_world().shards {
            shard.retired.store(true, Ordering::Relaxed);
        }
    }
}

impl Registry {
    /// Locks the class names and shard list (a poisoned lock is still usable: every operation
    /// leaves the registry consistent).
    fn lock_world(&self) -> MutexGuard<'_, World> {
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The slot for `class`, created on first use.
    pub fn slot(&self, class: &str) -> ClassSlot {
        let mut world = self.lock_world();
        if let Some(&slot) = world.slot_of.get(class) {
            return slot;
        }
        let slot = world.names.len() as ClassSlot;
        let name: Arc<str> = Arc::from(class);
        world.names.push(name.clone());
        world.slot_of.insert(name, slot);
        slot
    }

    /// The class name of a slot.
    pub fn class_name(&self, slot: ClassSlot) -> Arc<str> {
        self.lock_world().names[slot as usize].clone()
    }

    /// Records a live object; returns false when the address is 0 or outside user space, or was
    /// already recorded by this thread. (The same address recorded by two threads is not detected.)
    pub fn insert(&self, address: usize, slot: ClassSlot) -> bool {
        if address == 0 || !is_object(address) {
            return false;
        }
        match self.with_own_shard(|objects| objects.insert(address, slot)) {
            Some(inserted) => inserted,
            None => self.stop().insert_anywhere(address, slot),
        }
    }

    /// Forgets a live object; returns false when it was not recorded.
    pub fn remove(&self, address: usize) -> bool {
        match self.with_own_shard(|objects| objects.remove(address)) {
            Some(true) => true,
            // Recorded by another thread (or this thread's thread-locals are gone).
            _ => self.stop().remove(address),
        }
    }

    /// Runs `change` on this thread's shard; `None` when this thread's thread-locals are
    /// already destroyed (the thread is exiting) and it never used this registry.
    #[inline]
    fn with_own_shard<R>(&self, change: impl FnOnce(&mut ShardObjects) -> R) -> Option<R> {
        let (id, mut shard) = LAST_SHARD.get();
        if id != self.id {
            shard = self.find_own_shard()?;
            LAST_SHARD.set((self.id, shard));
        }
        // SAFETY: `LAST_SHARD` holds a live shard of this registry (see its docs).
        let shard = unsafe { &*shard };
        shard.busy.store(true, Ordering::Relaxed);
        let busy = BusyGuard(shard);
        barrier::light();
        if self.stopped.load(Ordering::Acquire) {
            drop(busy);
            let _world = self.lock_world();
            // This thread owns the shard and holds the registry lock, which every stopper holds
            // for as long as it reads shards.
            // SAFETY: exclusive access, as just said.
            let objects = unsafe { &mut *shard.objects.get() };
            let result = change(objects);
            shard.publish_len(objects);
            return Some(result);
        }
        // This thread owns the shard and its `busy` flag is raised with the registry not
        // stopped: a stopper waits for the flag to drop before reading.
        // SAFETY: exclusive access, as just said.
        let objects = unsafe { &mut *shard.objects.get() };
        let result = change(objects);
        shard.publish_len(objects);
        Some(result)
    }

    /// How many objects are live, without stopping anyone: the sum of every shard's published
    /// count (exact when no thread is tracking or untracking at the same moment).
    pub fn len(&self) -> usize {
        self.lock_world()
            .shards
            .iter()
            .map(|shard| shard.live.load(Ordering::Relaxed))
            .sum()
    }

    /// This thread's shard for this registry, created and registered on first use (dropping
    /// the thread's entries of registries that no longer exist).
    #[cold]
    fn find_own_shard(&self) -> Option<*const Shard> {
        OWN_SHARDS
            .try_with(|own| {
                let mut own = own.borrow_mut();
                if let Some((_, shard)) = own.0.iter().find(|(id, _)| *id == self.id) {
                    return Arc::as_ptr(shard);
                }
                let shard = Arc::new(Shard::default());
                self.lock_world().shards.push(shard.clone());
                own.0
                    .retain(|(_, shard)| !shard.retired.load(Ordering::Relaxed));
                own.0.push((self.id, shard.clone()));
                Arc::as_ptr(&shard)
            })
            .ok()
    }

    /// Stops every thread from changing its shard and returns a view of all of them. Threads
    /// that track or untrack meanwhile wait until the view is dropped.
    pub fn stop(&self) -> Stopped<'_> {
        let world = self.lock_world();
        self.stopped.store(true, Ordering::Relaxed);
        barrier::heavy();
        for shard in &world.shards {
            let mut spins = 0u32;
            while shard.busy.load(Ordering::Acquire) {
                spins += 1;
                if spins < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now(); // its owner was preempted mid-change
                }
            }
        }
        Stopped {
            registry: self,
            world,
        }
    }
}

/// Exclusive access to every shard of a stopped registry.
pub(crate) struct Stopped<'a> {
    registry: &'a Registry,
    world: MutexGuard<'a, World>,
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        // Release: everything read or written through this view happens before any thread's
        // next change (which loads `stopped` with Acquire). The lock is released after this.
        self.registry.stopped.store(false, Ordering::Release);
    }
}

impl Stopped<'_> {
    fn shards(&self) -> impl Iterator<Item = &ShardObjects> {
        self.world.shards.iter().map(|shard| {
            let objects = shard.objects.get();
            // SAFETY: the registry is stopped and this view holds its lock: no shard changes.
            unsafe { &*objects }
        })
    }

    /// Total live objects.
    pub fn len(&self) -> usize {
        self.shards().map(|objects| objects.where_is.len()).sum()
    }

    /// Every class slot that exists, with its name.
    pub fn classes(&self) -> impl Iterator<Item = (ClassSlot, &Arc<str>)> {
        self.world
            .names
            .iter()
            .enumerate()
            .map(|(slot, name)| (slot as ClassSlot, name))
    }

    /// How many objects of `slot` are live.
    pub fn count(&self, slot: ClassSlot) -> usize {
        self.shards()
            .filter_map(|objects| objects.class(slot))
            .map(ClassObjects::len)
            .sum()
    }

    /// The slot arrays of `slot`, one per shard that has any (free entries fail [`is_object`]), for tight
    /// loops that skip them.
    pub fn slot_arrays(&self, slot: ClassSlot) -> impl Iterator<Item = &[usize]> {
        self.shards()
            .filter_map(move |objects| objects.class(slot))
            .map(|class| class.slots.as_slice())
    }

    /// Every live object as (class name, address).
    pub fn addresses(&self) -> impl Iterator<Item = (&Arc<str>, usize)> {
        self.classes().flat_map(move |(slot, name)| {
            self.slot_arrays(slot)
                .flatten()
                .filter(|&&address| is_object(address))
                .map(move |&address| (name, address))
        })
    }

    fn remove(&mut self, address: usize) -> bool {
        self.world.shards.iter().any(|shard| {
            // SAFETY: the registry is stopped and this view (borrowed mutably) holds its lock.
            let objects = unsafe { &mut *shard.objects.get() };
            let removed = objects.remove(address);
            shard.publish_len(objects);
            removed
        })
    }

    /// Records an object for a thread that cannot use its own shard, into any shard.
    fn insert_anywhere(&mut self, address: usize, slot: ClassSlot) -> bool {
        if self
            .shards()
            .any(|objects| objects.where_is.get(address).is_some())
        {
            return false;
        }
        if self.world.shards.is_empty() {
            self.world.shards.push(Arc::default());
        }
        let shard = &self.world.shards[0];
        // SAFETY: the registry is stopped and this view (borrowed mutably) holds its lock.
        let objects = unsafe { &mut *shard.objects.get() };
        let inserted = objects.insert(address, slot);
        shard.publish_len(objects);
        inserted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted_addresses(registry: &Registry) -> Vec<(String, usize)> {
        let stopped = registry.stop();
        let mut seen: Vec<_> = stopped
            .addresses()
            .map(|(name, address)| (name.to_string(), address))
            .collect();
        seen.sort();
        seen
    }

    #[test]
    fn insert_remove_reuses_entries_and_keeps_every_index_right() {
        let registry = Registry::default();
        let a = registry.slot("A");
        let b = registry.slot("B");
        assert_eq!(registry.slot("A"), a);
        for address in 1..=10 {
            assert!(registry.insert(address * 16, if address % 2 == 0 { a } else { b }));
        }
        assert!(!registry.insert(16, a), "an address is recorded once");
        assert!(!registry.insert(0, a), "address 0 is refused");
        for address in [2, 7, 10, 3] {
            assert!(registry.remove(address * 16));
        }
        assert!(!registry.remove(2 * 16));
        assert!(registry.insert(11 * 16, a), "a freed entry is reused");
        let stopped = registry.stop();
        assert_eq!(stopped.len(), 7);
        assert_eq!((stopped.count(a), stopped.count(b)), (4, 3));
        let a_slots: Vec<&[usize]> = stopped.slot_arrays(a).collect();
        assert_eq!(a_slots.len(), 1, "one thread, one shard");
        assert_eq!(a_slots[0].len(), 5, "no growth: the freed entry was reused");
        for objects in stopped.shards() {
            for (slot, class) in objects.classes.iter().enumerate() {
                assert_eq!(
                    class.len(),
                    class.slots.iter().filter(|&&a| is_object(a)).count()
                );
                for (index, &address) in class.slots.iter().enumerate() {
                    if is_object(address) {
                        let place = objects.where_is.get(address).unwrap();
                        assert_eq!(place, ((slot as u64) << 32) | index as u64);
                    }
                }
            }
        }
        drop(stopped);
        let mut expected: Vec<(String, usize)> = [1, 4, 5, 6, 8, 9, 11]
            .into_iter()
            .map(|i| {
                (
                    (if i % 2 == 0 || i == 11 { "A" } else { "B" }).to_string(),
                    i * 16,
                )
            })
            .collect();
        expected.sort();
        assert_eq!(sorted_addresses(&registry), expected);
    }

    #[test]
    fn every_freed_entry_is_reused_before_the_array_grows() {
        let registry = Registry::default();
        let a = registry.slot("A");
        let addresses: Vec<usize> = (1..=8).map(|i| i * 64).collect();
        for &address in &addresses {
            assert!(registry.insert(address, a));
        }
        // Free five entries in a scattered order; the free list threads through all of them.
        for &i in &[3, 0, 7, 4, 1] {
            assert!(registry.remove(addresses[i]));
        }
        let fresh: Vec<usize> = (100..105).map(|i| i * 64).collect();
        for &address in &fresh {
            assert!(registry.insert(address, a));
        }
        {
            let stopped = registry.stop();
            let slots: Vec<&[usize]> = stopped.slot_arrays(a).collect();
            assert_eq!(slots[0].len(), 8, "the five freed entries were reused");
            assert!(slots[0].iter().all(|&entry| is_object(entry)));
            assert_eq!(stopped.count(a), 8);
        }
        assert!(registry.insert(200 * 64, a));
        let stopped = registry.stop();
        assert_eq!(
            stopped.slot_arrays(a).next().unwrap().len(),
            9,
            "full: it grows"
        );
        assert_eq!(stopped.len(), 9);
    }

    #[test]
    fn a_thread_tracking_while_the_registry_is_stopped_waits_and_is_seen_afterwards() {
        let registry = Arc::new(Registry::default());
        let slot = registry.slot("A");
        assert!(registry.insert(64, slot));
        let stopped = registry.stop();
        let tracker = {
            let registry = registry.clone();
            std::thread::spawn(move || {
                let inserted = registry.insert(128, slot); // waits for the stop to end
                let removed = registry.remove(64); // tracked by the other thread
                (inserted, removed)
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(stopped.len(), 1, "nothing changes while stopped");
        assert_eq!(stopped.addresses().count(), 1);
        drop(stopped);
        assert_eq!(tracker.join().unwrap(), (true, true));
        let stopped = registry.stop();
        let addresses: Vec<usize> = stopped.addresses().map(|(_, a)| a).collect();
        assert_eq!(addresses, vec![128]);
        drop(stopped);
        assert_eq!(
            registry.len(),
            1,
            "the counter agrees with the stopped view"
        );
    }

    #[test]
    fn addresses_outside_user_space_are_refused() {
        let registry = Registry::default();
        let a = registry.slot("A");
        assert!(!registry.insert(FREE_BIT | 64, a));
        assert!(!registry.insert(usize::MAX, a));
        assert_eq!(registry.stop().len(), 0);
    }

    #[test]
    fn objects_untracked_on_another_thread_are_found() {
        let registry = Arc::new(Registry::default());
        let slot = registry.slot("A");
        let tracked_there = {
            let registry = registry.clone();
            std::thread::spawn(move || {
                (1..=100)
                    .map(|i| {
                        assert!(registry.insert(i * 64, slot));
                        i * 64
                    })
                    .collect::<Vec<_>>()
            })
            .join()
            .unwrap()
        };
        // The tracking thread has exited; its shard (and its objects) remain.
        assert_eq!(registry.stop().len(), 100);
        for address in &tracked_there[..60] {
            assert!(registry.remove(*address), "untracked here, tracked there");
        }
        assert!(!registry.remove(64), "already gone");
        assert_eq!(registry.stop().len(), 40);
        assert_eq!(registry.stop().count(slot), 40);
    }

    #[test]
    fn a_stopped_registry_sees_every_change_of_every_thread_exactly() {
        // Threads churn their own objects while this thread stops the registry over and over:
        // each stop must see a consistent registry (every count agrees, at most 8 objects per
        // thread), never a half-done change.
        const THREADS: usize = 2;
        const STOPS: usize = 300;
        let registry = Arc::new(Registry::default());
        let slot = registry.slot("A");
        let done = Arc::new(AtomicBool::new(false));
        let progress: Arc<[AtomicU64; THREADS]> = Arc::new(Default::default());
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (registry, done, progress) = (registry.clone(), done.clone(), progress.clone());
                std::thread::spawn(move || {
                    let base = (t + 1) << 32;
                    let mut rounds = 0usize;
                    while !done.load(Ordering::Relaxed) {
                        let first = base + (rounds % 1024) * 8 * 16;
                        for i in 0..8 {
                            assert!(registry.insert(first + i * 16, slot));
                        }
                        for i in 0..8 {
                            assert!(registry.remove(first + i * 16));
                        }
                        rounds += 1;
                        progress[t].store(rounds as u64, Ordering::Relaxed);
                    }
                    rounds
                })
            })
            .collect();
        // At least STOPS stops, and on until every worker has changed its shard many times.
        let busy = || progress.iter().all(|p| p.load(Ordering::Relaxed) >= 100);
        for stop in 0.. {
            if stop >= STOPS && busy() {
                break;
            }
            let stopped = registry.stop();
            let total = stopped.len();
            let by_class = stopped.count(slot);
            let listed = stopped.addresses().count();
            assert_eq!((total, by_class), (listed, listed));
            assert!(
                total <= THREADS * 8,
                "at most 8 live per thread, saw {total}"
            );
            drop(stopped);
            std::thread::yield_now();
        }
        done.store(true, Ordering::Relaxed);
        for worker in workers {
            assert!(worker.join().unwrap() > 0, "every worker ran");
        }
        assert_eq!(registry.stop().len(), 0);
    }
}
