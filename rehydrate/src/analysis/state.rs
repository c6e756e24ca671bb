//! The machine state along one path: registers, flags, and the two memories the analyser
//! follows (the object under construction and the stack), each a map of byte offsets to
//! cells of at most eight bytes.

use std::num::NonZeroU64;

use super::value::{mask, Flags, Value};

/// One stored value (32 bytes: a state's memories are copied with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Cell {
    /// Where it starts in its region (within [`REACH`] of the region's start).
    at: i32,
    /// 1 to 8.
    pub bytes: u32,
    pub value: Value,
    /// The instruction that stored it ([`Writer::Disagreement`] when two paths joined here
    /// with different values).
    pub writer: Writer,
}

/// Who wrote a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Writer {
    /// The instruction at this address.
    Instruction(Ip),
    /// Paths that reached the same point with different values.
    Disagreement,
}

/// An instruction's address, kept complemented as [`super::value::Word`] is, and never zero: a
/// [`Writer`] takes eight bytes, not sixteen (cells are copied with every state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Ip(NonZeroU64);

impl Ip {
    pub fn new(ip: u64) -> Ip {
        // only 2^64 - 1 complements to zero, and no instruction lies there (kept as 0)
        Ip(NonZeroU64::new(!ip).unwrap_or(NonZeroU64::MAX))
    }

    pub fn get(self) -> u64 {
        !self.0.get()
    }
}

/// The cells a memory makes room for at its first store (a constructor's object and frame
/// rarely hold more).
const CELLS_AT_FIRST: usize = 16;

/// How far from its start a region is followed (objects and frames are far smaller).
const REACH: i64 = 1 << 30;

/// A memory region: cells by offset, sorted, never overlapping (a constructor's object and
/// frame hold a few dozen at most: a sorted vector is the cheapest map for them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct Memory {
    cells: Vec<Cell>,
}

impl Memory {
    /// The index of the first cell starting at or after `at`.
    fn first_from(&self, at: i64) -> usize {
        self.cells.partition_point(|cell| cell.start() < at)
    }

    /// The cell holding byte `at`, if any.
    pub fn cell_holding(&self, at: i64) -> Option<(i64, &Cell)> {
        let after = self.cells.partition_point(|cell| cell.start() <= at);
        let cell = self.cells.get(after.checked_sub(1)?)?;
        (cell.end() > at).then_some((cell.start(), cell))
    }

    /// Stores `value` (`bytes` wide, at most 8) at `at`; what it overlaps is cut back (the
    /// bytes of a constant outside the store stay known).
    #[inline(always)]
    pub fn store(&mut self, at: i64, bytes: u32, value: Value, writer: Writer) {
        if !(1..=8).contains(&bytes) || !(-REACH..=REACH).contains(&at) {
            return; // not a place a constructor's object or frame can be
        }
        // the most common case here, where the instruction is executed: past every cell (a
        // frame's pushes, a constructor's stores in order), with room for one more
        let past_every_cell = self.cells.last().is_some_and(|cell| cell.end() <= at);
        if past_every_cell && self.cells.len() < self.cells.capacity() {
            // made where it goes (a cell made once and copied is read back wider than its
            // fields were written: the processor then waits for the writes to land)
            self.cells.push(cell_at(at, bytes, value, writer));
            return;
        }
        self.store_among(at, bytes, value, writer);
    }

    /// [`Self::store`] in the other cases.
    #[inline(never)]
    fn store_among(&mut self, at: i64, bytes: u32, value: Value, writer: Writer) {
        let end = at + i64::from(bytes);
        let new = || cell_at(at, bytes, value, writer);
        // the common cases first: past every cell, between two cells, or over exactly one
        // cell of the same width
        match self.cells.last() {
            None => {
                self.cells.reserve(CELLS_AT_FIRST); // one allocation, not a growth per store
                self.cells.push(new());
                return;
            }
            Some(cell) if cell.end() <= at => {
                self.cells.push(new());
                return;
            }
            _ => {}
        }
        let index = self.first_from(at);
        let next_start = self.cells.get(index).map_or(i64::MAX, Cell::start);
        if next_start == at && self.cells[index].bytes == bytes {
            self.cells[index] = new();
            return;
        }
        let after_previous = index == 0 || self.cells[index - 1].end() <= at;
        if after_previous && end <= next_start {
            self.cells.insert(index, PLACEHOLDER);
            self.cells[index] = new();
            return;
        }
        self.store_over(new());
    }

    /// [`Self::store`] of `new`, which overlaps cells stored before.
    #[inline(never)]
    fn store_over(&mut self, new: Cell) {
        let (at, end) = (new.start(), new.end());
        // cells are at most 8 bytes: only those starting in at-7..end can overlap, and of
        // those, the ones from the first that ends past `at`
        let mut first = self.first_from(at - 7);
        while first < self.cells.len() && {
            let cell = &self.cells[first];
            cell.start() < end && cell.end() <= at
        } {
            first += 1;
        }
        let last = self.first_from(end);
        if first == last {
            self.cells.insert(first, new);
            return;
        }
        // what is left of the overlapped cells (bytes before `at` of the first, after `end`
        // of the last) around the new one: at most 7 + 1 + 7 cells
        let mut cells = [new; 15];
        let mut count = 0;
        let first_cell = self.cells[first];
        remainder(first_cell, first_cell.start()..at, &mut cells, &mut count);
        cells[count] = new;
        count += 1;
        let last_cell = self.cells[last - 1];
        remainder(last_cell, end..last_cell.end(), &mut cells, &mut count);
        self.cells
            .splice(first..last, cells[..count].iter().copied());
    }

    /// The `bytes`-wide value at `at` (at most 8): a cell stored exactly there, or constant
    /// bytes put together; anything else is unknown.
    pub fn load(&self, at: i64, bytes: u32) -> Value {
        if !(1..=8).contains(&bytes) || !(-REACH..=REACH).contains(&at) {
            return Value::UNKNOWN;
        }
        if let Ok(index) = self.cells.binary_search_by_key(&at, Cell::start) {
            let cell = &self.cells[index];
            if cell.bytes == bytes {
                return cell.value;
            }
            if cell.bytes > bytes {
                return cell.value.truncate(bytes);
            }
        }
        let mut value = 0u64;
        for byte in at..at + i64::from(bytes) {
            let Some((start, cell)) = self.cell_holding(byte) else {
                return Value::UNKNOWN;
            };
            let Some(v) = cell.value.as_const() else {
                return Value::UNKNOWN;
            };
            value |= (v >> ((byte - start) * 8) & 0xFF) << ((byte - at) * 8);
        }
        Value::constant(value & mask(bytes))
    }

    /// Marks `bytes` bytes from `at` as written with values it does not know.
    pub fn clobber(&mut self, at: i64, bytes: u64, writer: Writer) {
        let mut offset = at;
        let end = at.saturating_add(bytes.min(REACH as u64) as i64);
        while offset < end {
            let width = (end - offset).min(8) as u32;
            self.store(offset, width, Value::UNKNOWN, writer);
            offset += i64::from(width);
        }
    }

    /// Forgets every cell below `offset` (a callee's frame after it returned).
    pub fn forget_below(&mut self, offset: i64) {
        let below = self.first_from(offset);
        self.cells.drain(..below);
    }

    /// The cells, by offset.
    pub fn cells(&self) -> impl Iterator<Item = (i64, &Cell)> {
        self.cells.iter().map(|cell| (cell.start(), cell))
    }

    /// The cell stored exactly at `at`.
    fn get(&self, at: i64) -> Option<&Cell> {
        let index = self.cells.binary_search_by_key(&at, Cell::start).ok()?;
        Some(&self.cells[index])
    }

    /// What two paths agree on: cells equal in both are kept; any other cell of either
    /// becomes unknown ([`Writer::Disagreement`]).
    pub fn join(&self, other: &Memory) -> Memory {
        if self == other {
            return self.clone();
        }
        // the same value from different instructions is still agreement
        let same = |a: &Cell, b: &Cell| a.bytes == b.bytes && a.value == b.value;
        let mut joined = Memory::default();
        for cell in &self.cells {
            if other
                .get(cell.start())
                .is_some_and(|theirs| same(cell, theirs))
            {
                joined.cells.push(*cell);
            }
        }
        for cell in self.cells.iter().chain(&other.cells) {
            if !joined
                .get(cell.start())
                .is_some_and(|kept| same(kept, cell))
            {
                let bytes = u64::from(cell.bytes);
                joined.clobber(cell.start(), bytes, Writer::Disagreement);
            }
        }
        joined
    }
}

/// Appends to `out` what remains of `cell` over `bytes`: a constant's bytes one by one (they
/// stay known), an unknown value as one cell.
fn remainder(cell: Cell, bytes: std::ops::Range<i64>, out: &mut [Cell], count: &mut usize) {
    let start = cell.start();
    if bytes.is_empty() {
        return;
    }
    match cell.value.as_const() {
        Some(v) => {
            for byte in bytes {
                let piece = Value::constant(v >> ((byte - start) * 8) & 0xFF);
                out[*count] = cell_at(byte, 1, piece, cell.writer);
                *count += 1;
            }
        }
        None => {
            let width = (bytes.end - bytes.start) as u32;
            out[*count] = cell_at(bytes.start, width, Value::UNKNOWN, cell.writer);
            *count += 1;
        }
    }
}

/// A cell at `at` (within [`REACH`]: checked by the stores).
/// What a slot holds while it is made room for.
const PLACEHOLDER: Cell = Cell {
    at: 0,
    bytes: 0,
    value: Value::UNKNOWN,
    writer: Writer::Disagreement,
};

#[inline(always)]
fn cell_at(at: i64, bytes: u32, value: Value, writer: Writer) -> Cell {
    Cell {
        at: at as i32,
        bytes,
        value,
        writer,
    }
}

impl Cell {
    fn start(&self) -> i64 {
        i64::from(self.at)
    }

    fn end(&self) -> i64 {
        self.start() + i64::from(self.bytes)
    }
}

/// The vector registers' lanes (64 bits each, four per `ymm`).
pub(crate) type Lanes = [Value; 4];

/// `xmm0`/`ymm0` .. `xmm15`/`ymm15`: allocated when first written with something known (most
/// constructors use none; a state moves and forks often, and this would be most of it).
#[derive(Debug, Clone, Default)]
pub(crate) struct VectorFile(Option<Box<[Lanes; 16]>>);

/// A register nothing is known of.
const UNKNOWN_LANES: Lanes = [Value::UNKNOWN; 4];

impl VectorFile {
    /// The lanes of register `index`; `None` past the 16 tracked (`xmm16` and up).
    pub fn get(&self, index: usize) -> Option<Lanes> {
        (index < 16).then(|| self.0.as_ref().map_or(UNKNOWN_LANES, |file| file[index]))
    }

    /// Sets register `index` (ignored past the 16 tracked).
    pub fn set(&mut self, index: usize, lanes: Lanes) {
        if index >= 16 || (self.0.is_none() && lanes == UNKNOWN_LANES) {
            return;
        }
        self.registers()[index] = lanes;
    }

    /// Every register unknown.
    pub fn forget(&mut self) {
        self.0 = None;
    }

    /// The registers, allocated.
    pub fn registers(&mut self) -> &mut [Lanes; 16] {
        self.0.get_or_insert_with(|| Box::new([UNKNOWN_LANES; 16]))
    }

    /// What two paths agree on.
    fn join(&self, other: &VectorFile) -> VectorFile {
        if self.0.is_none() && other.0.is_none() {
            return VectorFile(None);
        }
        let mut joined = VectorFile::default();
        for index in 0..16 {
            let (mine, theirs) = (self.get(index), other.get(index));
            if let (Some(mine), Some(theirs)) = (mine, theirs) {
                joined.set(
                    index,
                    std::array::from_fn(|lane| mine[lane].join(theirs[lane])),
                );
            }
        }
        joined
    }
}

impl PartialEq for VectorFile {
    /// Unallocated equals all unknown.
    fn eq(&self, other: &VectorFile) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(mine), Some(theirs)) => mine == theirs,
            (Some(file), None) | (None, Some(file)) => file.iter().all(|l| *l == UNKNOWN_LANES),
        }
    }
}

impl Eq for VectorFile {}

/// The machine along one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct State {
    /// `rax` .. `r15`, by register number.
    pub gpr: [Value; 16],
    pub vector: VectorFile,
    pub flags: Flags,
    pub object: Memory,
    pub stack: Memory,
}

/// Register numbers.
pub(crate) const RSP: usize = 4;
pub(crate) const RDI: usize = 7;
/// The registers a call may change (System V).
pub(crate) const CALLER_SAVED: [usize; 9] = [0, 1, 2, 6, 7, 8, 9, 10, 11];

impl Default for State {
    /// Nothing known (no allocation): what a state moved out of is left with.
    fn default() -> State {
        State {
            gpr: [Value::UNKNOWN; 16],
            vector: VectorFile::default(),
            flags: Flags::UNKNOWN,
            object: Memory::default(),
            stack: Memory::default(),
        }
    }
}

impl State {
    /// The state at the entry of a constructor: `this` in `rdi`, the return address on the
    /// stack, everything else unknown.
    #[cfg(test)]
    pub fn at_constructor_entry() -> State {
        let mut state = State::default();
        state.enter_constructor();
        state
    }

    /// Makes this the state at the entry of a constructor (`this` in `rdi`, the return
    /// address on the stack, everything else unknown), keeping its memories' buffers.
    pub fn enter_constructor(&mut self) {
        self.gpr = [Value::UNKNOWN; 16];
        self.gpr[RDI] = Value::This(0);
        self.gpr[RSP] = Value::Stack(0);
        self.vector.forget();
        self.flags = Flags::UNKNOWN;
        self.object.cells.clear();
        self.stack.cells.clear();
    }

    /// What a call to a function the analyser does not follow leaves: the caller-saved
    /// registers, every vector register and the flags unknown.
    pub fn clobber_for_call(&mut self) {
        for register in CALLER_SAVED {
            self.gpr[register] = Value::UNKNOWN;
        }
        self.vector.forget();
        self.flags = Flags::UNKNOWN;
    }

    /// What two paths agree on.
    pub fn join(&self, other: &State) -> State {
        let mut gpr = self.gpr;
        for (mine, theirs) in gpr.iter_mut().zip(&other.gpr) {
            *mine = mine.join(*theirs);
        }
        State {
            gpr,
            vector: self.vector.join(&other.vector),
            flags: if self.flags == other.flags {
                self.flags
            } else {
                Flags::UNKNOWN
            },
            object: self.object.join(&other.object),
            stack: self.stack.join(&other.stack),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Writer = Writer::Disagreement;

    #[test]
    fn loads_see_the_last_store_and_pieces_of_constants() {
        let mut memory = Memory::default();
        memory.store(0, 8, Value::constant(0x1122_3344_5566_7788), W);
        assert_eq!(memory.load(0, 8), Value::constant(0x1122_3344_5566_7788));
        assert_eq!(memory.load(0, 4), Value::constant(0x5566_7788));
        assert_eq!(memory.load(4, 4), Value::constant(0x1122_3344));
        memory.store(2, 2, Value::constant(0xAAAA), W);
        assert_eq!(memory.load(0, 8), Value::constant(0x1122_3344_AAAA_7788));
        memory.store(8, 8, Value::This(16), W);
        assert_eq!(memory.load(8, 8), Value::This(16));
        assert_eq!(memory.load(8, 4), Value::UNKNOWN);
        memory.store(12, 4, Value::constant(1), W);
        assert_eq!(memory.load(8, 8), Value::UNKNOWN);
        assert_eq!(memory.load(12, 4), Value::constant(1));
    }

    #[test]
    fn stores_agree_with_a_byte_by_byte_model() {
        // a small linear congruential generator: the test is the same on every run
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |bound: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % bound
        };
        for _ in 0..200 {
            let mut memory = Memory::default();
            let mut model: [Option<Option<u8>>; 40] = [None; 40]; // untouched / unknown / byte
            for _ in 0..30 {
                let (at, bytes) = (next(32) as i64, next(8) as u32 + 1);
                let value = (next(3) > 0).then(|| next(u64::MAX));
                let stored = value.map_or(Value::UNKNOWN, |v| Value::constant(v & mask(bytes)));
                memory.store(at, bytes, stored, W);
                for k in 0..bytes as usize {
                    model[at as usize + k] = Some(value.map(|v| (v >> (8 * k)) as u8));
                }
                let cells: Vec<(i64, Cell)> = memory.cells().map(|(k, c)| (k, *c)).collect();
                for pair in cells.windows(2) {
                    assert!(
                        pair[0].0 + i64::from(pair[0].1.bytes) <= pair[1].0,
                        "{cells:?}"
                    );
                }
                for (byte, expected) in model.iter().enumerate() {
                    let loaded = memory.load(byte as i64, 1);
                    match expected {
                        Some(Some(v)) => assert_eq!(loaded, Value::constant(u64::from(*v))),
                        _ => assert_eq!(loaded, Value::UNKNOWN, "byte {byte}"),
                    }
                    let held = cells
                        .iter()
                        .any(|(k, c)| (*k..*k + i64::from(c.bytes)).contains(&(byte as i64)));
                    assert_eq!(held, expected.is_some(), "byte {byte}");
                }
            }
        }
    }

    #[test]
    fn a_join_keeps_only_what_both_paths_agree_on() {
        let mut a = Memory::default();
        let mut b = Memory::default();
        a.store(0, 8, Value::constant(1), W);
        b.store(0, 8, Value::constant(1), W);
        a.store(8, 8, Value::constant(2), W);
        b.store(8, 8, Value::constant(3), W);
        a.store(16, 8, Value::constant(4), W);
        let joined = a.join(&b);
        assert_eq!(joined.load(0, 8), Value::constant(1));
        assert_eq!(joined.load(8, 8), Value::UNKNOWN);
        assert_eq!(joined.load(16, 8), Value::UNKNOWN);
        assert!(joined.cells().all(|(_, c)| c.bytes <= 8));
    }
}
