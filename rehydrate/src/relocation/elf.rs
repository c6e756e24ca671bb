//! A build's ELF file, read once when it is loaded: its sections and every symbol (`.symtab`
//! included, so static functions, lambdas and hidden template instantiations are known), by
//! address.
//!
//! Addresses here are *virtual addresses of the file* (offsets from the load base), never
//! absolute ones: while the runtime scans memory for references into a build, its own tables
//! must not look like such references.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SectionFlags, SymbolKind};

use crate::analysis::constructors::ConstructorIndex;

/// What a section holds, as far as references into it are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SectionKind {
    /// Machine code: references are function pointers.
    Code,
    /// Constants: vtables, typeinfo, string literals, named constants.
    ReadOnly,
    /// `.data` and `.bss`: the module's globals.
    Writable,
    /// What the dynamic loader and the unwinder use (headers, `.dynamic`, symbol and hash
    /// tables, `.eh_frame*`, `.got`, init/fini arrays, TLS images): never user data. The
    /// loader's own structures point here until `dlclose`; such references are left alone.
    Loader,
}

/// One allocated section.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub name: Arc<str>,
    pub start: u64,
    pub end: u64,
    pub kind: SectionKind,
}

/// One defined symbol with an address.
#[derive(Debug, Clone)]
pub(crate) struct Symbol {
    /// The (mangled) name.
    pub name: Arc<str>,
    /// What identifies it across builds: the name of a global symbol; `file\0name` for a local
    /// one (two translation units may each have a `static int helper()`).
    pub key: Arc<str>,
    pub start: u64,
    pub size: u64,
    pub is_function: bool,
    /// Whether it is a vtable group: see [`Self::is_vtable_group`].
    pub vtable_group: bool,
}

/// Whether a mangled name is a vtable group's (`_ZTV`) or a construction vtable group's
/// (`_ZTC`).
pub(crate) fn is_vtable_name(name: &str) -> bool {
    name.starts_with("_ZTV") || name.starts_with("_ZTC")
}

impl Symbol {
    /// The name as people write it (`game::Robot::update()`, `vtable for game::Robot`), or
    /// the mangled name.
    pub fn demangled(&self) -> String {
        let Some(text) = cpp_demangle::Symbol::new(self.name.as_bytes())
            .ok()
            .map(|symbol| symbol.to_string())
        else {
            return self.name.to_string();
        };
        // cpp_demangle writes special names as `{vtable(T)}`; binutils' spelling reads better.
        for (special, spelled) in [
            ("{vtable(", "vtable for "),
            ("{construction vtable(", "construction vtable for "),
            ("{typeinfo(", "typeinfo for "),
            ("{typeinfo name(", "typeinfo name for "),
            ("{vtt(", "VTT for "),
        ] {
            if let Some(inner) = text
                .strip_prefix(special)
                .and_then(|t| t.strip_suffix(")}"))
            {
                return format!("{spelled}{inner}");
            }
        }
        text
    }

    /// Whether `address` lies inside the symbol (a symbol of size 0 holds only its start).
    pub fn contains(&self, address: u64) -> bool {
        address == self.start || (address > self.start && address < self.start + self.size)
    }

    /// A vtable group (`_ZTV`) or construction vtable group (`_ZTC`): known without reading
    /// the name (every vptr a reload or an analysis meets is asked about).
    pub fn is_vtable_group(&self) -> bool {
        self.vtable_group
    }
}

/// The sections and symbols of one build's ELF file.
#[derive(Debug, Default)]
pub(crate) struct ElfIndex {
    /// Sorted by start; allocated sections only.
    sections: Vec<Section>,
    /// Sorted by start, then by size (largest first).
    symbols: Vec<Symbol>,
    /// The mangled names of the `thread_local` variables the build defines (their symbols'
    /// values are offsets in each thread's block, so they are not in `symbols`).
    thread_locals: Vec<Arc<str>>,
    /// Whether the build registers destructors of `thread_local` objects (it imports
    /// `__cxa_thread_atexit`): glibc keeps such a library loaded, past `dlclose`, while a
    /// thread that constructed one of them lives.
    registers_thread_local_destructors: bool,
    /// Each symbol's start, in the same order: what [`ElfIndex::symbol_at`] searches (dense,
    /// so a search touches few cache lines).
    starts: Vec<u64>,
    /// For each 256-byte block of addresses from 0, how many symbols start below it: a
    /// search for an address looks only at the few symbols starting in its block.
    symbols_below_block: Vec<u32>,
    /// Index into `symbols` by key; keys that occur more than once are absent (ambiguous).
    by_key: HashMap<Arc<str>, usize>,
    /// The constructors among `symbols`, by class (for the constructor analysis).
    constructors: ConstructorIndex,
    /// The lowest virtual address of a loadable segment, rounded down to its page.
    pub first_segment: u64,
}

/// The block size of [`ElfIndex::symbol_at`]'s table (a 4-byte entry per 256 bytes of
/// addresses: a table 1/64 the size of the build).
const BLOCK_BITS: u32 = 8;
/// The most blocks that table covers (1 GiB of addresses); symbols past it are found by a
/// search of them all.
const MOST_BLOCKS: u64 = 1 << 22;

/// For each block up to the one after the last symbol's start (at most [`MOST_BLOCKS`]), how
/// many of `starts` (ascending) lie below it.
fn symbols_below_each_block(starts: &[u64]) -> Vec<u32> {
    let Some(&last) = starts.last() else {
        return Vec::new();
    };
    let blocks = ((last >> BLOCK_BITS) + 2).min(MOST_BLOCKS);
    let mut below = 0;
    (0..blocks)
        .map(|block| {
            below += starts[below..].partition_point(|&start| start < block << BLOCK_BITS);
            below as u32
        })
        .collect()
}

/// Sections whose contents belong to the loader and the unwinder (see [`SectionKind::Loader`]).
const LOADER_SECTION_PREFIXES: &[&str] = &[
    ".interp",
    ".note",
    ".hash",
    ".gnu.hash",
    ".dynsym",
    ".dynstr",
    ".gnu.version",
    ".rela",
    ".rel.",
    ".relr",
    ".dynamic",
    ".got",
    ".eh_frame",
    ".gcc_except_table",
    ".init_array",
    ".fini_array",
    ".preinit_array",
    ".ctors",
    ".dtors",
    ".jcr",
    ".tdata",
    ".tbss",
];

impl ElfIndex {
    /// Reads `path`, an ELF shared library.
    pub fn read(path: &Path) -> Result<ElfIndex, String> {
        let data = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        let file = object::File::parse(&*data).map_err(|e| format!("not an ELF file: {e}"))?;
        let first_segment = file
            .segments()
            .map(|segment| segment.address())
            .min()
            .unwrap_or(0)
            & !0xfff;
        let mut sections: Vec<Section> = file
            .sections()
            .filter_map(|section| {
                let SectionFlags::Elf { sh_flags } = section.flags() else {
                    return None;
                };
                let flags = sh_flags as u32;
                if flags & object::elf::SHF_ALLOC == 0 || section.size() == 0 {
                    return None;
                }
                let name: Arc<str> = Arc::from(section.name().unwrap_or(""));
                let kind = if LOADER_SECTION_PREFIXES.iter().any(|p| name.starts_with(p)) {
                    SectionKind::Loader
                } else if flags & object::elf::SHF_EXECINSTR != 0 {
                    SectionKind::Code
                } else if flags & object::elf::SHF_WRITE != 0 {
                    SectionKind::Writable
                } else {
                    SectionKind::ReadOnly
                };
                Some(Section {
                    name,
                    start: section.address(),
                    end: section.address() + section.size(),
                    kind,
                })
            })
            .collect();
        sections.sort_by_key(|s| s.start);

        let mut symbols = Vec::new();
        let mut thread_locals: Vec<Arc<str>> = Vec::new();
        let mut registers_thread_local_destructors = false;
        let mut file_name: Arc<str> = Arc::from("");
        for symbol in file.symbols().chain(file.dynamic_symbols()) {
            if symbol.kind() == SymbolKind::File {
                file_name = Arc::from(symbol.name().unwrap_or(""));
                continue;
            }
            if symbol.is_undefined() {
                let name = symbol.name().unwrap_or("");
                registers_thread_local_destructors |=
                    name == "__cxa_thread_atexit" || name == "__cxa_thread_atexit_impl";
                continue;
            }
            if symbol.section_index().is_none() {
                continue;
            }
            let Ok(name) = symbol.name() else { continue };
            if symbol.kind() == SymbolKind::Tls && !name.is_empty() {
                // An offset in each thread's block, not an address: kept apart.
                if !thread_locals
                    .iter()
                    .any(|known: &Arc<str>| &**known == name)
                {
                    thread_locals.push(Arc::from(name));
                }
                continue;
            }
            if name.is_empty() || !matches!(symbol.kind(), SymbolKind::Text | SymbolKind::Data) {
                continue;
            }
            let name: Arc<str> = Arc::from(name);
            let key = if symbol.is_local() {
                Arc::from(format!("{file_name}\0{name}"))
            } else {
                name.clone()
            };
            symbols.push(Symbol {
                vtable_group: is_vtable_name(&name),
                name,
                key,
                start: symbol.address(),
                size: symbol.size(),
                is_function: symbol.kind() == SymbolKind::Text,
            });
        }
        symbols.sort_by(|a, b| {
            (a.start, std::cmp::Reverse(a.size), &a.key).cmp(&(
                b.start,
                std::cmp::Reverse(b.size),
                &b.key,
            ))
        });
        // `.dynsym` repeats the globals of `.symtab`.
        symbols.dedup_by(|a, b| a.key == b.key && a.start == b.start && a.size == b.size);
        let mut by_key: HashMap<Arc<str>, usize> = HashMap::new();
        let mut ambiguous = Vec::new();
        for (i, symbol) in symbols.iter().enumerate() {
            if by_key.insert(symbol.key.clone(), i).is_some() {
                ambiguous.push(symbol.key.clone());
            }
        }
        for key in ambiguous {
            by_key.remove(&key);
        }
        let constructors = ConstructorIndex::of(&symbols);
        let starts: Vec<u64> = symbols.iter().map(|s| s.start).collect();
        let symbols_below_block = symbols_below_each_block(&starts);
        Ok(ElfIndex {
            sections,
            symbols,
            thread_locals,
            registers_thread_local_destructors,
            starts,
            symbols_below_block,
            by_key,
            constructors,
            first_segment,
        })
    }

    /// The section holding `address`.
    pub fn section_at(&self, address: u64) -> Option<&Section> {
        let after = self.sections.partition_point(|s| s.start <= address);
        let section = self.sections.get(after.checked_sub(1)?)?;
        (address < section.end).then_some(section)
    }

    /// The symbol holding `address`: of those that do, the one starting last (the innermost).
    pub fn symbol_at(&self, address: u64) -> Option<&Symbol> {
        self.symbol_index_at(address).map(|at| &self.symbols[at])
    }

    /// [`Self::symbol_at`], as its index in [`Self::symbols`].
    pub fn symbol_index_at(&self, address: u64) -> Option<usize> {
        let block = (address >> BLOCK_BITS) as usize;
        let after = match self.symbols_below_block.get(block..=block + 1) {
            Some(&[from, to]) => {
                let (from, to) = (from as usize, to as usize);
                from + self.starts[from..to].partition_point(|&start| start <= address)
            }
            _ => self.starts.partition_point(|&start| start <= address),
        };
        self.symbols[..after]
            .iter()
            .rev()
            .take(64)
            .position(|s| s.contains(address))
            .map(|back| after - 1 - back)
    }

    /// Whether `address` is the loader's: outside every section (the ELF and program headers,
    /// gaps), in a [`SectionKind::Loader`] section, or `__dso_handle` (only ever the identity
    /// of the build's exit registrations, which the C library keeps).
    pub fn is_loader(&self, address: u64) -> bool {
        match self.section_at(address) {
            None => true,
            Some(section) if section.kind == SectionKind::Loader => true,
            Some(_) => self
                .symbol_at(address)
                .is_some_and(|s| &*s.name == "__dso_handle"),
        }
    }

    /// The symbol with this key, when exactly one has it.
    pub fn by_key(&self, key: &str) -> Option<&Symbol> {
        self.by_key.get(key).map(|&i| &self.symbols[i])
    }

    /// Every symbol, by address.
    pub fn symbols(&self) -> &[Symbol] {
        &self.symbols
    }

    /// The constructors among the symbols, by class.
    pub fn constructors(&self) -> &ConstructorIndex {
        &self.constructors
    }

    /// Every allocated section, by address.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// Whether the build registers destructors of `thread_local` objects (see the field).
    pub fn registers_thread_local_destructors(&self) -> bool {
        self.registers_thread_local_destructors
    }

    /// The `thread_local` variables the build defines (mangled names).
    pub fn thread_locals(&self) -> &[Arc<str>] {
        &self.thread_locals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> Symbol {
        Symbol {
            name: Arc::from(name),
            key: Arc::from(name),
            start: 0,
            size: 8,
            is_function: false,
            vtable_group: is_vtable_name(name),
        }
    }

    #[test]
    fn each_block_counts_the_symbols_starting_below_it() {
        let starts = [0x10, 0x100, 0x150, 0x400];
        assert_eq!(symbols_below_each_block(&starts), vec![0, 1, 3, 3, 3, 4]);
        assert!(symbols_below_each_block(&[]).is_empty());
    }

    #[test]
    fn special_names_are_spelled_as_binutils_spells_them() {
        assert_eq!(named("_ZTVN2ut5MixedE").demangled(), "vtable for ut::Mixed");
        assert_eq!(
            named("_ZTIN2ut5MixedE").demangled(),
            "typeinfo for ut::Mixed"
        );
        assert_eq!(named("_ZN2ut7touchesE").demangled(), "ut::touches");
        assert_eq!(named("not mangled").demangled(), "not mangled");
    }
}
