//! What every fuzz target shares: the peak-tracking allocator and the budgets each harness is
//! held to, from `rpc_tests::alloc` (where `cargo test`'s corpus replay uses them too).

pub use rpc_tests::alloc::{
    PeakAlloc, connection_budget, decode_budget, frame_budget, within_budget,
};
