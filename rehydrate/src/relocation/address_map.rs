//! Where a word that points into the old build must point in the new one.
//!
//! Every old address is resolved through the old build's symbols and mapped to the same thing
//! in the new build: a vptr by its vtable group and which address point it is (never by raw
//! offset: adding a virtual function moves the secondary address points), a function by its
//! symbol's start, a pointer to or into a global or named constant by symbol and offset, and a
//! pointer into unnamed read-only data (string literals) to a read-only copy of the old bytes.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use super::elf::{ElfIndex, SectionKind, Symbol};
use super::rodata::ReadOnlyCopy;

/// A loaded build as the address map sees it.
pub(crate) struct BuildView<'a> {
    pub index: &'a ElfIndex,
    /// The load bias: absolute address = `base` + virtual address of the file.
    pub base: usize,
    /// Every address the build's mappings cover.
    pub range: Range<usize>,
}

impl BuildView<'_> {
    fn contains(&self, address: usize) -> bool {
        self.range.contains(&address)
    }

    fn vaddr(&self, address: usize) -> u64 {
        (address - self.base) as u64
    }

    fn absolute(&self, vaddr: u64) -> usize {
        self.base + vaddr as usize
    }
}

/// What kind of reference a word is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ReferenceKind {
    Vptr,
    Function,
    Data,
    ReadOnlyData,
}

/// Where a resolved word must point. A place in the new build is kept as its virtual address,
/// never as an absolute one: the runtime's own lists, once freed, must not hold values that
/// look like references into a build to a later scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// This virtual address of the new build.
    NewBuild(u64),
    /// This address in the read-only copy of the old build's data.
    Copy(usize),
}

/// The outcome for one word that points into the old build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolution {
    /// Write this instead.
    To { target: Target, kind: ReferenceKind },
    /// A loader structure's reference (headers, `.dynamic`, `.eh_frame_hdr`...): left alone.
    Loader,
    /// A well-formed reference (a function's start, a vtable address point, a place in a
    /// global) whose target the new build lacks or changed: what it points at and why.
    Lost(String),
    /// A vptr of an object whose class's layout changed (the tables of both builds say so):
    /// re-pointing it would let the new build read the object with the wrong layout. It
    /// refuses the reload wherever it lies (a heap block's first words are overwritten when it
    /// is freed: a vptr there belongs to a live object far more often than to a dead one).
    LayoutChanged(String),
    /// Not a reference anything can map (inside a function, between a vtable's address
    /// points, where no symbol is): what it points at. A live one refuses the reload; in the
    /// heap it is as likely a stale byte of freed memory or a dead stack frame.
    Unresolvable(String),
}

/// One address point of a vtable group: its offset in the group and its offset-to-top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AddressPoint {
    offset: u64,
    offset_to_top: i64,
}

/// What a vtable group tells of its class: its address points, and its direct bases as the
/// class's typeinfo lists them (type name, offset and flags), when the typeinfo says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    points: Vec<AddressPoint>,
    bases: Option<Vec<(String, i64)>>,
}

/// Maps old addresses to new ones; caches what it learnt about vtable groups.
pub(crate) struct AddressMap<'a> {
    pub old: BuildView<'a>,
    pub new: BuildView<'a>,
    groups: HashMap<(bool, Arc<str>), Result<Group, String>>,
    read_only_copy: Option<ReadOnlyCopy>,
    /// Mangled type name -> how its layout changed, for the classes whose objects cannot be
    /// kept untracked.
    changed_layouts: &'a HashMap<String, String>,
}

impl<'a> AddressMap<'a> {
    /// The map from `old` to `new`; `changed_layouts`: the classes whose layouts differ
    /// between them ([`crate::layout_gate::changed_layouts`]).
    pub fn new(
        old: BuildView<'a>,
        new: BuildView<'a>,
        changed_layouts: &'a HashMap<String, String>,
    ) -> AddressMap<'a> {
        AddressMap {
            old,
            new,
            changed_layouts,
            groups: HashMap::new(),
            read_only_copy: None,
        }
    }

    /// The copy of the old build's unnamed read-only data, if some reference needed it.
    pub fn take_read_only_copy(&mut self) -> Option<ReadOnlyCopy> {
        self.read_only_copy.take()
    }

    /// Where `word`, an address inside the old build, must point in the new one.
    pub fn resolve(&mut self, word: usize) -> Resolution {
        let vaddr = self.old.vaddr(word);
        if self.old.index.is_loader(vaddr) {
            return Resolution::Loader;
        }
        let section = self.old.index.section_at(vaddr).expect("not the loader's");
        let (kind, section_name) = (section.kind, section.name.clone());
        let symbol = self.old.index.symbol_at(vaddr).cloned();
        match (kind, symbol) {
            (SectionKind::Code, Some(symbol)) if symbol.start == vaddr => {
                self.same_symbol(&symbol, 0, ReferenceKind::Function)
            }
            (SectionKind::Code, Some(symbol)) => Resolution::Unresolvable(format!(
                "points inside the function `{}`+{:#x} (a return address or a code pointer \
                 that no symbol starts at)",
                symbol.demangled(),
                vaddr - symbol.start
            )),
            (SectionKind::Code, None) => Resolution::Unresolvable(format!(
                "points into code that no symbol covers (section {section_name}+{:#x})",
                vaddr - section.start
            )),
            (_, Some(symbol)) if symbol.is_vtable_group() => self.vptr(&symbol, vaddr),
            (_, Some(symbol)) => {
                let kind = if kind == SectionKind::ReadOnly {
                    ReferenceKind::ReadOnlyData
                } else {
                    ReferenceKind::Data
                };
                self.same_symbol(&symbol, vaddr - symbol.start, kind)
            }
            (SectionKind::ReadOnly, None) => self.read_only(word),
            (_, None) => Resolution::Unresolvable(format!(
                "points into the old build's writable data where no symbol is \
                 (section {section_name}+{:#x})",
                vaddr - section.start
            )),
        }
    }

    /// The new build's symbol with `old`'s key, at `offset`.
    fn same_symbol(&self, old: &Symbol, offset: u64, kind: ReferenceKind) -> Resolution {
        let Some(new) = self.new.index.by_key(&old.key) else {
            return Resolution::Lost(format!(
                "points at `{}`+{offset:#x}, which the new build does not define{}",
                old.demangled(),
                if self.old.index.by_key(&old.key).is_none() {
                    " (the old build defines the name more than once)"
                } else {
                    ""
                }
            ));
        };
        if kind == ReferenceKind::Function && !new.is_function {
            return Resolution::Lost(format!(
                "points at the function `{}`, which is not a function in the new build",
                old.demangled()
            ));
        }
        if offset > 0 && offset >= new.size {
            return Resolution::Lost(format!(
                "points at `{}`+{offset:#x}, but the new build's `{}` is only {} bytes",
                old.demangled(),
                new.demangled(),
                new.size
            ));
        }
        Resolution::To {
            target: Target::NewBuild(new.start + offset),
            kind,
        }
    }

    /// A vptr: the same address point (by order in the group) of the new build's group.
    fn vptr(&mut self, old: &Symbol, vaddr: u64) -> Resolution {
        let old_group = match self.group(false, old) {
            Ok(group) => group,
            Err(reason) => return Resolution::Unresolvable(reason),
        };
        let offset = vaddr - old.start;
        let Some(ordinal) = old_group.points.iter().position(|p| p.offset == offset) else {
            return Resolution::Unresolvable(format!(
                "points into the vtable group `{}`+{offset:#x}, which is not one of its address \
                 points",
                old.demangled()
            ));
        };
        if let Some(changes) = old
            .name
            .strip_prefix("_ZTV")
            .and_then(|type_name| self.changed_layouts.get(type_name))
        {
            return Resolution::LayoutChanged(format!(
                "is a vptr to `{}`, whose class's layout changed ({changes}): an object the \
                 runtime does not track cannot be kept",
                old.demangled()
            ));
        }
        let Some(new) = self.new.index.by_key(&old.key).cloned() else {
            return Resolution::Lost(format!(
                "a vptr to `{}`, which the new build does not define",
                old.demangled()
            ));
        };
        let new_group = match self.group(true, &new) {
            Ok(group) => group,
            Err(reason) => return Resolution::Unresolvable(reason),
        };
        let offsets = |g: &Group| g.points.iter().map(|p| p.offset_to_top).collect::<Vec<_>>();
        if offsets(&new_group) != offsets(&old_group) {
            return Resolution::Lost(format!(
                "a vptr to `{}`, whose subobjects changed (offsets-to-top {:?} became {:?}): \
                 the class's layout changed",
                old.demangled(),
                offsets(&old_group),
                offsets(&new_group),
            ));
        }
        if let (Some(old_bases), Some(new_bases)) = (&old_group.bases, &new_group.bases) {
            if old_bases != new_bases {
                return Resolution::Lost(format!(
                    "a vptr to `{}`, whose subobjects changed (bases {} became {}): the \
                     class's layout changed",
                    old.demangled(),
                    describe_bases(old_bases),
                    describe_bases(new_bases),
                ));
            }
        }
        Resolution::To {
            target: Target::NewBuild(new.start + new_group.points[ordinal].offset),
            kind: ReferenceKind::Vptr,
        }
    }

    /// The vtable group `group` of the old (`in_new == false`) or new build.
    fn group(&mut self, in_new: bool, group: &Symbol) -> Result<Group, String> {
        let key = (in_new, group.key.clone());
        if let Some(known) = self.groups.get(&key) {
            return known.clone();
        }
        let build = if in_new { &self.new } else { &self.old };
        let found = read_group(build, group);
        self.groups.insert(key, found.clone());
        found
    }

    /// A pointer into unnamed read-only data: the same offset in a copy of the old bytes.
    fn read_only(&mut self, word: usize) -> Resolution {
        if self.read_only_copy.is_none() {
            match ReadOnlyCopy::of(&self.old) {
                Ok(copy) => self.read_only_copy = Some(copy),
                Err(error) => {
                    return Resolution::Lost(format!(
                        "points into the old build's read-only data, and no copy of it could \
                         be made: {error}"
                    ))
                }
            }
        }
        let copy = self.read_only_copy.as_ref().expect("made just above");
        match copy.translate(word) {
            Some(copied) => Resolution::To {
                target: Target::Copy(copied),
                kind: ReferenceKind::ReadOnlyData,
            },
            None => Resolution::Lost("points outside the copied read-only data".into()),
        }
    }
}

/// The address points of `group` as it lies in memory: each follows an offset-to-top word and
/// a word equal to the group's RTTI pointer (every address point of a group carries the same
/// one, that of the complete class); and the class's bases from that typeinfo.
fn read_group(build: &BuildView<'_>, group: &Symbol) -> Result<Group, String> {
    let words = group.size as usize / 8;
    let start = build.absolute(group.start);
    // SAFETY: the group lies in the build's mapped, readable `.data.rel.ro`; the build stays loaded while the address map lives.
    let word = |i: usize| unsafe { ((start + 8 * i) as *const usize).read_unaligned() };
    let rtti = (0..words)
        .map(word)
        .find(|&w| is_typeinfo(build, w))
        .ok_or_else(|| {
            format!(
                "the vtable group `{}` has no RTTI pointer (built with -fno-rtti?): its address \
                 points cannot be told apart",
                group.demangled()
            )
        })?;
    let points = (1..words)
        .filter(|&i| word(i) == rtti)
        .map(|i| AddressPoint {
            offset: 8 * (i as u64 + 1),
            offset_to_top: word(i - 1) as i64,
        })
        .collect();
    // SAFETY: `rtti` is a typeinfo object (checked by `is_typeinfo`), mapped while its library is loaded.
    let bases = unsafe { typeinfo_bases(rtti) };
    Ok(Group { points, bases })
}

/// The direct bases a class's typeinfo lists (Itanium ABI: `__si_class_type_info` has one, at
/// offset 0; `__vmi_class_type_info` a count, then each base's typeinfo and `offset << 8 |
/// flags`), as (type name, offset and flags); `None` when the typeinfo's kind is not known.
///
/// # Safety
/// `typeinfo` is the address of a live `std::type_info` object.
unsafe fn typeinfo_bases(typeinfo: usize) -> Option<Vec<(String, i64)>> {
    // SAFETY: a type_info object starts with its vptr and its name pointer (the caller's contract).
    let word = |address: usize| unsafe { (address as *const usize).read_unaligned() };
    let name = |info: usize| {
        let text = word(info + 8) as *const std::ffi::c_char;
        // SAFETY: a type_info's name is a NUL-terminated string it points to.
        unsafe { std::ffi::CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    };
    let kind = symbol_name_before(word(typeinfo))?;
    if kind.starts_with("_ZTVN10__cxxabiv117__class_type_info") {
        Some(Vec::new())
    } else if kind.starts_with("_ZTVN10__cxxabiv120__si_class_type_info") {
        Some(vec![(name(word(typeinfo + 16)), 2)])
    } else if kind.starts_with("_ZTVN10__cxxabiv121__vmi_class_type_info") {
        // SAFETY: a __vmi_class_type_info: flags and base count (two u32) follow the name.
        let count = unsafe { ((typeinfo + 20) as *const u32).read_unaligned() } as usize;
        Some(
            (0..count.min(64))
                .map(|i| {
                    let entry = typeinfo + 24 + 16 * i;
                    (name(word(entry)), word(entry + 8) as i64)
                })
                .collect(),
        )
    } else {
        None
    }
}

/// The name of the symbol `dladdr` finds at or before `address`.
fn symbol_name_before(address: usize) -> Option<String> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: dladdr only inspects the loader's tables; `info` is a valid out-parameter.
    if unsafe { libc::dladdr(address as *const _, info.as_mut_ptr()) } == 0 {
        return None;
    }
    // SAFETY: dladdr succeeded and filled `info`.
    let info = unsafe { info.assume_init() };
    if info.dli_sname.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated symbol name owned by the loader.
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_sname) };
    Some(name.to_string_lossy().into_owned())
}

/// `[ut::First at 0, ut::Second at 16]`.
fn describe_bases(bases: &[(String, i64)]) -> String {
    let described: Vec<String> = bases
        .iter()
        .map(|(name, offset_flags)| {
            let readable = cpp_demangle::Symbol::new(format!("_ZTS{name}").as_bytes())
                .ok()
                .map(|s| s.to_string())
                .map_or_else(
                    || name.clone(),
                    |s| s.trim_start_matches("typeinfo name for ").to_string(),
                );
            format!("{readable} at {}", offset_flags >> 8)
        })
        .collect();
    format!("[{}]", described.join(", "))
}

/// Whether `word` is the address of a typeinfo object (`_ZTI...`), in `build` or elsewhere.
fn is_typeinfo(build: &BuildView<'_>, word: usize) -> bool {
    if build.contains(word) {
        return build
            .index
            .symbol_at(build.vaddr(word))
            .is_some_and(|s| s.name.starts_with("_ZTI") && s.start == build.vaddr(word));
    }
    if word < 4096 {
        return false;
    }
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: dladdr only inspects the loader's tables; `info` is a valid out-parameter.
    let found = unsafe { libc::dladdr(word as *const _, info.as_mut_ptr()) } != 0;
    if !found {
        return false;
    }
    // SAFETY: dladdr succeeded and filled `info`.
    let info = unsafe { info.assume_init() };
    if info.dli_sname.is_null() || info.dli_saddr as usize != word {
        return false;
    }
    // SAFETY: a NUL-terminated symbol name owned by the loader.
    unsafe { std::ffi::CStr::from_ptr(info.dli_sname) }
        .to_bytes()
        .starts_with(b"_ZTI")
}
