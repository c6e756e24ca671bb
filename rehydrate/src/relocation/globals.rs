//! Carrying the module's state into the new build: every global of the old build (namespace
//! scope, class statics, function-local statics with their guard variables) whose symbol the
//! new build has with the same size moves its value there; the others start fresh and are
//! reported by name.
//!
//! A global moves by its bytes: after the copy, the relocation scan re-points every word that
//! pointed into the old build, inside the carried values too (a short string's buffer, a
//! map's sentinel, a pointer to another global). Ownership moves with the bytes, so the static
//! destructors follow it (the shim records the module's registrations, see
//! `rehydrate_exit_entry`): the new build's registration for a carried global first destroys
//! the fresh value its initialiser made, the old build's registration is taken away (its
//! `dlclose` must not destroy what now lives in the new build), and one the new build lacks
//! (a function-local static the old build had reached) is handed over, re-pointed. A
//! registration whose argument is no global (a `__tcf_0` or `__cxx_global_array_dtor` that
//! destroys an array) is attributed to the globals its code addresses.
//!
//! A module marks a global as starting fresh at every reload with `REHYDRATE_RESET_ON_RELOAD`
//! (`rehydrate/module.h`): a pointer to it in the `rehydrate_reset` section.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use iced_x86::{Decoder, DecoderOptions, Mnemonic};

use super::elf::{SectionKind, Symbol};
use super::BuildImage;
use crate::abi::ExitEntry;
use crate::module::LoadedModule;

/// The section `REHYDRATE_RESET_ON_RELOAD` puts its pointers in.
const RESET_SECTION: &str = "rehydrate_reset";

/// How far into a destructor helper the decoder reads.
const MAX_HELPER_BYTES: u64 = 4096;

/// What a reload did with the module's globals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlobalsReport {
    /// The globals whose values moved into the new build (names as people write them).
    pub carried: Vec<String>,
    /// How many bytes they hold.
    pub carried_bytes: usize,
    /// The old build's globals that start fresh in the new build, and why.
    pub fresh: Vec<FreshGlobal>,
    /// Static-destructor registrations taken over from the old build (function-local statics
    /// the new build had not reached).
    pub destructors_handed_over: usize,
    /// Fresh values of carried globals the new build's initialisers made, destroyed before
    /// the copy.
    pub fresh_values_destroyed: usize,
}

/// A global of the old build that was not carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreshGlobal {
    /// As people write it.
    pub name: String,
    /// Why it was not carried.
    pub reason: String,
}

/// One global to copy from the old build to the new one.
#[derive(Debug, Clone)]
pub(crate) struct Carry {
    /// As people write it.
    pub name: String,
    /// Virtual addresses in the old and the new build.
    pub old: u64,
    pub new: u64,
    pub size: u64,
}

/// A word of a static-destructor registration: where it points, never as an absolute address
/// into a build (see [`super::address_map::Target`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// This virtual address of the build.
    InBuild(u64),
    /// Outside the build (a library's function, null, the heap): the value, complemented.
    Elsewhere(usize),
}

impl Place {
    fn of(build: &BuildImage, complement: usize) -> Place {
        let value = !complement;
        if build.range().contains(&value) {
            Place::InBuild((value - build.base) as u64)
        } else {
            Place::Elsewhere(complement)
        }
    }

    fn absolute(self, build: &BuildImage) -> usize {
        match self {
            Place::InBuild(vaddr) => build.base + vaddr as usize,
            Place::Elsewhere(complement) => !complement,
        }
    }
}

/// One registration, with the globals (by key) it destroys.
struct Registration {
    index: usize,
    function: Place,
    argument: Place,
    concerns: Vec<Arc<str>>,
}

/// What the commit does with the globals, decided before anything is written.
pub(crate) struct GlobalsPlan {
    pub carries: Vec<Carry>,
    report: GlobalsReport,
    /// New-build registrations to run before the copy, newest first.
    destroy_fresh: Vec<usize>,
    /// Old-build registrations to take away.
    forget_old: Vec<usize>,
    /// Registrations to record in the new build: (function, argument) there.
    hand_over: Vec<(Place, Place)>,
}

/// Why `global` of the loaded build `old` cannot be carried although its size is the same: it
/// holds an object (its vptr says which) of a class whose layout changed.
fn holds_changed_class(
    old: &BuildImage,
    global: &Symbol,
    changed_layouts: &HashMap<String, String>,
) -> Option<String> {
    if changed_layouts.is_empty() {
        return None;
    }
    let start = old.base + global.start as usize;
    let end = start + global.size as usize;
    (start.next_multiple_of(8)..end.saturating_sub(7))
        .step_by(8)
        .find_map(|at| {
            // SAFETY: an aligned word inside a global of the loaded build `old`, mapped during the reload.
            let word = unsafe { (at as *const usize).read() };
            let vaddr = (word.checked_sub(old.base)?) as u64;
            let vtable = old.index().symbol_at(vaddr)?;
            let changes = changed_layouts.get(vtable.name.strip_prefix("_ZTV")?)?;
            Some(format!(
                "it holds an object whose class's layout changed (`{}` at byte {}: {changes})",
                vtable.demangled(),
                at - start
            ))
        })
}

/// Decides which globals of `old` move into `new`. Reads both builds; writes nothing.
/// `changed_layouts`: the classes whose layouts differ between them (a global holding one of
/// their objects starts fresh).
pub(crate) fn plan_globals(
    old: &BuildImage,
    new: &BuildImage,
    old_module: &LoadedModule,
    new_module: &LoadedModule,
    changed_layouts: &HashMap<String, String>,
) -> GlobalsPlan {
    let mut report = GlobalsReport::default();
    let old_globals: Vec<&Symbol> = carriable_globals(old).collect();
    if !old_module.knows_exit_entries() || !new_module.knows_exit_entries() {
        report.fresh = old_globals
            .iter()
            .map(|g| FreshGlobal {
                name: g.demangled(),
                reason: "the module's static-destructor registrations are not known (its \
                         descriptor has no exit list): nothing is carried"
                    .into(),
            })
            .collect();
        return GlobalsPlan {
            carries: Vec::new(),
            report,
            destroy_fresh: Vec::new(),
            forget_old: Vec::new(),
            hand_over: Vec::new(),
        };
    }
    let reset: HashSet<Arc<str>> = reset_marks(old).chain(reset_marks(new)).collect();
    let new_globals: HashMap<&str, &Symbol> =
        carriable_globals(new).map(|g| (&*g.key, g)).collect();

    // Key -> (old symbol, new symbol) of every global that may be carried; reasons otherwise.
    let mut carried: HashMap<Arc<str>, (&Symbol, &Symbol)> = HashMap::new();
    let mut fresh: Vec<(Arc<str>, String)> = Vec::new();
    for &global in &old_globals {
        let reason = if reset.contains(&global.key) {
            Some("marked REHYDRATE_RESET_ON_RELOAD".to_string())
        } else {
            match new_globals.get(&*global.key) {
                None => Some("the new build has no such global".to_string()),
                Some(n) if n.size != global.size => Some(format!(
                    "its size changed from {} to {} bytes",
                    global.size, n.size
                )),
                Some(&n) => match holds_changed_class(old, global, changed_layouts) {
                    Some(reason) => Some(reason),
                    None => {
                        carried.insert(global.key.clone(), (global, n));
                        None
                    }
                },
            }
        };
        if let Some(reason) = reason {
            fresh.push((global.key.clone(), reason));
        }
    }

    let old_registrations = registrations(old, &old_module.exit_entries(), &old_globals);
    let new_list: Vec<&Symbol> = new_globals.values().copied().collect();
    let new_registrations = registrations(new, &new_module.exit_entries(), &new_list);

    // A global and its guard variable move together; a registration that destroys several
    // globals moves only if all of them do. Repeat until nothing changes.
    loop {
        let mut demote: Vec<(Arc<str>, String)> = Vec::new();
        for (key, (symbol, _)) in &carried {
            if let Some(partner) = guard_partner(key, &symbol.name) {
                let partner_exists = old_globals.iter().any(|g| g.key == partner);
                if partner_exists && !carried.contains_key(&partner) {
                    demote.push((
                        key.clone(),
                        format!(
                            "`{}`, which goes with it, starts fresh",
                            demangle(partner_name(&partner))
                        ),
                    ));
                }
            }
        }
        for registration in old_registrations.iter().chain(&new_registrations) {
            let staying: Vec<&Arc<str>> = registration
                .concerns
                .iter()
                .filter(|k| !carried.contains_key(*k))
                .collect();
            if let Some(first) = staying.first() {
                for key in registration
                    .concerns
                    .iter()
                    .filter(|k| carried.contains_key(*k))
                {
                    demote.push((
                        key.clone(),
                        format!(
                            "the same exit registration destroys `{}`, which starts fresh",
                            demangle(partner_name(first))
                        ),
                    ));
                }
            }
        }
        // An old registration the new build has no counterpart for is handed over, which
        // needs its function in the new build.
        for registration in &old_registrations {
            if registration.concerns.is_empty()
                || registration
                    .concerns
                    .iter()
                    .any(|k| !carried.contains_key(k))
                || counterpart(&new_registrations, &registration.concerns)
            {
                continue;
            }
            if let Err(reason) = hand_over_function(old, new, registration.function) {
                for key in &registration.concerns {
                    demote.push((key.clone(), reason.clone()));
                }
            }
        }
        if demote.is_empty() {
            break;
        }
        for (key, reason) in demote {
            if carried.remove(&key).is_some() {
                fresh.push((key, reason));
            }
        }
    }

    let mut plan = GlobalsPlan {
        carries: Vec::new(),
        report,
        destroy_fresh: Vec::new(),
        forget_old: Vec::new(),
        hand_over: Vec::new(),
    };
    let moved = |r: &Registration| {
        !r.concerns.is_empty() && r.concerns.iter().all(|k| carried.contains_key(k))
    };
    for registration in new_registrations.iter().rev().filter(|r| moved(r)) {
        plan.destroy_fresh.push(registration.index);
    }
    for registration in old_registrations.iter().filter(|r| moved(r)) {
        plan.forget_old.push(registration.index);
        if counterpart(&new_registrations, &registration.concerns) {
            continue;
        }
        let function = hand_over_function(old, new, registration.function)
            .expect("checked above: the function is in the new build");
        let argument = match registration.argument {
            Place::InBuild(vaddr) => {
                let (o, n) = registration
                    .concerns
                    .iter()
                    .filter_map(|k| carried.get(k))
                    .find(|(o, _)| o.contains(vaddr))
                    .map(|(o, n)| (o.start, n.start))
                    .unwrap_or((vaddr, vaddr));
                Place::InBuild(n + (vaddr - o))
            }
            elsewhere => elsewhere,
        };
        plan.hand_over.push((function, argument));
    }
    let mut carries: Vec<Carry> = carried
        .values()
        .map(|(o, n)| Carry {
            name: o.demangled(),
            old: o.start,
            new: n.start,
            size: o.size,
        })
        .collect();
    carries.sort_by_key(|c| c.old);
    plan.report.carried = carries.iter().map(|c| c.name.clone()).collect();
    plan.report.carried_bytes = carries.iter().map(|c| c.size as usize).sum();
    let by_key: HashMap<&str, &Symbol> = old_globals.iter().map(|g| (&*g.key, *g)).collect();
    plan.report.fresh = fresh
        .into_iter()
        .map(|(key, reason)| FreshGlobal {
            name: by_key
                .get(&*key)
                .map_or_else(|| key.to_string(), |g| g.demangled()),
            reason,
        })
        .collect();
    plan.report.fresh.extend(thread_locals_left_behind(old));
    plan.report.fresh.sort_by(|a, b| a.name.cmp(&b.name));
    plan.carries = carries;
    plan
}

/// The `thread_local` variables of `old`, which no reload carries: every thread's value
/// starts fresh in the new build (their guard variables are not named).
fn thread_locals_left_behind(old: &BuildImage) -> impl Iterator<Item = FreshGlobal> + '_ {
    old.index()
        .thread_locals()
        .iter()
        .filter(|name| !name.starts_with("_ZGV") && !name.starts_with("__"))
        .map(|name| FreshGlobal {
            name: demangle(name),
            reason: "thread_local: each thread's value starts fresh (not carried)".into(),
        })
}

impl GlobalsPlan {
    /// Destroys the fresh values the new build's initialisers gave the carried globals (module
    /// code of the new build, which nothing uses yet: run before the world is stopped). Their
    /// registrations are kept: they destroy the carried values at exit.
    pub fn destroy_fresh_values(&mut self, new_module: &LoadedModule) {
        for &index in &self.destroy_fresh {
            match new_module.run_exit_entry(index) {
                Ok(()) => self.report.fresh_values_destroyed += 1,
                Err(message) => tracing::error!(%message, "a fresh global's destructor threw"),
            }
        }
    }

    /// After [`GlobalsPlan::destroy_fresh_values`], for a reload that is refused: the fresh
    /// values are gone, so the new build's unload must not destroy them again.
    pub fn forget_destroyed_values(&self, new_module: &LoadedModule) {
        for &index in &self.destroy_fresh {
            new_module.forget_exit_entry(index);
        }
    }

    /// Copies the old values into the new build. Allocates nothing (it runs while the world
    /// is stopped).
    ///
    /// # Safety
    /// Both builds are loaded, no other thread runs, the fresh values were destroyed, and the
    /// plan was made from these builds with nothing changed since.
    pub unsafe fn copy_values(&self, old: &BuildImage, new: &BuildImage) {
        for carry in &self.carries {
            let from = (old.base + carry.old as usize) as *const u8;
            let to = (new.base + carry.new as usize) as *mut u8;
            // SAFETY: both are globals of the builds' writable data (`carriable_globals`) of `size` bytes, mapped while both builds are loaded; distinct builds never overlap.
            unsafe { std::ptr::copy_nonoverlapping(from, to, carry.size as usize) };
        }
    }

    /// Takes the old build's registrations of carried globals away: its unload must not
    /// destroy what now lives in the new build. Before the relocation is applied: it re-points
    /// the runtime's own pointers to the old build's shim too. Allocates nothing.
    pub fn forget_old_registrations(&self, old_module: &LoadedModule) {
        for &index in &self.forget_old {
            old_module.forget_exit_entry(index);
        }
    }

    /// Hands over the registrations the new build lacks (function-local statics the old build
    /// had reached), after [`GlobalsPlan::copy_values`]. Returns the report.
    ///
    /// # Safety
    /// The new build is loaded and the values were copied.
    pub unsafe fn hand_over_destructors(
        self,
        new: &BuildImage,
        new_module: &LoadedModule,
    ) -> GlobalsReport {
        let mut report = self.report;
        for (function, argument) in self.hand_over {
            let (function, argument) = (function.absolute(new), argument.absolute(new));
            // SAFETY: `function` is the new build's function of the same symbol as the old registration's (`hand_over_function`), which took one pointer.
            if unsafe { new_module.adopt_exit_entry(function, argument) } {
                report.destructors_handed_over += 1;
            } else {
                tracing::error!("a carried global's destructor could not be handed over: it will not run at exit");
            }
        }
        report
    }
}

/// The new build's function for a registration's function: the same symbol, which must be a
/// function there.
fn hand_over_function(
    old: &BuildImage,
    new: &BuildImage,
    function: Place,
) -> Result<Place, String> {
    let Place::InBuild(vaddr) = function else {
        return Ok(function);
    };
    let Some(symbol) = old
        .index
        .symbol_at(vaddr)
        .filter(|s| s.start == vaddr && s.is_function)
    else {
        return Err(format!(
            "its destructor registration calls {vaddr:#x}, where no function of the old build starts"
        ));
    };
    match new.index.by_key(&symbol.key) {
        Some(n) if n.is_function => Ok(Place::InBuild(n.start)),
        _ => Err(format!(
            "its destructor `{}` is not in the new build",
            symbol.demangled()
        )),
    }
}

/// Whether one of `registrations` destroys any of `concerns`.
fn counterpart(registrations: &[Registration], concerns: &[Arc<str>]) -> bool {
    registrations
        .iter()
        .any(|r| r.concerns.iter().any(|k| concerns.contains(k)))
}

/// The registrations of `build` with the carriable globals (`globals`) each destroys: the one
/// its argument points into, or else those its function's code addresses.
fn registrations(
    build: &BuildImage,
    entries: &[ExitEntry],
    globals: &[&Symbol],
) -> Vec<Registration> {
    let global_at = |vaddr: u64| {
        globals
            .iter()
            .find(|g| g.contains(vaddr))
            .map(|g| g.key.clone())
    };
    entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.function_complement != !0)
        .map(|(index, entry)| {
            let function = Place::of(build, entry.function_complement);
            let argument = Place::of(build, entry.argument_complement);
            let mut concerns: Vec<Arc<str>> = match argument {
                Place::InBuild(vaddr) => global_at(vaddr).into_iter().collect(),
                Place::Elsewhere(_) => match function {
                    Place::InBuild(code) => {
                        let references = code_references(build, code);
                        // A loop over an array computes its end, which is where the next
                        // global starts: not a reference to that one.
                        let ends: Vec<u64> = references
                            .iter()
                            .filter_map(|&r| globals.iter().find(|g| g.contains(r)))
                            .map(|g| g.start + g.size)
                            .collect();
                        references
                            .into_iter()
                            .filter(|r| !ends.contains(r))
                            .filter_map(global_at)
                            .collect()
                    }
                    Place::Elsewhere(_) => Vec::new(),
                },
            };
            concerns.sort();
            concerns.dedup();
            Registration {
                index,
                function,
                argument,
                concerns,
            }
        })
        .collect()
}

/// The data addresses (virtual) the function at `code` names: rip-relative operands, and the
/// addresses its loads from the GOT fetch.
fn code_references(build: &BuildImage, code: u64) -> Vec<u64> {
    let Some(function) = build
        .index
        .symbol_at(code)
        .filter(|s| s.start == code && s.is_function)
    else {
        return Vec::new();
    };
    let size = function.size.clamp(1, MAX_HELPER_BYTES) as usize;
    let start = (build.base + code as usize) as *const u8;
    // SAFETY: the function's bytes lie in the build's code, mapped readable while it is loaded.
    let bytes = unsafe { std::slice::from_raw_parts(start, size) };
    let mut references = Vec::new();
    let mut decoder = Decoder::with_ip(64, bytes, code, DecoderOptions::NONE);
    for instruction in &mut decoder {
        if !instruction.is_ip_rel_memory_operand() {
            continue;
        }
        let target = instruction.ip_rel_memory_address();
        let in_got = build
            .index
            .section_at(target)
            .is_some_and(|s| s.kind == SectionKind::Loader && s.name.starts_with(".got"));
        if in_got && instruction.mnemonic() == Mnemonic::Mov {
            let slot = (build.base + target as usize) as *const usize;
            // SAFETY: a GOT slot of the loaded build, mapped readable.
            let value = unsafe { slot.read_unaligned() };
            if build.range().contains(&value) {
                references.push((value - build.base) as u64);
            }
        } else {
            references.push(target);
        }
    }
    references
}

/// The keys of the globals `REHYDRATE_RESET_ON_RELOAD` marks in `build`.
fn reset_marks(build: &BuildImage) -> impl Iterator<Item = Arc<str>> + '_ {
    let section = build
        .index
        .sections()
        .iter()
        .find(|s| &*s.name == RESET_SECTION);
    let words = section.map_or(0..0, |s| s.start..s.end);
    words.step_by(8).filter_map(move |at| {
        // SAFETY: a word of the loaded build's `rehydrate_reset` section, mapped readable.
        let value = unsafe { ((build.base + at as usize) as *const usize).read_unaligned() };
        if !build.range().contains(&value) {
            return None;
        }
        let vaddr = (value - build.base) as u64;
        build.index.symbol_at(vaddr).map(|s| s.key.clone())
    })
}

/// The data symbols of `build` that are the module's own globals: in writable data that stays
/// writable (not `.data.rel.ro`, not the loader's, not thread-local), not the C++ runtime's
/// vtables and typeinfo, not the start files' or the shim's own state.
fn carriable_globals(build: &BuildImage) -> impl Iterator<Item = &Symbol> {
    build.index.symbols().iter().filter(move |symbol| {
        let unique = build
            .index
            .by_key(&symbol.key)
            .is_some_and(|s| std::ptr::eq(s, *symbol));
        if symbol.is_function || symbol.size == 0 || !unique {
            return false;
        }
        let in_data = build.index.section_at(symbol.start).is_some_and(|s| {
            s.kind == SectionKind::Writable
                && !s.name.starts_with(".data.rel.ro")
                && &*s.name != RESET_SECTION
        });
        let name = &*symbol.name;
        let runtime_owned = ["_ZTV", "_ZTI", "_ZTS", "_ZTT", "_ZTC", "__", "DW.ref."]
            .iter()
            .any(|p| name.starts_with(p))
            || name.contains("rehydrate_");
        let start_file = symbol
            .key
            .split_once('\0')
            .is_some_and(|(file, _)| file.starts_with("crt"));
        in_data && !runtime_owned && !start_file
    })
}

/// For a function-local static's guard variable (`_ZGV...`) the static's key, and the other
/// way round.
fn guard_partner(key: &str, name: &str) -> Option<Arc<str>> {
    let partner = if let Some(rest) = name.strip_prefix("_ZGV") {
        format!("_Z{rest}")
    } else {
        format!("_ZGV{}", name.strip_prefix("_Z")?)
    };
    Some(Arc::from(match key.split_once('\0') {
        Some((file, _)) => format!("{file}\0{partner}"),
        None => partner,
    }))
}

/// The name part of a key.
fn partner_name(key: &str) -> &str {
    key.split_once('\0').map_or(key, |(_, name)| name)
}

fn demangle(name: &str) -> String {
    cpp_demangle::Symbol::new(name.as_bytes())
        .ok()
        .map(|s| s.to_string())
        .unwrap_or_else(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_and_its_guard_are_partners_both_ways() {
        assert_eq!(
            guard_partner("_ZZ1fvE5local", "_ZZ1fvE5local").as_deref(),
            Some("_ZGVZ1fvE5local")
        );
        assert_eq!(
            guard_partner("_ZGVZ1fvE5local", "_ZGVZ1fvE5local").as_deref(),
            Some("_ZZ1fvE5local")
        );
        assert_eq!(
            guard_partner("a.cpp\0_ZZL1gvE1x", "_ZZL1gvE1x").as_deref(),
            Some("a.cpp\0_ZGVZL1gvE1x")
        );
        assert_eq!(guard_partner("counter", "counter"), None);
        assert_eq!(partner_name("a.cpp\0_ZGVZL1gvE1x"), "_ZGVZL1gvE1x");
    }
}
