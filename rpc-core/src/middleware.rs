//! Middleware: `tower` layers around every call, added with `Server::layer` on the server
//! and `Channel::layer` on the client.
//!
//! ## Server
//!
//! Each call reaches the stack as a [`ServerCall`] (its service, method and context, with
//! the handler ready to run); the innermost service runs the handler. Any tower layer whose
//! service takes a `ServerCall` fits: `tower::timeout::TimeoutLayer`,
//! `tower::limit::ConcurrencyLimitLayer` and `RateLimitLayer`, `tower::load_shed`, or a
//! layer of your own that checks credentials. A layer's error becomes the call's error:
//! an `RpcError` travels as itself (`Unauthenticated`, `PermissionDenied`, ...), tower's
//! timeout as `DeadlineExceeded`, tower's load shedding as `ResourceExhausted`, anything
//! else as `Internal` (its text stays in the server's log).
//!
//! ```
//! use std::time::Duration;
//! use rpc_core::Server;
//!
//! let server = Server::new()
//!     .layer(tower::limit::ConcurrencyLimitLayer::new(64))
//!     .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)));
//! # let _ = server;
//! ```
//!
//! With no layer, calls take the direct path and pay nothing for this.
//!
//! ## Client
//!
//! Each unary call reaches the stack as a [`ClientCall`] (method, options, encoded
//! arguments; a layer may change the options, to add metadata or a deadline) and leaves it
//! as the encoded result; the innermost service sends it over the channel. The same tower
//! layers fit (a timeout, a concurrency or rate limit). Streaming calls bypass client
//! layers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use tower::util::BoxCloneSyncService;

use crate::channel::{CallOptions, Channel, MethodSpec};
use crate::context::Context;
use crate::dispatch::{HandlerFuture, Reply};
use crate::error::RpcError;
use crate::wire::Status;

/// The error type of a middleware stack.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A call on its way to its handler, as server middleware sees it.
pub struct ServerCall {
    service: &'static str,
    method: &'static str,
    context: Context,
    handler: HandlerFuture,
}

impl std::fmt::Debug for ServerCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCall")
            .field("service", &self.service)
            .field("method", &self.method)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl ServerCall {
    pub(crate) fn new(
        service: &'static str,
        method: &'static str,
        context: Context,
        handler: HandlerFuture,
    ) -> ServerCall {
        ServerCall {
            service,
            method,
            context,
            handler,
        }
    }

    /// The service called.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The method called.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The call's deadline, metadata and peer.
    pub fn context(&self) -> &Context {
        &self.context
    }
}

/// The innermost service of every stack: runs the call's handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunHandler;

impl tower::Service<ServerCall> for RunHandler {
    type Response = Reply;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ServerCall) -> Self::Future {
        Box::pin(async move { Ok(call.handler.await) })
    }
}

/// A whole server middleware stack, type-erased.
pub type CallStack = BoxCloneSyncService<ServerCall, Reply, BoxError>;

/// The handler future that runs `call` through `stack`; a refusal by the stack becomes an
/// error response.
pub(crate) fn through(stack: &CallStack, call: ServerCall) -> HandlerFuture {
    use tower::ServiceExt;
    let stack = stack.clone();
    Box::pin(async move {
        match stack.oneshot(call).await {
            Ok(reply) => reply,
            Err(error) => {
                let (status, message) = refusal(&*error);
                Reply::refused(status, message)
            }
        }
    })
}

/// The status and text a refusal by middleware is answered with.
fn refusal(error: &(dyn std::error::Error + Send + Sync + 'static)) -> (Status, String) {
    if let Some(error) = error.downcast_ref::<RpcError>() {
        return status_of(error);
    }
    if error.is::<tower::timeout::error::Elapsed>() {
        return (Status::DeadlineExceeded, String::new());
    }
    if error.is::<tower::load_shed::error::Overloaded>() {
        return (
            Status::ResourceExhausted,
            "the server is overloaded".to_owned(),
        );
    }
    tracing::info!(%error, "middleware refused a call");
    (Status::Internal, "the call was refused".to_owned())
}

/// The status and text an error a server-side hook returned is answered with. Errors with
/// no status of their own are answered `INTERNAL` without their text.
pub(crate) fn status_of(error: &RpcError) -> (Status, String) {
    match error {
        RpcError::Unauthenticated { message } => (Status::Unauthenticated, message.to_string()),
        RpcError::PermissionDenied { message } => (Status::PermissionDenied, message.to_string()),
        RpcError::ResourceExhausted { message } => (Status::ResourceExhausted, message.to_string()),
        RpcError::Unavailable { reason } => (Status::Unavailable, reason.to_string()),
        RpcError::DeadlineExceeded { .. } => (Status::DeadlineExceeded, String::new()),
        other => {
            tracing::info!(error = %other, "a server hook refused a call");
            (Status::Internal, "the call was refused".to_owned())
        }
    }
}

/// A unary call on its way out, as client middleware sees it.
#[derive(Debug, Clone)]
pub struct ClientCall {
    method: MethodSpec,
    options: CallOptions,
    args: Bytes,
}

impl ClientCall {
    pub(crate) fn new(method: MethodSpec, options: CallOptions, args: Bytes) -> ClientCall {
        ClientCall {
            method,
            options,
            args,
        }
    }

    /// The method called.
    pub fn method(&self) -> &MethodSpec {
        &self.method
    }

    /// The call's options (timeout, deadline, metadata).
    pub fn options(&self) -> &CallOptions {
        &self.options
    }

    /// The call's options, to change (add metadata, say).
    pub fn options_mut(&mut self) -> &mut CallOptions {
        &mut self.options
    }

    /// The encoded arguments.
    pub fn args(&self) -> &Bytes {
        &self.args
    }
}

/// The innermost service of a client stack: sends the call over a channel.
#[derive(Debug, Clone)]
pub struct SendCall(Channel);

impl SendCall {
    pub(crate) fn new(channel: Channel) -> SendCall {
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
        Box::pin(async move {
            channel
                .call_encoded(&call.method, &call.options, &call.args)
                .await
                .map_err(Into::into)
        })
    }
}

/// A whole client stack, type-erased.
pub type ClientStack = BoxCloneSyncService<ClientCall, Bytes, BoxError>;

/// The error a call through client middleware ends with: an `RpcError` as itself, tower's
/// timeout as `DeadlineExceeded`, load shedding as `ResourceExhausted`, anything else as
/// `Internal` with its text.
pub(crate) fn client_error(error: BoxError) -> RpcError {
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

/// An [`Interceptor`](crate::Interceptor) as a tower layer, so that authentication and
/// authorisation compose with the other layers of a stack (in the order the stack gives):
///
/// ```
/// use std::time::Duration;
/// use rpc_core::middleware::InterceptLayer;
/// use rpc_core::{CallInfo, RpcError, Server};
///
/// let require_token = |call: &CallInfo<'_>| match call.context().metadata("token") {
///     Some("let-me-in") => Ok(()),
///     _ => Err(RpcError::Unauthenticated { message: "a token is required".into() }),
/// };
/// let server = Server::new()
///     .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)))
///     .layer(InterceptLayer::new(require_token));
/// # let _ = server;
/// ```
#[derive(Clone)]
pub struct InterceptLayer {
    interceptor: std::sync::Arc<dyn crate::Interceptor>,
}

impl std::fmt::Debug for InterceptLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterceptLayer").finish_non_exhaustive()
    }
}

impl InterceptLayer {
    /// A layer that asks `interceptor` about every call before passing it on.
    pub fn new(interceptor: impl crate::Interceptor) -> InterceptLayer {
        InterceptLayer {
            interceptor: std::sync::Arc::new(interceptor),
        }
    }
}

impl<S> tower::Layer<S> for InterceptLayer {
    type Service = Intercept<S>;

    fn layer(&self, inner: S) -> Intercept<S> {
        Intercept {
            inner,
            interceptor: self.interceptor.clone(),
        }
    }
}

/// The service of an [`InterceptLayer`]: refuses a call with the interceptor's error, or
/// passes it to the service inside.
#[derive(Clone)]
pub struct Intercept<S> {
    inner: S,
    interceptor: std::sync::Arc<dyn crate::Interceptor>,
}

impl<S> std::fmt::Debug for Intercept<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intercept").finish_non_exhaustive()
    }
}

impl<S> tower::Service<ServerCall> for Intercept<S>
where
    S: tower::Service<ServerCall, Response = Reply>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, call: ServerCall) -> Self::Future {
        let info = crate::CallInfo::new(call.service, call.method, &call.context);
        let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.interceptor.intercept(&info)
        }))
        .map_err(|panic| crate::recover::panic_message(&*panic));
        match verdict {
            Ok(Ok(())) => {
                let future = self.inner.call(call);
                Box::pin(async move { future.await.map_err(Into::into) })
            }
            Ok(Err(refusal)) => Box::pin(std::future::ready(Err(refusal.into()))),
            Err(panic) => {
                tracing::error!(%panic, "an interceptor panicked");
                let refusal = RpcError::Internal {
                    message: "the call was refused".into(),
                };
                Box::pin(std::future::ready(Err(refusal.into())))
            }
        }
    }
}
