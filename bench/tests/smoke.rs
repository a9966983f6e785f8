//! Keeps the benchmark from rotting: every scenario runs a few calls for every system and
//! every call returns the right result. Measures nothing (no timing asserts).

use rpc_bench::os::CountingAllocator;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[test]
fn every_scenario_runs_for_every_system() {
    let report = rpc_bench::run(&rpc_bench::Options::quick()).expect("the benchmark runs");
    assert_eq!(report.failures(), 0, "{report}");
    // 8 socket systems (raw, ours, tarpc, tonic; TCP and Unix) × 2 pinned placements + 3
    // in-process systems, × 5 scenarios; and the 8 socket systems in a plain runtime, × the
    // 2 headline scenarios; and the shared-buffer echo where there is one (raw and ours: 4
    // socket systems × 2 placements + 2 in process).
    assert_eq!(
        report.measurements(),
        (8 * 2 + 3) * 5 + 8 * 2 + (4 * 2 + 2),
        "{report}"
    );
    assert!(
        rpc_bench::os::allocations() > 0,
        "the counting allocator is registered"
    );
    let http = rpc_bench::http::run(&rpc_bench::Options::quick()).expect("the HTTP part runs");
    assert_eq!(http.rpc_http.failures + http.axum.failures, 0, "{http}");
    let scale = rpc_bench::scale::run(
        &rpc_bench::Options::quick(),
        std::path::Path::new(env!("CARGO_BIN_EXE_rpc-bench")),
    )
    .expect("the scale part runs");
    assert_eq!(scale.failures(), 0, "{scale}");
    assert_eq!(scale.ours.len(), 3, "{scale}");
    assert_eq!(scale.tarpc.len(), 3, "{scale}");
    let compression =
        rpc_bench::compress::run(&rpc_bench::Options::quick()).expect("the compression part runs");
    assert_eq!(
        compression.plain.failures + compression.lz4.failures,
        0,
        "{compression}"
    );
    assert!(
        compression.lz4.wire_bytes_per_call < compression.plain.wire_bytes_per_call / 2.0,
        "log lines travel compressed: {compression}"
    );
}
