//! Oracle: for every fixture class, `layout-gen`'s JSON must equal what clang itself prints with
//! `-Xclang -fdump-record-layouts` (sizes, alignment, every base subobject, every field with its
//! owner and bit position, every vptr slot including those inside members and member arrays).

use std::process::Command;

use integration_tests::record_layouts::{
    array_of, children, lookup, parse_dump, strip_tag, subtree_vptrs, DumpLine, Dumps,
};
use integration_tests::{clangxx, shapes_header, shapes_request};
use serde_json::Value;

/// A field as the oracle compares it: name, owner, byte offset, bit offset and width.
type OracleField = (String, String, u64, Option<(u64, u64)>);

/// What clang says about one class.
#[derive(Debug, Default, PartialEq)]
struct Oracle {
    size: u64,
    align: u64,
    vptrs: Vec<u64>,
    bases: Vec<(String, u64, bool)>,
    /// (name, owner, byte offset, bit offset and width for bit-fields)
    fields: Vec<OracleField>,
}

fn collect_subobject(
    lines: &[DumpLine],
    node: usize,
    owner: &str,
    dumps: &Dumps,
    oracle: &mut Oracle,
) {
    for child in children(lines, node) {
        let line = &lines[child];
        let text = line.text.trim_end_matches(" (empty)").trim();
        if text.ends_with("vtable pointer)") {
            oracle.vptrs.push(line.offset);
        } else if let Some(label_at) = text.find(" (") {
            let (name, label) = text.split_at(label_at);
            let is_virtual = label.contains("virtual base");
            assert!(label.contains("base)"), "unexpected dump line {text:?}");
            let name = strip_tag(name).to_string();
            oracle.bases.push((name.clone(), line.offset, is_virtual));
            collect_subobject(lines, child, &name, dumps, oracle);
        } else if text.contains("(anonymous at ") && !text.ends_with(')')
            || text.contains("::(anonymous at ") && text.ends_with(')')
        {
            collect_subobject(lines, child, owner, dumps, oracle);
        } else {
            let name = text.rsplit(' ').next().unwrap().to_string();
            let bits = line
                .bits
                .map(|(first, last)| (line.offset * 8 + first, last - first + 1));
            oracle
                .fields
                .push((name, owner.to_string(), line.offset, bits));
            let mut inner = Vec::new();
            subtree_vptrs(lines, child, dumps, 0, &mut inner);
            if let Some((element_lines, element_size, count)) = array_of(text)
                .and_then(|(element, count)| lookup(dumps, &element).map(|(l, s, _)| (l, s, count)))
            {
                let mut element_vptrs = Vec::new();
                subtree_vptrs(element_lines, 0, dumps, 0, &mut element_vptrs);
                for index in 0..count {
                    inner.extend(
                        element_vptrs
                            .iter()
                            .map(|v| line.offset + index * element_size + v),
                    );
                }
            }
            oracle.vptrs.extend(inner);
        }
    }
}

fn oracle_for(dumps: &Dumps, class: &str) -> Oracle {
    let (lines, size, align) = dumps.get(class).unwrap_or_else(|| {
        panic!(
            "clang dumped no layout for {class}; dumped: {:?}",
            dumps.keys().collect::<Vec<_>>()
        )
    });
    let mut oracle = Oracle {
        size: *size,
        align: *align,
        ..Oracle::default()
    };
    collect_subobject(lines, 0, class, dumps, &mut oracle);
    oracle.vptrs.sort();
    oracle.vptrs.dedup();
    oracle.bases.sort();
    oracle.fields.sort();
    oracle
}

fn from_json(class: &Value) -> Oracle {
    let mut oracle = Oracle {
        size: class["size"].as_u64().unwrap(),
        align: class["align"].as_u64().unwrap(),
        vptrs: class["vptrs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect(),
        bases: class["bases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["name"].as_str().unwrap().to_string(),
                    b["offset"].as_u64().unwrap(),
                    b["virtual"].as_bool().unwrap(),
                )
            })
            .collect(),
        fields: class["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let bits = f
                    .get("bit_offset")
                    .map(|o| (o.as_u64().unwrap(), f["bit_width"].as_u64().unwrap()));
                (
                    f["name"].as_str().unwrap().to_string(),
                    f["owner"].as_str().unwrap().to_string(),
                    f["offset"].as_u64().unwrap(),
                    bits,
                )
            })
            .collect(),
    };
    oracle.bases.sort();
    oracle.fields.sort();
    oracle
}

#[test]
fn every_fixture_class_matches_clangs_record_layout() {
    let classes = matches_clang(&shapes_request(), &shapes_header());
    assert!(classes >= 30, "expected every fixture class, got {classes}");
}

#[test]
fn ordinary_classes_with_library_members_and_templates_match_clangs_record_layout() {
    let header =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/selection/selection.hpp");
    let request = layout_gen::Request {
        headers: vec![header.clone()],
        clang_args: vec!["-std=c++17".into()],
        selection: layout_gen::Selection {
            namespaces: vec!["sel".into()],
            classes: vec!["sel::Derived<int>".into()],
            ..Default::default()
        },
    };
    let classes = matches_clang(&request, &header);
    assert!(classes >= 5, "{classes}");
}

/// The oracle with every class name spelled one way: clang's dump writes template arguments
/// with tags and spaces (`std::_Vector_base<int, class std::allocator<int> >`), layout-gen as
/// libclang names types (`std::_Vector_base<int, std::allocator<int>>`).
fn spelled_alike(mut oracle: Oracle) -> Oracle {
    let respell = |name: &str| {
        let mut text = name.to_string();
        for tag in ["class ", "struct ", "union "] {
            text = text
                .replace(&format!("<{tag}"), "<")
                .replace(&format!(", {tag}"), ", ");
        }
        text.replace(" >", ">")
    };
    for base in &mut oracle.bases {
        base.0 = respell(&base.0);
    }
    for field in &mut oracle.fields {
        field.1 = respell(&field.1);
    }
    oracle.bases.sort();
    oracle.fields.sort();
    oracle
}

/// Checks every class `request` selects in `header` against clang's dump; returns how many.
fn matches_clang(request: &layout_gen::Request, header: &std::path::Path) -> usize {
    let model = layout_gen::analyze(request).expect("fixtures analyse");
    let json = layout_gen::inspect::json(&model);
    let classes = json["classes"].as_array().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let force = dir.path().join("force_layouts.cpp");
    let mut source = format!("#include \"{}\"\n", header.display());
    for (index, class) in classes.iter().enumerate() {
        source.push_str(&format!(
            "unsigned long force_{index} = sizeof({});\n",
            class["name"].as_str().unwrap()
        ));
    }
    std::fs::write(&force, source).unwrap();
    let output = Command::new(clangxx().program)
        .args([
            "-std=c++17",
            "-fsyntax-only",
            "-Xclang",
            "-fdump-record-layouts",
        ])
        .arg(&force)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dumps = parse_dump(&String::from_utf8_lossy(&output.stdout));

    let mut mismatches = Vec::new();
    for class in classes {
        let name = class["name"].as_str().unwrap();
        let expected = spelled_alike(oracle_for(&dumps, name));
        let actual = spelled_alike(from_json(class));
        if expected != actual {
            mismatches.push(format!(
                "{name}:\n  clang:      {expected:?}\n  layout-gen: {actual:?}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} class(es) differ from clang:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    classes.len()
}
