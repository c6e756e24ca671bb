//! Human-readable and JSON views of a [`LayoutModel`], for `layout-gen inspect`.
//!
//! The text view lists every byte range of a class in offset order: vptrs, base subobjects,
//! fields (with the class that declares them) and padding holes, then totals. Unlike pahole it
//! places virtual bases where the compiler does.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::ir::{ClassLayout, LayoutModel};

/// The model as the documented JSON document (`{"classes": [...]}`).
pub fn json(model: &LayoutModel) -> Value {
    let skipped: Vec<Value> = model
        .skipped
        .iter()
        .map(|s| json!({"name": s.name, "reason": s.reason}))
        .collect();
    json!({ "classes": model.classes.iter().map(class_json).collect::<Vec<_>>(), "skipped": skipped })
}

fn class_json(class: &ClassLayout) -> Value {
    let fields: Vec<Value> = class
        .fields
        .iter()
        .map(|f| {
            let mut field = json!({
                "name": &*f.name, "owner": &*f.owner, "offset": f.offset, "size": f.size,
                "type": &*f.type_name, "access": f.access.keyword(),
            });
            if let Some(bits) = f.bit_field {
                field["bit_offset"] = json!(bits.offset_bits);
                field["bit_width"] = json!(bits.width_bits);
            }
            if f.opaque {
                field["opaque"] = json!(true);
                field["may_hold_vptr"] = json!(true);
            }
            field
        })
        .collect();
    json!({
        "name": class.name,
        "size": class.size,
        "align": class.align,
        "dynamic": class.is_dynamic,
        "abstract": class.is_abstract,
        "dummy_constructor": class.has_dummy_constructor,
        "vptrs": class.vptr_offsets,
        "bases": class.bases.iter().map(|b| json!({"name": &*b.name, "offset": b.offset, "virtual": b.is_virtual})).collect::<Vec<_>>(),
        "fields": fields,
        "padding": class.padding.iter().map(|p| json!([p.start, p.end])).collect::<Vec<_>>(),
        "layout_hash": format!("{:#018x}", class.layout_hash),
        "defined_at": class.pos.to_string(),
    })
}

/// The model as text, one block per class.
pub fn text(model: &LayoutModel) -> String {
    let mut out = String::new();
    for (index, class) in model.classes.iter().enumerate() {
        if index > 0 {
            out.push('\n');
        }
        class_text(class, &mut out);
    }
    if !model.skipped.is_empty() {
        out.push_str(&format!(
            "\n{} class(es) left out, each with the reason:\n",
            model.skipped.len()
        ));
        for skipped in &model.skipped {
            out.push_str(&format!("  {}: {}\n", skipped.name, skipped.reason));
        }
    }
    out
}

fn class_text(class: &ClassLayout, out: &mut String) {
    let mut traits = Vec::new();
    if class.is_dynamic {
        traits.push("dynamic");
    }
    if class.is_abstract {
        traits.push("abstract");
    }
    if !class.has_dummy_constructor {
        traits.push("no dummy constructor");
    }
    let traits = if traits.is_empty() {
        String::new()
    } else {
        format!("  [{}]", traits.join(", "))
    };
    let _ = writeln!(out, "{}  ({}){traits}", class.name, class.pos);
    let _ = writeln!(out, "  {:>7} {:>5}  what", "offset", "size");

    // (sort key, order among equal offsets, line)
    let mut rows: Vec<(u64, u8, String)> = Vec::new();
    for base in &class.bases {
        let kind = if base.is_virtual {
            "virtual base"
        } else {
            "base"
        };
        rows.push((
            base.offset * 8,
            0,
            format!("  {:>7} {:>5}  {kind} {}", base.offset, "", base.name),
        ));
    }
    for &vptr in &class.vptr_offsets {
        let holder = class
            .fields
            .iter()
            .find(|f| f.bit_field.is_none() && f.offset <= vptr && vptr < f.offset + f.size);
        let place = holder
            .map(|f| format!(" (inside member {})", f.name))
            .unwrap_or_default();
        rows.push((vptr * 8, 3, format!("  {vptr:>7} {:>5}  vptr{place}", 8)));
    }
    for field in &class.fields {
        let (offset, key) = match field.bit_field {
            Some(bits) => {
                let first = bits.offset_bits % 8;
                (
                    format!("{}:{}", bits.offset_bits / 8, first),
                    bits.offset_bits,
                )
            }
            None => (field.offset.to_string(), field.offset * 8),
        };
        let size = match field.bit_field {
            Some(bits) => format!("{}b", bits.width_bits),
            None => field.size.to_string(),
        };
        let mut notes = Vec::new();
        if *field.owner != *class.name {
            notes.push(format!("from {}", field.owner));
        }
        if field.access != rehydrate::tables::Access::Public {
            notes.push(field.access.keyword().to_string());
        }
        if field.opaque {
            notes.push("opaque: a vptr may be inside".to_string());
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!("  ({})", notes.join(", "))
        };
        rows.push((
            key,
            2,
            format!(
                "  {offset:>7} {size:>5}  {} {}{notes}",
                field.type_name, field.name
            ),
        ));
    }
    for hole in &class.padding {
        rows.push((
            hole.start * 8,
            3,
            format!("  {:>7} {:>5}  <padding>", hole.start, hole.len()),
        ));
    }
    rows.sort_by_key(|(key, order, _)| (*key, *order));
    for (_, _, line) in rows {
        out.push_str(&line);
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "  size {}, align {}, {} vptr(s), {} padding byte(s) in {} hole(s)",
        class.size,
        class.align,
        class.vptr_offsets.len(),
        class.padding_bytes(),
        class.padding.len()
    );
}
