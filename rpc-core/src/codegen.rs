//! The contract between the code `#[service]` generates and the runtime, for hand-written
//! clients and servers too.
//!
//! A client addresses each method with a [`MethodSpec`] and calls it through
//! [`Channel::call`](crate::Channel::call) and its streaming twins. A server type implements
//! [`Dispatch`]: [`Server`](crate::Server) routes each request to it by service id, and runs
//! the [`HandlerFuture`] it returns for the [`IncomingRequest`], whose result is a
//! [`Reply`].
//!
//! ```
//! use rpc_core::codegen::{Dispatch, HandlerFuture, IncomingRequest, Reply};
//! use rpc_core::RpcError;
//!
//! /// A service written by hand: `Echo.echo(String) -> String`.
//! struct Echo;
//!
//! impl Dispatch for Echo {
//!     fn service_name(&self) -> &'static str {
//!         "Echo"
//!     }
//!
//!     fn method_name(&self, method_id: u32) -> Option<&'static str> {
//!         (method_id == rpc_core::wire::wire_id("echo")).then_some("echo")
//!     }
//!
//!     fn dispatch(&self, method_id: u32, request: IncomingRequest) -> Result<HandlerFuture, RpcError> {
//!         if self.method_name(method_id).is_none() {
//!             return Err(RpcError::UnknownMethod { service: "Echo".into(), method: "?".into() });
//!         }
//!         let (text,): (String,) = request.decode_args()?;
//!         Ok(Box::pin(async move { Reply::new(text) }))
//!     }
//! }
//!
//! let server = rpc_core::Server::new().add_service(Echo);
//! # let _ = server;
//! ```
//!
//! Generated code names everything, the standard library included, through this module, so
//! that it works under `#![no_implicit_prelude]` and whatever the user's crate shadows.

pub use crate::call::MethodSpec;
pub use crate::codec::{ByteBuf, ByteSlice};
pub use crate::dispatch::{Dispatch, HandlerFuture, IncomingRequest, Reply};
pub use crate::shape::{MethodEntry, MethodShape, ServiceShapes};

#[doc(hidden)]
pub use crate::{CallOptions, Channel, Context, RpcError};
#[doc(hidden)]
pub use core::clone::Clone;
#[doc(hidden)]
pub use core::convert::Into;
#[doc(hidden)]
pub use core::default::Default;
#[doc(hidden)]
pub use core::fmt::{Debug, Formatter, Result as FmtResult};
#[doc(hidden)]
pub use core::future::Future;
#[doc(hidden)]
pub use core::marker::{Send, Sync};
#[doc(hidden)]
pub use core::option::Option;
#[doc(hidden)]
pub use core::pin::Pin;
#[doc(hidden)]
pub use core::result::Result;
#[doc(hidden)]
pub use core::stringify;
#[doc(hidden)]
pub use std::boxed::Box;
#[doc(hidden)]
pub use std::string::String;
#[doc(hidden)]
pub use std::sync::{Arc, OnceLock};
#[doc(hidden)]
pub use std::time::{Duration, Instant};

/// What a stub emitted beside `#[service]`'s errors returns: never called, since those
/// errors stop the build.
#[doc(hidden)]
pub fn stubbed<T>() -> T {
    unreachable!("generated from a #[service] with errors")
}

/// The error a generated dispatcher returns for a method id it does not know.
pub fn unknown_method(service: &'static str, method_id: u32) -> RpcError {
    RpcError::UnknownMethod {
        service: service.into(),
        method: std::format!("#{method_id:08x}").into(),
    }
}
