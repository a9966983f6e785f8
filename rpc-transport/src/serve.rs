//! `serve(listener, server)`: the accept loop, and graceful shutdown.
//!
//! Each accepted connection runs in its own task, so a connection that stalls (in its
//! preface, mid-frame, or by not reading) never delays another or the accept loop. Accept
//! errors that concern one connection are skipped; running out of file descriptors or
//! memory backs off and retries; only an error that means the listener itself is broken
//! ends `serve`.
//!
//! Connection limits (`max_connections`, `max_connections_per_peer`) never let idle
//! connections lock out a new client: at a limit, the oldest connection with no call in
//! flight (the peer's own, for the per-peer limit) is closed with a GOAWAY saying why, as
//! nginx closes idle keep-alive connections when it runs out, and only when every
//! connection is busy is the newcomer refused (per peer) or kept waiting (server-wide).
//! Behind a NAT, a load balancer or a sidecar, a whole fleet shares one address.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use rpc_core::transport::{refusal, ConnectionActivity};
use rpc_core::{Peer, Server, Shutdown};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::framed::server_connection;

/// A connection a [`Listener`] accepted: its two halves and who is at the other end.
#[derive(Debug)]
pub struct Accepted<R, W> {
    /// The reading half.
    pub reader: R,
    /// The writing half.
    pub writer: W,
    /// The remote end.
    pub peer: Peer,
}

/// A source of connections for [`serve`]: implemented for `tokio::net::TcpListener` and
/// `tokio::net::UnixListener`.
pub trait Listener: Send + Unpin + 'static {
    /// The reading half of an accepted connection.
    type Reader: AsyncRead + Send + Unpin + 'static;
    /// The writing half of an accepted connection.
    type Writer: AsyncWrite + Send + Unpin + 'static;

    /// Accepts the next connection.
    fn accept(
        &mut self,
    ) -> impl Future<Output = io::Result<Accepted<Self::Reader, Self::Writer>>> + Send;
}

/// Serves `server` on every connection `listener` accepts. The returned future (`Send`,
/// `'static`, so it can be spawned) runs until the listener fails; call
/// [`Serve::with_graceful_shutdown`] first to stop it with a signal.
///
/// ```no_run
/// # async fn example(server: rpc_core::Server) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:7000").await?;
/// rpc_transport::serve(listener, server).await?;
/// # Ok(())
/// # }
/// ```
pub fn serve<L: Listener>(listener: L, server: Server) -> Serve<L> {
    Serve {
        state: State::NotStarted {
            listener,
            server,
            signal: Box::pin(std::future::pending()),
        },
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The future of [`serve`]; see [`Serve::with_graceful_shutdown`].
#[must_use = "`serve` does nothing until awaited"]
pub struct Serve<L> {
    state: State<L>,
}

/// The future of [`Serve::with_graceful_shutdown`]: the same future, with its signal set.
pub type WithGracefulShutdown<L> = Serve<L>;

enum State<L> {
    NotStarted {
        listener: L,
        server: Server,
        signal: BoxFuture<()>,
    },
    Running(BoxFuture<io::Result<()>>),
    Finished,
}

impl<L: Listener> Serve<L> {
    /// Stops accepting once `signal` resolves, then lets in-flight calls finish (up to the
    /// server's `shutdown_grace_period`), closes the connections and resolves to `Ok(())`.
    ///
    /// ```no_run
    /// # async fn example(server: rpc_core::Server) -> std::io::Result<()> {
    /// let listener = tokio::net::UnixListener::bind("/tmp/calc.sock")?;
    /// let signal = async { let _ = tokio::signal::ctrl_c().await; };
    /// rpc_transport::serve(listener, server).with_graceful_shutdown(signal).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_graceful_shutdown<F>(self, signal: F) -> WithGracefulShutdown<L>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let state = match self.state {
            State::NotStarted {
                listener, server, ..
            } => State::NotStarted {
                listener,
                server,
                signal: Box::pin(signal),
            },
            // Already polled: it keeps running as it was started.
            started => started,
        };
        Serve { state }
    }
}

impl<L: Listener> State<L> {
    fn poll_serve(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        if let State::NotStarted { .. } = self {
            if let State::NotStarted {
                listener,
                server,
                signal,
            } = std::mem::replace(self, State::Finished)
            {
                *self = State::Running(Box::pin(run(listener, server, signal)));
            }
        }
        match self {
            State::Running(future) => {
                let outcome = std::task::ready!(future.as_mut().poll(cx));
                *self = State::Finished;
                std::task::Poll::Ready(outcome)
            }
            State::NotStarted { .. } | State::Finished => {
                std::task::Poll::Ready(Err(io::Error::other("`serve` polled after it finished")))
            }
        }
    }
}

impl<L: Listener> Future for Serve<L> {
    type Output = io::Result<()>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.get_mut().state.poll_serve(cx)
    }
}

impl<L> std::fmt::Debug for Serve<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve").finish_non_exhaustive()
    }
}

/// Longest pause after running out of descriptors or memory.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

async fn run<L: Listener>(
    mut listener: L,
    server: Server,
    signal: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let shutdown = Shutdown::new();
    let connections = TaskTracker::new();
    let mut backoff = Duration::from_millis(5);
    tokio::pin!(signal);
    let connection_slots = Arc::new(Semaphore::new(server.config().max_connections.max(1)));
    let registry = Registry::default();
    let outcome = loop {
        let accepted = tokio::select! {
            () = &mut signal => break Ok(()),
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok(Accepted {
                reader,
                writer,
                peer,
            }) => {
                backoff = Duration::from_millis(5);
                let per_peer = server.config().max_connections_per_peer;
                if !registry.make_room_for(&peer, per_peer) {
                    tracing::info!(%peer, "refused a connection: too many busy ones from this peer");
                    connections.spawn(refuse(writer, "too many connections from this peer"));
                    continue;
                }
                // At the server's limit, close the oldest idle connection, or wait until one
                // closes.
                let slot = match connection_slots.clone().try_acquire_owned() {
                    Ok(slot) => slot,
                    Err(_) => {
                        registry.close_oldest_idle(None, TO_MAKE_ROOM);
                        let slot = tokio::select! {
                            () = &mut signal => break Ok(()),
                            slot = connection_slots.clone().acquire_owned() => slot,
                        };
                        let Ok(slot) = slot else { break Ok(()) };
                        slot
                    }
                };
                let connection = server_connection(reader, writer, peer, &server);
                let connection_shutdown = shutdown.child();
                let registered = registry.insert(
                    &connection.peer,
                    connection.activity().clone(),
                    connection_shutdown.clone(),
                );
                // The task is the connection's engine itself, with what to release after
                // it: an `async` block around it would keep room for the engine twice (a
                // future it captures and the same future being awaited), and this task
                // lives as long as the connection.
                let serving = server.serve_connection(connection, connection_shutdown);
                connections.spawn(serving.map(move |()| drop((slot, registered))));
            }
            Err(error) => match classify_accept_error(&error) {
                AcceptError::ThisConnection => {
                    tracing::debug!(%error, "accept failed for one connection");
                }
                AcceptError::OutOfResources => {
                    tracing::warn!(%error, ?backoff, "accept failed; backing off");
                    tokio::select! {
                        () = &mut signal => break Ok(()),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                }
                AcceptError::Listener => break Err(error),
            },
        }
    };
    // Tell balancers first, then give them a moment to move their calls elsewhere while
    // this server still takes calls; only then stop taking them.
    server.health().shut_down();
    if !connections.is_empty() {
        tokio::time::sleep(server.config().health_drain_delay).await;
    }
    drop(listener);
    shutdown.trigger();
    connections.close();
    connections.wait().await;
    outcome
}

/// How long a refused connection gets to take its GOAWAY before it is closed anyway.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Tells a connection the server will not serve it, and why (a preface and a GOAWAY for no
/// call, so its calls fail with `RpcError::Unavailable` naming the reason), then closes it.
async fn refuse(mut writer: impl AsyncWrite + Unpin, reason: &str) {
    use tokio::io::AsyncWriteExt;
    let bytes = refusal(reason);
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        writer.write_all(&bytes).await?;
        writer.shutdown().await
    })
    .await;
}

/// What identifies one peer for `max_connections_per_peer`: an IPv4 address, an IPv6 /64
/// (one host commonly holds a whole /64, so counting single addresses would let it open as
/// many connections as it likes), or a Unix user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PeerKey {
    Ip(IpAddr),
    Uid(u32),
}

/// `ip`, with an IPv6 address cut to its /64 (an IPv4-mapped one read as IPv4).
fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1_u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

impl PeerKey {
    /// The key of `peer`, when it has one (in-process peers, and Unix peers whose
    /// credentials are unknown, are not counted).
    fn of(peer: &Peer) -> Option<PeerKey> {
        match peer {
            Peer::Tcp(address) | Peer::Tls { address, .. } => {
                Some(PeerKey::Ip(network_of(address.ip())))
            }
            Peer::Unix {
                credentials: Some(credentials),
                ..
            } => Some(PeerKey::Uid(credentials.uid)),
            _ => None,
        }
    }
}

/// What an idle connection closed to make room is told, by which limit.
const TO_MAKE_ROOM: &str = "closed an idle connection to make room for a new one";
const TO_MAKE_ROOM_FOR_PEER: &str =
    "closed an idle connection to make room for a new one from the same peer";

/// The connections being served, for the connection limits: how many each peer has, and
/// which is the oldest with no call in flight.
#[derive(Debug, Clone, Default)]
struct Registry(Arc<Mutex<Connections>>);

#[derive(Debug, Default)]
struct Connections {
    next_id: u64,
    /// Open connections by id; ids grow, so the first is the oldest.
    open: BTreeMap<u64, Entry>,
    /// How many of them each counted peer has.
    per_peer: HashMap<PeerKey, usize>,
}

#[derive(Debug)]
struct Entry {
    key: Option<PeerKey>,
    activity: ConnectionActivity,
    shutdown: Shutdown,
}

/// One connection's place in the [`Registry`], given back on drop.
#[derive(Debug)]
struct Registered {
    registry: Registry,
    id: u64,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Connections> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether one more connection from `peer` fits under `max` per peer, once the peer's
    /// oldest idle connection is closed if it must be.
    fn make_room_for(&self, peer: &Peer, max: usize) -> bool {
        let Some(key) = PeerKey::of(peer) else {
            return true;
        };
        let full = self.lock().per_peer.get(&key).copied().unwrap_or(0) >= max;
        !full || self.close_oldest_idle(Some(key), TO_MAKE_ROOM_FOR_PEER)
    }

    /// Closes the oldest connection with no call in flight (of `key`'s peer, if given),
    /// telling it `why`; it stops counting at once. Whether there was one.
    fn close_oldest_idle(&self, key: Option<PeerKey>, why: &str) -> bool {
        let mut connections = self.lock();
        let oldest = connections
            .open
            .iter()
            .find(|(_, entry)| {
                key.is_none_or(|key| entry.key == Some(key))
                    && entry.activity.calls_in_flight() == 0
            })
            .map(|(id, _)| *id);
        let Some(entry) = oldest.and_then(|id| connections.remove(id)) else {
            return false;
        };
        tracing::debug!(why, "closing an idle connection");
        entry.shutdown.trigger_because(why);
        true
    }

    /// Counts a connection being served from `peer`.
    fn insert(&self, peer: &Peer, activity: ConnectionActivity, shutdown: Shutdown) -> Registered {
        let key = PeerKey::of(peer);
        let mut connections = self.lock();
        let id = connections.next_id;
        connections.next_id += 1;
        if let Some(key) = key {
            *connections.per_peer.entry(key).or_insert(0) += 1;
        }
        connections.open.insert(
            id,
            Entry {
                key,
                activity,
                shutdown,
            },
        );
        Registered {
            registry: self.clone(),
            id,
        }
    }
}

impl Connections {
    /// Takes a connection out of the counts.
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.open.remove(&id)?;
        if let Some(key) = entry.key {
            if let Some(count) = self.per_peer.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    self.per_peer.remove(&key);
                }
            }
        }
        Some(entry)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().remove(self.id);
    }
}

enum AcceptError {
    /// The failure concerns the connection being accepted; the next one may be fine.
    ThisConnection,
    /// The process or system ran out of something; it may come back.
    OutOfResources,
    /// The listener itself is unusable.
    Listener,
}

fn classify_accept_error(error: &io::Error) -> AcceptError {
    use io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionAborted
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionRefused
        | ErrorKind::Interrupted
        | ErrorKind::WouldBlock
        | ErrorKind::TimedOut
        | ErrorKind::PermissionDenied => AcceptError::ThisConnection,
        ErrorKind::InvalidInput | ErrorKind::NotConnected | ErrorKind::Unsupported => {
            AcceptError::Listener
        }
        // EMFILE, ENFILE, ENOBUFS, ENOMEM and anything unknown: keep serving, slowly.
        _ => AcceptError::OutOfResources,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    fn key(address: &str) -> Option<PeerKey> {
        PeerKey::of(&Peer::Tcp(address.parse::<SocketAddr>().unwrap()))
    }

    #[test]
    fn an_ipv6_peer_is_counted_by_its_slash_64() {
        assert_eq!(
            key("[2001:db8:1:2::1]:5000"),
            key("[2001:db8:1:2:ffff::9]:6000")
        );
        assert_ne!(key("[2001:db8:1:2::1]:5000"), key("[2001:db8:1:3::1]:5000"));
        assert_eq!(
            key("[::ffff:10.0.0.1]:1"),
            key("10.0.0.1:2"),
            "mapped IPv4 is IPv4"
        );
        assert_ne!(key("10.0.0.1:1"), key("10.0.0.2:1"));
    }

    use super::*;

    #[test]
    fn running_out_of_descriptors_is_retried() {
        let emfile = io::Error::from_raw_os_error(24);
        assert!(matches!(
            classify_accept_error(&emfile),
            AcceptError::OutOfResources
        ));
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert!(matches!(
            classify_accept_error(&aborted),
            AcceptError::ThisConnection
        ));
        let closed = io::Error::from(io::ErrorKind::InvalidInput);
        assert!(matches!(
            classify_accept_error(&closed),
            AcceptError::Listener
        ));
    }
}
