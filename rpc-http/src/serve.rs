//! [`serve`]: the accept loop of the HTTP front door, HTTP/1.1 and HTTP/2 on one port (over
//! TCP by prior knowledge, over TLS by ALPN, over Unix sockets), with graceful shutdown.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rpc_core::Server;
use rpc_transport::{Accepted, Listener};
use tokio::sync::Semaphore;

use crate::service::HttpService;
use crate::sniff::{first_bytes, FirstBytes};

/// How long a client has to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// The pause after an accept error (the process ran out of descriptors, say) before the
/// next accept, so a persistent error does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `server`'s services over HTTP/JSON on `listener` (see the crate documentation),
/// until the signal given to [`Serve::with_graceful_shutdown`] fires and the requests in
/// flight have finished.
///
/// Any of rpc-transport's listeners will do: a `tokio::net::TcpListener` (HTTP/1.1, and
/// HTTP/2 by prior knowledge), a `tokio::net::UnixListener`, or, with the `tls` feature of
/// rpc-transport, a `TlsListener`, where clients choose HTTP/2 by ALPN when the rustls
/// configuration offers it (`alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()]`)
/// and handlers find the client's certificate in `cx.peer()`.
///
/// ```no_run
/// # async fn ctrl_c() {}
/// # async fn example(server: rpc_core::Server) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// rpc_http::serve(listener, server)
///     .with_graceful_shutdown(ctrl_c()) // tokio::signal::ctrl_c, say
///     .await?;
/// # Ok(())
/// # }
/// ```
pub fn serve<L: Listener>(listener: L, server: Server) -> Serve {
    Serve {
        start: Some(Box::new(move |signal| {
            Box::pin(run(listener, server, signal))
        })),
        signal: None,
        running: None,
    }
}

/// The future [`serve`] returns: `Send + 'static`, so it can be spawned.
#[must_use = "a server does nothing unless awaited or spawned"]
pub struct Serve {
    start: Option<Box<dyn FnOnce(Option<Signal>) -> Running + Send>>,
    signal: Option<Signal>,
    running: Option<Running>,
}

type Signal = Pin<Box<dyn Future<Output = ()> + Send>>;
type Running = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

impl std::fmt::Debug for Serve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve").finish_non_exhaustive()
    }
}

impl Serve {
    /// Stops accepting once `signal` resolves, then lets the requests in flight finish (up
    /// to the server's `shutdown_grace_period`) and resolves to `Ok(())`.
    pub fn with_graceful_shutdown(
        mut self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Serve {
        if self.start.is_some() {
            self.signal = Some(Box::pin(signal));
        }
        self
    }
}

impl Future for Serve {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        if let Some(start) = self.start.take() {
            let signal = self.signal.take();
            self.running = Some(start(signal));
        }
        match &mut self.running {
            Some(running) => running.as_mut().poll(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// How every HTTP connection is served: HTTP/1.1 with a header timeout, or HTTP/2.
pub(crate) fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder
}

/// The first bytes an HTTP/2 client sends (with prior knowledge, or after ALPN).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves one connection's HTTP requests in a task of its own, watched by `watcher` (of a
/// [`GracefulShutdown`]); `done` (a connection slot, say) is dropped when the connection
/// ends. The first bytes must arrive within the server's `preface_timeout`, as on the
/// binary port; they say whether it is HTTP/2 (then served as such) or HTTP/1.1 (whose
/// headers then have `HEADER_TIMEOUT`).
pub(crate) fn spawn_connection<R, W, D>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    server: &Server,
    reader: R,
    writer: W,
    peer: rpc_core::Peer,
    done: D,
) where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
    W: tokio::io::AsyncWrite + Send + Unpin + 'static,
    D: Send + 'static,
{
    let builder = builder.clone();
    let server = server.clone();
    tokio::spawn(async move {
        let address = peer.to_string();
        let limit = server.config().preface_timeout;
        let Some(FirstBytes { reader, matched }) = first_bytes(reader, H2_PREFACE, limit).await
        else {
            tracing::debug!(%address, "closed an HTTP connection that sent no request in time");
            return;
        };
        let builder = if matched {
            builder.http2_only()
        } else {
            builder.http1_only()
        };
        let service = HttpService::with_peer(server, peer);
        let handler = hyper::service::service_fn(move |request| {
            let service = service.clone();
            async move { Ok::<_, std::convert::Infallible>(service.handle(request).await) }
        });
        let io = tokio::io::join(reader, writer);
        let connection = builder.serve_connection(TokioIo::new(io), handler);
        if let Err(error) = watcher.watch(connection).await {
            tracing::debug!(%address, %error, "HTTP connection ended with an error");
        }
        drop(done);
    });
}

async fn run<L: Listener>(
    mut listener: L,
    server: Server,
    signal: Option<Signal>,
) -> io::Result<()> {
    let builder = builder();
    let graceful = GracefulShutdown::new();
    let mut signal = signal.unwrap_or_else(|| Box::pin(std::future::pending()));
    // As on the binary port: past `max_connections`, stop accepting until one closes (the
    // kernel's backlog holds the rest).
    let slots = Arc::new(Semaphore::new(server.config().max_connections.max(1)));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = &mut signal => break,
        };
        // The semaphore is never closed.
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut signal => break,
        };
        let Accepted {
            reader,
            writer,
            peer,
        } = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(%error, "accept failed; trying again");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        spawn_connection(
            &builder,
            graceful.watcher(),
            &server,
            reader,
            writer,
            peer,
            slot,
        );
    }
    drop(listener);
    shut_down(graceful, server.config().shutdown_grace_period).await;
    Ok(())
}

/// Lets the HTTP requests in flight finish, up to `grace`.
pub(crate) async fn shut_down(graceful: GracefulShutdown, grace: Duration) {
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("grace period over; HTTP connections still open are abandoned");
    }
}
