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
pub use crate::codec::{ByteBuf, ByteSlice, SharedBytes};
pub use crate::dispatch::{Dispatch, HandlerFuture, IncomingRequest, Reply};
pub use crate::method_types::{CallKind, MethodTypes};
pub use crate::own_schema::{bytes_schema, own_schemas, schema_of, SchemaMaker, SchemaOf};
pub use crate::schema::MethodSchemas;
pub use crate::shape::{MethodEntry, MethodShape, ServiceShapes};

#[doc(hidden)]
pub use crate::{CallOptions, Channel, Context, RpcError, Streaming};

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
pub use core::marker::PhantomData;
#[doc(hidden)]
pub use core::ops::Deref;

use bytes::Bytes;
use serde::Serialize;
#[doc(hidden)]
pub use std::boxed::Box;
#[doc(hidden)]
pub use std::string::String;
#[doc(hidden)]
pub use std::sync::{Arc, OnceLock};
#[doc(hidden)]
pub use std::time::{Duration, Instant};
#[doc(hidden)]
pub use std::vec::Vec;

/// A unary call of `M`: what a generated client method returns.
///
/// # Errors
///
/// Any [`RpcError`] the call ends with.
pub async fn call_unary<M: MethodTypes>(
    channel: Channel,
    spec: &'static MethodSpec,
    options: CallOptions,
    args: M::Args,
) -> Result<M::Output, RpcError> {
    channel
        .call::<M::Args, M::Output>(spec, &options, &args)
        .await
}

/// A call of `M` whose result is a stream, sending `input` as its request stream if it
/// takes one.
///
/// # Errors
///
/// Any [`RpcError`] that ends the call before its stream starts.
pub async fn call_streaming<M: MethodTypes>(
    channel: Channel,
    spec: &'static MethodSpec,
    options: CallOptions,
    args: M::Args,
    input: Option<Streaming<M::InputItem>>,
) -> Result<Streaming<M::OutputItem>, RpcError> {
    channel
        .call_streaming::<M::Args, M::InputItem, M::OutputItem>(spec, &options, &args, input)
        .await
}

/// A call of `M` that sends `input` as its request stream and returns a single result.
///
/// # Errors
///
/// Any [`RpcError`] the call ends with.
pub async fn call_with_input<M: MethodTypes>(
    channel: Channel,
    spec: &'static MethodSpec,
    options: CallOptions,
    args: M::Args,
    input: Streaming<M::InputItem>,
) -> Result<M::Output, RpcError> {
    channel
        .call_with_input::<M::Args, M::InputItem, M::Output>(spec, &options, &args, input)
        .await
}

/// The arguments of a request for `M`.
///
/// # Errors
///
/// `RpcError::Codec` when the payload is not `M`'s arguments.
pub fn decode_args<M: MethodTypes>(request: &IncomingRequest) -> Result<M::Args, RpcError> {
    if M::SHARES_BYTES {
        request.decode_shared_args::<M::Args>()
    } else {
        request.decode_args::<M::Args>()
    }
}

/// The request stream of a request for `M`.
pub fn take_stream<M: MethodTypes>(request: &mut IncomingRequest) -> Streaming<M::InputItem> {
    request.take_stream::<M::InputItem>()
}

/// The reply carrying `M`'s result.
pub fn reply<M: MethodTypes>(value: M::Output) -> Reply {
    Reply::new(value)
}

/// The reply streaming `M`'s response items.
pub fn reply_stream<M: MethodTypes>(stream: Streaming<M::OutputItem>) -> Reply {
    Reply::stream(stream)
}

/// A unary call of `M` whose arguments are encoded already (a method that takes borrowed
/// arguments encodes them before its future starts, so that the future owns nothing
/// borrowed).
///
/// # Errors
///
/// The encoding's error, or any [`RpcError`] the call ends with.
pub async fn call_encoded<M: MethodTypes>(
    channel: Channel,
    spec: &'static MethodSpec,
    options: CallOptions,
    args: Result<Bytes, RpcError>,
) -> Result<M::Output, RpcError> {
    let call = crate::route::ClientCall::new(*spec, options, args?);
    let payload = channel.call_encoded(call).await?;
    spec.decode_payload(&payload)
}

/// Encodes a call's argument tuple (of references, for borrowed arguments).
///
/// # Errors
///
/// `RpcError::Codec` when a value cannot be serialized.
pub fn encode_args<A: Serialize + ?Sized>(args: &A) -> Result<Bytes, RpcError> {
    let mut encoded = bytes::BytesMut::new();
    crate::codec::encode_into(&mut encoded, args)?;
    Ok(encoded.freeze())
}

/// Decodes a request's arguments borrowing from its payload (see
/// [`codec::decode_borrowed`](crate::codec::decode_borrowed)), naming the method when they
/// do not decode.
///
/// # Errors
///
/// `RpcError::Codec` naming `service.method`.
pub fn decode_borrowed_args<'de, T: serde::Deserialize<'de>>(
    service: &str,
    method: &str,
    payload: &'de Bytes,
) -> Result<T, RpcError> {
    crate::codec::decode_shared_borrowed(payload).map_err(|error| match error {
        RpcError::Codec { message } => RpcError::codec(format!(
            "the arguments of `{service}.{method}` did not decode: {message}"
        )),
        other => other,
    })
}

/// The reply refusing a call whose arguments (decoded inside its handler's future, as
/// borrowed arguments are) did not decode: answered `BAD_REQUEST`, as they would have been
/// before the handler started.
pub fn bad_arguments(error: &RpcError) -> Reply {
    let text = match error {
        RpcError::Codec { message } => message.to_string(),
        other => other.to_string(),
    };
    Reply::refused(crate::status::Status::BadRequest, text)
}

/// A value kept for the life of the process per type `Key` (an instantiation of a generic
/// service): `init` makes it on first use. Generic services keep their shapes and method
/// specs here, since a `static` in a generic function is one for every instantiation.
pub fn cached<Key: 'static, T: Send + Sync + 'static>(init: impl FnOnce() -> T) -> &'static T {
    use std::any::{Any, TypeId};
    use std::collections::HashMap;
    use std::sync::Mutex;
    type Values = HashMap<(TypeId, TypeId), &'static (dyn Any + Send + Sync)>;
    static VALUES: OnceLock<Mutex<Values>> = OnceLock::new();
    let key = (TypeId::of::<Key>(), TypeId::of::<T>());
    let values = VALUES.get_or_init(Mutex::default);
    let lock = || {
        values
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let known = lock().get(&key).copied();
    let value = match known {
        Some(known) => known,
        None => {
            // Made outside the lock (it may trace types); should two threads race, the
            // first one's is kept and the other's is leaked, once.
            let made: &'static (dyn Any + Send + Sync) = Box::leak(Box::new(init()));
            *lock().entry(key).or_insert(made)
        }
    };
    match value.downcast_ref::<T>() {
        Some(value) => value,
        // Keyed by `T`'s own type id as well, so the value is always a `T`.
        None => unreachable!("a cached value of another type"),
    }
}

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
