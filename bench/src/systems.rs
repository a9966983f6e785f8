//! The systems under comparison, each serving `add(i64, i64) -> i64` and
//! `echo(Vec<u8>) -> Vec<u8>` over TCP, a Unix socket and in process:
//!
//! - `ours`: this toolkit, as a user would write it;
//! - `tarpc`: tarpc 0.38 with its bincode serde transport (TCP_NODELAY set), as its
//!   README shows it;
//! - `tonic`: tonic 0.13 (gRPC over HTTP/2) with prost messages, over TCP and Unix sockets
//!   (see `grpc.rs`);
//! - `raw`: length-prefixed frames on plain tokio sockets, pipelined, with no RPC layer at
//!   all: the limit.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::Semaphore;

/// Which implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stack {
    /// This toolkit.
    Ours,
    /// tarpc 0.38, bincode.
    Tarpc,
    /// Plain sockets, no RPC.
    Raw,
    /// tonic 0.13, gRPC over HTTP/2.
    Tonic,
}

/// Which way bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Net {
    /// TCP on 127.0.0.1.
    Tcp,
    /// A Unix socket.
    Unix,
    /// Inside the process.
    InProcess,
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Net::Tcp => "TCP",
            Net::Unix => "Unix socket",
            Net::InProcess => "in process",
        })
    }
}

/// One system: an implementation over one transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct System {
    /// The implementation.
    pub stack: Stack,
    /// The transport.
    pub net: Net,
}

impl System {
    /// `ours-tcp`, `tarpc-unix`, `raw-inprocess`, ...
    pub fn name(&self) -> String {
        let stack = match self.stack {
            Stack::Ours => "ours",
            Stack::Tarpc => "tarpc",
            Stack::Raw => "raw",
            Stack::Tonic => "tonic",
        };
        let net = match self.net {
            Net::Tcp => "tcp",
            Net::Unix => "unix",
            Net::InProcess => "inprocess",
        };
        format!("{stack}-{net}")
    }
}

// ---------------------------------------------------------------------------------------
// The services.

/// The benchmark service, with this toolkit.
#[rpc_core::service]
pub trait Bench {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Returns its argument.
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    /// Returns its argument, which travels without being copied.
    async fn echo_shared(&self, data: rpc_core::Bytes) -> rpc_core::Bytes;
}

struct OursImpl;

impl Bench for OursImpl {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }

    async fn echo_shared(&self, data: rpc_core::Bytes) -> rpc_core::Bytes {
        data
    }
}

/// The benchmark service, with tarpc.
#[tarpc::service]
pub trait TarpcBench {
    /// Adds two numbers.
    async fn add(a: i64, b: i64) -> i64;
    /// Returns its argument.
    async fn echo(data: Vec<u8>) -> Vec<u8>;
}

#[derive(Clone)]
struct TarpcImpl;

impl TarpcBench for TarpcImpl {
    async fn add(self, _: tarpc::context::Context, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn echo(self, _: tarpc::context::Context, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

// ---------------------------------------------------------------------------------------
// Servers.

/// Where a started server listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A TCP address.
    Tcp(std::net::SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
    /// In process: the client side builds the server with its connection.
    InProcess,
}

static NEXT_SOCKET: AtomicUsize = AtomicUsize::new(0);

fn socket_path() -> PathBuf {
    std::env::temp_dir().join(format!(
        "rpc-bench-{}-{}.sock",
        std::process::id(),
        NEXT_SOCKET.fetch_add(1, Ordering::Relaxed)
    ))
}

fn ours_server() -> rpc_core::Server {
    ours_server_with(rpc_core::ServerConfig::default())
}

/// This toolkit's bench server with `config`.
pub(crate) fn ours_server_with(config: rpc_core::ServerConfig) -> rpc_core::Server {
    rpc_core::Server::with_config(config).add_service(BenchServer::new(OursImpl))
}

/// Starts `system`'s server on the current runtime.
pub async fn start_server(system: System) -> std::io::Result<Endpoint> {
    match system.net {
        Net::InProcess => Ok(Endpoint::InProcess),
        Net::Tcp => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let address = listener.local_addr()?;
            match system.stack {
                Stack::Tonic => crate::grpc::serve_tcp(listener),
                stack => serve_on(listener, stack),
            }
            Ok(Endpoint::Tcp(address))
        }
        Net::Unix => {
            let path = socket_path();
            let _ = std::fs::remove_file(&path);
            let listener = tokio::net::UnixListener::bind(&path)?;
            match system.stack {
                Stack::Tonic => crate::grpc::serve_unix(listener),
                stack => serve_on(listener, stack),
            }
            Ok(Endpoint::Unix(path))
        }
    }
}

/// Serves `stack` on every connection `listener` accepts (with TCP_NODELAY on TCP).
fn serve_on<L: rpc_transport::Listener>(mut listener: L, stack: Stack) {
    match stack {
        // tonic serves its own listeners (see `start_server`).
        Stack::Tonic => {}
        Stack::Ours => {
            tokio::spawn(rpc_transport::serve(listener, ours_server()));
        }
        Stack::Tarpc | Stack::Raw => {
            tokio::spawn(async move {
                while let Ok(accepted) = rpc_transport::Listener::accept(&mut listener).await {
                    let stream = tokio::io::join(accepted.reader, accepted.writer);
                    tokio::spawn(serve_stream(stack, stream));
                }
            });
        }
    }
}

/// Serves one tarpc or raw connection.
async fn serve_stream<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(stack: Stack, stream: S) {
    match stack {
        Stack::Tarpc => {
            let transport =
                tarpc::serde_transport::new(Framed::new(stream, tarpc_codec()), Bincode::default());
            serve_tarpc(transport).await;
        }
        Stack::Raw => {
            let _ = raw::serve(stream).await;
        }
        Stack::Ours | Stack::Tonic => {}
    }
}

fn tarpc_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(64 << 20)
        .new_codec()
}

async fn serve_tarpc<T>(transport: T)
where
    T: tarpc::Transport<
            tarpc::Response<TarpcBenchResponse>,
            tarpc::ClientMessage<TarpcBenchRequest>,
        > + Send
        + 'static,
{
    use tarpc::server::Channel as _;
    tarpc::server::BaseChannel::with_defaults(transport)
        .execute(TarpcImpl.serve())
        .for_each(|response| async move {
            tokio::spawn(response);
        })
        .await;
}

// ---------------------------------------------------------------------------------------
// Clients.

/// A connection to one system's server.
#[derive(Clone)]
pub enum Conn {
    /// This toolkit.
    Ours(BenchClient),
    /// tarpc.
    Tarpc(TarpcBenchClient),
    /// Raw frames.
    Raw(Arc<tokio::sync::Mutex<raw::RawStream>>),
    /// tonic.
    Tonic(crate::grpc::TonicClient<tonic::transport::Channel>),
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Conn::Ours(_) => "Conn::Ours",
            Conn::Tarpc(_) => "Conn::Tarpc",
            Conn::Raw(_) => "Conn::Raw",
            Conn::Tonic(_) => "Conn::Tonic",
        })
    }
}

/// Connects to `system`'s server at `endpoint`. In process, the server side of the
/// connection is spawned on the current runtime.
pub async fn connect(system: System, endpoint: &Endpoint) -> std::io::Result<Conn> {
    match (system.stack, endpoint) {
        (Stack::Ours, Endpoint::Tcp(address)) => Ok(Conn::Ours(BenchClient::new(
            rpc_transport::tcp::connect(address)
                .await
                .map_err(std::io::Error::other)?,
        ))),
        (Stack::Ours, Endpoint::Unix(path)) => Ok(Conn::Ours(BenchClient::new(
            rpc_transport::unix::connect(path)
                .await
                .map_err(std::io::Error::other)?,
        ))),
        (Stack::Ours, Endpoint::InProcess) => Ok(Conn::Ours(BenchClient::new(
            rpc_transport::loopback::connect(&ours_server()),
        ))),
        (Stack::Tarpc, Endpoint::Tcp(address)) => {
            let stream = tokio::net::TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            Ok(tarpc_client(stream))
        }
        (Stack::Tarpc, Endpoint::Unix(path)) => {
            Ok(tarpc_client(tokio::net::UnixStream::connect(path).await?))
        }
        (Stack::Tarpc, Endpoint::InProcess) => {
            let (client_transport, server_transport) = tarpc::transport::channel::unbounded();
            tokio::spawn(serve_tarpc(server_transport));
            Ok(Conn::Tarpc(
                TarpcBenchClient::new(tarpc_client_config(), client_transport).spawn(),
            ))
        }
        (Stack::Raw, Endpoint::Tcp(address)) => {
            let stream = tokio::net::TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            Ok(raw_conn(stream))
        }
        (Stack::Raw, Endpoint::Unix(path)) => {
            Ok(raw_conn(tokio::net::UnixStream::connect(path).await?))
        }
        (Stack::Tonic, Endpoint::Tcp(address)) => Ok(Conn::Tonic(
            crate::grpc::connect_tcp(*address)
                .await
                .map_err(std::io::Error::other)?,
        )),
        (Stack::Tonic, Endpoint::Unix(path)) => Ok(Conn::Tonic(
            crate::grpc::connect_unix(path)
                .await
                .map_err(std::io::Error::other)?,
        )),
        (Stack::Tonic, Endpoint::InProcess) => {
            Err(std::io::Error::other("tonic is measured over sockets only"))
        }
        (Stack::Raw, Endpoint::InProcess) => {
            let (client_end, server_end) = tokio::io::duplex(256 * 1024);
            tokio::spawn(async move {
                let _ = raw::serve(server_end).await;
            });
            Ok(raw_conn(client_end))
        }
    }
}

fn tarpc_client_config() -> tarpc::client::Config {
    let mut config = tarpc::client::Config::default();
    config.max_in_flight_requests = 10_000;
    config
}

fn tarpc_client<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(stream: S) -> Conn {
    let transport =
        tarpc::serde_transport::new(Framed::new(stream, tarpc_codec()), Bincode::default());
    Conn::Tarpc(TarpcBenchClient::new(tarpc_client_config(), transport).spawn())
}

fn raw_conn<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(stream: S) -> Conn {
    Conn::Raw(Arc::new(tokio::sync::Mutex::new(raw::RawStream::new(
        stream,
    ))))
}

fn tarpc_context() -> tarpc::context::Context {
    let mut context = tarpc::context::current();
    context.deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    context
}

impl Conn {
    /// One `add` call. (Raw connections serve one caller at a time here.)
    pub async fn add(&self, a: i64, b: i64) -> i64 {
        match self {
            Conn::Ours(client) => client.add(a, b).await.unwrap_or(i64::MIN),
            Conn::Tarpc(client) => client.add(tarpc_context(), a, b).await.unwrap_or(i64::MIN),
            Conn::Raw(stream) => stream.lock().await.add(a, b).await.unwrap_or(i64::MIN),
            Conn::Tonic(client) => client
                .clone()
                .add(crate::grpc::AddRequest { a, b })
                .await
                .map_or(i64::MIN, |reply| reply.into_inner().sum),
        }
    }

    /// One `echo` call; returns the length that came back.
    pub async fn echo(&self, data: Vec<u8>) -> usize {
        match self {
            Conn::Ours(client) => client.echo(data).await.map_or(0, |back| back.len()),
            Conn::Tarpc(client) => client
                .echo(tarpc_context(), data)
                .await
                .map_or(0, |back| back.len()),
            Conn::Raw(stream) => stream.lock().await.echo(&data).await.unwrap_or(0),
            Conn::Tonic(client) => client
                .clone()
                .echo(crate::grpc::Blob { data })
                .await
                .map_or(0, |reply| reply.into_inner().data.len()),
        }
    }

    /// One echo of a shared buffer, for the systems that can send one without copying it
    /// (ours with `Bytes`, raw sockets); `None` for the others.
    pub async fn echo_shared(&self, data: rpc_core::Bytes) -> Option<usize> {
        match self {
            Conn::Ours(client) => Some(client.echo_shared(data).await.map_or(0, |back| back.len())),
            Conn::Raw(stream) => Some(stream.lock().await.echo(&data).await.unwrap_or(0)),
            Conn::Tarpc(_) | Conn::Tonic(_) => None,
        }
    }

    /// `calls` `add` calls with `in_flight` of them outstanding at any time. Returns how
    /// many returned the right sum.
    pub async fn pipelined(&self, in_flight: usize, calls: usize) -> usize {
        if let Conn::Raw(stream) = self {
            return stream
                .lock()
                .await
                .pipelined(in_flight, calls)
                .await
                .unwrap_or(0);
        }
        let mut workers = tokio::task::JoinSet::new();
        for worker in 0..in_flight {
            let conn = self.clone();
            workers.spawn(async move {
                let mut correct = 0;
                for call in (worker..calls).step_by(in_flight) {
                    let call = call as i64;
                    if conn.add(call, 1).await == call + 1 {
                        correct += 1;
                    }
                }
                correct
            });
        }
        let mut correct = 0;
        while let Some(done) = workers.join_next().await {
            correct += done.unwrap_or(0);
        }
        correct
    }
}

/// Length-prefixed frames over a byte stream, with no RPC layer: the cost floor.
///
/// A frame is `len:u32 body`; a request body is `a:i64 b:i64` (add) or the bytes to echo
/// (tagged by length: 16 bytes means add). The server answers add with `sum:i64` and echo
/// with the same bytes.
pub mod raw {
    use super::*;

    const BUFFER: usize = 64 * 1024;

    /// Serves frames until the peer closes the stream.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> std::io::Result<()> {
        let (reader, writer) = tokio::io::split(stream);
        let mut reader = BufReader::with_capacity(BUFFER, reader);
        let mut writer = BufWriter::with_capacity(BUFFER, writer);
        let mut body = Vec::new();
        loop {
            let len = match reader.read_u32().await {
                Ok(len) => len as usize,
                Err(_) => return Ok(()),
            };
            body.resize(len, 0);
            reader.read_exact(&mut body).await?;
            if len == 16 {
                let a = i64::from_be_bytes(body[..8].try_into().unwrap_or_default());
                let b = i64::from_be_bytes(body[8..].try_into().unwrap_or_default());
                writer.write_u32(8).await?;
                writer.write_i64(a.wrapping_add(b)).await?;
            } else {
                writer.write_u32(len as u32).await?;
                writer.write_all(&body).await?;
            }
            // Coalesce answers while more requests are already buffered.
            if reader.buffer().is_empty() {
                writer.flush().await?;
            }
        }
    }

    /// The client end of a raw connection.
    pub struct RawStream {
        reader: BufReader<tokio::io::ReadHalf<Box<dyn Stream>>>,
        writer: BufWriter<tokio::io::WriteHalf<Box<dyn Stream>>>,
    }

    /// Any byte stream.
    pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
    impl<S: AsyncRead + AsyncWrite + Send + Unpin> Stream for S {}

    impl fmt::Debug for RawStream {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("RawStream")
        }
    }

    impl RawStream {
        /// Wraps a connected stream.
        pub fn new<S: Stream + 'static>(stream: S) -> Self {
            let stream: Box<dyn Stream> = Box::new(stream);
            let (reader, writer) = tokio::io::split(stream);
            RawStream {
                reader: BufReader::with_capacity(BUFFER, reader),
                writer: BufWriter::with_capacity(BUFFER, writer),
            }
        }

        async fn send_add(&mut self, a: i64, b: i64) -> std::io::Result<()> {
            self.writer.write_u32(16).await?;
            self.writer.write_i64(a).await?;
            self.writer.write_i64(b).await
        }

        async fn read_sum(&mut self) -> std::io::Result<i64> {
            let _len = self.reader.read_u32().await?;
            self.reader.read_i64().await
        }

        /// One add, waiting for its answer.
        pub async fn add(&mut self, a: i64, b: i64) -> std::io::Result<i64> {
            self.send_add(a, b).await?;
            self.writer.flush().await?;
            self.read_sum().await
        }

        /// One echo, waiting for its answer.
        pub async fn echo(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.writer.write_u32(data.len() as u32).await?;
            self.writer.write_all(data).await?;
            self.writer.flush().await?;
            let len = self.reader.read_u32().await? as usize;
            let mut back = vec![0; len];
            self.reader.read_exact(&mut back).await?;
            Ok(back.len())
        }

        /// `calls` adds with `in_flight` outstanding: one writer and one reader, a
        /// semaphore as the window.
        pub async fn pipelined(
            &mut self,
            in_flight: usize,
            calls: usize,
        ) -> std::io::Result<usize> {
            let window = Semaphore::new(in_flight);
            let RawStream { reader, writer } = self;
            let sending = async {
                for call in 0..calls {
                    if window.try_acquire().map(|permit| permit.forget()).is_err() {
                        writer.flush().await?;
                        if let Ok(permit) = window.acquire().await {
                            permit.forget();
                        }
                    }
                    let call = call as i64;
                    writer.write_u32(16).await?;
                    writer.write_i64(call).await?;
                    writer.write_i64(1).await?;
                }
                writer.flush().await
            };
            let receiving = async {
                let mut correct = 0;
                for call in 0..calls {
                    let _len = reader.read_u32().await?;
                    if reader.read_i64().await? == call as i64 + 1 {
                        correct += 1;
                    }
                    window.add_permits(1);
                }
                Ok::<usize, std::io::Error>(correct)
            };
            let (sent, correct) = tokio::join!(sending, receiving);
            sent?;
            correct
        }
    }
}
