//! A read-only copy of the old build's read-only data, for pointers into it that no symbol
//! names (string literals live in merged `.rodata.str*` sections without symbols): after the
//! reload they read the same bytes from the copy. Made only when such a pointer exists; kept
//! for the rest of the process once a reload that needed it commits (a few pages per reload).

use super::address_map::BuildView;
use super::elf::SectionKind;

/// A private, read-only mapping holding the bytes of the old build's read-only sections.
pub(crate) struct ReadOnlyCopy {
    /// Where the copied span lay in the old build.
    old_start: usize,
    old_end: usize,
    /// The copy.
    copy: *mut u8,
    length: usize,
}

// SAFETY: the copy is a private mapping this value owns alone; nothing about it is bound to the
// thread that made it (the plan's scan threads resolve through it under a mutex).
unsafe impl Send for ReadOnlyCopy {}

impl ReadOnlyCopy {
    /// Copies every read-only section of `old`, at the same distances from each other.
    pub fn of(old: &BuildView<'_>) -> std::io::Result<ReadOnlyCopy> {
        let read_only: Vec<_> = old
            .index
            .sections()
            .iter()
            .filter(|s| s.kind == SectionKind::ReadOnly)
            .collect();
        let (Some(first), Some(last)) = (read_only.first(), read_only.last()) else {
            return Err(std::io::Error::other("the old build has no read-only data"));
        };
        let old_start = old.base + first.start as usize;
        let old_end = old.base + last.end as usize;
        let length = old_end - old_start;
        let copy = crate::maps::map_anonymous(0, length, libc::PROT_READ | libc::PROT_WRITE)?;
        for section in &read_only {
            let from = old.base + section.start as usize;
            let size = (section.end - section.start) as usize;
            // SAFETY: each read-only section is mapped readable by the old build, which stays loaded meanwhile; it lies inside the span, which the copy has `length` writable bytes for.
            unsafe {
                std::ptr::copy_nonoverlapping(from as *const u8, copy.add(from - old_start), size)
            };
        }
        // SAFETY: the mapping made above.
        if unsafe { libc::mprotect(copy.cast(), length, libc::PROT_READ) } != 0 {
            let error = std::io::Error::last_os_error();
            // SAFETY: the mapping made above, not handed out.
            unsafe { libc::munmap(copy.cast(), length) };
            return Err(error);
        }
        Ok(ReadOnlyCopy {
            old_start,
            old_end,
            copy,
            length,
        })
    }

    /// Where `old`, an address in the old build's read-only data, lies in the copy.
    pub fn translate(&self, old: usize) -> Option<usize> {
        (self.old_start..self.old_end)
            .contains(&old)
            .then(|| self.copy as usize + (old - self.old_start))
    }

    /// Keeps the copy mapped for the rest of the process (references now point into it);
    /// returns its size in bytes.
    pub fn keep(self) -> usize {
        let length = self.length;
        std::mem::forget(self);
        length
    }
}

impl Drop for ReadOnlyCopy {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `of`, which no committed reference points into (a committed reload calls `keep`).
        unsafe { libc::munmap(self.copy.cast(), self.length) };
    }
}
