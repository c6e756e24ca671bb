//! Following a function's paths: straight-line code instruction by instruction, both sides of
//! a branch whose condition is not known (paths that reach the same point in the same state
//! are merged; past a few distinct states a point keeps only what they agree on), calls into
//! the build interpreted in place, everything else a clobbering call, all within one budget.

use std::sync::Arc;

use iced_x86::{Decoder, DecoderOptions, Instruction};
use rustc_hash::FxHashMap;

use super::names::SymbolName;
use super::process::{Place, Process};
use super::semantics::{Flow, Semantics};
use super::state::{Ip, State, Writer, RSP};
use super::value::{Fresh, Value, Word};
use super::GiveUp;

/// Instructions one analysis may execute, over every path and call.
pub(crate) const MAX_STEPS: usize = 200_000;
/// Instructions a call of a function that is not a constructor may take (within the whole
/// budget): past them the call is treated as one not followed.
const HELPER_STEPS: usize = 20_000;
/// How deep calls are followed.
const MAX_DEPTH: usize = 12;
/// Distinct states kept at one branch target before they are joined.
const MAX_STATES_PER_POINT: usize = 8;

/// Functions that never return: a path that calls one ends there.
const NO_RETURN: &[&str] = &[
    "__cxa_throw",
    "__cxa_rethrow",
    "__cxa_bad_cast",
    "__cxa_bad_typeid",
    "__cxa_throw_bad_array_new_length",
    "__cxa_pure_virtual",
    "__cxa_deleted_virtual",
    "__cxa_call_terminate",
    "_Unwind_Resume",
    "__stack_chk_fail",
    "__assert_fail",
    "abort",
    "exit",
    "_exit",
    "_ZSt9terminatev",
];

/// Allocation functions: what they return is fresh memory, never the object.
const ALLOCATORS: &[&str] = &[
    "_Znwm",
    "_Znam",
    "_ZnwmRKSt9nothrow_t",
    "_ZnamRKSt9nothrow_t",
    "_ZnwmSt11align_val_t",
    "_ZnamSt11align_val_t",
    "_ZnwmSt11align_val_tRKSt9nothrow_t",
    "_ZnamSt11align_val_tRKSt9nothrow_t",
    "malloc",
    "calloc",
    "realloc",
    "aligned_alloc",
    "memalign",
    "__cxa_allocate_exception",
];

fn never_returns(name: &str) -> bool {
    NO_RETURN.contains(&name) || (name.starts_with("_ZSt") && name.contains("__throw_"))
}

/// What one analysis did besides its result.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    /// The function it started in (its address: most analyses never need its symbol), then
    /// the others it interpreted, in the order first entered.
    pub entry: Option<Word>,
    pub followed: Vec<Followed>,
    /// Calls it did not follow (mangled name, or address) with why: outside the build, too
    /// deep, or its own analysis gave up in a function that is not a constructor.
    pub not_followed: Vec<(String, String)>,
    pub steps: usize,
}

/// A function an analysis interpreted.
#[derive(Debug, Clone)]
pub(crate) struct Followed {
    /// Its mangled name (or address).
    pub name: SymbolName,
    /// Its start and end, when its size is known (complemented).
    pub bounds: Option<(Word, Word)>,
}

/// The function being run, looked up in the symbol table when first needed (its bounds tell
/// a tail call from a jump within it; straight-line code never needs them).
struct Running<'p> {
    entry: u64,
    place: Option<Option<Place<'p>>>,
}

impl<'p> Running<'p> {
    fn at(entry: u64) -> Running<'p> {
        Running { entry, place: None }
    }

    fn place(&mut self, process: &'p Process<'p>) -> Option<&Place<'p>> {
        let entry = self.entry;
        self.place
            .get_or_insert_with(|| process.place(entry).filter(|p| p.start == entry))
            .as_ref()
    }
}

/// Runs analyses, one at a time: the budget, the path so far, and the instructions'
/// semantics (kept from one analysis to the next, with what it learnt of the build).
pub(crate) struct Explorer<'p> {
    process: &'p Process<'p>,
    semantics: Semantics<'p>,
    next_fresh: u32,
    pub trace: Trace,
    /// Whether each function called is a constructor, by address (complemented): the
    /// build's, kept from one analysis to the next.
    constructors: FxHashMap<Word, bool>,
    /// The step count the function being run may reach ([`HELPER_STEPS`] past a helper's
    /// entry).
    limit: usize,
    /// Decodes the code section last read, moved to each path's start and back after each
    /// call (made once, not per path, call or analysis: a decoder is a few hundred bytes to
    /// set up). Kept in place, not boxed: it holds raw pointers into the build's code, which
    /// must not be left in freed heap memory (see `value::Word`).
    decoder: Option<SectionDecoder<'p>>,
}

/// A decoder over one whole code section.
pub(crate) struct SectionDecoder<'p> {
    start: u64,
    end: u64,
    decoder: Decoder<'p>,
}

impl<'p> SectionDecoder<'p> {
    /// A decoder of the code section holding `ip`, at `ip`.
    pub fn at(process: &'p Process<'p>, ip: u64) -> Result<SectionDecoder<'p>, GiveUp> {
        let (start, code) = process
            .code_section(ip)
            .ok_or_else(|| GiveUp::at(ip, "execution reaches memory that is not code"))?;
        let mut decoder = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
        let end = start + code.len() as u64;
        decoder.set_ip(ip);
        decoder
            .set_position((ip - start) as usize)
            .expect("ip lies in the section");
        Ok(SectionDecoder {
            start,
            end,
            decoder,
        })
    }

    /// Decodes the instructions from `start` to `end`, moving there first (the analysis
    /// benchmark's stricter baseline: decoding alone, with one decoder as the analysis has);
    /// returns how many.
    pub fn decode_span(
        &mut self,
        process: &'p Process<'p>,
        start: u64,
        end: u64,
    ) -> Result<usize, GiveUp> {
        self.seek(process, start)?;
        let mut instruction = Instruction::default();
        let mut decoded = 0;
        while self.decoder.ip() < end && self.decoder.can_decode() {
            self.decoder.decode_out(&mut instruction);
            decoded += 1;
        }
        Ok(decoded)
    }

    /// Moves to `ip`, in this section or another.
    fn seek(&mut self, process: &'p Process<'p>, ip: u64) -> Result<(), GiveUp> {
        if !(self.start..self.end).contains(&ip) {
            *self = SectionDecoder::at(process, ip)?;
            return Ok(());
        }
        self.decoder.set_ip(ip);
        self.decoder
            .set_position((ip - self.start) as usize)
            .expect("ip lies in the section");
        Ok(())
    }
}

impl<'p> Explorer<'p> {
    pub fn new(process: &'p Process<'p>) -> Explorer<'p> {
        Explorer {
            process,
            semantics: Semantics::new(process),
            next_fresh: 0,
            trace: Trace::default(),
            constructors: FxHashMap::default(),
            limit: MAX_STEPS,
            decoder: None,
        }
    }

    /// Starts an analysis of a constructor of an object of `object_size` bytes: the budget
    /// and the trace start over (the last analysis's trace was taken, or is emptied here).
    pub fn start(&mut self, object_size: u64) {
        self.semantics.object_size = object_size;
        self.next_fresh = 0;
        let trace = &mut self.trace;
        trace.entry = None;
        trace.followed.clear();
        trace.not_followed.clear();
        trace.steps = 0;
        self.limit = MAX_STEPS;
    }

    /// Runs the function at `entry` from `state` (its return address already pushed) to its
    /// returns, leaving in `state` the join of the states it returns with; `false` when no
    /// path returns (what `state` then holds means nothing).
    pub fn run(&mut self, entry: u64, state: &mut State, depth: usize) -> Result<bool, GiveUp> {
        let entry_stack = state.gpr[RSP];
        let mut function = Running::at(entry);
        if self.trace.entry.is_none() {
            // the analysed constructor: named when someone asks (see `ConstructorReading`)
            self.trace.entry = Some(Word::new(entry));
        } else {
            self.list_followed(entry, function.place(self.process));
        }
        // the entry's path, then the paths its branches queued (made at the first branch:
        // most functions have none)
        let mut paths: Option<Box<Paths>> = None;
        let mut exit: Option<State> = None;
        let mut ip = entry;
        loop {
            self.seek(ip)?;
            let mut ins = Instruction::default();
            loop {
                self.tick(ip)?;
                let decoder = self.decoder.as_mut().expect("moved to `ip` above");
                decoder.decoder.decode_out(&mut ins);
                if ins.is_invalid() {
                    return Err(GiveUp::at(ip, "bytes it cannot decode"));
                }
                let next = ins.next_ip();
                match self.semantics.execute(state, &ins)? {
                    Flow::Next => ip = next,
                    Flow::Jump(target) => {
                        if self.is_tail_call(function.place(self.process), entry, target) {
                            if self.call(target, state, None, depth)? {
                                merge(&mut exit, std::mem::take(state));
                            }
                            break;
                        }
                        ip = target;
                        self.seek(ip)?;
                    }
                    Flow::JumpTo(target) => {
                        let Some(target) = target.as_const() else {
                            return Err(GiveUp::at(
                                ip,
                                "an indirect jump through an address it cannot determine",
                            ));
                        };
                        if self.is_tail_call(function.place(self.process), entry, target)
                            || !self.process.in_build(target)
                        {
                            if self.call(target, state, None, depth)? {
                                merge(&mut exit, std::mem::take(state));
                            }
                            break;
                        }
                        ip = target;
                        self.seek(ip)?;
                    }
                    Flow::Either { taken, not_taken } => {
                        let paths = paths.get_or_insert_with(Box::default);
                        paths.enqueue(taken, state.clone());
                        paths.enqueue(not_taken, std::mem::take(state));
                        break;
                    }
                    Flow::Call(target) => {
                        let falls_off = function
                            .place(self.process)
                            .and_then(|f| f.end)
                            .is_some_and(|end| next >= end);
                        if !self.call_value(target, state, Some(next), depth)? || falls_off {
                            break; // a call that does not return
                        }
                        ip = next;
                        self.seek(ip)?;
                    }
                    Flow::Return { extra } => {
                        if state.gpr[RSP] != entry_stack {
                            return Err(GiveUp::at(
                                ip,
                                "returns with a stack pointer it cannot follow",
                            ));
                        }
                        state.gpr[RSP] = entry_stack.offset(8 + extra as i64);
                        if exit.is_none() && paths.as_ref().is_none_or(|p| p.work.is_empty()) {
                            return Ok(true); // the only path: its state is the exit
                        }
                        merge(&mut exit, std::mem::take(state));
                        break;
                    }
                    Flow::Stop => break,
                }
            }
            let Some((start, queued)) = paths.as_mut().and_then(|p| p.work.pop()) else {
                break;
            };
            ip = start.get();
            *state = queued;
        }
        match exit {
            Some(exit) => {
                *state = exit;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Lists the function at `entry` (`function`, its symbol) among those followed, unless it
    /// is there already or is a PLT stub (the function it jumps to is listed).
    fn list_followed(&mut self, entry: u64, function: Option<&Place>) {
        let name = function.map_or_else(
            || SymbolName::Elsewhere(Arc::from(format!("{entry:#x}"))),
            Place::kept_name,
        );
        let stub = function.is_none() && self.process.is_stub(entry);
        let known = self.trace.entry == Some(Word::new(entry))
            || self.trace.followed.iter().any(|f| f.name == name);
        if !stub && !known {
            let bounds = function.and_then(|f| f.end);
            self.trace.followed.push(Followed {
                name,
                bounds: bounds.map(|end| (Word::new(entry), Word::new(end))),
            });
        }
    }

    /// Moves the decoder to `ip` (after a jump, a call, or at a path's start: calls move it
    /// too), making it at the first.
    fn seek(&mut self, ip: u64) -> Result<(), GiveUp> {
        match &mut self.decoder {
            Some(decoder) => decoder.seek(self.process, ip),
            None => {
                self.decoder = Some(SectionDecoder::at(self.process, ip)?);
                Ok(())
            }
        }
    }

    fn tick(&mut self, ip: u64) -> Result<(), GiveUp> {
        self.trace.steps += 1;
        if self.trace.steps > MAX_STEPS {
            let mut give_up = GiveUp::at(
                ip,
                format!("more than {MAX_STEPS} instructions: a loop it cannot bound"),
            );
            give_up.fatal = true;
            return Err(give_up);
        }
        if self.trace.steps > self.limit {
            return Err(GiveUp::at(
                ip,
                format!(
                    "more than {HELPER_STEPS} instructions in a function that is not a constructor"
                ),
            ));
        }
        Ok(())
    }

    /// Whether a jump to `target` leaves the function (a tail call) rather than staying in it.
    fn is_tail_call(&self, function: Option<&Place>, entry: u64, target: u64) -> bool {
        if target == entry {
            return false;
        }
        if let Some(end) = function.and_then(|f| f.end) {
            if target < entry || target >= end {
                return !self.is_cold_part(target);
            }
            return false;
        }
        // without bounds: a jump to the start of another function
        self.process
            .place(target)
            .is_some_and(|p| p.start == target && !p.name.contains(".cold"))
    }

    fn is_cold_part(&self, target: u64) -> bool {
        self.process
            .place(target)
            .is_some_and(|p| p.name.contains(".cold"))
    }

    /// [`Self::call`] of whatever `target` holds.
    fn call_value(
        &mut self,
        target: Value,
        state: &mut State,
        return_to: Option<u64>,
        depth: usize,
    ) -> Result<bool, GiveUp> {
        match target.as_const() {
            Some(target) => self.call(target, state, return_to, depth),
            None => {
                self.trace.not_followed.push((
                    "an indirect call".into(),
                    "through an address it cannot determine".into(),
                ));
                state.clobber_for_call();
                Ok(true)
            }
        }
    }

    /// A call of `target` (`return_to` is where it returns; `None` for a tail call, which
    /// returns to this function's caller), leaving in `state` the state it returns with;
    /// `false` when it does not return.
    fn call(
        &mut self,
        target: u64,
        state: &mut State,
        return_to: Option<u64>,
        depth: usize,
    ) -> Result<bool, GiveUp> {
        let place = self.process.place(target).filter(|p| p.start == target);
        let name = place.as_ref().map(|p| p.name.clone()).unwrap_or_default();
        if never_returns(&name) {
            return Ok(false);
        }
        if ALLOCATORS.contains(&name.as_ref()) {
            self.opaque_call(state, return_to, true);
            return Ok(true);
        }
        let called = || {
            place
                .as_ref()
                .map_or_else(|| format!("{target:#x}"), |p| p.name.to_string())
        };
        if !self.process.in_build(target) || depth >= MAX_DEPTH {
            let why = if depth >= MAX_DEPTH {
                "calls nested too deep"
            } else {
                "outside the build"
            };
            self.trace.not_followed.push((called(), why.into()));
            self.opaque_call(state, return_to, false);
            return Ok(true);
        }
        // a constructor's state is run in place (when it gives up, so does the analysis); a
        // helper's on a copy, the caller's kept for a helper it cannot follow
        let constructor = self.is_constructor(target, &name);
        let mut copy = (!constructor).then(|| state.clone());
        let callee = copy.as_mut().unwrap_or(state);
        if let Some(return_to) = return_to {
            let pushed = callee.gpr[RSP].offset(-8);
            callee.gpr[RSP] = pushed;
            let writer = Writer::Instruction(Ip::new(target));
            self.semantics
                .store(callee, pushed, 8, Value::constant(return_to), writer)?;
        }
        let outer_limit = self.limit;
        if !constructor {
            self.limit = outer_limit.min(self.trace.steps + HELPER_STEPS);
        }
        let outcome = self.run(target, callee, depth + 1);
        self.limit = outer_limit;
        match outcome {
            Ok(true) => {
                if let Value::Stack(k) = callee.gpr[RSP] {
                    callee.stack.forget_below(k);
                }
                if let Some(returned) = copy {
                    *state = returned;
                }
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(give_up) if !give_up.fatal && !constructor => {
                // Only constructors and destructors write vptrs (the Itanium ABI): a helper it
                // cannot follow only clobbers what a call may.
                self.trace
                    .not_followed
                    .push((called(), format!("its analysis gave up: {}", give_up.what)));
                self.opaque_call(state, return_to, false);
                Ok(true)
            }
            Err(mut give_up) => {
                give_up.called_in.push(called());
                Err(give_up)
            }
        }
    }

    /// What a call it does not follow leaves in `state`: the caller-saved registers
    /// clobbered, and `rax` fresh memory when it is an allocation (`fresh`).
    fn opaque_call(&mut self, state: &mut State, return_to: Option<u64>, fresh: bool) {
        state.clobber_for_call();
        if fresh {
            state.gpr[0] = match self.next_fresh {
                id if id < Fresh::ALLOCATIONS => Value::Fresh(Fresh::start_of(id)),
                _ => Value::UNKNOWN,
            };
            self.next_fresh = self.next_fresh.saturating_add(1);
        }
        if return_to.is_none() {
            // a tail call returns to this function's caller
            state.gpr[RSP] = state.gpr[RSP].offset(8);
        }
    }

    /// Whether the function `name` at `address` is a constructor (of any class).
    fn is_constructor(&mut self, address: u64, name: &str) -> bool {
        *self
            .constructors
            .entry(Word::new(address))
            .or_insert_with(|| super::constructors::is_constructor_symbol(name))
    }
}

fn merge(exit: &mut Option<State>, state: State) {
    match exit {
        None => *exit = Some(state),
        Some(previous) => *previous = previous.join(&state),
    }
}

/// The paths of one function still to run, and the states that reached each branch target.
#[derive(Default)]
struct Paths {
    /// Where each path starts (complemented: addresses kept in the heap are, see `value`)
    /// and its state there.
    work: Vec<(Word, State)>,
    seen: FxHashMap<Word, Vec<State>>,
    joined: FxHashMap<Word, State>,
}

impl Paths {
    /// Queues a path at `target` unless one in the same state was queued there already;
    /// past [`MAX_STATES_PER_POINT`] states the point keeps their join, queued again only
    /// when it changed.
    fn enqueue(&mut self, target: u64, state: State) {
        let target = Word::new(target);
        let states = self.seen.entry(target).or_default();
        if states.contains(&state) {
            return;
        }
        if states.len() < MAX_STATES_PER_POINT {
            states.push(state.clone());
            self.work.push((target, state));
            return;
        }
        let merged = match self.joined.get(&target) {
            Some(previous) => previous.join(&state),
            None => states.iter().fold(state, |acc, s| acc.join(s)),
        };
        if self.joined.get(&target) == Some(&merged) {
            return;
        }
        self.joined.insert(target, merged.clone());
        self.work.push((target, merged));
    }
}
