//! Unary calls as a user makes them: results, application errors, context, metadata,
//! several services and many concurrent calls on one connection.

use std::time::{Duration, Instant};

use rpc_core::RpcError;
use rpc_tests::*;

#[tokio::test]
async fn a_call_returns_its_result_on_every_transport() {
    for transport in Transport::ALL {
        let (server, _) = test_server();
        let server = TestServer::start(server, transport).await;
        let calc = CalculatorClient::new(server.connect().await);
        assert_eq!(calc.add(2, 3).await.unwrap(), 5, "{transport:?}");
    }
}

#[tokio::test]
async fn an_application_error_travels_inside_ok() {
    for transport in Transport::ALL {
        let (server, _) = test_server();
        let server = TestServer::start(server, transport).await;
        let calc = CalculatorClient::new(server.connect().await);
        assert_eq!(
            calc.div(1, 0).await.unwrap(),
            Err(MathError::DivideByZero),
            "{transport:?}"
        );
        assert_eq!(calc.div(9, 3).await.unwrap(), Ok(3), "{transport:?}");
    }
}

#[tokio::test]
async fn the_handler_sees_the_peer_of_each_transport() {
    for (transport, prefix) in [
        (Transport::Loopback, "loopback"),
        (Transport::Tcp, "tcp://127.0.0.1:"),
        (Transport::Unix, "unix://"),
    ] {
        let (server, _) = test_server();
        let server = TestServer::start(server, transport).await;
        let calc = CalculatorClient::new(server.connect().await);
        let peer = calc.whoami().await.unwrap();
        assert!(peer.starts_with(prefix), "{transport:?}: {peer}");
    }
}

#[tokio::test]
async fn metadata_reaches_the_handler() {
    for transport in Transport::ALL {
        let (server, _) = test_server();
        let server = TestServer::start(server, transport).await;
        let probe = ProbeClient::new(server.connect().await);
        let tagged = probe
            .with_metadata("tenant", "acme")
            .with_metadata("trace", "t-1");
        assert_eq!(
            tagged.metadata("tenant".into()).await.unwrap().as_deref(),
            Some("acme")
        );
        assert_eq!(
            tagged.metadata("trace".into()).await.unwrap().as_deref(),
            Some("t-1")
        );
        assert_eq!(
            probe.metadata("tenant".into()).await.unwrap(),
            None,
            "{transport:?}"
        );
    }
}

#[tokio::test]
async fn metadata_over_the_server_limit_fails_only_that_call() {
    let mut config = rpc_core::ServerConfig::default();
    config.max_metadata_size = 64;
    let (server, _) = test_server_with(config);
    let server = TestServer::start(server, Transport::Tcp).await;
    let probe = ProbeClient::new(server.connect().await);
    let error = probe
        .with_metadata("big", "x".repeat(100))
        .metadata("big".into())
        .await
        .unwrap_err();
    assert!(
        matches!(error, RpcError::ResourceExhausted { .. }),
        "{error}"
    );
    assert_eq!(probe.metadata("k".into()).await.unwrap(), None);
}

#[tokio::test]
async fn two_services_share_one_connection() {
    for transport in Transport::ALL {
        let (server, _) = test_server();
        let server = TestServer::start(server, transport).await;
        let channel = server.connect().await;
        let calc = CalculatorClient::new(channel.clone());
        let probe = ProbeClient::new(channel);
        let (sum, echoed) = tokio::join!(calc.add(1, 1), probe.echo(vec![1, 2, 3]));
        assert_eq!(sum.unwrap(), 2);
        assert_eq!(echoed.unwrap(), vec![1, 2, 3], "{transport:?}");
    }
}

#[tokio::test]
async fn a_slow_call_does_not_block_a_fast_one() {
    for transport in Transport::ALL {
        let (server, _) = test_server();
        let server = TestServer::start(server, transport).await;
        let channel = server.connect().await;
        let probe = ProbeClient::new(channel.clone());
        let calc = CalculatorClient::new(channel);
        let slow = tokio::spawn(probe.sleep(2_000));
        // Responses come back as they finish: the fast call returns long before the slow one.
        let started = Instant::now();
        assert_eq!(calc.add(20, 22).await.unwrap(), 42);
        assert!(
            started.elapsed() < Duration::from_millis(1_500),
            "{transport:?}"
        );
        assert!(!slow.is_finished(), "{transport:?}");
        slow.abort();
    }
}

#[tokio::test]
async fn many_concurrent_calls_complete_with_their_own_results() {
    for transport in Transport::ALL {
        let (server, _) = test_server();
        let server = TestServer::start(server, transport).await;
        let calc = CalculatorClient::new(server.connect().await);
        let calls: Vec<_> = (0..500).map(|i| tokio::spawn(calc.add(i, i))).collect();
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap().unwrap(), 2 * i as i64, "{transport:?}");
        }
    }
}

/// A client that pipelines sends many requests in one write; the server takes them from
/// its buffer in turns of a few, and every one of them is answered.
#[tokio::test]
async fn every_request_of_a_long_pipelined_burst_is_answered() {
    use tokio::io::AsyncWriteExt;
    for transport in Transport::SOCKETS {
        let (server, _) = test_server();
        let server = TestServer::start(server, transport).await;
        let mut raw = server.raw().await;
        let mut burst = rpc_core::wire::PREFACE.to_vec();
        let call_ids: Vec<u32> = (1..=1_000).collect();
        for &call_id in &call_ids {
            let args = (i64::from(call_id), 1_i64);
            burst.extend(request_frame(call_id, "Calculator", "add", &args));
        }
        raw.write_all(&burst).await.unwrap();
        let answers = read_responses(&mut raw, &call_ids, Duration::from_secs(5)).await;
        for (call_id, (status, payload)) in answers {
            assert_eq!(status, rpc_core::wire::Status::Ok, "{transport:?}");
            let sum = rpc_core::codec::decode::<i64>(&payload).unwrap();
            assert_eq!(sum, i64::from(call_id) + 1, "{transport:?}");
        }
    }
}

#[tokio::test]
async fn byte_buffers_round_trip_intact() {
    for transport in Transport::ALL {
        let (server, _) = test_server();
        let server = TestServer::start(server, transport).await;
        let probe = ProbeClient::new(server.connect().await);
        let data: Vec<u8> = (0..3_000_000_u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(
            probe.echo(data.clone()).await.unwrap(),
            data,
            "{transport:?}"
        );
        assert_eq!(probe.echo(Vec::new()).await.unwrap(), Vec::<u8>::new());
    }
}

#[tokio::test]
async fn an_unknown_service_or_method_fails_that_call_only() {
    use rpc_core::CallOptions;
    use rpc_core::codegen::MethodSpec;
    for transport in Transport::ALL {
        let (server, _) = test_server();
        let server = TestServer::start(server, transport).await;
        let channel = server.connect().await;
        let options = CallOptions::default();
        let missing_service = MethodSpec::new("Nope", "add");
        let error = channel
            .call::<_, i64>(&missing_service, &options, &(1_i64, 2_i64))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, RpcError::UnknownService { service } if &**service == "Nope"),
            "{error}"
        );
        let missing_method = MethodSpec::new("Calculator", "mul");
        let error = channel
            .call::<_, i64>(&missing_method, &options, &(1_i64, 2_i64))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, RpcError::UnknownMethod { method, .. } if &**method == "mul"),
            "{error}"
        );
        // The connection is fine.
        assert_eq!(
            CalculatorClient::new(channel).add(1, 2).await.unwrap(),
            3,
            "{transport:?}"
        );
    }
}

#[tokio::test]
async fn arguments_that_do_not_decode_fail_that_call_with_a_codec_error() {
    use rpc_core::CallOptions;
    use rpc_core::codegen::MethodSpec;
    for transport in Transport::ALL {
        let (server, _) = test_server();
        let server = TestServer::start(server, transport).await;
        let channel = server.connect().await;
        let add = MethodSpec::new("Calculator", "add");
        // A string where two integers are expected.
        let error = channel
            .call::<_, i64>(&add, &CallOptions::default(), &("not numbers",))
            .await
            .unwrap_err();
        assert!(
            matches!(error, RpcError::Codec { .. }),
            "{transport:?}: {error}"
        );
        assert_eq!(CalculatorClient::new(channel).add(1, 2).await.unwrap(), 3);
    }
}

#[tokio::test]
async fn clients_and_channels_are_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<rpc_core::Channel>();
    assert_send_sync::<CalculatorClient>();
    assert_send_sync::<rpc_core::Server>();
    fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<RpcError>();
}

/// A call's future stays small: it is moved (into `tokio::spawn`, say) on every call.
#[tokio::test]
async fn a_call_future_is_small() {
    let server = TestServer::start(test_server().0, Transport::Loopback).await;
    let calc = CalculatorClient::new(server.connect().await);
    let call = calc.add(1, 2);
    eprintln!("call future: {} bytes", std::mem::size_of_val(&call));
    assert!(std::mem::size_of_val(&call) <= 1024);
    assert_eq!(call.await.unwrap(), 3);
}
