//! In-process loopback: a channel connected straight to a `Server`, for tests and for
//! services living in the same process.
//!
//! The two ends are joined by an in-memory byte pipe and run the same framing and codec as
//! the sockets, so a test over loopback catches the same serialization mistakes.

use rpc_core::{Channel, ChannelConfig, Peer, Server, Shutdown};

use crate::framed;

/// Bytes buffered in each direction of the pipe before the writer waits for the reader.
const PIPE_CAPACITY: usize = 256 * 1024;

/// Connects a new channel to `server` in this process, with the default [`ChannelConfig`].
///
/// ```
/// use rpc_core::{service, Server};
///
/// #[service]
/// pub trait Echo {
///     async fn echo(&self, text: String) -> String;
/// }
///
/// struct Impl;
/// impl Echo for Impl {
///     async fn echo(&self, text: String) -> String { text }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::RpcError> {
/// let server = Server::new().add_service(EchoServer::new(Impl));
/// let client = EchoClient::new(rpc_transport::loopback::connect(&server));
/// assert_eq!(client.echo("hi".to_owned()).await?, "hi");
/// # Ok(())
/// # }
/// ```
///
/// # Panics
///
/// When called outside a tokio runtime.
pub fn connect(server: &Server) -> Channel {
    connect_with(server, ChannelConfig::default())
}

/// Connects a new channel to `server` in this process, with the given configuration.
///
/// # Panics
///
/// When called outside a tokio runtime.
pub fn connect_with(server: &Server, config: ChannelConfig) -> Channel {
    connect_as(server, config, Peer::Loopback)
}

/// Connects a new channel to `server` in this process, whose calls the server sees as
/// coming from `peer` (a front door that carries calls from elsewhere, such as HTTP, names
/// their real origin this way).
///
/// # Panics
///
/// When called outside a tokio runtime.
pub fn connect_as(server: &Server, config: ChannelConfig, peer: Peer) -> Channel {
    let (client_end, server_end) = tokio::io::duplex(PIPE_CAPACITY);
    let (server_reader, server_writer) = tokio::io::split(server_end);
    let server_connection = framed::server_connection(server_reader, server_writer, peer, server);
    let server = server.clone();
    tokio::spawn(async move {
        server
            .serve_connection(server_connection, Shutdown::new())
            .await;
    });
    let (client_reader, client_writer) = tokio::io::split(client_end);
    framed::channel(client_reader, client_writer, Peer::Loopback, config)
}
