//! `Server`: the router of services by name, and the driver of each server connection.
//!
//! A `Server` is a cheap-to-clone table of services. Transports hand it connections through
//! [`Server::serve_connection`]; the per-connection machinery lives in `server/connection.rs`.

mod connection;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::context::Context;
use crate::dispatch::{Dispatch, Reply};
use crate::error::RpcError;
use crate::health::{HealthReporter, HealthServer, HealthService, ServingStatus};
use crate::middleware::{BoxError, CallStack, RunHandler, ServerCall};
use crate::transport::{Connection, FrameRead, FrameWrite};
use crate::wire::wire_id;

/// A set of services that connections can call. Cheap to clone; clones share the services.
///
/// ```
/// use rpc_core::{service, Server};
///
/// #[service]
/// pub trait Ping {
///     async fn ping(&self) -> String;
/// }
///
/// struct Pong;
/// impl Ping for Pong {
///     async fn ping(&self) -> String { "pong".to_owned() }
/// }
///
/// let server = Server::new().add_service(PingServer::new(Pong));
/// assert_eq!(server.service_names().collect::<Vec<_>>(), ["Ping"]);
/// ```
#[derive(Clone)]
pub struct Server {
    inner: Arc<ServerInner>,
}

#[derive(Clone)]
struct ServerInner {
    services: HashMap<u32, Arc<dyn Dispatch>>,
    interceptors: Vec<Arc<dyn Interceptor>>,
    config: ServerConfig,
    health: HealthReporter,
    /// The built-in health service, answered unless a service named `Health` was added.
    health_service: Arc<dyn Dispatch>,
    /// The middleware every call goes through, if any layer was added.
    middleware: Option<CallStack>,
}

/// The wire id of the built-in health service.
const HEALTH_ID: u32 = wire_id("Health");

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("services", &self.service_names().collect::<Vec<_>>())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Default for Server {
    fn default() -> Self {
        Server::new()
    }
}

impl Server {
    /// A server with no services and the default [`ServerConfig`].
    pub fn new() -> Self {
        Server::with_config(ServerConfig::default())
    }

    /// A server with no services and the given configuration.
    pub fn with_config(config: ServerConfig) -> Self {
        let health = HealthReporter::new();
        Server {
            inner: Arc::new(ServerInner {
                services: HashMap::new(),
                interceptors: Vec::new(),
                config,
                health_service: Arc::new(HealthServer::new(HealthService(health.clone()))),
                health,
                middleware: None,
            }),
        }
    }

    /// Adds a service (a generated `{Name}Server<T>`, or any [`Dispatch`]).
    ///
    /// # Panics
    ///
    /// When the server already has a service of the same name, or one whose name hashes to
    /// the same wire id (a programming error, found on the first run).
    pub fn add_service<S: Dispatch>(mut self, service: S) -> Self {
        let name = service.service_name();
        let id = wire_id(name);
        let inner = Arc::make_mut(&mut self.inner);
        if let Some(existing) = inner.services.get(&id) {
            panic!(
                "service `{name}` cannot be added: the server already has `{}` with the same wire id",
                existing.service_name()
            );
        }
        inner.services.insert(id, Arc::new(service));
        inner.health.set(name, ServingStatus::Serving);
        self
    }

    /// What the server's health service reports (every server answers one, as the
    /// service `Health`; see [`Health`](crate::Health)). Graceful shutdown turns it to
    /// `NotServing` first, so balanced clients stop sending calls before the server stops
    /// taking them.
    pub fn health(&self) -> &HealthReporter {
        &self.inner.health
    }

    /// Adds an interceptor: it sees every call's service, method, metadata and peer before
    /// the handler runs, and can refuse the call with an error (`RpcError::Unauthenticated`
    /// or `RpcError::PermissionDenied` for authentication and authorisation). Interceptors run
    /// in the order they were added; the first refusal answers the call. Refusals count
    /// against the connection's error budget, so guessing credentials costs a connection.
    ///
    /// ```
    /// use rpc_core::{CallInfo, RpcError, Server};
    ///
    /// let server = Server::new().with_interceptor(|call: &CallInfo<'_>| {
    ///     match call.context().metadata("authorization") {
    ///         Some("Bearer let-me-in") => Ok(()),
    ///         _ => Err(RpcError::Unauthenticated { message: "a valid token is required".into() }),
    ///     }
    /// });
    /// # let _ = server;
    /// ```
    pub fn with_interceptor(mut self, interceptor: impl Interceptor) -> Self {
        Arc::make_mut(&mut self.inner)
            .interceptors
            .push(Arc::new(interceptor));
        self
    }

    /// Wraps every call in a `tower` layer (see [`middleware`](crate::middleware)): its
    /// service takes a [`ServerCall`] and returns the handler's [`Reply`]. The layer added
    /// last is outermost: it sees a call first.
    ///
    /// ```
    /// use rpc_core::Server;
    ///
    /// let server = Server::new().layer(tower::limit::ConcurrencyLimitLayer::new(100));
    /// # let _ = server;
    /// ```
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: tower::Layer<CallStack>,
        L::Service: tower::Service<ServerCall, Response = Reply> + Clone + Send + Sync + 'static,
        <L::Service as tower::Service<ServerCall>>::Error: Into<BoxError>,
        <L::Service as tower::Service<ServerCall>>::Future: Send + 'static,
    {
        use tower::ServiceExt;
        let inner = Arc::make_mut(&mut self.inner);
        let stack = inner
            .middleware
            .take()
            .unwrap_or_else(|| CallStack::new(RunHandler));
        let layered = layer.layer(stack).map_err(Into::into);
        inner.middleware = Some(CallStack::new(layered));
        self
    }

    /// The middleware stack, if any layer was added.
    pub(crate) fn middleware(&self) -> Option<&CallStack> {
        self.inner.middleware.as_ref()
    }

    fn interceptors(&self) -> &[Arc<dyn Interceptor>] {
        &self.inner.interceptors
    }

    /// The server's configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The names of the services this server routes to.
    pub fn service_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.inner
            .services
            .values()
            .map(|service| service.service_name())
    }

    /// Serves calls on one connection until the peer closes it, it fails, or `shutdown` is
    /// triggered and its calls have drained. Transports spawn one of these per connection.
    pub async fn serve_connection<R: FrameRead, W: FrameWrite>(
        &self,
        connection: Connection<R, W>,
        shutdown: Shutdown,
    ) {
        connection::serve(self.inner.clone(), connection, shutdown).await;
    }

    fn service(&self, service_id: u32) -> Option<&Arc<dyn Dispatch>> {
        match self.inner.services.get(&service_id) {
            None if service_id == HEALTH_ID => Some(&self.inner.health_service),
            found => found,
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

    /// The service's name (the trait's name).
    pub fn service(&self) -> &str {
        self.service
    }

    /// The method's name.
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

/// Tells connections to drain and close: stop taking new calls, finish in-flight ones (up
/// to the grace period), then close. Cheap to clone; triggering any clone triggers all.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Shutdown::default()
    }

    /// Fires the signal. Firing it again does nothing.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the signal has fired.
    pub async fn triggered(&self) {
        self.token.cancelled().await;
    }
}
