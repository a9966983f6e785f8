//! Admission: whether a request may start, decided before any of its arguments are decoded.
//! A request to a live call id is ignored; one with an expired deadline or metadata over
//! the limit, refused by an interceptor, to an unknown service or an incompatible method is
//! answered with its error at once and never dispatched. Interceptors run before anything
//! that would tell the caller about the API (an unknown service or method, different
//! types), so a peer they refuse cannot enumerate it.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::ConnState;
use crate::context::Context;
use crate::dispatch::Dispatch;
use crate::error::RpcError;
use crate::middleware::CallInfo;
use crate::recover::{lock, panic_message};
use crate::status::{self, Status};
use crate::wire::{self, RequestHead};

/// The services a client declared, and the methods it was built with different types for.
#[derive(Default)]
pub(super) struct Compatibility {
    declared: Vec<u32>,
    incompatible: Vec<(u32, u32)>,
}

/// A request that may run: its service, and its context with deadline and metadata.
pub(super) struct Admitted<'a> {
    pub(super) service: &'a Arc<dyn Dispatch>,
    pub(super) deadline: Option<Instant>,
    pub(super) context: Context,
}

impl ConnState {
    /// Checks a request before it runs; `None` when it was answered with an error (or, for
    /// a live call id, ignored) instead.
    pub(super) fn admit(&self, head: &RequestHead, metadata: Bytes) -> Option<Admitted<'_>> {
        let call_id = head.call_id;
        if self.running.contains(call_id) {
            // A peer reusing a live id cannot disturb the original call.
            tracing::debug!(peer = %self.peer, call_id, "ignored a request reusing a live call id");
            self.charge_error();
            return None;
        }
        let service = self.routes.service(head.service_id);
        let deadline = match head.deadline_micros {
            Some(0) => {
                self.respond_error(call_id, Status::DeadlineExceeded, b"");
                return None;
            }
            Some(micros) => {
                let asked = Duration::from_micros(micros);
                let allowed = self
                    .config()
                    .max_deadline
                    .map_or(asked, |max| asked.min(max));
                // A deadline too far away to represent is no deadline.
                Instant::now().checked_add(allowed)
            }
            None => None,
        };
        let metadata = if metadata.is_empty() {
            Vec::new()
        } else {
            match wire::decode_metadata(metadata, self.config().max_metadata_size) {
                Ok(pairs) => pairs,
                Err(RpcError::ResourceExhausted { message }) => {
                    self.respond_error(call_id, Status::ResourceExhausted, message.as_bytes());
                    return None;
                }
                Err(error) => {
                    self.respond_error(call_id, Status::BadRequest, error.to_string().as_bytes());
                    return None;
                }
            }
        };
        let context = Context::new(self.peer.clone(), call_id)
            .with_deadline(deadline)
            .with_metadata(metadata)
            .with_peer_link(self.peer_link());
        // Interceptors judge every call before its caller learns anything about the API:
        // whether the service or the method exists, or whether its types match ours.
        if !self.routes.interceptors.is_empty() {
            if let Err((status, message)) =
                self.intercept(service.map(|service| &**service), head.method_id, &context)
            {
                self.respond_error(call_id, status, message.as_bytes());
                return None;
            }
        }
        let Some(service) = service else {
            self.respond_error(call_id, Status::UnknownService, b"");
            return None;
        };
        if self.is_incompatible(head.service_id, head.method_id) {
            // The client names the first difference from the server's shape of the method.
            let shape = service
                .shapes()
                .and_then(|shapes| shapes.shape(head.method_id))
                .unwrap_or_default();
            self.respond_error(call_id, Status::Incompatible, shape);
            return None;
        }
        Some(Admitted {
            service,
            deadline,
            context,
        })
    }

    /// Runs the server's interceptors (the caller checked there are some) on a call about to
    /// start, perhaps to a service or method this server does not have (the names they see
    /// are then empty); the status and text to answer with when one refuses it.
    fn intercept(
        &self,
        service: Option<&dyn Dispatch>,
        method_id: u32,
        context: &Context,
    ) -> Result<(), (Status, String)> {
        let interceptors = &self.routes.interceptors;
        let service_name = service.map_or("", |service| service.service_name());
        let method_name = service
            .and_then(|service| service.method_name(method_id))
            .unwrap_or("");
        let call = CallInfo::new(service_name, method_name, context);
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
            return Err(status::for_refusal(&error));
        }
        Ok(())
    }

    /// Records which of a service's methods the client was built with different types
    /// for. Declaring a service twice, or one the server lacks, is charged as an error.
    pub(super) fn declare(&self, service_id: u32, methods: &[(u32, u32)]) {
        let mut compatibility = lock(&self.compatibility);
        let service = self.routes.service(service_id);
        if compatibility.declared.contains(&service_id) || service.is_none() {
            drop(compatibility);
            self.charge_error();
            return;
        }
        compatibility.declared.push(service_id);
        let Some(service) = service else { return };
        let ours = service
            .shapes()
            .map_or(&[][..], |shapes| shapes.fingerprints());
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
}
