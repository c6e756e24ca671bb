//! What the clang walk learns about each record, before any layout is computed.
//!
//! These types hold plain data copied out of libclang (no clang handles), keyed by the record's
//! qualified name. Names are `Arc<str>`: the model repeats them in every class that inherits a
//! member, and sharing them there costs a reference count instead of an allocation. Offsets of fields are relative to the record that declares them; base-class
//! offsets are absent on purpose: libclang (before 20) does not give them, and
//! `crate::itanium` computes them from these facts.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use rehydrate::tables::Access;

/// Where a declaration is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePos {
    /// File path as clang saw it.
    pub file: Arc<str>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl std::fmt::Display for SourcePos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// A direct base-class specifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseFacts {
    /// Qualified name of the base class (a key of [`AstFacts::records`]).
    pub record: Arc<str>,
    /// `virtual` was written.
    pub is_virtual: bool,
}

/// How a data member's type relates to class types, for vptrs inside members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberKind {
    /// Scalar, pointer, reference, enum, or an array of those.
    Plain,
    /// A class type clang sizes but whose definition libclang cannot show at all.
    Opaque,
    /// A member of class type (a key of [`AstFacts::records`]).
    Record(Arc<str>),
    /// An array (any number of dimensions) of a class type.
    RecordArray {
        /// Qualified name of the element class.
        element: Arc<str>,
        /// Total number of elements over all dimensions.
        count: u64,
        /// `sizeof` one element.
        element_size: u64,
    },
}

impl MemberKind {
    /// The complete objects of class type this member holds, as (class, offset) for a member
    /// at `offset`: none, the member itself, or each array element.
    pub fn objects(&self, offset: u64) -> Vec<(&str, u64)> {
        match self {
            MemberKind::Plain | MemberKind::Opaque => Vec::new(),
            MemberKind::Record(record) => vec![(&**record, offset)],
            MemberKind::RecordArray {
                element,
                count,
                element_size,
            } => (0..*count)
                .map(|i| (&**element, offset + i * element_size))
                .collect(),
        }
    }
}

/// One non-static data member; members of anonymous unions and structs are flattened into
/// their enclosing record with their offsets adjusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldFacts {
    /// Member name.
    pub name: Arc<str>,
    /// The member's type as written (`std::uint64_t`, `Multi[2]`).
    pub type_name: Arc<str>,
    /// Offset from the start of the declaring record, in bits.
    pub offset_bits: u64,
    /// `sizeof` the member's storage, in bytes (a reference member takes a pointer).
    pub size: u64,
    /// `alignof` the member's type, in bytes.
    pub align: u64,
    /// Width of a bit-field, in bits.
    pub bit_width: Option<u32>,
    /// Access in the declaring record.
    pub access: Access,
    /// Declared `[[no_unique_address]]`.
    pub no_unique_address: bool,
    /// Reached through an anonymous union or struct.
    pub in_anonymous: bool,
    /// Class-type relation, for nested vptrs and empty-subobject rules.
    pub kind: MemberKind,
}

/// Everything the layout algorithm and the emitters need to know about one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFacts {
    /// Qualified name as clang spells it.
    pub name: Arc<str>,
    /// Where the definition is.
    pub pos: SourcePos,
    /// `sizeof`, in bytes, from clang.
    pub size: u64,
    /// `alignof`, in bytes, from clang.
    pub align: u64,
    /// A `union` rather than a `struct` or `class`.
    pub is_union: bool,
    /// Has a pure virtual function (declared or inherited).
    pub is_abstract: bool,
    /// Declares at least one virtual member function itself.
    pub declares_virtual_methods: bool,
    /// Direct bases, in declaration order (empty when `bases_unknown`).
    pub bases: Vec<BaseFacts>,
    /// Why the bases cannot be known, when they cannot: libclang 19 shows an implicit template
    /// instantiation's bases only as the template wrote them (`_Vector_base<_Tp, _Alloc>`). Such
    /// a record cannot be laid out as a class of its own; as a member it is opaque (see
    /// [`crate::ir::FieldLayout::opaque`]).
    pub bases_unknown: Option<String>,
    /// A base left unknown is dynamic: its template declares a virtual function (so this
    /// record has a vptr at offset 0, whatever else the bases hold).
    pub unknown_base_is_dynamic: bool,
    /// Data members, in declaration order.
    pub fields: Vec<FieldFacts>,
    /// POD in the C++03 sense that the Itanium ABI uses to decide tail-padding reuse.
    pub is_pod_for_layout: bool,
    /// `new (p) T` is expected to compile from unrelated code.
    pub has_dummy_constructor: bool,
    /// `p->~T()` is expected to compile from unrelated code.
    pub is_destructible: bool,
}

/// The result of one clang walk.
#[derive(Debug, Clone, Default)]
pub struct AstFacts {
    /// Qualified names of the selected classes, in the order they were selected.
    pub selected: Vec<Arc<str>>,
    /// The ones among them the request names (`--class`): they fail the request when they cannot
    /// be described, where the others are skipped with the reason.
    pub selected_by_name: Vec<Arc<str>>,
    /// Classes the selection reached that generated code cannot name: (class, reason).
    pub unnameable: Vec<(String, String)>,
    /// Facts for every selected record and every record they reach (bases, member types).
    pub records: FxHashMap<String, RecordFacts>,
}
