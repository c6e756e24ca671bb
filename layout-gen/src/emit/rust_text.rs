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

use std::fmt::{self, Write as _};

use rehydrate::tables::{BitField, ByteRange};

use crate::ir::ClassLayout;

/// `prettyplease` breaks a struct literal wider than this (its closing brace not counted), even
/// when it fits on the line.
const STRUCT_MAX_FLAT_WIDTH: usize = 34;
/// A line of at most this many columns certainly stays on one line (prettyplease's margin is 89).
const SURELY_FITS: usize = 84;
/// A line of at least this many columns is certainly broken.
const SURELY_BREAKS: usize = 95;

/// The constant `ident` describing `class`, preceded by its doc comment, or `None` where the
/// text would not certainly match `prettyplease`.
pub(crate) fn class_constant(class: &ClassLayout, ident: &str, doc: &str) -> Option<String> {
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
    let mut out = Writer(String::with_capacity(256 + 320 * class.fields.len()));
    out.unbreakable(format_args!("///{doc}"));
    // No break is possible before the struct literal's first field.
    out.unbreakable(format_args!(
        "pub const {ident}: ClassTable = ClassTable {{"
    ));
    out.unbreakable(format_args!("    name: \"{}\",", class.name));
    out.line(4, format_args!("size: {},", class.size))?;
    out.line(4, format_args!("align: {},", class.align))?;
    out.line(4, format_args!("is_dynamic: {},", class.is_dynamic))?;
    out.line(4, format_args!("is_abstract: {},", class.is_abstract))?;
    out.line(
        4,
        format_args!("has_dummy_constructor: {},", class.has_dummy_constructor),
    )?;

    // Base and field entries are always wider than 34 columns, so always broken.
    out.open_list("bases", class.bases.is_empty());
    for base in &class.bases {
        out.unbreakable(format_args!("        BaseEntry {{"));
        out.unbreakable(format_args!("            name: \"{}\",", base.name));
        out.line(12, format_args!("offset: {},", base.offset))?;
        out.line(12, format_args!("is_virtual: {},", base.is_virtual))?;
        out.unbreakable(format_args!("        }},"));
    }
    out.close_list(class.bases.is_empty());

    out.open_list("fields", class.fields.is_empty());
    for field in &class.fields {
        out.unbreakable(format_args!("        FieldEntry {{"));
        out.unbreakable(format_args!("            name: \"{}\",", field.name));
        out.unbreakable(format_args!("            owner: \"{}\",", field.owner));
        out.line(12, format_args!("offset: {},", field.offset))?;
        out.line(12, format_args!("size: {},", field.size))?;
        out.unbreakable(format_args!(
            "            type_name: \"{}\",",
            field.type_name
        ));
        out.line(12, format_args!("access: Access::{:?},", field.access))?;
        match field.bit_field {
            None => out.line(12, format_args!("bit_field: None,"))?,
            Some(BitField {
                offset_bits,
                width_bits,
            }) => {
                out.line(12, format_args!("bit_field: Some(BitField {{"))?;
                out.line(16, format_args!("offset_bits: {offset_bits},"))?;
                out.line(16, format_args!("width_bits: {width_bits},"))?;
                out.line(12, format_args!("}}),"))?;
            }
        }
        out.unbreakable(format_args!("        }},"));
    }
    out.close_list(class.fields.is_empty());

    // A list of integers that does not fit is filled several to a line: not modelled.
    out.line(
        4,
        format_args!("vptr_offsets: &[{}],", List(&class.vptr_offsets)),
    )?;

    let ranges = &class.padding;
    let each_flat = ranges.iter().all(struct_stays_flat);
    let flat_width = "padding: &[],".len()
        + ranges
            .iter()
            .map(|r| flat_range_width(r) + ", ".len())
            .sum::<usize>()
        - if ranges.is_empty() { 0 } else { ", ".len() };
    if each_flat && 4 + flat_width <= SURELY_FITS {
        out.line(4, format_args!("padding: &[{}],", List(ranges)))?;
    } else if each_flat && 4 + flat_width < SURELY_BREAKS {
        return None;
    } else {
        out.line(4, format_args!("padding: &["))?;
        for range in ranges {
            if struct_stays_flat(range) {
                out.line(8, format_args!("{},", FlatRange(range)))?;
            } else {
                out.line(8, format_args!("ByteRange {{"))?;
                out.line(12, format_args!("start: {},", range.start))?;
                out.line(12, format_args!("end: {},", range.end))?;
                out.line(8, format_args!("}},"))?;
            }
        }
        out.line(4, format_args!("],"))?;
    }

    out.line(4, format_args!("layout_hash: {},", class.layout_hash))?;
    out.line(0, format_args!("}};"))?;
    Some(out.0)
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
            let _ = writeln!(out, "    {ident},");
        }
    }
    out.push_str("];\n");
    Some(out)
}

/// Accumulates lines.
struct Writer(String);

impl Writer {
    /// A line with no place `prettyplease` could break it (a doc comment, a `key: "string",`
    /// field): written whatever its width.
    fn unbreakable(&mut self, line: fmt::Arguments<'_>) {
        let _ = self.0.write_fmt(line);
        self.0.push('\n');
    }

    /// A line `indent` columns in; `None` if it comes near the margin, where `prettyplease`
    /// might lay it out otherwise.
    fn line(&mut self, indent: usize, text: fmt::Arguments<'_>) -> Option<()> {
        let start = self.0.len();
        let _ = write!(self.0, "{:indent$}{text}", "");
        if self.0.len() - start > SURELY_FITS {
            return None;
        }
        self.0.push('\n');
        Some(())
    }

    fn open_list(&mut self, key: &str, empty: bool) {
        let brackets = if empty { "[]," } else { "[" };
        self.unbreakable(format_args!("    {key}: &{brackets}"));
    }

    fn close_list(&mut self, empty: bool) {
        if !empty {
            self.unbreakable(format_args!("    ],"));
        }
    }
}

/// `items` separated by `, `.
struct List<'a, T>(&'a [T]);

impl fmt::Display for List<'_, u64> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}

impl fmt::Display for List<'_, ByteRange> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", FlatRange(item))?;
        }
        Ok(())
    }
}

/// `ByteRange { start: 12, end: 16 }`.
struct FlatRange<'a>(&'a ByteRange);

impl fmt::Display for FlatRange<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ByteRange {{ start: {}, end: {} }}",
            self.0.start, self.0.end
        )
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
