//! One call on a client connection: its request encoded into the outbox, its response
//! waited for within its deadline, and its streams set up; observed from start to end.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::call_table::Response;
use super::{call_error, ClientConnection};
use crate::call::{CallOptions, ClientCall, MethodSpec};
use crate::codec;
use crate::error::RpcError;
use crate::observe::{self, CallObserver};
use crate::outbox::{InFlight, Lane, Outbox};
use crate::recover::lock;
use crate::status::Status;
use crate::stream::{send_stream, Credit, Inbox, StreamItem, StreamSink, Streaming, Window};
use crate::wire::{self, RequestHead};

/// A request's arguments: a value to encode, or bytes encoded already.
trait EncodeArgs {
    fn encode_args(&self, buf: &mut BytesMut) -> Result<(), RpcError>;
}

/// Arguments to encode.
struct Typed<'a, A: ?Sized>(&'a A);

impl<A: Serialize + ?Sized> EncodeArgs for Typed<'_, A> {
    fn encode_args(&self, buf: &mut BytesMut) -> Result<(), RpcError> {
        codec::encode_into(buf, self.0)
    }
}

/// Arguments encoded already (set aside rather than copied when they are large).
struct Encoded<'a>(&'a Bytes);

impl EncodeArgs for Encoded<'_> {
    fn encode_args(&self, buf: &mut BytesMut) -> Result<(), RpcError> {
        crate::blocks::append(buf, self.0);
        Ok(())
    }
}

/// The stream parts of a call.
struct StreamedCall<'a, I> {
    metadata: &'a [(String, String)],
    deadline: Option<Instant>,
    input: Option<Streaming<I>>,
    output: bool,
}

impl ClientConnection {
    /// A unary call: `args` encoded, the result decoded.
    pub(crate) async fn call<A, R>(
        &self,
        method: &MethodSpec,
        options: &CallOptions,
        args: &A,
    ) -> Result<R, RpcError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.unary(
            method,
            options,
            &Typed(args),
            || {},
            |status, payload| decode_response(method, status, &payload),
        )
        .await
    }

    /// A unary call whose arguments are encoded already; the encoded result.
    pub(crate) async fn call_encoded(&self, call: &ClientCall) -> Result<Bytes, RpcError> {
        let method = call.method();
        self.unary(
            method,
            call.options(),
            &Encoded(call.args()),
            || call.mark_sent(),
            |status, payload| match status {
                Status::Ok => Ok(payload),
                status => Err(call_error(method, status, &payload)),
            },
        )
        .await
    }

    /// One unary call, observed, within its deadline; `finish` turns the response into
    /// the result.
    async fn unary<E, T>(
        &self,
        method: &MethodSpec,
        options: &CallOptions,
        args: &E,
        sent: impl FnOnce(),
        finish: impl FnOnce(Status, Bytes) -> Result<T, RpcError>,
    ) -> Result<T, RpcError>
    where
        E: EncodeArgs + ?Sized,
    {
        let deadline = options.deadline_for_call(self.config.default_timeout);
        let (observer, traceparent) = self.observe(method);
        let metadata = self.call_metadata(method, options, traceparent);
        let exchange = self.exchange(method, deadline, &metadata, args, &observer, sent);
        let exchange = observe::within(observer.span(), exchange);
        let outcome = by_deadline(deadline, exchange)
            .await
            .and_then(|(status, payload)| finish(status, payload));
        observer.finish(outcome.as_ref().map_or_else(observe::error_kind, |_| "ok"));
        outcome
    }

    /// A call whose result is a stream, sending `input` as its request stream if it takes
    /// one; it resolves once the server's handler has returned its stream.
    pub(crate) async fn call_streaming<A, I, R>(
        self: &Arc<Self>,
        method: &MethodSpec,
        options: &CallOptions,
        args: &A,
        input: Option<Streaming<I>>,
    ) -> Result<Streaming<R>, RpcError>
    where
        A: Serialize + ?Sized,
        I: Serialize + Send + 'static,
        R: DeserializeOwned,
    {
        let deadline = options.deadline_for_call(self.config.default_timeout);
        let (status, payload, inbox) = self
            .exchange_with_deadline(method, options, deadline, &Typed(args), input, true)
            .await?;
        match (status, inbox) {
            (Status::Ok, Some(inbox)) => Ok(Streaming::remote(inbox, deadline)),
            (status, _) => Err(call_error(method, status, &payload)),
        }
    }

    /// A call whose arguments (and request stream's items, if it sends one) are encoded
    /// already and whose result is a stream of items left encoded.
    pub(crate) async fn call_streaming_encoded(
        self: &Arc<Self>,
        call: &ClientCall,
        input: Option<Streaming<codec::Encoded>>,
    ) -> Result<Streaming<Bytes>, RpcError> {
        let (method, options) = (call.method(), call.options());
        let deadline = options.deadline_for_call(self.config.default_timeout);
        let args = Encoded(call.args());
        let (status, payload, inbox) = self
            .exchange_with_deadline(method, options, deadline, &args, input, true)
            .await?;
        match (status, inbox) {
            (Status::Ok, Some(inbox)) => Ok(Streaming::remote_encoded(inbox, deadline)),
            (status, _) => Err(call_error(method, status, &payload)),
        }
    }

    /// A call whose arguments and request stream's items are encoded already and whose
    /// single result is left encoded.
    pub(crate) async fn call_with_input_encoded(
        self: &Arc<Self>,
        call: &ClientCall,
        input: Streaming<codec::Encoded>,
    ) -> Result<Bytes, RpcError> {
        let (method, options) = (call.method(), call.options());
        let deadline = options.deadline_for_call(self.config.default_timeout);
        let args = Encoded(call.args());
        let (status, payload, _) = self
            .exchange_with_deadline(method, options, deadline, &args, Some(input), false)
            .await?;
        match status {
            Status::Ok => Ok(payload),
            status => Err(call_error(method, status, &payload)),
        }
    }

    /// A call that takes a request stream and returns a single result.
    pub(crate) async fn call_with_input<A, I, R>(
        self: &Arc<Self>,
        method: &MethodSpec,
        options: &CallOptions,
        args: &A,
        input: Streaming<I>,
    ) -> Result<R, RpcError>
    where
        A: Serialize + ?Sized,
        I: Serialize + Send + 'static,
        R: DeserializeOwned,
    {
        let deadline = options.deadline_for_call(self.config.default_timeout);
        let (status, payload, _) = self
            .exchange_with_deadline(method, options, deadline, &Typed(args), Some(input), false)
            .await?;
        decode_response(method, status, &payload)
    }

    async fn exchange_with_deadline<E, I>(
        self: &Arc<Self>,
        method: &MethodSpec,
        options: &CallOptions,
        deadline: Option<Instant>,
        args: &E,
        input: Option<Streaming<I>>,
        output: bool,
    ) -> Result<(Status, Bytes, Option<Arc<Inbox>>), RpcError>
    where
        E: EncodeArgs + ?Sized,
        I: StreamItem,
    {
        let (observer, traceparent) = self.observe(method);
        let metadata = self.call_metadata(method, options, traceparent);
        let call = StreamedCall {
            metadata: &metadata,
            deadline,
            input,
            output,
        };
        let exchange = observe::within(observer.span(), self.exchange_streams(method, args, call));
        let outcome = by_deadline(deadline, exchange).await;
        // A streaming call is observed until its stream starts.
        observer.finish(outcome.as_ref().map_or_else(observe::error_kind, |_| "ok"));
        outcome
    }

    /// A call's metadata: its own, its trace context, and what the channel's interceptor
    /// adds.
    fn call_metadata<'a>(
        &self,
        method: &MethodSpec,
        options: &'a CallOptions,
        traceparent: Option<String>,
    ) -> Cow<'a, [(String, String)]> {
        if self.config.interceptor.is_none() && traceparent.is_none() {
            return Cow::Borrowed(options.metadata());
        }
        let mut metadata = options.metadata().to_vec();
        if let Some(traceparent) = traceparent {
            metadata.push((observe::TRACEPARENT.to_owned(), traceparent));
        }
        if let Some(interceptor) = &self.config.interceptor {
            interceptor.add_metadata(method, &mut metadata);
        }
        Cow::Owned(metadata)
    }

    /// Starts observing a call: its span and metrics, and its trace context.
    fn observe(&self, method: &MethodSpec) -> (CallObserver, Option<String>) {
        CallObserver::client(
            method.service(),
            method.method(),
            &self.peer,
            self.config.metrics,
        )
    }

    /// Appends a DECLARE frame for `method`'s service unless this connection sent one
    /// already. Called while the outbox is locked, so the declaration is always on the wire
    /// before the first request that relies on it.
    fn declare_service(&self, buf: &mut BytesMut, method: &MethodSpec) {
        // Most channels call one service: its id is remembered outside the lock.
        let service_id = method.service_id();
        if self.last_declared.load(Ordering::Relaxed) == service_id {
            return;
        }
        let fingerprints = method.service_fingerprints();
        if fingerprints.is_empty() {
            return;
        }
        let mut declared = lock(&self.declared);
        if !declared.contains(&service_id) {
            declared.push(service_id);
            wire::encode_declare(buf, service_id, fingerprints);
        }
        self.last_declared.store(service_id, Ordering::Relaxed);
    }

    /// Sends one request and waits for its response frame.
    async fn exchange<A: EncodeArgs + ?Sized>(
        &self,
        method: &MethodSpec,
        deadline: Option<Instant>,
        metadata: &[(String, String)],
        args: &A,
        observer: &CallObserver,
        sent: impl FnOnce(),
    ) -> Result<Response, RpcError> {
        let call_id = lock(&self.calls).register()?;
        observer.record_call_id(call_id);
        let mut guard = CallGuard {
            shared: self,
            call_id,
            sent: false,
            answered: false,
            owns_streams: false,
            _in_flight: InFlight::new(&*self.outbox),
        };
        let max_frame = self.config.max_frame_size;
        self.outbox
            .push(Lane::Lone, |buf| {
                self.declare_service(buf, method);
                encode_request(
                    buf, call_id, method, deadline, metadata, args, false, max_frame,
                )
            })
            .await?;
        sent();
        guard.sent = true;
        let outcome = ResponseWait {
            shared: self,
            call_id,
        }
        .await;
        guard.sent = false;
        // Waiting took the call's slot out of the table: nothing is left to remove.
        guard.answered = true;
        outcome
    }

    /// Sends one request with its streams and waits for its response frame. On success the
    /// response stream's inbox, if any, is handed to the caller (who then owns its cleanup);
    /// the request stream keeps flowing from its own task.
    async fn exchange_streams<E, I>(
        self: &Arc<Self>,
        method: &MethodSpec,
        args: &E,
        call: StreamedCall<'_, I>,
    ) -> Result<(Status, Bytes, Option<Arc<Inbox>>), RpcError>
    where
        E: EncodeArgs + ?Sized,
        I: StreamItem,
    {
        let call_id = lock(&self.calls).register()?;
        let mut guard = CallGuard {
            shared: self,
            call_id,
            sent: false,
            answered: false,
            owns_streams: true,
            _in_flight: InFlight::new(&*self.outbox),
        };
        let inbox = call.output.then(|| {
            Inbox::new(
                call_id,
                Window {
                    items: self.config.stream_window,
                    bytes: self.config.stream_window_bytes,
                },
                self.config.max_frame_size,
                self.outbox.clone(),
            )
        });
        let credit = call.input.as_ref().map(|_| Arc::new(Credit::default()));
        lock(&self.calls).add_streams(
            call_id,
            inbox.clone().map(|inbox| (inbox, *method)),
            credit.clone(),
        );
        let max_frame = self.config.max_frame_size;
        let request_stream = call.input.is_some();
        self.outbox
            .push(Lane::Lone, |buf| {
                self.declare_service(buf, method);
                encode_request(
                    buf,
                    call_id,
                    method,
                    call.deadline,
                    call.metadata,
                    args,
                    request_stream,
                    max_frame,
                )?;
                if let Some(inbox) = &inbox {
                    inbox.encode_initial_window(buf);
                }
                Ok(())
            })
            .await?;
        guard.sent = true;
        let mut producer = match (call.input, credit) {
            (Some(input), Some(credit)) => {
                let shared = self.clone();
                let sink = StreamSink {
                    call_id,
                    outbox: self.outbox.clone(),
                    credit,
                    deadline: call.deadline,
                    max_frame,
                    stall_timeout: self.config.write_timeout,
                };
                Some(AbortOnDrop(Some(tokio::spawn(async move {
                    send_stream(input, sink).await;
                    lock(&shared.calls).remove_credit(call_id);
                }))))
            }
            _ => None,
        };
        let outcome = ResponseWait {
            shared: self,
            call_id,
        }
        .await;
        guard.sent = false;
        // Answered: the request stream goes on until it ends or the server stops it.
        if let Some(producer) = &mut producer {
            producer.0.take();
        }
        let (status, payload) = outcome?;
        if status != Status::Ok {
            return Ok((status, payload, None));
        }
        // The caller owns the response stream from here: dropping it cancels the call.
        guard.owns_streams = false;
        if !request_stream {
            lock(&self.calls).remove_credit(call_id);
        }
        if let Some(inbox) = &inbox {
            let shared = Arc::downgrade(self);
            inbox.on_abandon(move || {
                if let Some(shared) = shared.upgrade() {
                    lock(&shared.calls).remove_stream(call_id);
                    shared
                        .outbox
                        .push_now(|buf| wire::encode_cancel(buf, call_id));
                }
            });
        }
        Ok((status, payload, inbox))
    }
}

/// `exchange`'s outcome, or `DeadlineExceeded` once `deadline` passes first. A plain
/// combinator rather than an `async fn`, which would add a state machine to every call's
/// future (`calls::a_call_future_is_small` watches its size).
fn by_deadline<T, F>(
    deadline: Option<Instant>,
    exchange: F,
) -> impl Future<Output = Result<T, RpcError>>
where
    F: Future<Output = Result<T, RpcError>>,
{
    use futures_util::future::{Either, FutureExt};
    match deadline {
        Some(deadline) => Either::Left(
            tokio::time::timeout_at(deadline.into(), exchange)
                .map(|outcome| outcome.unwrap_or(Err(RpcError::DeadlineExceeded {}))),
        ),
        None => Either::Right(exchange),
    }
}

/// A unary response's value, or the error its status stands for.
fn decode_response<R: DeserializeOwned>(
    method: &MethodSpec,
    status: Status,
    payload: &bytes::Bytes,
) -> Result<R, RpcError> {
    match status {
        Status::Ok => method.decode_payload(payload),
        status => Err(call_error(method, status, payload)),
    }
}

/// Appends a call's REQUEST frame, with the time left until its deadline.
#[allow(clippy::too_many_arguments)]
fn encode_request<A: EncodeArgs + ?Sized>(
    buf: &mut BytesMut,
    call_id: u32,
    method: &MethodSpec,
    deadline: Option<Instant>,
    metadata: &[(String, String)],
    args: &A,
    request_stream: bool,
    max_frame: usize,
) -> Result<(), RpcError> {
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
        service_id: method.service_id(),
        method_id: method.method_id(),
        deadline_micros,
        request_stream,
    };
    wire::encode_request(buf, &head, metadata, max_frame, |buf| args.encode_args(buf))
}

/// Aborts a task when dropped, unless its handle was taken out first.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Removes a call's slot if its future is dropped early, and tells the server.
struct CallGuard<'a> {
    shared: &'a ClientConnection,
    call_id: u32,
    sent: bool,
    /// Whether the call's slot is gone: its response was taken (or it never had one left).
    answered: bool,
    /// Whether the call's stream entries are still this guard's to remove.
    owns_streams: bool,
    /// Counts the call for the outbox's batching decisions.
    _in_flight: InFlight<&'a Outbox>,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if self.answered && !self.owns_streams {
            return;
        }
        let was_waiting = lock(&self.shared.calls).remove(self.call_id, self.owns_streams);
        if self.sent && was_waiting {
            let call_id = self.call_id;
            self.shared
                .outbox
                .push_now(|buf| wire::encode_cancel(buf, call_id));
        }
    }
}

/// Waits for a call's slot to be settled.
struct ResponseWait<'a> {
    shared: &'a ClientConnection,
    call_id: u32,
}

impl Future for ResponseWait<'_> {
    type Output = Result<Response, RpcError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        lock(&self.shared.calls).poll_response(self.call_id, cx)
    }
}
