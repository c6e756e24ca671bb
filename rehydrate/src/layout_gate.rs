//! The layout gate of a reload: whether a class's live objects can be kept, decided by comparing
//! the old and the new build's descriptions of the class exactly (size, alignment, every field's
//! name, owner, type, offset, size and bits, every base subobject, every vptr slot).
//!
//! The layout hash both builds carry is only a quick check (host tables against the module);
//! two different layouts are never taken as equal because their hashes agree.

use std::collections::HashMap;

use crate::module::{LoadedModule, ModuleBase, ModuleClass, ModuleField};

/// The classes both modules describe whose layouts differ, by mangled type name (what
/// follows `_ZTV` in their vtable's symbol): their changes, for people. Objects of these
/// classes that the runtime does not track cannot be kept: their vptrs are not re-pointed,
/// and globals holding one start fresh.
pub(crate) fn changed_layouts(old: &LoadedModule, new: &LoadedModule) -> HashMap<String, String> {
    old.classes
        .iter()
        .filter(|class| !class.type_id_name.is_empty())
        .filter_map(|class| {
            let changes = layout_changes(class, new.class(&class.name)?);
            (!changes.is_empty()).then(|| (class.type_id_name.clone(), changes.join(", ")))
        })
        .collect()
}

/// Every difference between two builds' layouts of one class, for people to read; empty when
/// the layouts are identical.
pub(crate) fn layout_changes(old: &ModuleClass, new: &ModuleClass) -> Vec<String> {
    let mut changes = Vec::new();
    if old.size != new.size {
        changes.push(format!("size {} -> {}", old.size, new.size));
    }
    if old.align != new.align {
        changes.push(format!("alignment {} -> {}", old.align, new.align));
    }
    for field in &old.fields {
        match new.fields.iter().find(|f| f.same_member(field)) {
            Some(now) if now != field => changes.push(format!(
                "field {}: {} -> {}",
                field.qualified(),
                field.placement(),
                now.placement()
            )),
            Some(_) => {}
            None => changes.push(format!(
                "field {} ({}) removed",
                field.qualified(),
                field.placement()
            )),
        }
    }
    for field in &new.fields {
        if !old.fields.iter().any(|f| f.same_member(field)) {
            changes.push(format!(
                "field {} added ({})",
                field.qualified(),
                field.placement()
            ));
        }
    }
    if old.fields.len() == new.fields.len() && changes.is_empty() && old.fields != new.fields {
        changes.push("the fields are in another order".to_string());
    }
    if old.bases != new.bases {
        changes.push(format!(
            "bases [{}] -> [{}]",
            describe_bases(&old.bases),
            describe_bases(&new.bases)
        ));
    }
    if old.vptr_offsets != new.vptr_offsets {
        changes.push(format!(
            "vptr slots {:?} -> {:?}",
            old.vptr_offsets, new.vptr_offsets
        ));
    }
    changes
}

fn describe_bases(bases: &[ModuleBase]) -> String {
    bases
        .iter()
        .map(|b| {
            let kind = if b.is_virtual { "virtual " } else { "" };
            format!("{kind}{} at {}", b.name, b.offset)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl ModuleField {
    /// Whether `other` is the same declared member (same owner and name), wherever it lies.
    fn same_member(&self, other: &ModuleField) -> bool {
        self.owner == other.owner && self.name == other.name
    }

    /// `int at bytes 8..12` (or `unsigned int:3 at bit 66`).
    fn placement(&self) -> String {
        match self.bits {
            Some((offset_bits, width)) => {
                format!("{}:{width} at bit {offset_bits}", self.type_name)
            }
            None => format!("{} at bytes {:?}", self.type_name, self.byte_range()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn field(name: &str, type_name: &str, offset: usize, size: usize) -> ModuleField {
        ModuleField {
            name: name.into(),
            owner: "ns::A".into(),
            type_name: type_name.into(),
            offset,
            size,
            bits: None,
        }
    }

    fn class(fields: Vec<ModuleField>, bases: Vec<ModuleBase>, vptrs: Vec<usize>) -> ModuleClass {
        ModuleClass {
            type_id_name: String::new(),
            name: Arc::from("ns::A"),
            size: 32,
            align: 8,
            placement: crate::image::Placement::of(32, &fields, &vptrs),
            fields,
            bases,
            vptr_offsets: vptrs,
            construct: None,
            destroy: None,
            measure_bases: None,
        }
    }

    fn base(name: &str, offset: usize, is_virtual: bool) -> ModuleBase {
        ModuleBase {
            name: name.into(),
            offset,
            is_virtual,
        }
    }

    #[test]
    fn identical_layouts_have_no_changes() {
        let a = class(
            vec![field("x", "int", 8, 4)],
            vec![base("B", 0, false)],
            vec![0],
        );
        assert!(layout_changes(&a, &a.clone()).is_empty());
    }

    #[test]
    fn every_kind_of_difference_is_named() {
        let old = class(
            vec![field("x", "int", 8, 4), field("y", "float", 12, 4)],
            vec![base("B", 0, false)],
            vec![0],
        );
        let cases: Vec<(ModuleClass, &str)> = vec![
            (
                class(
                    vec![field("x", "float", 8, 4), field("y", "float", 12, 4)],
                    old.bases.clone(),
                    vec![0],
                ),
                "field ns::A::x: int at bytes 8..12 -> float at bytes 8..12",
            ),
            (
                class(
                    vec![field("x", "int", 16, 4), field("y", "float", 12, 4)],
                    old.bases.clone(),
                    vec![0],
                ),
                "field ns::A::x: int at bytes 8..12 -> int at bytes 16..20",
            ),
            (
                class(vec![field("x", "int", 8, 4)], old.bases.clone(), vec![0]),
                "field ns::A::y (float at bytes 12..16) removed",
            ),
            (
                class(
                    vec![
                        field("x", "int", 8, 4),
                        field("y", "float", 12, 4),
                        field("z", "char", 16, 1),
                    ],
                    old.bases.clone(),
                    vec![0],
                ),
                "field ns::A::z added (char at bytes 16..17)",
            ),
            (
                class(old.fields.clone(), vec![base("B", 0, true)], vec![0]),
                "bases [B at 0] -> [virtual B at 0]",
            ),
            (
                class(old.fields.clone(), old.bases.clone(), vec![0, 16]),
                "vptr slots [0] -> [0, 16]",
            ),
            (
                class(
                    vec![field("y", "float", 12, 4), field("x", "int", 8, 4)],
                    old.bases.clone(),
                    vec![0],
                ),
                "the fields are in another order",
            ),
        ];
        for (new, expected) in cases {
            let changes = layout_changes(&old, &new);
            assert_eq!(changes, vec![expected.to_string()]);
        }
        let mut resized = old.clone();
        resized.size = 40;
        resized.align = 16;
        assert_eq!(
            layout_changes(&old, &resized),
            vec!["size 32 -> 40".to_string(), "alignment 8 -> 16".to_string()]
        );
    }
}
