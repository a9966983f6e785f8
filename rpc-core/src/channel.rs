//! `Channel`: one multiplexed client connection, shared by any number of clients.
//!
//! The life of a call on this side: [`Channel::call`] registers a pending slot in the
//! in-flight table, encodes the request straight into the connection's [`Outbox`], and waits
//! on the slot. The reader task fills slots as responses arrive, in any order. A call that is
//! dropped first removes its slot and queues a cancel frame; a connection that fails fills
//! every slot with the error at once.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::balance::Balancer;
use crate::codec;
use crate::config::ChannelConfig;
use crate::context::{Peer, RedactedMetadata};
use crate::error::RpcError;
use crate::middleware::{self, BoxError, ClientCall, ClientStack, SendCall};
use crate::observe::{self, CallObserver};
use crate::outbox::{self, InFlight, Lane, Outbox};
use crate::recover::lock;
use crate::streaming::{send_stream, Credit, Inbox, Streaming};
use crate::transport::{Connection, FrameRead, FrameWrite};
use crate::wire::{self, Frame, RequestHead, Status};

/// What a client needs to address one method: names for errors and logs, ids for the wire.
///
/// The `#[service]` macro emits one per method.
#[derive(Debug, Clone, Copy)]
pub struct MethodSpec {
    /// The service's name (the trait's name).
    pub service: &'static str,
    /// The method's name.
    pub method: &'static str,
    /// [`wire::wire_id`] of `service`.
    pub service_id: u32,
    /// [`wire::wire_id`] of `method`.
    pub method_id: u32,
    /// Whether the method is marked `#[idempotent]`: running it twice has the effect of
    /// running it once, so a balanced channel may retry it after a transport failure.
    pub idempotent: bool,
    /// A hash of the method's name and its argument and result types as written.
    pub fingerprint: u32,
    /// `(method_id, fingerprint)` of every method of the service, declared to the server
    /// before the first call to the service on a connection, so that the server can refuse
    /// calls to methods whose types changed with `RpcError::Incompatible`. Empty skips the
    /// check (for hand-written clients).
    pub service_fingerprints: &'static [(u32, u32)],
}

/// Adds metadata (credentials, trace context) to every call of a channel; set it in
/// [`ChannelConfig::interceptor`].
///
/// ```
/// use rpc_core::{ChannelConfig, ClientInterceptor};
///
/// let mut config = ChannelConfig::default();
/// config.interceptor = Some(ClientInterceptor::new(|_method, metadata| {
///     metadata.push(("authorization".into(), "Bearer let-me-in".into()));
/// }));
/// ```
#[derive(Clone)]
pub struct ClientInterceptor {
    add: Arc<AddMetadata>,
}

/// What a [`ClientInterceptor`] runs for each call.
type AddMetadata = dyn Fn(&MethodSpec, &mut Vec<(String, String)>) + Send + Sync;

impl ClientInterceptor {
    /// An interceptor that calls `add` with each call's method and metadata.
    pub fn new(
        add: impl Fn(&MethodSpec, &mut Vec<(String, String)>) + Send + Sync + 'static,
    ) -> Self {
        ClientInterceptor { add: Arc::new(add) }
    }
}

impl fmt::Debug for ClientInterceptor {
    // Never prints what it adds: credentials stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientInterceptor").finish_non_exhaustive()
    }
}

/// Per-call settings a client carries: timeout, deadline and metadata.
///
/// Cheap to clone: metadata is shared. `Debug` shows metadata keys, never their values.
#[derive(Clone, Default)]
pub struct CallOptions {
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    metadata: Arc<Vec<(String, String)>>,
}

impl fmt::Debug for CallOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallOptions")
            .field("timeout", &self.timeout)
            .field("deadline", &self.deadline)
            .field("metadata", &RedactedMetadata(&self.metadata))
            .finish()
    }
}

impl CallOptions {
    /// These options with a timeout counted from the start of each call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// These options with a fixed deadline.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// These options with one more metadata pair.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.metadata).push((key.into(), value.into()));
        self
    }

    /// The deadline of a call starting now: the earlier of the fixed deadline and the
    /// timeout (or `default_timeout` when neither is set).
    pub(crate) fn deadline_for_call(&self, default_timeout: Option<Duration>) -> Option<Instant> {
        let timeout = match self.deadline {
            Some(_) => self.timeout,
            None => self.timeout.or(default_timeout),
        };
        // Read the clock only for calls that have a timeout.
        let from_timeout = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        match (self.deadline, from_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// One connection to a server, multiplexing any number of concurrent calls to any of its
/// services. Cheap to clone; clones share the connection.
///
/// Transports make channels (`rpc_transport::tcp::connect` and friends). When every clone
/// is dropped the channel flushes what it queued and closes the connection.
#[derive(Debug, Clone)]
pub struct Channel {
    route: Route,
}

/// Where a channel's calls go.
#[derive(Debug, Clone)]
enum Route {
    /// Over one connection.
    Connection(Arc<ChannelHandle>),
    /// Over one of the connections a balancer keeps to a set of endpoints.
    Balanced(Arc<Balancer>),
    /// Through client middleware, then over another channel.
    Layered(Arc<Layered>),
}

/// A channel behind client middleware.
#[derive(Debug)]
struct Layered {
    inner: Channel,
    stack: ClientStack,
}

impl Layered {
    async fn send(&self, call: ClientCall) -> Result<Bytes, RpcError> {
        use tower::ServiceExt;
        self.stack
            .clone()
            .oneshot(call)
            .await
            .map_err(middleware::client_error)
    }
}

/// Dropped when the last `Channel` clone is: starts an orderly close.
#[derive(Debug)]
struct ChannelHandle {
    shared: Arc<ChannelShared>,
}

impl Drop for ChannelHandle {
    fn drop(&mut self) {
        self.shared.outbox.finish();
    }
}

#[derive(Debug)]
pub(crate) struct ChannelShared {
    calls: Mutex<CallTable>,
    outbox: Arc<Outbox>,
    config: ChannelConfig,
    peer: Arc<Peer>,
    /// The reader and keepalive tasks, stopped when the connection closes.
    background_tasks: Mutex<Vec<AbortHandle>>,
    closed_notify: Notify,
    /// The opaque of the last PONG received.
    last_pong: AtomicU64,
    /// The services whose method fingerprints this connection has declared to the server.
    declared: Mutex<Vec<u32>>,
    /// The service declared last (0 before any): calls to it skip the lock.
    last_declared: AtomicU32,
}

#[derive(Debug)]
struct CallTable {
    next_id: u32,
    pending: HashMap<u32, PendingCall, BuildHasherDefault<CallIdHasher>>,
    /// Set once the connection is gone: every later call fails with it.
    closed: Option<RpcError>,
    /// Set when the server said it is going away: later calls fail fast with it.
    going_away: Option<RpcError>,
    /// Response streams being received, by call id, with the method (for errors).
    streams: HashMap<u32, (Arc<Inbox>, MethodSpec), BuildHasherDefault<CallIdHasher>>,
    /// Request streams being sent, by call id: the credit the server granted.
    credits: HashMap<u32, Arc<Credit>, BuildHasherDefault<CallIdHasher>>,
}

#[derive(Debug)]
enum PendingCall {
    Waiting(Option<Waker>),
    Done(Result<(Status, Bytes), RpcError>),
}

/// Call ids are small sequential integers: they are their own hash.
#[derive(Debug, Default)]
struct CallIdHasher(u64);

impl Hasher for CallIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8) | u64::from(*byte);
        }
    }

    fn write_u32(&mut self, value: u32) {
        // Spread sequential ids over hashbrown's control bits (the top 7 bits).
        self.0 = u64::from(value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl Channel {
    /// Starts a channel over an established connection. It sends its preface at once and
    /// spawns a reader and a writer task on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn new<R: FrameRead, W: FrameWrite>(
        connection: Connection<R, W>,
        config: ChannelConfig,
    ) -> Channel {
        let Connection {
            reader,
            writer,
            peer,
        } = connection;
        let outbox = Arc::new(Outbox::new(&wire::PREFACE));
        let shared = Arc::new(ChannelShared {
            calls: Mutex::new(CallTable {
                next_id: 1,
                pending: HashMap::default(),
                closed: None,
                going_away: None,
                streams: HashMap::default(),
                credits: HashMap::default(),
            }),
            outbox: outbox.clone(),
            config,
            peer,
            background_tasks: Mutex::new(Vec::new()),
            declared: Mutex::new(Vec::new()),
            last_declared: AtomicU32::new(0),
            closed_notify: Notify::new(),
            last_pong: AtomicU64::new(0),
        });
        let write_timeout = shared.config.write_timeout;
        let writer_shared = shared.clone();
        tokio::spawn(async move {
            let outcome = outbox::run_writer(outbox, writer, write_timeout).await;
            let error = match outcome {
                Ok(()) => RpcError::connection_closed("the channel was dropped"),
                Err(error) => error,
            };
            writer_shared.close(error);
        });
        let reader_shared = shared.clone();
        let reader_task = tokio::spawn(async move {
            let error = match read_responses(&reader_shared, reader).await {
                Ok(()) => RpcError::connection_closed("the server closed the connection"),
                Err(error) => error,
            };
            reader_shared.close(error);
        });
        let mut background = vec![reader_task.abort_handle()];
        if let Some(interval) = shared.config.keepalive_interval {
            let keepalive = tokio::spawn(keep_alive(
                Arc::downgrade(&shared),
                interval,
                shared.config.keepalive_timeout,
            ));
            background.push(keepalive.abort_handle());
        }
        *lock(&shared.background_tasks) = background;
        if shared.is_closed() {
            // The connection failed before the handles were stored: stop the tasks now.
            for task in lock(&shared.background_tasks).drain(..) {
                task.abort();
            }
        }
        Channel {
            route: Route::Connection(Arc::new(ChannelHandle { shared })),
        }
    }

    /// Who is at the other end (for a balanced channel: a description of its endpoints).
    pub fn peer(&self) -> &Peer {
        match &self.route {
            Route::Connection(handle) => &handle.shared.peer,
            Route::Balanced(balancer) => balancer.peer(),
            Route::Layered(layered) => layered.inner.peer(),
        }
    }

    /// The channel's configuration (for a balanced channel: the one each of its
    /// connections uses).
    pub fn config(&self) -> &ChannelConfig {
        match &self.route {
            Route::Connection(handle) => &handle.shared.config,
            Route::Balanced(balancer) => &balancer.config().channel,
            Route::Layered(layered) => layered.inner.config(),
        }
    }

    /// Calls on this channel waiting for their response, plus response streams still being
    /// received (for monitoring: it returns to zero when the channel is idle). A balanced
    /// channel counts those of all its connections.
    pub fn calls_in_flight(&self) -> usize {
        match &self.route {
            Route::Connection(handle) => handle.shared.calls_in_flight(),
            Route::Balanced(balancer) => balancer.calls_in_flight(),
            Route::Layered(layered) => layered.inner.calls_in_flight(),
        }
    }

    /// Whether the connection has ended: every call made now fails at once. A balanced or
    /// reconnecting channel never ends (it dials again), so it is never closed.
    pub fn is_closed(&self) -> bool {
        match &self.route {
            Route::Connection(handle) => handle.shared.is_closed(),
            Route::Balanced(_) => false,
            Route::Layered(layered) => layered.inner.is_closed(),
        }
    }

    /// Resolves once the connection has ended, with the reason (never, for a balanced or
    /// reconnecting channel).
    pub async fn closed(&self) -> RpcError {
        match &self.route {
            Route::Connection(handle) => handle.shared.closed().await,
            Route::Balanced(_) => std::future::pending().await,
            Route::Layered(layered) => Box::pin(layered.inner.closed()).await,
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
        match &self.route {
            Route::Connection(handle) => handle.shared.call(method, options, args).await,
            // The other routes' futures are boxed, so that they do not make every call's
            // future as large as theirs (moving a large future costs a copy per move).
            Route::Balanced(balancer) => {
                let decode = |status, payload: Bytes| decode_response(method, status, &payload);
                Box::pin(balancer.call(method, options, &Typed(args), &decode)).await
            }
            Route::Layered(layered) => {
                let mut encoded = BytesMut::new();
                codec::encode_into(&mut encoded, args)?;
                let call = ClientCall::new(*method, options.clone(), encoded.freeze());
                let payload = Box::pin(layered.send(call)).await?;
                decode_response(method, Status::Ok, &payload)
            }
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
        let (connection, picked) = self.for_call(options).await?;
        let stream = connection
            .call_streaming(method, options, args, input)
            .await?;
        // The stream outlives this call: it keeps its connection open while it is read.
        Ok(stream.holding(picked.unwrap_or_else(|| self.clone())))
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
        let (connection, _open) = self.for_call(options).await?;
        connection
            .call_with_input(method, options, args, input)
            .await
    }

    /// This channel with its unary calls wrapped in a `tower` layer (see
    /// [`middleware`](crate::middleware)): the layer's service takes a [`ClientCall`] (the
    /// method, options and encoded arguments, which it may change) and returns the encoded
    /// result. The layer added last is outermost. Streaming calls bypass client layers.
    ///
    /// ```
    /// # async fn example(channel: rpc_core::Channel) {
    /// use std::time::Duration;
    ///
    /// let channel = channel
    ///     .layer(tower::limit::ConcurrencyLimitLayer::new(32))
    ///     .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(2)));
    /// # let _ = channel;
    /// # }
    /// ```
    pub fn layer<L>(self, layer: L) -> Channel
    where
        L: tower::Layer<ClientStack>,
        L::Service: tower::Service<ClientCall, Response = Bytes> + Clone + Send + Sync + 'static,
        <L::Service as tower::Service<ClientCall>>::Error: Into<BoxError>,
        <L::Service as tower::Service<ClientCall>>::Future: Send + 'static,
    {
        use tower::ServiceExt;
        let (inner, stack) = match &self.route {
            Route::Layered(layered) => (layered.inner.clone(), layered.stack.clone()),
            _ => (self.clone(), ClientStack::new(SendCall::new(self.clone()))),
        };
        let stack = ClientStack::new(layer.layer(stack).map_err(Into::into));
        Channel {
            route: Route::Layered(Arc::new(Layered { inner, stack })),
        }
    }

    /// A unary call with its arguments encoded already, over whatever this channel is;
    /// the encoded result. The innermost service of client middleware calls it.
    pub(crate) async fn call_encoded(
        &self,
        method: &MethodSpec,
        options: &CallOptions,
        args: &[u8],
    ) -> Result<Bytes, RpcError> {
        let raw = |status, payload: Bytes| match status {
            Status::Ok => Ok(payload),
            status => Err(status_error(
                method.service,
                method.method,
                status,
                &payload,
            )),
        };
        match &self.route {
            Route::Connection(handle) => {
                handle
                    .shared
                    .unary(method, options, &Encoded(args), raw)
                    .await
            }
            Route::Balanced(balancer) => balancer.call(method, options, &Encoded(args), &raw).await,
            Route::Layered(layered) => {
                let call = ClientCall::new(*method, options.clone(), Bytes::copy_from_slice(args));
                layered.send(call).await
            }
        }
    }

    /// A channel that sends each call over one of the connections a balancer keeps.
    pub(crate) fn balanced_route(balancer: Arc<Balancer>) -> Channel {
        Channel {
            route: Route::Balanced(balancer),
        }
    }

    /// The connection a call goes over: this channel's, or one a balancer picks (with the
    /// channel that keeps it open, to hold for as long as the call runs).
    async fn for_call(
        &self,
        options: &CallOptions,
    ) -> Result<(Arc<ChannelShared>, Option<Channel>), RpcError> {
        let mut route = &self.route;
        // Middleware wraps unary calls; streaming calls go straight to the channel below.
        while let Route::Layered(layered) = route {
            route = &layered.inner.route;
        }
        match route {
            Route::Connection(handle) => Ok((handle.shared.clone(), None)),
            Route::Balanced(balancer) => {
                let (connection, channel) = balancer.pick_for(options).await?;
                Ok((connection, Some(channel)))
            }
            Route::Layered(_) => Err(RpcError::Internal {
                message: "a layered channel below a layered channel".into(),
            }),
        }
    }

    /// The one connection of a plain channel (`None` for a balanced one).
    pub(crate) fn connection(&self) -> Option<&Arc<ChannelShared>> {
        match &self.route {
            Route::Connection(handle) => Some(&handle.shared),
            Route::Balanced(_) | Route::Layered(_) => None,
        }
    }
}

impl ChannelShared {
    pub(crate) fn calls_in_flight(&self) -> usize {
        let calls = lock(&self.calls);
        calls.pending.len() + calls.streams.len()
    }

    /// Whether the server said it takes no new calls here (GOAWAY), or the connection ended.
    pub(crate) fn stopped_taking_calls(&self) -> bool {
        let calls = lock(&self.calls);
        calls.closed.is_some() || calls.going_away.is_some()
    }

    /// Resolves once the server said it takes no new calls here, or the connection ended.
    pub(crate) async fn until_stopped_taking_calls(&self) {
        loop {
            let notified = self.closed_notify.notified();
            if self.stopped_taking_calls() {
                return;
            }
            notified.await;
        }
    }

    async fn closed(&self) -> RpcError {
        loop {
            let notified = self.closed_notify.notified();
            if let Some(error) = lock(&self.calls).closed.clone() {
                return error;
            }
            notified.await;
        }
    }

    /// [`Channel::call`] on this connection.
    pub(crate) async fn call<A, R>(
        &self,
        method: &MethodSpec,
        options: &CallOptions,
        args: &A,
    ) -> Result<R, RpcError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.unary(method, options, &Typed(args), |status, payload| {
            decode_response(method, status, &payload)
        })
        .await
    }

    /// One unary call, observed, within its deadline; `finish` turns the response into
    /// the result.
    pub(crate) async fn unary<E, T>(
        &self,
        method: &MethodSpec,
        options: &CallOptions,
        args: &E,
        finish: impl FnOnce(Status, Bytes) -> Result<T, RpcError>,
    ) -> Result<T, RpcError>
    where
        E: EncodeArgs + ?Sized,
    {
        let deadline = options.deadline_for_call(self.config.default_timeout);
        let (observer, traceparent) = self.observe(method);
        let metadata = self.call_metadata(method, options, traceparent);
        let exchange = self.exchange(method, deadline, &metadata, args, &observer);
        let exchange = observe::within(observer.span(), exchange);
        let outcome = by_deadline(deadline, exchange)
            .await
            .and_then(|(status, payload)| finish(status, payload));
        observer.finish(outcome.as_ref().map_or_else(observe::error_kind, |_| "ok"));
        outcome
    }

    /// [`Channel::call_streaming`] on this connection.
    async fn call_streaming<A, I, R>(
        self: &Arc<Self>,
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
        let deadline = options.deadline_for_call(self.config.default_timeout);
        let (status, payload, inbox) = self
            .exchange_with_deadline(method, options, deadline, args, input, true)
            .await?;
        match (status, inbox) {
            (Status::Ok, Some(inbox)) => Ok(Streaming::remote(inbox, deadline)),
            (status, _) => Err(status_error(
                method.service,
                method.method,
                status,
                &payload,
            )),
        }
    }

    /// [`Channel::call_with_input`] on this connection.
    async fn call_with_input<A, I, R>(
        self: &Arc<Self>,
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
        let deadline = options.deadline_for_call(self.config.default_timeout);
        let (status, payload, _) = self
            .exchange_with_deadline(method, options, deadline, args, Some(input), false)
            .await?;
        decode_response(method, status, &payload)
    }

    async fn exchange_with_deadline<A, I>(
        self: &Arc<Self>,
        method: &MethodSpec,
        options: &CallOptions,
        deadline: Option<Instant>,
        args: &A,
        input: Option<Streaming<I>>,
        output: bool,
    ) -> Result<(Status, Bytes, Option<Arc<Inbox>>), RpcError>
    where
        A: Serialize + ?Sized,
        I: Serialize + Send + 'static,
    {
        let (observer, traceparent) = self.observe(method);
        let metadata = self.call_metadata(method, options, traceparent);
        let call = StreamedCall {
            metadata: &metadata,
            deadline,
            input,
            output,
        };
        let exchange = observe::within(observer.span(), self.exchange_streams(method, args, call));
        let outcome = by_deadline(deadline, exchange).await;
        // A streaming call is observed until its stream starts.
        observer.finish(outcome.as_ref().map_or_else(observe::error_kind, |_| "ok"));
        outcome
    }
}

impl ChannelShared {
    /// A call's metadata: its own, plus what the channel's interceptor adds.
    /// A call's metadata: its own, its trace context, and what the channel's interceptor
    /// adds.
    fn call_metadata<'a>(
        &self,
        method: &MethodSpec,
        options: &'a CallOptions,
        traceparent: Option<String>,
    ) -> Cow<'a, [(String, String)]> {
        if self.config.interceptor.is_none() && traceparent.is_none() {
            return Cow::Borrowed(&options.metadata[..]);
        }
        let mut metadata = options.metadata.to_vec();
        if let Some(traceparent) = traceparent {
            metadata.push((observe::TRACEPARENT.to_owned(), traceparent));
        }
        if let Some(interceptor) = &self.config.interceptor {
            (interceptor.add)(method, &mut metadata);
        }
        Cow::Owned(metadata)
    }

    /// Starts observing a call: its span and metrics, and its trace context.
    fn observe(&self, method: &MethodSpec) -> (CallObserver, Option<String>) {
        CallObserver::client(
            method.service,
            method.method,
            &self.peer,
            self.config.metrics,
        )
    }

    fn is_closed(&self) -> bool {
        lock(&self.calls).closed.is_some()
    }

    /// Appends a DECLARE frame for `method`'s service unless this connection sent one
    /// already. Called while the outbox is locked, so the declaration is always on the wire
    /// before the first request that relies on it.
    fn declare_service(&self, buf: &mut BytesMut, method: &MethodSpec) {
        // Most channels call one service: its id is remembered outside the lock.
        if method.service_fingerprints.is_empty()
            || self.last_declared.load(Ordering::Relaxed) == method.service_id
        {
            return;
        }
        let mut declared = lock(&self.declared);
        if !declared.contains(&method.service_id) {
            declared.push(method.service_id);
            wire::encode_declare(buf, method.service_id, method.service_fingerprints);
        }
        self.last_declared
            .store(method.service_id, Ordering::Relaxed);
    }

    /// Sends one request and waits for its response frame.
    async fn exchange<A: EncodeArgs + ?Sized>(
        &self,
        method: &MethodSpec,
        deadline: Option<Instant>,
        metadata: &[(String, String)],
        args: &A,
        observer: &CallObserver,
    ) -> Result<(Status, Bytes), RpcError> {
        let call_id = self.register_call()?;
        observer.record_call_id(call_id);
        let mut guard = CallGuard {
            shared: self,
            call_id,
            sent: false,
            owns_streams: false,
            _in_flight: InFlight::new(&self.outbox),
        };
        let max_frame = self.config.max_frame_size;
        self.outbox
            .push(Lane::Lone, |buf| {
                self.declare_service(buf, method);
                encode_request(
                    buf, call_id, method, deadline, metadata, args, false, max_frame,
                )
            })
            .await?;
        guard.sent = true;
        let outcome = ResponseWait {
            shared: self,
            call_id,
        }
        .await;
        guard.sent = false;
        outcome
    }

    /// Sends one request with its streams and waits for its response frame. On success the
    /// response stream's inbox, if any, is handed to the caller (who then owns its cleanup);
    /// the request stream keeps flowing from its own task.
    async fn exchange_streams<A, I>(
        self: &Arc<Self>,
        method: &MethodSpec,
        args: &A,
        call: StreamedCall<'_, I>,
    ) -> Result<(Status, Bytes, Option<Arc<Inbox>>), RpcError>
    where
        A: Serialize + ?Sized,
        I: Serialize + Send + 'static,
    {
        let call_id = self.register_call()?;
        let mut guard = CallGuard {
            shared: self,
            call_id,
            sent: false,
            owns_streams: true,
            _in_flight: InFlight::new(&self.outbox),
        };
        let inbox = call.output.then(|| {
            Inbox::new(
                call_id,
                self.config.stream_window,
                self.config.max_frame_size,
                self.outbox.clone(),
            )
        });
        let credit = call.input.as_ref().map(|_| Arc::new(Credit::default()));
        {
            let mut calls = lock(&self.calls);
            if let Some(inbox) = &inbox {
                calls.streams.insert(call_id, (inbox.clone(), *method));
            }
            if let Some(credit) = &credit {
                calls.credits.insert(call_id, credit.clone());
            }
        }
        let max_frame = self.config.max_frame_size;
        let request_stream = call.input.is_some();
        self.outbox
            .push(Lane::Lone, |buf| {
                self.declare_service(buf, method);
                encode_request(
                    buf,
                    call_id,
                    method,
                    call.deadline,
                    call.metadata,
                    &Typed(args),
                    request_stream,
                    max_frame,
                )?;
                if let Some(inbox) = &inbox {
                    inbox.encode_initial_window(buf);
                }
                Ok(())
            })
            .await?;
        guard.sent = true;
        let mut producer = match (call.input, credit) {
            (Some(input), Some(credit)) => {
                let shared = self.clone();
                let outbox = self.outbox.clone();
                let deadline = call.deadline;
                Some(AbortOnDrop(Some(tokio::spawn(async move {
                    send_stream(input, call_id, outbox, credit, deadline, max_frame).await;
                    lock(&shared.calls).credits.remove(&call_id);
                }))))
            }
            _ => None,
        };
        let outcome = ResponseWait {
            shared: self,
            call_id,
        }
        .await;
        guard.sent = false;
        // Answered: the request stream goes on until it ends or the server stops it.
        if let Some(producer) = &mut producer {
            producer.0.take();
        }
        let (status, payload) = outcome?;
        if status != Status::Ok {
            return Ok((status, payload, None));
        }
        // The caller owns the response stream from here: dropping it cancels the call.
        guard.owns_streams = false;
        lock(&self.calls)
            .credits
            .retain(|id, _| *id != call_id || request_stream);
        if let Some(inbox) = &inbox {
            let shared = Arc::downgrade(self);
            inbox.on_abandon(move || {
                if let Some(shared) = shared.upgrade() {
                    lock(&shared.calls).streams.remove(&call_id);
                    shared
                        .outbox
                        .push_now(|buf| wire::encode_cancel(buf, call_id));
                }
            });
        }
        Ok((status, payload, inbox))
    }

    fn register_call(&self) -> Result<u32, RpcError> {
        let mut calls = lock(&self.calls);
        if let Some(error) = calls.closed.as_ref().or(calls.going_away.as_ref()) {
            return Err(error.clone());
        }
        // Ids wrap after 2^32 calls; skip 0 and any id still in flight.
        let mut call_id = calls.next_id;
        while call_id == 0 || calls.pending.contains_key(&call_id) {
            call_id = call_id.wrapping_add(1);
        }
        calls.next_id = call_id.wrapping_add(1);
        calls.pending.insert(call_id, PendingCall::Waiting(None));
        Ok(call_id)
    }

    fn complete(&self, call_id: u32, outcome: Result<(Status, Bytes), RpcError>) {
        let mut calls = lock(&self.calls);
        let Some(slot) = calls.pending.get_mut(&call_id) else {
            tracing::debug!(call_id, "response for a call that is no longer waiting");
            return;
        };
        let waker = match slot {
            PendingCall::Waiting(waker) => waker.take(),
            PendingCall::Done(_) => return,
        };
        *slot = PendingCall::Done(outcome);
        drop(calls);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The server is draining: calls already sent finish (or fail as it closes); new calls
    /// fail fast.
    /// The server will take no call after `last_call_id`: later calls fail at once with
    /// `Unavailable` (they never started, so they are safe to retry elsewhere), and so do
    /// the ones already sent that it did not take. Calls it took may still finish.
    fn go_away(&self, last_call_id: u32, reason: String) {
        let error = RpcError::Unavailable {
            reason: format!("the server is going away: {reason}").into(),
        };
        let wakers = {
            let mut calls = lock(&self.calls);
            let wakers = fail_waiting(&mut calls.pending, &error, |call_id| call_id > last_call_id);
            calls.going_away = Some(error);
            wakers
        };
        for waker in wakers {
            waker.wake();
        }
        self.closed_notify.notify_waiters();
    }

    /// Fails every pending and later call with `error`.
    fn close(&self, error: RpcError) {
        let wakers;
        let streams;
        let credits;
        {
            let mut calls = lock(&self.calls);
            if calls.closed.is_none() {
                calls.closed = Some(error.clone());
            }
            wakers = fail_waiting(&mut calls.pending, &error, |_| true);
            streams = std::mem::take(&mut calls.streams);
            credits = std::mem::take(&mut calls.credits);
        }
        for (inbox, _) in streams.into_values() {
            inbox.finish(Err(error.clone()));
        }
        for credit in credits.into_values() {
            credit.stop();
        }
        for waker in wakers {
            waker.wake();
        }
        self.outbox.fail(error);
        for task in lock(&self.background_tasks).drain(..) {
            task.abort();
        }
        self.closed_notify.notify_waiters();
    }
}

/// `exchange`'s outcome, or `DeadlineExceeded` once `deadline` passes first. A plain
/// combinator rather than an `async fn`, which would add a state machine to every call's
/// future (`calls::a_call_future_is_small` watches its size).
fn by_deadline<T, F>(
    deadline: Option<Instant>,
    exchange: F,
) -> impl Future<Output = Result<T, RpcError>>
where
    F: Future<Output = Result<T, RpcError>>,
{
    use futures_util::future::{Either, FutureExt};
    match deadline {
        Some(deadline) => Either::Left(
            tokio::time::timeout_at(deadline.into(), exchange)
                .map(|outcome| outcome.unwrap_or(Err(RpcError::DeadlineExceeded {}))),
        ),
        None => Either::Right(exchange),
    }
}

/// Settles with `error` every call still waiting whose id passes `which`; returns the
/// wakers to wake once the lock is released.
fn fail_waiting(
    pending: &mut HashMap<u32, PendingCall, BuildHasherDefault<CallIdHasher>>,
    error: &RpcError,
    which: impl Fn(u32) -> bool,
) -> Vec<Waker> {
    let mut wakers = Vec::new();
    for (call_id, slot) in pending.iter_mut() {
        if !which(*call_id) {
            continue;
        }
        if let PendingCall::Waiting(waker) = slot {
            wakers.extend(waker.take());
            *slot = PendingCall::Done(Err(error.clone()));
        }
    }
    wakers
}

async fn read_responses<R: FrameRead>(
    shared: &ChannelShared,
    mut reader: R,
) -> Result<(), RpcError> {
    let preface_timeout = shared.config.preface_timeout;
    tokio::time::timeout(preface_timeout, reader.read_preface())
        .await
        .map_err(|_elapsed| {
            RpcError::protocol(format!(
                "the server sent no preface within {preface_timeout:?}"
            ))
        })??;
    while let Some(frame) = reader.read_frame().await? {
        match Frame::parse(frame)? {
            Frame::Response {
                call_id,
                status,
                payload,
            } => shared.complete(call_id, Ok((status, payload))),
            Frame::GoAway {
                last_call_id,
                reason,
            } => shared.go_away(last_call_id, reason),
            Frame::Pong { opaque } => shared.last_pong.store(opaque, Ordering::Relaxed),
            Frame::Ping { opaque } => {
                shared
                    .outbox
                    .push_now(|buf| wire::encode_ping(buf, opaque, true));
            }
            Frame::StreamItem { call_id, payload } => {
                let inbox = lock(&shared.calls)
                    .streams
                    .get(&call_id)
                    .map(|(inbox, _)| inbox.clone());
                if let Some(inbox) = inbox {
                    inbox.push_item(payload)?;
                }
            }
            Frame::StreamPart { call_id, payload } => {
                let inbox = lock(&shared.calls)
                    .streams
                    .get(&call_id)
                    .map(|(inbox, _)| inbox.clone());
                if let Some(inbox) = inbox {
                    inbox.push_piece(payload)?;
                }
            }
            Frame::StreamEnd {
                call_id,
                status,
                text,
            } => {
                let entry = lock(&shared.calls).streams.remove(&call_id);
                if let Some((inbox, method)) = entry {
                    let outcome = match status {
                        Status::Ok => Ok(()),
                        status => Err(status_error(method.service, method.method, status, &text)),
                    };
                    inbox.finish(outcome);
                }
            }
            Frame::Window { call_id, credit } => {
                let entry = lock(&shared.calls).credits.get(&call_id).cloned();
                if let Some(entry) = entry {
                    entry.grant(credit);
                }
            }
            Frame::StopStream { call_id } => {
                let entry = lock(&shared.calls).credits.remove(&call_id);
                if let Some(entry) = entry {
                    entry.stop();
                }
            }
            Frame::Request { .. } | Frame::Cancel { .. } | Frame::Declare { .. } => {
                return Err(RpcError::protocol("the server sent a client-only frame"));
            }
        }
    }
    Ok(())
}

/// Pings the server while calls are in flight, and closes the channel when a ping goes
/// unanswered for `timeout`. Ends with the channel.
async fn keep_alive(shared: Weak<ChannelShared>, interval: Duration, timeout: Duration) {
    let mut opaque = 0_u64;
    loop {
        tokio::time::sleep(interval).await;
        {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let calls = lock(&shared.calls);
            if calls.closed.is_some() {
                return;
            }
            if calls.pending.is_empty() && calls.streams.is_empty() && calls.credits.is_empty() {
                continue;
            }
            drop(calls);
            opaque += 1;
            shared
                .outbox
                .push_now(|buf| wire::encode_ping(buf, opaque, false));
        }
        tokio::time::sleep(timeout).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.last_pong.load(Ordering::Relaxed) < opaque {
            shared.close(RpcError::connection_closed(format!(
                "the server did not answer a keepalive ping within {timeout:?}"
            )));
            return;
        }
    }
}

fn decode_response<R: DeserializeOwned>(
    method: &MethodSpec,
    status: Status,
    payload: &[u8],
) -> Result<R, RpcError> {
    match status {
        Status::Ok => codec::decode(payload),
        status => Err(status_error(method.service, method.method, status, payload)),
    }
}

/// The error a non-OK status (of a response or a stream's end) stands for, for a call to
/// `service.method` (names may be empty where the side reading the status does not know
/// them).
pub(crate) fn status_error(
    service: &str,
    method: &str,
    status: Status,
    payload: &[u8],
) -> RpcError {
    let message = || -> Arc<str> { String::from_utf8_lossy(payload).into() };
    match status {
        Status::Ok => RpcError::protocol("an OK status where an error was expected"),
        Status::UnknownService => RpcError::UnknownService {
            service: service.into(),
        },
        Status::UnknownMethod => RpcError::UnknownMethod {
            service: service.into(),
            method: method.into(),
        },
        Status::BadRequest => RpcError::Codec { message: message() },
        Status::HandlerPanicked => RpcError::HandlerPanicked {
            method: method.into(),
        },
        Status::DeadlineExceeded => RpcError::DeadlineExceeded {},
        Status::ResponseTooLarge => {
            // The payload is "<len> <max>" in decimal.
            let text = String::from_utf8_lossy(payload);
            let mut numbers = text.split(' ').map(|number| number.parse().unwrap_or(0));
            let len = numbers.next().unwrap_or(0);
            let max = numbers.next().unwrap_or(0);
            RpcError::FrameTooLarge { len, max }
        }
        Status::Unavailable => RpcError::Unavailable { reason: message() },
        Status::ResourceExhausted => RpcError::ResourceExhausted { message: message() },
        Status::Internal => RpcError::Internal { message: message() },
        Status::Unauthenticated => RpcError::Unauthenticated { message: message() },
        Status::PermissionDenied => RpcError::PermissionDenied { message: message() },
        Status::Incompatible => RpcError::Incompatible {
            service: service.into(),
            method: method.into(),
        },
    }
}

/// The stream parts of a call.
struct StreamedCall<'a, I> {
    metadata: &'a [(String, String)],
    deadline: Option<Instant>,
    input: Option<Streaming<I>>,
    output: bool,
}

/// Aborts a task when dropped, unless its handle was taken out first.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// A request's arguments: a value to encode, or bytes encoded already (by middleware's
/// caller).
pub(crate) trait EncodeArgs {
    fn encode_args(&self, buf: &mut BytesMut) -> Result<(), RpcError>;
}

/// Arguments to encode.
pub(crate) struct Typed<'a, A: ?Sized>(pub(crate) &'a A);

impl<A: Serialize + ?Sized> EncodeArgs for Typed<'_, A> {
    fn encode_args(&self, buf: &mut BytesMut) -> Result<(), RpcError> {
        codec::encode_into(buf, self.0)
    }
}

/// Arguments encoded already.
pub(crate) struct Encoded<'a>(pub(crate) &'a [u8]);

impl EncodeArgs for Encoded<'_> {
    fn encode_args(&self, buf: &mut BytesMut) -> Result<(), RpcError> {
        buf.extend_from_slice(self.0);
        Ok(())
    }
}

/// Appends a REQUEST frame: header, then the encoded arguments.
#[allow(clippy::too_many_arguments)]
fn encode_request<A: EncodeArgs + ?Sized>(
    buf: &mut BytesMut,
    call_id: u32,
    method: &MethodSpec,
    deadline: Option<Instant>,
    metadata: &[(String, String)],
    args: &A,
    request_stream: bool,
    max_frame: usize,
) -> Result<(), RpcError> {
    let deadline_micros = match deadline {
        Some(deadline) => {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(RpcError::DeadlineExceeded {});
            }
            Some(
                u64::try_from(remaining.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
        }
        None => None,
    };
    let head = RequestHead {
        call_id,
        service_id: method.service_id,
        method_id: method.method_id,
        deadline_micros,
        request_stream,
    };
    let start = wire::start_request(buf, &head, metadata)?;
    if let Err(error) = args.encode_args(buf) {
        wire::abandon_frame(buf, start);
        return Err(error);
    }
    wire::finish_frame(buf, start, max_frame)
}

/// Removes a call's slot if its future is dropped early, and tells the server.
struct CallGuard<'a> {
    shared: &'a ChannelShared,
    call_id: u32,
    sent: bool,
    /// Whether the call's stream entries are still this guard's to remove.
    owns_streams: bool,
    /// Counts the call for the outbox's batching decisions.
    _in_flight: InFlight,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        let removed = {
            let mut calls = lock(&self.shared.calls);
            if self.owns_streams {
                calls.streams.remove(&self.call_id);
                if let Some(credit) = calls.credits.remove(&self.call_id) {
                    credit.stop();
                }
            }
            calls.pending.remove(&self.call_id)
        };
        let was_waiting = matches!(removed, Some(PendingCall::Waiting(_)));
        if self.sent && was_waiting {
            let call_id = self.call_id;
            self.shared
                .outbox
                .push_now(|buf| wire::encode_cancel(buf, call_id));
        }
    }
}

struct ResponseWait<'a> {
    shared: &'a ChannelShared,
    call_id: u32,
}

impl Future for ResponseWait<'_> {
    type Output = Result<(Status, Bytes), RpcError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut calls = lock(&self.shared.calls);
        match calls.pending.get_mut(&self.call_id) {
            Some(PendingCall::Waiting(waker)) => {
                match waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Some(PendingCall::Done(_)) => match calls.pending.remove(&self.call_id) {
                Some(PendingCall::Done(outcome)) => Poll::Ready(outcome),
                _ => Poll::Ready(Err(RpcError::connection_closed("call slot lost"))),
            },
            None => Poll::Ready(Err(calls
                .closed
                .clone()
                .unwrap_or_else(|| RpcError::connection_closed("call slot lost")))),
        }
    }
}
