//! Limits and timeouts of servers and channels, and the client's interceptor. Every limit
//! has a default; none is opt-in.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::call::MethodSpec;
use crate::wire::{DEFAULT_MAX_FRAME, DEFAULT_MAX_METADATA};

/// How a server treats each connection.
///
/// ```
/// use std::time::Duration;
/// use rpc_core::{Server, ServerConfig};
///
/// let mut config = ServerConfig::default();
/// config.max_frame_size = 1024 * 1024;
/// config.idle_timeout = Some(Duration::from_secs(60));
/// let server = Server::with_config(config);
/// assert_eq!(server.config().max_frame_size, 1024 * 1024);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Largest frame accepted or sent, length prefix excluded. Default 16 MiB. A request
    /// over it closes the connection that sent it; a response over it fails that call.
    pub max_frame_size: usize,
    /// Largest metadata section of one request. Default 8 KiB.
    pub max_metadata_size: usize,
    /// Handlers running at once per connection. Past it the server stops reading from that
    /// connection until one finishes (backpressure). Default 200. On a connection whose
    /// client serves too (calls both ways), the server cannot stop reading (the answers to
    /// its own calls come behind the client's requests): as many requests again wait for a
    /// handler, and past them a request is refused with `ResourceExhausted`.
    pub max_concurrent_calls: usize,
    /// Time a new connection has to send its preface. Default 10 s.
    pub preface_timeout: Duration,
    /// Time the rest of a frame has to arrive once its first byte has. Default 30 s.
    pub frame_timeout: Duration,
    /// A connection with no call in flight and no frame received for this long (up to twice
    /// this long) is closed. Default 10 minutes; `None` keeps idle connections open.
    pub idle_timeout: Option<Duration>,
    /// A write that makes no progress for this long closes the connection, and a stream
    /// the peer grants no credit for this long is ended with `ResourceExhausted` (so a peer
    /// that never reads cannot hold its producer). Default 30 s.
    pub write_timeout: Duration,
    /// After a graceful shutdown starts, in-flight calls get this long to finish before
    /// their connections are closed. Default 30 s.
    pub shutdown_grace_period: Duration,
    /// Items of a client's request stream the server takes before its handler reads them
    /// (the flow-control window). Default 64.
    pub stream_window: u32,
    /// Bytes of a client's request stream the server takes before its handler reads them:
    /// the window counted in bytes as well as items, so a stream of large items cannot
    /// park `stream_window` frames' worth of memory. A sender starts an item while any of
    /// this credit is left, so a stream buffers at most this plus one item. Default 4 MiB.
    pub stream_window_bytes: u32,
    /// Errors a connection may cause within 10 seconds (requests the server refuses, frames
    /// for calls it does not have) before the server closes it, so that a flood of cheap bad
    /// requests costs bounded work. Default 1024.
    pub error_budget: u32,
    /// Connections served at once. At the limit, `serve` closes the oldest connection with
    /// no call in flight (a GOAWAY tells its client why) to let a new one in, so idle
    /// connections never lock anyone out; when every connection is busy it stops accepting
    /// until one closes (the kernel's backlog holds the rest). Default 1024.
    pub max_connections: usize,
    /// While calls run on a connection, the server pings the client this often, and closes
    /// the connection (dropping its handlers) when the client sends nothing at all for
    /// `keepalive_timeout` after a ping: a client that vanished without closing cannot hold
    /// handlers for ever. Default 2 minutes; `None` disables.
    pub keepalive_interval: Option<Duration>,
    /// How long the client has to answer a keepalive ping. Default 20 s.
    pub keepalive_timeout: Duration,
    /// Connections older than this (give or take 10 %, so a fleet's connections do not all
    /// age out at once) are closed gracefully: a GOAWAY saying "max connection age", then
    /// their calls get `shutdown_grace_period` to finish. Clients reconnect, which spreads
    /// them over servers added since. Default `None` (connections live as long as they are
    /// used).
    pub max_connection_age: Option<Duration>,
    /// Connections served at once from one peer (one IPv4 address or IPv6 /64 for TCP and
    /// TLS, one user id for Unix sockets), so one client cannot take every slot of
    /// `max_connections`. At the limit, `serve` closes that peer's oldest connection with no
    /// call in flight to let its new one in (a fleet behind one NAT or load balancer shares
    /// an address); when all of them are busy, it answers the new connection with a GOAWAY
    /// saying why and closes it. Default 256.
    pub max_connections_per_peer: usize,
    /// How long graceful shutdown keeps serving after turning the health service to
    /// `NotServing`, so that balanced clients watching it stop sending calls here before
    /// the server stops taking them (skipped when no connection is open). Default 500 ms.
    pub health_drain_delay: Duration,
    /// Record call and connection metrics through the `metrics` facade (see
    /// `rpc_core::observe`). Default `false`: no clock reads or metric lookups on the hot
    /// path.
    pub metrics: bool,
    /// The furthest deadline a request may set: one further away (up to 2^64 µs fits in
    /// a request) is shortened to this, so the handler's `Context::deadline` and the call's
    /// end are the server's limit, not the client's wish. Default 24 hours; `None` takes
    /// every deadline as sent (one too far to represent is no deadline).
    pub max_deadline: Option<Duration>,
    /// The most bytes all of this server's connections may hold in their read buffers
    /// together (frames arriving, and room reserved for them), beyond the one small read
    /// (256 bytes to 64 KiB, as its reads of small frames need) each may always make. A
    /// connection whose next read would take the total past
    /// it is closed with `ResourceExhausted`, so peers that each start a large frame and send
    /// it slowly cannot together exhaust memory, while small calls keep flowing. A reader
    /// reserves ahead only as much as its peer has sent, so idle connections hold little.
    /// Default 256 MiB.
    pub max_buffered_bytes: usize,
    /// Compress larger frames to clients that agree (their configuration asks for
    /// compression too). Default `None`: frames travel as they are, and compressed ones are
    /// refused.
    pub compression: Option<Compression>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame_size: DEFAULT_MAX_FRAME,
            max_metadata_size: DEFAULT_MAX_METADATA,
            max_concurrent_calls: 200,
            preface_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(600)),
            write_timeout: Duration::from_secs(30),
            shutdown_grace_period: Duration::from_secs(30),
            stream_window: 64,
            stream_window_bytes: DEFAULT_STREAM_WINDOW_BYTES,
            error_budget: 1024,
            max_connections: 1024,
            keepalive_interval: Some(Duration::from_secs(120)),
            keepalive_timeout: Duration::from_secs(20),
            max_connection_age: None,
            max_connections_per_peer: 256,
            health_drain_delay: Duration::from_millis(500),
            metrics: false,
            max_deadline: Some(Duration::from_secs(24 * 60 * 60)),
            max_buffered_bytes: 256 * 1024 * 1024,
            compression: None,
        }
    }
}

/// Compression of a connection's larger frames, off unless both sides' configurations ask
/// for it ([`ServerConfig::compression`], [`ChannelConfig::compression`]): each side's
/// preface says it accepts compressed frames, and a side compresses only towards a peer
/// that said so. Frames are compressed with LZ4 (fast enough to win on most links; a
/// frame it does not shrink goes as it is); a receiver bounds what a compressed frame may
/// inflate to by the frame limit and by what LZ4 can produce from its bytes.
///
/// ```
/// use rpc_core::{ChannelConfig, Compression};
///
/// let mut config = ChannelConfig::default();
/// config.compression = Some(Compression::lz4());
/// assert_eq!(config.compression.map(|lz4| lz4.min_size), Some(1024));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Compression {
    /// Frames shorter than this many bytes are never compressed. Default 1 KiB.
    pub min_size: usize,
}

impl Compression {
    /// LZ4 compression of frames of at least 1 KiB.
    pub fn lz4() -> Self {
        Compression { min_size: 1024 }
    }

    /// The preface flag of a side configured with `compression`.
    pub(crate) fn preface_flag(compression: Option<Compression>) -> u8 {
        compression.map_or(0, |_| crate::wire::PREFACE_LZ4)
    }

    /// Once the peer's preface (`peer_flags`) has arrived: sets `outbox` compressing if this
    /// side asks for compression and the peer accepts it, and returns what compressed
    /// frames from the peer may inflate to (`max_frame` when this side accepts them; see
    /// `wire::inflate`).
    pub(crate) fn negotiate(
        compression: Option<Compression>,
        peer_flags: u8,
        outbox: &crate::outbox::Outbox,
        max_frame: usize,
    ) -> Option<usize> {
        let compression = compression?;
        if peer_flags & crate::wire::PREFACE_LZ4 != 0 {
            outbox.compress_frames_of(compression.min_size);
        }
        Some(max_frame)
    }
}

/// The default byte window of a stream (both sides).
const DEFAULT_STREAM_WINDOW_BYTES: u32 = 4 * 1024 * 1024;

/// How a client channel treats its connection.
///
/// ```
/// use std::time::Duration;
/// use rpc_core::ChannelConfig;
///
/// let mut config = ChannelConfig::default();
/// config.default_timeout = Some(Duration::from_secs(5));
/// assert_eq!(config.max_frame_size, 16 * 1024 * 1024);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ChannelConfig {
    /// Largest frame sent or accepted, length prefix excluded. Default 16 MiB. A request
    /// over it fails with `FrameTooLarge` before anything is sent.
    pub max_frame_size: usize,
    /// Timeout of calls that set no deadline of their own. Default `None` (no deadline).
    pub default_timeout: Option<Duration>,
    /// Time the server has to answer with its preface once connected. Default 10 s.
    pub preface_timeout: Duration,
    /// Time the rest of a frame has to arrive once its first byte has. Default 30 s.
    pub frame_timeout: Duration,
    /// A write that makes no progress for this long closes the connection, and a stream
    /// the peer grants no credit for this long is ended with `ResourceExhausted` (so a peer
    /// that never reads cannot hold its producer). Default 30 s.
    pub write_timeout: Duration,
    /// Items of a response stream the client takes before the caller reads them (the
    /// flow-control window). Default 64.
    pub stream_window: u32,
    /// Bytes of a response stream the client takes before the caller reads them (the
    /// window counted in bytes as well; see `ServerConfig::stream_window_bytes`). Default
    /// 4 MiB.
    pub stream_window_bytes: u32,
    /// While calls are in flight, the channel pings the server this often, and closes the
    /// connection (failing those calls with `ConnectionClosed`) when a ping goes unanswered
    /// for `keepalive_timeout`. Default 60 s, so that a call with no deadline still ends
    /// when its server stops answering altogether: TCP keepalive (which TCP channels also
    /// use: probes after 30 s of silence) only notices a host that vanished, not a server
    /// whose process is stuck or hostile. A server that answers pings keeps its calls as
    /// long as they take. `None` turns the pings off.
    pub keepalive_interval: Option<Duration>,
    /// How long a keepalive ping may go unanswered. Default 20 s.
    pub keepalive_timeout: Duration,
    /// Adds metadata (credentials, trace context) to every call. Default none.
    pub interceptor: Option<ClientInterceptor>,
    /// Record call metrics through the `metrics` facade (see `rpc_core::observe`).
    /// Default `false`: no clock reads or metric lookups on the hot path.
    pub metrics: bool,
    /// Compress larger frames when the server agrees (its configuration asks for
    /// compression too). Default `None`: frames travel as they are, and compressed ones are
    /// refused.
    pub compression: Option<Compression>,
    /// The server whose services the peer may call on the channel's connections; set with
    /// `ChannelConfig::serve`. Default none.
    pub(crate) served: Option<Served>,
}

/// The server a channel serves its peer with. It is opaque here (`Server` sits above this
/// module); `ChannelConfig::serve` and `ChannelConfig::served`, in `server.rs`, set and
/// read it.
#[derive(Clone)]
pub(crate) struct Served(pub(crate) Arc<dyn std::any::Any + Send + Sync>);

impl fmt::Debug for Served {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Server")
    }
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            max_frame_size: DEFAULT_MAX_FRAME,
            default_timeout: None,
            preface_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            stream_window: 64,
            stream_window_bytes: DEFAULT_STREAM_WINDOW_BYTES,
            keepalive_interval: Some(Duration::from_secs(60)),
            keepalive_timeout: Duration::from_secs(20),
            interceptor: None,
            metrics: false,
            compression: None,
            served: None,
        }
    }
}

/// Adds metadata (credentials, trace context) to every call of a channel; set it in
/// [`ChannelConfig::interceptor`].
///
/// ```
/// use rpc_core::{ChannelConfig, ClientInterceptor};
///
/// let mut config = ChannelConfig::default();
/// config.interceptor = Some(ClientInterceptor::new(|_method, metadata| {
///     metadata.push(("authorization".into(), "Bearer let-me-in".into()));
/// }));
/// ```
#[derive(Clone)]
pub struct ClientInterceptor {
    add: Arc<AddMetadata>,
}

/// What a [`ClientInterceptor`] runs for each call.
type AddMetadata = dyn Fn(&MethodSpec, &mut Vec<(String, String)>) + Send + Sync;

impl ClientInterceptor {
    /// An interceptor that calls `add` with each call's method and metadata.
    pub fn new(
        add: impl Fn(&MethodSpec, &mut Vec<(String, String)>) + Send + Sync + 'static,
    ) -> Self {
        ClientInterceptor { add: Arc::new(add) }
    }

    /// Adds this interceptor's metadata for a call to `method`.
    pub(crate) fn add_metadata(&self, method: &MethodSpec, metadata: &mut Vec<(String, String)>) {
        (self.add)(method, metadata);
    }
}

impl fmt::Debug for ClientInterceptor {
    // Never prints what it adds: credentials stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientInterceptor").finish_non_exhaustive()
    }
}
