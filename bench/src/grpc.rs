//! tonic (gRPC over HTTP/2), serving the bench's `add` and `echo` as its generated code
//! would: the messages are prost structs, the client and server come from `build.rs`
//! (`tonic_build::manual`, so no protoc is needed), and the server is tonic's own
//! `Server` with TCP_NODELAY set on every connection.

use std::path::Path;

use hyper_util::rt::TokioIo;
use tokio_stream::StreamExt;

/// `add`'s request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AddRequest {
    /// The first number.
    #[prost(int64, tag = "1")]
    pub a: i64,
    /// The second number.
    #[prost(int64, tag = "2")]
    pub b: i64,
}

/// `add`'s reply.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AddReply {
    /// `a + b`.
    #[prost(int64, tag = "1")]
    pub sum: i64,
}

/// `echo`'s request and reply.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Blob {
    /// The bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
}

#[allow(missing_docs, unreachable_pub, clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/bench.Bench.rs"));
}

pub use generated::bench_client::BenchClient as TonicClient;
use generated::bench_server::{Bench, BenchServer};

/// The service.
#[derive(Debug)]
struct TonicImpl;

#[tonic::async_trait]
impl Bench for TonicImpl {
    async fn add(
        &self,
        request: tonic::Request<AddRequest>,
    ) -> Result<tonic::Response<AddReply>, tonic::Status> {
        let AddRequest { a, b } = request.into_inner();
        Ok(tonic::Response::new(AddReply {
            sum: a.wrapping_add(b),
        }))
    }

    async fn echo(
        &self,
        request: tonic::Request<Blob>,
    ) -> Result<tonic::Response<Blob>, tonic::Status> {
        Ok(tonic::Response::new(request.into_inner()))
    }
}

fn server() -> tonic::transport::server::Router {
    tonic::transport::Server::builder().add_service(
        BenchServer::new(TonicImpl)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20),
    )
}

/// Serves tonic on every connection `listener` accepts.
pub fn serve_tcp(listener: tokio::net::TcpListener) {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|stream| {
        let stream = stream?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(stream)
    });
    tokio::spawn(server().serve_with_incoming(incoming));
}

/// Serves tonic on every connection `listener` accepts.
pub fn serve_unix(listener: tokio::net::UnixListener) {
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tokio::spawn(server().serve_with_incoming(incoming));
}

fn client(channel: tonic::transport::Channel) -> TonicClient<tonic::transport::Channel> {
    TonicClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// A client over TCP.
///
/// # Errors
///
/// When the connection cannot be made.
pub async fn connect_tcp(
    address: std::net::SocketAddr,
) -> Result<TonicClient<tonic::transport::Channel>, tonic::transport::Error> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(client(channel))
}

/// A client over a Unix socket.
///
/// # Errors
///
/// When the connection cannot be made.
pub async fn connect_unix(
    path: &Path,
) -> Result<TonicClient<tonic::transport::Channel>, tonic::transport::Error> {
    let path = path.to_owned();
    let channel = tonic::transport::Endpoint::from_static("http://unix.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(client(channel))
}
