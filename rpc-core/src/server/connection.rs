//! One server connection: read requests, run handlers, write responses.
//!
//! The connection task reads frames and starts calls; each call's handler runs in its own
//! task, so a slow call never blocks a fast one and handlers use every worker thread. A
//! handler holds one of `max_concurrent_calls` permits from start to finish; with none left
//! the connection stops reading (backpressure). Handlers encode their responses into the
//! shared [`Outbox`], whose writer task coalesces them into few writes.
//!
//! Every started call is in `handlers` with its task's abort handle, so a cancel frame, the
//! peer going away or the end of the grace period stops it.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::{AbortHandle, JoinHandle};

use super::{CallInfo, Server, ServerInner, Shutdown};
use crate::channel::status_error;
use crate::config::ServerConfig;
use crate::context::{Context, Peer};
use crate::dispatch::{Dispatch, HandlerFuture, IncomingRequest, Reply, StreamSink, StreamStarter};
use crate::error::RpcError;
use crate::middleware::{self, ServerCall};
use crate::observe::{self, CallObserver, TraceContext};
use crate::outbox::{self, InFlight, Lane, Outbox};
use crate::recover::{lock, panic_message, CatchUnwind};
use crate::streaming::{Credit, Inbox};
use crate::transport::{Connection, FrameRead, FrameWrite};
use crate::wire::{self, Frame, FrameKind, RequestHead, Status};

pub(super) async fn serve<R: FrameRead, W: FrameWrite>(
    server: Arc<ServerInner>,
    connection: Connection<R, W>,
    shutdown: Shutdown,
) {
    let Connection {
        mut reader,
        writer,
        peer,
    } = connection;
    let config = &server.config;
    // The preface comes first, under its own timeout: a peer that does not speak the
    // protocol costs one short-lived task and is never answered.
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
    let _gauge = observe::ConnectionGauge::open(config.metrics);
    let outbox = Arc::new(Outbox::new(&wire::PREFACE));
    let conn = Arc::new(ConnState {
        server: Server {
            inner: server.clone(),
        },
        peer,
        outbox: outbox.clone(),
        handlers: Mutex::new(HashMap::new()),
        drained: Notify::new(),
        draining: AtomicBool::new(false),
        inboxes: Mutex::new(HashMap::new()),
        credits: Mutex::new(HashMap::new()),
        errors: Mutex::new(ErrorBudget {
            window_start: Instant::now(),
            spent: 0,
        }),
        over_budget: AtomicBool::new(false),
        compatibility: Mutex::new(Compatibility::default()),
        any_incompatible: AtomicBool::new(false),
        permits: Arc::new(Semaphore::new(config.max_concurrent_calls.max(1))),
    });
    let writer_task = tokio::spawn(outbox::run_writer(outbox, writer, config.write_timeout));
    let mut driver = Driver {
        conn: conn.clone(),
        writer_task,
        draining: false,
        highest_call_id: 0,
        frames_received: 0,
    };
    let ending = driver.run(&mut reader, &shutdown).await;
    conn.abort_handlers();
    match ending {
        Ending::Clean => {
            conn.outbox.finish();
            let write_timeout = server.config.write_timeout;
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
        Ending::Failed(error) => {
            tracing::info!(peer = %conn.peer, %error, "closed a connection");
            conn.outbox.fail(error);
            driver.writer_task.abort();
        }
    }
}

/// How long a closing connection keeps reading for the peer to close its side.
const LINGER: Duration = Duration::from_secs(1);

/// The period over which `ServerConfig::error_budget` counts.
const ERROR_WINDOW: Duration = Duration::from_secs(10);

/// Errors a client caused in the current window.
struct ErrorBudget {
    window_start: Instant,
    spent: u32,
}

enum Ending {
    /// Flush what is queued, then close.
    Clean,
    /// Close at once.
    Failed(RpcError),
}

struct ConnState {
    server: Server,
    peer: Arc<Peer>,
    outbox: Arc<Outbox>,
    handlers: Mutex<HashMap<u32, AbortHandle>>,
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
}

/// The services a client declared, and the methods it was built with different types for.
#[derive(Default)]
struct Compatibility {
    declared: Vec<u32>,
    incompatible: Vec<(u32, u32)>,
}

struct Driver {
    conn: Arc<ConnState>,
    writer_task: JoinHandle<Result<(), RpcError>>,
    draining: bool,
    highest_call_id: u32,
    /// Frames received so far; the idle timer compares it between its firings rather than
    /// reading the clock for every frame.
    frames_received: u64,
}

impl Driver {
    async fn run<R: FrameRead>(&mut self, reader: &mut R, shutdown: &Shutdown) -> Ending {
        let config = self.conn.server.config().clone();
        let shutdown_signal = shutdown.triggered();
        tokio::pin!(shutdown_signal);
        let far_future = Instant::now() + Duration::from_secs(86_400 * 365);
        let grace_timer = tokio::time::sleep_until(far_future.into());
        tokio::pin!(grace_timer);
        let idle_timer = tokio::time::sleep_until(
            config
                .idle_timeout
                .and_then(|idle| Instant::now().checked_add(idle))
                .unwrap_or(far_future)
                .into(),
        );
        tokio::pin!(idle_timer);
        let mut frames_at_last_idle_check = 0;
        let ping_timer = tokio::time::sleep_until(
            config
                .keepalive_interval
                .and_then(|interval| Instant::now().checked_add(interval))
                .unwrap_or(far_future)
                .into(),
        );
        tokio::pin!(ping_timer);
        let age_timer = tokio::time::sleep_until(
            config
                .max_connection_age
                .and_then(|age| Instant::now().checked_add(jittered(age)))
                .unwrap_or(far_future)
                .into(),
        );
        tokio::pin!(age_timer);
        // The frame count when a ping went out and is still unanswered.
        let mut ping_outstanding: Option<u64> = None;
        let mut next_permit: Option<OwnedSemaphorePermit> = None;
        loop {
            if self.draining && self.conn.running_handlers() == 0 {
                return Ending::Clean;
            }
            tokio::select! {
                biased;
                // The writer only stops on its own when writing failed (a clean finish is
                // asked for after this loop), and its handle must not be polled again.
                writer_outcome = &mut self.writer_task => {
                    return match writer_outcome {
                        Ok(Ok(())) => Ending::Failed(RpcError::connection_closed("the writer stopped")),
                        Ok(Err(error)) => Ending::Failed(error),
                        Err(join_error) => Ending::Failed(RpcError::Internal {
                            message: format!("writer task failed: {join_error}").into(),
                        }),
                    };
                }
                () = &mut shutdown_signal, if !self.draining => {
                    self.start_draining("the server is shutting down");
                    grace_timer.as_mut().reset(grace_deadline(&config));
                }
                () = &mut age_timer, if config.max_connection_age.is_some() && !self.draining => {
                    tracing::debug!(peer = %self.conn.peer, "closing a connection past its maximum age");
                    self.start_draining("max connection age");
                    grace_timer.as_mut().reset(grace_deadline(&config));
                }
                () = &mut grace_timer, if self.draining => {
                    tracing::info!(
                        peer = %self.conn.peer,
                        running = self.conn.running_handlers(),
                        "grace period over; abandoning the calls still running"
                    );
                    return Ending::Clean;
                }
                () = self.conn.drained.notified(), if self.draining => {}
                // The idle timer fires once per idle period; a period with no frame and no
                // call running ends the connection (so idleness is noticed after one to two
                // periods, without reading the clock for every frame).
                () = &mut idle_timer, if config.idle_timeout.is_some() && !self.draining => {
                    let Some(idle_timeout) = config.idle_timeout else { continue };
                    let quiet = self.frames_received == frames_at_last_idle_check;
                    if quiet && self.conn.running_handlers() == 0 {
                        tracing::debug!(peer = %self.conn.peer, "closing an idle connection");
                        self.start_draining("the connection was idle");
                    } else {
                        frames_at_last_idle_check = self.frames_received;
                        idle_timer.as_mut().reset((Instant::now() + idle_timeout).into());
                    }
                }
                // While calls run, ping a client that has gone quiet: one that vanished without
                // closing (power loss, a cut link) would otherwise hold its handlers and their
                // slots for ever. Any frame from the client answers the ping.
                () = &mut ping_timer, if config.keepalive_interval.is_some() => {
                    let Some(interval) = config.keepalive_interval else { continue };
                    match ping_outstanding {
                        Some(frames_then) if frames_then == self.frames_received => {
                            return Ending::Failed(RpcError::connection_closed(format!(
                                "the client did not answer a keepalive ping within {:?}",
                                config.keepalive_timeout
                            )));
                        }
                        _ if self.conn.running_handlers() > 0 => {
                            let opaque = self.frames_received;
                            self.conn
                                .outbox
                                .push_now(|buf| wire::encode_ping(buf, opaque, false));
                            ping_outstanding = Some(self.frames_received);
                            ping_timer.as_mut().reset((Instant::now() + config.keepalive_timeout).into());
                        }
                        _ => {
                            ping_outstanding = None;
                            ping_timer.as_mut().reset((Instant::now() + interval).into());
                        }
                    }
                }
                permit = self.conn.permits.clone().acquire_owned(), if next_permit.is_none() => {
                    // The semaphore is never closed.
                    next_permit = permit.ok();
                }
                frame = reader.read_frame(), if next_permit.is_some() => {
                    let frame = match frame {
                        Ok(Some(frame)) => frame,
                        Ok(None) => return Ending::Clean,
                        Err(error) => return Ending::Failed(error),
                    };
                    self.frames_received += 1;
                    // With more requests already buffered, their responses should leave
                    // together rather than each on its own.
                    let alone = !reader.has_buffered_bytes();
                    if let Err(error) = self.handle_frame(frame, alone, &mut next_permit) {
                        return Ending::Failed(error);
                    }
                    if self.conn.over_budget.load(Ordering::Relaxed) {
                        tracing::info!(peer = %self.conn.peer, "closing a connection that caused too many errors");
                        self.conn
                            .outbox
                            .push_now(|buf| wire::encode_go_away(buf, self.highest_call_id, "too many errors"));
                        return Ending::Clean;
                    }
                }
            }
        }
    }

    fn start_draining(&mut self, reason: &str) {
        self.draining = true;
        self.conn.draining.store(true, Ordering::Release);
        let last_call_id = self.highest_call_id;
        self.conn
            .outbox
            .push_now(|buf| wire::encode_go_away(buf, last_call_id, reason));
    }

    /// Handles one frame. An error closes the connection.
    fn handle_frame(
        &mut self,
        frame: Bytes,
        alone: bool,
        next_permit: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<(), RpcError> {
        match Frame::parse(frame)? {
            Frame::Request {
                head,
                metadata,
                payload,
            } => {
                self.highest_call_id = self.highest_call_id.max(head.call_id);
                if self.draining {
                    self.conn.respond_error(
                        head.call_id,
                        Status::Unavailable,
                        "the server is shutting down".as_bytes(),
                    );
                    return Ok(());
                }
                if let Some(permit) = next_permit.take() {
                    self.conn.start_call(head, metadata, payload, permit, alone);
                }
                Ok(())
            }
            Frame::Cancel { call_id } => {
                // Cancelling a running call costs bounded work and frees its slot at once,
                // so request-then-cancel pairs cannot pile up work (the Rapid Reset lesson);
                // cancels for calls that are not running are useless frames and are charged.
                if !self.conn.cancel(call_id) {
                    self.conn.charge_error();
                }
                Ok(())
            }
            Frame::GoAway { .. } | Frame::Pong { .. } => Ok(()),
            Frame::Ping { opaque } => {
                // Answering is cheap, but each ping is charged so a ping flood cannot make
                // the server queue answers without bound.
                self.conn.charge_error();
                self.conn
                    .outbox
                    .push_now(|buf| wire::encode_ping(buf, opaque, true));
                Ok(())
            }
            Frame::StreamItem { call_id, payload } => {
                let inbox = lock(&self.conn.inboxes).get(&call_id).cloned();
                match inbox {
                    Some(inbox) => inbox.push_item(payload),
                    None => {
                        self.conn.charge_error();
                        Ok(())
                    }
                }
            }
            Frame::StreamPart { call_id, payload } => {
                let inbox = lock(&self.conn.inboxes).get(&call_id).cloned();
                match inbox {
                    Some(inbox) => inbox.push_piece(payload),
                    None => {
                        self.conn.charge_error();
                        Ok(())
                    }
                }
            }
            Frame::StreamEnd {
                call_id,
                status,
                text,
            } => {
                let inbox = lock(&self.conn.inboxes).remove(&call_id);
                if let Some(inbox) = inbox {
                    inbox.finish(match status {
                        Status::Ok => Ok(()),
                        // The server does not name the client's own stream back to it.
                        status => Err(status_error("", "", status, &text)),
                    });
                }
                Ok(())
            }
            Frame::Window { call_id, credit } => {
                // Credit is kept only for calls that are running; the first WINDOW of a
                // call may come before its handler has returned its stream.
                if self.conn.handlers().contains_key(&call_id) {
                    self.conn.credit(call_id).grant(credit);
                } else {
                    self.conn.charge_error();
                }
                Ok(())
            }
            Frame::StopStream { call_id } => {
                if let Some(credit) = lock(&self.conn.credits).remove(&call_id) {
                    credit.stop();
                }
                Ok(())
            }
            Frame::Declare {
                service_id,
                methods,
            } => {
                self.conn.declare(service_id, &methods);
                Ok(())
            }
            Frame::Response { .. } => Err(RpcError::protocol("a client sent a response frame")),
        }
    }
}

/// The trace context a call's `traceparent` metadata carries, if well formed.
fn trace_context(traceparent: &Option<String>) -> Option<TraceContext> {
    traceparent.as_deref().and_then(TraceContext::parse)
}

/// When the calls of a connection that started draining now are abandoned.
fn grace_deadline(config: &ServerConfig) -> tokio::time::Instant {
    let now = Instant::now();
    now.checked_add(config.shutdown_grace_period)
        .unwrap_or(now)
        .into()
}

/// `age` give or take up to 10 %, at random, so connections opened together do not all
/// close together.
fn jittered(age: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // A randomly keyed hasher is a random number without a dependency for one.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let fraction = (random % 2001) as f64 / 1000.0 - 1.0;
    age.mul_f64(1.0 + fraction / 10.0)
}

impl ConnState {
    fn handlers(&self) -> MutexGuard<'_, HashMap<u32, AbortHandle>> {
        lock(&self.handlers)
    }

    fn running_handlers(&self) -> usize {
        self.handlers().len()
    }

    /// Validates a request and runs its handler (inline if it finishes at once, else in a
    /// task of its own), or answers it with an error at once. `alone` says no other request
    /// is waiting to be read right behind this one.
    fn start_call(
        self: &Arc<Self>,
        head: RequestHead,
        metadata: Bytes,
        payload: Bytes,
        permit: OwnedSemaphorePermit,
        alone: bool,
    ) {
        let call_id = head.call_id;
        if self.handlers().contains_key(&call_id) {
            // A peer reusing a live id cannot disturb the original call.
            tracing::debug!(peer = %self.peer, call_id, "ignored a request reusing a live call id");
            self.charge_error();
            return;
        }
        let in_flight = InFlight::new(&self.outbox);
        let Some(service) = self.server.service(head.service_id).cloned() else {
            self.respond_error(call_id, Status::UnknownService, b"");
            return;
        };
        if self.is_incompatible(head.service_id, head.method_id) {
            self.respond_error(call_id, Status::Incompatible, b"");
            return;
        }
        let deadline = match head.deadline_micros {
            Some(0) => {
                self.respond_error(call_id, Status::DeadlineExceeded, b"");
                return;
            }
            // A deadline too far away to represent is no deadline.
            Some(micros) => Instant::now().checked_add(Duration::from_micros(micros)),
            None => None,
        };
        let metadata = if metadata.is_empty() {
            Vec::new()
        } else {
            match wire::decode_metadata(metadata, self.server.config().max_metadata_size) {
                Ok(pairs) => pairs,
                Err(RpcError::ResourceExhausted { message }) => {
                    self.respond_error(call_id, Status::ResourceExhausted, message.as_bytes());
                    return;
                }
                Err(error) => {
                    self.respond_error(call_id, Status::BadRequest, error.to_string().as_bytes());
                    return;
                }
            }
        };
        let context = Context::new(self.peer.clone(), call_id)
            .with_deadline(deadline)
            .with_metadata(metadata);
        let method_id = head.method_id;
        if let Err((status, message)) = self.intercept(&*service, method_id, &context) {
            self.respond_error(call_id, status, message.as_bytes());
            return;
        }
        let context_metadata = context.metadata(observe::TRACEPARENT).map(str::to_owned);
        let middleware_context = self.server.middleware().map(|_| context.clone());
        let stream = head.request_stream.then(|| self.open_inbox(call_id));
        let request = IncomingRequest {
            context,
            payload,
            stream,
        };
        let dispatched =
            std::panic::catch_unwind(AssertUnwindSafe(|| service.dispatch(method_id, request)));
        let mut handler = match dispatched {
            Ok(Ok(handler)) => handler,
            Ok(Err(RpcError::UnknownMethod { .. })) => {
                self.respond_error(call_id, Status::UnknownMethod, b"");
                return;
            }
            Ok(Err(error)) => {
                self.respond_error(call_id, Status::BadRequest, error.to_string().as_bytes());
                return;
            }
            Err(panic) => {
                self.log_panic(
                    service.service_name(),
                    service.method_name(method_id),
                    call_id,
                    &panic_message(&*panic),
                );
                self.respond_error(call_id, Status::HandlerPanicked, b"");
                return;
            }
        };
        let names = (service.service_name(), service.method_name(method_id));
        let trace = trace_context(&context_metadata);
        let observer = CallObserver::server(
            names.0,
            names.1.unwrap_or("?"),
            &self.peer,
            call_id,
            trace,
            self.server.config().metrics,
        );
        if let (Some(stack), Some(context)) = (self.server.middleware(), middleware_context) {
            let call = ServerCall::new(names.0, names.1.unwrap_or("?"), context, handler);
            handler = middleware::through(stack, call);
        }
        // Only a traced or observed call pays for running its handler in a span and trace.
        if let Some(trace) = trace {
            handler = Box::pin(observe::in_trace(trace, handler));
        }
        if let Some(span) = observer.span() {
            handler = Box::pin(observe::within(Some(span), handler));
        }
        // Poll the handler once right here: most handlers finish without waiting, and then
        // the response is queued without a task spawn or a hop to another task. A handler
        // that waits is moved into its own task (it is boxed, so moving it is fine), which
        // polls it again with a real waker.
        // One call's panic stays that call's error.
        let mut guarded = CatchUnwind(handler);
        let mut first_poll = TaskContext::from_waker(Waker::noop());
        if let Poll::Ready(outcome) = Pin::new(&mut guarded).poll(&mut first_poll) {
            let mut outcome = HandlerOutcome::from(outcome);
            observer.finish(outcome.kind());
            if let HandlerOutcome::Panicked(panic) = &outcome {
                self.log_panic(names.0, names.1, call_id, panic);
            }
            let stream = outcome.take_stream();
            let max_frame = self.server.config().max_frame_size;
            let peer = self.peer.clone();
            let mut encode = Some(move |buf: &mut BytesMut| {
                encode_outcome(buf, call_id, outcome, max_frame, &peer)
            });
            if stream.is_none()
                && self
                    .outbox
                    .try_push_slot(if alone { Lane::Lone } else { Lane::Shared }, &mut encode)
                    .is_some()
            {
                self.close_inbox(call_id);
                return;
            }
            // A stream follows the response, or the outbox is full: go on in a task, holding
            // the permit meanwhile.
            if let Some(encode) = encode.take() {
                let conn = self.clone();
                self.spawn_call(call_id, async move {
                    if let Err(error) = conn.outbox.push(Lane::Lone, encode).await {
                        tracing::debug!(peer = %conn.peer, call_id, %error, "could not queue a response");
                    } else if let Some(stream) = stream {
                        conn.send_response_stream(call_id, stream, deadline).await;
                    }
                    drop((permit, in_flight));
                });
            }
            return;
        }
        let conn = self.clone();
        self.spawn_call(call_id, async move {
            let mut outcome = run_handler(guarded, deadline).await;
            observer.finish(outcome.kind());
            if let HandlerOutcome::Panicked(panic) = &outcome {
                conn.log_panic(names.0, names.1, call_id, panic);
            }
            let stream = outcome.take_stream();
            if conn.respond(call_id, outcome).await {
                if let Some(stream) = stream {
                    conn.send_response_stream(call_id, stream, deadline).await;
                }
            }
            drop((permit, in_flight));
        });
    }

    /// Records which of a service's methods the client was built with different types
    /// for. Declaring a service twice, or one the server lacks, is charged as an error.
    fn declare(&self, service_id: u32, methods: &[(u32, u32)]) {
        let mut compatibility = lock(&self.compatibility);
        let service = self.server.service(service_id);
        if compatibility.declared.contains(&service_id) || service.is_none() {
            drop(compatibility);
            self.charge_error();
            return;
        }
        compatibility.declared.push(service_id);
        let Some(service) = service else { return };
        let ours = service.fingerprints();
        for (method_id, fingerprint) in methods {
            let differs = ours
                .iter()
                .any(|(id, print)| id == method_id && print != fingerprint);
            if differs {
                compatibility.incompatible.push((service_id, *method_id));
            }
        }
        if !compatibility.incompatible.is_empty() {
            self.any_incompatible.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the client declared a different fingerprint for this method.
    fn is_incompatible(&self, service_id: u32, method_id: u32) -> bool {
        self.any_incompatible.load(Ordering::Relaxed)
            && lock(&self.compatibility)
                .incompatible
                .contains(&(service_id, method_id))
    }

    /// Runs the server's interceptors on a call about to start; the status and text to
    /// answer with when one refuses it.
    fn intercept(
        &self,
        service: &dyn Dispatch,
        method_id: u32,
        context: &Context,
    ) -> Result<(), (Status, String)> {
        let interceptors = self.server.interceptors();
        if interceptors.is_empty() {
            return Ok(());
        }
        // Interceptors see the canonical names only: a method the service does not have is
        // refused as unknown before any of them runs.
        let Some(method) = service.method_name(method_id) else {
            return Err((Status::UnknownMethod, String::new()));
        };
        let call = CallInfo::new(service.service_name(), method, context);
        for interceptor in interceptors {
            let verdict =
                std::panic::catch_unwind(AssertUnwindSafe(|| interceptor.intercept(&call)));
            let error = match verdict {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => error,
                Err(panic) => {
                    tracing::error!(peer = %self.peer, panic = panic_message(&*panic), "an interceptor panicked");
                    return Err((Status::Internal, "the call was refused".to_owned()));
                }
            };
            return Err(middleware::status_of(&error));
        }
        Ok(())
    }

    /// Registers the inbox of a request stream and grants it its first window.
    fn open_inbox(self: &Arc<Self>, call_id: u32) -> Arc<Inbox> {
        let config = self.server.config();
        let inbox = Inbox::new(
            call_id,
            config.stream_window,
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
            max_frame: self.server.config().max_frame_size,
        };
        stream(sink).await;
    }

    /// Runs a call's remaining work in its own task, registered under its id so that a
    /// cancel or the end of the connection can stop it.
    fn spawn_call(self: &Arc<Self>, call_id: u32, work: impl Future<Output = ()> + Send + 'static) {
        let conn = self.clone();
        // Hold the table's lock across the spawn, so the task cannot finish (and remove its
        // entry) before the entry exists.
        let mut handlers = self.handlers();
        let task = tokio::spawn(async move {
            work.await;
            conn.finish_call(call_id);
        });
        handlers.insert(call_id, task.abort_handle());
    }

    /// Stops a running call; returns whether there was one.
    fn cancel(&self, call_id: u32) -> bool {
        let handle = self.handlers().remove(&call_id);
        let Some(handle) = handle else {
            return false;
        };
        handle.abort();
        self.forget_streams(call_id);
        self.notify_if_drained();
        true
    }

    fn finish_call(&self, call_id: u32) {
        self.handlers().remove(&call_id);
        self.forget_streams(call_id);
        self.notify_if_drained();
    }

    /// Drops what a finished or cancelled call kept for its streams.
    fn forget_streams(&self, call_id: u32) {
        self.close_inbox(call_id);
        lock(&self.credits).remove(&call_id);
    }

    fn notify_if_drained(&self) {
        if self.draining.load(Ordering::Acquire) && self.handlers().is_empty() {
            self.drained.notify_one();
        }
    }

    fn abort_handlers(&self) {
        for (_, handle) in self.handlers().drain() {
            handle.abort();
        }
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

    /// Queues an error response now (they are small; see `respond` for results).
    fn respond_error(&self, call_id: u32, status: Status, message: &[u8]) {
        if status != Status::Unavailable && status != Status::HandlerPanicked {
            self.charge_error();
        }
        observe::count_refusal(self.server.config().metrics, status);
        let max_frame = self.server.config().max_frame_size;
        self.outbox.push_now(|buf| {
            // An error message never comes near the frame limit; if it did, drop the text.
            if wire::encode_response(buf, call_id, status, message, max_frame).is_err() {
                let _ = wire::encode_response(buf, call_id, status, b"", max_frame);
            }
        });
    }

    /// Counts one error the client caused against its budget.
    fn charge_error(&self) {
        let mut budget = lock(&self.errors);
        let now = Instant::now();
        if now.duration_since(budget.window_start) >= ERROR_WINDOW {
            budget.window_start = now;
            budget.spent = 0;
        }
        budget.spent = budget.spent.saturating_add(1);
        if budget.spent > self.server.config().error_budget {
            self.over_budget.store(true, Ordering::Relaxed);
        }
    }

    /// Queues a handler's outcome, waiting for room in the outbox. Returns whether it was
    /// queued.
    async fn respond(&self, call_id: u32, outcome: HandlerOutcome) -> bool {
        let max_frame = self.server.config().max_frame_size;
        let pushed = self
            .outbox
            .push(Lane::Lone, |buf| {
                encode_outcome(buf, call_id, outcome, max_frame, &self.peer)
            })
            .await;
        if let Err(error) = pushed {
            tracing::debug!(peer = %self.peer, call_id, %error, "could not queue a response");
            return false;
        }
        true
    }
}

/// Appends the response frame for a handler's outcome, encoding a reply straight into the
/// frame. A reply that cannot be encoded, or panics while encoding, or is over the frame
/// limit, is replaced by the matching error answer, so the call still ends.
fn encode_outcome(
    buf: &mut BytesMut,
    call_id: u32,
    outcome: HandlerOutcome,
    max_frame: usize,
    peer: &Peer,
) -> Result<(), RpcError> {
    let reply = match outcome {
        HandlerOutcome::Replied(reply) => {
            if let Some((status, message)) = reply.refusal() {
                return wire::encode_response(buf, call_id, status, message.as_bytes(), max_frame);
            }
            reply
        }
        HandlerOutcome::Panicked(_) => {
            return wire::encode_response(buf, call_id, Status::HandlerPanicked, b"", max_frame);
        }
        HandlerOutcome::DeadlineExceeded => {
            return wire::encode_response(buf, call_id, Status::DeadlineExceeded, b"", max_frame);
        }
    };
    let start = wire::start_frame(buf, FrameKind::Response);
    buf.put_u8(Status::Ok as u8);
    buf.put_u32(call_id);
    let encoded = std::panic::catch_unwind(AssertUnwindSafe(|| reply.encode_into(buf)));
    let (status, text): (Status, &[u8]) = match encoded {
        Ok(Ok(())) => match wire::finish_frame(buf, start, max_frame) {
            Err(RpcError::FrameTooLarge { len, max }) => {
                tracing::warn!(%peer, call_id, len, max, "a response was over the frame limit");
                let text = format!("{len} {max}");
                return wire::encode_response(
                    buf,
                    call_id,
                    Status::ResponseTooLarge,
                    text.as_bytes(),
                    max_frame,
                );
            }
            other => return other,
        },
        Ok(Err(error)) => {
            wire::abandon_frame(buf, start);
            tracing::error!(%peer, call_id, %error, "a handler's result could not be encoded");
            (Status::Internal, b"the result could not be encoded")
        }
        Err(panic) => {
            wire::abandon_frame(buf, start);
            tracing::error!(%peer, call_id, panic = panic_message(&*panic), "a result panicked while encoding");
            (Status::HandlerPanicked, b"")
        }
    };
    wire::encode_response(buf, call_id, status, text, max_frame)
}

enum HandlerOutcome {
    Replied(Reply),
    /// The handler panicked with this message (kept in the log, never sent).
    Panicked(String),
    DeadlineExceeded,
}

impl From<Result<Reply, Box<dyn Any + Send>>> for HandlerOutcome {
    fn from(outcome: Result<Reply, Box<dyn Any + Send>>) -> Self {
        match outcome {
            Ok(reply) => HandlerOutcome::Replied(reply),
            Err(panic) => HandlerOutcome::Panicked(panic_message(&*panic)),
        }
    }
}

impl HandlerOutcome {
    /// The outcome's name, for spans and metrics.
    fn kind(&self) -> &'static str {
        match self {
            HandlerOutcome::Replied(reply) => match reply.refusal() {
                Some((status, _)) => observe::status_kind(status),
                None => "ok",
            },
            HandlerOutcome::Panicked(_) => "handler_panicked",
            HandlerOutcome::DeadlineExceeded => "deadline_exceeded",
        }
    }

    /// Splits off the response stream a handler's reply starts, if any.
    fn take_stream(&mut self) -> Option<StreamStarter> {
        match self {
            HandlerOutcome::Replied(reply) => reply.take_stream(),
            _ => None,
        }
    }
}

async fn run_handler(
    guarded: CatchUnwind<HandlerFuture>,
    deadline: Option<Instant>,
) -> HandlerOutcome {
    let outcome = match deadline {
        Some(deadline) => match tokio::time::timeout_at(deadline.into(), guarded).await {
            Ok(outcome) => outcome,
            Err(_elapsed) => return HandlerOutcome::DeadlineExceeded,
        },
        None => guarded.await,
    };
    HandlerOutcome::from(outcome)
}
