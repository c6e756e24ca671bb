//! The names an analysis reports (the functions it followed, the symbols the words it found
//! point into), kept as indices into the symbol table of the build it read: an analysis
//! copies no name and counts no reference (it runs for every class at every load). The
//! table itself, [`Names`], is shared by what shows the results to people.

use std::borrow::Cow;
use std::sync::Arc;

use super::value::Word;
use super::ImplicitWord;
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

/// The symbol table of the build an analysis read (and the build's load bias, complemented:
/// the runtime's memory must not look like references into a build to a reload's scan):
/// what its [`SymbolName`]s and addresses name.
#[derive(Clone, Default)]
pub struct Names(Option<(Arc<ElfIndex>, Word)>);

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some((index, _)) => write!(f, "Names({} symbols)", index.symbols().len()),
            None => f.write_str("Names(none)"),
        }
    }
}

impl Names {
    /// The names of the build whose symbol table is `index`, loaded with the bias `base`.
    pub(crate) fn of(index: Arc<ElfIndex>, base: u64) -> Names {
        Names(Some((index, Word::new(base))))
    }

    /// The name of the function starting at `address`, or the address written out.
    pub(crate) fn function_at(&self, address: u64) -> Cow<'_, str> {
        self.0
            .as_ref()
            .and_then(|(index, base)| {
                let base = base.get();
                let symbol = index.symbol_at(address.checked_sub(base)?)?;
                (symbol.start + base == address).then_some(&*symbol.name)
            })
            .map_or_else(|| Cow::Owned(format!("{address:#x}")), Cow::Borrowed)
    }

    /// The mangled name `name` stands for.
    pub(crate) fn get<'a>(&'a self, name: &'a SymbolName) -> &'a str {
        name.in_table(self.0.as_ref().map(|(index, _)| &**index))
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
