//! Static constructor analysis (x86-64): which bytes of an object a class's constructor writes
//! with compiler-generated values (vptrs), read from its machine code without running it.
//!
//! The constructor ([`constructors`]) is executed symbolically ([`explore`], [`semantics`]):
//! `this` in `rdi` is a tracked value; vtable addresses come from `lea` rip-relative or
//! loads through the GOT, VTT entries and vtable slots from read-only memory ([`process`]);
//! calls into the build are followed (through the PLT, with a VTT in `rsi`), others clobber
//! the caller-saved registers, allocations return memory that is not the object; both sides
//! of a branch it cannot decide are explored and their results joined ([`state`]): a slot
//! paths disagree on is unknown. The last store to a slot wins, so construction vtables are
//! overwritten by the final ones.
//!
//! The result is the object's bytes as every returning path leaves them, or the reason it
//! gave up (an indirect jump, a loop it cannot bound, a vptr slot it cannot determine); never
//! a guess. Each analysis is bounded ([`explore::MAX_STEPS`] instructions) and panics on no
//! input.
//!
//! Assumption, from the Itanium C++ ABI: only constructors and destructors store vptrs, so a
//! call the analysis cannot follow into a function that is not a constructor may change
//! fields and registers but not the object's vptrs. The runtime cross-checks every result
//! with the table's vptr slots (and, on request, the probe).

pub(crate) mod constructors;
mod explore;
mod names;
mod process;
mod registers;
mod semantics;
mod state;
#[cfg(test)]
mod tests;
mod value;

use std::borrow::Cow;

use iced_x86::{Decoder, DecoderOptions};

use crate::image::{
    classify_written, fields_only, is_field_only, ClassImage, ImageFailure, Placement, Written,
};
use crate::module::ModuleClass;
use crate::relocation::elf::is_vtable_name;
pub use names::Names;
use names::SymbolName;
pub(crate) use process::Process;
use state::{State, Writer};

/// Why an analysis stopped without a result. Named for people only when shown (names are
/// demangled then: a helper call that gives up is an ordinary event).
#[derive(Debug, Clone)]
pub(crate) struct GiveUp {
    /// What happened.
    pub what: String,
    /// Where (complemented).
    at: value::Word,
    /// The functions called on the way there, innermost first (mangled names).
    called_in: Vec<String>,
    /// Ends the whole analysis (the budget ran out), not only the call it happened in.
    fatal: bool,
}

impl GiveUp {
    pub(crate) fn at(ip: u64, what: impl Into<String>) -> GiveUp {
        GiveUp {
            what: what.into(),
            at: value::Word::new(ip),
            called_in: Vec::new(),
            fatal: false,
        }
    }

    /// The reason, for people.
    pub(crate) fn reason(&self, process: &Process<'_>) -> String {
        let mut reason = format!("{} at {}", self.what, process.describe(self.at.get()));
        for function in &self.called_in {
            reason.push_str(&format!(", in {} called", demangle(function)));
        }
        reason
    }
}

/// One address-valued word the constructor leaves in the object. What it points into is
/// named by the [`Names`] of the build it was read in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImplicitWord {
    /// Byte offset in the object.
    pub offset: usize,
    /// The symbol it points into and how far past the symbol's start; `None` for an address
    /// in no symbol.
    symbol: Option<(SymbolName, u64)>,
}

impl ImplicitWord {
    /// Describes the word `value` at `offset`.
    pub(crate) fn of(process: &Process<'_>, offset: usize, value: u64) -> ImplicitWord {
        ImplicitWord {
            offset,
            symbol: process
                .place(value)
                .map(|place| (place.kept_name(), value - place.start)),
        }
    }

    /// Whether it points into a symbol.
    pub fn in_symbol(&self) -> bool {
        self.symbol.is_some()
    }

    /// [`Names::vtable`], named by the build `process` views.
    pub(crate) fn vtable_in<'a>(&'a self, process: &'a Process<'_>) -> Option<(&'a str, u64)> {
        self.target(|name| process.name_of(name))
            .and_then(vtable_of)
    }

    /// [`Names::holds`], named by the build `process` views.
    pub(crate) fn holds_in(&self, process: &Process<'_>) -> String {
        holds_of(self.target(|name| process.name_of(name)))
    }

    /// The symbol it points into, named by `name`, and how far past the symbol's start.
    fn target<'a>(
        &'a self,
        name: impl FnOnce(&'a SymbolName) -> &'a str,
    ) -> Option<(&'a str, u64)> {
        self.symbol
            .as_ref()
            .map(|(symbol, offset)| (name(symbol), *offset))
    }
}

/// A word's target when it is a vtable group (mangled symbol) and an address point in it.
fn vtable_of((name, offset): (&str, u64)) -> Option<(&str, u64)> {
    is_vtable_name(name).then_some((name, offset))
}

/// What a word points at, for people (`vtable for game::Robot+0x10`).
fn holds_of(target: Option<(&str, u64)>) -> String {
    match target {
        Some((name, 0)) => demangle(name),
        Some((name, offset)) => format!("{}+{offset:#x}", demangle(name)),
        None => "an address in no symbol".into(),
    }
}

/// A mangled name as people write it (`vtable for game::Robot`); the name itself when it does
/// not demangle.
pub fn demangle(name: &str) -> String {
    process::Place::named(name).demangled()
}

/// What the analysis read from a constructor. Names refer to the symbols of the build it
/// read, named by that build's [`Names`], and are mangled (demangling is for people, and
/// costs more than the analysis): see [`demangle`].
#[derive(Debug, Clone)]
pub struct ConstructorReading {
    /// The function executed (its name; `None` for the module's construct thunk), and what
    /// kind of constructor it is.
    constructor: (Option<SymbolName>, &'static str),
    /// The functions interpreted, in the order first entered: see [`Self::followed`]. The
    /// first (the constructor, or the thunk) by address: its symbol is looked up when asked.
    entry: value::Word,
    followed: Vec<explore::Followed>,
    /// Calls not followed: the function (mangled, or an address) and why.
    pub not_followed: Vec<(String, String)>,
    /// Instructions executed, over every path.
    pub steps: usize,
    pub(crate) image: ClassImage,
}

impl ConstructorReading {
    /// The function executed, for people (`game::Robot::Robot(int) (complete-object
    /// constructor)`), named by the [`Names`] of the build it was read in.
    pub fn describe_constructor(&self, names: &Names) -> String {
        match &self.constructor {
            (Some(name), label) => constructors::describe(names.get(name), label),
            (None, label) => format!("{label} (`new (p) T`)"),
        }
    }

    /// The address-valued words it leaves in the object outside fields (the vptrs), by
    /// offset, named by the [`Names`] of the build it was read in: the words of its image
    /// that point into a symbol (looked up when asked: a load needs only the image).
    pub fn words(&self, names: &Names) -> Vec<ImplicitWord> {
        names.words_of(&self.image.writes)
    }

    /// The functions interpreted, in the order first entered (mangled names, or addresses),
    /// named by the [`Names`] of the build it was read in.
    pub fn followed<'a>(&'a self, names: &'a Names) -> impl Iterator<Item = Cow<'a, str>> {
        std::iter::once(names.function_at(self.entry.get())).chain(
            self.followed
                .iter()
                .map(|f| Cow::Borrowed(names.get(&f.name))),
        )
    }

    /// Where each function interpreted lies, when its size is known: what the analysis
    /// benchmark's baselines decode.
    pub(crate) fn spans(&self, process: &Process<'_>) -> Vec<Span> {
        let entry = self.entry.get();
        let entry_end = process
            .place(entry)
            .filter(|place| place.start == entry)
            .and_then(|place| place.end);
        let followed = self.followed.iter().filter_map(|f| f.bounds);
        entry_end
            .map(|end| Span(value::Word::new(entry), value::Word::new(end)))
            .into_iter()
            .chain(followed.map(|(start, end)| Span(start, end)))
            .collect()
    }
}

/// Where a function lies: its start and end, complemented (see [`value::Word`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span(value::Word, value::Word);

/// Decodes `spans` with one decoder, moved to each (`decoder`, made at the first and kept
/// between calls), as the analysis decodes: iced-x86's decoding without setting a decoder up
/// per function. Returns the instructions decoded.
pub(crate) fn decode_spans_in_place<'p>(
    process: &'p Process<'p>,
    spans: &[Span],
    decoder: &mut Option<explore::SectionDecoder<'p>>,
) -> usize {
    let mut decoded = 0;
    for &Span(start, end) in spans {
        let (start, end) = (start.get(), end.get());
        let span = match decoder {
            Some(decoder) => decoder.decode_span(process, start, end),
            None => explore::SectionDecoder::at(process, start)
                .and_then(|made| decoder.insert(made).decode_span(process, start, end)),
        };
        decoded += span.unwrap_or(0);
    }
    decoded
}

/// Decodes `spans` with iced-x86 alone, a decoder for each, from start to end: the baseline
/// of the analysis benchmark. Returns the instructions decoded.
pub(crate) fn decode_spans(process: &Process<'_>, spans: &[Span]) -> usize {
    let mut decoded = 0;
    for &Span(start, end) in spans {
        let (start, end) = (start.get(), end.get());
        let Some(code) = process.code(start) else {
            continue;
        };
        let length = ((end - start) as usize).min(code.len());
        let mut decoder = Decoder::with_ip(64, &code[..length], start, DecoderOptions::NONE);
        let mut instruction = iced_x86::Instruction::default();
        while decoder.can_decode() {
            decoder.decode_out(&mut instruction);
            decoded += 1;
        }
    }
    decoded
}

/// The analysis of one class.
#[derive(Debug, Clone)]
pub enum Analysis {
    /// The image the constructor's code gives.
    Found(Box<ConstructorReading>),
    /// Why no image could be read; `tried` lists the functions tried.
    GaveUp {
        /// Why, for each function tried.
        reason: String,
        /// The functions tried, best first.
        tried: Vec<String>,
    },
}

/// Analyses the classes of one build one after another, keeping what every analysis sets up
/// (a decoder of the build's code, buffers) from one to the next.
pub(crate) struct Analyser<'p> {
    process: &'p Process<'p>,
    explorer: explore::Explorer<'p>,
    outside: Outside,
    /// The state analyses run in (its memories' buffers kept from one to the next).
    state: State,
    candidates: Vec<constructors::Candidate<'p>>,
}

impl<'p> Analyser<'p> {
    /// An analyser of the build `process` views.
    pub fn new(process: &'p Process<'p>) -> Analyser<'p> {
        Analyser {
            process,
            explorer: explore::Explorer::new(process),
            outside: Outside::default(),
            state: State::default(),
            candidates: Vec::new(),
        }
    }

    /// Analyses `class`'s constructors, best candidate first, until one gives an image.
    pub fn analyse(&mut self, class: &'p ModuleClass) -> Analysis {
        let mut candidates = std::mem::take(&mut self.candidates);
        constructors::candidates(class, self.process, &mut candidates);
        let analysis = self.analyse_candidates(class, &candidates);
        self.candidates = candidates;
        analysis
    }

    fn analyse_candidates(
        &mut self,
        class: &ModuleClass,
        candidates: &[constructors::Candidate],
    ) -> Analysis {
        if candidates.is_empty() {
            return Analysis::GaveUp {
                reason: format!(
                    "the build has no constructor of {} (inlined everywhere) and the class has no usable default constructor",
                    class.name
                ),
                tried: Vec::new(),
            };
        }
        let mut failures = Vec::new();
        for candidate in candidates {
            match self.analyse_one(class, candidate) {
                Ok(reading) => return Analysis::Found(reading),
                Err(reason) => failures.push(format!("{}: {reason}", candidate.description())),
            }
        }
        Analysis::GaveUp {
            reason: failures.join("; "),
            tried: candidates.iter().map(|c| c.description()).collect(),
        }
    }

    fn analyse_one(
        &mut self,
        class: &ModuleClass,
        candidate: &constructors::Candidate,
    ) -> Result<Box<ConstructorReading>, String> {
        let process = self.process;
        let explorer = &mut self.explorer;
        explorer.start(class.size as u64);
        let exit = &mut self.state;
        exit.enter_constructor();
        let outcome = explorer.run(candidate.address(), exit, 0);
        match outcome {
            Ok(true) => {}
            Ok(false) => return Err("no path returns (every one throws or stops)".into()),
            Err(give_up) => return Err(give_up.reason(process)),
        }
        let trace = std::mem::take(&mut explorer.trace);
        self.outside
            .read(&exit.object, class)
            .and_then(|outside| reading_of(class, process, candidate, exit, outside, trace))
    }
}

/// What the constructor left outside the class's fields (kept from one analysis to the next:
/// its contents are replaced by each).
#[derive(Default)]
struct Outside {
    /// The bytes written, ascending, store by store; see [`classify_written`].
    written: Vec<Written>,
    /// The constant whole words stored where a vptr slot starts (a vptr slot is never a
    /// field's alone), by offset.
    slots: Vec<(usize, value::Word)>,
}

impl Outside {
    /// Reads `object`, the constructor's stores into an object of `class`.
    fn read(&mut self, object: &state::Memory, class: &ModuleClass) -> Result<&Outside, String> {
        self.written.clear();
        self.slots.clear();
        let size = class.size;
        for (offset, cell) in object.cells() {
            let end = offset + i64::from(cell.bytes);
            if offset < 0 || end as usize > size {
                return Err(format!(
                    "stores outside the object (offset {offset}, {} bytes; sizeof is {size})",
                    cell.bytes
                ));
            }
            if fields_only(&class.placement, offset as usize..end as usize) {
                continue; // most stores initialise fields
            }
            let value = cell.value.as_const();
            let slot = class.placement[offset as usize] & Placement::SLOT != 0;
            if let Some(value) = value.filter(|_| cell.bytes == 8 && slot) {
                self.slots.push((offset as usize, value::Word::new(value)));
            }
            // the store's bytes outside fields, as pieces (one, unless it also wrote a field)
            let placement = &class.placement[offset as usize..end as usize];
            let mut k = 0;
            while k < placement.len() {
                if is_field_only(placement[k]) {
                    k += 1;
                    continue;
                }
                let length = placement[k..]
                    .iter()
                    .take_while(|&&where_| !is_field_only(where_))
                    .count();
                let piece = value.map(|v| v >> (8 * k));
                self.written
                    .push(Written::new(offset as usize + k, length as u8, piece));
                k += length;
            }
        }
        Ok(self)
    }
}

/// The reading of a constructor that returned with `exit`: its vptr slots checked (each
/// must hold a vtable address), its image.
fn reading_of(
    class: &ModuleClass,
    process: &Process<'_>,
    candidate: &constructors::Candidate,
    exit: &State,
    outside: &Outside,
    trace: explore::Trace,
) -> Result<Box<ConstructorReading>, String> {
    // who wrote an unknown value at a byte, to name them
    let writer_of = |byte: usize| {
        exit.object
            .cells()
            .find(|&(at, cell)| {
                cell.value.as_const().is_none()
                    && (at..at + i64::from(cell.bytes)).contains(&(byte as i64))
            })
            .map(|(_, cell)| cell.writer)
    };
    // each vptr slot must hold a vtable address; the image copies every constant byte
    // written outside the fields (an address in a field, a `std::function`'s manager or a
    // pointer member's default, is the field's), and which of its words point into symbols
    // is looked up when asked (`ConstructorReading::words`)
    for &(slot, value) in &outside.slots {
        let value = value.get();
        if !process.is_in_vtable(value) {
            let cell = exit.object.cell_holding(slot as i64).map(|(_, cell)| cell);
            let word = ImplicitWord::of(process, slot, value);
            let writer = writer_of(slot);
            return Err(vptr_slot_failure(
                process,
                slot,
                Some(word),
                cell,
                writer,
                &trace,
            ));
        }
    }
    if outside.slots.len() < class.vptr_offsets.len() {
        // a slot without a constant word: the first, in the table's order
        let missing = class
            .vptr_offsets
            .iter()
            .copied()
            .find(|&slot| !outside.slots.iter().any(|&(at, _)| at == slot));
        if let Some(slot) = missing {
            let cell = exit.object.cell_holding(slot as i64).map(|(_, cell)| cell);
            let writer = writer_of(slot);
            return Err(vptr_slot_failure(process, slot, None, cell, writer, &trace));
        }
    }

    let image = classify_written(class, &outside.written).map_err(|failure| match failure {
        ImageFailure::Anomalous(offsets) => format!(
            "bytes {offsets:?}, outside every field, hold values it cannot determine ({})",
            describe_writer(process, writer_of(offsets[0]))
        ),
        other => format!("{other:?}"),
    })?;
    // made in its box (a reading made first and moved there is read back in wider pieces
    // than it was written, and the processor waits for the writes to land)
    Ok(Box::new(ConstructorReading {
        constructor: (candidate.symbol.map(SymbolName::InBuild), candidate.label),
        entry: value::Word::new(candidate.address()),
        followed: trace.followed,
        not_followed: trace.not_followed,
        steps: trace.steps,
        image,
    }))
}

/// Why the table's vptr slot at `slot` holds no vtable address when the constructor returns
/// (`word`: the constant whole word there, if any; `writer`: who wrote an unknown value there).
fn vptr_slot_failure(
    process: &Process<'_>,
    slot: usize,
    word: Option<ImplicitWord>,
    cell: Option<&state::Cell>,
    writer: Option<Writer>,
    trace: &explore::Trace,
) -> String {
    let found = match cell.map(|cell| cell.value.as_const()) {
        Some(None) => format!(
            "a value it cannot determine ({})",
            describe_writer(process, writer)
        ),
        Some(Some(_)) => word
            .filter(|w| w.symbol.is_some())
            .map_or("a constant that is not a vtable address".into(), |w| {
                w.holds_in(process)
            }),
        _ => "nothing".into(),
    };
    let not_followed = if trace.not_followed.is_empty() {
        String::new()
    } else {
        let calls: Vec<String> = trace
            .not_followed
            .iter()
            .map(|(function, why)| format!("{} ({why})", demangle(function)))
            .collect();
        format!("; calls not followed: {}", calls.join(", "))
    };
    format!(
        "the table's vptr slot at offset {slot} holds {found} when the constructor returns{not_followed}"
    )
}

/// Who wrote an unknown value, for people.
fn describe_writer(process: &Process<'_>, writer: Option<Writer>) -> String {
    match writer {
        Some(Writer::Instruction(ip)) => {
            let ip = ip.get();
            let mnemonic = process
                .code(ip)
                .map(|code| Decoder::with_ip(64, code, ip, DecoderOptions::NONE).decode())
                .map(|ins| format!("{:?}", ins.mnemonic()).to_lowercase())
                .unwrap_or_else(|| "?".into());
            format!("written by `{mnemonic}` at {}", process.describe(ip))
        }
        Some(Writer::Disagreement) => "paths that disagree".into(),
        None => "not written".into(),
    }
}
