//! Observability of calls: a `tracing` span per call on both sides, W3C trace context
//! carried in call metadata, and metrics through the `metrics` facade.
//!
//! Spans are at `DEBUG` level, named `rpc.client` and `rpc.server`, with the service,
//! method, call id, peer, outcome and duration (µs) as fields. When no subscriber wants
//! them they cost a callsite check, nothing more: the clock is read and the trace context
//! is built only for calls whose span is enabled, or that run inside a traced call.
//!
//! Trace context: a client call whose span is enabled, or that is made by a handler
//! serving a traced call, sends `traceparent` metadata (`00-<trace id>-<span id>-01`); the
//! server records the trace id on its span and runs the handler inside it, so the calls
//! the handler makes carry the same trace id: a chain of calls across services shows as
//! one trace. [`current_trace_id`] gives it to code that wants to log it.
//!
//! Metrics (with `ChannelConfig::metrics` / `ServerConfig::metrics` on; install any
//! `metrics` recorder, a Prometheus exporter say):
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `rpc_client_calls_total` | counter | `service`, `method`, `outcome` |
//! | `rpc_client_call_duration_seconds` | histogram | `service`, `method` |
//! | `rpc_client_calls_in_flight` | gauge | `service`, `method` |
//! | `rpc_server_calls_total` | counter | `service`, `method`, `outcome` |
//! | `rpc_server_call_duration_seconds` | histogram | `service`, `method` |
//! | `rpc_server_calls_in_flight` | gauge | `service`, `method` |
//! | `rpc_server_connections` | gauge | |
//!
//! `outcome` is `ok` or the error's kind (`deadline_exceeded`, `connection_closed`,
//! `unavailable`, `handler_panicked`, ...).

use std::time::Instant;

use tracing::Span;

use crate::context::Peer;
use crate::error::RpcError;
use crate::status::Status;

/// The metadata key that carries trace context (W3C Trace Context).
pub const TRACEPARENT: &str = "traceparent";

/// A trace a call belongs to: the trace id, and the id of the span that made the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceContext {
    pub(crate) trace_id: u128,
    pub(crate) parent_span_id: u64,
}

impl TraceContext {
    /// Reads a `traceparent` value; `None` when it is malformed (it is then ignored).
    pub(crate) fn parse(value: &str) -> Option<TraceContext> {
        let mut parts = value.split('-');
        let version = parts.next()?;
        let trace_id = parts.next()?;
        let span_id = parts.next()?;
        let _flags = parts.next()?;
        if version.len() != 2 || trace_id.len() != 32 || span_id.len() != 16 {
            return None;
        }
        let trace_id = u128::from_str_radix(trace_id, 16).ok()?;
        let parent_span_id = u64::from_str_radix(span_id, 16).ok()?;
        (trace_id != 0 && parent_span_id != 0).then_some(TraceContext {
            trace_id,
            parent_span_id,
        })
    }

    /// The `traceparent` value for a call this trace makes, with a new span id.
    fn child_header(&self, span_id: u64) -> String {
        format!("00-{:032x}-{:016x}-01", self.trace_id, span_id)
    }
}

tokio::task_local! {
    /// The trace of the call a handler is serving.
    static CURRENT_TRACE: TraceContext;
}

/// The trace id of the call being served by the handler this runs in, if that call
/// carried trace context.
pub fn current_trace_id() -> Option<u128> {
    CURRENT_TRACE.try_with(|trace| trace.trace_id).ok()
}

/// Runs `future` (a handler) inside `trace`, so the calls it makes carry it on.
pub(crate) async fn in_trace<F: std::future::Future>(trace: TraceContext, future: F) -> F::Output {
    CURRENT_TRACE.scope(trace, future).await
}

/// `future`, run inside `span` if there is one. A disabled span is never entered: entering
/// one still costs a lookup per poll (more with tracing's `log` feature).
pub(crate) fn within<F: std::future::Future>(
    span: Option<&Span>,
    future: F,
) -> futures_util::future::Either<F, tracing::instrument::Instrumented<F>> {
    use tracing::Instrument;
    match span {
        None => futures_util::future::Either::Left(future),
        Some(span) => futures_util::future::Either::Right(future.instrument(span.clone())),
    }
}

/// Whether any `tracing` subscriber was ever set. Until one is, no span is built: with
/// tracing's `log` feature on (and many applications have it), a span macro with no
/// subscriber formats every field for `log` on every call, even when nothing listens.
fn subscribed() -> bool {
    tracing::dispatcher::has_been_set()
}

/// The name of an error's kind, for the `outcome` label and span field.
pub(crate) fn error_kind(error: &RpcError) -> &'static str {
    match error {
        RpcError::DeadlineExceeded { .. } => "deadline_exceeded",
        RpcError::ConnectionClosed { .. } => "connection_closed",
        RpcError::UnknownService { .. } => "unknown_service",
        RpcError::UnknownMethod { .. } => "unknown_method",
        RpcError::Incompatible { .. } => "incompatible",
        RpcError::HandlerPanicked { .. } => "handler_panicked",
        RpcError::FrameTooLarge { .. } => "frame_too_large",
        RpcError::Unavailable { .. } => "unavailable",
        RpcError::ResourceExhausted { .. } => "resource_exhausted",
        RpcError::Protocol { .. } => "protocol",
        RpcError::Io { .. } => "io",
        RpcError::Codec { .. } => "codec",
        RpcError::Unauthenticated { .. } => "unauthenticated",
        RpcError::PermissionDenied { .. } => "permission_denied",
        RpcError::Internal { .. } => "internal",
    }
}

/// The name of a response status, for the server's `outcome` label.
pub(crate) fn status_kind(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::UnknownService => "unknown_service",
        Status::UnknownMethod => "unknown_method",
        Status::BadRequest => "codec",
        Status::HandlerPanicked => "handler_panicked",
        Status::DeadlineExceeded => "deadline_exceeded",
        Status::ResponseTooLarge => "frame_too_large",
        Status::Unavailable => "unavailable",
        Status::ResourceExhausted => "resource_exhausted",
        Status::Internal => "internal",
        Status::Unauthenticated => "unauthenticated",
        Status::PermissionDenied => "permission_denied",
        Status::Incompatible => "incompatible",
    }
}

/// Watches one call from start to end: its span, and its metrics when they are on. Empty
/// (and free) for a call nobody observes: no subscriber wants its span, metrics are off,
/// and it is not part of a trace.
#[derive(Debug)]
pub(crate) struct CallObserver(Option<Observed>);

#[derive(Debug)]
struct Observed {
    span: Span,
    side: Side,
    service: &'static str,
    method: &'static str,
    metrics: bool,
    started: Instant,
}

#[derive(Debug, Clone, Copy)]
enum Side {
    Client,
    Server,
}

impl CallObserver {
    /// A client call's observer, and the `traceparent` it should send (if it is traced).
    pub(crate) fn client(
        service: &'static str,
        method: &'static str,
        peer: &Peer,
        metrics: bool,
    ) -> (CallObserver, Option<String>) {
        let span = if subscribed() {
            tracing::debug_span!(
                "rpc.client",
                service,
                method,
                peer = %peer,
                call_id = tracing::field::Empty,
                trace_id = tracing::field::Empty,
                outcome = tracing::field::Empty,
                duration_us = tracing::field::Empty,
            )
        } else {
            Span::none()
        };
        let inherited = CURRENT_TRACE.try_with(|trace| *trace).ok();
        if span.is_disabled() && !metrics && inherited.is_none() {
            return (CallObserver(None), None);
        }
        let traceparent = if inherited.is_some() || !span.is_disabled() {
            let trace = inherited.unwrap_or_else(|| TraceContext {
                trace_id: random_u128(),
                parent_span_id: 0,
            });
            span.record(
                "trace_id",
                tracing::field::display(format_args!("{:032x}", trace.trace_id)),
            );
            Some(trace.child_header(random_u64()))
        } else {
            None
        };
        let observer = CallObserver::start(span, Side::Client, service, method, metrics);
        (observer, traceparent)
    }

    /// A server call's observer; `trace` is what the call's `traceparent` said.
    pub(crate) fn server(
        service: &'static str,
        method: &'static str,
        peer: &Peer,
        call_id: u32,
        trace: Option<TraceContext>,
        metrics: bool,
    ) -> CallObserver {
        let span = if subscribed() {
            tracing::debug_span!(
                "rpc.server",
                service,
                method,
                peer = %peer,
                call_id,
                trace_id = tracing::field::Empty,
                outcome = tracing::field::Empty,
                duration_us = tracing::field::Empty,
            )
        } else {
            Span::none()
        };
        if span.is_disabled() && !metrics {
            return CallObserver(None);
        }
        if let Some(trace) = trace {
            span.record(
                "trace_id",
                tracing::field::display(format_args!("{:032x}", trace.trace_id)),
            );
        }
        CallObserver::start(span, Side::Server, service, method, metrics)
    }

    fn start(
        span: Span,
        side: Side,
        service: &'static str,
        method: &'static str,
        metrics: bool,
    ) -> CallObserver {
        if metrics {
            in_flight_gauge(side, service, method).increment(1.0);
        }
        CallObserver(Some(Observed {
            span,
            side,
            service,
            method,
            metrics,
            started: Instant::now(),
        }))
    }

    /// The call's span, to run its work in (`None` when nobody observes the call).
    pub(crate) fn span(&self) -> Option<&Span> {
        self.0
            .as_ref()
            .map(|observed| &observed.span)
            .filter(|span| !span.is_disabled())
    }

    /// Records the call id once it is known (client side).
    pub(crate) fn record_call_id(&self, call_id: u32) {
        if let Some(span) = self.span() {
            span.record("call_id", call_id);
        }
    }

    /// Ends the observation with `outcome` (`"ok"` or an error kind).
    pub(crate) fn finish(mut self, outcome: &'static str) {
        self.end(outcome);
    }

    fn end(&mut self, outcome: &'static str) {
        let Some(observed) = self.0.take() else {
            return;
        };
        let elapsed = observed.started.elapsed();
        if !observed.span.is_disabled() {
            observed.span.record("outcome", outcome);
            observed.span.record(
                "duration_us",
                u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            );
        }
        if observed.metrics {
            let (calls, duration) = match observed.side {
                Side::Client => ("rpc_client_calls_total", "rpc_client_call_duration_seconds"),
                Side::Server => ("rpc_server_calls_total", "rpc_server_call_duration_seconds"),
            };
            let (service, method) = (observed.service, observed.method);
            metrics::counter!(calls, "service" => service, "method" => method, "outcome" => outcome)
                .increment(1);
            metrics::histogram!(duration, "service" => service, "method" => method)
                .record(elapsed.as_secs_f64());
            in_flight_gauge(observed.side, service, method).decrement(1.0);
        }
    }
}

impl Drop for CallObserver {
    /// A call whose future was dropped before it finished was cancelled.
    fn drop(&mut self) {
        self.end("cancelled");
    }
}

fn in_flight_gauge(side: Side, service: &'static str, method: &'static str) -> metrics::Gauge {
    let name = match side {
        Side::Client => "rpc_client_calls_in_flight",
        Side::Server => "rpc_server_calls_in_flight",
    };
    metrics::gauge!(name, "service" => service, "method" => method)
}

/// Counts a call the server refused before running a handler (unknown method, bad
/// arguments, an interceptor's refusal, ...), when metrics are on.
pub(crate) fn count_refusal(metrics: bool, status: Status) {
    if metrics {
        metrics::counter!("rpc_server_calls_total", "service" => "", "method" => "", "outcome" => status_kind(status))
            .increment(1);
    }
}

/// Counts an open server connection in `rpc_server_connections` while it lives, when
/// metrics are on.
#[derive(Debug)]
pub(crate) struct ConnectionGauge(bool);

impl ConnectionGauge {
    pub(crate) fn open(metrics: bool) -> ConnectionGauge {
        if metrics {
            metrics::gauge!("rpc_server_connections").increment(1.0);
        }
        ConnectionGauge(metrics)
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        if self.0 {
            metrics::gauge!("rpc_server_connections").decrement(1.0);
        }
    }
}

/// A random non-zero id (W3C trace context forbids all-zero ids).
fn random_u64() -> u64 {
    fastrand::u64(1..)
}

/// A random non-zero trace id.
fn random_u128() -> u128 {
    fastrand::u128(1..)
}
