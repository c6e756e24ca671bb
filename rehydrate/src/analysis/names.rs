//! The names an analysis reports (the functions it followed, the symbols the words it found
//! point into), kept as indices into the symbol table of the build it read: an analysis
//! copies no name and counts no reference (it runs for every class at every load). The
//! table itself, [`Names`], is shared by what shows the results to people.

use std::borrow::Cow;
use std::sync::Arc;

use super::process::dynamic_place;
use super::value::Word;
use super::ImplicitWord;
use crate::image::Writes;
use crate::relocation::elf::ElfIndex;

/// A mangled name: a symbol of the analysed build, or a name from elsewhere (another loaded
/// object's dynamic symbol, or an address written out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SymbolName {
    /// The symbol with this index in the build's symbol table.
    InBuild(u32),
    Elsewhere(Arc<str>),
}

impl SymbolName {
    /// The mangled name, from the symbol table `index` of the build it was read in.
    pub(crate) fn in_table<'a>(&'a self, index: Option<&'a ElfIndex>) -> &'a str {
        match self {
            SymbolName::InBuild(at) => index
                .and_then(|index| index.symbols().get(*at as usize))
                .map_or("?", |symbol| &symbol.name),
            SymbolName::Elsewhere(name) => name,
        }
    }
}

/// The symbol table of the build an analysis read, where the build is mapped (its load bias,
/// complemented: the runtime's memory must not look like references into a build to a
/// reload's scan; and its length): what its [`SymbolName`]s and addresses name.
#[derive(Clone, Default)]
pub struct Names(Option<Build>);

#[derive(Clone)]
struct Build {
    index: Arc<ElfIndex>,
    base: Word,
    length: u64,
}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(build) => write!(f, "Names({} symbols)", build.index.symbols().len()),
            None => f.write_str("Names(none)"),
        }
    }
}

impl Names {
    /// The names of the build whose symbol table is `index`, mapped at `range` (its load
    /// bias, and the end of its mapping).
    pub(crate) fn of(index: Arc<ElfIndex>, range: std::ops::Range<u64>) -> Names {
        Names(Some(Build {
            index,
            base: Word::new(range.start),
            length: range.end - range.start,
        }))
    }

    /// The name of the function starting at `address`, or the address written out.
    pub(crate) fn function_at(&self, address: u64) -> Cow<'_, str> {
        self.0
            .as_ref()
            .and_then(|build| {
                let base = build.base.get();
                let symbol = build.index.symbol_at(address.checked_sub(base)?)?;
                (symbol.start + base == address).then_some(&*symbol.name)
            })
            .map_or_else(|| Cow::Owned(format!("{address:#x}")), Cow::Borrowed)
    }

    /// The address-valued words `writes` make (those pointing into a symbol of the build or
    /// of another loaded object), by offset: what a reload copies into an object that
    /// references code or data.
    pub(crate) fn words_of(&self, writes: &Writes) -> Vec<ImplicitWord> {
        writes
            .words
            .iter()
            .filter_map(|&(offset, complement)| {
                let value = !complement;
                let symbol = self.symbol_holding(value)?;
                Some(ImplicitWord {
                    offset,
                    symbol: Some(symbol),
                })
            })
            .collect()
    }

    /// The symbol `address` lies in (of the build, or a dynamic symbol of another loaded
    /// object) and how far past its start, as [`ImplicitWord::of`] names it.
    fn symbol_holding(&self, address: u64) -> Option<(SymbolName, u64)> {
        if let Some(build) = &self.0 {
            let offset = address.wrapping_sub(build.base.get());
            if offset < build.length {
                let at = build.index.symbol_index_at(offset)?;
                let start = build.index.symbols()[at].start;
                return Some((SymbolName::InBuild(at as u32), offset - start));
            }
        }
        dynamic_place(address).map(|place| (place.kept_name(), address - place.start))
    }

    /// The mangled name `name` stands for.
    pub(crate) fn get<'a>(&'a self, name: &'a SymbolName) -> &'a str {
        name.in_table(self.0.as_ref().map(|build| &*build.index))
    }

    /// The vtable group (mangled symbol) `word` points into and the address point's offset in
    /// it, when it points into a vtable.
    pub fn vtable<'a>(&'a self, word: &'a ImplicitWord) -> Option<(&'a str, u64)> {
        word.target(|name| self.get(name))
            .and_then(super::vtable_of)
    }

    /// What `word` points at, for people (`vtable for game::Robot+0x10`).
    pub fn holds(&self, word: &ImplicitWord) -> String {
        super::holds_of(word.target(|name| self.get(name)))
    }
}
