//! [`OnePort`]: the binary protocol and HTTP/JSON on one port, told apart by their first
//! bytes. An opt-in: a port served by `rpc_transport::serve` alone keeps refusing HTTP.
//!
//! `OnePort` wraps any rpc-transport listener and is one itself. Each accepted connection
//! is sniffed in a task of its own (so a client that sends nothing delays no one, and gets
//! the server's `preface_timeout` to start): one that opens with the binary protocol's
//! preface is handed, bytes and all, to `rpc_transport::serve`, with every defence of the
//! binary port (connection limits, buffered-bytes cap, idle eviction); anything else is
//! served as HTTP/1.1 or HTTP/2 by the HTTP front door, as [`serve`](crate::serve) would.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rpc_core::transport::PREFACE;
use rpc_core::Server;
use rpc_transport::{Accepted, Listener};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::serve::{builder, shut_down, spawn_connection};
use crate::sniff::{first_bytes, FirstBytes, Sniffed};

/// A connection that opened with the binary protocol's preface, handed on to `serve`.
type Binary<L> = Accepted<Sniffed<<L as Listener>::Reader>, <L as Listener>::Writer>;

/// A listener serving HTTP/JSON itself and handing binary-protocol connections on: give it
/// to `rpc_transport::serve`.
///
/// ```no_run
/// # async fn example(server: rpc_core::Server) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:7000").await?;
/// let one_port = rpc_http::OnePort::new(listener, server.clone());
/// rpc_transport::serve(one_port, server).await?;
/// # Ok(())
/// # }
/// ```
///
/// HTTP connections are limited to `max_connections` at once (beside the binary ones, which
/// `serve` limits), and end gracefully (their requests in flight finish, up to the server's
/// `shutdown_grace_period`) once `serve` drops the listener at shutdown.
pub struct OnePort<L: Listener> {
    inner: L,
    server: Server,
    builder: auto::Builder<TokioExecutor>,
    graceful: Option<GracefulShutdown>,
    /// Connections being sniffed; each ends with the binary ones.
    sniffing: JoinSet<Option<Binary<L>>>,
    /// Slots for HTTP connections: `max_connections` of them, as `serve` keeps for binary
    /// ones.
    http_slots: Arc<Semaphore>,
}

impl<L: Listener> std::fmt::Debug for OnePort<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnePort")
            .field("sniffing", &self.sniffing.len())
            .finish_non_exhaustive()
    }
}

impl<L: Listener> OnePort<L> {
    /// Serves `server` over HTTP/JSON on the connections of `listener` that do not speak
    /// the binary protocol.
    pub fn new(inner: L, server: Server) -> Self {
        OnePort {
            inner,
            builder: builder(),
            graceful: Some(GracefulShutdown::new()),
            sniffing: JoinSet::new(),
            http_slots: Arc::new(Semaphore::new(server.config().max_connections.max(1))),
            server,
        }
    }

    /// Sniffs a new connection in a task of its own: binary ones come back from the task,
    /// HTTP ones are served from it.
    fn sniff(&mut self, accepted: Accepted<L::Reader, L::Writer>) {
        let Some(graceful) = &self.graceful else {
            return;
        };
        let watcher = graceful.watcher();
        let builder = self.builder.clone();
        let server = self.server.clone();
        let http_slots = self.http_slots.clone();
        let limit = server.config().preface_timeout;
        self.sniffing.spawn(async move {
            let Accepted {
                reader,
                writer,
                peer,
            } = accepted;
            let FirstBytes { reader, matched } = first_bytes(reader, &PREFACE, limit).await?;
            if matched {
                return Some(Accepted {
                    reader,
                    writer,
                    peer,
                });
            }
            // Past `max_connections` HTTP connections at once, the newcomer is closed.
            let Ok(slot) = http_slots.try_acquire_owned() else {
                tracing::info!(%peer, "refused an HTTP connection: too many at once");
                return None;
            };
            spawn_connection(&builder, watcher, &server, reader, writer, peer, slot);
            None
        });
    }
}

impl<L: Listener> Listener for OnePort<L> {
    type Reader = Sniffed<L::Reader>;
    type Writer = L::Writer;

    /// Cancel safe: a connection accepted or sniffed stays in the listener.
    async fn accept(&mut self) -> io::Result<Accepted<Self::Reader, Self::Writer>> {
        loop {
            tokio::select! {
                accepted = self.inner.accept() => {
                    let accepted = accepted?;
                    self.sniff(accepted);
                }
                Some(sniffed) = self.sniffing.join_next() => {
                    if let Ok(Some(binary)) = sniffed {
                        return Ok(binary);
                    }
                }
            }
        }
    }
}

impl<L: Listener> Drop for OnePort<L> {
    fn drop(&mut self) {
        // `serve` drops its listener when it shuts down: let the HTTP requests in flight
        // finish, as it lets calls finish.
        if let (Some(graceful), Ok(runtime)) =
            (self.graceful.take(), tokio::runtime::Handle::try_current())
        {
            let grace: Duration = self.server.config().shutdown_grace_period;
            runtime.spawn(shut_down(graceful, grace));
        }
    }
}
