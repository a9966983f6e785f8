//! Graceful shutdown: stop accepting, finish in-flight calls, then return `Ok(())`.

use std::time::Duration;

use rpc_core::{RpcError, ServerConfig};
use rpc_tests::*;

#[tokio::test]
async fn shutdown_lets_in_flight_calls_finish_then_returns_ok() {
    for transport in [Transport::Tcp, Transport::Unix] {
        let (server, stats) = test_server();
        let mut server = TestServer::start(server, transport).await;
        let probe = ProbeClient::new(server.connect().await);
        let in_flight = tokio::spawn(probe.sleep(300));
        eventually("the call started", || {
            stats.sleeping.load(std::sync::atomic::Ordering::SeqCst) == 1
        })
        .await;
        let serving = server.start_shutdown();
        assert_eq!(in_flight.await.unwrap().unwrap(), 300, "{transport:?}");
        tokio::time::timeout(Duration::from_secs(2), serving)
            .await
            .expect("serve returns once calls drained")
            .unwrap()
            .unwrap();
    }
}

/// Once the server stops taking calls (right away here: no health drain delay), new calls
/// fail fast with `Unavailable` and may be retried elsewhere; calls it took finish.
#[tokio::test]
async fn calls_started_after_shutdown_began_fail_fast_and_may_be_retried() {
    let mut config = ServerConfig::default();
    config.health_drain_delay = Duration::ZERO;
    let (server, stats) = test_server_with(config);
    let mut server = TestServer::start(server, Transport::Tcp).await;
    let channel = server.connect().await;
    let probe = ProbeClient::new(channel.clone());
    let in_flight = tokio::spawn(probe.sleep(300));
    eventually("the call started", || {
        stats.sleeping.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    let serving = server.start_shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let error = CalculatorClient::new(channel).add(1, 1).await.unwrap_err();
    assert!(matches!(error, RpcError::Unavailable { .. }), "{error}");
    assert_eq!(in_flight.await.unwrap().unwrap(), 300);
    serving.await.unwrap().unwrap();
}

#[tokio::test]
async fn handlers_still_running_after_the_grace_period_are_abandoned() {
    let mut config = ServerConfig::default();
    config.shutdown_grace_period = Duration::from_millis(200);
    let (server, stats) = test_server_with(config);
    let mut server = TestServer::start(server, Transport::Tcp).await;
    let probe = ProbeClient::new(server.connect().await);
    let stuck = tokio::spawn(probe.hang());
    eventually("the call started", || {
        stats.hang_started.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    let serving = server.start_shutdown();
    tokio::time::timeout(Duration::from_secs(2), serving)
        .await
        .expect("serve returns after the grace period")
        .unwrap()
        .unwrap();
    let error = stuck.await.unwrap().unwrap_err();
    assert!(
        matches!(error, RpcError::ConnectionClosed { .. }),
        "{error}"
    );
    assert_eq!(
        stats.hang_dropped.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn serve_is_a_spawnable_future() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (server, _) = test_server();
    let serving = tokio::spawn(rpc_transport::serve(listener, server.clone()));
    let calc = CalculatorClient::new(rpc_transport::tcp::connect(address).await.unwrap());
    assert_eq!(calc.add(1, 2).await.unwrap(), 3);
    assert!(!serving.is_finished());
    serving.abort();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(
        rpc_transport::serve(listener, server).with_graceful_shutdown(async {
            let _ = stopped.await;
        }),
    );
    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_peer_stalled_in_its_preface_does_not_delay_shutdown() {
    for transport in Transport::SOCKETS {
        let (server, _) = test_server();
        let mut server = TestServer::start(server, transport).await;
        let _silent = server.raw().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let serving = server.start_shutdown();
        tokio::time::timeout(Duration::from_secs(2), serving)
            .await
            .expect("serve returns without waiting for the preface timeout")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn shutting_down_an_idle_server_closes_its_idle_connections() {
    for transport in Transport::SOCKETS {
        let (server, _) = test_server();
        let mut server = TestServer::start(server, transport).await;
        let channel = server.connect().await;
        assert_eq!(
            CalculatorClient::new(channel.clone())
                .add(1, 1)
                .await
                .unwrap(),
            2
        );
        server.start_shutdown().await.unwrap().unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(2), channel.closed())
            .await
            .expect("the channel learns that its connection closed");
        assert!(
            matches!(reason, RpcError::ConnectionClosed { .. }),
            "{transport:?}: {reason}"
        );
    }
}
