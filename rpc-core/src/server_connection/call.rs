//! An admitted call from dispatch to its end: [`dispatch`] hands it to its service (which
//! decodes the arguments) and wraps the handler in middleware, trace and span; [`run`]
//! polls it once inline (most handlers finish without waiting) and goes on in a task of its
//! own only if it waits or a stream follows.
//!
//! [`dispatch`]: ConnState::dispatch
//! [`run`]: ConnState::run

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::sync::OwnedSemaphorePermit;

use super::admission::Admitted;
use super::reply::encode_outcome;
use super::ConnState;
use crate::dispatch::{HandlerFuture, IncomingRequest, Reply, StreamStarter};
use crate::error::RpcError;
use crate::middleware::{self, ServerCall};
use crate::observe::{self, CallObserver, TraceContext};
use crate::outbox::{InFlight, Lane, Outbox};
use crate::recover::{panic_message, CatchUnwind};
use crate::status::Status;
use crate::wire::RequestHead;

/// A call handed to its service: the handler's future, ready to run.
struct Dispatched {
    call_id: u32,
    /// Whether the call reads a request stream (whose inbox is closed when it ends).
    reads_stream: bool,
    /// The service's and the method's names (the method's when the service knows it).
    names: (&'static str, Option<&'static str>),
    deadline: Option<Instant>,
    observer: CallObserver,
    handler: HandlerFuture,
}

/// Closes a call's request stream unless disarmed: every early exit between opening the
/// inbox and handing it to the handler releases it (and tells the client to stop sending).
struct InboxGuard<'a> {
    conn: &'a ConnState,
    call_id: u32,
    armed: bool,
}

impl InboxGuard<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for InboxGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.conn.close_inbox(self.call_id);
        }
    }
}

/// How a handler ended.
pub(super) enum HandlerOutcome {
    Replied(Reply),
    /// The handler panicked with this message (kept in the log, never sent).
    Panicked(String),
    DeadlineExceeded,
}

impl ConnState {
    /// Admits a request and runs its handler (inline if it finishes at once, else in a
    /// task of its own), or answers it with an error at once. `alone` says no other request
    /// is waiting to be read right behind this one. Hands `permit` back when the call is
    /// over already (answered inline, or refused), so the next request can take it without
    /// the semaphore.
    pub(super) fn start_call(
        self: &Arc<Self>,
        head: RequestHead,
        metadata: Bytes,
        payload: Bytes,
        permit: OwnedSemaphorePermit,
        alone: bool,
    ) -> Option<OwnedSemaphorePermit> {
        let Some(admitted) = self.admit(&head, metadata) else {
            return Some(permit);
        };
        let in_flight = InFlight::new(&*self.outbox);
        let Some(call) = self.dispatch(&head, admitted, payload) else {
            return Some(permit);
        };
        self.run(call, permit, in_flight, alone)
    }

    /// Hands an admitted request to its service, which decodes the arguments and returns
    /// the handler's future, wrapped here in middleware, trace and span; `None` when the
    /// call was answered with an error instead.
    fn dispatch(
        self: &Arc<Self>,
        head: &RequestHead,
        admitted: Admitted<'_>,
        payload: Bytes,
    ) -> Option<Dispatched> {
        let (call_id, method_id) = (head.call_id, head.method_id);
        let Admitted {
            service,
            deadline,
            context,
        } = admitted;
        let trace = context
            .metadata(observe::TRACEPARENT)
            .and_then(TraceContext::parse);
        let middleware_context = self.routes.middleware.as_ref().map(|_| context.clone());
        // The request stream's inbox is the call's from here: closed on every early exit
        // (the guard), and left to the handler once it runs.
        let stream = head.request_stream.then(|| self.open_inbox(call_id));
        let inbox_guard = InboxGuard {
            conn: self,
            call_id,
            armed: stream.is_some(),
        };
        let request = IncomingRequest {
            context,
            payload,
            stream,
        };
        let dispatched =
            std::panic::catch_unwind(AssertUnwindSafe(|| service.dispatch(method_id, request)));
        let names = (service.service_name(), service.method_name(method_id));
        let mut handler = match dispatched {
            Ok(Ok(handler)) => handler,
            Ok(Err(RpcError::UnknownMethod { .. })) => {
                self.respond_error(call_id, Status::UnknownMethod, b"");
                return None;
            }
            Ok(Err(RpcError::Codec { message })) => {
                let method = names.1.unwrap_or("?");
                let text = format!(
                    "the arguments of `{}.{method}` did not decode: {message}",
                    names.0
                );
                self.respond_error(call_id, Status::BadRequest, text.as_bytes());
                return None;
            }
            Ok(Err(error)) => {
                // A hand-written dispatcher's own error: its text stays in the log.
                tracing::info!(peer = %self.peer, service = names.0, call_id, %error, "a dispatcher refused a call");
                let (status, text) = crate::status::for_refusal(&error);
                self.respond_error(call_id, status, text.as_bytes());
                return None;
            }
            Err(panic) => {
                self.log_panic(names.0, names.1, call_id, &panic_message(&*panic));
                self.respond_error(call_id, Status::HandlerPanicked, b"");
                return None;
            }
        };
        inbox_guard.disarm();
        let method_name = names.1.unwrap_or("?");
        let observer = CallObserver::server(
            names.0,
            method_name,
            &self.peer,
            call_id,
            trace,
            self.config().metrics,
        );
        if let (Some(stack), Some(context)) = (&self.routes.middleware, middleware_context) {
            let call = ServerCall::new(names.0, method_name, context, handler);
            handler = middleware::through(stack, call);
        }
        // Only a traced or observed call pays for running its handler in a span and trace.
        if let Some(trace) = trace {
            handler = Box::pin(observe::in_trace(trace, handler));
        }
        if let Some(span) = observer.span() {
            handler = Box::pin(observe::within(Some(span), handler));
        }
        Some(Dispatched {
            call_id,
            reads_stream: head.request_stream,
            names,
            deadline,
            observer,
            handler,
        })
    }

    /// Runs a dispatched call. The handler is polled once right here: most handlers finish
    /// without waiting, and then the response is queued without a task spawn or a hop to
    /// another task. A handler that waits is moved into its own task (it is boxed, so
    /// moving it is fine), which polls it again with a real waker. One call's panic stays
    /// that call's error. Hands `permit` back when the call ended here.
    fn run(
        self: &Arc<Self>,
        call: Dispatched,
        permit: OwnedSemaphorePermit,
        in_flight: InFlight<&Outbox>,
        alone: bool,
    ) -> Option<OwnedSemaphorePermit> {
        let Dispatched {
            call_id,
            reads_stream,
            names,
            deadline,
            observer,
            handler,
        } = call;
        let mut guarded = CatchUnwind(handler);
        let mut first_poll = TaskContext::from_waker(Waker::noop());
        if let Poll::Ready(outcome) = Pin::new(&mut guarded).poll(&mut first_poll) {
            let mut outcome = HandlerOutcome::from(outcome);
            observer.finish(outcome.kind());
            if let HandlerOutcome::Panicked(panic) = &outcome {
                self.log_panic(names.0, names.1, call_id, panic);
            }
            let stream = outcome.take_stream();
            let max_frame = self.config().max_frame_size;
            // The encoder borrows the outcome, so that a reply the full outbox refuses here
            // can still move into a task.
            let mut outcome = Some(outcome);
            if stream.is_none() {
                let lane = if alone { Lane::Lone } else { Lane::Shared };
                let mut encode = Some(|buf: &mut BytesMut| match outcome.take() {
                    Some(outcome) => encode_outcome(buf, call_id, outcome, max_frame, &self.peer),
                    None => Ok(()),
                });
                if self.outbox.try_push_slot(lane, &mut encode).is_some() {
                    if reads_stream {
                        self.close_inbox(call_id);
                    }
                    return Some(permit);
                }
            }
            let Some(outcome) = outcome else {
                return Some(permit);
            };
            // A stream follows the response, or the outbox is full: go on in a task, holding
            // the permit meanwhile.
            let conn = self.clone();
            let in_flight = in_flight.into_owned(&self.outbox);
            self.spawn_call(call_id, async move {
                conn.answer(call_id, outcome, stream, deadline).await;
                drop((permit, in_flight));
            });
            return None;
        }
        let conn = self.clone();
        let in_flight = in_flight.into_owned(&self.outbox);
        self.spawn_call(call_id, async move {
            let mut outcome = run_handler(guarded, deadline).await;
            observer.finish(outcome.kind());
            if let HandlerOutcome::Panicked(panic) = &outcome {
                conn.log_panic(names.0, names.1, call_id, panic);
            }
            let stream = outcome.take_stream();
            conn.answer(call_id, outcome, stream, deadline).await;
            drop((permit, in_flight));
        });
        None
    }

    /// Queues a finished call's response, waiting for room, and then sends the stream it
    /// starts, if any.
    async fn answer(
        &self,
        call_id: u32,
        outcome: HandlerOutcome,
        stream: Option<StreamStarter>,
        deadline: Option<Instant>,
    ) {
        if self.respond(call_id, outcome).await {
            if let Some(stream) = stream {
                self.send_response_stream(call_id, stream, deadline).await;
            }
        }
    }
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

/// Runs a handler to its end or its deadline, whichever comes first.
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
