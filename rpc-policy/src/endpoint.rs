//! The balancer's background tasks: resolving the endpoints, and keeping each one
//! connected (dialling with backoff, watching its health, ejecting it while it takes no
//! calls).

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use rpc_core::health::{HealthClient, ServingStatus};
use rpc_core::Channel;

use crate::balance::{lock, Balancer, Ready, Resolve};

/// Resolves the endpoints now and every `resolve_interval`, while the balancer lives.
pub(crate) async fn run_resolver(balancer: Weak<Balancer>, resolver: Arc<dyn Resolve>) {
    loop {
        let Some(interval) = balancer
            .upgrade()
            .map(|balancer| balancer.config.resolve_interval)
        else {
            return;
        };
        match resolver.resolve().await {
            Ok(endpoints) => match balancer.upgrade() {
                Some(strong) => strong.reconcile(endpoints, |endpoint| {
                    tokio::spawn(run_endpoint(balancer.clone(), endpoint)).abort_handle()
                }),
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
                let health_timeout = config.watch_health.then_some(config.health_timeout);
                offer_connection(&balancer, &endpoint, channel, health_timeout).await;
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
/// once the server sent GOAWAY or the connection ended, or when, watching health (with
/// `health_timeout`), the server gave no first answer in time.
async fn offer_connection(
    balancer: &Weak<Balancer>,
    endpoint: &Arc<str>,
    channel: Channel,
    health_timeout: Option<Duration>,
) {
    let ready = Ready {
        endpoint: endpoint.clone(),
        channel: channel.clone(),
    };
    let set_ready = |serving: bool| match balancer.upgrade() {
        Some(balancer) => {
            balancer.set_ready(endpoint, serving.then(|| ready.clone()));
            true
        }
        None => false,
    };
    let mut health = None;
    let mut first_status = None;
    if let Some(limit) = health_timeout {
        let first_answer = async {
            let mut stream = HealthClient::new(channel.clone())
                .watch(String::new())
                .await
                .ok()?;
            let status = stream.next().await;
            Some((stream, status))
        };
        match tokio::time::timeout(limit, first_answer).await {
            Ok(Some((stream, status))) => {
                health = Some(stream);
                first_status = status;
            }
            // No health service (or a watch that failed): served without one.
            Ok(None) => {}
            Err(_elapsed) => {
                tracing::debug!(%endpoint, ?limit, "the server did not answer the health watch; dialling again");
                return;
            }
        }
    }
    match first_status {
        Some(Ok(status)) if !set_ready(status == ServingStatus::Serving) => return,
        // The watch failed at once: served as a server without health.
        Some(Err(_)) => health = None,
        Some(Ok(_)) | None => {}
    }
    if health.is_none() && !set_ready(true) {
        return;
    }
    let stopped = channel.stopped_taking_calls();
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
    pause.mul_f64(fastrand::f64().mul_add(0.4, 0.8))
}
