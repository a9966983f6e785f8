//! What a client says about one call: the method it addresses ([`MethodSpec`]), its
//! per-call settings ([`CallOptions`]), and a unary call with its arguments encoded
//! ([`ClientCall`], the unit that client middleware and routes pass along).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::context::RedactedMetadata;
use crate::error::RpcError;
use crate::shape::ServiceShapes;
use crate::wire::wire_id;

/// What a client needs to address one method: names for errors and logs, ids for the wire,
/// and what the method promises (idempotence) and was built with (fingerprints).
///
/// The `#[service]` macro makes one per method; a hand-written client makes its own:
///
/// ```
/// use rpc_core::codegen::MethodSpec;
///
/// const ADD: MethodSpec = MethodSpec::new("Calculator", "add");
/// assert_eq!(ADD.service(), "Calculator");
/// assert!(!ADD.is_idempotent());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct MethodSpec {
    service: &'static str,
    method: &'static str,
    service_id: u32,
    method_id: u32,
    idempotent: bool,
    shares_bytes: bool,
    shapes: Option<fn() -> &'static ServiceShapes>,
}

impl MethodSpec {
    /// The method `method` of the service `service` (the trait's name), with wire ids
    /// computed from the names; not idempotent, and with no fingerprints (the server's
    /// compatibility check is skipped).
    pub const fn new(service: &'static str, method: &'static str) -> MethodSpec {
        MethodSpec {
            service,
            method,
            service_id: wire_id(service),
            method_id: wire_id(method),
            idempotent: false,
            shares_bytes: false,
            shapes: None,
        }
    }

    /// This method's result is `bytes::Bytes` (as `SharedBytes`): the client decodes it as
    /// a slice of the received frame.
    pub const fn sharing_bytes(mut self) -> MethodSpec {
        self.shares_bytes = true;
        self
    }

    /// Decodes this method's result from a response's payload, sharing its buffer when
    /// the result is `bytes::Bytes` ([`MethodSpec::sharing_bytes`]).
    ///
    /// # Errors
    ///
    /// `RpcError::Codec` naming the method when the payload is not one `R`.
    pub fn decode_payload<R: DeserializeOwned>(
        &self,
        payload: &bytes::Bytes,
    ) -> Result<R, RpcError> {
        if self.shares_bytes {
            codec::decode_shared(payload).map_err(|error| self.result_error(error))
        } else {
            self.decode_result(payload)
        }
    }

    /// This method marked idempotent: running it twice has the effect of running it once,
    /// so a balanced channel may retry it after a transport failure.
    pub const fn idempotent(mut self) -> MethodSpec {
        self.idempotent = true;
        self
    }

    /// This method with the shapes of its service's methods (what `#[service]` computes
    /// once from their types): the client declares their fingerprints to the server before
    /// the first call to the service on a connection, so that the server refuses calls to
    /// methods whose types changed with `RpcError::Incompatible`, which names the first
    /// difference.
    pub const fn with_shapes(mut self, shapes: fn() -> &'static ServiceShapes) -> MethodSpec {
        self.shapes = Some(shapes);
        self
    }

    /// The service's name (the trait's name).
    pub const fn service(&self) -> &'static str {
        self.service
    }

    /// The method's name.
    pub const fn method(&self) -> &'static str {
        self.method
    }

    /// The service's id on the wire.
    pub const fn service_id(&self) -> u32 {
        self.service_id
    }

    /// The method's id on the wire.
    pub const fn method_id(&self) -> u32 {
        self.method_id
    }

    /// Whether the method is marked `#[idempotent]`.
    pub const fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    /// The shapes of the service's methods, if the spec has them.
    pub fn shapes(&self) -> Option<&'static ServiceShapes> {
        self.shapes.map(|shapes| shapes())
    }

    /// The method's fingerprint (0 when it has none).
    pub fn fingerprint(&self) -> u32 {
        self.service_fingerprints()
            .iter()
            .find(|(method_id, _)| *method_id == self.method_id)
            .map_or(0, |(_, fingerprint)| *fingerprint)
    }

    /// `(method_id, fingerprint)` of every method of the service (empty skips the check).
    pub fn service_fingerprints(&self) -> &'static [(u32, u32)] {
        self.shapes().map_or(&[], ServiceShapes::fingerprints)
    }

    /// Decodes this method's result from a response's payload.
    ///
    /// # Errors
    ///
    /// `RpcError::Codec` naming the method when the payload is not one `R`.
    pub fn decode_result<R: DeserializeOwned>(&self, payload: &[u8]) -> Result<R, RpcError> {
        codec::decode(payload).map_err(|error| self.result_error(error))
    }

    /// A decoding error, naming this method's result.
    fn result_error(&self, error: RpcError) -> RpcError {
        match error {
            RpcError::Codec { message } => RpcError::codec(format!(
                "the result of `{}.{}` did not decode: {message}",
                self.service, self.method
            )),
            other => other,
        }
    }

    /// Why this method and the server's are incompatible, from the server's shape of it.
    pub(crate) fn incompatibility(&self, theirs: &[u8]) -> Option<String> {
        self.shapes()?.incompatibility(self.method_id, theirs)
    }
}

/// Per-call settings a client carries: timeout, deadline and metadata.
///
/// Cheap to clone: metadata is shared. `Debug` shows metadata keys, never their values.
#[derive(Clone, Default)]
pub struct CallOptions {
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    metadata: Arc<Vec<(String, String)>>,
}

impl fmt::Debug for CallOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallOptions")
            .field("timeout", &self.timeout)
            .field("deadline", &self.deadline)
            .field("metadata", &RedactedMetadata(&self.metadata))
            .finish()
    }
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

    /// The metadata pairs, in the order they were added.
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// The deadline of a call starting now: the earlier of the fixed deadline and the
    /// timeout (or `default_timeout` when neither is set).
    pub fn deadline_for_call(&self, default_timeout: Option<Duration>) -> Option<Instant> {
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

/// A unary call on its way out with its arguments encoded: what client middleware sees and
/// may change, and what a channel's route carries (see the `route` module).
#[derive(Debug, Clone)]
pub struct ClientCall {
    method: MethodSpec,
    options: CallOptions,
    args: Bytes,
    /// Set once any byte of the call may have been written, if someone asked to know.
    sent: Option<Arc<AtomicBool>>,
}

impl ClientCall {
    /// A call to `method` with `options` and the encoded argument tuple `args`.
    pub fn new(method: MethodSpec, options: CallOptions, args: Bytes) -> ClientCall {
        ClientCall {
            method,
            options,
            args,
            sent: None,
        }
    }

    /// Asks to be told whether any byte of this call (this copy, and the copies made of it
    /// from now on) may have been written: a balancer sends a call that failed before that
    /// to another endpoint, whatever its method, since it cannot have run.
    pub fn track_sending(&mut self) -> SendTracker {
        let sent = Arc::new(AtomicBool::new(false));
        self.sent = Some(sent.clone());
        SendTracker(sent)
    }

    /// Records that bytes of the call may have been written: a route calls it once it has
    /// handed the request to its connection's writer (a connection does so for the calls
    /// it carries).
    pub fn mark_sent(&self) {
        if let Some(sent) = &self.sent {
            sent.store(true, Ordering::Release);
        }
    }

    /// The method called.
    pub fn method(&self) -> &MethodSpec {
        &self.method
    }

    /// The call's options (timeout, deadline, metadata).
    pub fn options(&self) -> &CallOptions {
        &self.options
    }

    /// The call's options, to change (add metadata, say).
    pub fn options_mut(&mut self) -> &mut CallOptions {
        &mut self.options
    }

    /// The encoded arguments.
    pub fn args(&self) -> &Bytes {
        &self.args
    }
}

/// Tells whether a [`ClientCall`] may have been written (see
/// [`ClientCall::track_sending`]).
#[derive(Debug, Clone)]
pub struct SendTracker(Arc<AtomicBool>);

impl SendTracker {
    /// Whether any byte of the call may have been written. `false` means it certainly was
    /// not: it failed before its request reached the connection's writer.
    pub fn was_sent(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earlier_of_deadline_and_timeout_wins() {
        let soon = Instant::now() + Duration::from_millis(10);
        let options = CallOptions::default()
            .with_deadline(soon)
            .with_timeout(Duration::from_secs(60));
        assert_eq!(options.deadline_for_call(None), Some(soon));
        let options = CallOptions::default().with_deadline(soon + Duration::from_secs(60));
        // A fixed deadline replaces the channel's default timeout.
        assert_eq!(
            options.deadline_for_call(Some(Duration::from_millis(1))),
            Some(soon + Duration::from_secs(60))
        );
        assert_eq!(CallOptions::default().deadline_for_call(None), None);
    }

    #[test]
    fn a_spec_computes_the_ids_the_server_routes_by() {
        use crate::shape::MethodEntry;
        fn shapes() -> &'static ServiceShapes {
            static SHAPES: std::sync::OnceLock<ServiceShapes> = std::sync::OnceLock::new();
            SHAPES.get_or_init(|| {
                ServiceShapes::new(vec![MethodEntry::new::<(u64, u64), u64, (), ()>(
                    "add",
                    &["a", "b"],
                    7,
                )])
            })
        }
        const SPEC: MethodSpec = MethodSpec::new("Calc", "add")
            .idempotent()
            .with_shapes(shapes);
        assert_eq!(SPEC.service_id(), wire_id("Calc"));
        assert_eq!(SPEC.method_id(), wire_id("add"));
        assert!(SPEC.is_idempotent());
        assert_ne!(SPEC.fingerprint(), 0);
        assert_eq!(
            SPEC.service_fingerprints(),
            &[(wire_id("add"), SPEC.fingerprint())][..]
        );
        let bare = MethodSpec::new("Calc", "add");
        assert_eq!(
            (bare.fingerprint(), bare.service_fingerprints()),
            (0, &[][..])
        );
    }
}
