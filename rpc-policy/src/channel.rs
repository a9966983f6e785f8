//! A balanced channel: a [`Balancer`] with its resolver task, as a `Channel`.

use std::sync::Arc;

use bytes::Bytes;
use rpc_core::route::{BoxFuture, ClientCall, Route};
use rpc_core::{CallOptions, Channel, ChannelConfig, Peer, RpcError};

use crate::balance::{lock, Balancer, Connect, Resolve};
use crate::config::BalanceConfig;
use crate::endpoint;

/// A channel that spreads its calls over connections to every endpoint `resolver` names,
/// dialled with `connector`, and keeps them up (see the module documentation). Transports
/// offer ready-made ones: `rpc_transport::tcp::balanced`, `tcp::balanced_dns`,
/// `tcp::reconnecting`, `unix::reconnecting`.
///
/// It starts dialling at once; calls made before a connection is ready wait for one (see
/// [`BalanceConfig::wait_for_ready`]). Dropping every clone stops it.
///
/// # Panics
///
/// When called outside a tokio runtime.
pub fn balanced(resolver: impl Resolve, connector: impl Connect, config: BalanceConfig) -> Channel {
    let resolver: Arc<dyn Resolve> = Arc::new(resolver);
    let balancer = Arc::new(Balancer::new(
        Peer::Other(format!("balanced over {}", resolver.describe()).into()),
        Arc::new(connector),
        config,
    ));
    let task = tokio::spawn(endpoint::run_resolver(Arc::downgrade(&balancer), resolver));
    *lock(&balancer.resolver_task) = Some(task.abort_handle());
    Channel::from_route(BalancedRoute(balancer))
}

/// The route of a balanced channel. The endpoints' tasks hold the balancer weakly, so
/// dropping the last clone of the channel drops it, which stops them.
#[derive(Debug)]
struct BalancedRoute(Arc<Balancer>);

impl Route for BalancedRoute {
    fn peer(&self) -> &Peer {
        &self.0.peer
    }

    fn config(&self) -> &ChannelConfig {
        &self.0.config.channel
    }

    fn calls_in_flight(&self) -> usize {
        self.0
            .snapshot()
            .iter()
            .map(|ready| ready.channel.calls_in_flight())
            .sum()
    }

    fn unary(&self, call: ClientCall) -> BoxFuture<'_, Result<Bytes, RpcError>> {
        Box::pin(self.0.call(call))
    }

    fn channel_for_stream<'a>(
        &'a self,
        options: &'a CallOptions,
    ) -> BoxFuture<'a, Result<Channel, RpcError>> {
        Box::pin(async move {
            let deadline = options.deadline_for_call(self.0.config.channel.default_timeout);
            Ok(self.0.pick(deadline, None).await?.channel)
        })
    }
}
