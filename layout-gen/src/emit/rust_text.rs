//! One class constant of the Rust tables written straight to text, character for character as
//! `prettyplease` lays out the tokens that [`super::rust`] builds with `quote`.
//!
//! Going through `syn` costs about 100 µs per class (it parses every literal as an expression);
//! writing the same text directly costs about 1 µs. The layout rules used here are the ones
//! `prettyplease` applies to these shapes: a struct literal wider than 34 columns is broken one
//! field per line, an array is broken one element per line when it does not fit on its line, and
//! a field's `key: value` never breaks. Wherever the outcome would depend on the exact line-width
//! arithmetic (a line within a few columns of the margin), on escaping (a string that is not
//! plain printable ASCII) or on array filling (a long list of integers), [`class_constant`]
//! declines and the caller formats that class through `syn` and `prettyplease` instead. Tests
//! compare both paths on every fixture and on random models.

use rehydrate::tables::{Access, BitField, ByteRange};

use super::text::{push, Piece, Spaces};
use crate::ir::ClassLayout;

/// `prettyplease` breaks a struct literal wider than this (its closing brace not counted), even
/// when it fits on the line.
const STRUCT_MAX_FLAT_WIDTH: usize = 34;
/// A line of at most this many columns certainly stays on one line (prettyplease's margin is 89).
const SURELY_FITS: usize = 84;
/// A line of at least this many columns is certainly broken.
const SURELY_BREAKS: usize = 95;

/// Appends the constant `ident` describing `class`, preceded by its doc comment, to `out`; or
/// returns `None` (having appended part of it) where the text would not certainly match
/// `prettyplease`.
pub(crate) fn class_constant(
    class: &ClassLayout,
    ident: &str,
    doc: &str,
    out: &mut String,
) -> Option<()> {
    let mut strings = std::iter::once(class.name.as_str())
        .chain(class.bases.iter().map(|b| b.name.as_str()))
        .chain(
            class
                .fields
                .iter()
                .flat_map(|f| [f.name.as_str(), f.owner.as_str(), f.type_name.as_str()]),
        );
    if !is_plain(doc) || doc.starts_with('/') || doc.ends_with(' ') || !strings.all(is_plain) {
        return None;
    }
    let mut out = Writer(out);
    out.unbreakable(&[&"///", &doc]);
    // No break is possible before the struct literal's first field.
    out.unbreakable(&[&"pub const ", &ident, &": ClassTable = ClassTable {"]);
    out.unbreakable(&[&"    name: \"", &class.name, &"\","]);
    out.line(4, &[&"size: ", &class.size, &","])?;
    out.line(4, &[&"align: ", &class.align, &","])?;
    out.line(4, &[&"is_dynamic: ", &class.is_dynamic, &","])?;
    out.line(4, &[&"is_abstract: ", &class.is_abstract, &","])?;
    out.line(
        4,
        &[
            &"has_dummy_constructor: ",
            &class.has_dummy_constructor,
            &",",
        ],
    )?;

    // Base and field entries are always wider than 34 columns, so always broken.
    out.open_list("bases", class.bases.is_empty());
    for base in &class.bases {
        out.unbreakable(&[&"        BaseEntry {"]);
        out.unbreakable(&[&"            name: \"", &base.name, &"\","]);
        out.line(12, &[&"offset: ", &base.offset, &","])?;
        out.line(12, &[&"is_virtual: ", &base.is_virtual, &","])?;
        out.unbreakable(&[&"        },"]);
    }
    out.close_list(class.bases.is_empty());

    out.open_list("fields", class.fields.is_empty());
    for field in &class.fields {
        out.unbreakable(&[&"        FieldEntry {"]);
        out.unbreakable(&[&"            name: \"", &field.name, &"\","]);
        out.unbreakable(&[&"            owner: \"", &field.owner, &"\","]);
        out.line(12, &[&"offset: ", &field.offset, &","])?;
        out.line(12, &[&"size: ", &field.size, &","])?;
        out.unbreakable(&[&"            type_name: \"", &field.type_name, &"\","]);
        out.line(12, &[&"access: Access::", &variant(field.access), &","])?;
        match field.bit_field {
            None => out.line(12, &[&"bit_field: None,"])?,
            Some(BitField {
                offset_bits,
                width_bits,
            }) => {
                out.line(12, &[&"bit_field: Some(BitField {"])?;
                out.line(16, &[&"offset_bits: ", &offset_bits, &","])?;
                out.line(16, &[&"width_bits: ", &width_bits, &","])?;
                out.line(12, &[&"}),"])?;
            }
        }
        out.unbreakable(&[&"        },"]);
    }
    out.close_list(class.fields.is_empty());

    // A list of integers that does not fit is filled several to a line: not modelled.
    out.line(4, &[&"vptr_offsets: &[", &List(&class.vptr_offsets), &"],"])?;

    let ranges = &class.padding;
    let each_flat = ranges.iter().all(struct_stays_flat);
    let flat_width = "padding: &[],".len()
        + ranges
            .iter()
            .map(|r| flat_range_width(r) + ", ".len())
            .sum::<usize>()
        - if ranges.is_empty() { 0 } else { ", ".len() };
    if each_flat && 4 + flat_width <= SURELY_FITS {
        out.line(4, &[&"padding: &[", &List(ranges), &"],"])?;
    } else if each_flat && 4 + flat_width < SURELY_BREAKS {
        return None;
    } else {
        out.line(4, &[&"padding: &["])?;
        for range in ranges {
            if struct_stays_flat(range) {
                out.line(8, &[&FlatRange(range), &","])?;
            } else {
                out.line(8, &[&"ByteRange {"])?;
                out.line(12, &[&"start: ", &range.start, &","])?;
                out.line(12, &[&"end: ", &range.end, &","])?;
                out.line(8, &[&"},"])?;
            }
        }
        out.line(4, &[&"],"])?;
    }

    out.line(4, &[&"layout_hash: ", &class.layout_hash, &","])?;
    out.line(0, &[&"};"])
}

/// The `Access` variant's name, as `{:?}` writes it.
fn variant(access: Access) -> &'static str {
    match access {
        Access::Public => "Public",
        Access::Protected => "Protected",
        Access::Private => "Private",
    }
}

/// The `CLASSES` slice naming every constant, preceded by its doc comment, or `None` where
/// the text would not certainly match `prettyplease`.
pub(crate) fn class_index(idents: &[&str]) -> Option<String> {
    const DOC: &str = "/// Every class described by this file, in selection order.\n";
    const START: &str = "pub static CLASSES: &[ClassTable] = &[";
    let flat_width =
        START.len() + idents.iter().map(|i| i.len() + ", ".len()).sum::<usize>() + "];".len()
            - if idents.is_empty() { 0 } else { ", ".len() };
    let mut out = String::with_capacity(DOC.len() + flat_width + 6 * idents.len());
    out.push_str(DOC);
    out.push_str(START);
    if flat_width <= SURELY_FITS {
        out.push_str(&idents.join(", "));
    } else if flat_width < SURELY_BREAKS {
        return None;
    } else {
        out.push('\n');
        for ident in idents {
            push!(&mut out, "    ", ident, ",\n");
        }
    }
    out.push_str("];\n");
    Some(out)
}

/// Appends lines.
struct Writer<'a>(&'a mut String);

impl Writer<'_> {
    /// A line with no place `prettyplease` could break it (a doc comment, a `key: "string",`
    /// field): written whatever its width.
    fn unbreakable(&mut self, pieces: &[&dyn Piece]) {
        pieces.iter().for_each(|piece| piece.push_to(self.0));
        self.0.push('\n');
    }

    /// A line `indent` columns in; `None` if it comes near the margin, where `prettyplease`
    /// might lay it out otherwise.
    fn line(&mut self, indent: usize, pieces: &[&dyn Piece]) -> Option<()> {
        let start = self.0.len();
        Spaces(indent).push_to(self.0);
        pieces.iter().for_each(|piece| piece.push_to(self.0));
        if self.0.len() - start > SURELY_FITS {
            return None;
        }
        self.0.push('\n');
        Some(())
    }

    fn open_list(&mut self, key: &str, empty: bool) {
        let brackets = if empty { "[]," } else { "[" };
        self.unbreakable(&[&"    ", &key, &": &", &brackets]);
    }

    fn close_list(&mut self, empty: bool) {
        if !empty {
            self.unbreakable(&[&"    ],"]);
        }
    }
}

/// `items` separated by `, `.
struct List<'a, T>(&'a [T]);

impl Piece for List<'_, u64> {
    fn push_to(&self, out: &mut String) {
        for (i, item) in self.0.iter().enumerate() {
            push!(out, if i == 0 { "" } else { ", " }, item);
        }
    }
}

impl Piece for List<'_, ByteRange> {
    fn push_to(&self, out: &mut String) {
        for (i, item) in self.0.iter().enumerate() {
            push!(out, if i == 0 { "" } else { ", " }, FlatRange(item));
        }
    }
}

/// `ByteRange { start: 12, end: 16 }`.
struct FlatRange<'a>(&'a ByteRange);

impl Piece for FlatRange<'_> {
    fn push_to(&self, out: &mut String) {
        push!(
            out,
            "ByteRange { start: ",
            self.0.start,
            ", end: ",
            self.0.end,
            " }"
        );
    }
}

fn flat_range_width(range: &ByteRange) -> usize {
    "ByteRange { start: , end:  }".len() + digits(range.start) + digits(range.end)
}

fn digits(value: u64) -> usize {
    value.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Whether `prettyplease` keeps `range` as a struct literal on one line.
fn struct_stays_flat(range: &ByteRange) -> bool {
    flat_range_width(range) - "}".len() <= STRUCT_MAX_FLAT_WIDTH
}

/// Printable ASCII without quote or backslash: spelled the same by every escaping rule.
fn is_plain(text: &str) -> bool {
    text.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}
