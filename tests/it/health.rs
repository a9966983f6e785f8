//! The health service every server answers, and graceful shutdown reporting `NotServing`
//! before the server stops taking calls.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rpc_core::health::{HealthClient, ServingStatus};
use rpc_core::{RpcError, ServerConfig};
use rpc_tests::*;

#[tokio::test]
async fn every_server_answers_health_checks_for_itself_and_its_services() {
    for transport in Transport::ALL {
        let server = TestServer::start(test_server().0, transport).await;
        let health = HealthClient::new(server.connect().await);
        assert_eq!(
            health.check(String::new()).await.unwrap(),
            ServingStatus::Serving
        );
        assert_eq!(
            health.check("Calculator".into()).await.unwrap(),
            ServingStatus::Serving
        );
        assert_eq!(
            health.check("Nope".into()).await.unwrap(),
            ServingStatus::Unknown
        );
        server
            .server
            .health()
            .set("Calculator", ServingStatus::NotServing);
        assert_eq!(
            health.check("Calculator".into()).await.unwrap(),
            ServingStatus::NotServing,
            "{transport:?}"
        );
        // The health service is not one of the server's own.
        assert!(!server.server.service_names().any(|name| name == "Health"));
    }
}

#[tokio::test]
async fn a_watch_reports_the_status_now_and_at_every_change() {
    let server = TestServer::start(test_server().0, Transport::Tcp).await;
    let health = HealthClient::new(server.connect().await);
    let mut watch = health.watch("Probe".into()).await.unwrap();
    assert_eq!(watch.next().await.unwrap().unwrap(), ServingStatus::Serving);
    server
        .server
        .health()
        .set("Probe", ServingStatus::NotServing);
    assert_eq!(
        watch.next().await.unwrap().unwrap(),
        ServingStatus::NotServing
    );
    server.server.health().set("Probe", ServingStatus::Serving);
    assert_eq!(watch.next().await.unwrap().unwrap(), ServingStatus::Serving);
}

/// Graceful shutdown turns health to `NotServing` first (watchers hear it, and their
/// streams end so they do not hold the shutdown up), keeps taking calls for
/// `health_drain_delay`, and only then refuses new calls.
#[tokio::test]
async fn shutdown_reports_not_serving_before_it_stops_taking_calls() {
    for transport in Transport::SOCKETS {
        let mut config = ServerConfig::default();
        config.health_drain_delay = Duration::from_millis(300);
        let mut server = TestServer::start(test_server_with(config).0, transport).await;
        let channel = server.connect().await;
        let health = HealthClient::new(channel.clone());
        let calc = CalculatorClient::new(channel);
        let mut watch = health.watch(String::new()).await.unwrap();
        assert_eq!(watch.next().await.unwrap().unwrap(), ServingStatus::Serving);

        let started = Instant::now();
        let stopping = server.start_shutdown();
        assert_eq!(
            watch.next().await.unwrap().unwrap(),
            ServingStatus::NotServing
        );
        assert!(watch.next().await.is_none(), "the watch ends");
        assert!(started.elapsed() < Duration::from_millis(200));
        assert_eq!(
            calc.add(1, 2).await.unwrap(),
            3,
            "still taking calls while draining"
        );

        tokio::time::sleep(Duration::from_millis(400)).await;
        let error = calc.add(1, 2).await.unwrap_err();
        assert!(
            matches!(
                error,
                RpcError::Unavailable { .. } | RpcError::ConnectionClosed { .. }
            ),
            "{transport:?}: {error}"
        );
        stopping.await.unwrap().unwrap();
    }
}
