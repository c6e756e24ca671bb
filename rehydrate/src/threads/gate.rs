//! The cooperative way: a gate the host's threads pass through while they call module code.
//! A reload closes it first, waits until every thread inside has left, and opens it again when
//! it is done; threads that arrive meanwhile wait at the gate, in host code, where the stop
//! finds them safe at its first attempt.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A gate around calls into a module (see [`crate::Runtime::gate`]). Cloning it is cheap; every
/// clone is the same gate.
///
/// ```no_run
/// # fn main() -> Result<(), rehydrate::Error> {
/// # let runtime = rehydrate::Runtime::load("target/libgame.so")?;
/// let gate = runtime.gate();
/// let robot = runtime.create("world::Robot")?;
/// let address = robot.as_ptr() as usize;
/// std::thread::spawn(move || loop {
///     let _inside = gate.enter(); // waits here while a reload runs
///     // ... call module code: virtual functions of live objects, forwarders ...
///     # let _ = address;
/// }); // the guard is dropped at the end of each iteration: the thread is outside
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct ModuleGate {
    shared: Arc<GateState>,
}

#[derive(Default)]
struct GateState {
    counts: Mutex<Counts>,
    changed: Condvar,
}

#[derive(Default)]
struct Counts {
    /// Threads inside.
    inside: usize,
    /// A reload holds the gate closed.
    closed: bool,
}

/// A thread is inside the gate while it holds this.
#[must_use = "the thread is inside the gate only while the guard lives"]
pub struct GateGuard<'g> {
    gate: &'g GateState,
}

/// The gate held closed by a reload; opened again when dropped.
pub(crate) struct ClosedGate<'g> {
    gate: &'g GateState,
}

impl ModuleGate {
    /// Enters the gate, waiting while a reload holds it closed. Do not enter it again on a
    /// thread already inside: a reload waiting for that thread to leave would wait until its
    /// deadline and be refused.
    pub fn enter(&self) -> GateGuard<'_> {
        let gate = &*self.shared;
        let mut counts = gate.lock();
        while counts.closed {
            counts = gate
                .changed
                .wait(counts)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        counts.inside += 1;
        GateGuard { gate }
    }

    /// How many threads are inside now.
    pub fn inside(&self) -> usize {
        self.shared.lock().inside
    }

    /// Closes the gate and waits until no thread is inside, at most until `deadline`; on time
    /// out the gate is open again and the number of threads still inside is returned.
    pub(crate) fn close(&self, deadline: Instant) -> Result<ClosedGate<'_>, usize> {
        let gate = &*self.shared;
        let mut counts = gate.lock();
        counts.closed = true;
        while counts.inside > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let inside = counts.inside;
                counts.closed = false;
                drop(counts);
                gate.changed.notify_all();
                return Err(inside);
            }
            counts = gate
                .changed
                .wait_timeout(counts, left.min(Duration::from_millis(50)))
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        Ok(ClosedGate { gate })
    }
}

impl GateState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        let mut counts = self.gate.lock();
        counts.inside -= 1;
        let last = counts.inside == 0 && counts.closed;
        drop(counts);
        if last {
            self.gate.changed.notify_all();
        }
    }
}

impl Drop for ClosedGate<'_> {
    fn drop(&mut self) {
        self.gate.lock().closed = false;
        self.gate.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn closing_waits_for_threads_inside_and_holds_new_ones_at_the_gate() {
        let gate = ModuleGate::default();
        let guard = gate.enter();
        // Inside: closing times out and opens again.
        assert_eq!(
            gate.close(Instant::now() + Duration::from_millis(20)).err(),
            Some(1)
        );
        drop(gate.enter()); // open again: entering does not wait
        let entered = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let closer = scope.spawn(|| {
                let closed = gate.close(Instant::now() + Duration::from_secs(30));
                assert!(closed.is_ok());
                // Closed: a thread arriving now waits.
                let waiter = scope.spawn(|| {
                    let _inside = gate.enter();
                    entered.store(true, Ordering::SeqCst);
                });
                std::thread::sleep(Duration::from_millis(50));
                assert!(!entered.load(Ordering::SeqCst), "entered a closed gate");
                drop(closed);
                waiter.join().unwrap();
            });
            std::thread::sleep(Duration::from_millis(30));
            assert_eq!(gate.inside(), 1);
            drop(guard); // lets the closer through
            closer.join().unwrap();
        });
        assert!(entered.load(Ordering::SeqCst));
        assert_eq!(gate.inside(), 0);
    }
}
