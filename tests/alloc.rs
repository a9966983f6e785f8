//! An allocator that tracks the peak of live heap bytes, and the budgets the harnesses are
//! held to: an input may never make the code under test allocate more than its own size
//! pays for (a length prefix or a declared `Vec` length is only a claim). The fuzz targets
//! and `cargo test`'s corpus replay (`tests/corpus.rs`) install it and use the same budgets.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting live bytes and their peak. Install it with
/// `#[global_allocator]` in a binary that runs one harness at a time.
#[derive(Debug)]
pub struct PeakAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only counters are added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let grown = new_size - layout.size();
            let live = LIVE.fetch_add(grown, Ordering::Relaxed) + grown;
            PEAK.fetch_max(live, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `harness` on `input` and panics if the heap grew past `budget` bytes above where it
/// stood when the run began. Meaningful only where [`PeakAlloc`] is the global allocator.
pub fn within_budget(input: &[u8], budget: usize, harness: fn(&[u8])) {
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    harness(input);
    let grown = PEAK.load(Ordering::Relaxed).saturating_sub(start);
    assert!(
        grown <= budget,
        "{} input bytes made the heap grow by {grown} bytes (budget {budget})",
        input.len()
    );
}

/// The budget for feeding `input` to a frame decoder: a little over what it was given.
pub fn frame_budget(input: &[u8]) -> usize {
    64 * 1024 + 8 * input.len()
}

/// The budget for decoding values from `input` (the envelope harness holds up to two
/// decoded values and an encoding at once): the codec lets values take 32 bytes of
/// memory per input byte, plus 64 KiB, and a `Vec` growing by doubling holds up to three
/// times its elements while it moves them.
pub fn decode_budget(input: &[u8]) -> usize {
    512 * 1024 + 256 * input.len()
}

/// The budget for a connection harness: a fixed allowance for the runtime's and the
/// connection's own state and a few frames at the fuzzing limit (64 KiB), plus the
/// decoding budget of what the peer actually sent.
pub fn connection_budget(input: &[u8]) -> usize {
    4 * 1024 * 1024 + 256 * input.len()
}

/// The budget of the harness named `target` (see [`crate::fuzzing::TARGETS`]) for `input`.
pub fn budget(target: &str, input: &[u8]) -> usize {
    match target {
        "frame_decoder" => frame_budget(input),
        "envelope" => decode_budget(input),
        _ => connection_budget(input),
    }
}
