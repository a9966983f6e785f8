//! `Channel`: one multiplexed client connection, shared by any number of clients.
//!
//! The life of a call on this side: [`Channel::call`] registers a pending slot in the
//! in-flight table, encodes the request straight into the connection's [`Outbox`], and waits
//! on the slot. The reader task fills slots as responses arrive, in any order. A call that is
//! dropped first removes its slot and queues a cancel frame; a connection that fails fills
//! every slot with the error at once.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::codec;
use crate::config::ChannelConfig;
use crate::context::Peer;
use crate::error::RpcError;
use crate::outbox::{self, InFlight, Outbox};
use crate::transport::{Connection, FrameRead, FrameWrite};
use crate::wire::{self, Frame, RequestHead, Status};

/// What a client needs to address one method: names for errors and logs, ids for the wire.
///
/// The `#[service]` macro emits one per method.
#[derive(Debug, Clone, Copy)]
pub struct MethodSpec {
    /// The service's name (the trait's name).
    pub service: &'static str,
    /// The method's name.
    pub method: &'static str,
    /// [`wire::wire_id`] of `service`.
    pub service_id: u32,
    /// [`wire::wire_id`] of `method`.
    pub method_id: u32,
}

/// Per-call settings a client carries: timeout, deadline and metadata.
///
/// Cheap to clone: metadata is shared.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    metadata: Arc<Vec<(String, String)>>,
}

impl CallOptions {
    /// These options with a timeout counted from the start of each call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// These options with a fixed deadline.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// These options with one more metadata pair.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.metadata).push((key.into(), value.into()));
        self
    }

    /// The deadline of a call starting now: the earlier of the fixed deadline and the
    /// timeout (or `default_timeout` when neither is set).
    fn deadline_for_call(&self, default_timeout: Option<Duration>) -> Option<Instant> {
        let timeout = match self.deadline {
            Some(_) => self.timeout,
            None => self.timeout.or(default_timeout),
        };
        // Read the clock only for calls that have a timeout.
        let from_timeout = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        match (self.deadline, from_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// One connection to a server, multiplexing any number of concurrent calls to any of its
/// services. Cheap to clone; clones share the connection.
///
/// Transports make channels (`rpc_transport::tcp::connect` and friends). When every clone
/// is dropped the channel flushes what it queued and closes the connection.
#[derive(Debug, Clone)]
pub struct Channel {
    handle: Arc<ChannelHandle>,
}

/// Dropped when the last `Channel` clone is: starts an orderly close.
#[derive(Debug)]
struct ChannelHandle {
    shared: Arc<ChannelShared>,
}

impl Drop for ChannelHandle {
    fn drop(&mut self) {
        self.shared.outbox.finish();
    }
}

#[derive(Debug)]
struct ChannelShared {
    calls: Mutex<CallTable>,
    outbox: Arc<Outbox>,
    config: ChannelConfig,
    peer: Arc<Peer>,
    reader_task: Mutex<Option<AbortHandle>>,
    closed_notify: Notify,
}

#[derive(Debug)]
struct CallTable {
    next_id: u32,
    pending: HashMap<u32, PendingCall, BuildHasherDefault<CallIdHasher>>,
    /// Set once the connection is gone: every later call fails with it.
    closed: Option<RpcError>,
    /// Set when the server said it is going away: later calls fail fast with it.
    going_away: Option<RpcError>,
}

#[derive(Debug)]
enum PendingCall {
    Waiting(Option<Waker>),
    Done(Result<(Status, Bytes), RpcError>),
}

/// Call ids are small sequential integers: they are their own hash.
#[derive(Debug, Default)]
struct CallIdHasher(u64);

impl Hasher for CallIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8) | u64::from(*byte);
        }
    }

    fn write_u32(&mut self, value: u32) {
        // Spread sequential ids over hashbrown's control bits (the top 7 bits).
        self.0 = u64::from(value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl Channel {
    /// Starts a channel over an established connection. It sends its preface at once and
    /// spawns a reader and a writer task on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn new<R: FrameRead, W: FrameWrite>(
        connection: Connection<R, W>,
        config: ChannelConfig,
    ) -> Channel {
        let Connection {
            reader,
            writer,
            peer,
        } = connection;
        let outbox = Arc::new(Outbox::new(&wire::PREFACE));
        let shared = Arc::new(ChannelShared {
            calls: Mutex::new(CallTable {
                next_id: 1,
                pending: HashMap::default(),
                closed: None,
                going_away: None,
            }),
            outbox: outbox.clone(),
            config,
            peer,
            reader_task: Mutex::new(None),
            closed_notify: Notify::new(),
        });
        let write_timeout = shared.config.write_timeout;
        let writer_shared = shared.clone();
        tokio::spawn(async move {
            let outcome = outbox::run_writer(outbox, writer, write_timeout).await;
            let error = match outcome {
                Ok(()) => RpcError::connection_closed("the channel was dropped"),
                Err(error) => error,
            };
            writer_shared.close(error);
        });
        let reader_shared = shared.clone();
        let reader_task = tokio::spawn(async move {
            let error = match read_responses(&reader_shared, reader).await {
                Ok(()) => RpcError::connection_closed("the server closed the connection"),
                Err(error) => error,
            };
            reader_shared.close(error);
        });
        *lock(&shared.reader_task) = Some(reader_task.abort_handle());
        if shared.is_closed() {
            // The reader failed before its handle was stored: stop it now.
            reader_task.abort();
        }
        Channel {
            handle: Arc::new(ChannelHandle { shared }),
        }
    }

    /// Who is at the other end.
    pub fn peer(&self) -> &Peer {
        &self.handle.shared.peer
    }

    /// The channel's configuration.
    pub fn config(&self) -> &ChannelConfig {
        &self.handle.shared.config
    }

    /// Whether the connection has ended: every call made now fails at once.
    pub fn is_closed(&self) -> bool {
        self.handle.shared.is_closed()
    }

    /// Resolves once the connection has ended, with the reason.
    pub async fn closed(&self) -> RpcError {
        let shared = &self.handle.shared;
        loop {
            let notified = shared.closed_notify.notified();
            if let Some(error) = lock(&shared.calls).closed.clone() {
                return error;
            }
            notified.await;
        }
    }

    /// Calls `method` with `args` and decodes its result. Generated clients call this; it
    /// is public so that hand-written clients can too.
    ///
    /// # Errors
    ///
    /// Any [`RpcError`]: the call ends with its result or one error, never by hanging past
    /// its deadline or its connection.
    pub async fn call<A, R>(
        &self,
        method: &MethodSpec,
        options: &CallOptions,
        args: &A,
    ) -> Result<R, RpcError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let shared = &self.handle.shared;
        let deadline = options.deadline_for_call(shared.config.default_timeout);
        let exchange = shared.exchange(method, deadline, &options.metadata, args);
        let (status, payload) = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), exchange)
                .await
                .map_err(|_elapsed| RpcError::DeadlineExceeded {})??,
            None => exchange.await?,
        };
        decode_response(method, status, &payload)
    }
}

impl ChannelShared {
    fn is_closed(&self) -> bool {
        lock(&self.calls).closed.is_some()
    }

    /// Sends one request and waits for its response frame.
    async fn exchange<A: Serialize + ?Sized>(
        &self,
        method: &MethodSpec,
        deadline: Option<Instant>,
        metadata: &[(String, String)],
        args: &A,
    ) -> Result<(Status, Bytes), RpcError> {
        let call_id = self.register_call()?;
        let mut guard = CallGuard {
            shared: self,
            call_id,
            sent: false,
            _in_flight: InFlight::new(&self.outbox),
        };
        let max_frame = self.config.max_frame_size;
        self.outbox
            .push(true, |buf| {
                let deadline_micros = match deadline {
                    Some(deadline) => {
                        let remaining = deadline.saturating_duration_since(Instant::now());
                        if remaining.is_zero() {
                            return Err(RpcError::DeadlineExceeded {});
                        }
                        Some(
                            u64::try_from(remaining.as_micros())
                                .unwrap_or(u64::MAX)
                                .max(1),
                        )
                    }
                    None => None,
                };
                let head = RequestHead {
                    call_id,
                    service_id: method.service_id,
                    method_id: method.method_id,
                    deadline_micros,
                };
                let start = wire::start_request(buf, &head, metadata)?;
                if let Err(error) = codec::encode_into(buf, args) {
                    wire::abandon_frame(buf, start);
                    return Err(error);
                }
                wire::finish_frame(buf, start, max_frame)
            })
            .await?;
        guard.sent = true;
        let outcome = ResponseWait {
            shared: self,
            call_id,
        }
        .await;
        guard.sent = false;
        outcome
    }

    fn register_call(&self) -> Result<u32, RpcError> {
        let mut calls = lock(&self.calls);
        if let Some(error) = calls.closed.as_ref().or(calls.going_away.as_ref()) {
            return Err(error.clone());
        }
        // Ids wrap after 2^32 calls; skip 0 and any id still in flight.
        let mut call_id = calls.next_id;
        while call_id == 0 || calls.pending.contains_key(&call_id) {
            call_id = call_id.wrapping_add(1);
        }
        calls.next_id = call_id.wrapping_add(1);
        calls.pending.insert(call_id, PendingCall::Waiting(None));
        Ok(call_id)
    }

    fn complete(&self, call_id: u32, outcome: Result<(Status, Bytes), RpcError>) {
        let mut calls = lock(&self.calls);
        let Some(slot) = calls.pending.get_mut(&call_id) else {
            tracing::debug!(call_id, "response for a call that is no longer waiting");
            return;
        };
        let waker = match slot {
            PendingCall::Waiting(waker) => waker.take(),
            PendingCall::Done(_) => return,
        };
        *slot = PendingCall::Done(outcome);
        drop(calls);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The server is draining: calls already sent finish (or fail as it closes); new calls
    /// fail fast.
    fn go_away(&self, reason: String) {
        let mut calls = lock(&self.calls);
        calls.going_away = Some(RpcError::Unavailable {
            reason: format!("the server is going away: {reason}").into(),
        });
    }

    /// Fails every pending and later call with `error`.
    fn close(&self, error: RpcError) {
        let mut wakers = Vec::new();
        {
            let mut calls = lock(&self.calls);
            if calls.closed.is_none() {
                calls.closed = Some(error.clone());
            }
            for slot in calls.pending.values_mut() {
                if let PendingCall::Waiting(waker) = slot {
                    wakers.extend(waker.take());
                    *slot = PendingCall::Done(Err(error.clone()));
                }
            }
        }
        for waker in wakers {
            waker.wake();
        }
        self.outbox.fail(error);
        if let Some(reader) = lock(&self.reader_task).take() {
            reader.abort();
        }
        self.closed_notify.notify_waiters();
    }
}

async fn read_responses<R: FrameRead>(
    shared: &ChannelShared,
    mut reader: R,
) -> Result<(), RpcError> {
    let preface_timeout = shared.config.preface_timeout;
    tokio::time::timeout(preface_timeout, reader.read_preface())
        .await
        .map_err(|_elapsed| {
            RpcError::protocol(format!(
                "the server sent no preface within {preface_timeout:?}"
            ))
        })??;
    while let Some(frame) = reader.read_frame().await? {
        match Frame::parse(frame)? {
            Frame::Response {
                call_id,
                status,
                payload,
            } => shared.complete(call_id, Ok((status, payload))),
            Frame::GoAway { reason, .. } => shared.go_away(reason),
            Frame::Request { .. } | Frame::Cancel { .. } => {
                return Err(RpcError::protocol("the server sent a client-only frame"));
            }
        }
    }
    Ok(())
}

fn decode_response<R: DeserializeOwned>(
    method: &MethodSpec,
    status: Status,
    payload: &[u8],
) -> Result<R, RpcError> {
    let message = || -> Arc<str> { String::from_utf8_lossy(payload).into() };
    Err(match status {
        Status::Ok => return codec::decode(payload),
        Status::UnknownService => RpcError::UnknownService {
            service: method.service.into(),
        },
        Status::UnknownMethod => RpcError::UnknownMethod {
            service: method.service.into(),
            method: method.method.into(),
        },
        Status::BadRequest => RpcError::Codec { message: message() },
        Status::HandlerPanicked => RpcError::HandlerPanicked {
            method: method.method.into(),
        },
        Status::DeadlineExceeded => RpcError::DeadlineExceeded {},
        Status::ResponseTooLarge => {
            // The payload is "<len> <max>" in decimal.
            let text = String::from_utf8_lossy(payload);
            let mut numbers = text.split(' ').map(|number| number.parse().unwrap_or(0));
            let len = numbers.next().unwrap_or(0);
            let max = numbers.next().unwrap_or(0);
            RpcError::FrameTooLarge { len, max }
        }
        Status::Unavailable => RpcError::Unavailable { reason: message() },
        Status::ResourceExhausted => RpcError::ResourceExhausted { message: message() },
        Status::Internal => RpcError::Internal { message: message() },
    })
}

/// Removes a call's slot if its future is dropped early, and tells the server.
struct CallGuard<'a> {
    shared: &'a ChannelShared,
    call_id: u32,
    sent: bool,
    /// Counts the call for the outbox's batching decisions.
    _in_flight: InFlight,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        let removed = lock(&self.shared.calls).pending.remove(&self.call_id);
        let was_waiting = matches!(removed, Some(PendingCall::Waiting(_)));
        if self.sent && was_waiting {
            let call_id = self.call_id;
            self.shared
                .outbox
                .push_now(|buf| wire::encode_cancel(buf, call_id));
        }
    }
}

struct ResponseWait<'a> {
    shared: &'a ChannelShared,
    call_id: u32,
}

impl Future for ResponseWait<'_> {
    type Output = Result<(Status, Bytes), RpcError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut calls = lock(&self.shared.calls);
        match calls.pending.get_mut(&self.call_id) {
            Some(PendingCall::Waiting(waker)) => {
                match waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Some(PendingCall::Done(_)) => match calls.pending.remove(&self.call_id) {
                Some(PendingCall::Done(outcome)) => Poll::Ready(outcome),
                _ => Poll::Ready(Err(RpcError::connection_closed("call slot lost"))),
            },
            None => Poll::Ready(Err(calls
                .closed
                .clone()
                .unwrap_or_else(|| RpcError::connection_closed("call slot lost")))),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The tables stay consistent across a panic elsewhere (each update is one statement).
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
