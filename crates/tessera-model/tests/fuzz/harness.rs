//! What every fuzz case runs under: a seeded generator, an allocation meter,
//! a watchdog and a panic catcher, so a case that hangs, panics or allocates
//! beyond its file's size fails the test and names itself.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

/// Counts live heap bytes and their peak.
pub struct Meter;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Cases run one at a time, so the meter sees one case's allocations.
pub static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

// SAFETY: every call goes straight to `System`; the counters only observe.
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            let live = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
}

/// splitmix64: small, seedable, the same everywhere.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Heap bytes `f` allocates at its peak above where it started.
pub fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

/// Runs `case` for `0..count`, each under `catch_unwind`, on a worker
/// thread watched for hangs; returns how many ended in an error (as
/// opposed to loading). Any panic, hang or allocation past `max_alloc(i)`
/// bytes above the start fails the test naming the case.
pub fn run_cases(
    what: &str,
    count: usize,
    max_alloc: impl Fn(usize) -> usize + Send + 'static,
    case: impl Fn(usize) -> (String, Result<(), String>) + Send + 'static,
) -> usize {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // The message only: capturing a backtrace reads the debug info, hundreds
    // of megabytes the meter would charge to the case (panics that the
    // loaders catch and turn into errors included).
    std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        for i in 0..count {
            let base = LIVE.load(Ordering::Relaxed);
            PEAK.store(base, Ordering::Relaxed);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(i)));
            let grew = PEAK.load(Ordering::Relaxed).saturating_sub(base);
            let verdict = match outcome {
                Err(_) => Err(format!("case {i} panicked")),
                Ok((label, _)) if grew > max_alloc(i) => {
                    Err(format!("case {i} ({label}) allocated {grew} bytes"))
                }
                Ok((label, Err(e))) if e.trim().is_empty() => {
                    Err(format!("case {i} ({label}) gave an empty error"))
                }
                Ok((_, r)) => Ok(r.is_err()),
            };
            if tx.send((i, verdict)).is_err() {
                return;
            }
        }
    });
    let mut errors = 0;
    let mut failures = Vec::new();
    for _ in 0..count {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((_, Ok(was_error))) => errors += usize::from(was_error),
            Ok((_, Err(f))) => failures.push(f),
            Err(_) => panic!("{what}: a case ran over 60 s (hang?) after {errors} errors"),
        }
    }
    worker.join().expect("the worker ends");
    assert!(failures.is_empty(), "{what}: {failures:#?}");
    errors
}
