//! The driver of one server connection: reads frames and hands each to its call or stream,
//! and keeps the connection's timers (idle, keepalive pings, maximum age, the grace period
//! of a drain).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;

use super::waiting::WaitingCalls;
use super::{ConnState, Shutdown};
use crate::client_connection::{ACCEPTOR_FIRST_ID, DIALLER_FIRST_ID};
use crate::config::ServerConfig;
use crate::error::RpcError;
use crate::recover::lock;
use crate::status::{self, Status};
use crate::transport::{BufferBudget, FrameRead};
use crate::wire::{self, Frame};

/// How a connection's driver ended.
pub(super) enum Ending {
    /// Flush what is queued, then close; why, for this side's own calls still in flight.
    Clean(&'static str),
    /// Close at once.
    Failed(RpcError),
    /// This side finished writing on its own: the channel of a side that dialled was
    /// dropped. Nothing is left to flush.
    Finished,
}

/// Reads one connection's frames and keeps its timers.
pub(super) struct Driver {
    conn: Arc<ConnState>,
    /// The connection's writer; it only ends on its own when writing failed.
    pub(super) writer_task: JoinHandle<Result<(), RpcError>>,
    draining: bool,
    highest_call_id: u32,
    /// Frames received so far: the keepalive timer compares it between its firings (any
    /// frame shows the client is alive).
    frames_received: u64,
    /// Requests received so far: the idle timer compares it between its firings rather
    /// than reading the clock for every frame. Only calls keep a connection from being idle:
    /// frames that ask for nothing (pongs, stray stream frames) do not.
    requests_received: u64,
    /// The opaque of the keepalive ping the client has not answered yet; a PONG that
    /// answers no ping is a useless frame, charged like one.
    ping_opaque: Option<u64>,
    /// Whether this side accepted the connection (see `End`): it then keeps the idle and
    /// age timers, and calls its peer under even call ids.
    accepted: bool,
    /// The frame limit compressed frames may inflate to, when this side's preface accepted
    /// them.
    inflate: Option<usize>,
    /// Requests that wait for a permit while the driver keeps reading: only where both
    /// sides call (boxed, so that other connections' tasks stay small).
    waiting: Option<Box<WaitingCalls>>,
}

/// Why this side's own calls fail when it closes a connection in order.
const CLOSING: &str = "this side closed the connection";

/// The most frames the driver takes from its reader's buffer in one turn of its `select!`,
/// so that its other branches (the writer ending, shutdown, timers) are still looked at
/// often while a stream of small requests is read.
const FRAMES_PER_TURN: usize = 32;

/// The top bit of the opaque of the driver's keepalive pings: on a connection where both
/// sides call, it tells the driver's PONGs from those of this side's own calling engine.
const DRIVER_PING: u64 = 1 << 63;

impl Driver {
    pub(super) fn new(
        conn: Arc<ConnState>,
        writer_task: JoinHandle<Result<(), RpcError>>,
        accepted: bool,
        buffers: &BufferBudget,
        inflate: Option<usize>,
    ) -> Self {
        let max_waiting = conn.config().max_concurrent_calls.max(1);
        let waiting = conn
            .outgoing
            .as_ref()
            .map(|_| Box::new(WaitingCalls::new(max_waiting, buffers.charge())));
        Driver {
            conn,
            writer_task,
            draining: false,
            highest_call_id: 0,
            frames_received: 0,
            requests_received: 0,
            ping_opaque: None,
            accepted,
            inflate,
            waiting,
        }
    }

    /// Serves the connection until it ends; how it ended says how to close it.
    pub(super) async fn run<R: FrameRead>(
        &mut self,
        reader: &mut R,
        shutdown: &Shutdown,
    ) -> Ending {
        let mut config = self.conn.config().clone();
        if !self.accepted {
            // The side that dialled closes the connection when its channel is dropped.
            config.idle_timeout = None;
            config.max_connection_age = None;
        }
        let calls_both_ways = self.conn.outgoing.is_some();
        let shutdown_signal = shutdown.triggered();
        tokio::pin!(shutdown_signal);
        let far_future = Instant::now() + Duration::from_secs(86_400 * 365);
        // One timer for the connection's life (each timer is memory every connection holds):
        // the next idle check or the maximum age, whichever comes first, and once draining,
        // the end of the grace period.
        let idle_check_after =
            |now: Instant| config.idle_timeout.and_then(|idle| now.checked_add(idle));
        let mut next_idle_check = idle_check_after(Instant::now());
        let age_limit = config
            .max_connection_age
            .and_then(|age| Instant::now().checked_add(jittered(age)));
        let mut grace_ends: Option<Instant> = None;
        let next_event = |next_idle_check: Option<Instant>, grace_ends: Option<Instant>| {
            let before_draining = match (next_idle_check, age_limit) {
                (Some(idle), Some(age)) => Some(idle.min(age)),
                (idle, age) => idle.or(age),
            };
            grace_ends.or(before_draining).unwrap_or(far_future)
        };
        let lifetime_timer = tokio::time::sleep_until(next_event(next_idle_check, None).into());
        tokio::pin!(lifetime_timer);
        let mut requests_at_last_idle_check = 0;
        let ping_timer = tokio::time::sleep_until(
            config
                .keepalive_interval
                .and_then(|interval| Instant::now().checked_add(interval))
                .unwrap_or(far_future)
                .into(),
        );
        tokio::pin!(ping_timer);
        // The frame count when a ping went out and is still unanswered.
        let mut ping_outstanding: Option<u64> = None;
        let mut next_permit: Option<OwnedSemaphorePermit> = None;
        loop {
            if self.draining && self.conn.running.len() == 0 {
                return Ending::Clean(CLOSING);
            }
            // A permit free now is taken here, not by a turn of the `select!` below: that
            // turn polls every other branch too, and would come once per request.
            if next_permit.is_none() {
                next_permit = self.free_permit();
            }
            if calls_both_ways && next_permit.is_some() {
                if let Err(error) = self.start_waiting_calls(&mut next_permit) {
                    return Ending::Failed(error);
                }
            }
            tokio::select! {
                biased;
                // The writer only stops on its own when writing failed (a clean finish is
                // asked for after this loop), and its handle must not be polled again.
                writer_outcome = &mut self.writer_task => {
                    return match writer_outcome {
                        Ok(Ok(())) => Ending::Finished,
                        Ok(Err(error)) => Ending::Failed(error),
                        Err(join_error) => Ending::Failed(RpcError::Internal {
                            message: format!("writer task failed: {join_error}").into(),
                        }),
                    };
                }
                () = &mut shutdown_signal, if !self.draining => {
                    self.start_draining(shutdown.reason());
                    grace_ends = Some(grace_deadline(&config));
                    lifetime_timer.as_mut().reset(next_event(next_idle_check, grace_ends).into());
                }
                () = self.conn.drained.notified(), if self.draining => {}
                () = &mut lifetime_timer => {
                    let now = Instant::now();
                    if grace_ends.is_some_and(|grace| now >= grace) {
                        tracing::info!(
                            peer = %self.conn.peer,
                            running = self.conn.running.len(),
                            "grace period over; abandoning the calls still running"
                        );
                        return Ending::Clean(CLOSING);
                    }
                    if grace_ends.is_none() && age_limit.is_some_and(|age| now >= age) {
                        tracing::debug!(peer = %self.conn.peer, "closing a connection past its maximum age");
                        self.start_draining("max connection age");
                        grace_ends = Some(grace_deadline(&config));
                    } else if grace_ends.is_none() && next_idle_check.is_some_and(|check| now >= check) {
                        // One check per idle period: a period with no request and no call
                        // running ends the connection (so idleness is noticed after one to
                        // two periods, without reading the clock for every frame).
                        let quiet = self.requests_received == requests_at_last_idle_check
                            && self.conn.outgoing.as_ref().is_none_or(|calls| calls.calls_in_flight() == 0);
                        if quiet && self.conn.running.len() == 0 {
                            tracing::debug!(peer = %self.conn.peer, "closing an idle connection");
                            self.start_draining("the connection was idle");
                            grace_ends = Some(grace_deadline(&config));
                        } else {
                            requests_at_last_idle_check = self.requests_received;
                            next_idle_check = idle_check_after(now);
                        }
                    }
                    lifetime_timer.as_mut().reset(next_event(next_idle_check, grace_ends).into());
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
                        _ if self.conn.running.len() > 0 => {
                            let opaque = self.frames_received | DRIVER_PING;
                            self.ping_opaque = Some(opaque);
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
                // Where both sides call, reading never waits for a permit: answers to this
                // side's calls come behind the peer's requests (see `waiting.rs`).
                frame = reader.read_frame(), if next_permit.is_some() || calls_both_ways => {
                    let mut frame = match frame {
                        Ok(Some(frame)) => frame,
                        Ok(None) => return Ending::Clean("the peer closed the connection"),
                        Err(error) => return Ending::Failed(error),
                    };
                    // The requests one read brought in whole are taken here, a few at a
                    // time, rather than each by a turn of the `select!`, which polls every
                    // other branch too.
                    for taken in 1.. {
                        if let Some(ending) = self.take_read_frame(frame, reader, &mut next_permit) {
                            return ending;
                        }
                        if taken == FRAMES_PER_TURN || calls_both_ways || self.draining {
                            break;
                        }
                        if next_permit.is_none() {
                            next_permit = self.free_permit();
                            if next_permit.is_none() {
                                break;
                            }
                        }
                        frame = match reader.buffered_frame() {
                            Ok(Some(frame)) => frame,
                            Ok(None) => break,
                            Err(error) => return Ending::Failed(error),
                        };
                    }
                }
            }
        }
    }

    /// A handler permit, if one is free now.
    fn free_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.conn.permits.clone().try_acquire_owned().ok()
    }

    /// Takes a frame just read; `Some` when the connection ends here.
    fn take_read_frame<R: FrameRead>(
        &mut self,
        frame: Bytes,
        reader: &R,
        next_permit: &mut Option<OwnedSemaphorePermit>,
    ) -> Option<Ending> {
        self.frames_received += 1;
        // With more requests already buffered, their responses should leave together
        // rather than each on its own.
        let alone = !reader.has_buffered_bytes();
        if let Err(error) = self.take_frame(frame, alone, next_permit) {
            return Some(Ending::Failed(error));
        }
        if self.conn.over_budget.load(Ordering::Relaxed) {
            tracing::info!(peer = %self.conn.peer, "closing a connection that caused too many errors");
            self.conn
                .outbox
                .push_now(|buf| wire::encode_go_away(buf, self.highest_call_id, "too many errors"));
            return Some(Ending::Clean("the peer caused too many errors"));
        }
        None
    }

    fn start_draining(&mut self, reason: &str) {
        self.draining = true;
        self.conn.draining.store(true, Ordering::Release);
        let waiting = self.waiting.as_deref_mut().map(WaitingCalls::drain_ids);
        for call_id in waiting.unwrap_or_default() {
            self.conn
                .respond_error(call_id, Status::Unavailable, reason.as_bytes());
        }
        let last_call_id = self.highest_call_id;
        self.conn
            .outbox
            .push_now(|buf| wire::encode_go_away(buf, last_call_id, reason));
    }

    /// Takes one frame from the peer. Where both sides call, the frames of this side's own
    /// calls go to its calling engine, and requests that cannot start wait (with the frames
    /// that follow them) instead of stopping the reading. An error closes the connection.
    fn take_frame(
        &mut self,
        bytes: Bytes,
        alone: bool,
        next_permit: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<(), RpcError> {
        let size = bytes.len();
        let bytes = wire::inflate(bytes, self.inflate)?;
        let frame = Frame::parse(bytes)?;
        let Some(outgoing) = &self.conn.outgoing else {
            return self.handle_frame(frame, alone, next_permit);
        };
        if self.concerns_own_call(&frame) {
            return outgoing.handle_frame(frame);
        }
        let own_parity = self.own_parity();
        let Some(waiting) = self.waiting.as_deref_mut() else {
            return self.handle_frame(frame, alone, next_permit);
        };
        match frame.call_id() {
            Some(call_id) if waiting.holds(call_id) => {
                if let Frame::Cancel { .. } = frame {
                    waiting.cancel(call_id);
                    return Ok(());
                }
                waiting.push_frame(call_id, size, frame)
            }
            Some(call_id) if matches!(frame, Frame::Request { .. }) => {
                if call_id % 2 == own_parity {
                    return Err(RpcError::protocol(
                        "a request under a call id of the other side's parity",
                    ));
                }
                if next_permit.is_some() {
                    return self.handle_frame(frame, alone, next_permit);
                }
                if let Err(refusal) = waiting.push_request(call_id, size, frame) {
                    let (status, text) = crate::status::for_refusal(&refusal);
                    self.conn.respond_busy(call_id, status, &text);
                }
                Ok(())
            }
            _ => self.handle_frame(frame, alone, next_permit),
        }
    }

    /// The parity of this side's own call ids (those of its calling engine).
    fn own_parity(&self) -> u32 {
        let first_id = if self.accepted {
            ACCEPTOR_FIRST_ID
        } else {
            DIALLER_FIRST_ID
        };
        first_id % 2
    }

    /// Whether a frame concerns one of this side's own calls to its peer (on a connection
    /// where both sides call): responses, the peer's GOAWAY, PONGs to the calling engine's
    /// pings, and stream frames under this side's call ids.
    fn concerns_own_call(&self, frame: &Frame) -> bool {
        match frame {
            Frame::Response { .. } | Frame::GoAway { .. } => true,
            Frame::Pong { opaque } => opaque & DRIVER_PING == 0,
            Frame::Request { .. }
            | Frame::Cancel { .. }
            | Frame::Declare { .. }
            | Frame::Ping { .. } => false,
            Frame::StreamItem { call_id, .. }
            | Frame::StreamPart { call_id, .. }
            | Frame::StreamEnd { call_id, .. }
            | Frame::Window { call_id, .. }
            | Frame::StopStream { call_id } => call_id % 2 == self.own_parity(),
        }
    }

    /// Starts waiting calls while permits last.
    fn start_waiting_calls(
        &mut self,
        next_permit: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<(), RpcError> {
        while next_permit.is_some() {
            let Some(frames) = self
                .waiting
                .as_deref_mut()
                .and_then(WaitingCalls::next_call)
            else {
                return Ok(());
            };
            for frame in frames {
                self.handle_frame(frame, false, next_permit)?;
            }
        }
        Ok(())
    }

    /// Handles one frame of the peer's calls. An error closes the connection.
    fn handle_frame(
        &mut self,
        frame: Frame,
        alone: bool,
        next_permit: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<(), RpcError> {
        match frame {
            Frame::Request {
                head,
                metadata,
                payload,
            } => {
                self.highest_call_id = self.highest_call_id.max(head.call_id);
                self.requests_received += 1;
                if self.draining {
                    self.conn.respond_error(
                        head.call_id,
                        Status::Unavailable,
                        "the server is shutting down".as_bytes(),
                    );
                    return Ok(());
                }
                if let Some(permit) = next_permit.take() {
                    *next_permit = self.conn.start_call(head, metadata, payload, permit, alone);
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
            Frame::Pong { opaque } => {
                if self.ping_opaque == Some(opaque) {
                    self.ping_opaque = None;
                } else {
                    self.conn.charge_error();
                }
                Ok(())
            }
            // A client has nothing to announce with GOAWAY (it closes instead): a useless
            // frame, charged like one.
            Frame::GoAway { .. } => {
                self.conn.charge_error();
                Ok(())
            }
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
                match inbox {
                    Some(inbox) => inbox.finish(match status {
                        Status::Ok => Ok(()),
                        // The server does not name the client's own stream back to it.
                        status => Err(status::to_error("", "", status, &text)),
                    }),
                    // The end of a stream the server does not have: a frame for nothing.
                    None => self.conn.charge_error(),
                }
                Ok(())
            }
            Frame::Window {
                call_id,
                credit,
                bytes,
            } => {
                // Credit is kept only for calls that are running; the first WINDOW of a
                // call may come before its handler has returned its stream.
                if self.conn.running.contains(call_id) {
                    self.conn.credit(call_id).grant(credit, bytes);
                } else {
                    self.conn.charge_error();
                }
                Ok(())
            }
            Frame::StopStream { call_id } => {
                let credit = lock(&self.conn.credits).remove(&call_id);
                match credit {
                    Some(credit) => credit.stop(),
                    // A stop for a stream the server is not sending: a frame for nothing.
                    None => self.conn.charge_error(),
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

/// When the calls of a connection that started draining now are abandoned.
fn grace_deadline(config: &ServerConfig) -> Instant {
    let now = Instant::now();
    now.checked_add(config.shutdown_grace_period).unwrap_or(now)
}

/// `age` give or take up to 10 %, at random, so connections opened together do not all
/// close together.
fn jittered(age: Duration) -> Duration {
    age.mul_f64(fastrand::f64().mul_add(0.2, 0.9))
}
