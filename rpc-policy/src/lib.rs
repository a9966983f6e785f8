//! Policy over connections of the rpc toolkit, beside the core as hyper-util sits beside
//! hyper: reconnection, load balancing, safe retries, health watching ([`balanced`]), and
//! client middleware ([`ChannelExt::layer`]).
//!
//! Everything here is built on `rpc_core`'s public surface only: a [`Route`] carries a
//! `Channel`'s calls, and each connection is a plain `Channel` whose load
//! (`calls_in_flight`), whether it still takes calls (`is_taking_calls`,
//! `stopped_taking_calls`) and `call_encoded` are all a policy needs.
//!
//! Users of `rpc-transport` reach this crate as `rpc_transport::policy`, and its ready-made
//! channels as `rpc_transport::tcp::balanced`, `tcp::reconnecting` and
//! `unix::reconnecting`.
//!
//! [`Route`]: rpc_core::route::Route

mod balance;
mod channel;
mod config;
mod endpoint;
mod layer;

pub use balance::{Connect, Resolve};
pub use channel::balanced;
pub use config::BalanceConfig;
pub use layer::{ChannelExt, ClientStack, SendCall};
pub use rpc_core::route::BoxFuture;
