//! Probing a class: running its default constructor to see which bytes of an object are the
//! compiler's own, without trusting any one compiler's conventions. Used where the constructor
//! analysis gave up, and on request to cross-check it.
//!
//! Dummies are default-initialised (`new (p) T`) in buffers of the class's size and alignment,
//! each filled with a different sentinel byte; a byte that still holds each buffer's sentinel
//! is untouched, one identical in every dummy is constant, any other varies ([`Observed`]).

use std::alloc::{alloc, dealloc, Layout};

use crate::abi::ThunkStatus;
use crate::error::CppOperation;
use crate::image::{classify, ClassImage, ImageFailure, Observed};
use crate::module::ModuleClass;

/// Sentinel bytes, one per dummy; any two differ.
const SENTINELS: [u8; 3] = [0xA5, 0x5A, 0xC3];

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
) -> Result<(), ImageFailure> {
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
    Err(ImageFailure::CppException {
        operation,
        message: String::from_utf8_lossy(&message[..end]).into_owned(),
    })
}

/// Probes `class` with one dummy per sentinel.
pub(crate) fn probe(class: &ModuleClass) -> Result<ClassImage, ImageFailure> {
    let construct = class.construct.ok_or(ImageFailure::NotConstructible)?;
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
    let image = classify(class, &observe(&snapshots));
    scrub(snapshots);
    image
}

/// What the dummies show of each byte.
fn observe(snapshots: &[Vec<u8>]) -> Vec<Observed> {
    let size = snapshots.first().map_or(0, Vec::len);
    (0..size)
        .map(|byte| {
            let values: Vec<u8> = snapshots.iter().map(|s| s[byte]).collect();
            if values.iter().zip(SENTINELS).all(|(&v, s)| v == s) {
                Observed::Untouched
            } else if values.iter().all(|&v| v == values[0]) {
                Observed::Constant(values[0])
            } else {
                Observed::Varying
            }
        })
        .collect()
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

/// Compares the compiler's base offsets with the table's, measured on an object that holds
/// `image`'s implicit bytes (its vptrs, which the offsets of virtual bases are read through)
/// and zeros elsewhere: `measure_bases` only converts pointers, it runs no user code.
pub(crate) fn check_base_offsets_with(
    class: &ModuleClass,
    image: &ClassImage,
) -> Result<(), ImageFailure> {
    let Some(measure) = class.measure_bases else {
        return Ok(());
    };
    let buffer = Buffer::filled(class.size, class.align, 0);
    // SAFETY: the buffer has the class's size; nothing else uses it.
    unsafe { image.writes.apply(buffer.pointer as usize) };
    check_base_offsets(class, measure, buffer.pointer)
}

/// Compares the compiler's base offsets, measured on a real dummy, with the table's.
fn check_base_offsets(
    class: &ModuleClass,
    measure: crate::abi::MeasureBasesFn,
    dummy: *mut u8,
) -> Result<(), ImageFailure> {
    let mut measured = vec![0u64; class.bases.len()];
    // SAFETY: `dummy` is a constructed object of this class; `measured` has a slot per base.
    unsafe { measure(dummy.cast(), measured.as_mut_ptr()) };
    for (base, &compiler) in class.bases.iter().zip(&measured) {
        let table = base.offset;
        if table as u64 != compiler {
            return Err(ImageFailure::BaseMismatch(format!(
                "base {} is at offset {compiler} but the table says {table}: regenerate the tables",
                base.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinels_constants_and_varying_bytes_are_told_apart() {
        let snapshots: Vec<Vec<u8>> = SENTINELS
            .iter()
            .enumerate()
            .map(|(k, &s)| vec![s, 7, k as u8])
            .collect();
        assert_eq!(
            observe(&snapshots),
            vec![
                Observed::Untouched,
                Observed::Constant(7),
                Observed::Varying
            ]
        );
    }
}
