//! Unix domain sockets: connect a channel to a server, or accept connections with
//! `crate::serve`. The server sees the client's credentials (uid, gid, pid) in
//! `Context::peer()`.

use std::path::Path;

use rpc_core::transport::UnixCredentials;
use rpc_core::{Channel, ChannelConfig, Peer, RpcError};
use rpc_policy::BalanceConfig;
use tokio::net::{UnixListener, UnixStream};

use crate::framed;
use crate::serve::{Accepted, Listener};

/// Connects to a server listening at `path` with the default [`ChannelConfig`].
///
/// ```no_run
/// # async fn example() -> Result<(), rpc_core::RpcError> {
/// let channel = rpc_transport::unix::connect("/run/calc.sock").await?;
/// # let _ = channel;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// `RpcError::Io` when the connection cannot be established.
pub async fn connect(path: impl AsRef<Path>) -> Result<Channel, RpcError> {
    connect_with(path, ChannelConfig::default()).await
}

/// Connects to a server listening at `path` with the given configuration.
///
/// # Errors
///
/// `RpcError::Io` when the connection cannot be established.
pub async fn connect_with(
    path: impl AsRef<Path>,
    config: ChannelConfig,
) -> Result<Channel, RpcError> {
    let stream = UnixStream::connect(path.as_ref()).await?;
    let peer = peer_of(&stream);
    let (reader, writer) = stream.into_split();
    Ok(framed::channel(reader, writer, peer, config))
}

/// A channel to the server listening at `path` that dials again, with backoff, when its
/// connection drops (a server restarting, say); calls made meanwhile wait for it within
/// their deadline. See [`tcp::reconnecting`](crate::tcp::reconnecting).
///
/// # Panics
///
/// When called outside a tokio runtime.
pub fn reconnecting(path: impl AsRef<Path>) -> Channel {
    reconnecting_with(path, BalanceConfig::default())
}

/// [`reconnecting`] with a configuration.
///
/// # Panics
///
/// When called outside a tokio runtime.
pub fn reconnecting_with(path: impl AsRef<Path>, config: BalanceConfig) -> Channel {
    let path = path.as_ref().display().to_string();
    let channel_config = config.channel.clone();
    let connector = move |path: String| connect_with(path, channel_config.clone());
    rpc_policy::balanced(vec![path], connector, config)
}

fn peer_of(stream: &UnixStream) -> Peer {
    let path = stream
        .peer_addr()
        .ok()
        .and_then(|address| address.as_pathname().map(Path::to_path_buf));
    let credentials = stream.peer_cred().ok().map(|credentials| UnixCredentials {
        uid: credentials.uid(),
        gid: credentials.gid(),
        pid: credentials.pid(),
    });
    Peer::Unix { path, credentials }
}

impl Listener for UnixListener {
    type Reader = tokio::net::unix::OwnedReadHalf;
    type Writer = tokio::net::unix::OwnedWriteHalf;

    async fn accept(&mut self) -> std::io::Result<Accepted<Self::Reader, Self::Writer>> {
        let (stream, _address) = UnixListener::accept(self).await?;
        let peer = peer_of(&stream);
        let (reader, writer) = stream.into_split();
        Ok(Accepted {
            reader,
            writer,
            peer,
        })
    }
}
