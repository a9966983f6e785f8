//! Server middleware and interceptors: `tower` layers around every call, added with
//! `Server::layer`, and [`Interceptor`]s, added with `Server::with_interceptor`, which see a
//! call before its arguments are decoded.
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
//! With no layer, calls take the direct path and pay nothing for this. Client middleware
//! (tower layers around a channel's calls) lives beside this crate, in `rpc-policy`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use tower::util::BoxCloneSyncService;

use crate::context::Context;
use crate::dispatch::{HandlerFuture, Reply};
use crate::error::RpcError;
use crate::recover::panic_message;
use crate::status::{self, Status};

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
        return status::for_refusal(error);
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

/// An [`Interceptor`] as a tower layer, so that authentication and
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
    interceptor: std::sync::Arc<dyn Interceptor>,
}

impl std::fmt::Debug for InterceptLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterceptLayer").finish_non_exhaustive()
    }
}

impl InterceptLayer {
    /// A layer that asks `interceptor` about every call before passing it on.
    pub fn new(interceptor: impl Interceptor) -> InterceptLayer {
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
    interceptor: std::sync::Arc<dyn Interceptor>,
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
        let info = CallInfo::new(call.service, call.method, &call.context);
        let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.interceptor.intercept(&info)
        }))
        .map_err(|panic| panic_message(&*panic));
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

/// What an [`Interceptor`] sees of a call before its handler runs.
#[derive(Debug)]
pub struct CallInfo<'a> {
    service: &'a str,
    method: &'a str,
    context: &'a Context,
}

impl<'a> CallInfo<'a> {
    pub(crate) fn new(service: &'a str, method: &'a str, context: &'a Context) -> Self {
        CallInfo {
            service,
            method,
            context,
        }
    }

    /// The service's name (the trait's name); empty when this server has no such service.
    /// Interceptors judge a call before it is refused as unknown, so that a caller they
    /// refuse cannot tell which services and methods exist.
    pub fn service(&self) -> &str {
        self.service
    }

    /// The method's name; empty when the service has no such method (or, written by hand,
    /// does not name its methods).
    pub fn method(&self) -> &str {
        self.method
    }

    /// The call's context: metadata, deadline and peer.
    pub fn context(&self) -> &Context {
        self.context
    }
}

/// Decides whether a call may run, before its handler does. Implemented for closures
/// `Fn(&CallInfo<'_>) -> Result<(), RpcError>`.
pub trait Interceptor: Send + Sync + 'static {
    /// `Ok(())` lets the call run; an error answers it instead.
    ///
    /// # Errors
    ///
    /// The refusal the caller gets: `RpcError::Unauthenticated`, `PermissionDenied`,
    /// `ResourceExhausted` or `Unavailable` travel as they are; any other error is answered
    /// as an internal error without its text.
    fn intercept(&self, call: &CallInfo<'_>) -> Result<(), RpcError>;
}

impl<F> Interceptor for F
where
    F: Fn(&CallInfo<'_>) -> Result<(), RpcError> + Send + Sync + 'static,
{
    fn intercept(&self, call: &CallInfo<'_>) -> Result<(), RpcError> {
        self(call)
    }
}
