//! What every fuzz target shares: an allocator that tracks the peak of live heap bytes, so
//! a target can assert that an input never made the code under test allocate more than the
//! input's own size pays for (a length prefix or a declared `Vec` length is only a claim).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting live bytes and their peak.
pub struct PeakAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
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
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `harness` on `input` and panics if the heap grew past `budget` bytes above where it
/// stood when the run began.
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

/// The budget for decoding values from `input` (the envelope harness holds up to two
/// decoded values and an encoding at once): the codec lets elements take 32 bytes of
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
