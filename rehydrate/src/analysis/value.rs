//! What the analyser knows about one 64-bit quantity (a register, a memory cell, a lane of a
//! vector register), and about the flags.
//!
//! Constants are kept complemented ([`Word`]): they are mostly addresses inside loaded builds
//! (vtables, the GOT, code), and the runtime's own memory must never look like references into
//! a build to a reload's scan.

use iced_x86::ConditionCode;

/// A constant, stored complemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Word(u64);

impl Word {
    pub fn new(value: u64) -> Word {
        Word(!value)
    }

    pub fn get(self) -> u64 {
        !self.0
    }
}

/// A value the analyser tracks: a tag and a word, each written whole (see [`Blank`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u64)]
pub(crate) enum Value {
    /// Anything: an argument, a field's contents, a result of arithmetic it does not follow,
    /// or two paths that disagree ([`Value::UNKNOWN`]).
    Unknown(Blank),
    /// A known constant (an address or a plain number).
    Const(Word),
    /// The address of the object under construction plus an offset.
    This(i64),
    /// The stack pointer at the analysed function's entry plus an offset.
    Stack(i64),
    /// Memory an allocation call returned (`operator new`, `malloc`), plus an offset: never
    /// the object.
    Fresh(Fresh),
}

/// What an unknown value carries in its word: always zero. Without it the word would be
/// whatever the register or memory it was made in last held, a raw address as likely as not,
/// and states are copied into the heap: a reload's scan would take such a word in freed
/// memory for a reference into the build (see [`Word`]). For the same reason the tag is a
/// whole word (`repr(u64)`), not a byte beside seven left as they were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Blank(u64);

/// A pointer into memory an allocation call returned: which allocation of the analysis, and
/// how far into it (48 bits, wrapping there: far past any object). One word, so that a
/// [`Value`] is a tag and a word, passed in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Fresh(u64);

impl Fresh {
    /// How many allocations an analysis tells apart (what later ones return is unknown).
    pub const ALLOCATIONS: u32 = 1 << 16;

    /// The start of allocation `id` (below [`Self::ALLOCATIONS`]).
    pub fn start_of(id: u32) -> Fresh {
        debug_assert!(id < Self::ALLOCATIONS);
        Fresh(u64::from(id) << 48)
    }

    fn id(self) -> u64 {
        self.0 >> 48
    }

    fn offset(self) -> i64 {
        ((self.0 << 16) as i64) >> 16
    }

    fn moved(self, delta: i64) -> Fresh {
        let offset = self.offset().wrapping_add(delta) as u64 & ((1 << 48) - 1);
        Fresh(self.id() << 48 | offset)
    }
}

/// Where the symbolic regions are placed when two of their pointers are compared: far from
/// zero and below 2^47, like any user-space address.
const REGION_BASE: u64 = 0x0000_4000_0000_0000;

impl Value {
    /// Nothing known.
    pub const UNKNOWN: Value = Value::Unknown(Blank(0));

    pub fn constant(value: u64) -> Value {
        Value::Const(Word::new(value))
    }

    pub fn as_const(self) -> Option<u64> {
        match self {
            Value::Const(word) => Some(word.get()),
            _ => None,
        }
    }

    /// The value plus `delta`.
    pub fn offset(self, delta: i64) -> Value {
        match self {
            Value::Const(word) => Value::constant(word.get().wrapping_add(delta as u64)),
            Value::This(k) => Value::This(k.wrapping_add(delta)),
            Value::Stack(k) => Value::Stack(k.wrapping_add(delta)),
            Value::Fresh(pointer) => Value::Fresh(pointer.moved(delta)),
            Value::Unknown(_) => Value::UNKNOWN,
        }
    }

    pub fn add(self, other: Value) -> Value {
        match (self, other) {
            (value, Value::Const(word)) | (Value::Const(word), value) => {
                value.offset(word.get() as i64)
            }
            _ => Value::UNKNOWN,
        }
    }

    pub fn sub(self, other: Value) -> Value {
        match (self, other) {
            (value, Value::Const(word)) => value.offset((word.get() as i64).wrapping_neg()),
            (Value::This(a), Value::This(b)) | (Value::Stack(a), Value::Stack(b)) => {
                Value::constant(a.wrapping_sub(b) as u64)
            }
            (Value::Fresh(a), Value::Fresh(b)) if a.id() == b.id() => {
                Value::constant(a.offset().wrapping_sub(b.offset()) as u64)
            }
            _ => Value::UNKNOWN,
        }
    }

    /// `self * factor` (scaled indexes, `imul` by a constant).
    pub fn scale(self, factor: u64) -> Value {
        match (self, factor) {
            (_, 0) => Value::constant(0),
            (value, 1) => value,
            (Value::Const(word), _) => Value::constant(word.get().wrapping_mul(factor)),
            _ => Value::UNKNOWN,
        }
    }

    /// Applies a function of constants; anything else is unknown.
    pub fn map_const(self, f: impl FnOnce(u64) -> u64) -> Value {
        self.as_const()
            .map_or(Value::UNKNOWN, |v| Value::constant(f(v)))
    }

    /// The low `bytes` bytes, zero-extended: a pointer does not survive truncation.
    pub fn truncate(self, bytes: u32) -> Value {
        if bytes >= 8 {
            return self;
        }
        self.map_const(|v| v & mask(bytes))
    }

    /// `self` as a number, for comparing it with `other`: both constants, or two pointers into
    /// the same region, or a pointer and zero (a null check).
    fn comparable(self, other: Value) -> Option<(u64, u64)> {
        let place = |value: Value| match value {
            Value::This(k) => Some((0, k)),
            Value::Stack(k) => Some((1, k)),
            Value::Fresh(pointer) => Some((2 + pointer.id(), pointer.offset())),
            _ => None,
        };
        let address = |k: i64| REGION_BASE.wrapping_add(k as u64);
        match (self.as_const(), other.as_const()) {
            (Some(a), Some(b)) => Some((a, b)),
            (None, Some(0)) => place(self).map(|(_, k)| (address(k), 0)),
            (Some(0), None) => place(other).map(|(_, k)| (0, address(k))),
            (None, None) => match (place(self), place(other)) {
                (Some((r, a)), Some((s, b))) if r == s => Some((address(a), address(b))),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether this value is a non-null pointer into a symbolic region.
    fn is_region_pointer(self) -> bool {
        matches!(self, Value::This(_) | Value::Stack(_) | Value::Fresh(..))
    }

    /// The join of two paths' values: kept where they agree.
    pub fn join(self, other: Value) -> Value {
        if self == other {
            self
        } else {
            Value::UNKNOWN
        }
    }
}

/// The mask of the low `bytes` bytes.
pub(crate) fn mask(bytes: u32) -> u64 {
    if bytes >= 8 {
        u64::MAX
    } else {
        (1u64 << (bytes * 8)) - 1
    }
}

/// What the last flag-setting instruction computed, as far as the branches that follow need.
/// Every byte is written, whatever it holds (states are copied into the heap: see [`Blank`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub(crate) struct Flags {
    operation: Operation,
    /// How wide the operands are.
    bytes: u32,
    /// The operands (`Sub`, `Add`), or the result and nothing (`Logic`).
    a: Value,
    b: Value,
}

/// What set the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
enum Operation {
    Unknown,
    /// `a - b` (`cmp`, `sub`, `dec` with b = 1, `neg` with a = 0).
    Sub,
    /// `a + b` (`add`, `inc`).
    Add,
    /// A logical result (`test`, `and`, `or`, `xor`): carry and overflow clear.
    Logic,
}

/// The flags a condition reads.
struct Bits {
    carry: bool,
    zero: bool,
    sign: bool,
    overflow: bool,
}

impl Flags {
    /// Nothing known.
    pub const UNKNOWN: Flags = Flags {
        operation: Operation::Unknown,
        bytes: 0,
        a: Value::UNKNOWN,
        b: Value::UNKNOWN,
    };

    /// `a - b`, `bytes` wide.
    pub fn sub(a: Value, b: Value, bytes: u32) -> Flags {
        Flags {
            operation: Operation::Sub,
            bytes,
            a,
            b,
        }
    }

    /// `a + b`, `bytes` wide.
    pub fn add(a: Value, b: Value, bytes: u32) -> Flags {
        Flags {
            operation: Operation::Add,
            bytes,
            a,
            b,
        }
    }

    /// A logical `result`, `bytes` wide.
    pub fn logic(result: Value, bytes: u32) -> Flags {
        Flags {
            operation: Operation::Logic,
            bytes,
            a: result,
            b: Value::UNKNOWN,
        }
    }

    /// The outcome of a condition, when the flags are known.
    pub fn condition(self, code: ConditionCode) -> Option<bool> {
        let bits = self.bits()?;
        Some(match code {
            ConditionCode::o => bits.overflow,
            ConditionCode::no => !bits.overflow,
            ConditionCode::b => bits.carry,
            ConditionCode::ae => !bits.carry,
            ConditionCode::e => bits.zero,
            ConditionCode::ne => !bits.zero,
            ConditionCode::be => bits.carry || bits.zero,
            ConditionCode::a => !bits.carry && !bits.zero,
            ConditionCode::s => bits.sign,
            ConditionCode::ns => !bits.sign,
            ConditionCode::l => bits.sign != bits.overflow,
            ConditionCode::ge => bits.sign == bits.overflow,
            ConditionCode::le => bits.zero || bits.sign != bits.overflow,
            ConditionCode::g => !bits.zero && bits.sign == bits.overflow,
            // parity is never tracked
            ConditionCode::p | ConditionCode::np | ConditionCode::None => return None,
        })
    }

    fn bits(self) -> Option<Bits> {
        let Flags { a, b, bytes, .. } = self;
        if self.operation == Operation::Unknown || !(1..=8).contains(&bytes) {
            return None;
        }
        let sign_of = |value: u64, bytes: u32| value >> (bytes * 8 - 1) & 1 == 1;
        match self.operation {
            Operation::Unknown => None,
            Operation::Sub => {
                let (x, y) = a.comparable(b)?;
                let m = mask(bytes);
                let (x, y) = (x & m, y & m);
                let r = x.wrapping_sub(y) & m;
                Some(Bits {
                    carry: x < y,
                    zero: r == 0,
                    sign: sign_of(r, bytes),
                    overflow: sign_of((x ^ y) & (x ^ r), bytes),
                })
            }
            Operation::Add => {
                let (x, y) = (a.as_const()?, b.as_const()?);
                let m = mask(bytes);
                let (x, y) = (x & m, y & m);
                let r = x.wrapping_add(y) & m;
                Some(Bits {
                    carry: r < x,
                    zero: r == 0,
                    sign: sign_of(r, bytes),
                    overflow: sign_of(!(x ^ y) & (x ^ r), bytes),
                })
            }
            Operation::Logic => {
                let result = a;
                let r = match result.as_const() {
                    Some(r) => r & mask(bytes),
                    // a pointer tested against itself: not null, not negative
                    None if result.is_region_pointer() && bytes == 8 => REGION_BASE,
                    None => return None,
                };
                Some(Bits {
                    carry: false,
                    zero: r == 0,
                    sign: sign_of(r, bytes),
                    overflow: false,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_of_constants_follow_the_processor() {
        let cmp = |a: u64, b: u64, bytes| Flags::sub(Value::constant(a), Value::constant(b), bytes);
        assert_eq!(cmp(3, 5, 8).condition(ConditionCode::b), Some(true));
        assert_eq!(cmp(3, 5, 8).condition(ConditionCode::l), Some(true));
        assert_eq!(cmp(u64::MAX, 5, 8).condition(ConditionCode::l), Some(true));
        assert_eq!(cmp(u64::MAX, 5, 8).condition(ConditionCode::a), Some(true));
        assert_eq!(cmp(5, 5, 4).condition(ConditionCode::e), Some(true));
        assert_eq!(
            cmp(0x1_0000_0005, 5, 4).condition(ConditionCode::e),
            Some(true)
        );
        assert_eq!(cmp(0x80, 1, 1).condition(ConditionCode::o), Some(true));
        assert_eq!(cmp(1, 1, 8).condition(ConditionCode::p), None);
    }

    #[test]
    fn pointers_into_allocations_keep_their_allocation_and_offset() {
        let (first, second) = (
            Value::Fresh(Fresh::start_of(0)),
            Value::Fresh(Fresh::start_of(Fresh::ALLOCATIONS - 1)),
        );
        assert_eq!(first.offset(24).sub(first.offset(8)), Value::constant(16));
        assert_eq!(first.offset(-8).sub(first), Value::constant(-8i64 as u64));
        assert_eq!(
            second.offset(-3).sub(second.offset(5)),
            Value::constant(-8i64 as u64)
        );
        // different allocations: no known difference
        assert_eq!(second.sub(first), Value::UNKNOWN);
        assert_eq!(first.offset(1).sub(second.offset(1)), Value::UNKNOWN);
        // far offsets wrap within the allocation, never into another one
        let far = second.offset(1 << 47).offset(1 << 47);
        assert_eq!(far, second);
        assert_eq!(std::mem::size_of::<Value>(), 16);
    }

    #[test]
    fn pointers_compare_within_their_region_and_against_null() {
        let same = Flags::sub(Value::This(8), Value::This(40), 8);
        assert_eq!(same.condition(ConditionCode::ne), Some(true));
        assert_eq!(same.condition(ConditionCode::b), Some(true));
        let null_check = Flags::logic(Value::This(0), 8);
        assert_eq!(null_check.condition(ConditionCode::e), Some(false));
        let apart = Flags::sub(Value::This(8), Value::Stack(8), 8);
        assert_eq!(apart.condition(ConditionCode::e), None);
        let unknown = Flags::sub(Value::UNKNOWN, Value::constant(0), 8);
        assert_eq!(unknown.condition(ConditionCode::e), None);
    }

    #[test]
    fn additions_set_carry_and_zero() {
        let add = Flags::add(Value::constant(u64::MAX), Value::constant(1), 8);
        assert_eq!(add.condition(ConditionCode::e), Some(true));
        assert_eq!(add.condition(ConditionCode::b), Some(true));
    }

    #[test]
    fn arithmetic_keeps_pointers_and_constants() {
        assert_eq!(Value::This(8).add(Value::constant(8)), Value::This(16));
        assert_eq!(Value::This(24).sub(Value::This(8)), Value::constant(16));
        assert_eq!(Value::This(8).truncate(4), Value::UNKNOWN);
        assert_eq!(
            Value::constant(0x1_0000_0002).truncate(4),
            Value::constant(2)
        );
        assert_eq!(Value::This(8).add(Value::This(8)), Value::UNKNOWN);
        assert_eq!(Word::new(5).get(), 5);
    }
}
