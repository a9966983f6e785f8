//! Fuzzes `rpc_tests::fuzzing::frame_decoder` (see its documentation).
#![no_main]

#[global_allocator]
static ALLOC: rpc_fuzz::PeakAlloc = rpc_fuzz::PeakAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rpc_fuzz::within_budget(data, rpc_fuzz::frame_budget(data), rpc_tests::fuzzing::frame_decoder);
});
