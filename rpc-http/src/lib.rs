//! Every `#[service]` reachable from any language: HTTP/JSON for the same
//! [`rpc_core::Server`] the binary protocol serves, with the same services, interceptors,
//! layers, health and limits, and an OpenAPI 3.1 document generated from the traits.
//!
//! Calls follow the Connect protocol's unary JSON conventions, so existing tooling
//! understands them:
//!
//! - `POST /{Service}/{method}` with `Content-Type: application/json` and a JSON object of
//!   the arguments by name (`{"a": 2, "b": 3}`; an empty body or `{}` for none). Success is
//!   `200` with the result as serde writes it (`Result` as `{"Ok": ..}` / `{"Err": ..}`);
//!   `Vec<u8>` travels as base64.
//! - `GET /{Service}/{method}?encoding=json&message=<the arguments, URL-encoded>` for
//!   `#[idempotent]` methods and methods that return a stream.
//! - A method returning `Streaming<T>` answers `application/x-ndjson` (a JSON value per
//!   line, sent as produced), or Server-Sent Events when the request accepts
//!   `text/event-stream`; an error ends the stream with an `{"error": ..}` line (an `error`
//!   event).
//! - A method taking `Streaming<T>` reads an `application/x-ndjson` body: the arguments
//!   object on the first line, then one item a line, each handed to the handler as it
//!   arrives (bidirectional calls stream both ways at once over HTTP/2, or HTTP/1.1 chunked
//!   where the client can do it).
//! - Errors are a Connect code with its HTTP status and `{"code": "...", "message": "..."}`:
//!   `invalid_argument` 400 for arguments that do not decode (naming the argument and the
//!   problem), `unauthenticated` 401, `permission_denied` 403, `resource_exhausted` 429,
//!   `unimplemented` 501 for an unknown service or method (only once the server's
//!   interceptors have let the caller through, so a caller they refuse cannot tell which
//!   paths exist), `unavailable` 503,
//!   `deadline_exceeded` 504, `internal` 500 (a panic's text stays in the log); 405 for the
//!   wrong method, 415 for the wrong content type, 413 for a body over the frame limit
//!   (refused from its `Content-Length` before it is read).
//! - `Connect-Timeout-Ms` sets the call's deadline; the other request headers are its
//!   metadata (lower-cased, hop-by-hop headers left out), so `authorization` reaches
//!   interceptors. Handlers see the HTTP client's address in `cx.peer()`. A client that
//!   disconnects cancels its call.
//! - `GET /openapi.json` is the [`openapi`] document of every service.
//! - Slow clients hold nothing for long, with the binary port's limits: a connection's
//!   first bytes must arrive within `preface_timeout` (they also say HTTP/1.1 or HTTP/2),
//!   HTTP/1.1 headers within 30 s, a unary body within `frame_timeout` (and each line of a
//!   streamed body within it of its first byte; late ones are answered 408), a body is
//!   refused past `max_frame_size`, and at most `max_connections` are served at once.
//!
//! ```no_run
//! use rpc_core::{service, Server};
//!
//! #[service]
//! pub trait Calculator {
//!     async fn add(&self, a: i64, b: i64) -> i64;
//! }
//!
//! struct Calc;
//! impl Calculator for Calc {
//!     async fn add(&self, a: i64, b: i64) -> i64 { a + b }
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> std::io::Result<()> {
//! let server = Server::new().add_service(CalculatorServer::new(Calc));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! rpc_http::serve(listener, server).await
//! // curl -H 'Content-Type: application/json' -d '{"a": 2, "b": 3}' \
//! //      http://127.0.0.1:8080/Calculator/add          →  5
//! # }
//! ```
//!
//! # Organization
//!
//! - [`serve`] (`serve.rs`): the accept loop, HTTP/1.1 and HTTP/2 on one port.
//! - [`OnePort`] (`one_port.rs`): the binary protocol and HTTP/JSON on one port, told apart
//!   by their first bytes (opt-in).
//! - [`HttpService`] (`service.rs`): the same as a `tower::Service`, for axum or hyper.
//! - `call.rs`: one request as one call; `error.rs`: errors as Connect codes.
//! - [`openapi`] (`openapi.rs`): the document.

mod body;
mod call;
mod error;
mod one_port;
mod openapi;
mod serve;
mod service;
mod sniff;

pub use body::HttpBody;
pub use call::RequestBody;
pub use one_port::OnePort;
pub use openapi::openapi;
pub use serve::{serve, Serve};
pub use service::HttpService;
pub use sniff::Sniffed;
