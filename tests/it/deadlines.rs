//! Deadlines and cancellation: a call never outlives its deadline, and a call that is
//! abandoned (deadline or dropped future) stops its handler on the server.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rpc_core::RpcError;
use rpc_tests::*;

#[tokio::test]
async fn a_passed_deadline_fails_the_call_promptly_and_drops_the_handler() {
    for transport in Transport::ALL {
        let (server, stats) = test_server();
        let server = TestServer::start(server, transport).await;
        let probe = ProbeClient::new(server.connect().await);
        let started = Instant::now();
        let error = probe
            .with_timeout(Duration::from_millis(100))
            .hang()
            .await
            .unwrap_err();
        assert!(
            matches!(error, RpcError::DeadlineExceeded { .. }),
            "{transport:?}: {error}"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{transport:?}");
        eventually("the server dropped the handler", || {
            stats.hang_dropped.load(Ordering::SeqCst) == 1
        })
        .await;
    }
}

#[tokio::test]
async fn the_handler_sees_the_deadline_as_remaining_time() {
    for transport in Transport::ALL {
        let (server, _) = test_server();
        let server = TestServer::start(server, transport).await;
        let probe = ProbeClient::new(server.connect().await);
        let left = probe
            .with_timeout(Duration::from_secs(10))
            .deadline_millis()
            .await
            .unwrap()
            .expect("a deadline");
        assert!((9_000..=10_000).contains(&left), "{transport:?}: {left} ms");
        assert_eq!(probe.deadline_millis().await.unwrap(), None);
        let fixed = probe
            .with_deadline(Instant::now() + Duration::from_secs(3))
            .deadline_millis()
            .await
            .unwrap()
            .expect("a deadline");
        assert!(
            (2_000..=3_000).contains(&fixed),
            "{transport:?}: {fixed} ms"
        );
    }
}

#[tokio::test]
async fn an_expired_deadline_fails_before_anything_is_sent() {
    let (server, stats) = test_server();
    let server = TestServer::start(server, Transport::Tcp).await;
    let probe = ProbeClient::new(server.connect().await);
    let error = probe
        .with_deadline(Instant::now() - Duration::from_secs(1))
        .hang()
        .await
        .unwrap_err();
    assert!(
        matches!(error, RpcError::DeadlineExceeded { .. }),
        "{error}"
    );
    assert_eq!(stats.hang_started.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_default_timeout_applies_to_calls_without_one() {
    let (server, _) = test_server();
    let server = TestServer::start(server, Transport::Loopback).await;
    let mut config = rpc_core::ChannelConfig::default();
    config.default_timeout = Some(Duration::from_millis(50));
    let probe = ProbeClient::new(server.connect_with(config).await);
    let error = probe.hang().await.unwrap_err();
    assert!(
        matches!(error, RpcError::DeadlineExceeded { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn dropping_a_call_future_drops_the_handler() {
    for transport in Transport::ALL {
        let (server, stats) = test_server();
        let server = TestServer::start(server, transport).await;
        let probe = ProbeClient::new(server.connect().await);
        let call = tokio::spawn(probe.hang());
        eventually("the handler started", || {
            stats.hang_started.load(Ordering::SeqCst) == 1
        })
        .await;
        call.abort();
        eventually("the server dropped the handler", || {
            stats.hang_dropped.load(Ordering::SeqCst) == 1
        })
        .await;
        // The connection carries on.
        assert_eq!(probe.echo(vec![9]).await.unwrap(), vec![9], "{transport:?}");
    }
}

/// A client that vanishes (its socket closed, no CANCEL sent for anything) takes its
/// handlers with it: the server drops every one when the connection ends.
#[tokio::test]
async fn a_client_that_disconnects_drops_all_its_handlers() {
    use tokio::io::AsyncWriteExt;
    for transport in [Transport::Tcp, Transport::Unix] {
        let (server, stats) = test_server();
        let server = TestServer::start(server, transport).await;
        let mut raw = server.raw().await;
        raw.write_all(&rpc_core::wire::PREFACE).await.unwrap();
        for call_id in [1, 3, 5] {
            raw.write_all(&request_frame(call_id, "Probe", "hang", &()))
                .await
                .unwrap();
        }
        eventually("the handlers started", || {
            stats.hang_started.load(Ordering::SeqCst) == 3
        })
        .await;
        drop(raw);
        eventually("the server dropped every handler", || {
            stats.hang_dropped.load(Ordering::SeqCst) == 3
        })
        .await;
    }
}
