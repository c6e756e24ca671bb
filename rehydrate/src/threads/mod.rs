//! Threads: stopping and inspecting the world for a reload's commit.
//!
//! A reload commits only while every other thread of the process is stopped and none of them
//! executes in the old build or will return into it ([`stop`]): if one does, the world is
//! released, the thread runs on, and the reload tries again until its deadline, then refuses
//! naming the thread and the function. Threads blocked in a system call or running host code
//! stop at once and do not delay it. A host that wants no retries passes its threads through a
//! [`ModuleGate`] while they call module code ([`gate`]).
//!
//! This module owns the stop signal, its handler and the threads' positions; it knows nothing
//! of builds beyond the address range it is asked about.

mod gate;
mod stop;
mod tasks;

use std::ops::Range;
use std::time::{Duration, Instant};

pub use gate::{GateGuard, ModuleGate};
pub use stop::stop_signal;
pub(crate) use stop::{register_name, slots_range, InRange, NotStopped, StoppedWorld};
pub(crate) use tasks::thread_name;

/// How a reload's commit stopped the other threads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadsReport {
    /// Threads stopped for the commit (every thread of the process but the reloading one).
    pub stopped: usize,
    /// Stops tried until no thread was in the old build (1: the first one).
    pub attempts: u32,
    /// Waiting for threads inside the host's [`ModuleGate`] to leave it.
    pub gate_wait: Duration,
    /// From the last stop's request until every thread was parked.
    pub stop_latency: Duration,
    /// With the threads stopped, scanning again for references they wrote since the scan
    /// (every stop tried; part of `pause` for the one that committed).
    pub catch_up: Duration,
    /// Registers of stopped threads that held an address of the old build and were
    /// re-pointed (a vptr or function pointer loaded and about to be used, or a stale value).
    pub registers_rewritten: usize,
    /// How long the other threads were stopped for the commit (from the last thread parked
    /// until their release: the catch-up scan and the writes).
    pub pause: Duration,
}

/// Why no stop found the threads out of the old build before the deadline: the last attempt's
/// finding.
#[derive(Debug, Clone)]
pub(crate) enum Blocked {
    /// A thread was in the range.
    InRange(InRange),
    /// Threads did not park.
    NotStopped(NotStopped),
}

/// Stops the world until no thread executes in `code`, returns into it or cannot be read,
/// trying again until `deadline` (the threads run between attempts); the stopped world and the
/// number of attempts, or the reason and their number: the last attempt's, unless the
/// deadline cut that stop short and an earlier one saw a thread in `code` (a loaded machine
/// parks threads slowly; the thread in the old build is what the caller needs to know).
pub(crate) fn stop_outside(
    code: &Range<usize>,
    deadline: Instant,
) -> Result<(StoppedWorld, u32), (Blocked, u32)> {
    let mut attempts = 0;
    let mut between = Duration::from_micros(100);
    let mut seen_in_range: Option<InRange> = None;
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let cut_short = left < stop::PARK_TIMEOUT;
        let blocked =
            match stop::stop_world(left.clamp(Duration::from_millis(10), stop::PARK_TIMEOUT)) {
                Ok(world) => match world.first_in(code) {
                    None => return Ok((world, attempts)),
                    Some(found) => {
                        drop(world);
                        Blocked::InRange(found)
                    }
                },
                Err(not_stopped) if not_stopped.signal_taken => {
                    return Err((Blocked::NotStopped(not_stopped), attempts))
                }
                Err(not_stopped) => Blocked::NotStopped(not_stopped),
            };
        if Instant::now() >= deadline {
            let blocked = match (blocked, seen_in_range) {
                (Blocked::NotStopped(_), Some(found)) if cut_short => Blocked::InRange(found),
                (blocked, _) => blocked,
            };
            return Err((blocked, attempts));
        }
        if let Blocked::InRange(found) = &blocked {
            seen_in_range = Some(*found);
        }
        std::thread::sleep(between);
        between = (between * 2).min(Duration::from_millis(5));
    }
}
