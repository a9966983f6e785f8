//! `Server`: the table of services a server routes calls to, with its hooks, middleware and
//! health. Transports hand it connections through [`Server::serve_connection`]; the
//! per-connection engine lives in `server_connection`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::client_connection::{ClientConnection, DIALLER_FIRST_ID};
use crate::config::{ChannelConfig, Served, ServerConfig};
use crate::dispatch::{Dispatch, Reply};
use crate::health::{HealthReporter, HealthServer, HealthService, ServingStatus};
use crate::middleware::{BoxError, CallStack, Interceptor, RunHandler, ServerCall};
use crate::server_connection::{self, Routes, Shutdown};
use crate::shape::ServiceShapes;
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
    routes: Arc<Routes>,
    health: HealthReporter,
    buffers: crate::transport::BufferBudget,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("services", &self.service_names().collect::<Vec<_>>())
            .field("config", &self.routes.config)
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
        // The built-in health service is answered unless a service named `Health` is added.
        let health_service: Arc<dyn Dispatch> =
            Arc::new(HealthServer::new(HealthService(health.clone())));
        let builtin = HashMap::from([(wire_id(health_service.service_name()), health_service)]);
        let buffers = crate::transport::BufferBudget::new(config.max_buffered_bytes);
        Server {
            buffers,
            routes: Arc::new(Routes {
                services: HashMap::new(),
                builtin,
                interceptors: Vec::new(),
                middleware: None,
                config,
            }),
            health,
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
        let routes = Arc::make_mut(&mut self.routes);
        if let Some(existing) = routes.services.get(&id) {
            panic!(
                "service `{name}` cannot be added: the server already has `{}` with the same wire \
                 id; give one of them a name of its own with `#[service(name = \"...\")]` \
                 (e.g. `#[service(name = \"storefront.{name}\")]`)",
                existing.service_name()
            );
        }
        routes.services.insert(id, Arc::new(service));
        self.health.set(name, ServingStatus::Serving);
        self
    }

    /// What the server's health service reports (every server answers one, as the
    /// service `Health`; see [`health`](crate::health)). Graceful shutdown turns it to
    /// `NotServing` first, so balanced clients stop sending calls before the server stops
    /// taking them.
    pub fn health(&self) -> &HealthReporter {
        &self.health
    }

    /// Adds an interceptor: it sees every call's service, method, metadata and peer before
    /// the handler runs, and can refuse the call with an error (`RpcError::Unauthenticated`
    /// or `RpcError::PermissionDenied` for authentication and authorisation). Interceptors run
    /// in the order they were added; the first refusal answers the call. Refusals count
    /// against the connection's error budget, so guessing credentials costs a connection.
    /// They run before the server answers that a service or method does not exist or has
    /// other types (the names they see are then empty), and before arguments are decoded,
    /// so a caller they refuse learns nothing about the API and costs no decoding.
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
        Arc::make_mut(&mut self.routes)
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
        let routes = Arc::make_mut(&mut self.routes);
        let stack = routes
            .middleware
            .take()
            .unwrap_or_else(|| CallStack::new(RunHandler));
        let layered = layer.layer(stack).map_err(Into::into);
        routes.middleware = Some(CallStack::new(layered));
        self
    }

    /// The server's configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.routes.config
    }

    /// The cap on bytes this server's connections hold in their read buffers
    /// ([`ServerConfig::max_buffered_bytes`]), shared by every clone of the server: a
    /// transport's reader charges what its buffer holds to it.
    pub fn buffer_budget(&self) -> &crate::transport::BufferBudget {
        &self.buffers
    }

    /// The names of the services this server routes to.
    pub fn service_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.routes
            .services
            .values()
            .map(|service| service.service_name())
    }

    /// Every service whose methods are described (generated services are), with its
    /// methods' shapes, names and JSON codecs, by wire name; the built-in health service
    /// included unless replaced. For front doors that route by name (HTTP/JSON) and for
    /// documents generated from the services (OpenAPI).
    pub fn described_services(&self) -> Vec<(&'static str, &'static ServiceShapes)> {
        let mut services: Vec<(&'static str, &'static ServiceShapes)> = self
            .routes
            .services
            .values()
            .chain(
                self.routes
                    .builtin
                    .iter()
                    .filter(|(id, _)| !self.routes.services.contains_key(id))
                    .map(|(_, service)| service),
            )
            .filter_map(|service| Some((service.service_name(), service.shapes()?)))
            .collect();
        services.sort_by_key(|(name, _)| *name);
        services
    }

    /// Serves calls on one connection until the peer closes it, it fails, or `shutdown` is
    /// triggered and its calls have drained. Transports spawn one of these per connection.
    ///
    /// The future does not borrow the server, and is the connection's engine itself (no
    /// wrapper around it keeping a second copy of the connection): it lives as long as the
    /// connection, so its size is memory every connection holds.
    pub fn serve_connection<R: FrameRead, W: FrameWrite>(
        &self,
        connection: Connection<R, W>,
        shutdown: Shutdown,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        server_connection::serve(
            self.routes.clone(),
            connection,
            shutdown,
            self.buffers.clone(),
        )
    }

    /// Starts serving this server's services on a connection this side dialled, beside the
    /// engine of its own calls, which it returns (`Channel::new` with
    /// [`ChannelConfig::serve`]). Both write into one outbox whose preface says this side
    /// serves; the server driver reads the connection and hands the calling engine the
    /// frames of its calls.
    pub(crate) fn serve_dialled<R: FrameRead, W: FrameWrite>(
        &self,
        connection: Connection<R, W>,
        config: ChannelConfig,
    ) -> Arc<ClientConnection> {
        let outbox = server_connection::serving_outbox(config.compression);
        let client = ClientConnection::attached(
            outbox.clone(),
            connection.peer.clone(),
            config,
            DIALLER_FIRST_ID,
        );
        tokio::spawn(server_connection::serve_dialled(
            self.routes.clone(),
            connection,
            outbox,
            client.clone(),
            self.buffers.clone(),
        ));
        client
    }
}

/// Calls both ways: a channel that serves its peer.
impl ChannelConfig {
    /// Serves `server`'s services to the peer on each connection of the channel, so that
    /// the server at the other end can call this side back over the same connection
    /// (callbacks during a call, pushes later) without dialling it: no second connection
    /// the other way, which firewalls and NAT often forbid. The server's handlers reach
    /// this side through `Context::peer_channel`. The calls that arrive here go through
    /// `server`'s own limits, interceptors and middleware.
    ///
    /// ```
    /// use rpc_core::{ChannelConfig, Server};
    ///
    /// let notifications = Server::new(); // add the services the server may call
    /// let config = ChannelConfig::default().serve(notifications);
    /// assert!(config.served().is_some());
    /// ```
    #[must_use]
    pub fn serve(mut self, server: Server) -> Self {
        self.served = Some(Served(Arc::new(server)));
        self
    }

    /// The server the channel serves its peer with, if any ([`ChannelConfig::serve`]).
    pub fn served(&self) -> Option<&Server> {
        self.served.as_ref()?.0.downcast_ref()
    }
}
