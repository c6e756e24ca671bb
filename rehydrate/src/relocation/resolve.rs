//! Resolving found words on the threads that found them.
//!
//! A scan finds millions of words that share a few thousand values (most are a few vptrs
//! repeated). Each scan thread keeps its last resolutions at hand ([`Tally`]) and asks the
//! shared [`Resolutions`] only for a value it has not seen; a word that resolves is kept as its
//! place and the index of its target, in the list of the piece of memory it was found in
//! ([`Rewrites`]): 8 bytes a word, written by the thread that found it. Words that do not resolve are few and are judged afterwards, in address
//! order, by the plan (where they lie decides whether they refuse the reload).
//!
//! Locks: the mutex around [`Resolutions`] is the only lock of the runtime a scan thread takes.
//! While holding it, resolving reads the builds' ELF indexes, may copy the old build's
//! read-only data, and may ask the dynamic loader (`dladdr`, which takes the loader's own lock
//! and nothing of the runtime's).

use std::sync::Mutex;

use rustc_hash::FxHashMap;

use super::address_map::{AddressMap, Resolution, Target};
use super::scan::{Found, Piece, PIECE};
use super::{ReferenceKind, RelocationCounts};

/// Every value resolved so far and the targets of those that resolve, shared by the scan
/// threads.
pub(super) struct Resolutions<'a> {
    pub map: AddressMap<'a>,
    /// The old build's base (values are kept as offsets from it, see [`Target`]).
    old_base: usize,
    /// Value minus the old base -> its resolution.
    pub resolved: FxHashMap<u64, Resolution>,
    /// (value minus the old base, where it must point) of every value that resolves.
    pub targets: Vec<(u64, Target)>,
    /// Value minus the old base -> its index in `targets`.
    pub target_index: FxHashMap<u64, u32>,
}

/// What a scan thread keeps of a value's resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cached {
    /// Re-pointed to `targets[index]`; a reference of this kind.
    To(u32, ReferenceKind),
    /// Anything else: judged by the plan afterwards, by where the word lies.
    Other,
}

impl<'a> Resolutions<'a> {
    pub fn new(map: AddressMap<'a>, old_base: usize) -> Resolutions<'a> {
        Resolutions {
            map,
            old_base,
            resolved: FxHashMap::default(),
            targets: Vec::new(),
            target_index: FxHashMap::default(),
        }
    }

    /// The resolution of the value `offset` above the old base, resolved once.
    pub fn resolve(&mut self, offset: u64) -> &Resolution {
        let (map, base) = (&mut self.map, self.old_base);
        self.resolved
            .entry(offset)
            .or_insert_with(|| map.resolve(base + offset as usize))
    }

    /// The index in `targets` of `target`, the resolution of the value `offset`.
    pub fn target(&mut self, offset: u64, target: Target) -> u32 {
        let targets = &mut self.targets;
        *self.target_index.entry(offset).or_insert_with(|| {
            targets.push((offset, target));
            (targets.len() - 1) as u32
        })
    }

    /// What a scan thread keeps of the resolution of the value `offset`.
    fn cached(&mut self, offset: u64) -> Cached {
        match *self.resolve(offset) {
            Resolution::To { target, kind } => Cached::To(self.target(offset, target), kind),
            _ => Cached::Other,
        }
    }
}

/// Slots of a scan thread's recent resolutions.
const RECENT: usize = 1024;

/// What one scan thread keeps: its recent resolutions, its counts, and the words it found that
/// do not resolve.
pub(super) struct Tally {
    recent: Vec<(u64, Cached)>,
    pub counts: RelocationCounts,
    /// (thread, words) found on thread stacks: counted, never rewritten.
    pub stack_words: Vec<(u32, usize)>,
    /// (region index, word) of the words whose value does not resolve.
    pub others: Vec<(usize, Found)>,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            recent: vec![(u64::MAX, Cached::Other); RECENT],
            counts: RelocationCounts::default(),
            stack_words: Vec::new(),
            others: Vec::new(),
        }
    }

    /// Takes in `word`, found in `piece` (of the stack of `stack_of`, if one): resolved, it
    /// goes to `rewrites` (the list of the piece).
    pub fn take(
        &mut self,
        shared: &Mutex<Resolutions<'_>>,
        rewrites: &mut Vec<PieceWord>,
        piece: &Piece,
        stack_of: Option<u32>,
        word: Found,
    ) {
        if let Some(thread) = stack_of {
            self.count_stack_words(thread, 1);
            return;
        }
        let slot = &mut self.recent[(word.offset as usize >> 3) % RECENT];
        if slot.0 != word.offset {
            let cached = shared
                .lock()
                .expect("no scan thread panics holding the resolutions")
                .cached(word.offset);
            *slot = (word.offset, cached);
        }
        match slot.1 {
            Cached::To(index, kind) => {
                self.counts.bump(kind);
                let at = ((word.location - piece.span.get().start) / 8) as u32;
                rewrites.push(PieceWord::new(at, index));
            }
            Cached::Other => self.others.push((piece.region, word)),
        }
    }

    /// Adds `other`'s counts and stack words to these (its unresolved words are taken apart).
    pub fn merge(&mut self, other: &Tally) {
        self.counts.vptrs += other.counts.vptrs;
        self.counts.functions += other.counts.functions;
        self.counts.data += other.counts.data;
        self.counts.read_only_data += other.counts.read_only_data;
        for &(thread, words) in &other.stack_words {
            self.count_stack_words(thread, words);
        }
    }

    /// Counts `words` more found on the stack of `thread`.
    fn count_stack_words(&mut self, thread: u32, words: usize) {
        match self.stack_words.iter_mut().find(|(t, _)| *t == thread) {
            Some((_, count)) => *count += words,
            None => self.stack_words.push((thread, words)),
        }
    }
}

/// A word of a piece to rewrite: its place in the piece (in words) and its target's index.
/// These lists lie in the heap the scans read: read as a word, each has its top bit set
/// ([`PLACE_TAG`]), so it never looks like an address into a build (below 2^47).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PieceWord {
    index: u32,
    /// The place, with [`PLACE_TAG`].
    tagged_at: u32,
}

/// Set in every [`PieceWord::tagged_at`]: the top bit of the word on little-endian x86-64.
const PLACE_TAG: u32 = 1 << 31;

const _: () = assert!(
    PIECE / 8 < PLACE_TAG as usize,
    "a piece's words are numbered below the tag"
);

impl PieceWord {
    pub fn new(at: u32, index: u32) -> PieceWord {
        PieceWord {
            index,
            tagged_at: at | PLACE_TAG,
        }
    }

    fn at(self) -> u32 {
        self.tagged_at & !PLACE_TAG
    }
}

/// The words a commit rewrites, in address order, kept in the lists of the pieces of memory
/// they were found in.
#[derive(Default)]
pub(super) struct Rewrites {
    /// (the piece's start, its words), not empty, in address order.
    pieces: Vec<(usize, Vec<PieceWord>)>,
}

impl Rewrites {
    /// `pieces`: (a piece's start, its words to rewrite), in address order.
    pub fn new(pieces: impl IntoIterator<Item = (usize, Vec<PieceWord>)>) -> Rewrites {
        let pieces: Vec<_> = pieces.into_iter().filter(|(_, w)| !w.is_empty()).collect();
        let rewrites = Rewrites { pieces };
        debug_assert!(
            rewrites
                .iter()
                .zip(rewrites.iter().skip(1))
                .all(|(a, b)| a.0 < b.0),
            "found in address order"
        );
        rewrites
    }

    pub fn len(&self) -> usize {
        self.pieces.iter().map(|(_, words)| words.len()).sum()
    }

    /// (address of the word, index into the targets), in address order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.pieces.iter().flat_map(|(start, words)| {
            words
                .iter()
                .map(move |w| (start + 8 * w.at() as usize, w.index))
        })
    }

    /// The target index of the word at `address`, if it is rewritten.
    pub fn at(&self, address: usize) -> Option<u32> {
        let piece = self.pieces.partition_point(|(start, _)| *start <= address);
        let (start, words) = self.pieces.get(piece.checked_sub(1)?)?;
        let at = u32::try_from((address - start) / 8).ok()?;
        if (address - start) % 8 != 0 {
            return None;
        }
        words
            .binary_search_by_key(&at, |w| w.at())
            .ok()
            .map(|i| words[i].index)
    }
}

/// The target index of `at` in `list` (sorted by place).
pub(super) fn index_in<P: Ord + Copy>(list: &[(P, u32)], at: P) -> Option<u32> {
    list.binary_search_by_key(&at, |r| r.0)
        .ok()
        .map(|i| list[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_are_found_by_address_across_pieces() {
        let words = |list: &[(u32, u32)]| -> Vec<PieceWord> {
            list.iter()
                .map(|&(at, index)| PieceWord::new(at, index))
                .collect()
        };
        let rewrites = Rewrites::new([
            (0, words(&[(1, 0), (2, 1)])),
            (4096, words(&[])),
            (8192, words(&[(0, 2)])),
            (PIECE, words(&[(0, 3), (1, 4)])),
        ]);
        assert_eq!(rewrites.len(), 5);
        let all: Vec<_> = rewrites.iter().collect();
        let expected = [(8, 0), (16, 1), (8192, 2), (PIECE, 3), (PIECE + 8, 4)];
        assert_eq!(all, expected);
        for (address, index) in all {
            assert_eq!(rewrites.at(address), Some(index));
        }
        for missing in [
            0,
            12,
            24,
            4096,
            8188,
            8200,
            PIECE - 8,
            PIECE + 4,
            PIECE + 16,
        ] {
            assert_eq!(rewrites.at(missing), None, "{missing}");
        }
        assert_eq!(Rewrites::default().at(8), None);
    }

    #[test]
    fn a_piece_word_read_as_a_word_is_no_user_space_address() {
        let word = PieceWord::new((PIECE / 8 - 1) as u32, u32::MAX);
        // SAFETY: a `repr(C)` pair of u32s is 8 plain bytes.
        let as_word: u64 = unsafe { std::mem::transmute(word) };
        assert!(as_word >= 1 << 63, "{as_word:#x}");
        assert_eq!(word.at(), (PIECE / 8 - 1) as u32);
    }
}
