//! Shared fixtures for the cross-crate tests: test services, and a server that can be
//! started on any transport and reached with a channel or with a raw socket.

// Test support: a failed setup step should stop the test right there. clippy's
// `allow-unwrap-in-tests` does not cover this crate (rust-clippy#16122).
#![allow(clippy::unwrap_used)]

pub mod alloc;
pub mod fuzzing;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rpc_core::{Channel, ChannelConfig, Context, Server, service};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// An application error that travels as a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MathError {
    /// Division by zero.
    DivideByZero,
}

/// The calculator from the public contract.
#[service]
pub trait Calculator {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Divides, with an application error for zero.
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// Describes the caller's peer.
    async fn whoami(&self, cx: &Context) -> String;
}

/// The calculator's implementation.
#[derive(Debug, Default)]
pub struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            Err(MathError::DivideByZero)
        } else {
            Ok(a / b)
        }
    }

    async fn whoami(&self, cx: &Context) -> String {
        cx.peer().to_string()
    }
}

/// A service whose handlers misbehave on request, and report what happened to them.
#[service]
pub trait Probe {
    /// Sleeps, then returns how long it slept.
    async fn sleep(&self, millis: u64) -> u64;
    /// Panics with `message`.
    async fn panic(&self, message: String) -> u32;
    /// Returns its argument.
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    /// Returns a buffer of `len` bytes.
    async fn fill(&self, len: u64) -> Vec<u8>;
    /// Returns the metadata value under `key`.
    async fn metadata(&self, cx: &Context, key: String) -> Option<String>;
    /// Returns how many milliseconds the handler has before its deadline.
    async fn deadline_millis(&self, cx: &Context) -> Option<u64>;
    /// Waits until dropped (the server counts the drop).
    async fn hang(&self) -> ();
}

/// Counters of what happened to `Probe`'s handlers.
#[derive(Debug, Default)]
pub struct ProbeStats {
    /// Handlers of `hang` started.
    pub hang_started: AtomicUsize,
    /// Handlers of `hang` dropped before finishing.
    pub hang_dropped: AtomicUsize,
    /// Handlers of `sleep` running right now.
    pub sleeping: AtomicUsize,
    /// The most `sleep` handlers seen running at once.
    pub max_sleeping: AtomicUsize,
}

/// `Probe`'s implementation.
#[derive(Debug, Default, Clone)]
pub struct ProbeImpl {
    /// Shared with the test.
    pub stats: Arc<ProbeStats>,
}

struct DropCounter(Arc<ProbeStats>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.hang_dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl Probe for ProbeImpl {
    async fn sleep(&self, millis: u64) -> u64 {
        let now = self.stats.sleeping.fetch_add(1, Ordering::SeqCst) + 1;
        self.stats.max_sleeping.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(millis)).await;
        self.stats.sleeping.fetch_sub(1, Ordering::SeqCst);
        millis
    }

    async fn panic(&self, message: String) -> u32 {
        panic!("{message}");
    }

    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }

    async fn fill(&self, len: u64) -> Vec<u8> {
        vec![7; usize::try_from(len).unwrap_or(usize::MAX)]
    }

    async fn metadata(&self, cx: &Context, key: String) -> Option<String> {
        cx.metadata(&key).map(str::to_owned)
    }

    async fn deadline_millis(&self, cx: &Context) -> Option<u64> {
        cx.deadline().map(|deadline| {
            let left = deadline.saturating_duration_since(Instant::now());
            u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
        })
    }

    async fn hang(&self) {
        self.stats.hang_started.fetch_add(1, Ordering::SeqCst);
        let _counter = DropCounter(self.stats.clone());
        std::future::pending::<()>().await;
    }
}

/// The transports every behaviour is checked over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// In process.
    Loopback,
    /// TCP on 127.0.0.1.
    Tcp,
    /// A Unix socket in the temp directory.
    Unix,
}

impl Transport {
    /// All of them.
    pub const ALL: [Transport; 3] = [Transport::Loopback, Transport::Tcp, Transport::Unix];
    /// The socket transports (for tests that need raw bytes on a socket).
    pub const SOCKETS: [Transport; 2] = [Transport::Tcp, Transport::Unix];
}

/// A raw byte stream to a test server, for speaking (or breaking) the protocol by hand.
pub trait RawStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> RawStream for T {}

enum Address {
    Loopback,
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

/// A server running on one transport until shut down or dropped.
pub struct TestServer {
    /// The served services.
    pub server: Server,
    /// Which transport it listens on.
    pub transport: Transport,
    address: Address,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

static NEXT_SOCKET: AtomicUsize = AtomicUsize::new(0);

impl TestServer {
    /// Serves `server` on `transport` (with graceful shutdown wired to [`TestServer::shutdown`]).
    pub async fn start(server: Server, transport: Transport) -> TestServer {
        let (stop, stopped) = oneshot::channel::<()>();
        let signal = async move {
            let _ = stopped.await;
        };
        let (address, task) = match transport {
            Transport::Loopback => (
                Address::Loopback,
                tokio::spawn(async move {
                    signal.await;
                    Ok(())
                }),
            ),
            Transport::Tcp => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let address = listener.local_addr().unwrap();
                let serving =
                    rpc_transport::serve(listener, server.clone()).with_graceful_shutdown(signal);
                (Address::Tcp(address), tokio::spawn(serving))
            }
            Transport::Unix => {
                let path = std::env::temp_dir().join(format!(
                    "rpc-test-{}-{}.sock",
                    std::process::id(),
                    NEXT_SOCKET.fetch_add(1, Ordering::SeqCst)
                ));
                let _ = std::fs::remove_file(&path);
                let listener = tokio::net::UnixListener::bind(&path).unwrap();
                let serving =
                    rpc_transport::serve(listener, server.clone()).with_graceful_shutdown(signal);
                (Address::Unix(path), tokio::spawn(serving))
            }
        };
        TestServer {
            server,
            transport,
            address,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A new channel to the server.
    pub async fn connect(&self) -> Channel {
        self.connect_with(ChannelConfig::default()).await
    }

    /// A new channel to the server with a configuration.
    pub async fn connect_with(&self, config: ChannelConfig) -> Channel {
        match &self.address {
            Address::Loopback => rpc_transport::loopback::connect_with(&self.server, config),
            Address::Tcp(address) => rpc_transport::tcp::connect_with(address, config)
                .await
                .unwrap(),
            Address::Unix(path) => rpc_transport::unix::connect_with(path, config)
                .await
                .unwrap(),
        }
    }

    /// A raw byte stream to the server (sockets only).
    pub async fn raw(&self) -> Box<dyn RawStream> {
        match &self.address {
            Address::Loopback => panic!("raw streams need a socket transport"),
            Address::Tcp(address) => {
                Box::new(tokio::net::TcpStream::connect(address).await.unwrap())
            }
            Address::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await.unwrap()),
        }
    }

    /// Fires the graceful-shutdown signal and waits for `serve` to return.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap(),
            None => Ok(()),
        }
    }

    /// Fires the graceful-shutdown signal without waiting.
    pub fn start_shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task
            .take()
            .unwrap_or_else(|| tokio::spawn(async { Ok(()) }))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        if let Address::Unix(path) = &self.address {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A server with `Calculator` and `Probe`, and the probe's counters.
pub fn test_server() -> (Server, Arc<ProbeStats>) {
    test_server_with(rpc_core::ServerConfig::default())
}

/// Like [`test_server`], with a configuration.
pub fn test_server_with(config: rpc_core::ServerConfig) -> (Server, Arc<ProbeStats>) {
    let probe = ProbeImpl::default();
    let stats = probe.stats.clone();
    let server = Server::with_config(config)
        .add_service(CalculatorServer::new(Calc))
        .add_service(ProbeServer::new(probe));
    (server, stats)
}

/// Waits until `condition` holds, polling every few milliseconds, for at most 5 s.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let limit = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < limit, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads from `stream` until the peer closes it, failing the test if that takes longer than
/// `limit`. Returns what was read.
pub async fn read_until_closed(
    stream: &mut (impl AsyncRead + Unpin + ?Sized),
    limit: Duration,
) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let reading = async {
        let mut chunk = [0_u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(limit, reading)
        .await
        .expect("the server should have closed the connection");
    received
}

/// A fake server on `transport` that accepts one connection, runs `behaviour` on it, and
/// returns a channel connected to it.
pub async fn fake_server<F, Fut>(transport: Transport, behaviour: F) -> rpc_core::Channel
where
    F: FnOnce(Box<dyn RawStream>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    fake_server_with(transport, ChannelConfig::default(), behaviour).await
}

/// [`fake_server`], with the channel's configuration.
pub async fn fake_server_with<F, Fut>(
    transport: Transport,
    config: ChannelConfig,
    behaviour: F,
) -> rpc_core::Channel
where
    F: FnOnce(Box<dyn RawStream>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    match transport {
        Transport::Tcp => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                behaviour(Box::new(stream)).await;
            });
            rpc_transport::tcp::connect_with(address, config)
                .await
                .unwrap()
        }
        Transport::Unix => {
            let path = std::env::temp_dir().join(format!(
                "rpc-fake-{}-{:?}.sock",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_file(&path);
            let listener = tokio::net::UnixListener::bind(&path).unwrap();
            tokio::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                behaviour(Box::new(stream)).await;
            });
            let channel = rpc_transport::unix::connect_with(&path, config)
                .await
                .unwrap();
            let _ = std::fs::remove_file(&path);
            channel
        }
        Transport::Loopback => panic!("a fake server needs a socket"),
    }
}

/// A well-formed request frame for `service.method` with an encoded argument tuple.
pub fn request_frame<A: Serialize>(call_id: u32, service: &str, method: &str, args: &A) -> Vec<u8> {
    request_bytes(call_id, service, method, None, &[], &encoded(args))
}

/// `value`'s encoding.
pub fn encoded<A: Serialize>(value: &A) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    rpc_core::codec::encode_into(&mut buf, value).unwrap();
    buf.to_vec()
}

/// What a client sends first to open call 1 of `service.method` with a request stream:
/// its preface and the request (no arguments), the stream's items left to the caller.
pub fn preface_and_streaming_request(service: &str, method: &str) -> bytes::BytesMut {
    let mut bytes = bytes::BytesMut::from(&rpc_core::wire::PREFACE[..]);
    let head = rpc_core::wire::RequestHead {
        call_id: 1,
        service_id: rpc_core::wire::wire_id(service),
        method_id: rpc_core::wire::wire_id(method),
        deadline_micros: None,
        request_stream: true,
    };
    rpc_core::wire::encode_request(&mut bytes, &head, &[], 1 << 20, |_| Ok(())).unwrap();
    bytes
}

/// A request frame built by hand: `service.method` with a deadline, metadata and a payload
/// given as raw bytes (which may be anything, well formed or not).
pub fn request_bytes(
    call_id: u32,
    service: &str,
    method: &str,
    deadline_micros: Option<u64>,
    metadata: &[(String, String)],
    payload: &[u8],
) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    let head = rpc_core::wire::RequestHead {
        call_id,
        service_id: rpc_core::wire::wire_id(service),
        method_id: rpc_core::wire::wire_id(method),
        deadline_micros,
        request_stream: false,
    };
    let start = rpc_core::wire::start_request(&mut buf, &head, metadata).unwrap();
    buf.extend_from_slice(payload);
    rpc_core::wire::finish_frame(&mut buf, start, usize::MAX).unwrap();
    buf.to_vec()
}

/// Reads what a server sends on a raw stream, from its preface on, until responses to all of
/// `call_ids` have arrived; other frames are skipped. Fails the test if the connection
/// closes first or `limit` passes.
pub async fn read_responses(
    stream: &mut (impl AsyncRead + Unpin + ?Sized),
    call_ids: &[u32],
    limit: Duration,
) -> std::collections::BTreeMap<u32, (rpc_core::wire::Status, bytes::Bytes)> {
    use rpc_core::wire::{Frame, FrameDecoder};
    use tokio::io::AsyncReadExt;
    let mut decoder = FrameDecoder::new(1 << 24);
    let mut buf = bytes::BytesMut::new();
    let mut answers = std::collections::BTreeMap::new();
    let reading = async {
        while !call_ids.iter().all(|call_id| answers.contains_key(call_id)) {
            if let Some(frame) = decoder.decode(&mut buf).unwrap() {
                if let Frame::Response {
                    call_id,
                    status,
                    payload,
                } = Frame::parse(frame).unwrap()
                {
                    answers.insert(call_id, (status, payload));
                }
                continue;
            }
            let read = stream.read_buf(&mut buf).await.unwrap();
            assert_ne!(read, 0, "the connection closed before the answers came");
        }
    };
    tokio::time::timeout(limit, reading)
        .await
        .expect("the answers came in time");
    answers
}

/// A TCP server running in a runtime of its own on its own thread, so that it can be
/// killed outright (every task and socket gone at once, as when a process dies) or shut
/// down gracefully, and started again on the same port.
#[derive(Debug)]
pub struct Replica {
    /// Where it listens.
    pub address: std::net::SocketAddr,
    /// The served services (shares its health reporter).
    pub server: Server,
    kill: Option<oneshot::Sender<()>>,
    graceful: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Replica {
    /// Serves `server` on `address` (port 0 for any free port).
    pub fn start(server: Server, address: std::net::SocketAddr) -> Replica {
        let (kill, killed) = oneshot::channel::<()>();
        let (graceful, graceful_signal) = oneshot::channel::<()>();
        let (bound, bound_address) = std::sync::mpsc::channel();
        let served = server.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(address).await.unwrap();
                bound.send(listener.local_addr().unwrap()).unwrap();
                let signal = async move {
                    let _ = graceful_signal.await;
                };
                tokio::select! {
                    _ = rpc_transport::serve(listener, served).with_graceful_shutdown(signal) => {}
                    _ = killed => {}
                }
            });
            // Dropping the runtime drops every connection task and closes every socket.
        });
        Replica {
            address: bound_address.recv().unwrap(),
            server,
            kill: Some(kill),
            graceful: Some(graceful),
            thread: Some(thread),
        }
    }

    /// Kills it: every connection closes at once, calls in flight included.
    pub async fn kill(mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        self.join().await;
    }

    /// Starts a graceful shutdown and returns a handle that waits until it has finished.
    pub fn start_shutdown(mut self) -> JoinHandle<()> {
        if let Some(graceful) = self.graceful.take() {
            let _ = graceful.send(());
        }
        tokio::spawn(async move { self.join().await })
    }

    async fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join().unwrap())
                .await
                .unwrap();
        }
    }

    fn stop_with_kill(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.stop_with_kill();
    }
}

/// Whether `frames` hold a GOAWAY whose reason is `why`.
pub fn went_away_for(frames: &[rpc_core::wire::Frame], why: &str) -> bool {
    frames
        .iter()
        .any(|frame| matches!(frame, rpc_core::wire::Frame::GoAway { reason, .. } if reason == why))
}

/// The frames in `bytes` (what the server sent after its preface), up to the first that
/// does not decode.
pub fn frames_in(bytes: &[u8]) -> Vec<rpc_core::wire::Frame> {
    use rpc_core::wire::{Frame, FrameDecoder};
    let mut decoder = FrameDecoder::after_preface(1 << 24);
    let mut buf = bytes::BytesMut::from(bytes);
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        frames.push(Frame::parse(frame).unwrap());
    }
    frames
}
