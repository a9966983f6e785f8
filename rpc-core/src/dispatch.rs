//! The contract between generated `{Name}Server<T>` types and the runtime.
//!
//! `#[service]` implements [`Dispatch`] for each service's server type; [`crate::Server`]
//! routes each request to it by service id, and runs the future it returns. It can be
//! implemented by hand for services that are not described by a trait.

use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::context::Context;
use crate::error::RpcError;

/// A decoded request on its way to a handler.
#[derive(Debug)]
pub struct IncomingRequest {
    /// Deadline, metadata and peer of the call.
    pub context: Context,
    /// The encoded argument tuple.
    pub payload: Bytes,
}

impl IncomingRequest {
    /// Decodes the argument tuple.
    ///
    /// # Errors
    ///
    /// `RpcError::Codec` when the payload is not exactly one `T`.
    pub fn decode_args<T: DeserializeOwned>(&self) -> Result<T, RpcError> {
        codec::decode(&self.payload)
    }
}

/// A handler's result, encoded straight into the outgoing frame when it is queued (no
/// intermediate buffer, so large results are copied once).
pub struct Reply {
    value: Box<dyn EncodeInto>,
}

trait EncodeInto: Send {
    fn encode_into(&self, buf: &mut BytesMut) -> Result<(), RpcError>;
}

impl<T: Serialize + Send> EncodeInto for T {
    fn encode_into(&self, buf: &mut BytesMut) -> Result<(), RpcError> {
        codec::encode_into(buf, self)
    }
}

impl Reply {
    /// A reply carrying `value`.
    pub fn new<T: Serialize + Send + 'static>(value: T) -> Reply {
        Reply {
            value: Box::new(value),
        }
    }

    /// Appends the value's encoding to `buf`.
    ///
    /// # Errors
    ///
    /// `RpcError::Codec` when the value cannot be serialized; `buf` may then hold part of
    /// it, and the caller abandons the frame.
    pub fn encode_into(&self, buf: &mut BytesMut) -> Result<(), RpcError> {
        self.value.encode_into(buf)
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply").finish_non_exhaustive()
    }
}

/// The future that runs one call's handler and returns its reply.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Reply> + Send + 'static>>;

/// A service the server can route calls to: what `#[service]` generates for `{Name}Server<T>`.
pub trait Dispatch: Send + Sync + 'static {
    /// The service's name on the wire (the trait's name).
    fn service_name(&self) -> &'static str;

    /// The name of the method with this wire id, for logs.
    fn method_name(&self, method_id: u32) -> Option<&'static str>;

    /// Decodes the arguments of `method_id` and returns the future that runs its handler.
    ///
    /// # Errors
    ///
    /// `RpcError::UnknownMethod` for an id the service does not have and `RpcError::Codec`
    /// for arguments that do not decode; the server answers that call with the error.
    fn dispatch(&self, method_id: u32, request: IncomingRequest)
        -> Result<HandlerFuture, RpcError>;
}
