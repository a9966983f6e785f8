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
//! Modules import only downward: the protocol (`error`, `status`, `blocks`, `wire`, `codec`,
//! `context`, `transport`, `observe`) → connection machinery (`outbox`, `stream`) → the
//! contracts (`call`, `config`, `dispatch`, `middleware`) → the two connection engines
//! (`client_connection`, `server_connection`) → the API (`channel`, `server`, `health`,
//! `codegen`). ARCHITECTURE.md draws it.

// The protocol.
mod blocks;
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
pub mod json;
mod method_types;
pub mod middleware;
mod own_schema;
mod schema;
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
pub use config::{ChannelConfig, ClientInterceptor, Compression, ServerConfig};
pub use context::{Context, Peer};
pub use error::RpcError;
pub use middleware::{CallInfo, Interceptor};
pub use server::Server;
pub use server_connection::Shutdown;
pub use stream::Streaming;

/// A shared byte buffer: a method's `Bytes` argument or result travels as one block, and
/// the server's handler receives it as a slice of the received frame (no copy).
pub use bytes::Bytes;
/// The serde this crate is built on, for deriving on types that services carry.
pub use serde;

/// Turns a trait into an RPC service: the trait itself (with `Send` futures), a client
/// `{Name}Client`, and a server dispatcher `{Name}Server<T>`.
///
/// ```
/// use rpc_core::{service, Context, RpcError, Streaming};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize)]
/// pub struct Order { pub sku: String, pub quantity: u32 }
///
/// #[derive(Debug, Serialize, Deserialize)]
/// pub enum OrderError { OutOfStock }
///
/// /// Doc comments carry over to the client's methods.
/// #[service]
/// pub trait Orders {
///     /// Application errors are values: the client gets `Result<Result<u64, OrderError>, RpcError>`.
///     async fn place(&self, order: Order) -> Result<u64, OrderError>;
///     /// Safe to run twice, so a balanced channel may retry it on another server.
///     #[idempotent]
///     async fn count(&self, sku: String) -> u32;
///     /// A handler that wants its call's deadline, metadata or peer takes `cx` first;
///     /// clients do not pass it.
///     async fn whoami(&self, cx: &Context) -> String;
///     /// Streams in, streams out, or both.
///     async fn watch(&self, skus: Streaming<String>) -> Streaming<u32>;
/// }
///
/// struct Shop;
///
/// impl Orders for Shop {
///     async fn place(&self, order: Order) -> Result<u64, OrderError> {
///         if order.quantity > 10 { Err(OrderError::OutOfStock) } else { Ok(1) }
///     }
///     async fn count(&self, _sku: String) -> u32 { 3 }
///     async fn whoami(&self, cx: &Context) -> String { cx.peer().to_string() }
///     async fn watch(&self, _skus: Streaming<String>) -> Streaming<u32> {
///         Streaming::new(futures_util::stream::iter([1, 2, 3]))
///     }
/// }
///
/// // An implementation shared with other code serves through its `Arc` too.
/// let shop = std::sync::Arc::new(Shop);
/// let server = rpc_core::Server::new().add_service(OrdersServer::new(shop.clone()));
/// # let _ = server;
///
/// async fn call(channel: rpc_core::Channel) -> Result<(), RpcError> {
///     let orders = OrdersClient::new(channel)
///         .with_timeout(std::time::Duration::from_secs(2))
///         .with_metadata("tenant", "acme");
///     match orders.place(Order { sku: "tea".into(), quantity: 2 }).await? {
///         Ok(id) => println!("order {id}"),
///         Err(OrderError::OutOfStock) => println!("out of stock"),
///     }
///     let _count: u32 = orders.count("tea".into()).await?;
///     Ok(())
/// }
/// # let _ = call;
/// ```
///
/// # What it generates
///
/// - **The trait**, with each `async fn` turned into a `fn` returning a `Send` future, so
///   handlers run on a multi-threaded runtime; implement it with plain `async fn`. It is
///   also implemented for `Arc<T>` of any implementation `T` (unless the trait has
///   supertraits).
/// - **`{Name}Client`**: `new(channel)`; `with_timeout(Duration)`, `with_deadline(Instant)` and
///   `with_metadata(key, value)`, each returning a copy whose calls carry them; `channel()`;
///   and one method per trait method, taking the same arguments (without `cx`) and returning
///   a `Send + 'static` future of `Result<T, RpcError>`. Cheap to clone; one `Channel` can
///   carry any number of clients of any services.
/// - **`{Name}Server<T>`**: `new(implementation)` (an implementation or an `Arc` of one),
///   `from_arc(arc)`, `get_ref()`; give it to [`Server::add_service`].
///
/// # Arguments and results
///
/// Methods are `async fn` taking `&self`. Arguments and results are serde types
/// (`Serialize + DeserializeOwned + Send + 'static`) that a non-self-describing format can
/// carry: no `#[serde(untagged)]`, `flatten` or `serde_json::Value`. `Vec<u8>` arguments and
/// results travel as one block of bytes. An optional `cx: &Context` comes first and is not
/// sent. At most one argument may be a [`Streaming<T>`], and the result may be one; the
/// call's deadline covers the whole stream.
///
/// Arguments of unary methods may be borrowed: `&str`, `&[u8]`, `&[T]` and `&T`. The client
/// method takes the same references (callers pass `&key` and keep their value); the
/// handler receives `&str` and `&[u8]` as slices of the received frame (no copy) and `&T`
/// from a value decoded for the call. Results are owned.
///
/// # Generic services
///
/// A generic trait is a service; its client and server carry the type parameters
/// (`StoreClient<K, V>`, `StoreServer<T, K, V>`), with the trait's bounds (which must make
/// the types serde types, `Send + Sync + 'static`):
///
/// ```
/// use std::hash::Hash;
/// use serde::{de::DeserializeOwned, Serialize};
///
/// #[rpc_core::service]
/// pub trait Store<K, V>
/// where
///     K: Serialize + DeserializeOwned + Eq + Hash + Send + Sync + 'static,
///     V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
/// {
///     async fn put(&self, key: K, value: V) -> Option<V>;
/// }
/// # fn client(channel: rpc_core::Channel) { let _: StoreClient<String, u64> = StoreClient::new(channel); }
/// ```
///
/// Each instantiation has its own shapes: a client of `Store<String, u64>` calling a server
/// of `Store<u32, u32>` gets `RpcError::Incompatible`, never a wrong decode. Two
/// instantiations share the service's name, so one server serves one of them.
///
/// # Attributes
///
/// - `#[idempotent]` on a method: running it twice has the effect of running it once, so a
///   balanced channel retries it on another server after a transport failure. Unary
///   methods only; it takes no arguments.
/// - `#[service(name = "storefront.Inventory")]`: the service's name on the wire, in errors,
///   logs and metrics (ASCII letters, digits, `_`, `-` and `.`). By default it is the
///   trait's name alone (raw identifiers unescaped), not its module path, so two traits
///   called `Inventory` on one server need a `name` each.
/// - `#[service(crate = "path")]` when `rpc_core` is reachable under another name.
/// - `#[service(schema)]` (with rpc-core's `schema` feature): the HTTP front door's OpenAPI
///   document describes the arguments, results and stream items by their own
///   `schemars::JsonSchema` implementations (doc comments, formats, validation) instead of
///   by how serde sees them; each of those types must then implement `JsonSchema`, and one
///   that does not is reported where it is written.
///
/// # What is refused
///
/// Each at its span, all reported together: methods that are not `async fn`, a missing
/// `&self` (or `self` by value, `&mut self`), generic methods, lifetime or const parameters
/// on the trait, patterns as arguments, `&mut` arguments or borrowed ones with a lifetime,
/// borrowed arguments of streaming methods, borrowed results (`&str`: write `String`),
/// `impl Trait` results (write the future's output type), default bodies,
/// associated types and constants, two methods of one name, a method named like the
/// client's own (`new`, `with_timeout`, ...), `cx` by value or not first, two stream
/// arguments, and a misspelled `#[idempotent]`. After an error the client and server types
/// are still emitted, so the code that uses them adds no errors of its own.
///
/// # Evolving a service
///
/// Each method's argument and result types are compared by their shape as serde sees them
/// (field names and order, variant names, element types, recursively) when a client first
/// calls a service on a connection:
///
/// - **Compatible**: adding methods (old clients never call them; calling a method the
///   server lacks is `RpcError::UnknownMethod`), adding services, renaming Rust paths or
///   aliases (`model::Order` and `Order`, `type OrderId = u64` and `u64`), renaming
///   arguments.
/// - **Incompatible**: adding, removing, reordering, renaming or retyping a field or a
///   variant anywhere inside an argument or the result, or changing the arguments. Calls to
///   that method fail with `RpcError::Incompatible`, naming the first difference (`argument
///   `order`: struct `Order` has 5 fields on the server, 4 here`), while the service's other
///   methods keep working. Even a `#[serde(default)]` field is a change: the format is not
///   self-describing, so old bytes would not decode.
/// - **To add a field safely**, add a method that takes the new type (`place_v2`) and keep
///   the old one until its clients are gone, or version the type (`OrderV2`) the same way.
pub use rpc_macros::service;
