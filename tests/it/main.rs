//! End-to-end behaviour of the toolkit, through the public API, over every transport.
//!
//! One test binary with a module per area (matklad's "one integration test binary").

mod calls;
mod deadlines;
mod faults;
mod shutdown;
