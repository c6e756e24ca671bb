//! Base-class placement by the Itanium C++ ABI (section 2.4, "Allocation of members"), the
//! layout both g++ and clang++ use on Linux.
//!
//! libclang gives sizes, alignments and the offsets of a record's own fields, but not where its
//! base subobjects go. This module computes them the way the ABI (and clang's record layout
//! builder) does: choose the primary base (the first non-virtual dynamic base, else a
//! nearly-empty virtual base that is not an indirect primary base), place it at 0 or else a vptr,
//! place the other non-virtual bases at the data size rounded up to their alignment (empty bases
//! at 0 when no subobject of the same type is already there), account for the fields, then place
//! virtual bases in inheritance-graph order, sharing the address of a base that uses one as its
//! primary. Tail padding of non-POD bases is reused. The result is checked against clang's own
//! `sizeof`, and the test suite checks every offset against `clang -fdump-record-layouts`.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::rc::Rc;

use crate::error::Error;
use crate::facts::{AstFacts, MemberKind, RecordFacts};

/// Size of a vptr on the 64-bit targets this crate supports.
pub(crate) const POINTER_SIZE: u64 = 8;

/// The computed layout of one record as a complete object and as a base.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordLayout {
    /// Has a vptr somewhere (virtual functions or virtual bases).
    pub is_dynamic: bool,
    /// An empty class in the ABI's sense.
    pub is_empty: bool,
    /// Size without virtual bases.
    pub nvsize: u64,
    /// Alignment without virtual bases.
    pub nvalign: u64,
    /// Offsets of the direct non-virtual bases.
    pub base_offsets: BTreeMap<Arc<str>, u64>,
    /// Offsets of every virtual base of the complete object.
    pub vbase_offsets: BTreeMap<Arc<str>, u64>,
    /// Why the bases could not be placed, when they could not: the record is then known only
    /// by its size, alignment and own fields (no base offsets), and cannot be a base itself.
    pub opaque: Option<String>,
    /// The primary base and whether it is virtual.
    pub primary_base: Option<(Arc<str>, bool)>,
}

/// What is known of a record whose bases cannot be placed: clang's size and alignment, and
/// whether it is empty or dynamic as far as its own declarations show.
fn opaque_layout(facts: &RecordFacts, reason: String) -> RecordLayout {
    RecordLayout {
        is_dynamic: facts.declares_virtual_methods || facts.unknown_base_is_dynamic,
        is_empty: facts.size == 1
            && facts.fields.is_empty()
            && !facts.declares_virtual_methods
            && !facts.is_union,
        nvsize: facts.size,
        nvalign: facts.align,
        opaque: Some(reason),
        ..RecordLayout::default()
    }
}

/// Computes and memoises record layouts over one [`AstFacts`].
pub(crate) struct Layouts<'f> {
    facts: &'f AstFacts,
    done: HashMap<Arc<str>, Rc<RecordLayout>>,
}

impl<'f> Layouts<'f> {
    pub fn new(facts: &'f AstFacts) -> Self {
        Layouts {
            facts,
            done: HashMap::default(),
        }
    }

    pub fn facts(&self, record: &str) -> &'f RecordFacts {
        &self.facts.records[record]
    }

    /// The layout of `record`, computing it (and its bases') on first use. A record whose bases
    /// cannot be known or placed gets an opaque layout (see [`RecordLayout::opaque`]) instead
    /// of an error, so that it can still be a member.
    pub fn get(&mut self, record: &str) -> Result<Rc<RecordLayout>, Error> {
        if let Some(layout) = self.done.get(record) {
            return Ok(layout.clone());
        }
        let facts = self.facts(record);
        let layout = match &facts.bases_unknown {
            Some(reason) => opaque_layout(facts, reason.clone()),
            None => match Builder::new(self, record)?.build() {
                Ok(layout) => layout,
                Err(error) => opaque_layout(facts, error.to_string()),
            },
        };
        let layout = Rc::new(layout);
        self.done.insert(facts.name.clone(), layout.clone());
        Ok(layout)
    }

    fn has_virtual_bases(&self, record: &str) -> bool {
        self.facts(record)
            .bases
            .iter()
            .any(|b| b.is_virtual || self.has_virtual_bases(&b.record))
    }

    fn is_nearly_empty(&mut self, record: &str) -> Result<bool, Error> {
        let layout = self.get(record)?;
        Ok(layout.is_dynamic && layout.nvsize == POINTER_SIZE)
    }
}

/// One node of the base-subobject tree of the record being laid out (the ABI's "inheritance
/// graph"); a virtual base has exactly one node however often it is inherited.
struct SubobjectNode {
    class: Arc<str>,
    is_virtual: bool,
    bases: Vec<usize>,
    primary_virtual: Option<usize>,
    /// The node that uses this virtual base as its primary base.
    claimed_by: Option<usize>,
}

struct Builder<'l, 'f> {
    layouts: &'l mut Layouts<'f>,
    record: &'f RecordFacts,
    nodes: Vec<SubobjectNode>,
    virtual_nodes: HashMap<Arc<str>, usize>,
    direct_nodes: HashMap<Arc<str>, usize>,
    size: u64,
    data_size: u64,
    align: u64,
    empty_at: HashMap<u64, Vec<Arc<str>>>,
    primary_base: Option<(Arc<str>, bool)>,
    indirect_primary_bases: HashSet<Arc<str>>,
    visited_virtual_bases: HashSet<Arc<str>>,
    base_offsets: BTreeMap<Arc<str>, u64>,
    vbase_offsets: BTreeMap<Arc<str>, u64>,
}

impl<'l, 'f> Builder<'l, 'f> {
    fn new(layouts: &'l mut Layouts<'f>, record: &str) -> Result<Self, Error> {
        let record = layouts.facts(record);
        Ok(Builder {
            layouts,
            record,
            nodes: Vec::new(),
            virtual_nodes: HashMap::default(),
            direct_nodes: HashMap::default(),
            size: 0,
            data_size: 0,
            align: 1,
            empty_at: HashMap::default(),
            primary_base: None,
            indirect_primary_bases: HashSet::default(),
            visited_virtual_bases: HashSet::default(),
            base_offsets: BTreeMap::new(),
            vbase_offsets: BTreeMap::new(),
        })
    }

    fn build(mut self) -> Result<RecordLayout, Error> {
        let record = self.record;
        let mut is_dynamic = record.declares_virtual_methods;
        let mut is_empty = !record.is_union;
        for base in &record.bases {
            let layout = self.layouts.get(&base.record)?;
            if let Some(reason) = &layout.opaque {
                return Err(Error::IncompleteType {
                    class: base.record.to_string(),
                    reason: reason.clone(),
                });
            }
            is_dynamic |= base.is_virtual || layout.is_dynamic;
            is_empty &= !base.is_virtual && layout.is_empty;
        }
        for field in &record.fields {
            is_empty &= field.no_unique_address && self.member_is_empty(&field.kind)?;
        }
        is_empty &= !is_dynamic;

        self.layout_non_virtual_bases(is_dynamic)?;
        self.account_for_fields()?;
        let nvsize = self.size.max(self.data_size);
        let nvalign = if self.layouts.has_virtual_bases(&record.name) {
            self.align
        } else {
            record.align
        };
        self.layout_virtual_bases(&record.name.clone())?;

        // An object occupies at least one byte.
        let computed = round_up(self.size.max(self.data_size).max(1), record.align);
        if computed != record.size && !record.is_union {
            return Err(Error::Layout {
                class: record.name.to_string(),
                detail: format!(
                    "base placement gives sizeof {computed} but clang says {} (defined at {})",
                    record.size, record.pos
                ),
            });
        }
        let nvsize = if record.is_pod_for_layout {
            record.size
        } else {
            nvsize
        };
        Ok(RecordLayout {
            is_dynamic,
            is_empty,
            nvsize,
            nvalign,
            base_offsets: self.base_offsets,
            vbase_offsets: self.vbase_offsets,
            primary_base: self.primary_base,
            opaque: None,
        })
    }

    fn member_is_empty(&mut self, kind: &MemberKind) -> Result<bool, Error> {
        match kind {
            MemberKind::Record(record) => Ok(self.layouts.get(record)?.is_empty),
            _ => Ok(false),
        }
    }

    // ----- the subobject tree ---------------------------------------------------------------

    fn node(&mut self, class: &str, is_virtual: bool) -> Result<usize, Error> {
        if is_virtual {
            if let Some(&existing) = self.virtual_nodes.get(class) {
                return Ok(existing);
            }
        }
        let id = self.nodes.len();
        let class_name = self.layouts.facts(class).name.clone();
        self.nodes.push(SubobjectNode {
            class: class_name.clone(),
            is_virtual,
            bases: Vec::new(),
            primary_virtual: None,
            claimed_by: None,
        });
        if is_virtual {
            self.virtual_nodes.insert(class_name, id);
        }

        let layout = self.layouts.get(class)?;
        let mut unclaimed_primary = None;
        if let Some((primary, true)) = &layout.primary_base {
            match self.virtual_nodes.get(primary).copied() {
                Some(existing) if self.nodes[existing].claimed_by.is_some() => {}
                Some(existing) => self.claim(id, existing),
                None => unclaimed_primary = Some(primary.clone()),
            }
        }
        for base in &self.layouts.facts(class).bases {
            let child = self.node(&base.record, base.is_virtual)?;
            self.nodes[id].bases.push(child);
        }
        if let Some(primary) = unclaimed_primary {
            let existing = self.virtual_nodes[&primary];
            self.claim(id, existing);
        }
        Ok(id)
    }

    fn claim(&mut self, derived: usize, primary: usize) {
        self.nodes[derived].primary_virtual = Some(primary);
        self.nodes[primary].claimed_by = Some(derived);
    }

    // ----- primary base ---------------------------------------------------------------------

    fn determine_primary_base(&mut self, is_dynamic: bool) -> Result<(), Error> {
        if !is_dynamic {
            return Ok(());
        }
        let record = self.record;
        if self.layouts.has_virtual_bases(&record.name) {
            for base in &record.bases {
                if self.layouts.has_virtual_bases(&base.record) {
                    self.add_indirect_primary_bases(&base.record)?;
                }
            }
        }
        for base in &record.bases {
            if !base.is_virtual && self.layouts.get(&base.record)?.is_dynamic {
                self.primary_base = Some((base.record.clone(), false));
                return Ok(());
            }
        }
        let mut first_nearly_empty = None;
        self.select_primary_virtual_base(&record.name, &mut first_nearly_empty)?;
        if self.primary_base.is_none() {
            self.primary_base = first_nearly_empty.map(|b| (b, true));
        }
        Ok(())
    }

    fn add_indirect_primary_bases(&mut self, class: &str) -> Result<(), Error> {
        if let Some((primary, true)) = &self.layouts.get(class)?.primary_base {
            self.indirect_primary_bases.insert(primary.clone());
        }
        for base in &self.layouts.facts(class).bases {
            if self.layouts.has_virtual_bases(&base.record) {
                self.add_indirect_primary_bases(&base.record)?;
            }
        }
        Ok(())
    }

    fn select_primary_virtual_base(
        &mut self,
        class: &str,
        first: &mut Option<Arc<str>>,
    ) -> Result<(), Error> {
        for base in &self.layouts.facts(class).bases {
            if base.is_virtual && self.layouts.is_nearly_empty(&base.record)? {
                if !self.indirect_primary_bases.contains(&base.record) {
                    self.primary_base = Some((base.record.clone(), true));
                    return Ok(());
                }
                first.get_or_insert_with(|| base.record.clone());
            }
            if self.layouts.has_virtual_bases(&base.record) {
                self.select_primary_virtual_base(&base.record, first)?;
                if self.primary_base.is_some() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    // ----- placement ------------------------------------------------------------------------

    fn layout_non_virtual_bases(&mut self, is_dynamic: bool) -> Result<(), Error> {
        self.determine_primary_base(is_dynamic)?;
        let record = self.record;
        for base in &record.bases {
            let id = self.node(&base.record, base.is_virtual)?;
            if !base.is_virtual {
                self.direct_nodes.insert(base.record.clone(), id);
            }
        }
        match self.primary_base.clone() {
            Some((primary, true)) => {
                let id = self.virtual_nodes[&primary];
                self.nodes[id].claimed_by = None;
                self.indirect_primary_bases.insert(primary.clone());
                self.visited_virtual_bases.insert(primary);
                self.layout_virtual_base(id)?;
            }
            Some((primary, false)) => {
                let id = self.direct_nodes[&primary];
                self.layout_non_virtual_base(id)?;
            }
            None if is_dynamic => {
                self.size = POINTER_SIZE;
                self.data_size = POINTER_SIZE;
                self.align = self.align.max(POINTER_SIZE);
            }
            None => {}
        }
        for base in &record.bases {
            if base.is_virtual || self.primary_base.as_ref() == Some(&(base.record.clone(), false))
            {
                continue;
            }
            let id = self.direct_nodes[&base.record];
            self.layout_non_virtual_base(id)?;
        }
        Ok(())
    }

    fn layout_non_virtual_base(&mut self, id: usize) -> Result<(), Error> {
        let offset = self.layout_base(id)?;
        self.base_offsets
            .insert(self.nodes[id].class.clone(), offset);
        self.add_primary_virtual_base_offsets(id, offset)
    }

    fn layout_virtual_base(&mut self, id: usize) -> Result<(), Error> {
        let offset = self.layout_base(id)?;
        self.vbase_offsets
            .insert(self.nodes[id].class.clone(), offset);
        self.add_primary_virtual_base_offsets(id, offset)
    }

    /// A virtual base used as primary base by some subobject shares that subobject's address.
    fn add_primary_virtual_base_offsets(&mut self, id: usize, offset: u64) -> Result<(), Error> {
        let class = self.nodes[id].class.clone();
        if !self.layouts.has_virtual_bases(&class) {
            return Ok(());
        }
        if let Some(primary) = self.nodes[id].primary_virtual {
            if self.nodes[primary].claimed_by == Some(id) {
                self.vbase_offsets
                    .insert(self.nodes[primary].class.clone(), offset);
                self.add_primary_virtual_base_offsets(primary, offset)?;
            }
        }
        let layout = self.layouts.get(&class)?;
        for base in self.nodes[id].bases.clone() {
            if !self.nodes[base].is_virtual {
                let base_offset = offset + layout.base_offsets[&self.nodes[base].class];
                self.add_primary_virtual_base_offsets(base, base_offset)?;
            }
        }
        Ok(())
    }

    fn layout_base(&mut self, id: usize) -> Result<u64, Error> {
        let class = self.nodes[id].class.clone();
        let layout = self.layouts.get(&class)?;
        let class_size = self.layouts.facts(&class).size;
        if layout.is_empty && self.can_place_base(id, 0)? {
            self.record_base_subobjects(id, 0)?;
            self.size = self.size.max(class_size);
            self.align = self.align.max(layout.nvalign);
            return Ok(0);
        }
        let step = layout.nvalign.max(1);
        let mut offset = round_up(self.data_size, step);
        while !self.can_place_base(id, offset)? {
            offset += step;
        }
        self.record_base_subobjects(id, offset)?;
        if layout.is_empty {
            self.size = self.size.max(offset + class_size);
        } else {
            self.data_size = offset + layout.nvsize;
            self.size = self.size.max(self.data_size);
        }
        self.align = self.align.max(layout.nvalign);
        Ok(offset)
    }

    fn layout_virtual_bases(&mut self, class: &str) -> Result<(), Error> {
        let (primary, primary_is_virtual) = if *class == *self.record.name {
            self.primary_base
                .clone()
                .map_or((None, false), |(p, v)| (Some(p), v))
        } else {
            self.layouts
                .get(class)?
                .primary_base
                .clone()
                .map_or((None, false), |(p, v)| (Some(p), v))
        };
        for base in &self.layouts.facts(class).bases {
            if base.is_virtual
                && (primary.as_deref() != Some(&*base.record) || !primary_is_virtual)
                && !self.indirect_primary_bases.contains(&*base.record)
                && self.visited_virtual_bases.insert(base.record.clone())
            {
                let id = self.virtual_nodes[&base.record];
                self.layout_virtual_base(id)?;
            }
            if self.layouts.has_virtual_bases(&base.record) {
                self.layout_virtual_bases(&base.record)?;
            }
        }
        Ok(())
    }

    /// Grows the data size over the record's own fields (their offsets come from clang) and
    /// records the empty subobjects inside them.
    fn account_for_fields(&mut self) -> Result<(), Error> {
        for field in &self.record.fields {
            if let Some(width) = field.bit_width {
                self.data_size = self
                    .data_size
                    .max((field.offset_bits + u64::from(width)).div_ceil(8));
                self.size = self.size.max(self.data_size);
                self.align = self.align.max(field.align);
                continue;
            }
            let offset = field.offset_bits / 8;
            let occupied = match (&field.kind, field.no_unique_address) {
                (MemberKind::Record(record), true) => {
                    let layout = self.layouts.get(record)?;
                    if layout.is_empty {
                        0
                    } else {
                        layout.nvsize
                    }
                }
                _ => field.size,
            };
            if occupied > 0 {
                self.data_size = self.data_size.max(offset + occupied);
            }
            self.size = self.size.max(offset + field.size).max(self.data_size);
            self.align = self.align.max(field.align);
            self.record_member_subobjects(&field.kind, offset)?;
        }
        Ok(())
    }

    // ----- empty subobjects: no two subobjects of one type at one address -------------------

    fn empty_class_at(&self, class: &str, offset: u64) -> bool {
        self.empty_at
            .get(&offset)
            .is_some_and(|classes| classes.iter().any(|c| **c == *class))
    }

    fn can_place_base(&mut self, id: usize, offset: u64) -> Result<bool, Error> {
        let class = self.nodes[id].class.clone();
        let layout = self.layouts.get(&class)?;
        if layout.is_empty && self.empty_class_at(&class, offset) {
            return Ok(false);
        }
        for base in self.nodes[id].bases.clone() {
            if !self.nodes[base].is_virtual {
                let base_offset = offset + layout.base_offsets[&self.nodes[base].class];
                if !self.can_place_base(base, base_offset)? {
                    return Ok(false);
                }
            }
        }
        if let Some(primary) = self.nodes[id].primary_virtual {
            if self.nodes[primary].claimed_by == Some(id)
                && !self.can_place_base(primary, offset)?
            {
                return Ok(false);
            }
        }
        for field in &self.layouts.facts(&class).fields {
            if field.bit_width.is_none()
                && !self.can_place_member(&field.kind, offset + field.offset_bits / 8)?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn record_base_subobjects(&mut self, id: usize, offset: u64) -> Result<(), Error> {
        let class = self.nodes[id].class.clone();
        let layout = self.layouts.get(&class)?;
        if layout.is_empty {
            self.empty_at.entry(offset).or_default().push(class.clone());
        }
        for base in self.nodes[id].bases.clone() {
            if !self.nodes[base].is_virtual {
                let base_offset = offset + layout.base_offsets[&self.nodes[base].class];
                self.record_base_subobjects(base, base_offset)?;
            }
        }
        if let Some(primary) = self.nodes[id].primary_virtual {
            if self.nodes[primary].claimed_by == Some(id) {
                self.record_base_subobjects(primary, offset)?;
            }
        }
        for field in &self.layouts.facts(&class).fields {
            if field.bit_width.is_none() {
                self.record_member_subobjects(&field.kind, offset + field.offset_bits / 8)?;
            }
        }
        Ok(())
    }

    fn can_place_member(&mut self, kind: &MemberKind, offset: u64) -> Result<bool, Error> {
        let mut ok = true;
        self.for_each_member_subobject(kind, offset, &mut |builder, class, at| {
            ok &= !builder.empty_class_at(class, at);
        })?;
        Ok(ok)
    }

    fn record_member_subobjects(&mut self, kind: &MemberKind, offset: u64) -> Result<(), Error> {
        self.for_each_member_subobject(kind, offset, &mut |builder, class, at| {
            builder
                .empty_at
                .entry(at)
                .or_default()
                .push(builder.layouts.facts(class).name.clone());
        })
    }

    /// Calls `visit` for every empty-class subobject of a member (a complete object, so its
    /// virtual bases count too), array elements included.
    fn for_each_member_subobject(
        &mut self,
        kind: &MemberKind,
        offset: u64,
        visit: &mut dyn FnMut(&mut Self, &str, u64),
    ) -> Result<(), Error> {
        for (class, at) in kind.objects(offset) {
            self.for_each_object_subobject(class, class, at, visit)?;
        }
        Ok(())
    }

    fn for_each_object_subobject(
        &mut self,
        class: &str,
        complete: &str,
        offset: u64,
        visit: &mut dyn FnMut(&mut Self, &str, u64),
    ) -> Result<(), Error> {
        let layout = self.layouts.get(class)?;
        if layout.is_empty {
            visit(self, class, offset);
        }
        for (base, base_offset) in &layout.base_offsets {
            self.for_each_object_subobject(base, complete, offset + base_offset, visit)?;
        }
        if class == complete {
            for (base, base_offset) in &layout.vbase_offsets {
                self.for_each_object_subobject(base, "", offset + base_offset, visit)?;
            }
        }
        for field in &self.layouts.facts(class).fields {
            if field.bit_width.is_none() {
                self.for_each_member_subobject(&field.kind, offset + field.offset_bits / 8, visit)?;
            }
        }
        Ok(())
    }
}

pub(crate) fn round_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align.max(1)) * align.max(1)
}
