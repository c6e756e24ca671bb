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

use super::text::{push, Piece};
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
        .chain(class.bases.iter().map(|b| &*b.name))
        .chain(
            class
                .fields
                .iter()
                .flat_map(|f| [&*f.name, &*f.owner, &*f.type_name]),
        );
    if !is_plain(doc) || doc.starts_with('/') || doc.ends_with(' ') || !strings.all(is_plain) {
        return None;
    }
    let mut out = Writer(out);
    out.line_unchecked(&[&"///", &doc]);
    // No break is possible before the struct literal's first field.
    out.line_unchecked(&[&"pub const ", &ident, &": ClassTable = ClassTable {"]);
    out.string("    name: ", &class.name);
    out.value("    size: ", class.size)?;
    out.value("    align: ", class.align)?;
    out.value("    is_dynamic: ", class.is_dynamic)?;
    out.value("    is_abstract: ", class.is_abstract)?;
    out.value("    has_dummy_constructor: ", class.has_dummy_constructor)?;

    // Base and field entries are always wider than 34 columns, so always broken.
    out.open_list("    bases: &", class.bases.is_empty());
    for base in &class.bases {
        out.fixed("        BaseEntry {");
        out.string("            name: ", &base.name);
        out.value("            offset: ", base.offset)?;
        out.value("            is_virtual: ", base.is_virtual)?;
        out.fixed("        },");
    }
    out.close_list(class.bases.is_empty());

    out.open_list("    fields: &", class.fields.is_empty());
    for field in &class.fields {
        out.fixed("        FieldEntry {");
        out.string("            name: ", &field.name);
        out.string("            owner: ", &field.owner);
        out.value("            offset: ", field.offset)?;
        out.value("            size: ", field.size)?;
        out.string("            type_name: ", &field.type_name);
        out.fixed(match field.access {
            Access::Public => "            access: Access::Public,",
            Access::Protected => "            access: Access::Protected,",
            Access::Private => "            access: Access::Private,",
        });
        match field.bit_field {
            None => out.fixed("            bit_field: None,"),
            Some(BitField {
                offset_bits,
                width_bits,
            }) => {
                out.fixed("            bit_field: Some(BitField {");
                out.value("                offset_bits: ", offset_bits)?;
                out.value("                width_bits: ", width_bits)?;
                out.fixed("            }),");
            }
        }
        out.fixed("        },");
    }
    out.close_list(class.fields.is_empty());

    // A list of integers that does not fit is filled several to a line: not modelled.
    out.line(&[&"    vptr_offsets: &[", &List(&class.vptr_offsets), &"],"])?;

    let ranges = &class.padding;
    let each_flat = ranges.iter().all(struct_stays_flat);
    let flat_width = "padding: &[],".len()
        + ranges
            .iter()
            .map(|r| flat_range_width(r) + ", ".len())
            .sum::<usize>()
        - if ranges.is_empty() { 0 } else { ", ".len() };
    if each_flat && 4 + flat_width <= SURELY_FITS {
        out.line(&[&"    padding: &[", &List(ranges), &"],"])?;
    } else if each_flat && 4 + flat_width < SURELY_BREAKS {
        return None;
    } else {
        out.fixed("    padding: &[");
        for range in ranges {
            if struct_stays_flat(range) {
                out.line(&[&"        ", &FlatRange(range), &","])?;
            } else {
                out.fixed("        ByteRange {");
                out.value("            start: ", range.start)?;
                out.value("            end: ", range.end)?;
                out.fixed("        },");
            }
        }
        out.fixed("    ],");
    }

    out.value("    layout_hash: ", class.layout_hash)?;
    out.fixed("};");
    Some(())
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

/// Appends lines, each given with its indentation.
struct Writer<'a>(&'a mut String);

impl Writer<'_> {
    /// A line of fixed text, short enough never to come near the margin.
    fn fixed(&mut self, line: &str) {
        debug_assert!(line.len() <= SURELY_FITS);
        self.0.push_str(line);
        self.0.push('\n');
    }

    /// `key"value",`: a string field, which `prettyplease` never breaks whatever its width.
    fn string(&mut self, key: &str, value: &str) {
        self.line_unchecked(&[&key, &'"', &value, &"\","]);
    }

    /// `key value,`; `None` if it comes near the margin.
    fn value(&mut self, key: &str, value: impl Piece) -> Option<()> {
        self.line(&[&key, &value, &","])
    }

    /// A line with no place `prettyplease` could break it (a doc comment, the constant's first
    /// line): written whatever its width.
    fn line_unchecked(&mut self, pieces: &[&dyn Piece]) {
        pieces.iter().for_each(|piece| piece.push_to(self.0));
        self.0.push('\n');
    }

    /// A line; `None` if it comes near the margin, where `prettyplease` might lay it out
    /// otherwise.
    fn line(&mut self, pieces: &[&dyn Piece]) -> Option<()> {
        let start = self.0.len();
        pieces.iter().for_each(|piece| piece.push_to(self.0));
        if self.0.len() - start > SURELY_FITS {
            return None;
        }
        self.0.push('\n');
        Some(())
    }

    /// `key[],` for an empty list, `key[` to open one.
    fn open_list(&mut self, key: &str, empty: bool) {
        let brackets = if empty { "[]," } else { "[" };
        self.line_unchecked(&[&key, &brackets]);
    }

    fn close_list(&mut self, empty: bool) {
        if !empty {
            self.fixed("    ],");
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
