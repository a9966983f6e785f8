//! End-to-end behaviour of the toolkit, through the public API, over every transport.
//!
//! One test binary with a module per area (matklad's "one integration test binary").

// Test code: a failed step should stop the test there. clippy's `allow-unwrap-in-tests`
// does not cover helpers outside `#[test]` functions (rust-clippy#16122).
#![allow(clippy::unwrap_used)]

mod auth;
mod balance;
mod borrowed;
mod both_ways;
mod calls;
mod compat;
mod compression;
mod deadlines;
mod faults;
mod generics;
mod health;
mod hostile;
mod hostile_again;
mod hostile_client;
mod http;
mod middleware;
mod observe;
mod properties;
mod shutdown;
mod streams;
mod stress;
mod tls;
