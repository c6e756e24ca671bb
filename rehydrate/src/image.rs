//! A class's image: which bytes of a live object are the compiler's own (vptrs and the like),
//! with the values a build writes there, whichever source found them (the constructor
//! analysis reads the constructor's machine code; the probe runs it in sentinel-filled
//! dummies). Both describe the bytes written outside the class's fields as [`Written`]
//! pieces (the probe byte by byte from what it [`Observed`] in its dummies, [`classify`]; the
//! analysis store by store, `classify_written`), which one classification turns, with the
//! class's field table, into the image:
//! - a declared field (from the table) is never copied; vptr slots the table places inside
//!   members (polymorphic members, arrays of them) are judged by the observation instead;
//! - bytes nothing wrote are padding;
//! - implicit bytes hold one known value: these are copied at reload;
//! - anomalous bytes were written with values not known in advance, outside any field: the
//!   class is then unrehydratable.

use std::ops::Range;
use std::sync::Arc;

use crate::error::{CppOperation, Error};
use crate::module::{ModuleClass, ModuleField};

/// What one byte of an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ByteClass {
    /// Part of a declared data member.
    Field,
    /// Untouched by the constructor.
    Padding,
    /// Written by the constructor with the same value every time: vptrs and the like.
    Implicit,
    /// Written with a value not known in advance, outside any field.
    Anomalous,
}

/// What a source saw the constructor do to one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Observed {
    Untouched,
    /// Always this value.
    Constant(u8),
    /// A value that is not always the same (or that the analysis cannot know).
    Varying,
}

/// The image of one class in one build: the writes a reload makes, and where each byte of
/// the class lies (shared with the class), from which the rest is read when asked.
#[derive(Debug, Clone)]
pub struct ClassImage {
    placement: Arc<[u8]>,
    pub(crate) writes: Writes,
}

impl ClassImage {
    /// What each byte of an object of the class is, one entry per byte.
    pub fn byte_map(&self) -> Vec<ByteClass> {
        let mut byte_map: Vec<ByteClass> = self
            .placement
            .iter()
            .map(|&where_| {
                if is_field_only(where_) {
                    ByteClass::Field
                } else {
                    ByteClass::Padding
                }
            })
            .collect();
        for run in self.implicit_runs() {
            byte_map[run].fill(ByteClass::Implicit);
        }
        byte_map
    }

    /// The implicit bytes (copied at every reload) as ascending, merged ranges.
    pub fn implicit_runs(&self) -> Vec<Range<usize>> {
        let words = self.writes.words.iter().map(|&(at, _)| at..at + 8);
        let bytes = self.writes.bytes.iter().map(|&(at, _)| at..at + 1);
        let mut written: Vec<Range<usize>> = words.chain(bytes).collect();
        written.sort_by_key(|run| run.start);
        let mut runs: Vec<Range<usize>> = Vec::with_capacity(written.len());
        for run in written {
            match runs.last_mut() {
                Some(last) if last.end == run.start => last.end = run.end,
                _ => runs.push(run),
            }
        }
        runs
    }

    /// Where the observation and the table differ in ways that need no refusal (implicit
    /// bytes outside vptr slots, such as padding a wide store wrote), for people to read.
    pub fn findings(&self) -> Vec<String> {
        let mut outside_slots: Vec<Range<usize>> = Vec::new();
        for at in self.implicit_runs().into_iter().flatten() {
            if self.placement[at] == 0 {
                extend_runs(&mut outside_slots, at);
            }
        }
        outside_slots
            .iter()
            .map(|run| format!("implicit bytes {run:?} lie outside the table's vptr slots"))
            .collect()
    }
}

/// The implicit bytes of a class as the writes a reload makes: whole 8-byte words, then any
/// bytes left over at the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Writes {
    /// (offset, value complemented) of each whole word: the values are vptrs into the build,
    /// and the runtime's own memory must not look like references into it to a reload's scan
    /// (a class the next build drops would then refuse the reload).
    pub words: Vec<(usize, u64)>,
    /// (offset, value) of each leftover byte.
    pub bytes: Vec<(usize, u8)>,
}

impl Writes {
    /// The value of the whole word at `offset`, when these writes hold one there.
    pub fn word_at(&self, offset: usize) -> Option<u64> {
        self.words
            .iter()
            .find(|&&(at, _)| at == offset)
            .map(|&(_, complement)| !complement)
    }

    /// The first offset where the object at `address` differs from these values.
    ///
    /// # Safety
    /// `address` is a live object at least as large as the class these writes belong to.
    pub(crate) unsafe fn first_difference(&self, address: usize) -> Option<usize> {
        for &(offset, complement) in &self.words {
            let word = !complement;
            // SAFETY: within the object, by the caller's contract.
            let live = unsafe { ((address + offset) as *const u64).read_unaligned() };
            if live != word {
                let differing = (live ^ word)
                    .to_ne_bytes()
                    .iter()
                    .position(|&b| b != 0)
                    .unwrap_or(0);
                return Some(offset + differing);
            }
        }
        for &(offset, byte) in &self.bytes {
            // SAFETY: as above.
            if unsafe { *((address + offset) as *const u8) } != byte {
                return Some(offset);
            }
        }
        None
    }

    /// Writes these values into the object at `address`.
    ///
    /// # Safety
    /// `address` is a live object at least as large as the class these writes belong to, and
    /// nothing else accesses its implicit bytes meanwhile.
    pub(crate) unsafe fn apply(&self, address: usize) {
        for &(offset, complement) in &self.words {
            // SAFETY: within the object, by the caller's contract.
            unsafe { ((address + offset) as *mut u64).write_unaligned(!complement) };
        }
        for &(offset, byte) in &self.bytes {
            // SAFETY: as above.
            unsafe { *((address + offset) as *mut u8) = byte };
        }
    }
}

/// Why a class has no image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageFailure {
    /// The analysis gave up and there is no usable default constructor to probe with: the
    /// class's objects are reloaded through the vtable-symbol mapping alone.
    NotConstructible,
    /// The constructor or destructor threw while probing.
    CppException {
        /// What was running.
        operation: CppOperation,
        /// `what()`.
        message: String,
    },
    /// Anomalous bytes outside fields.
    Anomalous(Vec<usize>),
    /// The compiler put a base subobject elsewhere than the table says.
    BaseMismatch(String),
    /// The sources disagree; each entry names the offset and what each said.
    Disagreement(Vec<String>),
}

impl ImageFailure {
    /// The error a reload reports for `class`.
    pub(crate) fn to_error(&self, class: &str) -> Error {
        let class = class.to_string();
        match self {
            ImageFailure::NotConstructible => Error::NotConstructible { class },
            ImageFailure::CppException { operation, message } => Error::CppException {
                operation: *operation,
                class,
                message: message.clone(),
            },
            ImageFailure::Anomalous(offsets) => Error::Anomalous {
                class,
                offsets: offsets.clone(),
            },
            ImageFailure::BaseMismatch(detail) => Error::TableMismatch {
                class,
                detail: detail.clone(),
            },
            ImageFailure::Disagreement(disagreements) => Error::ImageDisagreement {
                class,
                disagreements: disagreements.clone(),
            },
        }
    }
}

/// A byte of an object lies in a declared field ([`Placement::FIELD`]), in a vptr slot the
/// table names ([`Placement::VPTR`]), both, or neither; the first byte of each vptr slot is
/// marked as such too ([`Placement::SLOT`]: where each slot starts is read with the rest).
pub(crate) struct Placement;

impl Placement {
    pub const FIELD: u8 = 1;
    pub const VPTR: u8 = 2;
    pub const SLOT: u8 = 4;

    /// Where each byte of an object of `size` bytes lies: made once per class with its
    /// table (the images of every load read it).
    pub fn of(size: usize, fields: &[ModuleField], vptr_offsets: &[usize]) -> Arc<[u8]> {
        let mut place = vec![0u8; size];
        for range in fields.iter().map(|f| f.byte_range()) {
            let end = range.end.min(size);
            place[range.start.min(end)..end]
                .iter_mut()
                .for_each(|p| *p |= Placement::FIELD);
        }
        for &slot in vptr_offsets {
            let end = (slot + 8).min(size);
            place[slot.min(end)..end]
                .iter_mut()
                .for_each(|p| *p |= Placement::VPTR);
            if let Some(first) = place.get_mut(slot) {
                *first |= Placement::SLOT;
            }
        }
        place.into()
    }
}

/// Bytes a source saw written outside a class's fields: `bytes` (1 to 8) bytes from `at`,
/// holding the bytes of a value in order (little-endian), or values not known in advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub at: usize,
    pub bytes: u8,
    /// The value, complemented (mostly vptrs: the runtime's memory must not look like
    /// references into a build to a reload's scan, freed memory included).
    complement: Option<u64>,
}

impl Written {
    pub fn new(at: usize, bytes: u8, value: Option<u64>) -> Written {
        Written {
            at,
            bytes,
            complement: value.map(|value| !value),
        }
    }

    pub fn value(&self) -> Option<u64> {
        self.complement.map(|complement| !complement)
    }

    fn range(&self) -> Range<usize> {
        self.at..self.at + usize::from(self.bytes)
    }
}

/// The image of `class` from what a source observed of each of its bytes.
pub(crate) fn classify(
    class: &ModuleClass,
    observed: &[Observed],
) -> Result<ClassImage, ImageFailure> {
    let written: Vec<Written> = observed
        .iter()
        .zip(class.placement.iter())
        .enumerate()
        .filter(|&(_, (&seen, &where_))| seen != Observed::Untouched && !is_field_only(where_))
        .map(|(at, (&seen, _))| {
            let value = match seen {
                Observed::Constant(byte) => Some(u64::from(byte)),
                _ => None,
            };
            Written::new(at, 1, value)
        })
        .collect();
    classify_written(class, &written)
}

/// The image of `class` from the bytes a source saw written outside its fields (`written`:
/// ascending, not overlapping, no byte that [`is_field_only`]); every other byte is a
/// field's or padding. The probe gives them byte by byte, the analysis store by store.
pub(crate) fn classify_written(
    class: &ModuleClass,
    written: &[Written],
) -> Result<ClassImage, ImageFailure> {
    if written.iter().any(|w| w.value().is_none()) {
        let anomalous = written
            .iter()
            .filter(|w| w.value().is_none())
            .flat_map(Written::range)
            .collect();
        return Err(ImageFailure::Anomalous(anomalous));
    }
    let mut writes = Writes {
        words: Vec::with_capacity(class.vptr_offsets.len()),
        bytes: Vec::new(),
    };
    let mut runs = Runs::default();
    for piece in written {
        runs.add(&mut writes, piece);
    }
    runs.finish(&mut writes);
    Ok(ClassImage {
        placement: Arc::clone(&class.placement),
        writes,
    })
}

/// Puts consecutive implicit bytes together into the writes a reload makes: whole words from
/// the start of each run of them, then the bytes left over at its end.
#[derive(Default)]
struct Runs {
    /// Where the word being put together starts, and its bytes so far.
    word_start: usize,
    word: u64,
    length: u32,
    /// Where the run so far ends.
    end: usize,
}

impl Runs {
    /// Adds `piece` (a constant), after every piece before it.
    fn add(&mut self, writes: &mut Writes, piece: &Written) {
        let value = piece.value().unwrap_or(0);
        if piece.at != self.end {
            self.finish(writes); // a new run
        }
        if self.length == 0 {
            self.word_start = piece.at;
        }
        self.end = piece.at + usize::from(piece.bytes);
        if self.length == 0 && piece.bytes == 8 {
            writes.words.push((piece.at, !value)); // a vptr: a word of its own
            self.word_start = self.end;
            return;
        }
        for k in 0..u32::from(piece.bytes) {
            self.word |= (value >> (8 * k) & 0xFF) << (8 * self.length);
            self.length += 1;
            if self.length == 8 {
                writes.words.push((self.word_start, !self.word));
                (self.word_start, self.word, self.length) = (self.word_start + 8, 0, 0);
            }
        }
    }

    /// Ends the run: the bytes that make no whole word are written one by one.
    fn finish(&mut self, writes: &mut Writes) {
        for k in 0..self.length {
            let byte = (self.word >> (8 * k)) as u8;
            writes.bytes.push((self.word_start + k as usize, byte));
        }
        (self.word, self.length) = (0, 0);
    }
}

/// Whether a byte placed `where_` belongs to a declared field alone: whatever a source sees
/// there is the field's (a vptr slot the table places inside a member is judged by what was
/// seen).
pub(crate) fn is_field_only(where_: u8) -> bool {
    where_ & (Placement::FIELD | Placement::VPTR) == Placement::FIELD
}

/// Whether every byte in `bytes` (at most eight) of a class placed `placement` (one entry per
/// byte) [`is_field_only`]: tested as one word where eight bytes from the first are there.
pub(crate) fn fields_only(placement: &[u8], bytes: Range<usize>) -> bool {
    let fields = u64::from_ne_bytes([Placement::FIELD; 8]);
    let both = u64::from_ne_bytes([Placement::FIELD | Placement::VPTR; 8]);
    let Some(eight) = placement.get(bytes.start..bytes.start + 8) else {
        return placement[bytes].iter().all(|&where_| is_field_only(where_));
    };
    let word = u64::from_ne_bytes(eight.try_into().expect("eight bytes"));
    // the bytes past the run count as fields
    let run = u64::MAX >> (64 - 8 * bytes.len().clamp(1, 8));
    let word = word & run | fields & !run;
    word & both == fields || bytes.is_empty()
}

/// Adds `byte` to ascending runs: to the last one when it ends there, else as a new run.
fn extend_runs(runs: &mut Vec<Range<usize>>, byte: usize) {
    match runs.last_mut() {
        Some(run) if run.end == byte => run.end = byte + 1,
        _ => runs.push(byte..byte + 1),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;

    pub(crate) fn class(size: usize, fields: Vec<Range<usize>>, vptrs: Vec<usize>) -> ModuleClass {
        let fields: Vec<ModuleField> = fields
            .into_iter()
            .map(|r| ModuleField {
                name: "f".into(),
                owner: "T".into(),
                type_name: "char".into(),
                offset: r.start,
                size: r.len(),
                bits: None,
            })
            .collect();
        ModuleClass {
            name: Arc::from("T"),
            type_id_name: "1T".into(),
            size,
            align: 8,
            placement: Placement::of(size, &fields, &vptrs),
            fields,
            bases: vec![],
            vptr_offsets: vptrs,
            construct: None,
            destroy: None,
            measure_bases: None,
        }
    }

    fn word(at: usize, value: u64, size: usize) -> Vec<Observed> {
        let mut observed = vec![Observed::Untouched; size];
        for (k, byte) in value.to_le_bytes().iter().enumerate() {
            observed[at + k] = Observed::Constant(*byte);
        }
        observed
    }

    #[test]
    fn fields_only_tests_each_byte_of_a_run_at_once() {
        let (field, vptr) = (Placement::FIELD, Placement::VPTR);
        // placed: 0..8 fields, 8 padding, 9..16 fields, 16 a vptr in a member, 17..20 fields
        let mut placement = [field; 20];
        placement[8] = 0;
        placement[16] = field | vptr;
        let placement = &placement[..];
        assert!(fields_only(placement, 0..0));
        assert!(fields_only(placement, 0..3));
        assert!(fields_only(placement, 0..8));
        assert!(!fields_only(placement, 1..9));
        assert!(!fields_only(placement, 7..9));
        assert!(!fields_only(placement, 8..9));
        assert!(fields_only(placement, 9..16));
        assert!(!fields_only(placement, 9..17));
        // fewer than eight bytes left to the end: tested byte by byte
        assert!(!fields_only(placement, 15..17));
        assert!(!fields_only(placement, 16..17));
        assert!(fields_only(placement, 17..20));
    }

    #[test]
    fn vptr_field_and_padding_are_told_apart() {
        // vptr at 0..8, field at 8..12 (left uninitialised), padding 12..16
        let observed = word(0, 0x1122_3344_5566_7788, 16);
        let image = classify(
            &class(16, vec![Range { start: 8, end: 12 }], vec![0]),
            &observed,
        )
        .unwrap();
        assert_eq!(image.implicit_runs(), vec![0..8]);
        assert_eq!(image.writes.words, vec![(0, !0x1122_3344_5566_7788)]);
        assert_eq!(image.writes.word_at(0), Some(0x1122_3344_5566_7788));
        assert!(image.writes.bytes.is_empty());
        assert!(image.byte_map()[8..12]
            .iter()
            .all(|&b| b == ByteClass::Field));
        assert!(image.byte_map()[12..]
            .iter()
            .all(|&b| b == ByteClass::Padding));
        assert!(image.findings().is_empty());
    }

    #[test]
    fn each_vptr_slot_is_placed_with_where_it_starts() {
        let placement = Placement::of(24, &[], &[0, 8]);
        let slot = Placement::VPTR | Placement::SLOT;
        assert_eq!(placement[0], slot);
        assert!(placement[1..8].iter().all(|&p| p == Placement::VPTR));
        assert_eq!(placement[8], slot);
        assert!(placement[16..].iter().all(|&p| p == 0));
    }

    #[test]
    fn vptr_inside_a_member_is_implicit() {
        let observed = word(8, 7, 24);
        let image = classify(
            &class(24, vec![Range { start: 8, end: 24 }], vec![8]),
            &observed,
        )
        .unwrap();
        assert_eq!(image.implicit_runs(), vec![8..16]);
    }

    #[test]
    fn stores_of_any_width_make_whole_words_from_each_run_start() {
        let piece = |at, bytes, value| Written::new(at, bytes, Some(value));
        // 4 + 4 bytes: one word; then 8 + 2 bytes after a gap: a word and two bytes
        let written = [
            piece(0, 4, 0x5566_7788),
            piece(4, 4, 0x1122_3344),
            piece(16, 8, 0xAA),
            piece(24, 2, 0xBBCC),
        ];
        let image = classify_written(&class(32, vec![], vec![0, 16]), &written).unwrap();
        assert_eq!(
            image.writes.words,
            vec![(0, !0x1122_3344_5566_7788), (16, !0xAA)]
        );
        assert_eq!(image.writes.bytes, vec![(24, 0xCC), (25, 0xBB)]);
        assert_eq!(image.implicit_runs(), vec![0..8, 16..26]);
        // the same bytes seen one by one (as the probe sees them) give the same writes
        let mut observed = vec![Observed::Untouched; 32];
        for (k, byte) in 0x1122_3344_5566_7788u64.to_le_bytes().iter().enumerate() {
            observed[k] = Observed::Constant(*byte);
        }
        observed[16] = Observed::Constant(0xAA);
        observed[17..24].fill(Observed::Constant(0));
        observed[24] = Observed::Constant(0xCC);
        observed[25] = Observed::Constant(0xBB);
        let probed = classify(&class(32, vec![], vec![0, 16]), &observed).unwrap();
        assert_eq!(probed.writes, image.writes);
    }

    #[test]
    fn varying_writes_outside_fields_are_anomalous() {
        let mut observed = vec![Observed::Untouched; 8];
        observed[3] = Observed::Varying;
        assert_eq!(
            classify(&class(8, vec![], vec![]), &observed).unwrap_err(),
            ImageFailure::Anomalous(vec![3])
        );
    }

    #[test]
    fn implicit_bytes_outside_vptr_slots_are_reported() {
        let observed = word(8, 9, 16);
        let image = classify(&class(16, vec![], vec![0]), &observed).unwrap();
        assert_eq!(
            image.findings(),
            vec!["implicit bytes 8..16 lie outside the table's vptr slots"]
        );
    }
}
