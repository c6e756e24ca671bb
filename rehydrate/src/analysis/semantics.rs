//! What one instruction does to a [`State`]: the data movement and arithmetic that carry
//! `this`, vtable addresses and loop counters (general-purpose and vector, SSE and AVX), and a
//! conservative rule for everything else: what an instruction it does not model writes (by
//! iced-x86's operand information) becomes unknown, in registers and in the object.
//!
//! Control flow is only classified here ([`Flow`]); following it is the explorer's job.

use iced_x86::{
    EncodingKind, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess, OpKind,
    Register,
};

use super::process::Process;
use super::registers::Gpr;
use super::state::{Ip, Lanes, State, Writer, RSP};
use super::value::{Flags, Value};
use super::GiveUp;
use crate::relocation::elf::is_vtable_name;

/// Where execution goes after an instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Next,
    Jump(u64),
    /// A conditional branch whose condition is not known: both ways.
    Either {
        taken: u64,
        not_taken: u64,
    },
    /// A call of whatever `target` holds.
    Call(Value),
    /// An indirect jump: within the function (a switch) or a tail call.
    JumpTo(Value),
    /// `ret`, popping `extra` bytes of arguments as well.
    Return {
        extra: u64,
    },
    /// The path ends here (`ud2`, `hlt`, `int3`).
    Stop,
}

/// Applies instructions to states.
pub(crate) struct Semantics<'p> {
    process: &'p Process<'p>,
    /// `sizeof` the class: how far a store of unknown extent into the object may reach.
    pub object_size: u64,
    /// For instructions it does not model; made at the first (it allocates, and most
    /// constructors have none).
    info: Option<InstructionInfoFactory>,
}

const RAX: usize = 0;
const RCX: usize = 1;
const RDX: usize = 2;
const RDI: usize = 7;
const RBP: usize = 5;

impl<'p> Semantics<'p> {
    /// The semantics of instructions of the build `process` views (see
    /// [`Self::object_size`]: none until an analysis sets it).
    pub fn new(process: &'p Process<'p>) -> Semantics<'p> {
        Semantics {
            process,
            object_size: 0,
            info: None,
        }
    }

    /// Executes `ins` on `state`.
    #[inline(always)]
    pub fn execute(&mut self, state: &mut State, ins: &Instruction) -> Result<Flow, GiveUp> {
        let writer = Writer::Instruction(Ip::new(ins.ip()));
        // the instructions constructors are mostly made of, none of which changes the flow
        // (the test `instructions_run_without_a_flow_lookup_never_change_the_flow` checks
        // every encoding of these mnemonics): the others' flow is looked up in iced-x86's
        // table of instruction information, which these then leave out of the cache
        match ins.mnemonic() {
            Mnemonic::Nop
            | Mnemonic::Endbr64
            | Mnemonic::Pause
            | Mnemonic::Lfence
            | Mnemonic::Mfence
            | Mnemonic::Sfence
            | Mnemonic::Prefetchnta
            | Mnemonic::Prefetcht0
            | Mnemonic::Prefetcht1
            | Mnemonic::Prefetcht2
            | Mnemonic::Prefetchw => {}
            Mnemonic::Mov | Mnemonic::Movzx => {
                let value = self.read(state, ins, 1);
                self.write(state, ins, 0, value, writer)?;
            }
            Mnemonic::Lea => {
                let address = self.address(state, ins);
                self.write(state, ins, 0, address, writer)?;
            }
            Mnemonic::Add | Mnemonic::Sub | Mnemonic::Cmp => self.arithmetic(state, ins, writer)?,
            Mnemonic::And | Mnemonic::Or | Mnemonic::Xor | Mnemonic::Test => {
                self.logic(state, ins, writer)?
            }
            _ => return self.execute_other(state, ins, writer),
        }
        Ok(Flow::Next)
    }

    /// [`Self::execute`] of an instruction that may change the flow, or that constructors
    /// execute less often than moves, `lea` and arithmetic.
    fn execute_other(
        &mut self,
        state: &mut State,
        ins: &Instruction,
        writer: Writer,
    ) -> Result<Flow, GiveUp> {
        match ins.flow_control() {
            FlowControl::Next => {}
            FlowControl::UnconditionalBranch => {
                return Ok(match ins.op_kind(0) {
                    OpKind::NearBranch64 => Flow::Jump(ins.near_branch_target()),
                    _ => Flow::Stop,
                })
            }
            FlowControl::IndirectBranch => return Ok(Flow::JumpTo(self.read(state, ins, 0))),
            FlowControl::ConditionalBranch => return self.conditional(state, ins),
            FlowControl::Call => return Ok(Flow::Call(Value::constant(ins.near_branch_target()))),
            FlowControl::IndirectCall => return Ok(Flow::Call(self.read(state, ins, 0))),
            FlowControl::Return => {
                let extra = if ins.op_count() > 0 { imm(ins, 0) } else { 0 };
                return Ok(Flow::Return { extra });
            }
            FlowControl::Interrupt | FlowControl::Exception | FlowControl::XbeginXabortXend => {
                return Ok(Flow::Stop)
            }
        }
        self.execute_rest(state, ins, writer)?;
        Ok(Flow::Next)
    }

    /// The instructions constructors execute less often than moves, `lea` and arithmetic:
    /// kept out of [`Self::execute`], whose code then stays small.
    #[inline(never)]
    fn execute_rest(
        &mut self,
        state: &mut State,
        ins: &Instruction,
        writer: Writer,
    ) -> Result<(), GiveUp> {
        match ins.mnemonic() {
            Mnemonic::Movsx | Mnemonic::Movsxd => {
                let bytes = self.operand_bytes(ins, 1);
                let value = self
                    .read(state, ins, 1)
                    .map_const(|v| sign_extend(v, bytes));
                self.write(state, ins, 0, value, writer)?;
            }
            Mnemonic::Inc | Mnemonic::Dec | Mnemonic::Neg | Mnemonic::Not => {
                self.unary(state, ins, writer)?
            }
            Mnemonic::Shl | Mnemonic::Sal | Mnemonic::Shr | Mnemonic::Sar => {
                let bytes = self.operand_bytes(ins, 0);
                let (value, count) = (self.read(state, ins, 0), self.read(state, ins, 1));
                let result = match (value.as_const(), count.as_const()) {
                    (Some(v), Some(c)) => Value::constant(shift(ins.mnemonic(), v, c, bytes)),
                    _ => Value::UNKNOWN,
                };
                self.write(state, ins, 0, result, writer)?;
                state.flags = Flags::UNKNOWN;
            }
            Mnemonic::Imul if ins.op_count() >= 2 => {
                let (a, b) = if ins.op_count() == 3 {
                    (self.read(state, ins, 1), self.read(state, ins, 2))
                } else {
                    (self.read(state, ins, 0), self.read(state, ins, 1))
                };
                let product = match (a.as_const(), b.as_const()) {
                    (Some(x), Some(y)) => Value::constant(x.wrapping_mul(y)),
                    (None, Some(y)) => a.scale(y),
                    (Some(x), None) => b.scale(x),
                    _ => Value::UNKNOWN,
                };
                self.write(state, ins, 0, product, writer)?;
                state.flags = Flags::UNKNOWN;
            }
            Mnemonic::Cdqe => {
                state.gpr[RAX] = state.gpr[RAX].map_const(|v| sign_extend(v, 4));
            }
            Mnemonic::Cqo => {
                state.gpr[RDX] =
                    state.gpr[RAX].map_const(|v| if v >> 63 == 1 { u64::MAX } else { 0 });
            }
            Mnemonic::Xchg
                if ins.op_kind(0) == OpKind::Register && ins.op_kind(1) == OpKind::Register =>
            {
                let (a, b) = (self.read(state, ins, 0), self.read(state, ins, 1));
                self.write(state, ins, 0, b, writer)?;
                self.write(state, ins, 1, a, writer)?;
            }
            Mnemonic::Cmovo
            | Mnemonic::Cmovno
            | Mnemonic::Cmovb
            | Mnemonic::Cmovae
            | Mnemonic::Cmove
            | Mnemonic::Cmovne
            | Mnemonic::Cmovbe
            | Mnemonic::Cmova
            | Mnemonic::Cmovs
            | Mnemonic::Cmovns
            | Mnemonic::Cmovp
            | Mnemonic::Cmovnp
            | Mnemonic::Cmovl
            | Mnemonic::Cmovge
            | Mnemonic::Cmovle
            | Mnemonic::Cmovg => {
                let (old, new) = (self.read(state, ins, 0), self.read(state, ins, 1));
                let value = match state.flags.condition(ins.condition_code()) {
                    Some(true) => new,
                    Some(false) => old,
                    None => old.join(new),
                };
                self.write(state, ins, 0, value, writer)?;
            }
            Mnemonic::Seto
            | Mnemonic::Setno
            | Mnemonic::Setb
            | Mnemonic::Setae
            | Mnemonic::Sete
            | Mnemonic::Setne
            | Mnemonic::Setbe
            | Mnemonic::Seta
            | Mnemonic::Sets
            | Mnemonic::Setns
            | Mnemonic::Setp
            | Mnemonic::Setnp
            | Mnemonic::Setl
            | Mnemonic::Setge
            | Mnemonic::Setle
            | Mnemonic::Setg => {
                let value = state
                    .flags
                    .condition(ins.condition_code())
                    .map_or(Value::UNKNOWN, |c| Value::constant(u64::from(c)));
                self.write(state, ins, 0, value, writer)?;
            }
            Mnemonic::Push => {
                let value = self.read(state, ins, 0);
                let bytes = self.operand_bytes(ins, 0).max(2);
                let rsp = state.gpr[RSP].offset(-i64::from(bytes));
                state.gpr[RSP] = rsp;
                self.store(state, rsp, bytes, value, writer)?;
            }
            Mnemonic::Pop => {
                let bytes = self.operand_bytes(ins, 0).max(2);
                let rsp = state.gpr[RSP];
                let value = self.load(state, rsp, bytes);
                state.gpr[RSP] = rsp.offset(i64::from(bytes));
                self.write(state, ins, 0, value, writer)?;
            }
            Mnemonic::Leave => {
                let rbp = state.gpr[RBP];
                state.gpr[RBP] = self.load(state, rbp, 8);
                state.gpr[RSP] = rbp.offset(8);
            }
            Mnemonic::Stosb | Mnemonic::Stosw | Mnemonic::Stosd | Mnemonic::Stosq => {
                self.store_string(state, ins, writer)?
            }
            _ if self.vector(state, ins, writer)? => {}
            _ => self.unmodeled(state, ins, writer),
        }
        Ok(())
    }

    fn conditional(&self, state: &mut State, ins: &Instruction) -> Result<Flow, GiveUp> {
        let (taken, not_taken) = (ins.near_branch_target(), ins.next_ip());
        let condition = match ins.mnemonic() {
            Mnemonic::Jrcxz | Mnemonic::Jecxz => state.gpr[RCX]
                .truncate(if ins.mnemonic() == Mnemonic::Jecxz {
                    4
                } else {
                    8
                })
                .as_const()
                .map(|c| c == 0),
            Mnemonic::Loop => {
                state.gpr[RCX] = state.gpr[RCX].offset(-1);
                state.gpr[RCX].as_const().map(|c| c != 0)
            }
            Mnemonic::Loope | Mnemonic::Loopne => {
                return Err(GiveUp::at(
                    ins.ip(),
                    "a `loope`/`loopne`, which it does not model",
                ))
            }
            _ => state.flags.condition(ins.condition_code()),
        };
        Ok(match condition {
            Some(true) => Flow::Jump(taken),
            Some(false) => Flow::Next,
            None => Flow::Either { taken, not_taken },
        })
    }

    #[inline(always)]
    fn arithmetic(
        &self,
        state: &mut State,
        ins: &Instruction,
        writer: Writer,
    ) -> Result<(), GiveUp> {
        let bytes = self.operand_bytes(ins, 0);
        let (a, b) = (self.read(state, ins, 0), self.read(state, ins, 1));
        let (result, flags) = match ins.mnemonic() {
            Mnemonic::Add => (a.add(b), Flags::add(a, b, bytes)),
            _ => (a.sub(b), Flags::sub(a, b, bytes)),
        };
        if ins.mnemonic() != Mnemonic::Cmp {
            self.write(state, ins, 0, result.truncate(bytes), writer)?;
        }
        state.flags = flags;
        Ok(())
    }

    #[inline(always)]
    fn logic(&self, state: &mut State, ins: &Instruction, writer: Writer) -> Result<(), GiveUp> {
        let bytes = self.operand_bytes(ins, 0);
        let same_register = ins.op_kind(0) == OpKind::Register
            && ins.op_kind(1) == OpKind::Register
            && ins.op_register(0) == ins.op_register(1);
        let (a, b) = (self.read(state, ins, 0), self.read(state, ins, 1));
        let result = match ins.mnemonic() {
            Mnemonic::Xor if same_register => Value::constant(0),
            Mnemonic::And | Mnemonic::Or | Mnemonic::Test if a == b => a,
            mnemonic => match (a.as_const(), b.as_const()) {
                (Some(x), Some(y)) => Value::constant(match mnemonic {
                    Mnemonic::Or => x | y,
                    Mnemonic::Xor => x ^ y,
                    _ => x & y,
                }),
                (_, Some(0)) | (Some(0), _)
                    if mnemonic == Mnemonic::And || mnemonic == Mnemonic::Test =>
                {
                    Value::constant(0)
                }
                _ => Value::UNKNOWN,
            },
        }
        .truncate(bytes);
        if ins.mnemonic() != Mnemonic::Test {
            self.write(state, ins, 0, result, writer)?;
        }
        state.flags = Flags::logic(result, bytes);
        Ok(())
    }

    fn unary(&self, state: &mut State, ins: &Instruction, writer: Writer) -> Result<(), GiveUp> {
        let bytes = self.operand_bytes(ins, 0);
        let a = self.read(state, ins, 0);
        let one = Value::constant(1);
        let (result, flags) = match ins.mnemonic() {
            Mnemonic::Inc => (a.add(one), Flags::add(a, one, bytes)),
            Mnemonic::Dec => (a.sub(one), Flags::sub(a, one, bytes)),
            Mnemonic::Neg => {
                let zero = Value::constant(0);
                (zero.sub(a), Flags::sub(zero, a, bytes))
            }
            _ => (a.map_const(|v| !v), state.flags),
        };
        self.write(state, ins, 0, result.truncate(bytes), writer)?;
        state.flags = flags;
        Ok(())
    }

    /// `rep stos` and plain `stos`: the value of `rax` stored `rcx` times from `rdi`.
    fn store_string(
        &self,
        state: &mut State,
        ins: &Instruction,
        writer: Writer,
    ) -> Result<(), GiveUp> {
        let bytes = ins.memory_size().size() as u32;
        let value = state.gpr[RAX].truncate(bytes);
        let count = if ins.has_rep_prefix() {
            state.gpr[RCX].as_const()
        } else {
            Some(1)
        };
        let destination = state.gpr[RDI];
        match count {
            Some(count) if count <= 4096 => {
                for k in 0..count {
                    let at = destination.offset((k * u64::from(bytes)) as i64);
                    self.store(state, at, bytes, value, writer)?;
                }
                state.gpr[RDI] = destination.offset((count * u64::from(bytes)) as i64);
                if ins.has_rep_prefix() {
                    state.gpr[RCX] = Value::constant(0);
                }
            }
            _ => {
                self.clobber_from(state, destination, None, writer);
                state.gpr[RDI] = Value::UNKNOWN;
                state.gpr[RCX] = Value::UNKNOWN;
            }
        }
        Ok(())
    }

    /// The vector instructions compilers use to store vptrs and to move them between
    /// registers; `false` when `ins` is not one of them.
    fn vector(&self, state: &mut State, ins: &Instruction, writer: Writer) -> Result<bool, GiveUp> {
        let vex = matches!(ins.encoding(), EncodingKind::VEX | EncodingKind::EVEX);
        if ins.op_mask() != Register::None {
            return Ok(false);
        }
        let lanes_of = |this: &Self, state: &State, op: u32| this.read_lanes(state, ins, op);
        let result: Lanes = match ins.mnemonic() {
            Mnemonic::Movq | Mnemonic::Vmovq | Mnemonic::Movd | Mnemonic::Vmovd => {
                if is_vector(ins, 0) {
                    let bytes = self.operand_bytes(ins, 1);
                    let value = if is_vector(ins, 1) {
                        lanes(state, ins.op_register(1))[0]
                    } else {
                        self.read(state, ins, 1)
                    };
                    let zero = Value::constant(0);
                    let old = self.read_lanes(state, ins, 0);
                    let upper = if vex { [zero, zero] } else { [old[2], old[3]] };
                    [value.truncate(bytes), zero, upper[0], upper[1]]
                } else {
                    let value = lanes(state, ins.op_register(1))[0];
                    let bytes = self.operand_bytes(ins, 0);
                    self.write(state, ins, 0, value.truncate(bytes), writer)?;
                    return Ok(true);
                }
            }
            Mnemonic::Movdqa
            | Mnemonic::Movdqu
            | Mnemonic::Movaps
            | Mnemonic::Movups
            | Mnemonic::Movapd
            | Mnemonic::Movupd
            | Mnemonic::Lddqu
            | Mnemonic::Vmovdqa
            | Mnemonic::Vmovdqu
            | Mnemonic::Vmovaps
            | Mnemonic::Vmovups
            | Mnemonic::Vmovapd
            | Mnemonic::Vmovupd
            | Mnemonic::Vmovdqa32
            | Mnemonic::Vmovdqa64
            | Mnemonic::Vmovdqu8
            | Mnemonic::Vmovdqu16
            | Mnemonic::Vmovdqu32
            | Mnemonic::Vmovdqu64
            | Mnemonic::Vlddqu => {
                let value = lanes_of(self, state, 1);
                if !is_vector(ins, 0) {
                    self.store_lanes(state, ins, value, writer)?;
                    return Ok(true);
                }
                self.widen(state, ins, value, vex)
            }
            Mnemonic::Punpcklqdq
            | Mnemonic::Vpunpcklqdq
            | Mnemonic::Unpcklpd
            | Mnemonic::Vunpcklpd
            | Mnemonic::Movlhps
            | Mnemonic::Vmovlhps => {
                let (a, b) = self.two_sources(state, ins);
                self.widen(state, ins, [a[0], b[0], a[2], b[2]], vex)
            }
            Mnemonic::Punpckhqdq
            | Mnemonic::Vpunpckhqdq
            | Mnemonic::Unpckhpd
            | Mnemonic::Vunpckhpd => {
                let (a, b) = self.two_sources(state, ins);
                self.widen(state, ins, [a[1], b[1], a[3], b[3]], vex)
            }
            Mnemonic::Pinsrq | Mnemonic::Vpinsrq if ins.op_count() >= 3 => {
                let count = ins.op_count();
                let mut value = lanes_of(self, state, count - 3);
                let inserted = self.read(state, ins, count - 2);
                value[(imm(ins, count - 1) & 1) as usize] = inserted;
                self.widen(state, ins, value, vex)
            }
            Mnemonic::Vinserti128 | Mnemonic::Vinsertf128 => {
                let mut value = lanes_of(self, state, 1);
                let inserted = lanes_of(self, state, 2);
                let half = (imm(ins, 3) & 1) as usize * 2;
                value[half] = inserted[0];
                value[half + 1] = inserted[1];
                value
            }
            Mnemonic::Movhps | Mnemonic::Movhpd | Mnemonic::Movlps | Mnemonic::Movlpd
                if !is_vector(ins, 0) =>
            {
                let source = lanes(state, ins.op_register(1));
                let high = matches!(ins.mnemonic(), Mnemonic::Movhps | Mnemonic::Movhpd);
                let address = self.address(state, ins);
                self.store(state, address, 8, source[usize::from(high)], writer)?;
                return Ok(true);
            }
            Mnemonic::Movhps | Mnemonic::Movhpd | Mnemonic::Movlps | Mnemonic::Movlpd
                if ins.op_count() == 2 =>
            {
                let mut value = lanes_of(self, state, 0);
                let high = matches!(ins.mnemonic(), Mnemonic::Movhps | Mnemonic::Movhpd);
                value[usize::from(high)] = self.read(state, ins, 1);
                value
            }
            Mnemonic::Movddup | Mnemonic::Vmovddup
                if ins.op_kind(1) == OpKind::Memory || is_xmm(ins, 0) =>
            {
                let source = lanes_of(self, state, 1);
                self.widen(
                    state,
                    ins,
                    [source[0], source[0], Value::UNKNOWN, Value::UNKNOWN],
                    vex,
                )
            }
            Mnemonic::Vpbroadcastq | Mnemonic::Vbroadcastsd => {
                let source = lanes_of(self, state, 1)[0];
                self.widen(state, ins, [source; 4], vex)
            }
            Mnemonic::Pxor
            | Mnemonic::Vpxor
            | Mnemonic::Xorps
            | Mnemonic::Vxorps
            | Mnemonic::Xorpd
            | Mnemonic::Vxorpd
            | Mnemonic::Vpxord
            | Mnemonic::Vpxorq => {
                let count = ins.op_count();
                let same = ins.op_kind(count - 1) == OpKind::Register
                    && ins.op_register(count - 1) == ins.op_register(count - 2);
                let (a, b) = self.two_sources(state, ins);
                let mut value = [Value::UNKNOWN; 4];
                for lane in 0..4 {
                    value[lane] = if same {
                        Value::constant(0)
                    } else {
                        match (a[lane].as_const(), b[lane].as_const()) {
                            (Some(x), Some(y)) => Value::constant(x ^ y),
                            _ => Value::UNKNOWN,
                        }
                    };
                }
                self.widen(state, ins, value, vex)
            }
            Mnemonic::Pshufd | Mnemonic::Vpshufd => {
                let source = lanes_of(self, state, 1);
                let selector = imm(ins, 2);
                let mut value = [Value::UNKNOWN; 4];
                for (quad, lane) in value.iter_mut().enumerate() {
                    let (low, high) = (
                        selector >> (4 * (quad % 2)) & 3,
                        selector >> (4 * (quad % 2) + 2) & 3,
                    );
                    if low % 2 == 0 && high == low + 1 {
                        *lane = source[(quad / 2) * 2 + (low / 2) as usize];
                    }
                }
                self.widen(state, ins, value, vex)
            }
            Mnemonic::Shufpd | Mnemonic::Vshufpd => {
                let (a, b) = self.two_sources(state, ins);
                let selector = imm(ins, ins.op_count().saturating_sub(1));
                let pick = |bit: u64| (selector >> bit & 1) as usize;
                self.widen(
                    state,
                    ins,
                    [a[pick(0)], b[pick(1)], a[2 + pick(2)], b[2 + pick(3)]],
                    vex,
                )
            }
            Mnemonic::Vextracti128 | Mnemonic::Vextractf128 => {
                let source = lanes_of(self, state, 1);
                let half = (imm(ins, 2) & 1) as usize * 2;
                let value = [
                    source[half],
                    source[half + 1],
                    Value::constant(0),
                    Value::constant(0),
                ];
                if !is_vector(ins, 0) {
                    self.store_lanes(state, ins, value, writer)?;
                    return Ok(true);
                }
                value
            }
            Mnemonic::Vpermq | Mnemonic::Vpermpd if ins.op_kind(2) == OpKind::Immediate8 => {
                let source = lanes_of(self, state, 1);
                let selector = imm(ins, 2);
                [0, 1, 2, 3].map(|lane| source[(selector >> (2 * lane) & 3) as usize])
            }
            Mnemonic::Vperm2i128 | Mnemonic::Vperm2f128 => {
                let (a, b) = self.two_sources(state, ins);
                let selector = imm(ins, 3);
                let half = |bits: u64| -> [Value; 2] {
                    if bits & 8 != 0 {
                        return [Value::constant(0); 2];
                    }
                    let source = if bits & 2 == 0 { a } else { b };
                    let at = (bits & 1) as usize * 2;
                    [source[at], source[at + 1]]
                };
                let (low, high) = (half(selector & 0xF), half(selector >> 4 & 0xF));
                [low[0], low[1], high[0], high[1]]
            }
            Mnemonic::Vzeroupper => {
                for register in state.vector.registers().iter_mut() {
                    register[2] = Value::constant(0);
                    register[3] = Value::constant(0);
                }
                return Ok(true);
            }
            Mnemonic::Vzeroall => {
                *state.vector.registers() = [[Value::constant(0); 4]; 16];
                return Ok(true);
            }
            _ => return Ok(false),
        };
        if !is_vector(ins, 0) {
            return Ok(false);
        }
        self.write_lanes(state, ins.op_register(0), result);
        Ok(true)
    }

    /// The two sources of a vector operation: `dst, src` (legacy: the destination is the
    /// first source) or `dst, src1, src2` (VEX).
    fn two_sources(&self, state: &State, ins: &Instruction) -> (Lanes, Lanes) {
        let count = ins.op_count();
        let (first, second) = if count >= 3 { (1, 2) } else { (0, 1) };
        (
            self.read_lanes(state, ins, first),
            self.read_lanes(state, ins, second),
        )
    }

    /// A 128-bit result with the upper half as the encoding leaves it: zeroed by VEX, kept by
    /// legacy SSE; a 256-bit result as it is.
    fn widen(&self, state: &State, ins: &Instruction, value: Lanes, vex: bool) -> Lanes {
        if is_vector(ins, 0) && ins.op_register(0).is_ymm() {
            return value;
        }
        let zero = Value::constant(0);
        let old = if is_vector(ins, 0) {
            state.vector.get(vector_index(ins.op_register(0)))
        } else {
            None
        }
        .unwrap_or([Value::UNKNOWN; 4]);
        if vex {
            [value[0], value[1], zero, zero]
        } else {
            [value[0], value[1], old[2], old[3]]
        }
    }

    fn read_lanes(&self, state: &State, ins: &Instruction, op: u32) -> Lanes {
        match ins.op_kind(op) {
            OpKind::Register if ins.op_register(op).is_vector_register() => state
                .vector
                .get(vector_index(ins.op_register(op)))
                .unwrap_or([Value::UNKNOWN; 4]),
            OpKind::Register => [
                self.read(state, ins, op),
                Value::UNKNOWN,
                Value::UNKNOWN,
                Value::UNKNOWN,
            ],
            OpKind::Memory => {
                let address = self.address(state, ins);
                let bytes = ins.memory_size().size() as u32;
                let mut lanes = [Value::UNKNOWN; 4];
                if bytes <= 8 {
                    lanes[0] = self.load(state, address, bytes);
                } else {
                    for (lane, value) in lanes.iter_mut().enumerate().take((bytes / 8) as usize) {
                        *value = self.load(state, address.offset(8 * lane as i64), 8);
                    }
                }
                lanes
            }
            _ => [Value::UNKNOWN; 4],
        }
    }

    fn write_lanes(&self, state: &mut State, register: Register, value: Lanes) {
        state.vector.set(vector_index(register), value);
    }

    fn store_lanes(
        &self,
        state: &mut State,
        ins: &Instruction,
        value: Lanes,
        writer: Writer,
    ) -> Result<(), GiveUp> {
        let address = self.address(state, ins);
        let bytes = ins.memory_size().size() as u32;
        for lane in 0..(bytes / 8).min(4) {
            self.store(
                state,
                address.offset(8 * i64::from(lane)),
                8,
                value[lane as usize],
                writer,
            )?;
        }
        Ok(())
    }

    /// An instruction not modelled: every register and memory location it writes becomes
    /// unknown.
    fn unmodeled(&mut self, state: &mut State, ins: &Instruction, writer: Writer) {
        // iced-x86's factory is given the instruction without the displacement of a
        // rip-relative or absolute operand: that is an address in the build, which the
        // factory's buffers would keep and free with it (see `value::Word`); the operand's
        // address is a constant either way, and a store to a constant address changes
        // neither the object nor the frame
        let mut neutral = *ins;
        let absolute = ins.memory_base() == Register::None && ins.memory_index() == Register::None;
        if ins.is_ip_rel_memory_operand() || absolute {
            neutral.set_memory_displacement64(0);
        }
        let mut factory = self.info.take().unwrap_or_else(InstructionInfoFactory::new);
        let info = factory.info(&neutral);
        let writes = |access: OpAccess| {
            matches!(
                access,
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            )
        };
        for used in info.used_registers().iter().filter(|r| writes(r.access())) {
            let register = used.register();
            if let Some(gpr) = Gpr::of(register) {
                state.gpr[usize::from(gpr.index)] = Value::UNKNOWN;
            } else if register.is_vector_register() {
                self.write_lanes(state, register, [Value::UNKNOWN; 4]);
            }
        }
        for used in info.used_memory().iter().filter(|m| writes(m.access())) {
            let base = match used.base() {
                Register::None => Value::constant(0),
                base => read_register(state, base),
            };
            let index = match used.index() {
                Register::None => Value::constant(0),
                index => read_register(state, index).scale(u64::from(used.scale())),
            };
            let address = base.add(index).offset(used.displacement() as i64);
            let bytes = used.memory_size().size() as u64;
            let extent =
                (bytes > 0 && !ins.has_rep_prefix() && !ins.has_repne_prefix()).then_some(bytes);
            self.clobber_from(state, address, extent, writer);
        }
        self.info = Some(factory);
        if ins.rflags_modified() != 0 {
            state.flags = Flags::UNKNOWN;
        }
    }

    /// Marks `extent` bytes at `address` unknown (to the object's end when not known).
    fn clobber_from(&self, state: &mut State, address: Value, extent: Option<u64>, writer: Writer) {
        match address {
            Value::This(k) => {
                let end = extent.map_or(self.object_size as i64, |e| k + e as i64);
                let start = k.max(0);
                if end > start {
                    state.object.clobber(start, (end - start) as u64, writer);
                }
            }
            Value::Stack(k) => state.stack.clobber(k, extent.unwrap_or(8), writer),
            _ => {}
        }
    }

    #[inline(always)]
    fn operand_bytes(&self, ins: &Instruction, op: u32) -> u32 {
        match ins.op_kind(op) {
            OpKind::Register => ins.op_register(op).size() as u32,
            OpKind::Memory => ins.memory_size().size() as u32,
            _ => 8,
        }
    }

    /// The effective address of `ins`'s memory operand.
    #[inline(always)]
    pub fn address(&self, state: &State, ins: &Instruction) -> Value {
        // only a prefix names `fs` or `gs` (thread-local storage)
        if matches!(ins.segment_prefix(), Register::FS | Register::GS) {
            return Value::UNKNOWN;
        }
        if ins.is_ip_rel_memory_operand() {
            return Value::constant(ins.ip_rel_memory_address());
        }
        let base = match ins.memory_base() {
            Register::None => Value::constant(0),
            register => read_register(state, register),
        };
        let displacement = ins.memory_displacement64() as i64;
        match ins.memory_index() {
            Register::None => base.offset(displacement),
            register => {
                let scale = u64::from(ins.memory_index_scale());
                let index = read_register(state, register).scale(scale);
                base.add(index).offset(displacement)
            }
        }
    }

    /// The value of operand `op` (register, immediate or memory), at most 8 bytes.
    #[inline(always)]
    fn read(&self, state: &State, ins: &Instruction, op: u32) -> Value {
        match ins.op_kind(op) {
            OpKind::Register => {
                let register = ins.op_register(op);
                if register.is_vector_register() {
                    return state
                        .vector
                        .get(vector_index(register))
                        .map_or(Value::UNKNOWN, |lanes| lanes[0]);
                }
                read_register(state, register)
            }
            OpKind::Memory => {
                let bytes = (ins.memory_size().size() as u32).min(8);
                self.load(state, self.address(state, ins), bytes)
            }
            OpKind::NearBranch64 => Value::constant(ins.near_branch_target()),
            // as iced-x86's `immediate` reads them (sign-extended ones to 64 bits)
            OpKind::Immediate8 => Value::constant(u64::from(ins.immediate8())),
            OpKind::Immediate16 => Value::constant(u64::from(ins.immediate16())),
            OpKind::Immediate32 => Value::constant(u64::from(ins.immediate32())),
            OpKind::Immediate64 => Value::constant(ins.immediate64()),
            OpKind::Immediate8to16 => Value::constant(ins.immediate8to16() as u64),
            OpKind::Immediate8to32 => Value::constant(ins.immediate8to32() as u64),
            OpKind::Immediate8to64 => Value::constant(ins.immediate8to64() as u64),
            OpKind::Immediate32to64 => Value::constant(ins.immediate32to64() as u64),
            _ => Value::UNKNOWN,
        }
    }

    /// Writes `value` to operand `op` (a general-purpose register or memory).
    #[inline(always)]
    fn write(
        &self,
        state: &mut State,
        ins: &Instruction,
        op: u32,
        value: Value,
        writer: Writer,
    ) -> Result<(), GiveUp> {
        match ins.op_kind(op) {
            OpKind::Register => {
                write_register(state, ins.op_register(op), value);
                Ok(())
            }
            OpKind::Memory => {
                let bytes = (ins.memory_size().size() as u32).min(8);
                let address = self.address(state, ins);
                self.store(state, address, bytes, value, writer)
            }
            _ => Ok(()),
        }
    }

    /// A load: from the object or the stack as tracked, from read-only memory of loaded
    /// objects as it is; anything else is unknown.
    #[inline(always)]
    pub fn load(&self, state: &State, address: Value, bytes: u32) -> Value {
        match address {
            Value::This(k) => state.object.load(k, bytes),
            Value::Stack(k) => state.stack.load(k, bytes),
            Value::Const(word) => self
                .process
                .read(word.get(), bytes)
                .map_or(Value::UNKNOWN, Value::constant),
            _ => Value::UNKNOWN,
        }
    }

    /// A store: into the object or the stack as tracked; into fresh allocations and globals
    /// it does not matter. A vtable address stored through a pointer it cannot follow might
    /// be a vptr of the object: the analysis gives up rather than guess.
    #[inline(always)]
    pub fn store(
        &self,
        state: &mut State,
        address: Value,
        bytes: u32,
        value: Value,
        writer: Writer,
    ) -> Result<(), GiveUp> {
        match address {
            Value::This(k) => state.object.store(k, bytes, value, writer),
            Value::Stack(k) => state.stack.store(k, bytes, value, writer),
            Value::Unknown(_) => {
                if let Some(place) = value.as_const().and_then(|v| self.process.place(v)) {
                    if is_vtable_name(&place.name) {
                        let ip = match writer {
                            Writer::Instruction(word) => word.get(),
                            Writer::Disagreement => 0,
                        };
                        return Err(GiveUp::at(
                            ip,
                            format!(
                                "stores a vptr ({}) through a pointer it cannot follow",
                                place.demangled()
                            ),
                        ));
                    }
                }
            }
            Value::Const(_) | Value::Fresh(..) => {}
        }
        Ok(())
    }
}

/// Operand `op`'s immediate (0 when it is not one: iced-x86's `immediate` asserts).
fn imm(ins: &Instruction, op: u32) -> u64 {
    ins.try_immediate(op).unwrap_or(0)
}

/// The lanes of a vector register (`xmm16` and up are not tracked: unknown).
fn lanes(state: &State, register: Register) -> Lanes {
    state
        .vector
        .get(vector_index(register))
        .unwrap_or([Value::UNKNOWN; 4])
}

fn is_vector(ins: &Instruction, op: u32) -> bool {
    ins.op_kind(op) == OpKind::Register && ins.op_register(op).is_vector_register()
}

fn is_xmm(ins: &Instruction, op: u32) -> bool {
    ins.op_kind(op) == OpKind::Register && ins.op_register(op).is_xmm()
}

/// The index of a vector register in [`State::vector`] (`xmm16` and up are not tracked).
fn vector_index(register: Register) -> usize {
    register.number()
}

/// A general-purpose register's value, as wide as the register.
#[inline(always)]
pub(crate) fn read_register(state: &State, register: Register) -> Value {
    let Some(gpr) = Gpr::of(register) else {
        return Value::UNKNOWN;
    };
    let full = state.gpr[usize::from(gpr.index)];
    if gpr.high {
        return full.map_const(|v| v >> 8 & 0xFF);
    }
    full.truncate(u32::from(gpr.bytes))
}

/// Writes a general-purpose register: 32-bit writes zero the upper half, 8- and 16-bit
/// writes merge into the old value.
#[inline(always)]
pub(crate) fn write_register(state: &mut State, register: Register, value: Value) {
    let Some(gpr) = Gpr::of(register) else {
        return;
    };
    let slot = &mut state.gpr[usize::from(gpr.index)];
    let bytes = u32::from(gpr.bytes);
    *slot = match bytes {
        8 => value,
        4 => value.truncate(4),
        _ => match (slot.as_const(), value.as_const()) {
            (Some(old), Some(new)) if gpr.high => {
                Value::constant(old & !0xFF00 | (new & 0xFF) << 8)
            }
            (Some(old), Some(new)) => {
                let mask = super::value::mask(bytes);
                Value::constant(old & !mask | new & mask)
            }
            _ => Value::UNKNOWN,
        },
    };
}

fn sign_extend(value: u64, bytes: u32) -> u64 {
    if bytes >= 8 {
        return value;
    }
    let shift = 64 - bytes * 8;
    (((value << shift) as i64) >> shift) as u64
}

fn shift(mnemonic: Mnemonic, value: u64, count: u64, bytes: u32) -> u64 {
    let count = (count & if bytes == 8 { 63 } else { 31 }) as u32;
    let value = value & super::value::mask(bytes);
    let result = match mnemonic {
        Mnemonic::Shl | Mnemonic::Sal => value.checked_shl(count).unwrap_or(0),
        Mnemonic::Shr => value.checked_shr(count).unwrap_or(0),
        _ => (sign_extend(value, bytes) as i64)
            .checked_shr(count)
            .unwrap_or(0) as u64,
    };
    result & super::value::mask(bytes)
}

#[cfg(test)]
mod tests {
    use iced_x86::{Code, FlowControl, Mnemonic};

    /// The mnemonics of `Semantics::execute`'s first match (kept in step with it).
    const RUN_WITHOUT_A_FLOW_LOOKUP: &[Mnemonic] = &[
        Mnemonic::Nop,
        Mnemonic::Endbr64,
        Mnemonic::Pause,
        Mnemonic::Lfence,
        Mnemonic::Mfence,
        Mnemonic::Sfence,
        Mnemonic::Prefetchnta,
        Mnemonic::Prefetcht0,
        Mnemonic::Prefetcht1,
        Mnemonic::Prefetcht2,
        Mnemonic::Prefetchw,
        Mnemonic::Mov,
        Mnemonic::Movzx,
        Mnemonic::Lea,
        Mnemonic::Add,
        Mnemonic::Sub,
        Mnemonic::Cmp,
        Mnemonic::And,
        Mnemonic::Or,
        Mnemonic::Xor,
        Mnemonic::Test,
    ];

    #[test]
    fn instructions_run_without_a_flow_lookup_never_change_the_flow() {
        let encodings: Vec<Code> = Code::values()
            .filter(|code| RUN_WITHOUT_A_FLOW_LOOKUP.contains(&code.mnemonic()))
            .collect();
        assert!(
            encodings.len() > 100,
            "moves and arithmetic have many encodings"
        );
        for code in encodings {
            assert_eq!(code.flow_control(), FlowControl::Next, "{code:?}");
        }
    }
}
