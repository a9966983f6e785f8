//! The driver of one server connection: reads frames and hands each to its call or stream,
//! and keeps the connection's timers (idle, keepalive pings, maximum age, the grace period
//! of a drain).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;

use super::{ConnState, Shutdown};
use crate::config::ServerConfig;
use crate::error::RpcError;
use crate::recover::lock;
use crate::status::{self, Status};
use crate::transport::FrameRead;
use crate::wire::{self, Frame};

/// How a connection's driver ended.
pub(super) enum Ending {
    /// Flush what is queued, then close.
    Clean,
    /// Close at once.
    Failed(RpcError),
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
}

impl Driver {
    pub(super) fn new(conn: Arc<ConnState>, writer_task: JoinHandle<Result<(), RpcError>>) -> Self {
        Driver {
            conn,
            writer_task,
            draining: false,
            highest_call_id: 0,
            frames_received: 0,
            requests_received: 0,
            ping_opaque: None,
        }
    }

    /// Serves the connection until it ends; how it ended says how to close it.
    pub(super) async fn run<R: FrameRead>(
        &mut self,
        reader: &mut R,
        shutdown: &Shutdown,
    ) -> Ending {
        let config = self.conn.config().clone();
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
        let mut requests_at_last_idle_check = 0;
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
            if self.draining && self.conn.running.len() == 0 {
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
                    self.start_draining(shutdown.reason());
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
                        running = self.conn.running.len(),
                        "grace period over; abandoning the calls still running"
                    );
                    return Ending::Clean;
                }
                () = self.conn.drained.notified(), if self.draining => {}
                // The idle timer fires once per idle period; a period with no request and no
                // call running ends the connection (so idleness is noticed after one to two
                // periods, without reading the clock for every frame).
                () = &mut idle_timer, if config.idle_timeout.is_some() && !self.draining => {
                    let Some(idle_timeout) = config.idle_timeout else { continue };
                    let quiet = self.requests_received == requests_at_last_idle_check;
                    if quiet && self.conn.running.len() == 0 {
                        tracing::debug!(peer = %self.conn.peer, "closing an idle connection");
                        self.start_draining("the connection was idle");
                    } else {
                        requests_at_last_idle_check = self.requests_received;
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
                        _ if self.conn.running.len() > 0 => {
                            let opaque = self.frames_received;
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
fn grace_deadline(config: &ServerConfig) -> tokio::time::Instant {
    let now = Instant::now();
    now.checked_add(config.shutdown_grace_period)
        .unwrap_or(now)
        .into()
}

/// `age` give or take up to 10 %, at random, so connections opened together do not all
/// close together.
fn jittered(age: Duration) -> Duration {
    age.mul_f64(fastrand::f64().mul_add(0.2, 0.9))
}
