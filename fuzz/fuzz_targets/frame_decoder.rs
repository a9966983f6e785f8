//! Fuzzes `rpc_tests::fuzzing::frame_decoder` (see its documentation).
#![no_main]

#[global_allocator]
static ALLOC: rpc_fuzz::PeakAlloc = rpc_fuzz::PeakAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rpc_fuzz::within_budget(data, 64 * 1024 + 8 * data.len(), rpc_tests::fuzzing::frame_decoder);
});
