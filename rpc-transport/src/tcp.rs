//! TCP: connect a channel to a server, or accept connections with `crate::serve`.
//!
//! Every socket has `TCP_NODELAY` set (frames are coalesced by the connection's writer
//! already, and Nagle's algorithm would only add latency) and TCP keepalive on.

use std::time::Duration;

use rpc_core::{Channel, ChannelConfig, Peer, RpcError};
use rpc_policy::{BalanceConfig, BoxFuture, Connect, Resolve};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

use crate::framed;
use crate::serve::{Accepted, Listener};

/// Connects to a server at `address` with the default [`ChannelConfig`].
///
/// ```no_run
/// # async fn example() -> Result<(), rpc_core::RpcError> {
/// let channel = rpc_transport::tcp::connect("127.0.0.1:7000").await?;
/// # let _ = channel;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// `RpcError::Io` when the connection cannot be established.
pub async fn connect(address: impl ToSocketAddrs) -> Result<Channel, RpcError> {
    connect_with(address, ChannelConfig::default()).await
}

/// Connects to a server at `address` with the given configuration.
///
/// # Errors
///
/// `RpcError::Io` when the connection cannot be established.
pub async fn connect_with(
    address: impl ToSocketAddrs,
    config: ChannelConfig,
) -> Result<Channel, RpcError> {
    let stream = TcpStream::connect(address).await?;
    prepare_socket(&stream);
    let peer = Peer::Tcp(stream.peer_addr()?);
    let (reader, writer) = stream.into_split();
    Ok(framed::channel(reader, writer, peer, config))
}

/// Sets `TCP_NODELAY` and turns on keepalive on a new connection. A socket that refuses
/// either option still works, only with more latency or slower dead-peer detection.
pub(crate) fn prepare_socket(stream: &TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
    enable_keepalive(stream);
}

/// Turns on TCP keepalive: after 30 s of silence the kernel probes the peer every 10 s, and
/// after 3 unanswered probes the connection fails, and with it the calls it carried. A peer
/// that vanished without closing (power loss, a cut link) is found within about a minute,
/// with no timer in the runtime.
fn enable_keepalive(stream: &TcpStream) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "freebsd"
    ))]
    let keepalive = keepalive.with_retries(3);
    // A socket that refuses the option still works; it only detects dead peers later.
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(%error, "could not enable TCP keepalive");
    }
}

impl Listener for TcpListener {
    type Reader = tokio::net::tcp::OwnedReadHalf;
    type Writer = tokio::net::tcp::OwnedWriteHalf;

    async fn accept(&mut self) -> std::io::Result<Accepted<Self::Reader, Self::Writer>> {
        let (stream, address) = TcpListener::accept(self).await?;
        prepare_socket(&stream);
        let (reader, writer) = stream.into_split();
        Ok(Accepted {
            reader,
            writer,
            peer: Peer::Tcp(address),
        })
    }
}

/// Dials TCP endpoints given as `host:port` text (a name is looked up at each dial), for
/// balanced and reconnecting channels.
#[derive(Debug, Clone, Default)]
pub struct TcpConnector {
    /// The configuration of each connection.
    pub config: ChannelConfig,
}

impl Connect for TcpConnector {
    fn connect(&self, endpoint: &str) -> BoxFuture<'static, Result<Channel, RpcError>> {
        let endpoint = endpoint.to_owned();
        let config = self.config.clone();
        Box::pin(async move { connect_with(endpoint, config).await })
    }
}

/// A channel to the server at `address` (`host:port`) that dials again, with backoff, when
/// its connection drops; calls made meanwhile wait for it within their deadline. Calls in
/// flight when it dropped fail with `ConnectionClosed` and are never replayed (unless their
/// method is `#[idempotent]`). See [`rpc_policy::balanced`].
///
/// ```no_run
/// # async fn example() -> Result<(), rpc_core::RpcError> {
/// let channel = rpc_transport::tcp::reconnecting("127.0.0.1:7000");
/// # let _ = channel;
/// # Ok(())
/// # }
/// ```
///
/// # Panics
///
/// When called outside a tokio runtime.
pub fn reconnecting(address: impl Into<String>) -> Channel {
    reconnecting_with(address, BalanceConfig::default())
}

/// [`reconnecting`] with a configuration.
///
/// # Panics
///
/// When called outside a tokio runtime.
pub fn reconnecting_with(address: impl Into<String>, config: BalanceConfig) -> Channel {
    balanced([address], config)
}

/// A channel that balances its calls over servers at `addresses` (`host:port` each),
/// keeping a connection to each, re-dialling those that fail, and sending no calls to a
/// server that reports `NotServing`. See [`rpc_policy::balanced`].
///
/// ```no_run
/// # async fn example() {
/// use rpc_transport::policy::BalanceConfig;
///
/// let channel = rpc_transport::tcp::balanced(
///     ["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"],
///     BalanceConfig::default(),
/// );
/// # let _ = channel;
/// # }
/// ```
///
/// # Panics
///
/// When called outside a tokio runtime.
pub fn balanced(
    addresses: impl IntoIterator<Item = impl Into<String>>,
    config: BalanceConfig,
) -> Channel {
    let addresses: Vec<String> = addresses.into_iter().map(Into::into).collect();
    let connector = TcpConnector {
        config: config.channel.clone(),
    };
    rpc_policy::balanced(addresses, connector, config)
}

/// A channel that balances its calls over every address `name` (`host:port`) resolves
/// to, looking it up again every `resolve_interval`: a Kubernetes headless service, say,
/// whose addresses are its replicas. Replicas that appear are dialled; those that vanish
/// are dropped once their calls finish.
///
/// # Panics
///
/// When called outside a tokio runtime.
pub fn balanced_dns(name: impl Into<String>, config: BalanceConfig) -> Channel {
    let connector = TcpConnector {
        config: config.channel.clone(),
    };
    rpc_policy::balanced(DnsResolver { name: name.into() }, connector, config)
}

/// Resolves a `host:port` name to the addresses it has now.
#[derive(Debug, Clone)]
pub struct DnsResolver {
    /// The name, as `host:port`.
    pub name: String,
}

impl Resolve for DnsResolver {
    fn resolve(&self) -> BoxFuture<'_, Result<Vec<String>, RpcError>> {
        Box::pin(async move {
            let mut addresses: Vec<String> = tokio::net::lookup_host(&self.name)
                .await?
                .map(|address| address.to_string())
                .collect();
            addresses.sort();
            addresses.dedup();
            Ok(addresses)
        })
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}
