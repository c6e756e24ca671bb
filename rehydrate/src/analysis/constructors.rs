//! Which functions of a build construct a class: its complete-object (`C1`, `CI1`) and
//! base-object (`C2`, `CI2`) constructors, found by mangled name in the full symbol table,
//! whatever their parameters; and the module's own construct thunk (`new (p) T`, with the
//! constructor usually inlined into it) for classes whose constructors were all inlined.

use std::ops::Range;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use super::process::Process;
use super::value::Word;
use crate::module::ModuleClass;
use crate::relocation::elf::Symbol;

/// A function to analyse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate<'a> {
    /// Absolute address, complemented (the runtime's memory must not look like references
    /// into a build).
    address: Word,
    /// The mangled name (or, for the thunk, the class).
    pub name: &'a Arc<str>,
    /// Its index in the build's symbols (`None` for the thunk).
    pub symbol: Option<u32>,
    /// Which kind of constructor it is.
    pub label: &'static str,
    /// Best first: complete-object before base-object, the default constructor first.
    rank: u8,
}

impl Candidate<'_> {
    pub fn address(&self) -> u64 {
        self.address.get()
    }

    /// For people: the demangled name and which kind of constructor it is.
    pub fn description(&self) -> String {
        describe(self.name, self.label)
    }
}

/// A build's constructors by class (the mangled text between `_ZN` and `C1`, `C2`...: the
/// class's [`class_key`]), and its VTTs by the type they belong to. Made once per build when
/// its ELF file is read (the names are read there anyway), as indices into its symbols.
#[derive(Debug, Default)]
pub(crate) struct ConstructorIndex {
    /// Class key -> the range of `constructors` holding its constructors.
    by_class: FxHashMap<Box<str>, Range<u32>>,
    /// Indices into the build's symbols, grouped by class.
    constructors: Vec<u32>,
    vtts: FxHashSet<Box<str>>,
}

impl ConstructorIndex {
    /// The index of `symbols` (a build's, by address).
    pub fn of(symbols: &[Symbol]) -> ConstructorIndex {
        let mut vtts = FxHashSet::default();
        let mut found: Vec<(&str, u32)> = Vec::new();
        for (at, symbol) in symbols.iter().enumerate() {
            if let Some(type_name) = symbol.name.strip_prefix("_ZTT") {
                vtts.insert(type_name.into());
            } else if symbol.is_function && symbol.size > 0 {
                if let Some(marker) = constructor_marker(&symbol.name) {
                    found.push((&symbol.name[3..marker], at as u32));
                }
            }
        }
        found.sort_unstable();
        let mut by_class = FxHashMap::default();
        let constructors = found.iter().map(|&(_, at)| at).collect();
        let mut start = 0;
        for group in found.chunk_by(|a, b| a.0 == b.0) {
            let end = start + group.len() as u32;
            by_class.insert(group[0].0.into(), start..end);
            start = end;
        }
        ConstructorIndex {
            by_class,
            constructors,
            vtts,
        }
    }

    /// How many classes have a constructor here.
    pub fn classes(&self) -> usize {
        self.by_class.len()
    }

    /// The constructors of the class with this key, as indices into the build's symbols.
    fn of_class(&self, key: &str) -> &[u32] {
        self.by_class.get(key).map_or(&[], |range| {
            &self.constructors[range.start as usize..range.end as usize]
        })
    }
}

/// The part of every constructor's mangled name of the class with this `typeid(T).name()`
/// between `_ZN` and the constructor's code: `N4game6PlayerE` -> `4game6Player`, `6Player`
/// -> `6Player` (`_ZN4game6PlayerC1Ev`, `_ZN6PlayerC1Ev`).
pub(crate) fn class_key(type_id_name: &str) -> Option<&str> {
    if type_id_name.is_empty() {
        return None;
    }
    match type_id_name.strip_prefix('N') {
        Some(nested) => nested.strip_suffix('E'),
        None => Some(type_id_name),
    }
}

/// The kind of constructor a mangled name continues with after the class's prefix.
fn constructor_kind(rest: &str) -> Option<(bool, &'static str)> {
    let (complete, label, after) = if let Some(after) = rest.strip_prefix("C1") {
        (true, "complete-object constructor", after)
    } else if let Some(after) = rest.strip_prefix("C2") {
        (false, "base-object constructor", after)
    } else if let Some(after) = rest.strip_prefix("CI1") {
        (true, "inheriting complete-object constructor", after)
    } else if let Some(after) = rest.strip_prefix("CI2") {
        (false, "inheriting base-object constructor", after)
    } else {
        return None;
    };
    // the nested name ends, or template arguments or an ABI tag follow; clones (`.part.0`,
    // `.cold`) take other arguments or are pieces
    let continues = after.starts_with(['E', 'I', 'B']) || rest.starts_with("CI");
    (continues && !after.contains('.')).then_some((complete, label))
}

/// The functions to analyse for `class`, best first: complete-object constructors (the
/// default one first), base-object constructors when the class has no virtual base (they
/// then do the same), and the module's construct thunk.
/// They replace what `candidates` held.
pub(crate) fn candidates<'a>(
    class: &'a ModuleClass,
    process: &'a Process<'_>,
    candidates: &mut Vec<Candidate<'a>>,
) {
    candidates.clear();
    if let (Some(build), Some(key)) = (process.build(), class_key(&class.type_id_name)) {
        let base = build.base() as u64;
        let index = build.index();
        let constructors = index.constructors().of_class(key);
        // looked up only for a class with constructors (most classes at -O2 have none)
        let has_vtt = !constructors.is_empty()
            && index
                .constructors()
                .vtts
                .contains(class.type_id_name.as_str());
        for &at in constructors {
            let symbol = &index.symbols()[at as usize];
            let rest = &symbol.name[3 + key.len()..];
            let Some((complete, label)) = constructor_kind(rest) else {
                continue;
            };
            if !complete && has_vtt {
                continue; // a base-object constructor leaves the virtual bases to its caller
            }
            let is_default = rest.ends_with("Ev");
            let rank = match (complete, is_default) {
                (true, true) => 0,
                (true, false) => 1,
                (false, true) => 2,
                (false, false) => 3,
            };
            candidates.push(Candidate {
                address: Word::new(base + symbol.start),
                name: &symbol.name,
                symbol: Some(at),
                label,
                rank,
            });
        }
    }
    candidates.sort_by_key(|c| (c.rank, c.address()));
    // aliases (`C1` and `C2` at one address) are one function
    candidates.dedup_by_key(|c| c.address);
    if let Some(construct) = class.construct {
        candidates.push(Candidate {
            address: Word::new(construct as usize as u64),
            name: &class.name,
            symbol: None,
            label: THUNK,
            rank: 4,
        });
    }
}

/// A constructor for people: `game::Robot::Robot(int) (complete-object constructor)`, or
/// `the module's construct thunk for game::Robot`.
pub(crate) fn describe(name: &str, label: &str) -> String {
    if label == THUNK {
        format!("{THUNK} for {name} (`new (p) T`)")
    } else {
        format!("{} ({label})", super::demangle(name))
    }
}

/// The label of the module's construct thunk (`new (p) T`, usually with the constructor
/// inlined into it).
pub(crate) const THUNK: &str = "the module's construct thunk";

/// Whether a mangled function name is a constructor of some class (`A::B<int>::B(...)`),
/// read from the nested name without demangling (a call's callee is checked on every call).
pub(crate) fn is_constructor_symbol(name: &str) -> bool {
    constructor_marker(name).is_some()
}

/// Where the constructor name (`C1`, `C2`, `CI1`...) of a mangled constructor starts: the
/// text between `_ZN` and it is the class's key ([`class_key`]).
fn constructor_marker(name: &str) -> Option<usize> {
    let nested = name.strip_prefix("_ZN")?;
    let bytes = nested.as_bytes();
    let mut at = 0;
    // the cv- and ref-qualifiers of a member function
    while matches!(bytes.get(at), Some(b'r' | b'V' | b'K')) {
        at += 1;
    }
    if matches!(bytes.get(at), Some(b'R' | b'O')) {
        at += 1;
    }
    let mut components = 0;
    loop {
        let next = match bytes.get(at) {
            Some(c) if c.is_ascii_digit() => skip_source_name(bytes, at),
            Some(b'S') => skip_substitution(bytes, at),
            Some(b'I') if components > 0 => skip_template_arguments(bytes, at),
            Some(b'C') => {
                let constructor =
                    components > 0 && matches!(bytes.get(at + 1), Some(b'1' | b'2' | b'3' | b'I'));
                return constructor.then_some(3 + at);
            }
            _ => return None,
        };
        at = next?;
        components += 1;
    }
}

/// Past a `<source-name>` (length, then that many characters) at `at`.
fn skip_source_name(bytes: &[u8], at: usize) -> Option<usize> {
    let mut end = at;
    let mut length = 0usize;
    while let Some(&digit) = bytes.get(end).filter(|c| c.is_ascii_digit()) {
        length = length
            .checked_mul(10)?
            .checked_add(usize::from(digit - b'0'))?;
        end += 1;
    }
    let end = end.checked_add(length)?;
    (end <= bytes.len()).then_some(end)
}

/// Past a `<substitution>` at `at` (`St`, `Sa`, `S_`, `S3_`).
fn skip_substitution(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at + 1)? {
        c if c.is_ascii_lowercase() => Some(at + 2),
        _ => Some(at + 1 + bytes[at + 1..].iter().position(|&c| c == b'_')? + 1),
    }
}

/// Past `I <template-args> E` at `at`: openers and `E`s balanced, names and substitutions
/// skipped whole (a letter inside a name is not an opener).
fn skip_template_arguments(bytes: &[u8], mut at: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        let c = *bytes.get(at)?;
        at = match c {
            b'I' | b'N' | b'X' | b'J' | b'F' => {
                depth += 1;
                at + 1
            }
            b'E' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(at + 1);
                }
                at + 1
            }
            b'L' if bytes.get(at + 1) == Some(&b'_') => {
                depth += 1; // `L_Z <encoding> E`
                at + 3
            }
            b'L' => {
                // `L <builtin type> [n] <digits> E`: a literal, not a name
                let mut end = at + 2;
                while bytes
                    .get(end)
                    .is_some_and(|c| c.is_ascii_digit() || *c == b'n')
                {
                    end += 1;
                }
                (bytes.get(end) == Some(&b'E')).then_some(end + 1)?
            }
            b'0'..=b'9' => skip_source_name(bytes, at)?,
            b'S' => skip_substitution(bytes, at)?,
            b'T' | b'A' => at + 1 + bytes[at + 1..].iter().position(|&c| c == b'_')? + 1,
            _ => at + 1,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_keys_follow_the_type_name() {
        assert_eq!(class_key("N4game6PlayerE"), Some("4game6Player"));
        assert_eq!(class_key("6Player"), Some("6Player"));
        assert_eq!(class_key("N4game3BoxIiEE"), Some("4game3BoxIiE"));
        assert_eq!(class_key(""), None);
        let name = "_ZN4game6PlayerC1Ev";
        assert_eq!(&name[3..constructor_marker(name).unwrap()], "4game6Player");
    }

    #[test]
    fn constructor_kinds_are_read_from_the_mangling() {
        assert_eq!(constructor_kind("C1Ev").map(|k| k.0), Some(true));
        assert_eq!(constructor_kind("C2ERKS0_").map(|k| k.0), Some(false));
        assert_eq!(constructor_kind("C1IiEET_").map(|k| k.0), Some(true));
        assert_eq!(constructor_kind("CI1N2ns4BaseEEi").map(|k| k.0), Some(true));
        assert_eq!(constructor_kind("C2Ev.cold"), None);
        assert_eq!(constructor_kind("D1Ev"), None);
        assert_eq!(constructor_kind("5innerC1Ev"), None);
    }

    #[test]
    fn constructors_are_told_from_other_functions() {
        assert!(is_constructor_symbol("_ZN4game6PlayerC1Ev"));
        assert!(is_constructor_symbol("_ZN4game3BoxIiEC2Ei"));
        assert!(is_constructor_symbol(
            "_ZNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEC1EPKcRKS3_"
        ));
        assert!(!is_constructor_symbol("_ZN4game6PlayerD1Ev"));
        assert!(!is_constructor_symbol("_ZN4game6Player6updateEv"));
        assert!(!is_constructor_symbol("_Znwm"));
        assert!(!is_constructor_symbol("malloc"));
        assert!(is_constructor_symbol("_ZN3BoxILi4EEC2Ev"));
        assert!(is_constructor_symbol(
            "_ZNSt8functionIFivEEC2IZN2an11WithLibraryC4EvEUlvE_vvEEOT_"
        ));
        assert!(!is_constructor_symbol(
            "_ZNSt8functionIFivEE9_M_invokeERKSt9_Any_data"
        ));
        assert!(!is_constructor_symbol("_ZN4game3BoxIiE5valueEv"));
    }
}
