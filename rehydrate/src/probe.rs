//! Probing a class: which bytes of a live object are the compiler's own (vptrs, type-info
//! slots), found without trusting any one compiler's conventions.
//!
//! Dummies are default-initialised (`new (p) T`) in buffers of the class's size and alignment,
//! each filled with a different sentinel byte, then every byte is classified:
//! - a declared field (from the table) is never copied; vptr slots the table places inside
//!   members (polymorphic members, arrays of them) are judged by the probe instead;
//! - padding still holds each buffer's own sentinel;
//! - implicit bytes changed and are identical in every dummy: these are copied at reload;
//! - anomalous bytes changed but differ between dummies: never copied, and outside fields they
//!   make the class unrehydratable.
//!
//! The result is cross-checked with the table's vptr slots; disagreements are reported.

use std::alloc::{alloc, dealloc, Layout};
use std::ops::Range;

use crate::abi::ThunkStatus;
use crate::error::{CppOperation, Error};
use crate::module::ModuleClass;

/// Sentinel bytes, one per dummy; any two differ.
const SENTINELS: [u8; 3] = [0xA5, 0x5A, 0xC3];

/// What one byte of an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteClass {
    /// Part of a declared data member.
    Field,
    /// Untouched by the constructor.
    Padding,
    /// Written by the constructor with the same value every time: vptrs and the like.
    Implicit,
    /// Written with a different value in different dummies, outside any field.
    Anomalous,
}

/// The probe's result for one class.
#[derive(Debug, Clone)]
pub struct ClassImage {
    byte_map: Vec<ByteClass>,
    implicit_runs: Vec<Range<usize>>,
    pub(crate) writes: Writes,
    findings: Vec<String>,
}

impl ClassImage {
    /// What each byte of an object of the class is, one entry per byte.
    pub fn byte_map(&self) -> &[ByteClass] {
        &self.byte_map
    }

    /// The implicit bytes (copied at every reload) as ascending, merged ranges.
    pub fn implicit_runs(&self) -> &[Range<usize>] {
        &self.implicit_runs
    }

    /// Disagreements with the table (implicit bytes outside vptr slots, vptr slots that did
    /// not change), for people to read.
    pub fn findings(&self) -> &[String] {
        &self.findings
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
    fn from_runs(runs: &[Range<usize>], image: &[u8]) -> Writes {
        let mut writes = Writes::default();
        for run in runs {
            let mut at = run.start;
            while at + 8 <= run.end {
                let word: [u8; 8] = image[at..at + 8].try_into().expect("eight bytes");
                writes.words.push((at, !u64::from_ne_bytes(word)));
                at += 8;
            }
            writes.bytes.extend((at..run.end).map(|b| (b, image[b])));
        }
        writes
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

/// Why a class could not be probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeFailure {
    /// No usable default constructor.
    NotConstructible,
    /// The constructor or destructor threw.
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
}

impl ProbeFailure {
    /// The error a reload reports for `class`.
    pub(crate) fn to_error(&self, class: &str) -> Error {
        match self {
            ProbeFailure::NotConstructible => Error::NotConstructible {
                class: class.to_string(),
            },
            ProbeFailure::CppException { operation, message } => Error::CppException {
                operation: *operation,
                class: class.to_string(),
                message: message.clone(),
            },
            ProbeFailure::Anomalous(offsets) => Error::Anomalous {
                class: class.to_string(),
                offsets: offsets.clone(),
            },
            ProbeFailure::BaseMismatch(detail) => Error::TableMismatch {
                class: class.to_string(),
                detail: detail.clone(),
            },
        }
    }
}

/// An aligned, sentinel-filled buffer that frees itself.
struct Buffer {
    pointer: *mut u8,
    layout: Layout,
}

impl Buffer {
    fn filled(size: usize, align: usize, sentinel: u8) -> Buffer {
        let layout = Layout::from_size_align(size.max(1), align.max(1))
            .expect("class sizes and alignments are valid");
        // SAFETY: the layout has a non-zero size.
        let pointer = unsafe { alloc(layout) };
        if pointer.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        // SAFETY: `pointer` holds `layout.size()` writable bytes.
        unsafe { pointer.write_bytes(sentinel, layout.size()) };
        Buffer { pointer, layout }
    }

    fn bytes(&self, size: usize) -> &[u8] {
        // SAFETY: the buffer holds `size` initialised bytes (sentinels or constructor writes).
        unsafe { std::slice::from_raw_parts(self.pointer, size) }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: the buffer holds `layout.size()` bytes, no longer an object (destroyed, or never built).
        clear(unsafe { std::slice::from_raw_parts_mut(self.pointer, self.layout.size()) });
        // SAFETY: allocated in `filled` with this layout.
        unsafe { dealloc(self.pointer, self.layout) };
    }
}

/// Calls a thunk that reports C++ exceptions through a message buffer.
fn call_thunk(
    thunk: unsafe extern "C" fn(*mut std::ffi::c_void, *mut std::ffi::c_char, usize) -> i32,
    object: *mut u8,
    operation: CppOperation,
) -> Result<(), ProbeFailure> {
    let mut message = [0u8; 512];
    let (buffer, capacity) = (message.as_mut_ptr().cast(), message.len());
    // `object` is a buffer of the class's size and alignment, or a constructed object.
    // SAFETY: the thunk is the module's noexcept construct or destroy function for that class.
    let status = unsafe { thunk(object.cast(), buffer, capacity) };
    if status == ThunkStatus::Ok as i32 {
        return Ok(());
    }
    let end = message
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(message.len());
    Err(ProbeFailure::CppException {
        operation,
        message: String::from_utf8_lossy(&message[..end]).into_owned(),
    })
}

/// Probes `class` with one dummy per sentinel.
pub(crate) fn probe(class: &ModuleClass) -> Result<ClassImage, ProbeFailure> {
    let construct = class.construct.ok_or(ProbeFailure::NotConstructible)?;
    let size = class.size;
    let buffers: Vec<Buffer> = SENTINELS
        .iter()
        .map(|&s| Buffer::filled(size, class.align, s))
        .collect();
    let mut constructed = Vec::new();
    let mut failure = None;
    for buffer in &buffers {
        match call_thunk(construct, buffer.pointer, CppOperation::Construction) {
            Ok(()) => constructed.push(buffer),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    // Copy the bytes out and measure the bases before the destructors run.
    let snapshots: Vec<Vec<u8>> = constructed.iter().map(|b| b.bytes(size).to_vec()).collect();
    if failure.is_none() {
        if let (Some(measure), Some(dummy)) = (class.measure_bases, constructed.first()) {
            failure = check_base_offsets(class, measure, dummy.pointer).err();
        }
    }
    for buffer in &constructed {
        if let Some(destroy) = class.destroy {
            if let Err(error) = call_thunk(destroy, buffer.pointer, CppOperation::Destruction) {
                failure.get_or_insert(error);
            }
        }
    }
    if let Some(failure) = failure {
        scrub(snapshots);
        return Err(failure);
    }
    let image = classify(class, &snapshots);
    scrub(snapshots);
    image
}

/// Clears copies of dummies before freeing them: they hold vptrs into the build, which freed
/// memory must not show a reload's scan.
fn scrub(snapshots: Vec<Vec<u8>>) {
    for mut snapshot in snapshots {
        clear(&mut snapshot);
    }
}

/// Zeroes `bytes` with stores the compiler keeps even right before a free.
fn clear(bytes: &mut [u8]) {
    for byte in bytes {
        // SAFETY: a valid element of the slice; volatile so the store is not dropped before the free.
        unsafe { std::ptr::write_volatile(byte, 0) };
    }
}

/// Compares the compiler's base offsets, measured on a real dummy, with the table's.
fn check_base_offsets(
    class: &ModuleClass,
    measure: crate::abi::MeasureBasesFn,
    dummy: *mut u8,
) -> Result<(), ProbeFailure> {
    let mut measured = vec![0u64; class.bases.len()];
    // SAFETY: `dummy` is a constructed object of this class; `measured` has a slot per base.
    unsafe { measure(dummy.cast(), measured.as_mut_ptr()) };
    for (base, &compiler) in class.bases.iter().zip(&measured) {
        let table = base.offset;
        if table as u64 != compiler {
            return Err(ProbeFailure::BaseMismatch(format!(
                "base {} is at offset {compiler} but the table says {table}: regenerate the tables",
                base.name
            )));
        }
    }
    Ok(())
}

fn classify(class: &ModuleClass, snapshots: &[Vec<u8>]) -> Result<ClassImage, ProbeFailure> {
    let size = class.size;
    let mut in_field = vec![false; size];
    for range in class.fields.iter().map(|f| f.byte_range()) {
        let end = range.end.min(size);
        in_field[range.start.min(end)..end].fill(true);
    }
    let mut in_vptr = vec![false; size];
    for &slot in &class.vptr_offsets {
        let end = (slot + 8).min(size);
        in_vptr[slot.min(end)..end].fill(true);
    }
    let mut byte_map = Vec::with_capacity(size);
    let mut findings = Vec::new();
    let mut anomalous = Vec::new();
    for byte in 0..size {
        let values: Vec<u8> = snapshots.iter().map(|s| s[byte]).collect();
        let observed = if values.iter().zip(SENTINELS).all(|(&v, s)| v == s) {
            ByteClass::Padding
        } else if values.iter().all(|&v| v == values[0]) {
            ByteClass::Implicit
        } else {
            ByteClass::Anomalous
        };
        let class_of_byte = if in_field[byte] && !in_vptr[byte] {
            ByteClass::Field
        } else {
            observed
        };
        if in_vptr[byte] && observed != ByteClass::Implicit {
            findings.push(format!(
                "vptr slot byte {byte} was not written identically by every dummy ({observed:?})"
            ));
        }
        if observed == ByteClass::Implicit && !in_vptr[byte] && !in_field[byte] {
            findings.push(format!(
                "implicit byte {byte} lies outside the table's vptr slots"
            ));
        }
        if class_of_byte == ByteClass::Anomalous {
            anomalous.push(byte);
        }
        byte_map.push(class_of_byte);
    }
    if !anomalous.is_empty() {
        return Err(ProbeFailure::Anomalous(anomalous));
    }
    for finding in &findings {
        tracing::warn!(class = %class.name, "{finding}");
    }
    let mut implicit_runs: Vec<Range<usize>> = Vec::new();
    for (byte, kind) in byte_map.iter().enumerate() {
        if *kind != ByteClass::Implicit {
            continue;
        }
        match implicit_runs.last_mut() {
            Some(run) if run.end == byte => run.end += 1,
            _ => implicit_runs.push(byte..byte + 1),
        }
    }
    let writes = Writes::from_runs(&implicit_runs, &snapshots[0]);
    Ok(ClassImage {
        byte_map,
        implicit_runs,
        writes,
        findings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn class(size: usize, fields: Vec<Range<usize>>, vptrs: Vec<usize>) -> ModuleClass {
        ModuleClass {
            name: Arc::from("T"),
            size,
            align: 8,
            fields: fields
                .into_iter()
                .map(|r| crate::module::ModuleField {
                    name: "f".into(),
                    owner: "T".into(),
                    type_name: "char".into(),
                    offset: r.start,
                    size: r.len(),
                    bits: None,
                })
                .collect(),
            bases: vec![],
            vptr_offsets: vptrs,
            construct: None,
            destroy: None,
            measure_bases: None,
        }
    }

    fn snapshots(size: usize, write: impl Fn(usize, &mut Vec<u8>)) -> Vec<Vec<u8>> {
        SENTINELS
            .iter()
            .enumerate()
            .map(|(k, &s)| {
                let mut bytes = vec![s; size];
                write(k, &mut bytes);
                bytes
            })
            .collect()
    }

    #[test]
    fn vptr_field_and_padding_are_told_apart() {
        // vptr at 0..8, field at 8..12 (left uninitialised), padding 12..16
        let shots = snapshots(16, |_, b| {
            b[..8].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes())
        });
        let image = classify(
            &class(16, vec![Range { start: 8, end: 12 }], vec![0]),
            &shots,
        )
        .unwrap();
        assert_eq!(image.implicit_runs, vec![0..8]);
        assert_eq!(image.writes.words, vec![(0, !0x1122_3344_5566_7788)]);
        assert!(image.writes.bytes.is_empty());
        assert!(image.byte_map[8..12].iter().all(|&b| b == ByteClass::Field));
        assert!(image.byte_map[12..]
            .iter()
            .all(|&b| b == ByteClass::Padding));
        assert!(image.findings.is_empty());
    }

    #[test]
    fn vptr_inside_a_member_is_implicit() {
        let shots = snapshots(24, |_, b| b[8..16].copy_from_slice(&7u64.to_le_bytes()));
        let image = classify(
            &class(24, vec![Range { start: 8, end: 24 }], vec![8]),
            &shots,
        )
        .unwrap();
        assert_eq!(image.implicit_runs, vec![8..16]);
    }

    #[test]
    fn differing_writes_outside_fields_are_anomalous() {
        let shots = snapshots(8, |k, b| b[3] = k as u8);
        assert_eq!(
            classify(&class(8, vec![], vec![]), &shots).unwrap_err(),
            ProbeFailure::Anomalous(vec![3])
        );
    }

    #[test]
    fn disagreements_with_the_table_are_reported() {
        // The table says vptr at 0 but the constructor wrote 8..16 instead.
        let shots = snapshots(16, |_, b| b[8..16].copy_from_slice(&9u64.to_le_bytes()));
        let image = classify(&class(16, vec![], vec![0]), &shots).unwrap();
        assert!(image
            .findings
            .iter()
            .any(|f| f.contains("vptr slot byte 0")));
        assert!(image.findings.iter().any(|f| f.contains("implicit byte 8")));
    }
}
