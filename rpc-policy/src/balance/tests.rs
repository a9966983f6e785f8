//! The balancer's decisions, over stand-in connections.

use std::sync::atomic::{AtomicUsize, Ordering};

use rpc_core::codegen::MethodSpec;
use rpc_core::route::Route;
use rpc_core::{CallOptions, ChannelConfig};

use super::*;

#[test]
fn two_choices_never_pick_the_most_loaded_of_three() {
    let loads = [5, 0, 9];
    for _ in 0..200 {
        let picked = power_of_two_choices(&loads, |load| *load).copied();
        assert_ne!(picked, Some(9), "the most loaded lost every pair it was in");
    }
    assert_eq!(power_of_two_choices(&[3], |load| *load), Some(&3));
    assert_eq!(power_of_two_choices::<usize>(&[], |load| *load), None);
}

#[test]
fn two_choices_spread_calls_over_equally_loaded_candidates() {
    let counts = [
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ];
    for _ in 0..300 {
        let picked = power_of_two_choices(&counts, |_| 0).unwrap();
        picked.fetch_add(1, Ordering::Relaxed);
    }
    for count in &counts {
        assert!(count.load(Ordering::Relaxed) > 30, "{counts:?}");
    }
}

/// A stand-in connection with a fixed load, taking calls or not; one that `closes` fails
/// every call as a connection that closed just as the call reached it would, having
/// written it (`Some(true)`) or not (`Some(false)`).
#[derive(Debug)]
struct Loaded {
    load: usize,
    taking: bool,
    closes: Option<bool>,
}

impl Loaded {
    fn new(load: usize, taking: bool) -> Loaded {
        Loaded {
            load,
            taking,
            closes: None,
        }
    }
}

impl Route for Loaded {
    fn peer(&self) -> &Peer {
        &Peer::Loopback
    }

    fn config(&self) -> &ChannelConfig {
        static CONFIG: std::sync::OnceLock<ChannelConfig> = std::sync::OnceLock::new();
        CONFIG.get_or_init(ChannelConfig::default)
    }

    fn calls_in_flight(&self) -> usize {
        self.load
    }

    fn is_taking_calls(&self) -> bool {
        self.taking
    }

    fn unary(&self, call: ClientCall) -> BoxFuture<'_, Result<Bytes, RpcError>> {
        let outcome = match self.closes {
            None => Ok(Bytes::new()),
            Some(sent) => {
                if sent {
                    call.mark_sent();
                }
                Err(RpcError::connection_closed("closed"))
            }
        };
        Box::pin(std::future::ready(outcome))
    }

    fn channel_for_stream<'a>(
        &'a self,
        _options: &'a CallOptions,
    ) -> BoxFuture<'a, Result<Channel, RpcError>> {
        Box::pin(std::future::ready(Err(RpcError::protocol(
            "no streams here",
        ))))
    }
}

/// A balancer over a connection that just closed (least loaded, so picked first) and a
/// live one.
fn one_just_closed(sent: bool) -> Balancer {
    let balancer = balancer_over(&[("live", 5)]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    balancer.reconcile(vec!["closed".to_owned(), "live".to_owned()], |_| {
        runtime.spawn(async {}).abort_handle()
    });
    let endpoint: Arc<str> = Arc::from("closed");
    let channel = Channel::from_route(Loaded {
        closes: Some(sent),
        ..Loaded::new(0, true)
    });
    balancer.set_ready(&endpoint.clone(), Some(Ready { endpoint, channel }));
    balancer
}

fn a_call_to(method: MethodSpec) -> ClientCall {
    ClientCall::new(method, CallOptions::default(), Bytes::new())
}

fn run<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn a_call_that_was_never_written_goes_to_another_endpoint_whatever_its_method() {
    let balancer = one_just_closed(false);
    run(async {
        for _ in 0..20 {
            let call = a_call_to(MethodSpec::new("Svc", "not_idempotent"));
            assert!(balancer.call(call).await.is_ok(), "the call was lost");
        }
    });
}

#[test]
fn a_call_that_may_have_run_is_replayed_only_when_idempotent() {
    let balancer = one_just_closed(true);
    run(async {
        let mut failed = 0;
        for _ in 0..20 {
            let call = a_call_to(MethodSpec::new("Svc", "not_idempotent"));
            if balancer.call(call).await.is_err() {
                failed += 1;
            }
            let call = a_call_to(MethodSpec::new("Svc", "read").idempotent());
            assert!(
                balancer.call(call).await.is_ok(),
                "the idempotent call failed"
            );
        }
        assert!(failed > 0, "a call that may have run was replayed");
    });
}

fn balancer_over(loads: &[(&str, usize)]) -> Balancer {
    let loads: Vec<(&str, usize, bool)> = loads
        .iter()
        .map(|(name, load)| (*name, *load, true))
        .collect();
    balancer_of(&loads)
}

fn balancer_of(loads: &[(&str, usize, bool)]) -> Balancer {
    let connector = |_endpoint: String| async { Err(RpcError::protocol("no dialling")) };
    let balancer = Balancer::new(
        Peer::Loopback,
        Arc::new(connector),
        BalanceConfig::default(),
    );
    let names = loads
        .iter()
        .map(|(name, _, _)| (*name).to_owned())
        .collect();
    // A task handle that is never polled: tests drive readiness by hand.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    balancer.reconcile(names, |_| runtime.spawn(async {}).abort_handle());
    for (name, load, taking) in loads {
        let endpoint: Arc<str> = Arc::from(*name);
        let channel = Channel::from_route(Loaded::new(*load, *taking));
        balancer.set_ready(&endpoint.clone(), Some(Ready { endpoint, channel }));
    }
    balancer
}

#[test]
fn an_ejected_endpoint_gets_no_calls_until_it_is_ready_again() {
    let balancer = balancer_over(&[("a", 0), ("b", 0)]);
    balancer.set_ready(&Arc::from("a"), None);
    for _ in 0..50 {
        assert_eq!(&*balancer.choose(None).unwrap().endpoint, "b");
    }
    balancer.set_ready(&Arc::from("b"), None);
    assert!(balancer.choose(None).is_none(), "nothing is ready");
    assert!(matches!(
        balancer.nothing_ready(),
        RpcError::Unavailable { .. }
    ));
}

#[test]
fn a_retry_avoids_the_endpoint_that_failed_while_there_is_another() {
    let balancer = balancer_over(&[("a", 0), ("b", 7)]);
    for _ in 0..50 {
        assert_eq!(&*balancer.choose(Some("a")).unwrap().endpoint, "b");
    }
    let lone = balancer_over(&[("a", 0)]);
    assert_eq!(&*lone.choose(Some("a")).unwrap().endpoint, "a");
}

#[test]
fn a_connection_that_stopped_taking_calls_is_never_picked() {
    // Idle (so it looks least busy) but closed: calls go to the busy live one.
    let balancer = balancer_of(&[("closed", 0, false), ("live", 9, true)]);
    for _ in 0..50 {
        assert_eq!(&*balancer.choose(None).unwrap().endpoint, "live");
    }
    let only_closed = balancer_of(&[("closed", 0, false)]);
    assert!(
        only_closed.choose(None).is_none(),
        "nothing takes calls: wait for one"
    );
}

#[test]
fn endpoints_gone_from_resolution_are_dropped() {
    let balancer = balancer_over(&[("a", 0), ("b", 0)]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    balancer.reconcile(vec!["b".to_owned()], |_| {
        runtime.spawn(async {}).abort_handle()
    });
    for _ in 0..50 {
        assert_eq!(&*balancer.choose(None).unwrap().endpoint, "b");
    }
}
