//! Balanced and reconnecting channels: one `Channel` over connections to many servers.
//!
//! A [`Resolve`] says which endpoints there are (a fixed list, a DNS name looked up again
//! every `resolve_interval`); a [`Connect`] dials one (TCP, Unix, TLS: the transports
//! provide them). The [`Balancer`] here is the state and the decisions (which connections
//! are ready, which one a call takes, whether to retry); `channel.rs` makes a `Channel` of
//! it. It keeps one connection per endpoint, each in a task of its own (`endpoint.rs`) that re-dials with exponential backoff and jitter when the
//! connection fails or the server sends GOAWAY, and that watches the server's health
//! service so that a server reporting `NotServing` (one shutting down, say) gets no new
//! calls.
//!
//! Each call goes to the less loaded of two ready connections picked at random (power of
//! two choices on calls in flight). A call that finds no ready connection waits for one
//! within its deadline (or fails at once, with `wait_for_ready` off). A call that fails for a
//! transport reason before any byte of it was written (its connection closed between the
//! pick and the send) cannot have run, so it is sent to another endpoint whatever its
//! method. A call to an `#[idempotent]` method that fails for a transport reason after that
//! is tried again on another endpoint too, within its deadline and a retry budget (tower's
//! `TpsBudget`); calls to other methods are never replayed, so a call that may have run
//! fails with the error it got.
//! A reconnecting channel is a balanced channel over one endpoint.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rpc_core::route::{BoxFuture, ClientCall};
use rpc_core::{Channel, Peer, RpcError};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tower::retry::budget::{Budget, TpsBudget};

use crate::config::BalanceConfig;

/// Says which endpoints a balanced channel should keep connections to.
pub trait Resolve: Send + Sync + 'static {
    /// The endpoints now, each as the text a [`Connect`] dials (an address, a path).
    fn resolve(&self) -> BoxFuture<'_, Result<Vec<String>, RpcError>>;

    /// What the endpoints are, for `Channel::peer` and logs.
    fn describe(&self) -> String;
}

/// A fixed list of endpoints.
impl Resolve for Vec<String> {
    fn resolve(&self) -> BoxFuture<'_, Result<Vec<String>, RpcError>> {
        Box::pin(std::future::ready(Ok(self.clone())))
    }

    fn describe(&self) -> String {
        self.join(", ")
    }
}

/// Opens a connection to one endpoint: a plain channel over one connection.
pub trait Connect: Send + Sync + 'static {
    /// A channel over a new connection to `endpoint`.
    fn connect(&self, endpoint: &str) -> BoxFuture<'static, Result<Channel, RpcError>>;
}

impl<F, Fut> Connect for F
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Channel, RpcError>> + Send + 'static,
{
    fn connect(&self, endpoint: &str) -> BoxFuture<'static, Result<Channel, RpcError>> {
        Box::pin(self(endpoint.to_owned()))
    }
}

/// One ready connection: its endpoint and the channel over it.
#[derive(Debug, Clone)]
pub(crate) struct Ready {
    pub(crate) endpoint: Arc<str>,
    pub(crate) channel: Channel,
}

/// An endpoint's connection task, and whether its connection takes calls now.
#[derive(Debug)]
struct Endpoint {
    task: AbortHandle,
    ready: Option<Ready>,
}

/// The shared state of a balanced channel.
pub(crate) struct Balancer {
    pub(crate) peer: Peer,
    pub(crate) config: BalanceConfig,
    pub(crate) connector: Arc<dyn Connect>,
    endpoints: Mutex<HashMap<Arc<str>, Endpoint>>,
    /// The ready connections, rebuilt whenever one comes or goes, read by every call.
    ready: RwLock<Arc<[Ready]>>,
    /// Signalled when a connection becomes ready.
    ready_changed: Notify,
    budget: TpsBudget,
    /// Why the last dial failed, for calls that find nothing ready.
    pub(crate) last_error: Mutex<Option<RpcError>>,
    pub(crate) resolver_task: Mutex<Option<AbortHandle>>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("peer", &self.peer)
            .field("ready", &self.snapshot().len())
            .finish_non_exhaustive()
    }
}

/// Locks `mutex`, even if a panic poisoned it: every update here is a single statement.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Balancer {
    pub(crate) fn new(peer: Peer, connector: Arc<dyn Connect>, config: BalanceConfig) -> Balancer {
        Balancer {
            peer,
            budget: TpsBudget::new(
                Duration::from_secs(10),
                config.retry_budget_min_per_second,
                config.retry_budget_ratio,
            ),
            config,
            connector,
            endpoints: Mutex::new(HashMap::new()),
            ready: RwLock::new(Arc::from(Vec::new())),
            ready_changed: Notify::new(),
            last_error: Mutex::new(None),
            resolver_task: Mutex::new(None),
        }
    }

    /// Stops resolving and every endpoint's task.
    fn stop(&self) {
        if let Some(task) = lock(&self.resolver_task).take() {
            task.abort();
        }
        for endpoint in lock(&self.endpoints).values() {
            endpoint.task.abort();
        }
    }

    pub(crate) fn snapshot(&self) -> Arc<[Ready]> {
        self.ready
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Calls `call`'s method on a ready connection, sending it to another endpoint after a
    /// transport failure when it was never written, or when its method is idempotent (see
    /// the module documentation).
    pub(crate) async fn call(&self, mut call: ClientCall) -> Result<Bytes, RpcError> {
        // Every attempt shares the deadline the call started with.
        let deadline = call
            .options()
            .deadline_for_call(self.config.channel.default_timeout);
        if let Some(deadline) = deadline {
            *call.options_mut() = call.options().clone().with_deadline(deadline);
        }
        let mut attempt = 1;
        let mut failed_endpoint: Option<Arc<str>> = None;
        loop {
            let ready = self.pick(deadline, failed_endpoint.as_deref()).await?;
            let mut this_attempt = call.clone();
            let sending = this_attempt.track_sending();
            let outcome = ready.channel.call_encoded(this_attempt).await;
            match outcome {
                Err(error)
                    if attempt < self.config.max_attempts
                        && is_transport_failure(&error)
                        && deadline.is_none_or(|deadline| Instant::now() < deadline)
                        // Never written: it cannot have run, and cost the server nothing.
                        && (!sending.was_sent()
                            || call.method().is_idempotent() && self.budget.withdraw()) =>
                {
                    tracing::debug!(
                        service = call.method().service(),
                        method = call.method().method(),
                        endpoint = %ready.endpoint,
                        attempt,
                        sent = sending.was_sent(),
                        %error,
                        "sending a failed call to another endpoint"
                    );
                    attempt += 1;
                    failed_endpoint = Some(ready.endpoint);
                }
                outcome => {
                    if attempt == 1 {
                        self.budget.deposit();
                    }
                    return outcome;
                }
            }
        }
    }

    /// A ready connection, waiting for one within `deadline` and the ready timeout unless
    /// `wait_for_ready` is off. Prefers endpoints other than `avoid`.
    pub(crate) async fn pick(
        &self,
        deadline: Option<Instant>,
        avoid: Option<&str>,
    ) -> Result<Ready, RpcError> {
        let now = Instant::now();
        let ready_limit = now.checked_add(self.config.ready_timeout).unwrap_or(now);
        let limit = deadline.map_or(ready_limit, |deadline| deadline.min(ready_limit));
        loop {
            let notified = self.ready_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(ready) = self.choose(avoid) {
                return Ok(ready);
            }
            if !self.config.wait_for_ready {
                return Err(self.nothing_ready());
            }
            if tokio::time::timeout_at(limit.into(), notified)
                .await
                .is_err()
            {
                return Err(match deadline {
                    Some(deadline) if deadline <= limit => RpcError::DeadlineExceeded {},
                    _ => self.nothing_ready(),
                });
            }
        }
    }

    fn nothing_ready(&self) -> RpcError {
        let reason = match &*lock(&self.last_error) {
            Some(error) => format!("no connection to {} is ready: {error}", self.peer),
            None => format!("no connection to {} is ready yet", self.peer),
        };
        RpcError::Unavailable {
            reason: reason.into(),
        }
    }

    /// One of the ready connections that still take calls, other than `avoid`'s where
    /// there is a choice. A connection that has just closed (or heard GOAWAY) stays in the
    /// ready list until its endpoint task sees it; asking it spares the calls made meanwhile.
    fn choose(&self, avoid: Option<&str>) -> Option<Ready> {
        let ready = self.snapshot();
        let taking: Vec<&Ready> = ready
            .iter()
            .filter(|ready| ready.channel.is_taking_calls())
            .collect();
        let candidates: Vec<&Ready> = match avoid {
            Some(avoid) if taking.len() > 1 => taking
                .iter()
                .copied()
                .filter(|ready| &*ready.endpoint != avoid)
                .collect(),
            _ => taking,
        };
        power_of_two_choices(&candidates, |ready| ready.channel.calls_in_flight())
            .map(|ready| (*ready).clone())
    }

    /// Records whether `endpoint`'s connection takes calls (`Some`) or not (`None`: it is
    /// ejected), and rebuilds the ready list.
    pub(crate) fn set_ready(&self, endpoint: &Arc<str>, ready: Option<Ready>) {
        let became_ready = ready.is_some();
        {
            let mut endpoints = lock(&self.endpoints);
            let Some(entry) = endpoints.get_mut(endpoint) else {
                return;
            };
            entry.ready = ready;
            self.rebuild_ready(&endpoints);
        }
        if became_ready {
            self.ready_changed.notify_waiters();
        }
    }

    fn rebuild_ready(&self, endpoints: &HashMap<Arc<str>, Endpoint>) {
        let ready: Vec<Ready> = endpoints
            .values()
            .filter_map(|endpoint| endpoint.ready.clone())
            .collect();
        *self.ready.write().unwrap_or_else(PoisonError::into_inner) = Arc::from(ready);
    }

    /// Starts a connection task (made by `spawn`) for each new endpoint and stops those of
    /// endpoints that are gone.
    pub(crate) fn reconcile(
        &self,
        resolved: Vec<String>,
        mut spawn: impl FnMut(Arc<str>) -> AbortHandle,
    ) {
        let mut endpoints = lock(&self.endpoints);
        let wanted: Vec<Arc<str>> = resolved.into_iter().map(Arc::from).collect();
        endpoints.retain(|endpoint, entry| {
            let keep = wanted.contains(endpoint);
            if !keep {
                tracing::debug!(%endpoint, "endpoint removed");
                entry.task.abort();
            }
            keep
        });
        for endpoint in wanted {
            if endpoints.contains_key(&endpoint) {
                continue;
            }
            tracing::debug!(%endpoint, "endpoint added");
            let task = spawn(endpoint.clone());
            endpoints.insert(endpoint, Endpoint { task, ready: None });
        }
        self.rebuild_ready(&endpoints);
    }
}

/// Power of two choices: of two candidates picked at random, the one with the lower `load`.
fn power_of_two_choices<T>(candidates: &[T], load: impl Fn(&T) -> usize) -> Option<&T> {
    match candidates.len() {
        0 => None,
        1 => candidates.first(),
        len => {
            let first = fastrand::usize(..len);
            let second = (first + 1 + fastrand::usize(..len - 1)) % len;
            let (a, b) = (&candidates[first], &candidates[second]);
            Some(if load(b) < load(a) { b } else { a })
        }
    }
}

/// Errors after which the call did not complete on that server for a reason of the
/// connection or the server's state, not of the call itself.
fn is_transport_failure(error: &RpcError) -> bool {
    matches!(
        error,
        RpcError::ConnectionClosed { .. } | RpcError::Unavailable { .. } | RpcError::Io { .. }
    )
}

#[cfg(test)]
mod tests;
