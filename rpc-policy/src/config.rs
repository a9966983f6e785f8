//! How a balanced or reconnecting channel keeps its connections and routes its calls.

use std::time::Duration;

use rpc_core::ChannelConfig;

/// How a balanced or reconnecting channel keeps its connections and routes its calls (see
/// [`balanced`](crate::balanced)).
///
/// ```
/// use std::time::Duration;
/// use rpc_policy::BalanceConfig;
///
/// let mut config = BalanceConfig::default();
/// config.wait_for_ready = false; // fail fast while no server is reachable
/// config.channel.default_timeout = Some(Duration::from_secs(2));
/// assert_eq!(config.max_attempts, 3);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BalanceConfig {
    /// The configuration of each connection.
    pub channel: ChannelConfig,
    /// While no connection is ready (every endpoint down, or still dialling), calls wait for
    /// one, within their deadline and at most `ready_timeout`; with `false` they fail at once
    /// with `RpcError::Unavailable`. Default `true`.
    pub wait_for_ready: bool,
    /// The longest a call waits for a ready connection (before its deadline, if it has
    /// one). Default 10 s.
    pub ready_timeout: Duration,
    /// The pause before re-dialling an endpoint whose connection failed or ended, doubled
    /// after each failure up to `max_reconnect_backoff`, each pause varied by ±20 % so that
    /// clients do not dial in step. Default 50 ms.
    pub reconnect_backoff: Duration,
    /// The longest pause between dials of an unreachable endpoint. Default 5 s.
    pub max_reconnect_backoff: Duration,
    /// How often the endpoints are resolved again (a DNS name, say, whose addresses change
    /// as replicas come and go). Default 30 s.
    pub resolve_interval: Duration,
    /// Attempts a call to an `#[idempotent]` method may make, on different endpoints, when
    /// an attempt fails for a transport reason (connection lost, server unavailable); other
    /// methods are never retried. Default 3.
    pub max_attempts: u32,
    /// Retries allowed as a share of first attempts, over the last 10 s, so that retries
    /// cannot multiply load on a struggling fleet. Default 0.2.
    pub retry_budget_ratio: f32,
    /// Retries allowed per second whatever the ratio says. Default 10.
    pub retry_budget_min_per_second: u32,
    /// Watch each server's health service and send no calls to one that reports
    /// `NotServing` (a server shutting down does so first). Default `true`.
    pub watch_health: bool,
    /// How long a new connection's server has to answer the health watch with its first
    /// status (or to say it has no health service). A server that says nothing in time gets
    /// no calls: its connection is dropped and dialled again with backoff, so a server that
    /// accepts connections but never answers cannot hold an endpoint for ever. Default 10 s.
    pub health_timeout: Duration,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig {
            channel: ChannelConfig::default(),
            wait_for_ready: true,
            ready_timeout: Duration::from_secs(10),
            reconnect_backoff: Duration::from_millis(50),
            max_reconnect_backoff: Duration::from_secs(5),
            resolve_interval: Duration::from_secs(30),
            max_attempts: 3,
            retry_budget_ratio: 0.2,
            retry_budget_min_per_second: 10,
            watch_health: true,
            health_timeout: Duration::from_secs(10),
        }
    }
}
