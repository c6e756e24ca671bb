//! Reloading while other threads run module code: the commit stops every thread, and commits
//! only when none executes in the old build, will return into it or holds its address in a
//! register; otherwise it retries until its deadline, then refuses naming the thread and the
//! function. Real modules, both compilers.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::{
    assert_vptrs_in_current_build, clangxx, gxx, with_deadline, Compiler, ModuleBuild, THREADS,
};
use rehydrate::{Error, Runtime};

type CallFn = unsafe extern "C" fn(*const u8, i64) -> i64;
type VersionFn = unsafe extern "C" fn() -> i64;
type ParkFn = unsafe extern "C" fn(*const AtomicI32, *const AtomicI32, i32) -> i64;

fn modules_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("threads-modules");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn builds(compiler: &Compiler, optimisation: &'static str) -> [PathBuf; 2] {
    [1, 2]
        .map(|v| ModuleBuild::of(&THREADS, compiler.clone(), optimisation, v).build(&modules_dir()))
}

/// `th::Worker::work` / `th::Busy::work` / the std::function `step` with build `v` loaded.
fn work_result(busy: bool, x: i64, v: i64) -> i64 {
    (if busy { 2 * x } else { x }) + 1000 * v + 3
}
fn step_result(x: i64, v: i64) -> i64 {
    100 * x + v
}

/// Spins for about a microsecond of host code between calls (a thread of a real program does
/// more than call the module).
fn host_work(seed: u64) -> u64 {
    (0..200).fold(seed, |a, i| {
        a.wrapping_mul(6364136223846793005).wrapping_add(i)
    })
}

#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    wrong: AtomicU64,
    v2: AtomicU64,
    /// Set once the last reload has committed.
    reloads_done: AtomicBool,
    /// Calls begun after that (a call that returned before it may be counted after it, by a
    /// thread stopped between the call and its count), and those of them that ran v2.
    calls_after: AtomicU64,
    v2_after: AtomicU64,
}

/// 8 threads call virtual functions (through forwarders into the module, and straight through
/// the vtable from Rust), std::function members and forwarders of live objects in a tight loop,
/// two of them making and destroying objects in the module, two allocating, while this thread
/// reloads `reloads` times between v1 and v2. Every call returns a v1 or a v2 result; every
/// reload commits or names a thread.
fn stress(compiler: Compiler, optimisation: &'static str, reloads: usize) {
    let [v1, v2] = builds(&compiler, optimisation);
    with_deadline(Duration::from_secs(600), move || {
        let mut runtime = Runtime::load(&v1).unwrap();
        let objects: Vec<_> = (0..8)
            .map(|i| {
                runtime
                    .create(if i % 2 == 0 { "th::Worker" } else { "th::Busy" })
                    .unwrap()
            })
            .collect();
        let addresses: Arc<Vec<(usize, bool)>> = Arc::new(
            objects
                .iter()
                .enumerate()
                .map(|(i, o)| (o.as_ptr() as usize, i % 2 == 1))
                .collect(),
        );
        let work = runtime.forwarder("th_work").unwrap();
        let step = runtime.forwarder("th_step").unwrap();
        let churn = runtime.forwarder("th_churn").unwrap();
        let (work_at, step_at) = (work.address() as usize, step.address() as usize);
        let churn_at = churn.address() as usize;
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (stop, tally, addresses) = (stop.clone(), tally.clone(), addresses.clone());
                std::thread::Builder::new()
                    .name(format!("caller-{t}"))
                    .spawn(move || {
                        let mut seed = t as u64;
                        let mut kept = Vec::new();
                        let mut churns = 0;
                        while !stop.load(SeqCst) {
                            let after_reloads = tally.reloads_done.load(SeqCst);
                            seed = host_work(seed);
                            let (object, busy) = addresses[(seed % 8) as usize];
                            let x = (seed % 1000) as i64;
                            let (result, expected): (i64, [i64; 2]) = match t % 4 {
                                // A virtual call inside the module, reached through a forwarder.
                                0 => {
                                    // SAFETY: a forwarder of `long th_work(const Worker*, long)`.
                                    let call: CallFn = unsafe { std::mem::transmute(work_at) };
                                    // SAFETY: a live object of the module.
                                    let r = unsafe { call(object as *const u8, x) };
                                    (r, [1, 2].map(|v| work_result(busy, x, v)))
                                }
                                // The std::function member, through a forwarder.
                                1 => {
                                    // SAFETY: a forwarder of `long th_step(const Worker*, long)`.
                                    let call: CallFn = unsafe { std::mem::transmute(step_at) };
                                    // SAFETY: as above.
                                    let r = unsafe { call(object as *const u8, x) };
                                    (r, [1, 2].map(|v| step_result(x, v)))
                                }
                                // Objects made and destroyed by the module as it runs: those
                                // made between the scan and the stop are found by the catch-up
                                // scan (or a virtual call on them would fault in the old range).
                                3 => {
                                    type ChurnFn = unsafe extern "C" fn(i32, i64) -> i64;
                                    // SAFETY: a forwarder of `long th_churn(int, long)`; ring `t / 4` (0 or 1) is this thread's alone.
                                    let call: ChurnFn = unsafe { std::mem::transmute(churn_at) };
                                    // SAFETY: as above.
                                    let r = unsafe { call(t / 4, x) };
                                    churns += 1;
                                    let expected = [1, 2].map(|v| 8 * work_result(true, x, v));
                                    // The first 7 calls find empty places in the ring.
                                    (if churns < 8 { expected[0] } else { r }, expected)
                                }
                                // A virtual call from Rust through the object's vtable (slot 2:
                                // after the two destructors).
                                _ => {
                                    // SAFETY: the object's first word is its vptr; slot 2 of its vtable is `work`, called with `this` first.
                                    let r = unsafe {
                                        let vtable = *(object as *const *const CallFn);
                                        (*vtable.add(2))(object as *const u8, x)
                                    };
                                    (r, [1, 2].map(|v| work_result(busy, x, v)))
                                }
                            };
                            if t >= 6 {
                                // Allocating: the allocator's lock is often held at the stop.
                                kept.push(vec![seed; 1 + (seed % 64) as usize]);
                                if kept.len() > 256 {
                                    kept.clear();
                                }
                            }
                            tally.calls.fetch_add(1, SeqCst);
                            if after_reloads {
                                tally.calls_after.fetch_add(1, SeqCst);
                                if result == expected[1] {
                                    tally.v2_after.fetch_add(1, SeqCst);
                                }
                            }
                            if result == expected[1] {
                                tally.v2.fetch_add(1, SeqCst);
                            } else if result != expected[0] {
                                tally.wrong.fetch_add(1, SeqCst);
                            }
                        }
                    })
                    .unwrap()
            })
            .collect();
        // Dropped before the forwarders and the runtime, also when an assertion below fails:
        // callers still running would then call released forwarders, which abort the process
        // (and the failure's message with it).
        let mut callers = Callers {
            stop: stop.clone(),
            threads,
        };

        let (mut commits, mut refusals, mut attempts, mut written_meanwhile) = (0, 0, 0u64, 0);
        let mut registers = 0;
        let (mut longest_pause, mut longest_latency) = (Duration::ZERO, Duration::ZERO);
        let mut current = 1;
        for i in 0..reloads {
            let next = if current == 1 { &v2 } else { &v1 };
            let reload = runtime
                .reload(next)
                .unwrap()
                // Longer than the default: in CI both compilers' stress tests share two cores.
                .deadline(Duration::from_secs(5));
            match reload.rehydrate_all() {
                Ok(report) => {
                    commits += 1;
                    current = 3 - current;
                    attempts += u64::from(report.threads.attempts);
                    assert!(report.threads.stopped >= 8, "{:?}", report.threads);
                    assert!(
                        report.old_image_unmapped && report.audit.stale == 0,
                        "{report:?}"
                    );
                    written_meanwhile += report.references.written_meanwhile;
                    registers += report.threads.registers_rewritten;
                    longest_pause = longest_pause.max(report.threads.pause);
                    longest_latency = longest_latency.max(report.threads.stop_latency);
                }
                Err(Error::ThreadInOldBuild { thread, place, .. }) => {
                    refusals += 1;
                    if refusals <= 3 {
                        eprintln!("reload {i} refused: thread {thread} {place}");
                    }
                    assert!(
                        thread.starts_with("caller-"),
                        "reload {i}: {thread} {place}"
                    );
                }
                Err(other) => panic!("reload {i}: {other}"),
            }
            assert_vptrs_in_current_build(&runtime);
        }
        // After the last reload every call returns the current build's result.
        tally.reloads_done.store(true, SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, SeqCst);
        for thread in callers.threads.drain(..) {
            thread.join().expect("a calling thread did not crash");
        }
        let (calls, v2_calls) = (tally.calls_after.load(SeqCst), tally.v2_after.load(SeqCst));
        assert!(calls > 0);
        if current == 2 {
            assert_eq!(v2_calls, calls, "every call after the last reload ran v2");
        } else {
            assert_eq!(v2_calls, 0, "every call after the last reload ran v1");
        }
        assert_eq!(
            tally.wrong.load(SeqCst),
            0,
            "a call returned neither a v1 nor a v2 result"
        );
        eprintln!(
            "{} {optimisation}: {reloads} reloads, {commits} committed ({attempts} stops), {refusals} refused; {} calls; {written_meanwhile} words written between scan and stop and {registers} registers re-pointed; longest pause {longest_pause:?}, longest stop latency {longest_latency:?}",
            compiler.name,
            tally.calls.load(SeqCst)
        );
        assert!(commits > reloads / 2, "{commits} of {reloads} committed");
        drop(objects);
    });
}

/// The stress test's calling threads: stopped and joined when dropped.
struct Callers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Callers {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[test]
fn gxx_eight_threads_call_into_the_module_while_it_reloads_200_times() {
    stress(gxx(), "-O2", 200);
}

#[test]
fn clangxx_eight_threads_call_into_the_module_while_it_reloads_200_times() {
    stress(clangxx(), "-O0", 200);
}

/// A thread inside a long-running module function (spinning, or blocked in a system call
/// that will return into it): the reload waits, then refuses naming the thread and the
/// function, and changes nothing; once the thread has returned, the next reload commits.
fn parked_thread_refuses_until_it_returns(compiler: Compiler, sleeping: bool) {
    let [v1, v2] = builds(&compiler, "-O2");
    with_deadline(Duration::from_secs(120), move || {
        let mut runtime = Runtime::load(&v1).unwrap();
        let worker = runtime.create("th::Busy").unwrap();
        // SAFETY: the fixture exports these with these signatures.
        let (park, version) = unsafe {
            (
                *runtime.symbol::<ParkFn>("th_park").unwrap(),
                *runtime.symbol::<VersionFn>("th_version").unwrap(),
            )
        };
        let (release, entered) = (Arc::new(AtomicI32::new(0)), Arc::new(AtomicI32::new(0)));
        let parked = {
            let (release, entered) = (release.clone(), entered.clone());
            std::thread::Builder::new()
                .name("parked-worker".into())
                // SAFETY: `th_park` of the loaded build, which stays loaded while it runs (the reload below is refused).
                .spawn(move || unsafe { park(&*release, &*entered, i32::from(sleeping)) })
                .unwrap()
        };
        while entered.load(SeqCst) == 0 {
            std::thread::yield_now();
        }
        // SAFETY: reads the vptr of a live object.
        let vptr_before = unsafe { (worker.as_ptr() as *const usize).read() };
        let started = Instant::now();
        let error = runtime
            .reload(&v2)
            .unwrap()
            .deadline(Duration::from_millis(300))
            .rehydrate_all()
            .unwrap_err();
        let waited = started.elapsed();
        match &error {
            Error::ThreadInOldBuild {
                thread, tid, place, ..
            } => {
                assert_eq!(thread, "parked-worker");
                assert!(*tid > 0);
                assert!(place.contains("th_park"), "{place}");
                let expected = if sleeping {
                    "will return into"
                } else {
                    "is executing"
                };
                assert!(place.starts_with(expected), "{place}");
            }
            other => panic!("expected the parked thread to be named, got {other}"),
        }
        assert!(error.to_string().contains("parked-worker"), "{error}");
        assert!(
            waited >= Duration::from_millis(300),
            "it waited for the deadline: {waited:?}"
        );
        // Nothing changed: the old build runs on.
        // SAFETY: reads the vptr of a live object.
        let vptr_after = unsafe { (worker.as_ptr() as *const usize).read() };
        assert_eq!(vptr_after, vptr_before);
        // SAFETY: the old build is still loaded.
        assert_eq!(unsafe { version() }, 1);
        release.store(1, SeqCst);
        assert_eq!(parked.join().unwrap(), 1);
        // Commits (at its first attempt when this test runs alone; the stress tests running
        // beside it in this process can cost a retry).
        let report = runtime.reload(&v2).unwrap().rehydrate_all().unwrap();
        assert!(report.old_image_unmapped);
        // SAFETY: the fixture exports `long th_version(void)`.
        let version = unsafe { *runtime.symbol::<VersionFn>("th_version").unwrap() };
        // SAFETY: takes nothing; the new build is loaded.
        assert_eq!(unsafe { version() }, 2);
        assert_vptrs_in_current_build(&runtime);
        drop(worker);
    });
}

#[test]
fn a_thread_spinning_in_a_module_function_is_named_until_it_returns() {
    for compiler in [gxx(), clangxx()] {
        parked_thread_refuses_until_it_returns(compiler, false);
    }
}

#[test]
fn a_thread_sleeping_in_a_module_function_is_named_until_it_returns() {
    for compiler in [gxx(), clangxx()] {
        parked_thread_refuses_until_it_returns(compiler, true);
    }
}

/// Threads passing through the runtime's gate: a reload waits for them to leave it and stops
/// the world once.
#[test]
fn threads_passing_through_the_gate_never_make_a_reload_retry() {
    let [v1, v2] = builds(&gxx(), "-O2");
    with_deadline(Duration::from_secs(300), move || {
        let mut runtime = Runtime::load(&v1).unwrap();
        let worker = runtime.create("th::Worker").unwrap();
        let object = worker.as_ptr() as usize;
        let work = runtime.forwarder("th_work").unwrap();
        let work_at = work.address() as usize;
        let gate = runtime.gate();
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (gate, stop) = (gate.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut calls = 0u64;
                    while !stop.load(SeqCst) {
                        let _inside = gate.enter();
                        // SAFETY: a forwarder of `long th_work(const Worker*, long)` and a live object; the loop stays in the module most of the time.
                        let call: CallFn = unsafe { std::mem::transmute(work_at) };
                        for x in 0..100 {
                            // SAFETY: as above.
                            let r = unsafe { call(object as *const u8, x) };
                            assert!(r == work_result(false, x, 1) || r == work_result(false, x, 2));
                        }
                        calls += 1;
                    }
                    calls
                })
            })
            .collect();
        let mut next = &v2;
        for _ in 0..20 {
            let report = runtime.reload(next).unwrap().rehydrate_all().unwrap();
            assert_eq!(report.threads.attempts, 1, "{:?}", report.threads);
            next = if next == &v2 { &v1 } else { &v2 };
        }
        stop.store(true, SeqCst);
        for thread in threads {
            assert!(thread.join().unwrap() > 0);
        }
        assert_eq!(gate.inside(), 0);
        drop(worker);
    });
}

/// The child-process half of the next test: every thread of this process shares one malloc
/// arena without thread caches, and four threads allocate and free in a loop while the main
/// thread reloads, so the arena's lock is held by a stopped thread at most stops.
#[test]
#[ignore = "run in a child process by a_thread_holding_the_allocator_lock_at_the_stop_is_no_deadlock"]
fn allocating_threads_with_one_arena_child() {
    assert!(std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max=1")));
    let [v1, v2] = builds(&gxx(), "-O2");
    let mut runtime = Runtime::load(&v1).unwrap();
    let worker = runtime.create("th::Worker").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let allocations = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (stop, allocations) = (stop.clone(), allocations.clone());
            std::thread::spawn(move || {
                let mut seed = t as u64 + 1;
                let mut kept: Vec<Vec<u8>> = Vec::new();
                while !stop.load(SeqCst) {
                    seed = host_work(seed);
                    // 2-60 KiB: past the thread caches, from the shared arena, under its lock.
                    kept.push(vec![seed as u8; 2048 + (seed % 59_000) as usize]);
                    if kept.len() > 32 {
                        kept.swap_remove((seed % 32) as usize);
                    }
                    allocations.fetch_add(1, SeqCst);
                }
            })
        })
        .collect();
    let mut next = &v2;
    for _ in 0..50 {
        let report = runtime.reload(next).unwrap().rehydrate_all().unwrap();
        assert!(report.threads.stopped >= 4);
        next = if next == &v2 { &v1 } else { &v2 };
    }
    stop.store(true, SeqCst);
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(allocations.load(SeqCst) > 1000);
    drop(worker);
    println!("one-arena child: 50 reloads committed");
}

#[test]
fn a_thread_holding_the_allocator_lock_at_the_stop_is_no_deadlock() {
    builds(&gxx(), "-O2"); // built here, so the child's time is the reloads'
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "allocating_threads_with_one_arena_child",
            "--ignored",
            "--nocapture",
        ])
        .env(
            "GLIBC_TUNABLES",
            "glibc.malloc.arena_max=1:glibc.malloc.tcache_count=0",
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(300) {
            child.kill().unwrap();
            panic!("the child made no progress in 300 s: deadlock");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut output).unwrap();
    assert!(status.success(), "{status}: {output}");
    assert!(output.contains("50 reloads committed"), "{output}");
}

/// The child-process half of the next test: the stop signal has a handler of the host's before
/// the first reload.
#[test]
#[ignore = "run in a child process by a_stop_signal_the_host_uses_refuses_the_reload"]
fn stop_signal_taken_child() {
    extern "C" fn host_handler(_: libc::c_int) {}
    // SAFETY: installs a handler that does nothing, for a signal nothing else in this process sends.
    unsafe { libc::signal(rehydrate::stop_signal(), host_handler as *const () as usize) };
    let [v1, v2] = builds(&gxx(), "-O2");
    let mut runtime = Runtime::load(&v1).unwrap();
    let worker = runtime.create("th::Worker").unwrap();
    let spinning = Arc::new(AtomicBool::new(true));
    let other = {
        let spinning = spinning.clone();
        std::thread::spawn(move || while spinning.load(SeqCst) {})
    };
    let error = runtime.reload(&v2).unwrap().rehydrate_all().unwrap_err();
    assert!(
        matches!(error, Error::StopSignalTaken { signal } if signal == rehydrate::stop_signal()),
        "{error}"
    );
    // SAFETY: the fixture exports `long th_version(void)`; the old build is still current.
    let version = unsafe { *runtime.symbol::<VersionFn>("th_version").unwrap() };
    // SAFETY: takes nothing.
    assert_eq!(unsafe { version() }, 1);
    spinning.store(false, SeqCst);
    other.join().unwrap();
    drop(worker);
    println!("refused: {error}");
}

#[test]
fn a_stop_signal_the_host_uses_refuses_the_reload() {
    builds(&gxx(), "-O2");
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "stop_signal_taken_child",
            "--ignored",
            "--nocapture",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("already has another handler"), "{stdout}");
}
