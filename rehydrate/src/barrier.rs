//! An asymmetric memory barrier: almost free on the side that runs often (a thread tracking
//! an object), expensive on the side that runs rarely (a reload stopping every thread).
//!
//! The registry's fast path is a Dekker-style handshake: the tracking thread stores its
//! `busy` flag and then loads the `stopped` flag; a reload stores `stopped` and then loads
//! every `busy` flag. Each side needs a full barrier between its store and its load. With
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` the reload side makes the kernel run a full
//! barrier on every thread of the process that is running (a thread that is not running has
//! gone through the scheduler, which is a barrier too), so the tracking side only has to stop
//! the compiler from reordering. This is the technique of folly's `asymmetricHeavyBarrier` and
//! liburcu's membarrier flavour.
//!
//! When the kernel refuses membarrier (too old, or a seccomp filter), both sides use an
//! ordinary sequentially consistent fence: slower, still correct. Setting the environment
//! variable `REHYDRATE_BARRIER=fences` before the first runtime is created forces that
//! fallback (for tests, and for systems where membarrier is unwanted).
//!
//! Owns nothing but the choice of strategy, made once per process by [`init`].

use std::sync::atomic::{compiler_fence, fence, AtomicU8, Ordering};

/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED` from `<linux/membarrier.h>`.
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
/// `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED` from `<linux/membarrier.h>`.
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

const UNDECIDED: u8 = 0;
const EXPEDITED: u8 = 1;
const FENCES: u8 = 2;

static STRATEGY: AtomicU8 = AtomicU8::new(UNDECIDED);

/// The environment variable that forces the fence fallback when set to `fences`.
pub(crate) const FORCE_VARIABLE: &str = "REHYDRATE_BARRIER";

fn membarrier(command: libc::c_int) -> bool {
    // SAFETY: membarrier takes two integers and touches no memory of ours.
    let result = unsafe { libc::syscall(libc::SYS_membarrier, command, 0, 0) };
    result == 0
}

/// Chooses the strategy, once per process. Must run before any [`light`] that pairs with a
/// [`heavy`]: the registry calls it when it is created, before any thread can reach it.
pub(crate) fn init() {
    if STRATEGY.load(Ordering::Acquire) != UNDECIDED {
        return;
    }
    let forced = std::env::var_os(FORCE_VARIABLE).is_some_and(|v| v == "fences");
    let strategy = if forced {
        tracing::debug!("{FORCE_VARIABLE}=fences: the registry uses full fences");
        FENCES
    } else if membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) {
        EXPEDITED
    } else {
        tracing::debug!("membarrier is not available; the registry uses full fences");
        FENCES
    };
    // Two racing first calls may both register (harmless) and agree on the result.
    let _ = STRATEGY.compare_exchange(UNDECIDED, strategy, Ordering::AcqRel, Ordering::Acquire);
}

/// The cheap side: orders this thread's earlier stores before its later loads, as seen by a
/// thread that runs [`heavy`].
#[inline]
pub(crate) fn light() {
    if STRATEGY.load(Ordering::Relaxed) == EXPEDITED {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The expensive side: after it returns, every other thread's stores that precede its last
/// [`light`] are visible here, and this thread's earlier stores are visible to every load that
/// follows another thread's next [`light`].
pub(crate) fn heavy() {
    if STRATEGY.load(Ordering::Acquire) == EXPEDITED {
        let done = membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED);
        // The kernel accepted the registration, after which this command cannot fail.
        assert!(done, "membarrier failed after a successful registration");
    } else {
        fence(Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strategy_is_chosen_once_and_both_sides_run() {
        init();
        let chosen = STRATEGY.load(Ordering::Acquire);
        assert!(chosen == EXPEDITED || chosen == FENCES);
        init();
        assert_eq!(STRATEGY.load(Ordering::Acquire), chosen);
        light();
        heavy();
    }

    #[test]
    fn the_environment_forces_the_fence_fallback() {
        init();
        let forced = std::env::var_os(FORCE_VARIABLE).is_some_and(|v| v == "fences");
        if forced {
            assert_eq!(STRATEGY.load(Ordering::Acquire), FENCES);
        }
    }

    #[test]
    fn the_registry_is_exact_with_the_fence_fallback() {
        if std::env::var_os(FORCE_VARIABLE).is_some() {
            return; // this is the child below
        }
        // A fresh process, as the strategy is chosen once per process.
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "barrier::tests::the_environment_forces_the_fence_fallback",
                "registry::tests::a_stopped_registry_sees_every_change_of_every_thread_exactly",
                "registry::tests::objects_untracked_on_another_thread_are_found",
            ])
            .env(FORCE_VARIABLE, "fences")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("3 passed"), "all three ran: {stdout}");
    }
}
