//! Every live object the runtime knows, grouped by class so that a reload can patch each class
//! with one image in a tight loop.
//!
//! Objects come from two places: the host (`Runtime::create`) and the module's own C++ code
//! (`rehydrate::track` through the host API). Both register the complete object's address and a
//! class slot; registering and unregistering are O(1) under one mutex, from any thread. Each
//! class keeps its objects in a slot array with a free list, so removing one never moves
//! another (one hash-map operation per registration and one per removal).

use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard};

use rustc_hash::FxHashMap;

/// Index of a class in the registry; stable for the registry's lifetime, across reloads.
pub(crate) type ClassSlot = u32;

/// Marks a free entry in [`ClassObjects::slots`]; no object lives at address 0.
const FREE: usize = 0;

/// The objects of one class.
#[derive(Debug, Default)]
pub(crate) struct ClassObjects {
    /// Qualified class name, or `?<typeid name>` for a type no module class describes.
    pub name: Arc<str>,
    /// Complete-object addresses, with [`FREE`] where an object was removed.
    slots: Vec<usize>,
    /// Indices of the free entries of `slots`.
    free: Vec<u32>,
}

impl ClassObjects {
    /// The live objects' addresses.
    pub fn addresses(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots.iter().copied().filter(|&a| a != FREE)
    }

    /// How many objects are live.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether no object is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw slot array (free entries hold [`FREE`]), for tight loops that skip them.
    pub fn slots(&self) -> &[usize] {
        &self.slots
    }
}

/// The registry's contents; reloads hold the lock for their whole validate-and-patch phase.
#[derive(Debug, Default)]
pub(crate) struct Objects {
    pub classes: Vec<ClassObjects>,
    slot_of: FxHashMap<Arc<str>, ClassSlot>,
    /// address -> (class slot, index in that class's `slots`)
    where_is: FxHashMap<usize, (ClassSlot, u32)>,
}

impl Objects {
    /// Total live objects.
    pub fn len(&self) -> usize {
        self.where_is.len()
    }
}

/// Thread-safe registry of live objects.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    inner: Mutex<Objects>,
}

impl Registry {
    /// Locks the registry (a poisoned lock is still usable: every operation leaves it consistent).
    pub fn lock(&self) -> MutexGuard<'_, Objects> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The slot for `class`, created on first use.
    pub fn slot(&self, class: &str) -> ClassSlot {
        let mut objects = self.lock();
        if let Some(&slot) = objects.slot_of.get(class) {
            return slot;
        }
        let slot = objects.classes.len() as ClassSlot;
        let name: Arc<str> = Arc::from(class);
        objects.classes.push(ClassObjects {
            name: name.clone(),
            ..ClassObjects::default()
        });
        objects.slot_of.insert(name, slot);
        slot
    }

    /// Records a live object; returns false when the address was already recorded (or is 0).
    pub fn insert(&self, address: usize, slot: ClassSlot) -> bool {
        if address == FREE {
            return false;
        }
        let mut guard = self.lock();
        let objects = &mut *guard;
        let Entry::Vacant(vacant) = objects.where_is.entry(address) else {
            return false;
        };
        let class = &mut objects.classes[slot as usize];
        let index = match class.free.pop() {
            Some(index) => {
                class.slots[index as usize] = address;
                index
            }
            None => {
                class.slots.push(address);
                (class.slots.len() - 1) as u32
            }
        };
        vacant.insert((slot, index));
        true
    }

    /// Forgets a live object; returns false when it was not recorded.
    pub fn remove(&self, address: usize) -> bool {
        let mut guard = self.lock();
        let objects = &mut *guard;
        let Some((slot, index)) = objects.where_is.remove(&address) else {
            return false;
        };
        let class = &mut objects.classes[slot as usize];
        class.slots[index as usize] = FREE;
        class.free.push(index);
        true
    }

    /// The class name of a slot.
    pub fn class_name(&self, slot: ClassSlot) -> Arc<str> {
        self.lock().classes[slot as usize].name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let objects = registry.lock();
        assert_eq!(objects.len(), 7);
        let mut seen: Vec<usize> = objects.classes.iter().flat_map(|c| c.addresses()).collect();
        seen.sort();
        assert_eq!(seen, [16, 4 * 16, 5 * 16, 6 * 16, 8 * 16, 9 * 16, 11 * 16]);
        assert_eq!(
            objects.classes[a as usize].slots().len(),
            5,
            "no growth: the freed entry was reused"
        );
        for (slot, class) in objects.classes.iter().enumerate() {
            assert_eq!(class.len(), class.addresses().count());
            for (index, &address) in class.slots().iter().enumerate() {
                if address != FREE {
                    assert_eq!(
                        objects.where_is[&address],
                        (slot as ClassSlot, index as u32)
                    );
                }
            }
        }
    }
}
