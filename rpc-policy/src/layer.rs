//! Client middleware: tower layers around a channel's unary calls ([`ChannelExt::layer`]),
//! and the adapters between a `Channel` and tower ([`SendCall`], [`ClientStack`]).
//!
//! Each unary call reaches the stack as a [`ClientCall`] (method, options, encoded
//! arguments; a layer may change the options, to add metadata or a deadline) and leaves it
//! as the encoded result; the innermost service sends it over the channel. Any tower layer
//! fits (a timeout, a concurrency or rate limit, load shedding). Errors come back as
//! `RpcError`s: an `RpcError` as itself, tower's timeout as `DeadlineExceeded`, load
//! shedding as `ResourceExhausted`, anything else as `Internal` with its text. Streaming
//! calls bypass client layers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use rpc_core::middleware::BoxError;
use rpc_core::route::{BoxFuture, ClientCall, Route};
use rpc_core::{CallOptions, Channel, ChannelConfig, Peer, RpcError};
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;

/// A whole client stack, type-erased.
pub type ClientStack = BoxCloneSyncService<ClientCall, Bytes, BoxError>;

/// Client middleware on a [`Channel`].
pub trait ChannelExt {
    /// This channel with its unary calls wrapped in a `tower` layer: the layer's service
    /// takes a [`ClientCall`] (the method, options and encoded arguments, which it may
    /// change) and returns the encoded result. The layer added last is outermost.
    /// Streaming calls bypass client layers.
    ///
    /// ```
    /// # async fn example(channel: rpc_core::Channel) {
    /// use std::time::Duration;
    /// use rpc_policy::ChannelExt;
    ///
    /// let channel = channel
    ///     .layer(tower::limit::ConcurrencyLimitLayer::new(32))
    ///     .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(2)));
    /// # let _ = channel;
    /// # }
    /// ```
    fn layer<L>(self, layer: L) -> Channel
    where
        L: tower::Layer<ClientStack>,
        L::Service: tower::Service<ClientCall, Response = Bytes> + Clone + Send + Sync + 'static,
        <L::Service as tower::Service<ClientCall>>::Error: Into<BoxError>,
        <L::Service as tower::Service<ClientCall>>::Future: Send + 'static;
}

impl ChannelExt for Channel {
    fn layer<L>(self, layer: L) -> Channel
    where
        L: tower::Layer<ClientStack>,
        L::Service: tower::Service<ClientCall, Response = Bytes> + Clone + Send + Sync + 'static,
        <L::Service as tower::Service<ClientCall>>::Error: Into<BoxError>,
        <L::Service as tower::Service<ClientCall>>::Future: Send + 'static,
    {
        let stack = ClientStack::new(SendCall::new(self.clone()));
        let stack = ClientStack::new(layer.layer(stack).map_err(Into::into));
        Channel::from_route(Layered { inner: self, stack })
    }
}

/// A channel behind client middleware. Layering a layered channel stacks the new layer
/// outside the old ones (its innermost service sends through the older stack).
#[derive(Debug)]
struct Layered {
    inner: Channel,
    stack: ClientStack,
}

impl Route for Layered {
    fn peer(&self) -> &Peer {
        self.inner.peer()
    }

    fn config(&self) -> &ChannelConfig {
        self.inner.config()
    }

    fn calls_in_flight(&self) -> usize {
        self.inner.calls_in_flight()
    }

    fn unary(&self, call: ClientCall) -> BoxFuture<'_, Result<Bytes, RpcError>> {
        let stack = self.stack.clone();
        Box::pin(async move { stack.oneshot(call).await.map_err(client_error) })
    }

    fn channel_for_stream<'a>(
        &'a self,
        _options: &'a CallOptions,
    ) -> BoxFuture<'a, Result<Channel, RpcError>> {
        // Streaming calls go straight to the channel below.
        Box::pin(std::future::ready(Ok(self.inner.clone())))
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn closed(&self) -> BoxFuture<'_, RpcError> {
        Box::pin(self.inner.closed())
    }
}

/// The innermost service of a client stack: sends the call over a channel.
#[derive(Debug, Clone)]
pub struct SendCall(Channel);

impl SendCall {
    /// A service that sends each call over `channel`.
    pub fn new(channel: Channel) -> SendCall {
        SendCall(channel)
    }
}

impl tower::Service<ClientCall> for SendCall {
    type Response = Bytes;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Bytes, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ClientCall) -> Self::Future {
        let channel = self.0.clone();
        Box::pin(async move { channel.call_encoded(call).await.map_err(Into::into) })
    }
}

/// The error a call through client middleware ends with.
fn client_error(error: BoxError) -> RpcError {
    match error.downcast::<RpcError>() {
        Ok(error) => *error,
        Err(error) if error.is::<tower::timeout::error::Elapsed>() => RpcError::DeadlineExceeded {},
        Err(error) if error.is::<tower::load_shed::error::Overloaded>() => {
            RpcError::ResourceExhausted {
                message: "the client's middleware shed the call".into(),
            }
        }
        Err(error) => RpcError::Internal {
            message: error.to_string().into(),
        },
    }
}
