//! The call model of the rpc toolkit: define a service with [`service`], serve it with a
//! [`Server`], call it through a [`Channel`].
//!
//! This crate defines what the bytes mean (the [`wire`] protocol, the postcard [`codec`])
//! and multiplexes calls over one connection; it never opens a socket. `rpc-transport`
//! carries connections over TCP, Unix sockets and an in-process loopback.
//!
//! # Example
//!
//! ```
//! use rpc_core::{service, Context, RpcError, Server};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! pub enum MathError { DivideByZero }
//!
//! /// A calculator.
//! #[service]
//! pub trait Calculator {
//!     /// Adds two numbers.
//!     async fn add(&self, a: i64, b: i64) -> i64;
//!     /// Application errors travel as values.
//!     async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
//!     /// A handler can take the call's context first; clients do not pass it.
//!     async fn whoami(&self, cx: &Context) -> String;
//! }
//!
//! struct Calc;
//!
//! impl Calculator for Calc {
//!     async fn add(&self, a: i64, b: i64) -> i64 { a + b }
//!     async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
//!         if b == 0 { Err(MathError::DivideByZero) } else { Ok(a / b) }
//!     }
//!     async fn whoami(&self, cx: &Context) -> String { cx.peer().to_string() }
//! }
//!
//! let server = Server::new().add_service(CalculatorServer::new(Calc));
//! // With rpc-transport: `rpc_transport::serve(listener, server)` on the server side and
//! // `CalculatorClient::new(rpc_transport::tcp::connect(addr).await?)` on the client side.
//! # let _ = server;
//! ```
//!
//! # Organization
//!
//! - [`service`]: the attribute macro that generates `{Name}Client` and `{Name}Server<T>`.
//! - [`Server`], [`Shutdown`], [`ServerConfig`]: routing calls to services.
//! - [`Channel`], [`CallOptions`], [`ChannelConfig`]: making calls over one connection.
//! - [`Channel::balanced`], [`Resolve`], [`Connect`], [`BalanceConfig`]: over many, with
//!   reconnection, load balancing, health checks and safe retries.
//! - [`Context`], [`Peer`]: what a handler knows about its call.
//! - [`RpcError`]: how calls fail.
//! - [`Health`], [`HealthReporter`]: the health service every server answers.
//! - [`transport`]: the traits a transport implements; [`wire`] and [`codec`]: the bytes.

mod balance;
mod channel;
pub mod codec;
mod config;
mod context;
mod dispatch;
mod error;
mod health;
pub mod middleware;
pub mod observe;
mod outbox;
mod recover;
mod server;
mod streaming;
pub mod transport;
pub mod wire;

#[doc(hidden)]
pub mod __private;

pub use balance::{BoxFuture, Connect, Resolve};
pub use channel::{CallOptions, Channel, ClientInterceptor, MethodSpec};
pub use config::{BalanceConfig, ChannelConfig, ServerConfig};
pub use context::{Context, Peer, UnixCredentials};
pub use dispatch::{Dispatch, HandlerFuture, IncomingRequest, Reply};
pub use error::RpcError;
pub use health::{Health, HealthClient, HealthReporter, HealthServer, ServingStatus};
pub use server::{CallInfo, Interceptor, Server, Shutdown};
pub use streaming::Streaming;

/// The serde this crate is built on, for deriving on types that services carry.
pub use serde;

/// Turns a trait into an RPC service: the trait itself (with `Send` futures), a client
/// `{Name}Client`, and a server dispatcher `{Name}Server<T>`.
///
/// ```
/// use rpc_core::service;
///
/// /// Says hello.
/// #[service]
/// pub trait Hello {
///     /// Greets `name`.
///     async fn hello(&self, name: String) -> String;
/// }
///
/// struct Impl;
/// impl Hello for Impl {
///     async fn hello(&self, name: String) -> String { format!("hello {name}") }
/// }
///
/// let _server: HelloServer<Impl> = HelloServer::new(Impl);
/// ```
///
/// Methods are `async fn` taking `&self`, with an optional `cx: &Context` first argument
/// that the client does not pass. Arguments and results are serde types. `Vec<u8>`
/// arguments and results travel as one block of bytes. Use `#[service(crate = "path")]`
/// when `rpc_core` is reachable under another name.
pub use rpc_macros::service;
