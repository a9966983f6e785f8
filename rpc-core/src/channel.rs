//! `Channel`: what clients send their calls over. Either one connection (the engine in
//! `client_connection`), or a [`Route`] over connections: a balancer, client middleware, or
//! any policy of one's own (`rpc-policy` has the standard ones).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::call::{CallOptions, ClientCall, MethodSpec};
use crate::client_connection::ClientConnection;
use crate::codec;
use crate::config::ChannelConfig;
use crate::context::{Context, Peer};
use crate::error::RpcError;
use crate::stream::Streaming;
use crate::transport::{Connection, FrameRead, FrameWrite};

/// Calling back: what a handler can reach of a peer that serves too.
impl Context {
    /// A channel to the other end of this call's connection, when that end serves too (it
    /// connected with [`ChannelConfig::serve`]): wrap it in any generated client to call the
    /// peer back, during this call (a callback) or later (a push). The calls travel over
    /// the same connection, with their own ids, deadlines, cancellation and flow control;
    /// once the connection closes they fail with `ConnectionClosed`. Dropping the channel
    /// leaves the connection open. `None` when the peer serves nothing.
    pub fn peer_channel(&self) -> Option<Channel> {
        let link = self.peer_link()?.clone();
        let connection = link.downcast::<ClientConnection>().ok()?;
        Some(Channel::over(connection, false))
    }
}

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Carries a channel's calls somewhere other than straight over one connection: over one of
/// several connections (a balancer), through middleware, or anything else. Make a channel
/// of one with [`Channel::from_route`].
///
/// A route sees unary calls with their arguments encoded ([`ClientCall`]) and returns the
/// encoded result; for a streaming call it names the plain channel (one connection) the
/// stream is to flow over, and the stream keeps that channel open while it is read.
pub trait Route: fmt::Debug + Send + Sync + 'static {
    /// Who is at the other end (a description, for a route over many).
    fn peer(&self) -> &Peer;

    /// The configuration of the connections the route uses.
    fn config(&self) -> &ChannelConfig;

    /// Calls in flight over the route.
    fn calls_in_flight(&self) -> usize;

    /// Sends one unary call and returns its encoded result.
    fn unary(&self, call: ClientCall) -> BoxFuture<'_, Result<Bytes, RpcError>>;

    /// The channel a streaming call with `options` goes over (streaming calls never go
    /// through middleware and are never retried).
    fn channel_for_stream<'a>(
        &'a self,
        options: &'a CallOptions,
    ) -> BoxFuture<'a, Result<Channel, RpcError>>;

    /// Whether the route takes new calls. Default: always.
    fn is_taking_calls(&self) -> bool {
        true
    }

    /// Whether the route has ended for good. Default: never (a route that dials again).
    fn is_closed(&self) -> bool {
        false
    }

    /// Resolves once the route has ended, with the reason. Default: never.
    fn closed(&self) -> BoxFuture<'_, RpcError> {
        Box::pin(std::future::pending())
    }
}

/// A channel to a server, multiplexing any number of concurrent calls to any of its
/// services. Cheap to clone; clones share the connection.
///
/// Transports make channels (`rpc_transport::tcp::connect` and friends). When every clone
/// is dropped the channel flushes what it queued and closes the connection.
#[derive(Debug, Clone)]
pub struct Channel {
    via: Via,
}

/// Where a channel's calls go.
#[derive(Debug, Clone)]
enum Via {
    /// Over one connection.
    Connection(Arc<ConnectionHandle>),
    /// Through a route.
    Route(Arc<dyn Route>),
}

/// Dropped when the last `Channel` clone over a connection is: starts an orderly close,
/// when the channel owns the connection.
#[derive(Debug)]
struct ConnectionHandle {
    connection: Arc<ClientConnection>,
    /// Whether dropping the channel closes the connection: not for a channel back to a
    /// peer that called (`Context::peer_channel`), which the peer's connection outlives.
    owns_connection: bool,
}

impl Drop for ConnectionHandle {
    fn drop(&mut self) {
        if self.owns_connection {
            self.connection.finish();
        }
    }
}

impl Channel {
    /// Starts a channel over an established connection. It sends its preface at once and
    /// spawns a reader and a writer task on the current tokio runtime. When `config` serves
    /// a server ([`ChannelConfig::serve`]), the peer may call it over the same connection.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn new<R: FrameRead, W: FrameWrite>(
        connection: Connection<R, W>,
        config: ChannelConfig,
    ) -> Channel {
        let connection = match config.served() {
            Some(server) => server.clone().serve_dialled(connection, config),
            None => ClientConnection::start(connection, config),
        };
        Channel::over(connection, true)
    }

    /// A channel over one connection's calling engine.
    fn over(connection: Arc<ClientConnection>, owns_connection: bool) -> Channel {
        Channel {
            via: Via::Connection(Arc::new(ConnectionHandle {
                connection,
                owns_connection,
            })),
        }
    }

    /// A channel whose calls go through `route`.
    pub fn from_route(route: impl Route) -> Channel {
        Channel {
            via: Via::Route(Arc::new(route)),
        }
    }

    /// Who is at the other end (for a balanced channel: a description of its endpoints).
    pub fn peer(&self) -> &Peer {
        match &self.via {
            Via::Connection(handle) => handle.connection.peer(),
            Via::Route(route) => route.peer(),
        }
    }

    /// The channel's configuration (for a balanced channel: the one each of its
    /// connections uses).
    pub fn config(&self) -> &ChannelConfig {
        match &self.via {
            Via::Connection(handle) => handle.connection.config(),
            Via::Route(route) => route.config(),
        }
    }

    /// Calls on this channel waiting for their response, plus response streams still being
    /// received (for monitoring: it returns to zero when the channel is idle). A balanced
    /// channel counts those of all its connections.
    pub fn calls_in_flight(&self) -> usize {
        match &self.via {
            Via::Connection(handle) => handle.connection.calls_in_flight(),
            Via::Route(route) => route.calls_in_flight(),
        }
    }

    /// Whether the connection has ended: every call made now fails at once. A balanced or
    /// reconnecting channel never ends (it dials again), so it is never closed.
    pub fn is_closed(&self) -> bool {
        match &self.via {
            Via::Connection(handle) => handle.connection.is_closed(),
            Via::Route(route) => route.is_closed(),
        }
    }

    /// Resolves once the connection has ended, with the reason (never, for a balanced or
    /// reconnecting channel).
    pub async fn closed(&self) -> RpcError {
        match &self.via {
            Via::Connection(handle) => handle.connection.closed().await,
            Via::Route(route) => route.closed().await,
        }
    }

    /// Whether the server still takes new calls over this channel: `false` once it said it
    /// is going away (GOAWAY) or the connection ended; a routed channel asks its route.
    pub fn is_taking_calls(&self) -> bool {
        match &self.via {
            Via::Connection(handle) => !handle.connection.stopped_taking_calls(),
            Via::Route(route) => route.is_taking_calls(),
        }
    }

    /// Resolves once the server takes no new calls over this channel (see
    /// [`Channel::is_taking_calls`]); never, for a routed channel.
    pub async fn stopped_taking_calls(&self) {
        match &self.via {
            Via::Connection(handle) => handle.connection.until_stopped_taking_calls().await,
            Via::Route(_) => std::future::pending().await,
        }
    }

    /// Calls `method` with `args` and decodes its result. Generated clients call this; it
    /// is public so that hand-written clients can too.
    ///
    /// # Errors
    ///
    /// Any [`RpcError`]: the call ends with its result or one error, never by hanging past
    /// its deadline or its connection.
    pub async fn call<A, R>(
        &self,
        method: &MethodSpec,
        options: &CallOptions,
        args: &A,
    ) -> Result<R, RpcError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        match &self.via {
            Via::Connection(handle) => handle.connection.call(method, options, args).await,
            // A route's future is boxed, so that it does not make every call's future as
            // large as its own (moving a large future costs a copy per move).
            Via::Route(route) => {
                let mut encoded = BytesMut::new();
                codec::encode_into(&mut encoded, args)?;
                let call = ClientCall::new(*method, options.clone(), encoded.freeze());
                let payload = route.unary(call).await?;
                method.decode_payload(&payload)
            }
        }
    }

    /// A unary call whose arguments are encoded already; the encoded result. Routes and
    /// client middleware call it on the channels they hold.
    ///
    /// # Errors
    ///
    /// Any [`RpcError`], as for [`Channel::call`].
    pub async fn call_encoded(&self, call: ClientCall) -> Result<Bytes, RpcError> {
        match &self.via {
            Via::Connection(handle) => handle.connection.call_encoded(&call).await,
            Via::Route(route) => route.unary(call).await,
        }
    }

    /// Calls a method whose result is a stream, sending `input` as its request stream if it
    /// takes one. The call resolves once the server's handler has returned its stream; the
    /// stream then yields the items as they come, within the call's deadline.
    ///
    /// # Errors
    ///
    /// Any [`RpcError`] that ends the call before its stream starts.
    pub async fn call_streaming<A, I, R>(
        &self,
        method: &MethodSpec,
        options: &CallOptions,
        args: &A,
        input: Option<Streaming<I>>,
    ) -> Result<Streaming<R>, RpcError>
    where
        A: Serialize + ?Sized,
        I: Serialize + Send + 'static,
        R: DeserializeOwned,
    {
        let (connection, channel) = self.connection_for_stream(options).await?;
        let stream = connection
            .call_streaming(method, options, args, input)
            .await?;
        // The stream outlives this call: it keeps its connection open while it is read.
        Ok(stream.holding(channel))
    }

    /// Calls a method whose result is a stream, with its arguments (and the request
    /// stream's items, if it takes one) encoded already; the result's items stay encoded.
    /// Front doors that transcode calls, like HTTP/JSON, use it.
    ///
    /// # Errors
    ///
    /// Any [`RpcError`] that ends the call before its stream starts.
    pub async fn call_streaming_encoded(
        &self,
        call: ClientCall,
        input: Option<Streaming<crate::codec::Encoded>>,
    ) -> Result<Streaming<Bytes>, RpcError> {
        let (connection, channel) = self.connection_for_stream(call.options()).await?;
        let stream = connection.call_streaming_encoded(&call, input).await?;
        Ok(stream.holding(channel))
    }

    /// Calls a method that takes a request stream and returns one result, with its
    /// arguments and the stream's items encoded already; the result stays encoded.
    ///
    /// # Errors
    ///
    /// Any [`RpcError`], as for [`Channel::call`].
    pub async fn call_with_input_encoded(
        &self,
        call: ClientCall,
        input: Streaming<crate::codec::Encoded>,
    ) -> Result<Bytes, RpcError> {
        let (connection, _open) = self.connection_for_stream(call.options()).await?;
        connection.call_with_input_encoded(&call, input).await
    }

    /// Calls a method that takes a request stream and returns a single result: `input` is
    /// sent as the server's handler reads it, and the call resolves when the handler returns.
    ///
    /// # Errors
    ///
    /// Any [`RpcError`], as for [`Channel::call`].
    pub async fn call_with_input<A, I, R>(
        &self,
        method: &MethodSpec,
        options: &CallOptions,
        args: &A,
        input: Streaming<I>,
    ) -> Result<R, RpcError>
    where
        A: Serialize + ?Sized,
        I: Serialize + Send + 'static,
        R: DeserializeOwned,
    {
        let (connection, _open) = self.connection_for_stream(options).await?;
        connection
            .call_with_input(method, options, args, input)
            .await
    }

    /// The connection a streaming call goes over, with the channel that keeps it open (to
    /// hold for as long as the call runs): this channel's, or the one its route picks.
    async fn connection_for_stream(
        &self,
        options: &CallOptions,
    ) -> Result<(Arc<ClientConnection>, Channel), RpcError> {
        let mut channel = self.clone();
        loop {
            let route = match &channel.via {
                Via::Connection(handle) => return Ok((handle.connection.clone(), channel)),
                Via::Route(route) => route.clone(),
            };
            channel = Box::pin(route.channel_for_stream(options)).await?;
        }
    }
}
