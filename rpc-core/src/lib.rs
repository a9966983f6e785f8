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
//! At the root, what a service author uses:
//!
//! - [`service`]: the attribute macro that generates `{Name}Client` and `{Name}Server<T>`.
//! - [`Server`], [`Shutdown`], [`ServerConfig`]: routing calls to services;
//!   [`Interceptor`] and [`CallInfo`]: checking calls before they run.
//! - [`Channel`], [`CallOptions`], [`ChannelConfig`], [`ClientInterceptor`]: making calls.
//! - [`Context`], [`Peer`]: what a handler knows about its call.
//! - [`Streaming`]: streams as arguments and results.
//! - [`RpcError`]: how calls fail.
//!
//! In modules, for the rest: [`health`] (the health service every server answers),
//! [`middleware`] (tower layers around server calls), [`observe`] (tracing and metrics),
//! [`codec`] (the postcard codec), [`codegen`] (the contract generated code and hand-written
//! services use), [`route`] (for balancers and client middleware, such as `rpc-policy`'s),
//! [`transport`] (for transport authors), and [`wire`] (the bytes, for transports, tests and
//! fuzzing).
//!
//! # Layers
//!
//! Modules import only downward: the protocol (`error`, `status`, `wire`, `codec`,
//! `context`, `transport`, `observe`) → connection machinery (`outbox`, `stream`) → the
//! contracts (`call`, `config`, `dispatch`, `middleware`) → the two connection engines
//! (`client_connection`, `server_connection`) → the API (`channel`, `server`, `health`,
//! `codegen`). ARCHITECTURE.md draws it.

// The protocol.
pub mod codec;
mod context;
mod error;
pub mod observe;
mod recover;
mod status;
pub mod transport;
#[doc(hidden)]
pub mod wire;

// Connection machinery.
mod outbox;
mod stream;

// Contracts between the engines and what they run.
mod call;
mod config;
mod dispatch;
pub mod middleware;
mod shape;

// The connection engines.
mod client_connection;
mod server_connection;

// The API.
mod channel;
pub mod codegen;
pub mod health;
pub mod route;
mod server;

pub use call::CallOptions;
pub use channel::Channel;
pub use config::{ChannelConfig, ClientInterceptor, ServerConfig};
pub use context::{Context, Peer};
pub use error::RpcError;
pub use middleware::{CallInfo, Interceptor};
pub use server::Server;
pub use server_connection::Shutdown;
pub use stream::Streaming;

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
