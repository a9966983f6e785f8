//! Transports for the rpc toolkit: TCP, Unix domain sockets and an in-process loopback.
//!
//! ```no_run
//! use rpc_core::{service, Server};
//!
//! #[service]
//! pub trait Echo {
//!     async fn echo(&self, text: String) -> String;
//! }
//!
//! struct Impl;
//! impl Echo for Impl {
//!     async fn echo(&self, text: String) -> String { text }
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::new().add_service(EchoServer::new(Impl));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7000").await?;
//! tokio::spawn(rpc_transport::serve(listener, server));
//!
//! let client = EchoClient::new(rpc_transport::tcp::connect("127.0.0.1:7000").await?);
//! assert_eq!(client.echo("hi".to_owned()).await?, "hi");
//! # Ok(())
//! # }
//! ```
//!
//! # Organization
//!
//! - [`tcp`], [`unix`], [`loopback`]: `connect` functions that return an `rpc_core::Channel`.
//! - `tls` (with the `tls` feature): TLS and mutual TLS over TCP with rustls, a
//!   `TlsListener` for `serve` and `connect` for clients.
//! - [`serve`]: the accept loop for a `TcpListener` or `UnixListener`, with graceful shutdown.
//! - [`framed`]: length-delimited framing over any `AsyncRead`/`AsyncWrite`, for other
//!   transports.
//! - [`policy`]: balancing, reconnection, retries and client middleware (`rpc-policy`),
//!   which [`tcp::balanced`], [`tcp::reconnecting`] and `unix::reconnecting` build on.
//!
//! This is the only crate of the toolkit that uses `tokio::net`.

pub mod framed;
pub mod loopback;
mod serve;
pub mod tcp;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(unix)]
pub mod unix;

pub use serve::{serve, Accepted, Listener, Serve, WithGracefulShutdown};

/// Policy over connections (balanced and reconnecting channels, retries, client
/// middleware): the `rpc-policy` crate, re-exported so that users of this crate need no
/// other dependency for them.
pub use rpc_policy as policy;
