//! The layout model: what every emitter reads. One [`ClassLayout`] per selected class, with
//! everything at absolute offsets in the complete object.
//!
//! Built from [`crate::facts`] (what clang said) and [`crate::itanium`] (where the bases go);
//! nothing here knows about libclang, and emitters know nothing else.

use std::collections::BTreeSet;
use std::sync::Arc;

use rehydrate::tables::{Access, BitField, ByteRange};

use crate::error::Error;
use crate::facts::{AstFacts, MemberKind, SourcePos};
use crate::itanium::{Layouts, POINTER_SIZE};

/// Every selected class, in selection order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LayoutModel {
    /// The classes.
    pub classes: Vec<ClassLayout>,
    /// Classes the selection reached (by namespace, annotation or default) that cannot be
    /// described, with the reason; they are left out of the tables and the shim. A class named
    /// in the request is never skipped: it fails the request instead.
    pub skipped: Vec<SkippedClass>,
}

/// A selected class left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedClass {
    /// Qualified name.
    pub name: String,
    /// What layout-gen could not do, naming the member or base and its type.
    pub reason: String,
}

/// One class as a complete object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassLayout {
    /// Qualified name as clang spells it.
    pub name: String,
    /// Where the class is defined.
    pub pos: SourcePos,
    /// `sizeof`.
    pub size: u64,
    /// `alignof`.
    pub align: u64,
    /// Has at least one vptr.
    pub is_dynamic: bool,
    /// Has a pure virtual function.
    pub is_abstract: bool,
    /// `new (p) T` can build a dummy.
    pub has_dummy_constructor: bool,
    /// `p->~T()` is accessible.
    pub is_destructible: bool,
    /// Every base subobject: non-virtual ones at every depth, each virtual base once.
    pub bases: Vec<BaseSubobject>,
    /// Every data member of the class and its base subobjects, by ascending bit offset.
    pub fields: Vec<FieldLayout>,
    /// Every vptr slot, ascending, members and array elements included.
    pub vptr_offsets: Vec<u64>,
    /// Bytes covered by no field and no vptr.
    pub padding: Vec<ByteRange>,
    /// [`rehydrate::tables::layout_hash`] of this layout.
    pub layout_hash: u64,
}

/// A base-class subobject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseSubobject {
    /// Qualified name of the base class.
    pub name: Arc<str>,
    /// Absolute offset.
    pub offset: u64,
    /// A virtual base.
    pub is_virtual: bool,
    /// Classes to `static_cast` through, from the complete object to this subobject (a virtual
    /// base is always reached directly from the complete object).
    pub path: Vec<Arc<str>>,
}

/// A data member at its absolute position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldLayout {
    /// Member name.
    pub name: Arc<str>,
    /// Qualified name of the declaring class.
    pub owner: Arc<str>,
    /// Offset of the subobject of `owner` that holds this member.
    pub owner_offset: u64,
    /// That subobject is a virtual base or lies inside one.
    pub owner_in_virtual_base: bool,
    /// Absolute byte offset (a bit-field: the byte holding its first bit).
    pub offset: u64,
    /// `sizeof` the member's type.
    pub size: u64,
    /// The member's type as written.
    pub type_name: Arc<str>,
    /// Access in the owner.
    pub access: Access,
    /// Bit position of a bit-field.
    pub bit_field: Option<BitField>,
    /// Reached through an anonymous union or struct.
    pub in_anonymous: bool,
    /// The member's type could not be laid out (libclang 19 does not show the bases of some
    /// template instantiations, as in most standard-library types): its offset and size are
    /// clang's, the vptr slots listed inside it are the ones its visible declarations show, and
    /// a vptr could be inside it elsewhere too.
    pub opaque: bool,
}

impl FieldLayout {
    /// Bytes the member occupies.
    pub fn byte_range(&self) -> ByteRange {
        ByteRange::of_member(self.offset, self.size, self.bit_field)
    }
}

impl ClassLayout {
    /// Total padding bytes.
    pub fn padding_bytes(&self) -> u64 {
        self.padding.iter().map(ByteRange::len).sum()
    }
}

/// Builds the model for every selected class, in runs of classes on every available core (each
/// run places the bases it needs itself); the first error in selection order wins.
///
/// A class that cannot be described fails the build when the request names it, and is skipped
/// with a warning (and listed in [`LayoutModel::skipped`]) otherwise.
pub(crate) fn build(facts: &AstFacts) -> Result<LayoutModel, Error> {
    let runs = crate::runs::map_runs(&facts.selected, crate::runs::workers(), |names| {
        let mut layouts = Layouts::new(facts);
        names
            .iter()
            .map(|name| (name.clone(), class_layout(&mut layouts, name)))
            .collect::<Vec<_>>()
    });
    let mut model = LayoutModel {
        classes: Vec::with_capacity(facts.selected.len()),
        skipped: facts
            .unnameable
            .iter()
            .map(|(name, reason)| SkippedClass {
                name: name.clone(),
                reason: reason.clone(),
            })
            .collect(),
    };
    for (name, result) in runs.into_iter().flatten() {
        match result {
            Ok(class) => model.classes.push(class),
            Err(error) if facts.selected_by_name.contains(&name) => return Err(error),
            Err(error) => {
                tracing::warn!(class = %name, %error, "skipped: it cannot be described");
                model.skipped.push(SkippedClass {
                    name: name.to_string(),
                    reason: error.to_string(),
                });
            }
        }
    }
    Ok(model)
}

fn class_layout(layouts: &mut Layouts<'_>, name: &str) -> Result<ClassLayout, Error> {
    let record = layouts.facts(name);
    let layout = layouts.get(name)?;
    if let Some(reason) = &layout.opaque {
        return Err(Error::IncompleteType {
            class: name.to_string(),
            reason: reason.clone(),
        });
    }

    let mut bases = Vec::new();
    non_virtual_bases(layouts, name, 0, &[], &mut bases)?;
    let mut virtual_bases: Vec<(Arc<str>, u64)> = layout
        .vbase_offsets
        .iter()
        .map(|(b, o)| (b.clone(), *o))
        .collect();
    virtual_bases.sort_by_key(|(_, offset)| *offset);
    for (base, offset) in virtual_bases {
        let path = vec![base.clone()];
        bases.push(BaseSubobject {
            name: base.clone(),
            offset,
            is_virtual: true,
            path: path.clone(),
        });
        non_virtual_bases(layouts, &base, offset, &path, &mut bases)?;
    }

    // Fields of the complete object and of each base subobject.
    let mut fields = Vec::new();
    let mut vptrs = BTreeSet::new();
    let owners = std::iter::once((record.name.clone(), 0, false)).chain(bases.iter().map(|b| {
        (
            b.name.clone(),
            b.offset,
            b.is_virtual || is_inside_virtual(&bases, b),
        )
    }));
    for (owner, owner_offset, owner_in_virtual_base) in owners {
        if layouts.get(&owner)?.is_dynamic {
            vptrs.insert(owner_offset);
        }
        for field in &layouts.facts(&owner).fields {
            let bit_offset = owner_offset * 8 + field.offset_bits;
            let opaque = member_vptrs(layouts, &field.kind, bit_offset / 8, &mut vptrs)?;
            fields.push(FieldLayout {
                name: field.name.clone(),
                owner: owner.clone(),
                owner_offset,
                owner_in_virtual_base,
                offset: bit_offset / 8,
                size: field.size,
                type_name: field.type_name.clone(),
                access: field.access,
                bit_field: field.bit_width.map(|width_bits| BitField {
                    offset_bits: bit_offset,
                    width_bits,
                }),
                in_anonymous: field.in_anonymous,
                opaque,
            });
        }
    }
    fields.sort_by_key(|f| f.bit_field.map_or(f.offset * 8, |b| b.offset_bits));
    let vptr_offsets: Vec<u64> = vptrs.into_iter().collect();
    let padding = padding(record.size, &fields, &vptr_offsets);

    let hash_bases: Vec<_> = bases
        .iter()
        .map(|b| (&*b.name, b.offset, b.is_virtual))
        .collect();
    let hash_fields: Vec<_> = fields
        .iter()
        .map(|f| {
            (
                &*f.name,
                &*f.owner,
                &*f.type_name,
                f.offset,
                f.size,
                f.bit_field.map(|b| (b.offset_bits, b.width_bits)),
            )
        })
        .collect();
    let layout_hash = rehydrate::tables::layout_hash(
        name,
        record.size,
        record.align,
        &hash_bases,
        &hash_fields,
        &vptr_offsets,
    );

    Ok(ClassLayout {
        name: name.to_string(),
        pos: record.pos.clone(),
        size: record.size,
        align: record.align,
        is_dynamic: layout.is_dynamic,
        is_abstract: record.is_abstract,
        has_dummy_constructor: record.has_dummy_constructor,
        is_destructible: record.is_destructible,
        bases,
        fields,
        vptr_offsets,
        padding,
        layout_hash,
    })
}

/// Whether a non-virtual base subobject lies inside a virtual base (its path starts at one).
fn is_inside_virtual(bases: &[BaseSubobject], base: &BaseSubobject) -> bool {
    bases
        .iter()
        .any(|b| b.is_virtual && base.path.first() == Some(&b.name))
}

fn non_virtual_bases(
    layouts: &mut Layouts<'_>,
    class: &str,
    offset: u64,
    path: &[Arc<str>],
    out: &mut Vec<BaseSubobject>,
) -> Result<(), Error> {
    let layout = layouts.get(class)?;
    for base in &layouts.facts(class).bases {
        if base.is_virtual {
            continue;
        }
        let base_offset = offset + layout.base_offsets[&*base.record];
        let mut base_path = path.to_vec();
        base_path.push(base.record.clone());
        out.push(BaseSubobject {
            name: base.record.clone(),
            offset: base_offset,
            is_virtual: false,
            path: base_path.clone(),
        });
        non_virtual_bases(layouts, &base.record, base_offset, &base_path, out)?;
    }
    Ok(())
}

/// Vptrs of the class-type objects a member at `offset` holds: the member itself, or each
/// element of a member array (whose class is laid out once, not once per element). Returns
/// whether the member is opaque (its class could not be laid out: only the vptrs its visible
/// declarations show are added).
fn member_vptrs(
    layouts: &mut Layouts<'_>,
    kind: &MemberKind,
    offset: u64,
    out: &mut BTreeSet<u64>,
) -> Result<bool, Error> {
    let (class, count, stride) = match kind {
        MemberKind::Plain => return Ok(false),
        MemberKind::Opaque => return Ok(true),
        MemberKind::Record(record) => (record, 1, 0),
        MemberKind::RecordArray {
            element,
            count,
            element_size,
        } => (element, *count, *element_size),
    };
    let mut element_vptrs = BTreeSet::new();
    let opaque = object_vptrs(layouts, class, 0, &mut element_vptrs)?;
    for index in 0..count {
        let at = offset + index * stride;
        out.extend(element_vptrs.iter().map(|v| v + at));
    }
    Ok(opaque)
}

/// Vptrs of a complete object of `class` at `offset`; for a class that cannot be laid out, the
/// ones its own declarations and its members show, and `true`.
fn object_vptrs(
    layouts: &mut Layouts<'_>,
    class: &str,
    offset: u64,
    out: &mut BTreeSet<u64>,
) -> Result<bool, Error> {
    if layouts.get(class)?.opaque.is_none() {
        let nested = class_layout(layouts, class)?;
        out.extend(nested.vptr_offsets.iter().map(|v| v + offset));
        return Ok(false);
    }
    let facts = layouts.facts(class);
    if facts.declares_virtual_methods || facts.unknown_base_is_dynamic {
        out.insert(offset); // a dynamic class has its vptr at 0
    }
    for field in &facts.fields {
        if field.bit_width.is_none() {
            member_vptrs(layouts, &field.kind, offset + field.offset_bits / 8, out)?;
        }
    }
    Ok(true)
}

fn padding(size: u64, fields: &[FieldLayout], vptrs: &[u64]) -> Vec<ByteRange> {
    let mut covered = vec![false; size as usize];
    let ranges = fields
        .iter()
        .map(FieldLayout::byte_range)
        .chain(vptrs.iter().map(|&v| ByteRange {
            start: v,
            end: v + POINTER_SIZE,
        }));
    for range in ranges {
        for byte in range.start..range.end.min(size) {
            covered[byte as usize] = true;
        }
    }
    let mut holes = Vec::new();
    let mut start = None;
    for (byte, &is_covered) in covered.iter().enumerate() {
        match (is_covered, start) {
            (false, None) => start = Some(byte as u64),
            (true, Some(s)) => {
                holes.push(ByteRange {
                    start: s,
                    end: byte as u64,
                });
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        holes.push(ByteRange {
            start: s,
            end: size,
        });
    }
    holes
}
