//! TCP: connect a channel to a server, or accept connections with `crate::serve`.
//!
//! Every socket has `TCP_NODELAY` set: frames are coalesced by the connection's writer
//! already, and Nagle's algorithm would only add latency.

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
    stream.set_nodelay(true)?;
    let peer = Peer::Tcp(stream.peer_addr()?);
    let (reader, writer) = stream.into_split();
    Ok(framed::channel(reader, writer, peer, config))
}

impl Listener for TcpListener {
    type Reader = tokio::net::tcp::OwnedReadHalf;
    type Writer = tokio::net::tcp::OwnedWriteHalf;

    async fn accept(&mut self) -> std::io::Result<Accepted<Self::Reader, Self::Writer>> {
        let (stream, address) = TcpListener::accept(self).await?;
        // A socket that refuses the option still works, only with more latency.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%address, %error, "could not set TCP_NODELAY");
        }
        let (reader, writer) = stream.into_split();
        Ok(Accepted {
            reader,
            writer,
            peer: Peer::Tcp(address),
        })
    }
}
