//! The general-purpose registers as the machine state holds them: which of the sixteen
//! 64-bit registers an operand names, how many bytes of it, and whether it is a high byte
//! (`ah`, `bh`, `ch`, `dh`). One table lookup per operand (iced-x86 answers each of these
//! with a lookup of its own, and every instruction asks them).

use iced_x86::Register;

/// A general-purpose register operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gpr {
    /// The 64-bit register it is part of (`rax` is 0, `r15` is 15).
    pub index: u8,
    /// 1, 2, 4 or 8; 0 for a register that is not general-purpose.
    pub bytes: u8,
    /// Bits 8 to 15 of the register (`ah`...).
    pub high: bool,
}

impl Gpr {
    const NONE: Gpr = Gpr {
        index: 0,
        bytes: 0,
        high: false,
    };

    /// What `register` is, when it is general-purpose.
    #[inline(always)]
    pub fn of(register: Register) -> Option<Gpr> {
        let gpr = GPRS[register as usize];
        (gpr.bytes != 0).then_some(gpr)
    }
}

/// Every register by its number in iced-x86's `Register` (a `u8`).
static GPRS: [Gpr; 256] = {
    let mut table = [Gpr::NONE; 256];
    let mut register = 0;
    while register < 256 {
        table[register] = describe(register);
        register += 1;
    }
    table
};

/// Register number `register` as a [`Gpr`] (iced-x86 numbers them in runs: the 8-bit
/// registers `al`..`r15b`, then the 16-, 32- and 64-bit ones, each `rax`-order).
const fn describe(register: usize) -> Gpr {
    const fn gpr(index: usize, bytes: u8, high: bool) -> Gpr {
        Gpr {
            index: index as u8,
            bytes,
            high,
        }
    }
    let (al, ah, spl, r15l) = (
        Register::AL as usize,
        Register::AH as usize,
        Register::SPL as usize,
        Register::R15L as usize,
    );
    let (ax, eax, rax, r15) = (
        Register::AX as usize,
        Register::EAX as usize,
        Register::RAX as usize,
        Register::R15 as usize,
    );
    if register >= al && register < ah {
        gpr(register - al, 1, false)
    } else if register >= ah && register < spl {
        gpr(register - ah, 1, true)
    } else if register >= spl && register <= r15l {
        gpr(register - spl + 4, 1, false)
    } else if register >= ax && register < eax {
        gpr(register - ax, 2, false)
    } else if register >= eax && register < rax {
        gpr(register - eax, 4, false)
    } else if register >= rax && register <= r15 {
        gpr(register - rax, 8, false)
    } else {
        Gpr::NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_agrees_with_iced_x86_on_every_register() {
        for register in Register::values() {
            let high = matches!(
                register,
                Register::AH | Register::BH | Register::CH | Register::DH
            );
            let expected = register.is_gpr().then(|| Gpr {
                index: register.full_register().number() as u8,
                bytes: register.size() as u8,
                high,
            });
            assert_eq!(Gpr::of(register), expected, "{register:?}");
        }
    }
}
