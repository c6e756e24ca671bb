//! The process as the analyser reads it: machine code from executable mappings, constants
//! from read-only mappings (vtables, VTTs, constant pools) and from the build's GOT (resolved
//! at load: builds are opened with `RTLD_NOW`), and the names of the functions and objects
//! addresses lie in (the build's full symbol table, `dladdr` elsewhere).
//!
//! Nothing here writes memory; reads stay inside mappings listed in `/proc/self/maps` when the
//! view was made, of objects that stay loaded while the view lives.

use std::ffi::CStr;
use std::ops::Range;

use super::value::Word;
use crate::maps;
use crate::relocation::elf::{SectionKind, Symbol};
use crate::relocation::BuildImage;

/// What the analyser may read from a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Code,
    Constant,
}

/// A function or data object an address lies in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place {
    /// The mangled name.
    pub name: String,
    pub start: u64,
    /// The end, when the symbol's size is known.
    pub end: Option<u64>,
    /// Whether it lies in the build being analysed.
    pub in_build: bool,
}

impl Place {
    /// The name as people write it.
    pub fn demangled(&self) -> String {
        symbol_named(&self.name).demangled()
    }
}

fn symbol_named(name: &str) -> Symbol {
    Symbol {
        name: name.into(),
        key: name.into(),
        start: 0,
        size: 0,
        is_function: false,
    }
}

/// A range of addresses, kept complemented: the runtime's memory must not look like
/// references into a build to a reload's scan.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: Word,
    end: Word,
}

impl Span {
    fn new(range: Range<u64>) -> Span {
        Span {
            start: Word::new(range.start),
            end: Word::new(range.end),
        }
    }

    fn range(self) -> Range<u64> {
        self.start.get()..self.end.get()
    }
}

/// A snapshot of what may be read, for one build.
pub(crate) struct Process<'b> {
    /// Sorted by start.
    mappings: Vec<(Span, Access)>,
    /// The build's GOT.
    got: Vec<Span>,
    build: &'b BuildImage,
}

impl<'b> Process<'b> {
    /// The mappings of the process now, and `build`'s symbols.
    pub fn snapshot(build: &'b BuildImage) -> Process<'b> {
        let mappings = maps::all()
            .into_iter()
            .filter(|m| !m.name.is_empty() && !m.name.starts_with('['))
            .filter_map(|m| {
                let perms = m.perms.as_bytes();
                let range = m.range.start as u64..m.range.end as u64;
                match (perms.first(), perms.get(1), perms.get(2)) {
                    (Some(b'r'), _, Some(b'x')) => Some((Span::new(range), Access::Code)),
                    (Some(b'r'), Some(b'-'), _) => Some((Span::new(range), Access::Constant)),
                    _ => None,
                }
            })
            .collect();
        let base = build.base() as u64;
        let got = build
            .index()
            .sections()
            .iter()
            .filter(|s| s.kind == SectionKind::Loader && s.name.starts_with(".got"))
            .map(|s| Span::new(base + s.start..base + s.end))
            .collect();
        Process {
            mappings,
            got,
            build,
        }
    }

    fn mapping(&self, address: u64) -> Option<(Range<u64>, Access)> {
        let after = self
            .mappings
            .partition_point(|(span, _)| span.start.get() <= address);
        let (span, access) = self.mappings.get(after.checked_sub(1)?)?;
        let range = span.range();
        range.contains(&address).then_some((range, *access))
    }

    /// The machine code from `ip` to the end of its executable mapping.
    pub fn code(&self, ip: u64) -> Option<&[u8]> {
        let (range, access) = self.mapping(ip)?;
        if access != Access::Code {
            return None;
        }
        let length = (range.end - ip) as usize;
        // SAFETY: `ip..range.end` lies in a readable mapping of a loaded object, which stays
        // mapped while the build this view belongs to is loaded (the caller's contract).
        Some(unsafe { std::slice::from_raw_parts(ip as *const u8, length) })
    }

    /// The `bytes`-wide (at most 8) constant at `address`: only in read-only mappings and the
    /// build's GOT, whose contents do not change while the build is loaded.
    pub fn read(&self, address: u64, bytes: u32) -> Option<u64> {
        let end = address.checked_add(u64::from(bytes))?;
        let readable = self
            .got
            .iter()
            .any(|g| g.range().start <= address && end <= g.range().end)
            || self
                .mapping(address)
                .is_some_and(|(range, access)| access == Access::Constant && end <= range.end);
        if !readable {
            return None;
        }
        let mut value = [0u8; 8];
        // SAFETY: `address..end` lies in one readable mapping (checked just above).
        let source = unsafe { std::slice::from_raw_parts(address as *const u8, bytes as usize) };
        value[..bytes as usize].copy_from_slice(source);
        Some(u64::from_le_bytes(value))
    }

    /// The build analysed.
    pub fn build(&self) -> &'b BuildImage {
        self.build
    }

    /// Whether `address` lies in the analysed build.
    pub fn in_build(&self, address: u64) -> bool {
        self.build.range().contains(&(address as usize))
    }

    /// The function or object `address` lies in.
    pub fn place(&self, address: u64) -> Option<Place> {
        if self.in_build(address) {
            let base = self.build.base() as u64;
            let symbol = self.build.index().symbol_at(address - base)?;
            return Some(Place {
                name: symbol.name.to_string(),
                start: symbol.start + base,
                end: (symbol.size > 0).then_some(symbol.start + symbol.size + base),
                in_build: true,
            });
        }
        dynamic_place(address)
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
fn dynamic_place(address: u64) -> Option<Place> {
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
        name: name.to_string_lossy().into_owned(),
        start: info.dli_saddr as u64,
        end: None,
        in_build: false,
    })
}
