//! The build as the analyser reads it: machine code from its code sections, constants from
//! its read-only ones (vtables, VTTs, constant pools in `.rodata` and `.data.rel.ro`) and its
//! GOT (resolved at load: builds are opened with `RTLD_NOW`), and the names of the functions
//! and objects addresses lie in (the build's full symbol table, `dladdr` elsewhere). Code
//! outside the build is never read: calls into other objects are not followed.
//!
//! Nothing here writes memory; reads stay inside the sections of a build that stays loaded
//! while the view lives.

use std::borrow::Cow;
use std::ffi::CStr;
use std::ops::Range;
use std::sync::Arc;

use super::names::{Names, SymbolName};
use crate::hidden::HiddenRange;
use crate::relocation::elf::{is_vtable_name, SectionKind, Symbol};
use crate::relocation::BuildImage;

/// What the analyser may read from a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Code,
    Constant,
}

/// A function or data object an address lies in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place<'b> {
    /// The mangled name (borrowed from the build's symbol table where it lies there).
    pub name: Cow<'b, str>,
    /// Its index in the build's symbol table, when it lies in the build.
    symbol: Option<u32>,
    pub start: u64,
    /// The end, when the symbol's size is known.
    pub end: Option<u64>,
    /// Whether it lies in the build being analysed.
    pub in_build: bool,
}

impl<'b> Place<'b> {
    /// A place only named (for demangling).
    pub fn named(name: &'b str) -> Place<'b> {
        Place {
            name: Cow::Borrowed(name),
            symbol: None,
            start: 0,
            end: None,
            in_build: false,
        }
    }

    /// The mangled name, to keep: the build's symbol, or a copy of a name from elsewhere.
    pub fn kept_name(&self) -> SymbolName {
        match self.symbol {
            Some(at) => SymbolName::InBuild(at),
            None => SymbolName::Elsewhere(Arc::from(self.name.as_ref())),
        }
    }

    /// The name as people write it.
    pub fn demangled(&self) -> String {
        Symbol {
            name: self.name.as_ref().into(),
            key: self.name.as_ref().into(),
            start: 0,
            size: 0,
            is_function: false,
            vtable_group: false,
        }
        .demangled()
    }
}

/// A range of addresses of the process (kept complemented: see [`crate::hidden`]).
#[derive(Debug, Clone, Copy)]
struct Span(HiddenRange);

impl Span {
    fn new(range: Range<u64>) -> Span {
        Span(HiddenRange::new(
            &(range.start as usize..range.end as usize),
        ))
    }

    fn range(self) -> Range<u64> {
        let range = self.0.get();
        range.start as u64..range.end as u64
    }
}

/// A snapshot of what may be read, for one build.
pub(crate) struct Process<'b> {
    /// What may be read, sorted by start.
    regions: Vec<(Span, Access)>,
    /// The PLT sections (`.plt`, `.plt.sec`, `.plt.got`): stubs that only jump on.
    stubs: Vec<Span>,
    /// The build analysed; `None` for bare code (tests), which then counts as the build.
    build: Option<&'b BuildImage>,
}

impl<'b> Process<'b> {
    /// What `build` lets the analyser read: its code sections, and its constants
    /// (`.rodata`, and `.data.rel.ro` and the GOT: relocated at load, read-only from then on).
    pub fn snapshot(build: &'b BuildImage) -> Process<'b> {
        let base = build.base() as u64;
        let mappings = build
            .index()
            .sections()
            .iter()
            .filter_map(|section| {
                let access = match section.kind {
                    SectionKind::Code => Access::Code,
                    SectionKind::ReadOnly => Access::Constant,
                    SectionKind::Writable if section.name.starts_with(".data.rel.ro") => {
                        Access::Constant
                    }
                    SectionKind::Loader if section.name.starts_with(".got") => Access::Constant,
                    _ => return None,
                };
                let range = base + section.start..base + section.end;
                Some((Span::new(range), access))
            })
            .collect();
        let stubs = build
            .index()
            .sections()
            .iter()
            .filter(|section| section.kind == SectionKind::Code && section.name.starts_with(".plt"))
            .map(|section| Span::new(base + section.start..base + section.end))
            .collect();
        Process {
            regions: mappings,
            stubs,
            build: Some(build),
        }
    }

    /// A view of `code` alone, as the build (for testing the analyser on hand-made code).
    #[cfg(test)]
    pub fn of_code(code: Range<u64>) -> Process<'static> {
        Process {
            regions: vec![(Span::new(code), Access::Code)],
            stubs: Vec::new(),
            build: None,
        }
    }

    fn region(&self, address: u64) -> Option<(Range<u64>, Access)> {
        let after = self
            .regions
            .partition_point(|(span, _)| span.range().start <= address);
        let (span, access) = self.regions.get(after.checked_sub(1)?)?;
        let range = span.range();
        range.contains(&address).then_some((range, *access))
    }

    /// Whether `address` lies in a PLT stub (which only jumps to the function it stands for).
    pub fn is_stub(&self, address: u64) -> bool {
        self.stubs
            .iter()
            .any(|span| span.range().contains(&address))
    }

    /// The machine code from `ip` to the end of its code section.
    pub fn code(&self, ip: u64) -> Option<&[u8]> {
        let (start, section) = self.code_section(ip)?;
        Some(&section[(ip - start) as usize..])
    }

    /// The code section holding `ip`: its start address and its machine code.
    pub fn code_section(&self, ip: u64) -> Option<(u64, &[u8])> {
        let (range, access) = self.region(ip)?;
        if access != Access::Code {
            return None;
        }
        let length = (range.end - range.start) as usize;
        // The build stays mapped while this view of it lives (the caller's contract).
        // SAFETY: `range` is a code section of that loaded build.
        let code = unsafe { std::slice::from_raw_parts(range.start as *const u8, length) };
        Some((range.start, code))
    }

    /// The `bytes`-wide (at most 8) constant at `address`: only in the build's constant
    /// sections, whose contents do not change while the build is loaded.
    pub fn read(&self, address: u64, bytes: u32) -> Option<u64> {
        let end = address.checked_add(u64::from(bytes))?;
        let readable = self
            .region(address)
            .is_some_and(|(range, access)| access == Access::Constant && end <= range.end);
        if !readable {
            return None;
        }
        // SAFETY: `address..end` lies in one constant section (checked just above).
        let source = unsafe { std::slice::from_raw_parts(address as *const u8, bytes as usize) };
        Some(match source.try_into() {
            Ok(word) => u64::from_le_bytes(word), // most reads: a vtable address in the GOT
            Err(_) => source
                .iter()
                .rev()
                .fold(0, |value, &byte| value << 8 | u64::from(byte)),
        })
    }

    /// The mangled name `name` stands for.
    pub fn name_of<'n>(&'n self, name: &'n SymbolName) -> &'n str {
        name.in_table(self.build.map(BuildImage::index))
    }

    /// What the names of the analysis's results refer to.
    pub fn names(&self) -> Names {
        self.build.map_or_else(Names::default, |build| {
            let range = build.range();
            Names::of(
                Arc::clone(build.shared_index()),
                range.start as u64..range.end as u64,
            )
        })
    }

    /// The build analysed.
    pub fn build(&self) -> Option<&'b BuildImage> {
        self.build
    }

    /// Whether `address` lies in the analysed build.
    pub fn in_build(&self, address: u64) -> bool {
        match self.build {
            Some(build) => build.range().contains(&(address as usize)),
            None => self
                .regions
                .iter()
                .any(|(span, _)| span.range().contains(&address)),
        }
    }

    /// The function or object `address` lies in.
    pub fn place(&self, address: u64) -> Option<Place<'b>> {
        if let Some(build) = self.build.filter(|_| self.in_build(address)) {
            let base = build.base() as u64;
            let at = build.index().symbol_index_at(address - base)?;
            let symbol = &build.index().symbols()[at];
            return Some(Place {
                name: Cow::Borrowed(&symbol.name),
                symbol: Some(at as u32),
                start: symbol.start + base,
                end: (symbol.size > 0).then_some(symbol.start + symbol.size + base),
                in_build: true,
            });
        }
        dynamic_place(address)
    }

    /// Whether `address` lies in a vtable group (of the build, or a dynamic symbol of another
    /// loaded object), as [`super::ImplicitWord::of`] would name it.
    pub fn is_in_vtable(&self, address: u64) -> bool {
        if let Some(build) = self.build.filter(|_| self.in_build(address)) {
            let index = build.index();
            return index
                .symbol_index_at(address - build.base() as u64)
                .is_some_and(|at| index.symbols()[at].is_vtable_group());
        }
        dynamic_place(address).is_some_and(|place| is_vtable_name(&place.name))
    }

    /// `address` for people: `symbol+offset`, or the bare address.
    pub fn describe(&self, address: u64) -> String {
        match self.place(address) {
            Some(place) if place.start == address => place.demangled(),
            Some(place) => format!("{}+{:#x}", place.demangled(), address - place.start),
            None => format!("{address:#x}"),
        }
    }
}

/// The nearest dynamic symbol at or below `address` in whichever object holds it.
pub(crate) fn dynamic_place(address: u64) -> Option<Place<'static>> {
    let mut info = libc::Dl_info {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    };
    // SAFETY: dladdr only reads the loader's tables and fills `info`.
    let found = unsafe { libc::dladdr(address as *const libc::c_void, &mut info) };
    if found == 0 || info.dli_sname.is_null() {
        return None;
    }
    // SAFETY: a non-null `dli_sname` is a NUL-terminated name in the object's string table.
    let name = unsafe { CStr::from_ptr(info.dli_sname) };
    Some(Place {
        name: Cow::Owned(name.to_string_lossy().into_owned()),
        symbol: None,
        start: info.dli_saddr as u64,
        end: None,
        in_build: false,
    })
}
