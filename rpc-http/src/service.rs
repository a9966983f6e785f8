//! [`HttpService`]: a `Server` as a `tower::Service` over HTTP requests.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};

use http::{Request, Response};
use rpc_core::{Channel, Peer, Server};

use crate::body::HttpBody;
use crate::call::{self, RequestBody};

/// A [`Server`] as a `tower::Service` of HTTP requests, to nest in an axum or hyper
/// application at any path prefix, or to wrap in tower-http layers (CORS, tracing,
/// compression):
///
/// ```no_run
/// # async fn example(server: rpc_core::Server) {
/// use rpc_http::HttpService;
///
/// // axum: Router::new().nest_service("/rpc", HttpService::new(server.clone()))
/// let service = HttpService::new(server);
/// # let _ = service;
/// # }
/// ```
///
/// Each request is one call (see the crate documentation): it runs through the server's
/// interceptors, layers and limits exactly as a call over the binary protocol does. Cheap
/// to clone; clones share one in-process connection to the server.
#[derive(Clone)]
pub struct HttpService {
    server: Server,
    peer: Peer,
    channel: Arc<OnceLock<Channel>>,
}

impl std::fmt::Debug for HttpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpService")
            .field("server", &self.server)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl HttpService {
    /// Serves `server`'s services over HTTP. Handlers see the caller as `Peer::Other("http")`
    /// (`rpc_http::serve` names each client's address).
    pub fn new(server: Server) -> HttpService {
        HttpService::with_peer(server, Peer::Other("http".into()))
    }

    /// Serves `server`'s services to one client, whose calls handlers see as from `peer`.
    pub(crate) fn with_peer(server: Server, peer: Peer) -> HttpService {
        HttpService {
            server,
            peer,
            channel: Arc::new(OnceLock::new()),
        }
    }

    /// The server this serves.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The in-process connection the calls go over, opened on first use (inside the
    /// runtime that serves the requests).
    fn channel(&self) -> Channel {
        self.channel
            .get_or_init(|| {
                let config = rpc_core::ChannelConfig::default();
                rpc_transport::loopback::connect_as(&self.server, config, self.peer.clone())
            })
            .clone()
    }

    /// Answers one request.
    pub async fn handle<B: RequestBody>(&self, request: Request<B>) -> Response<HttpBody> {
        call::handle(&self.server, self.channel(), request).await
    }
}

impl<B: RequestBody> tower_service::Service<Request<B>> for HttpService {
    type Response = Response<HttpBody>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move { Ok(service.handle(request).await) })
    }
}
