//! Reading clang's own record layouts (`-Xclang -fdump-record-layouts`): the oracle that
//! layout-gen's tables and the constructor analysis are checked against.

use std::collections::BTreeMap;

/// One line of the dump: `offset[:first-last] | <indent>text`.
#[derive(Debug)]
pub struct DumpLine {
    /// Byte offset from the start of the dumped record.
    pub offset: u64,
    /// First and last bit of a bit-field, within its byte.
    pub bits: Option<(u64, u64)>,
    /// Nesting (bases and members are one deeper than their container).
    pub depth: usize,
    /// What the line says (`int hp`, `(Foo vtable pointer)`, `Base (base)`).
    pub text: String,
}

/// A type name without its `struct `/`class `/`union ` tag.
pub fn strip_tag(text: &str) -> &str {
    ["struct ", "class ", "union "]
        .iter()
        .fold(text, |t, tag| t.strip_prefix(tag).unwrap_or(t))
}

/// Every record of a dump: its lines, `sizeof` and `alignof`, by name.
pub fn parse_dump(dump: &str) -> BTreeMap<String, (Vec<DumpLine>, u64, u64)> {
    let mut classes = BTreeMap::new();
    for block in dump.split("*** Dumping AST Record Layout").skip(1) {
        let mut lines = Vec::new();
        let (mut size, mut align) = (0, 0);
        for raw in block.lines() {
            let Some((left, right)) = raw.split_once(" | ") else {
                continue;
            };
            let left = left.trim();
            if !left
                .chars()
                .all(|c| c.is_ascii_digit() || c == ':' || c == '-')
            {
                continue;
            }
            if left.is_empty() {
                for part in right
                    .trim()
                    .trim_start_matches('[')
                    .trim_end_matches([',', ']'])
                    .split(", ")
                {
                    if let Some(v) = part.strip_prefix("sizeof=") {
                        size = v.parse().unwrap();
                    }
                    if let Some(v) = part.strip_prefix("align=") {
                        align = v.parse().unwrap();
                    }
                }
                continue;
            }
            let (offset, bits) = match left.split_once(':') {
                Some((byte, range)) => {
                    let (first, last) = range.split_once('-').unwrap();
                    (
                        byte.parse().unwrap(),
                        Some((first.parse().unwrap(), last.parse().unwrap())),
                    )
                }
                None => (left.parse().unwrap(), None),
            };
            let depth = (right.len() - right.trim_start().len()) / 2;
            lines.push(DumpLine {
                offset,
                bits,
                depth,
                text: right.trim().to_string(),
            });
        }
        let name = strip_tag(lines[0].text.trim_end_matches(" (empty)")).to_string();
        classes.entry(name).or_insert((lines, size, align));
    }
    classes
}

/// The lines directly under `parent`.
pub fn children(lines: &[DumpLine], parent: usize) -> Vec<usize> {
    let depth = lines[parent].depth;
    let mut out = Vec::new();
    for (index, line) in lines.iter().enumerate().skip(parent + 1) {
        if line.depth <= depth {
            break;
        }
        if line.depth == depth + 1 {
            out.push(index);
        }
    }
    out
}

/// The element class and count of an array field type such as `Diamond[2][2]`.
pub fn array_of(text: &str) -> Option<(String, u64)> {
    let type_part = text.rsplit_once(' ')?.0;
    let open = type_part.find('[')?;
    let element = strip_tag(&type_part[..open]).to_string();
    let count = type_part[open..]
        .split(['[', ']'])
        .filter(|s| !s.is_empty())
        .map(|n| n.parse::<u64>().ok())
        .product::<Option<u64>>()?;
    Some((element, count))
}

/// Records by name: lines, `sizeof`, `alignof`.
pub type Dumps = BTreeMap<String, (Vec<DumpLine>, u64, u64)>;

/// The dump of an array's element class; `None` for scalar elements, which have no dump.
pub fn lookup<'d>(dumps: &'d Dumps, element: &str) -> Option<&'d (Vec<DumpLine>, u64, u64)> {
    dumps
        .iter()
        .find(|(name, _)| *name == element || name.ends_with(&format!("::{element}")))
        .map(|(_, d)| d)
}

/// Vptrs anywhere under `node` (members included); member arrays use their element's dump.
pub fn subtree_vptrs(
    lines: &[DumpLine],
    node: usize,
    dumps: &Dumps,
    base: u64,
    out: &mut Vec<u64>,
) {
    for child in children(lines, node) {
        let line = &lines[child];
        if line.text.ends_with("vtable pointer)") {
            out.push(base + line.offset);
        } else if let Some((element, count)) = array_of(&line.text) {
            let Some((element_lines, element_size, _)) = lookup(dumps, &element) else {
                continue;
            };
            for index in 0..count {
                let mut inner = Vec::new();
                subtree_vptrs(element_lines, 0, dumps, 0, &mut inner);
                out.extend(
                    inner
                        .iter()
                        .map(|v| base + line.offset + index * element_size + v),
                );
            }
        }
        subtree_vptrs(lines, child, dumps, base, out);
    }
}

/// Every vptr of `class` (its bases', its members', its member arrays' elements'), at absolute
/// offsets, ascending.
pub fn vptr_offsets(dumps: &Dumps, class: &str) -> Option<Vec<u64>> {
    let (lines, _, _) = dumps.get(class)?;
    let mut vptrs = Vec::new();
    subtree_vptrs(lines, 0, dumps, 0, &mut vptrs);
    vptrs.sort_unstable();
    Some(vptrs)
}
