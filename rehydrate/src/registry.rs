//! Every live object the runtime knows, grouped by class so that a reload can patch each class
//! with one image in a tight loop.
//!
//! Objects come from two places: the host (`Runtime::create`) and the module's own C++ code
//! (`rehydrate::track` through the host API). Both register the complete object's address and a
//! class slot; registering and unregistering are O(1) under one mutex, from any thread.

use std::sync::{Arc, Mutex, MutexGuard};

use rustc_hash::FxHashMap;

/// Index of a class in the registry; stable for the registry's lifetime, across reloads.
pub(crate) type ClassSlot = u32;

/// The objects of one class.
#[derive(Debug, Default)]
pub(crate) struct ClassObjects {
    /// Qualified class name, or `?<typeid name>` for a type no module class describes.
    pub name: Arc<str>,
    /// Complete-object addresses.
    pub objects: Vec<usize>,
}

/// The registry's contents; reloads hold the lock for their whole validate-and-patch phase.
#[derive(Debug, Default)]
pub(crate) struct Objects {
    pub classes: Vec<ClassObjects>,
    slot_of: FxHashMap<Arc<str>, ClassSlot>,
    /// address -> (class slot, index in that class's `objects`)
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
            objects: Vec::new(),
        });
        objects.slot_of.insert(name, slot);
        slot
    }

    /// Records a live object; returns false when the address was already recorded.
    pub fn insert(&self, address: usize, slot: ClassSlot) -> bool {
        let mut guard = self.lock();
        let objects = &mut *guard;
        if objects.where_is.contains_key(&address) {
            return false;
        }
        let list = &mut objects.classes[slot as usize].objects;
        objects.where_is.insert(address, (slot, list.len() as u32));
        list.push(address);
        true
    }

    /// Forgets a live object; returns false when it was not recorded.
    pub fn remove(&self, address: usize) -> bool {
        let mut guard = self.lock();
        let objects = &mut *guard;
        let Some((slot, index)) = objects.where_is.remove(&address) else {
            return false;
        };
        let list = &mut objects.classes[slot as usize].objects;
        list.swap_remove(index as usize);
        if let Some(&moved) = list.get(index as usize) {
            objects.where_is.insert(moved, (slot, index));
        }
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
    fn insert_remove_keeps_every_index_right() {
        let registry = Registry::default();
        let a = registry.slot("A");
        let b = registry.slot("B");
        assert_eq!(registry.slot("A"), a);
        for address in 1..=10 {
            assert!(registry.insert(address * 16, if address % 2 == 0 { a } else { b }));
        }
        assert!(!registry.insert(16, a), "an address is recorded once");
        for address in [2, 7, 10, 3] {
            assert!(registry.remove(address * 16));
        }
        assert!(!registry.remove(2 * 16));
        let objects = registry.lock();
        assert_eq!(objects.len(), 6);
        let mut seen: Vec<usize> = objects
            .classes
            .iter()
            .flat_map(|c| c.objects.iter().copied())
            .collect();
        seen.sort();
        assert_eq!(seen, [16, 4 * 16, 5 * 16, 6 * 16, 8 * 16, 9 * 16]);
        for (slot, class) in objects.classes.iter().enumerate() {
            for (index, address) in class.objects.iter().enumerate() {
                assert_eq!(objects.where_is[address], (slot as ClassSlot, index as u32));
            }
        }
    }
}
