//! The contract between generated `{Name}Server<T>` types and the runtime.
//!
//! `#[service]` implements [`Dispatch`] for each service's server type; [`crate::Server`]
//! routes each request to it by service id, and runs the future it returns. It can be
//! implemented by hand for services that are not described by a trait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, SmallEncoding};
use crate::context::Context;
use crate::error::RpcError;
use crate::shape::ServiceShapes;
use crate::status::Status;
pub(crate) use crate::stream::StreamSink;
use crate::stream::{send_stream, Inbox, Streaming};

/// A decoded request on its way to a handler.
#[derive(Debug)]
pub struct IncomingRequest {
    /// Deadline, metadata and peer of the call.
    pub context: Context,
    /// The encoded argument tuple.
    pub payload: Bytes,
    /// The stream of items the client sends for this call, if it said it would.
    pub(crate) stream: Option<Arc<Inbox>>,
}

impl IncomingRequest {
    /// The request stream of items the client sends for this call. A method that takes a
    /// `Streaming<T>` argument reads it from here; a client that sent none gets a stream that
    /// fails with a protocol error.
    pub fn take_stream<T: DeserializeOwned>(&mut self) -> Streaming<T> {
        match self.stream.take() {
            Some(inbox) => Streaming::remote(inbox, None),
            None => Streaming::failed(RpcError::protocol(
                "the client sent no stream for this call",
            )),
        }
    }

    /// Decodes the argument tuple.
    ///
    /// # Errors
    ///
    /// `RpcError::Codec` when the payload is not exactly one `T`.
    pub fn decode_args<T: DeserializeOwned>(&self) -> Result<T, RpcError> {
        codec::decode(&self.payload)
    }

    /// Decodes the argument tuple with its `bytes::Bytes` arguments as slices of the
    /// received frame ([`codec::decode_shared`]).
    ///
    /// # Errors
    ///
    /// `RpcError::Codec` when the payload is not exactly one `T`.
    pub fn decode_shared_args<T: DeserializeOwned>(&self) -> Result<T, RpcError> {
        codec::decode_shared(&self.payload)
    }
}

/// A handler's result: a value, encoded straight into the outgoing frame when it is queued
/// (no intermediate buffer, so large results are copied once), or a stream of values.
pub struct Reply {
    kind: ReplyKind,
}

pub(crate) enum ReplyKind {
    /// A small value, encoded when the reply was made (sparing a box for it).
    Encoded(SmallEncoding),
    Value(Box<dyn EncodeInto>),
    Stream(StreamStarter),
    /// Not a handler's reply: middleware refused the call with this status and text.
    Refused(Status, String),
}

/// Starts sending a response stream, given where to send it.
pub(crate) type StreamStarter =
    Box<dyn FnOnce(StreamSink) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Where a response stream goes.
pub(crate) trait EncodeInto: Send {
    fn encode_into(&self, buf: &mut BytesMut) -> Result<(), RpcError>;
}

impl<T: Serialize + Send> EncodeInto for T {
    fn encode_into(&self, buf: &mut BytesMut) -> Result<(), RpcError> {
        codec::encode_into(buf, self)
    }
}

impl Reply {
    /// A reply carrying `value`. A value whose encoding takes a few dozen bytes at most is
    /// encoded here (into the reply itself); a larger one later, straight into the
    /// outgoing frame.
    pub fn new<T: Serialize + Send + 'static>(value: T) -> Reply {
        let kind = match codec::encode_small(&value) {
            Some(encoded) => ReplyKind::Encoded(encoded),
            None => ReplyKind::Value(Box::new(value)),
        };
        Reply { kind }
    }

    /// A reply that streams the items of `stream` after the response.
    pub fn stream<T: Serialize + Send + 'static>(stream: Streaming<T>) -> Reply {
        Reply {
            kind: ReplyKind::Stream(Box::new(move |sink: StreamSink| {
                Box::pin(send_stream(stream, sink))
            })),
        }
    }

    /// A refusal (by middleware) answered with `status` and `message`.
    pub(crate) fn refused(status: Status, message: String) -> Reply {
        Reply {
            kind: ReplyKind::Refused(status, message),
        }
    }

    /// The status and text of a refusal, if this reply is one.
    pub(crate) fn refusal(&self) -> Option<(Status, &str)> {
        match &self.kind {
            ReplyKind::Refused(status, message) => Some((*status, message)),
            _ => None,
        }
    }

    /// Appends the value's encoding to `buf` (nothing for a stream, whose response carries
    /// no value).
    ///
    /// # Errors
    ///
    /// `RpcError::Codec` when the value cannot be serialized; `buf` may then hold part of
    /// it, and the caller abandons the frame.
    pub fn encode_into(&self, buf: &mut BytesMut) -> Result<(), RpcError> {
        match &self.kind {
            ReplyKind::Encoded(encoded) => {
                buf.extend_from_slice(encoded.as_slice());
                Ok(())
            }
            ReplyKind::Value(value) => value.encode_into(buf),
            ReplyKind::Stream(_) | ReplyKind::Refused(..) => Ok(()),
        }
    }

    /// Splits off the stream this reply starts, if any.
    pub(crate) fn take_stream(&mut self) -> Option<StreamStarter> {
        let nothing = ReplyKind::Encoded(SmallEncoding::EMPTY);
        match std::mem::replace(&mut self.kind, nothing) {
            ReplyKind::Stream(starter) => Some(starter),
            value => {
                self.kind = value;
                None
            }
        }
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

    /// The shapes of the service's methods (see
    /// [`MethodSpec::with_shapes`](crate::call::MethodSpec::with_shapes)): their fingerprints
    /// are compared with what a client declares, and a client built with other types is
    /// answered with the server's shape of the method it called. The default, none, skips
    /// the comparison.
    fn shapes(&self) -> Option<&'static ServiceShapes> {
        None
    }

    /// Decodes the arguments of `method_id` and returns the future that runs its handler.
    ///
    /// # Errors
    ///
    /// `RpcError::UnknownMethod` for an id the service does not have and `RpcError::Codec`
    /// for arguments that do not decode; the server answers that call with the error.
    fn dispatch(&self, method_id: u32, request: IncomingRequest)
        -> Result<HandlerFuture, RpcError>;
}
