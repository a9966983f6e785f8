//! Balanced and reconnecting channels: one `Channel` over connections to many servers.
//!
//! A [`Resolve`] says which endpoints there are (a fixed list, a DNS name looked up again
//! every `resolve_interval`); a [`Connect`] dials one (TCP, Unix, TLS: the transports
//! provide them). The balancer keeps one connection per endpoint, each in a task of its
//! own that re-dials with exponential backoff and jitter when the connection fails or the
//! server sends GOAWAY, and that watches the server's health service so that a server
//! reporting `NotServing` (one shutting down, say) gets no new calls.
//!
//! Each call goes to the less loaded of two ready connections picked at random (power of
//! two choices on calls in flight). A call that finds no ready connection waits for one
//! within its deadline (or fails at once, with `wait_for_ready` off). A call to an
//! `#[idempotent]` method that fails for a transport reason is tried again on another
//! endpoint, within its deadline and a retry budget (tower's `TpsBudget`); calls to other
//! methods are never replayed, so a call that may have run fails with the error it got.
//! A reconnecting channel is a balanced channel over one endpoint.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tower::retry::budget::{Budget, TpsBudget};

use crate::channel::{CallOptions, Channel, ChannelShared, EncodeArgs, MethodSpec};
use crate::config::BalanceConfig;
use crate::context::Peer;
use crate::error::RpcError;
use crate::health::{HealthClient, ServingStatus};
use crate::recover::lock;
use crate::wire::Status;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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

/// Opens a connection to one endpoint.
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

impl Channel {
    /// A channel that spreads its calls over connections to every endpoint `resolver`
    /// names, dialled with `connector`, and keeps them up (see the module documentation
    /// of `balance`). Transports offer ready-made ones: `rpc_transport::tcp::balanced`,
    /// `tcp::balanced_dns`, `tcp::reconnecting`, `unix::reconnecting`.
    ///
    /// It starts dialling at once; calls made before a connection is ready wait for one
    /// (see [`BalanceConfig::wait_for_ready`]). Dropping every clone stops it.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn balanced(
        resolver: impl Resolve,
        connector: impl Connect,
        config: BalanceConfig,
    ) -> Channel {
        let resolver: Arc<dyn Resolve> = Arc::new(resolver);
        let balancer = Arc::new(Balancer {
            peer: Peer::Other(format!("balanced over {}", resolver.describe()).into()),
            budget: TpsBudget::new(
                Duration::from_secs(10),
                config.retry_budget_min_per_second,
                config.retry_budget_ratio,
            ),
            config,
            connector: Arc::new(connector),
            endpoints: Mutex::new(HashMap::new()),
            ready: RwLock::new(Arc::from(Vec::new())),
            ready_changed: Notify::new(),
            last_error: Mutex::new(None),
            resolver_task: Mutex::new(None),
        });
        let task = tokio::spawn(run_resolver(Arc::downgrade(&balancer), resolver));
        *lock(&balancer.resolver_task) = Some(task.abort_handle());
        Channel::balanced_route(balancer)
    }
}

/// One ready connection: its endpoint and the channel over it.
#[derive(Debug, Clone)]
struct Ready {
    endpoint: Arc<str>,
    channel: Channel,
    connection: Arc<ChannelShared>,
}

/// An endpoint's connection task, and whether its connection takes calls now.
#[derive(Debug)]
struct Endpoint {
    task: AbortHandle,
    ready: Option<Ready>,
}

/// The shared state of a balanced channel.
pub(crate) struct Balancer {
    peer: Peer,
    config: BalanceConfig,
    connector: Arc<dyn Connect>,
    endpoints: Mutex<HashMap<Arc<str>, Endpoint>>,
    /// The ready connections, rebuilt whenever one comes or goes, read by every call.
    ready: RwLock<Arc<[Ready]>>,
    /// Signalled when a connection becomes ready.
    ready_changed: Notify,
    budget: TpsBudget,
    /// Why the last dial failed, for calls that find nothing ready.
    last_error: Mutex<Option<RpcError>>,
    resolver_task: Mutex<Option<AbortHandle>>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("peer", &self.peer)
            .field("ready", &self.ready_count())
            .finish_non_exhaustive()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.resolver_task).take() {
            task.abort();
        }
        for endpoint in lock(&self.endpoints).values() {
            endpoint.task.abort();
        }
    }
}

impl Balancer {
    pub(crate) fn peer(&self) -> &Peer {
        &self.peer
    }

    pub(crate) fn config(&self) -> &BalanceConfig {
        &self.config
    }

    pub(crate) fn calls_in_flight(&self) -> usize {
        self.snapshot()
            .iter()
            .map(|ready| ready.connection.calls_in_flight())
            .sum()
    }

    fn ready_count(&self) -> usize {
        self.snapshot().len()
    }

    fn snapshot(&self) -> Arc<[Ready]> {
        self.ready
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Calls `method` on a ready connection, retrying an idempotent method on another
    /// endpoint after a transport failure (see the module documentation).
    pub(crate) async fn call<E, T>(
        &self,
        method: &MethodSpec,
        options: &CallOptions,
        args: &E,
        finish: &(dyn Fn(Status, Bytes) -> Result<T, RpcError> + Sync),
    ) -> Result<T, RpcError>
    where
        E: EncodeArgs + ?Sized,
    {
        // Every attempt shares the deadline the call started with.
        let deadline = options.deadline_for_call(self.config.channel.default_timeout);
        let options = match deadline {
            Some(deadline) => options.clone().with_deadline(deadline),
            None => options.clone(),
        };
        let mut attempt = 1;
        let mut failed_endpoint: Option<Arc<str>> = None;
        loop {
            let ready = self.pick(deadline, failed_endpoint.as_deref()).await?;
            let outcome = ready
                .connection
                .unary(method, &options, args, |status, payload| {
                    finish(status, payload)
                })
                .await;
            drop(ready.channel);
            match outcome {
                Err(error)
                    if method.idempotent
                        && attempt < self.config.max_attempts
                        && is_transport_failure(&error)
                        && deadline.is_none_or(|deadline| Instant::now() < deadline)
                        && self.budget.withdraw() =>
                {
                    tracing::debug!(
                        service = method.service,
                        method = method.method,
                        endpoint = %ready.endpoint,
                        attempt,
                        %error,
                        "retrying an idempotent call on another endpoint"
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

    /// The connection for a streaming call (never retried): one ready connection, waited
    /// for as [`Balancer::call`] does.
    pub(crate) async fn pick_for(
        &self,
        options: &CallOptions,
    ) -> Result<(Arc<ChannelShared>, Channel), RpcError> {
        let deadline = options.deadline_for_call(self.config.channel.default_timeout);
        let ready = self.pick(deadline, None).await?;
        Ok((ready.connection, ready.channel))
    }

    /// A ready connection, waiting for one within `deadline` and the ready timeout unless
    /// `wait_for_ready` is off. Prefers endpoints other than `avoid`.
    async fn pick(
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

    /// Power of two choices: of two ready connections picked at random, the one with fewer
    /// calls in flight.
    fn choose(&self, avoid: Option<&str>) -> Option<Ready> {
        let ready = self.snapshot();
        let candidates: Vec<&Ready> = match avoid {
            Some(avoid) if ready.len() > 1 => ready
                .iter()
                .filter(|ready| &*ready.endpoint != avoid)
                .collect(),
            _ => ready.iter().collect(),
        };
        match candidates.len() {
            0 => None,
            1 => Some(candidates[0].clone()),
            len => {
                let first = random_below(len);
                let second = (first + 1 + random_below(len - 1)) % len;
                let (a, b) = (candidates[first], candidates[second]);
                let less_loaded = if b.connection.calls_in_flight() < a.connection.calls_in_flight()
                {
                    b
                } else {
                    a
                };
                Some(less_loaded.clone())
            }
        }
    }

    /// Records whether `endpoint`'s connection takes calls, and rebuilds the ready list.
    fn set_ready(&self, endpoint: &Arc<str>, ready: Option<Ready>) {
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
        *self
            .ready
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::from(ready);
    }

    /// Starts a connection task for each new endpoint and stops those of endpoints that
    /// are gone.
    fn reconcile(self: &Arc<Self>, resolved: Vec<String>) {
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
            let task = tokio::spawn(run_endpoint(Arc::downgrade(self), endpoint.clone()));
            endpoints.insert(
                endpoint,
                Endpoint {
                    task: task.abort_handle(),
                    ready: None,
                },
            );
        }
        self.rebuild_ready(&endpoints);
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

/// Resolves the endpoints now and every `resolve_interval`, while the balancer lives.
async fn run_resolver(balancer: Weak<Balancer>, resolver: Arc<dyn Resolve>) {
    loop {
        let Some(interval) = balancer
            .upgrade()
            .map(|balancer| balancer.config.resolve_interval)
        else {
            return;
        };
        match resolver.resolve().await {
            Ok(endpoints) => match balancer.upgrade() {
                Some(balancer) => balancer.reconcile(endpoints),
                None => return,
            },
            Err(error) => {
                tracing::warn!(%error, "could not resolve the endpoints; keeping the last ones");
                if let Some(balancer) = balancer.upgrade() {
                    *lock(&balancer.last_error) = Some(error);
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Keeps one endpoint connected: dials, marks the connection ready while it takes calls
/// and its server reports serving, and dials again with backoff once it ends.
async fn run_endpoint(balancer: Weak<Balancer>, endpoint: Arc<str>) {
    let mut backoff = None;
    loop {
        let Some((connector, config)) = balancer
            .upgrade()
            .map(|balancer| (balancer.connector.clone(), balancer.config.clone()))
        else {
            return;
        };
        if let Some(pause) = backoff {
            tokio::time::sleep(jittered(pause)).await;
        }
        match connector.connect(&endpoint).await {
            Ok(channel) => {
                serve_connection(&balancer, &endpoint, channel, config.watch_health).await;
                backoff = Some(config.reconnect_backoff);
            }
            Err(error) => {
                tracing::debug!(%endpoint, %error, "could not connect");
                let next = backoff.map_or(config.reconnect_backoff, |pause: Duration| pause * 2);
                backoff = Some(next.min(config.max_reconnect_backoff));
                match balancer.upgrade() {
                    Some(balancer) => *lock(&balancer.last_error) = Some(error),
                    None => return,
                }
            }
        }
    }
}

/// Offers `channel` to calls while it takes them and its server reports serving; returns
/// once the server sent GOAWAY or the connection ended.
async fn serve_connection(
    balancer: &Weak<Balancer>,
    endpoint: &Arc<str>,
    channel: Channel,
    watch_health: bool,
) {
    let Some(connection) = channel.connection().cloned() else {
        tracing::warn!(%endpoint, "the connector returned a balanced channel; it needs a plain one");
        return;
    };
    let ready = Ready {
        endpoint: endpoint.clone(),
        channel: channel.clone(),
        connection: connection.clone(),
    };
    let set_ready = |serving: bool| match balancer.upgrade() {
        Some(balancer) => {
            balancer.set_ready(endpoint, serving.then(|| ready.clone()));
            true
        }
        None => false,
    };
    let mut health = if watch_health {
        HealthClient::new(channel.clone())
            .watch(String::new())
            .await
            .ok()
    } else {
        None
    };
    if health.is_none() && !set_ready(true) {
        return;
    }
    let stopped = connection.until_stopped_taking_calls();
    tokio::pin!(stopped);
    loop {
        let status = async {
            match &mut health {
                Some(stream) => stream.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut stopped => break,
            status = status => match status {
                Some(Ok(status)) => {
                    if !set_ready(status == ServingStatus::Serving) {
                        return;
                    }
                }
                // The watch ended (a server that is shutting down ends it) or failed: what
                // the connection does next decides; until then it takes no new calls unless
                // the server never answered health at all.
                Some(Err(_)) | None => health = None,
            },
        }
    }
    tracing::debug!(%endpoint, "connection stopped taking calls");
    set_ready(false);
}

/// `pause` varied by up to ±20 %, so that clients that lost a server together do not all
/// dial it again together.
fn jittered(pause: Duration) -> Duration {
    let fraction = random_below(401) as f64 / 1000.0 - 0.2;
    pause.mul_f64(1.0 + fraction)
}

/// A random number below `bound` (at least 1), from a per-thread xorshift generator
/// seeded once from the standard library's randomly keyed hasher.
fn random_below(bound: usize) -> usize {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::collections::hash_map::RandomState::new().build_hasher().finish() | 1,
        );
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x % bound.max(1) as u64) as usize
    })
}
