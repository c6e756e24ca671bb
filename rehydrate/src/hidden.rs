//! Addresses the runtime keeps in its own memory, complemented. A reload's scan reads every
//! word of the process, the runtime's own memory included, live or freed (and freed memory is
//! handed out again, where a new object's uninitialised member can still hold what was
//! there): the runtime's bookkeeping must never look like references into a build, or the
//! next reload re-points it, or counts it among the words lost in the heap (which
//! `Reload::refusing_lost_heap_words` refuses). `tests/freed_memory.rs` watches the
//! constructor analysis for such words.

use std::ops::Range;

/// A range of addresses, kept complemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HiddenRange {
    start: usize,
    end: usize,
}

impl HiddenRange {
    pub fn new(range: &Range<usize>) -> HiddenRange {
        HiddenRange {
            start: !range.start,
            end: !range.end,
        }
    }

    pub fn get(self) -> Range<usize> {
        !self.start..!self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_comes_back_as_it_was_kept_and_is_not_stored_as_it_is() {
        let range = 0x7f00_1000..0x7f00_3000;
        let hidden = HiddenRange::new(&range);
        assert_eq!(hidden.get(), range);
        // SAFETY: a plain two-word struct, read as its words.
        let words: [usize; 2] = unsafe { std::mem::transmute(hidden) };
        assert!(!words.contains(&range.start) && !words.contains(&range.end));
    }
}
