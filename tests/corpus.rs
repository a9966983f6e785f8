//! Replays every input in `fuzz/corpus/<target>/` (the regression inputs the fuzzers
//! found interesting) and the built-in seeds through the fuzz harnesses, under the same
//! allocation bound as the fuzzers, so a decoder or connection bug a fuzzer once found
//! stays found on every `cargo test`.
//!
//! Its own test binary with one test, so that the peak-tracking allocator sees nothing but
//! the harness it measures.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use rpc_tests::{alloc, fuzzing};

#[global_allocator]
static ALLOC: alloc::PeakAlloc = alloc::PeakAlloc;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// The committed inputs of `target`, sorted by name so failures repeat in one order.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(corpus_dir(target)) else {
        return Vec::new();
    };
    let mut inputs: Vec<_> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    inputs.sort();
    inputs
}

/// Runs the harness on one input within its allocation budget, naming the input if it
/// fails.
fn replay(target: &str, name: &str, input: &[u8]) {
    let harness = fuzzing::harness(target).unwrap();
    let budget = alloc::budget(target, input);
    let outcome = std::panic::catch_unwind(|| alloc::within_budget(input, budget, harness));
    assert!(outcome.is_ok(), "{target}: input {name} fails its harness");
}

#[test]
fn the_seeds_and_the_committed_corpus_pass_every_harness() {
    for (target, input) in fuzzing::seeds() {
        replay(target, "(seed)", &input);
    }
    let mut replayed = 0;
    for target in fuzzing::TARGETS {
        for (path, input) in corpus(target) {
            replay(target, &path.display().to_string(), &input);
            replayed += 1;
        }
    }
    assert!(replayed > 0, "the corpus under fuzz/corpus is missing");
}

/// Writes the seeds into `fuzz/corpus` (run by hand before a first fuzzing run:
/// `cargo test -p rpc-tests --test corpus -- --ignored write_seeds`).
#[test]
#[ignore = "writes files; run by hand to start a corpus"]
fn write_seeds() {
    for (index, (target, input)) in fuzzing::seeds().into_iter().enumerate() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{index}")), input).unwrap();
    }
}
