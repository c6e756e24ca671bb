//! Which functions of a build construct a class: its complete-object (`C1`, `CI1`) and
//! base-object (`C2`, `CI2`) constructors, found by mangled name in the full symbol table,
//! whatever their parameters; and the module's own construct thunk (`new (p) T`, with the
//! constructor usually inlined into it) for classes whose constructors were all inlined.

use super::value::Word;
use crate::module::ModuleClass;
use crate::relocation::BuildImage;

/// A function to analyse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// Absolute address, complemented (the runtime's memory must not look like references
    /// into a build).
    address: Word,
    /// For people: the demangled name and which kind of constructor it is.
    pub description: String,
}

impl Candidate {
    pub fn address(&self) -> u64 {
        self.address.get()
    }
}

/// The mangled prefix every constructor of the class with this `typeid(T).name()` starts
/// with: `N4game6PlayerE` -> `_ZN4game6Player`, `6Player` -> `_ZN6Player`.
pub(crate) fn constructor_prefix(type_id_name: &str) -> Option<String> {
    if type_id_name.is_empty() {
        return None;
    }
    match type_id_name.strip_prefix('N') {
        Some(nested) => Some(format!("_ZN{}", nested.strip_suffix('E')?)),
        None => Some(format!("_ZN{type_id_name}")),
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
pub(crate) fn candidates(class: &ModuleClass, build: &BuildImage) -> Vec<Candidate> {
    let base = build.base() as u64;
    let mut found: Vec<(u8, Candidate)> = Vec::new();
    if let Some(prefix) = constructor_prefix(&class.type_id_name) {
        let vtt_name = vtt_symbol(&class.type_id_name);
        let has_vtt = build.index().symbols().iter().any(|s| *s.name == *vtt_name);
        for symbol in build
            .index()
            .symbols()
            .iter()
            .filter(|s| s.is_function && s.size > 0)
        {
            let Some(rest) = symbol.name.strip_prefix(prefix.as_str()) else {
                continue;
            };
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
            found.push((
                rank,
                Candidate {
                    address: Word::new(base + symbol.start),
                    description: format!("{} ({label})", symbol.demangled()),
                },
            ));
        }
    }
    found.sort_by_key(|(rank, c)| (*rank, c.address()));
    let mut candidates: Vec<Candidate> = Vec::new();
    for (_, candidate) in found {
        if !candidates.iter().any(|c| c.address == candidate.address) {
            candidates.push(candidate);
        }
    }
    if let Some(construct) = class.construct {
        candidates.push(Candidate {
            address: Word::new(construct as usize as u64),
            description: format!(
                "the module's construct thunk for {} (`new (p) T`)",
                class.name
            ),
        });
    }
    candidates
}

/// The VTT symbol of the class with this type name: `_ZTT` + the type's mangling.
fn vtt_symbol(type_id_name: &str) -> String {
    format!("_ZTT{type_id_name}")
}

/// Whether a mangled function name is a constructor of some class (`A::B<int>::B(...)`).
pub(crate) fn is_constructor_symbol(name: &str) -> bool {
    if !name.starts_with("_ZN") {
        return false;
    }
    let Ok(symbol) = cpp_demangle::Symbol::new(name.as_bytes()) else {
        return false;
    };
    let text = symbol.to_string();
    let head = top_level_before(&text, '(').unwrap_or(&text);
    let parts = split_top_level(head);
    match parts.as_slice() {
        [.., class, function] => bare(class) == bare(function) && !function.starts_with('~'),
        _ => false,
    }
}

/// The text before the first `stop` outside template arguments.
fn top_level_before(text: &str, stop: char) -> Option<&str> {
    let mut depth = 0i32;
    for (at, c) in text.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            c if c == stop && depth == 0 => return Some(&text[..at]),
            _ => {}
        }
    }
    None
}

/// `a::B<x::y>::B` -> [`a`, `B<x::y>`, `B`].
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'<' => depth += 1,
            b'>' => depth -= 1,
            b':' if depth == 0 && bytes.get(at + 1) == Some(&b':') => {
                parts.push(&text[start..at]);
                start = at + 2;
                at += 1;
            }
            _ => {}
        }
        at += 1;
    }
    parts.push(&text[start..]);
    parts
}

/// A name without template arguments and ABI tags.
fn bare(name: &str) -> &str {
    let end = name.find(['<', '[']).unwrap_or(name.len());
    name[..end].trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_follow_the_type_name() {
        assert_eq!(
            constructor_prefix("N4game6PlayerE").as_deref(),
            Some("_ZN4game6Player")
        );
        assert_eq!(constructor_prefix("6Player").as_deref(), Some("_ZN6Player"));
        assert_eq!(
            constructor_prefix("N4game3BoxIiEE").as_deref(),
            Some("_ZN4game3BoxIiE")
        );
        assert_eq!(constructor_prefix(""), None);
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
    }
}
