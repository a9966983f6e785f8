//! TLS over TCP with rustls: a [`TlsListener`] for `serve`, and `connect` for clients.
//!
//! Bring your own `rustls` configuration (re-exported here as [`rustls`], so versions
//! match): a server certificate for plain TLS, plus a client verifier such as
//! `rustls::server::WebPkiClientVerifier` for mutual TLS. The handler sees the client's
//! verified certificate chain in `Context::peer()` as [`Peer::Tls`].
//!
//! Handshakes run in tasks of their own, each under a timeout, never in the accept loop:
//! a client that opens a socket and never sends its ClientHello (or trickles it) costs one
//! task until the timeout, and a failed handshake is logged and skipped without slowing
//! the listener down for anyone else. Past `max_handshakes` at once, each new connection
//! sheds the oldest handshake instead of waiting for one to end.
//!
//! ```no_run
//! use std::sync::Arc;
//! use rpc_transport::tls::{self, rustls, TlsListener};
//!
//! # async fn example(
//! #     server: rpc_core::Server,
//! #     server_tls: rustls::ServerConfig,
//! #     client_tls: rustls::ClientConfig,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! let listener = TlsListener::bind("127.0.0.1:7443", Arc::new(server_tls)).await?;
//! tokio::spawn(rpc_transport::serve(listener, server));
//!
//! let channel = tls::connect("127.0.0.1:7443", "localhost", Arc::new(client_tls)).await?;
//! # let _ = channel;
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rpc_core::{Channel, ChannelConfig, Peer, RpcError};
use tokio::io::{AsyncRead, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::task::{AbortHandle, JoinSet};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub use tokio_rustls::rustls;

use crate::framed;
use crate::serve::{Accepted, Listener};
use crate::tcp::prepare_socket;

/// How long a client has to complete its TLS handshake, unless set with
/// [`TlsListener::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many handshakes may run at once before each new one sheds the oldest, unless set
/// with [`TlsListener::max_handshakes`].
pub const DEFAULT_MAX_HANDSHAKES: usize = 256;

/// A server-side TLS stream.
type ServerStream = tokio_rustls::server::TlsStream<TcpStream>;

/// A TCP listener that completes a TLS handshake on each connection before handing it to
/// [`serve`](crate::serve). Connections whose handshake fails or times out are logged at
/// debug level and dropped.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    max_handshakes: usize,
    handshakes: JoinSet<Option<Accepted<ReadHalf<ServerStream>, WriteHalf<ServerStream>>>>,
    /// The handshakes still running and not shed, oldest first.
    running: VecDeque<AbortHandle>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("tcp", &self.tcp)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("handshakes_running", &self.handshakes.len())
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Listens on `address` with the given rustls configuration.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn bind(
        address: impl ToSocketAddrs,
        config: Arc<rustls::ServerConfig>,
    ) -> io::Result<TlsListener> {
        Ok(TlsListener::new(TcpListener::bind(address).await?, config))
    }

    /// Accepts TLS connections on a bound TCP listener.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> TlsListener {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            handshakes: JoinSet::new(),
            running: VecDeque::new(),
        }
    }

    /// Sets how long a client has to complete its handshake (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> TlsListener {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets how many handshakes may run at once (default 256); past it, each new
    /// connection sheds the oldest handshake still running (its socket is closed), so
    /// sockets that never finish their handshake, from one address or many, cannot stop
    /// the listener from taking new clients (a real handshake takes milliseconds, so it is
    /// rarely the oldest).
    pub fn max_handshakes(mut self, max: usize) -> TlsListener {
        self.max_handshakes = max.max(1);
        self
    }

    /// The local address the listener is bound to.
    ///
    /// # Errors
    ///
    /// When the socket cannot report it.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Starts the handshake of a freshly accepted socket in a task of its own, shedding the
    /// oldest one running when there are `max_handshakes` already.
    fn start_handshake(&mut self, stream: TcpStream, address: SocketAddr) {
        if self.running.len() >= self.max_handshakes {
            if let Some(oldest) = self.running.pop_front() {
                tracing::debug!(%address, "too many TLS handshakes at once: shed the oldest");
                oldest.abort();
            }
        }
        prepare_socket(&stream);
        let handshake = self.acceptor.accept(stream);
        let limit = self.handshake_timeout;
        let handle = self.handshakes.spawn(async move {
            let stream = match tokio::time::timeout(limit, handshake).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%address, %error, "TLS handshake failed");
                    return None;
                }
                Err(_elapsed) => {
                    tracing::debug!(%address, ?limit, "TLS handshake timed out");
                    return None;
                }
            };
            let peer = tls_peer(address, stream.get_ref().1.peer_certificates());
            let (reader, writer) = tokio::io::split(stream);
            Some(Accepted {
                reader,
                writer,
                peer,
            })
        });
        self.running.push_back(handle);
    }

    /// Forgets a handshake that ended (or was shed).
    fn finished(&mut self, id: tokio::task::Id) {
        if let Some(index) = self.running.iter().position(|handle| handle.id() == id) {
            self.running.remove(index);
        }
    }
}

impl Listener for TlsListener {
    type Reader = ReadHalf<ServerStream>;
    type Writer = WriteHalf<ServerStream>;

    /// Cancel safe: a socket accepted or a handshake finished stays in the listener.
    async fn accept(&mut self) -> io::Result<Accepted<Self::Reader, Self::Writer>> {
        loop {
            // Shed handshakes end at their next poll; until they are reaped, they count.
            let room = self.handshakes.len() < self.max_handshakes.saturating_mul(2);
            tokio::select! {
                accepted = self.tcp.accept(), if room => {
                    let (stream, address) = accepted?;
                    self.start_handshake(stream, address);
                }
                Some(finished) = self.handshakes.join_next_with_id() => {
                    // A handshake task only ends without a connection when it failed (and
                    // said so), was shed, or, never in practice, panicked.
                    match finished {
                        Ok((id, accepted)) => {
                            self.finished(id);
                            if let Some(accepted) = accepted {
                                return Ok(accepted);
                            }
                        }
                        Err(error) => self.finished(error.id()),
                    }
                }
            }
        }
    }
}

/// Connects over TLS to a server at `address` whose certificate must be valid for
/// `server_name`, with the default [`ChannelConfig`].
///
/// # Errors
///
/// `RpcError::Io` when the connection cannot be established, `RpcError::Unauthenticated`
/// when the handshake fails (an untrusted certificate, say), and
/// `RpcError::DeadlineExceeded` when it takes longer than the channel's `preface_timeout`.
/// A mutual-TLS server that refuses the client's certificate is `Unauthenticated` too:
/// from `connect` under TLS 1.2, and from the first call under TLS 1.3, where the client's
/// side of the handshake ends before the server has judged its certificate.
pub async fn connect(
    address: impl ToSocketAddrs,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<Channel, RpcError> {
    connect_with(address, server_name, config, ChannelConfig::default()).await
}

/// Connects over TLS with a channel configuration; see [`connect`].
///
/// # Errors
///
/// As for [`connect`]; also `RpcError::Protocol` when `server_name` is not a valid DNS name
/// or IP address.
pub async fn connect_with(
    address: impl ToSocketAddrs,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
    channel_config: ChannelConfig,
) -> Result<Channel, RpcError> {
    let server_name = ServerName::try_from(server_name.to_owned())
        .map_err(|error| RpcError::protocol(format!("bad server name {server_name:?}: {error}")))?;
    let stream = TcpStream::connect(address).await?;
    prepare_socket(&stream);
    let address = stream.peer_addr()?;
    let limit = channel_config.preface_timeout;
    let handshake = TlsConnector::from(config).connect(server_name, stream);
    let stream = tokio::time::timeout(limit, handshake)
        .await
        .map_err(|_elapsed| RpcError::DeadlineExceeded {})?
        .map_err(|error| handshake_error(&error))?;
    let peer = tls_peer(address, stream.get_ref().1.peer_certificates());
    let (reader, writer) = tokio::io::split(stream);
    let reader = RefusalReader { inner: reader };
    Ok(framed::channel(reader, writer, peer, channel_config))
}

/// The client's reading half. Under TLS 1.3 the client finishes its side of the handshake
/// before the server has judged the client's certificate, so a server's refusal (an alert
/// such as `CertificateRequired` or `UnknownCA`) arrives with the first read after
/// `connect`; this names it `RpcError::Unauthenticated`, as a refusal within the handshake
/// is, instead of an I/O error.
struct RefusalReader<R> {
    inner: R,
}

impl<R: AsyncRead + Unpin> AsyncRead for RefusalReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(error)) => Poll::Ready(Err(refusal(error))),
            other => other,
        }
    }
}

/// `error` as an `Unauthenticated` refusal when it is a server's alert refusing the
/// client's certificate or access; as it is otherwise.
fn refusal(error: io::Error) -> io::Error {
    use rustls::AlertDescription as Alert;
    let alert = match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(alert)) => *alert,
        _ => return error,
    };
    let refused = matches!(
        alert,
        Alert::CertificateRequired
            | Alert::BadCertificate
            | Alert::UnsupportedCertificate
            | Alert::CertificateRevoked
            | Alert::CertificateExpired
            | Alert::CertificateUnknown
            | Alert::UnknownCA
            | Alert::AccessDenied
    );
    if !refused {
        return error;
    }
    io::Error::other(RpcError::Unauthenticated {
        message: format!("the server refused this client's certificate (TLS alert {alert:?})")
            .into(),
    })
}

/// The peer at `address`, with the certificate chain it presented (verified by the
/// handshake against the configuration's trust roots).
fn tls_peer(address: SocketAddr, chain: Option<&[CertificateDer<'_>]>) -> Peer {
    Peer::Tls {
        address,
        certificates: chain
            .map(|chain| chain.iter().map(|der| der.as_ref().to_vec()).collect())
            .unwrap_or_default(),
    }
}

/// A failed handshake: a certificate or protocol problem is an authentication failure; a
/// connection that broke is an I/O error.
fn handshake_error(error: &io::Error) -> RpcError {
    match error.kind() {
        io::ErrorKind::InvalidData => RpcError::Unauthenticated {
            message: format!("TLS handshake failed: {error}").into(),
        },
        _ => RpcError::from(io::Error::new(error.kind(), error.to_string())),
    }
}
