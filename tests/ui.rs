//! Compile-time behaviour of `#[service]`: every misuse is a clear error at its span
//! (`ui/fail`, with `.stderr` snapshots), and hygiene cases compile (`ui/pass`).
//!
//! Diagnostics drift between compiler versions: regenerate the snapshots with
//! `TRYBUILD=overwrite cargo test -p rpc-tests --test ui` on the toolchain CI uses.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui/pass/*.rs");
    cases.compile_fail("ui/fail/*.rs");
}
