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

/// A handler's encoded result, ready to be framed.
#[derive(Debug, Default)]
pub struct EncodedReply {
    payload: BytesMut,
}

impl EncodedReply {
    /// Encodes a handler's return value.
    ///
    /// # Errors
    ///
    /// `RpcError::Codec` when the value cannot be serialized.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<EncodedReply, RpcError> {
        let mut payload = BytesMut::new();
        codec::encode_into(&mut payload, value)?;
        Ok(EncodedReply { payload })
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.payload
    }
}

/// The future that runs one call's handler and encodes its result.
pub type HandlerFuture =
    Pin<Box<dyn Future<Output = Result<EncodedReply, RpcError>> + Send + 'static>>;

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
