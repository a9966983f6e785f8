//! TCP: connect a channel to a server, or accept connections with `crate::serve`.
//!
//! Every socket has `TCP_NODELAY` set (frames are coalesced by the connection's writer
//! already, and Nagle's algorithm would only add latency) and TCP keepalive on.

use std::time::Duration;

use rpc_core::{Channel, ChannelConfig, Peer, RpcError};
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
