//! Forwarders bound to module symbols by name, re-pointed at every reload.
//!
//! The host binds with `Runtime::forwarder`; module code binds through the host API
//! (`rehydrate::forwarder` in `rehydrate/module.h`), one forwarder per symbol. A reload resolves
//! every bound symbol in the new build before anything is written (a missing symbol fails the
//! reload) and re-points every forwarder before the old build is unloaded.

use std::ffi::c_void;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use crate::forwarder::Forwarder;

/// Who asked for a binding: host bindings die with their handle, module bindings with the
/// runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Host,
    Module,
}

struct Binding {
    id: u64,
    symbol: String,
    owner: Owner,
    forwarder: Forwarder,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    entries: Vec<Binding>,
}

/// Every bound forwarder of one runtime.
#[derive(Default)]
pub(crate) struct Bindings {
    inner: Mutex<Inner>,
}

/// The bindings, locked for a reload's commit.
pub(crate) struct LockedBindings<'b>(MutexGuard<'b, Inner>);

impl LockedBindings<'_> {
    /// Re-points every forwarder resolved by [`Bindings::resolve`] (bindings made since then
    /// already point at the new build or are left alone). Allocates nothing.
    pub fn apply(&self, resolved: &Resolved) {
        for &(id, target) in &resolved.0 {
            if let Some(binding) = self.0.entries.iter().find(|b| b.id == id) {
                binding.forwarder.retarget(target as *const c_void);
            }
        }
    }
}

/// A new target for every binding, in binding order, ready to apply.
pub(crate) struct Resolved(Vec<(u64, usize)>);

impl Bindings {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Binds a forwarder to `symbol` of `module`, currently at `target`; a module asking twice
    /// for one symbol gets the same forwarder. Returns the binding's id and stable address.
    pub fn bind(
        &self,
        symbol: &str,
        module: &Path,
        target: *const c_void,
        owner: Owner,
    ) -> std::io::Result<(u64, *const c_void)> {
        let mut inner = self.lock();
        if owner == Owner::Module {
            if let Some(existing) = inner
                .entries
                .iter()
                .find(|b| b.owner == Owner::Module && b.symbol == symbol)
            {
                return Ok((existing.id, existing.forwarder.address()));
            }
        }
        let who = match owner {
            Owner::Host => "the host",
            Owner::Module => "the module",
        };
        let label = format!("`{symbol}` of {}, bound by {who}", module.display());
        let forwarder = Forwarder::new(target, label)?;
        let address = forwarder.address();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.entries.push(Binding {
            id,
            symbol: symbol.to_string(),
            owner,
            forwarder,
        });
        Ok((id, address))
    }

    /// Releases a host binding.
    pub fn unbind(&self, id: u64) {
        self.lock().entries.retain(|b| b.id != id);
    }

    /// Looks every bound symbol up with `lookup`; the first missing one is returned as `Err`.
    pub fn resolve(
        &self,
        lookup: impl Fn(&str) -> Option<*const c_void>,
    ) -> Result<Resolved, String> {
        let inner = self.lock();
        let mut targets = Vec::with_capacity(inner.entries.len());
        for binding in &inner.entries {
            let target = lookup(&binding.symbol).ok_or_else(|| binding.symbol.clone())?;
            targets.push((binding.id, target as usize));
        }
        Ok(Resolved(targets))
    }

    /// Locks the bindings for a commit: taken before the world is stopped, since a stopped
    /// thread must not hold a lock the commit needs.
    pub fn lock_for_commit(&self) -> LockedBindings<'_> {
        LockedBindings(self.lock())
    }

    /// The current target of a binding.
    pub fn target(&self, id: u64) -> Option<*const c_void> {
        self.lock()
            .entries
            .iter()
            .find(|b| b.id == id)
            .map(|b| b.forwarder.target())
    }
}
