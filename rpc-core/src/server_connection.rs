//! The server's connection engine: read requests, run handlers, write responses.
//!
//! [`serve`] runs one connection from its preface to its close. The [`Driver`] (`driver.rs`)
//! reads frames and keeps the connection's timers (idle, keepalive, age, grace); each
//! request is admitted (`admission.rs`: known service, compatible method, sane deadline and
//! metadata, interceptors), dispatched and run (`call.rs`), and answered (`reply.rs`). Each
//! call's handler runs in its own task unless it finishes on its first poll, so a slow call
//! never blocks a fast one. A handler holds one of `max_concurrent_calls` permits from start
//! to finish; with none left the connection stops reading (backpressure). Handlers encode
//! their responses into the shared [`Outbox`], whose writer task coalesces them into few
//! writes.
//!
//! Every started call is in `handlers` with its task's abort handle, so a cancel frame, the
//! peer going away or the end of the grace period stops it.
//!
//! [`Driver`]: driver::Driver

mod admission;
mod budget;
mod call;
mod driver;
mod reply;
mod running;
mod waiting;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::client_connection::{ClientConnection, ACCEPTOR_FIRST_ID};
use crate::config::{ChannelConfig, Compression, ServerConfig};
use crate::context::{Peer, PeerLink};
use crate::dispatch::{Dispatch, StreamSink, StreamStarter};
use crate::error::RpcError;
use crate::middleware::{CallStack, Interceptor};
use crate::observe;
use crate::outbox::{self, Outbox};
use crate::recover::lock;
use crate::stream::{Credit, Inbox, Window};
use crate::transport::{BufferBudget, Connection, FrameRead, FrameWrite};
use crate::wire;
use admission::Compatibility;
use budget::ErrorBudget;
use driver::{Driver, Ending};
use running::RunningCalls;

/// What a server serves, shared by all its connections: its services, hooks and limits.
#[derive(Clone)]
pub(crate) struct Routes {
    /// Services by wire id.
    pub(crate) services: HashMap<u32, Arc<dyn Dispatch>>,
    /// Services answered when no added service has their id (the built-in health service).
    pub(crate) builtin: HashMap<u32, Arc<dyn Dispatch>>,
    /// Run on every call before its arguments are decoded, in order.
    pub(crate) interceptors: Vec<Arc<dyn Interceptor>>,
    /// The middleware every call goes through, if any layer was added.
    pub(crate) middleware: Option<CallStack>,
    pub(crate) config: ServerConfig,
}

impl Routes {
    /// The service with this wire id.
    pub(crate) fn service(&self, service_id: u32) -> Option<&Arc<dyn Dispatch>> {
        self.services
            .get(&service_id)
            .or_else(|| self.builtin.get(&service_id))
    }
}

/// Tells connections to drain and close: stop taking new calls, finish in-flight ones (up
/// to the grace period), then close. Cheap to clone; triggering any clone triggers all.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    /// Why it fired, when [`Shutdown::trigger_because`] said.
    reason: Arc<std::sync::OnceLock<Arc<str>>>,
}

/// What a connection tells its peer when a [`Shutdown`] fires without a reason of its own.
const SHUTTING_DOWN: &str = "the server is shutting down";

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Shutdown::default()
    }

    /// A signal that fires when this one does, and can also be fired alone (without
    /// firing this one): an accept loop gives each connection one, to close it by itself.
    pub fn child(&self) -> Shutdown {
        Shutdown {
            token: self.token.child_token(),
            reason: Arc::default(),
        }
    }

    /// Fires the signal. Firing it again does nothing.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Fires the signal, telling the peers of the connections it closes why (in the
    /// GOAWAY they receive). Only the first reason given counts.
    pub fn trigger_because(&self, reason: &str) {
        let _ = self.reason.set(reason.into());
        self.token.cancel();
    }

    /// Why the signal fired, as its connections tell their peers.
    pub fn reason(&self) -> &str {
        self.reason.get().map_or(SHUTTING_DOWN, |reason| reason)
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the signal has fired.
    pub async fn triggered(&self) {
        self.token.cancelled().await;
    }
}

/// Serves calls on one connection until the peer closes it, it fails, or `shutdown` is
/// triggered and its calls have drained. When the peer's preface says it serves too, the
/// connection carries calls both ways: handlers reach the peer through their context
/// (`Context::peer_channel`).
pub(crate) fn serve<R: FrameRead, W: FrameWrite>(
    routes: Arc<Routes>,
    connection: Connection<R, W>,
    shutdown: Shutdown,
    buffers: BufferBudget,
) -> impl Future<Output = ()> + Send {
    // One async fn for both ends (rather than wrappers around a shared one): a future
    // holding another keeps room for the arguments it moves into it, and this one lives as
    // long as its connection.
    run(routes, connection, End::Accepted(shutdown), buffers)
}

/// Serves the peer's calls on a connection this side dialled, beside `client`, the engine
/// of this side's own calls, which writes into `outbox` (whose preface says this side
/// serves). Ends when the connection does, closing `client`.
pub(crate) fn serve_dialled<R: FrameRead, W: FrameWrite>(
    routes: Arc<Routes>,
    connection: Connection<R, W>,
    outbox: Arc<Outbox>,
    client: Arc<ClientConnection>,
    buffers: BufferBudget,
) -> impl Future<Output = ()> + Send {
    run(routes, connection, End::Dialled { outbox, client }, buffers)
}

/// Which end of the connection this side is.
enum End {
    /// It accepted the connection: it keeps the idle and age timers and drains when the
    /// signal fires.
    Accepted(Shutdown),
    /// It dialled the connection and calls over it with `client`, which writes into
    /// `outbox`; it closes the connection when its channel is dropped.
    Dialled {
        outbox: Arc<Outbox>,
        client: Arc<ClientConnection>,
    },
}

/// The configuration of a server's calls back to a peer that serves too: the server's own
/// limits and keepalive.
fn calls_back_config(config: &ServerConfig) -> ChannelConfig {
    ChannelConfig {
        max_frame_size: config.max_frame_size,
        write_timeout: config.write_timeout,
        stream_window: config.stream_window,
        stream_window_bytes: config.stream_window_bytes,
        keepalive_interval: config.keepalive_interval,
        keepalive_timeout: config.keepalive_timeout,
        metrics: config.metrics,
        ..ChannelConfig::default()
    }
}

/// Runs one connection from the peer's preface to its close.
async fn run<R: FrameRead, W: FrameWrite>(
    routes: Arc<Routes>,
    connection: Connection<R, W>,
    end: End,
    buffers: BufferBudget,
) {
    let Connection {
        mut reader,
        writer,
        peer,
        activity,
    } = connection;
    let config = &routes.config;
    let (outbox, outgoing, writer_task, shutdown, accepted, inflate) = match end {
        End::Accepted(shutdown) => {
            // The preface comes first, under its own timeout: a peer that does not speak
            // the protocol costs one short-lived task and is never answered.
            let preface = tokio::select! {
                preface = tokio::time::timeout(config.preface_timeout, reader.read_preface()) => preface,
                () = shutdown.triggered() => return,
            };
            match preface {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::info!(%peer, %error, "refused a connection");
                    return;
                }
                Err(_elapsed) => {
                    tracing::info!(%peer, "closed a connection that sent no preface in time");
                    return;
                }
            }
            let outbox = serving_outbox(config.compression);
            let peer_flags = reader.preface_flags();
            let inflate = Compression::negotiate(
                config.compression,
                peer_flags,
                &outbox,
                config.max_frame_size,
            );
            let outgoing = (peer_flags & wire::PREFACE_SERVES != 0).then(|| {
                ClientConnection::attached(
                    outbox.clone(),
                    peer.clone(),
                    calls_back_config(config),
                    ACCEPTOR_FIRST_ID,
                )
            });
            let writer_task = start_writer(&outbox, writer, config.write_timeout);
            (outbox, outgoing, writer_task, shutdown, true, inflate)
        }
        End::Dialled { outbox, client } => {
            // This side's preface goes out at once: the server answers with its own only
            // then.
            let writer_task = start_writer(&outbox, writer, client.config().write_timeout);
            let preface_timeout = client.config().preface_timeout;
            let preface = tokio::time::timeout(preface_timeout, reader.read_preface()).await;
            let preface = preface.unwrap_or_else(|_elapsed| {
                Err(RpcError::protocol(format!(
                    "the server sent no preface within {preface_timeout:?}"
                )))
            });
            if let Err(error) = preface {
                writer_task.abort();
                outbox.fail(error.clone());
                client.close(error);
                return;
            }
            let inflate = Compression::negotiate(
                client.config().compression,
                reader.preface_flags(),
                &outbox,
                client.config().max_frame_size,
            );
            (
                outbox,
                Some(client),
                writer_task,
                Shutdown::new(),
                false,
                inflate,
            )
        }
    };
    let _gauge = observe::ConnectionGauge::open(config.metrics);
    let write_timeout = config.write_timeout;
    let errors = ErrorBudget::new(config.error_budget, Instant::now());
    let conn = Arc::new(ConnState {
        permits: Arc::new(Semaphore::new(config.max_concurrent_calls.max(1))),
        peer,
        outbox: outbox.clone(),
        running: RunningCalls::new(activity),
        drained: Notify::new(),
        draining: AtomicBool::new(false),
        inboxes: Mutex::new(HashMap::new()),
        credits: Mutex::new(HashMap::new()),
        errors: Mutex::new(errors),
        over_budget: AtomicBool::new(false),
        compatibility: Mutex::new(Compatibility::default()),
        any_incompatible: AtomicBool::new(false),
        outgoing,
        routes,
    });
    let mut driver = Driver::new(conn.clone(), writer_task, accepted, &buffers, inflate);
    let ending = driver.run(&mut reader, &shutdown).await;
    conn.abort_handlers();
    // This side's own calls end with the connection's reading: nothing more can answer them.
    if let Some(outgoing) = &conn.outgoing {
        outgoing.close(match &ending {
            Ending::Clean(why) => RpcError::connection_closed(*why),
            Ending::Failed(error) => error.clone(),
            Ending::Finished => RpcError::connection_closed("the channel was dropped"),
        });
    }
    match ending {
        Ending::Clean(_) => {
            conn.outbox.finish();
            match tokio::time::timeout(write_timeout, &mut driver.writer_task).await {
                Ok(Ok(Ok(()))) => {
                    // Our side is shut: read (and drop) what the peer still sends until it
                    // closes too, for a moment. Closing a socket with unread bytes resets the
                    // connection, and the reset can destroy the last frames we wrote (a
                    // GOAWAY, the last responses) before the peer reads them.
                    let drain = async { while let Ok(Some(_)) = reader.read_frame().await {} };
                    let _ = tokio::time::timeout(LINGER, drain).await;
                }
                Ok(Ok(Err(error))) => {
                    tracing::debug!(peer = %conn.peer, %error, "write failed while closing")
                }
                Ok(Err(join_error)) => {
                    tracing::warn!(peer = %conn.peer, %join_error, "writer task failed")
                }
                Err(_elapsed) => driver.writer_task.abort(),
            }
        }
        Ending::Finished => {}
        Ending::Failed(error) => {
            tracing::info!(peer = %conn.peer, %error, "closed a connection");
            conn.outbox.fail(error);
            driver.writer_task.abort();
        }
    }
}

/// The outbox of a side that serves on a connection (an acceptor, or a dialler that serves
/// too): its preface says it serves, and whether it accepts compressed frames.
pub(crate) fn serving_outbox(compression: Option<Compression>) -> Arc<Outbox> {
    let flags = wire::PREFACE_SERVES | Compression::preface_flag(compression);
    Arc::new(Outbox::new(&wire::preface(flags)))
}

/// Spawns the task that writes `outbox` to the connection.
fn start_writer<W: FrameWrite>(
    outbox: &Arc<Outbox>,
    writer: W,
    write_timeout: Duration,
) -> tokio::task::JoinHandle<Result<(), RpcError>> {
    tokio::spawn(outbox::run_writer(outbox.clone(), writer, write_timeout))
}

/// How long a closing connection keeps reading for the peer to close its side.
const LINGER: Duration = Duration::from_secs(1);

/// The state of one connection shared by its driver and its calls' tasks.
struct ConnState {
    routes: Arc<Routes>,
    peer: Arc<Peer>,
    outbox: Arc<Outbox>,
    running: RunningCalls,
    /// Signalled when the last running handler finishes while draining.
    drained: Notify,
    /// Set once the connection takes no new calls.
    draining: AtomicBool,
    /// Request streams being received, by call id.
    inboxes: Mutex<HashMap<u32, Arc<Inbox>>>,
    /// Credit the client granted for response streams, by call id.
    credits: Mutex<HashMap<u32, Arc<Credit>>>,
    /// Errors the client caused lately (see `ServerConfig::error_budget`).
    errors: Mutex<ErrorBudget>,
    /// Set once the client caused more errors than its budget allows.
    over_budget: AtomicBool,
    permits: Arc<Semaphore>,
    /// What the client declared of the services it calls.
    compatibility: Mutex<Compatibility>,
    /// Set once the client declared a method with a fingerprint different from ours, so
    /// connections without any skip the lookup.
    any_incompatible: AtomicBool,
    /// The engine of this side's calls to its peer, when the peer serves too: handlers
    /// reach it through their context, and the driver hands it the frames of those calls.
    outgoing: Option<Arc<ClientConnection>>,
}

impl ConnState {
    fn config(&self) -> &ServerConfig {
        &self.routes.config
    }

    /// Counts one error the client caused against its budget.
    fn charge_error(&self) {
        if lock(&self.errors).charge(Instant::now()) {
            self.over_budget.store(true, Ordering::Relaxed);
        }
    }

    /// Registers the inbox of a request stream and grants it its first window.
    fn open_inbox(self: &Arc<Self>, call_id: u32) -> Arc<Inbox> {
        let config = self.config();
        let inbox = Inbox::new(
            call_id,
            Window {
                items: config.stream_window,
                bytes: config.stream_window_bytes,
            },
            config.max_frame_size,
            self.outbox.clone(),
        );
        let conn = Arc::downgrade(self);
        inbox.on_abandon(move || {
            if let Some(conn) = conn.upgrade() {
                conn.close_inbox(call_id);
            }
        });
        lock(&self.inboxes).insert(call_id, inbox.clone());
        inbox.grant_initial_window();
        inbox
    }

    /// The call no longer reads its request stream: forget it, and tell the client to stop
    /// sending if it has not finished.
    fn close_inbox(&self, call_id: u32) {
        if lock(&self.inboxes).remove(&call_id).is_some() {
            self.outbox
                .push_now(|buf| wire::encode_stop_stream(buf, call_id));
        }
    }

    /// The credit for the response stream of `call_id`, created on first use.
    fn credit(&self, call_id: u32) -> Arc<Credit> {
        lock(&self.credits).entry(call_id).or_default().clone()
    }

    /// Sends the stream a handler returned, after its response.
    async fn send_response_stream(
        &self,
        call_id: u32,
        stream: StreamStarter,
        deadline: Option<Instant>,
    ) {
        let sink = StreamSink {
            call_id,
            outbox: self.outbox.clone(),
            credit: self.credit(call_id),
            deadline,
            max_frame: self.config().max_frame_size,
            stall_timeout: self.config().write_timeout,
        };
        stream(sink).await;
    }

    /// Runs a call's remaining work in its own task, registered under its id so that a
    /// cancel or the end of the connection can stop it.
    fn spawn_call(self: &Arc<Self>, call_id: u32, work: impl Future<Output = ()> + Send + 'static) {
        let conn = self.clone();
        self.running.spawn(call_id, || {
            tokio::spawn(async move {
                work.await;
                conn.finish_call(call_id, tokio::task::id());
            })
        });
    }

    /// Stops a running call; returns whether there was one.
    fn cancel(&self, call_id: u32) -> bool {
        let handle = self.running.remove(call_id);
        let Some(handle) = handle else {
            return false;
        };
        handle.abort();
        self.forget_streams(call_id);
        self.notify_if_drained();
        true
    }

    /// The end of call `call_id`'s task `task`: its entry and streams are dropped, unless a
    /// cancel did that already (and the id may now be another call's).
    fn finish_call(&self, call_id: u32, task: tokio::task::Id) {
        if self.running.remove_own(call_id, task) {
            self.forget_streams(call_id);
        }
        self.notify_if_drained();
    }

    /// Drops what a finished or cancelled call kept for its streams.
    fn forget_streams(&self, call_id: u32) {
        self.close_inbox(call_id);
        lock(&self.credits).remove(&call_id);
    }

    fn notify_if_drained(&self) {
        if self.draining.load(Ordering::Acquire) && self.running.len() == 0 {
            self.drained.notify_one();
        }
    }

    fn abort_handlers(&self) {
        self.running.abort_all();
    }

    /// What handlers' contexts carry to reach a peer that serves too.
    fn peer_link(&self) -> Option<PeerLink> {
        self.outgoing
            .clone()
            .map(|outgoing| -> PeerLink { outgoing })
    }

    fn log_panic(&self, service: &str, method: Option<&str>, call_id: u32, message: &str) {
        tracing::error!(
            peer = %self.peer,
            service,
            method = method.unwrap_or("?"),
            call_id,
            panic = message,
            "a handler panicked"
        );
    }
}
