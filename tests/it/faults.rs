//! Faults and bad input: each ends with a clear error for the call or connection it
//! concerns, and affects nothing else.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rpc_core::wire::PREFACE;
use rpc_core::{ChannelConfig, RpcError, ServerConfig};
use rpc_tests::*;
use tokio::io::AsyncWriteExt;

/// Checks that the server still answers a fresh, well-behaved connection.
async fn assert_server_healthy(server: &TestServer) {
    let calc = CalculatorClient::new(server.connect().await);
    assert_eq!(calc.add(40, 2).await.unwrap(), 42, "{:?}", server.transport);
}

#[tokio::test]
async fn a_request_over_the_frame_limit_fails_before_anything_is_sent() {
    for transport in Transport::ALL {
        let (server, _) = test_server();
        let server = TestServer::start(server, transport).await;
        let mut config = ChannelConfig::default();
        config.max_frame_size = 1024;
        let probe = ProbeClient::new(server.connect_with(config).await);
        let error = probe.echo(vec![0; 2048]).await.unwrap_err();
        assert!(
            matches!(error, RpcError::FrameTooLarge { max: 1024, .. }),
            "{transport:?}: {error}"
        );
        // Nothing was sent, so the channel is intact.
        assert_eq!(probe.echo(vec![1; 10]).await.unwrap(), vec![1; 10]);
    }
}

#[tokio::test]
async fn a_response_over_the_servers_limit_fails_that_call_only() {
    for transport in Transport::ALL {
        let mut config = ServerConfig::default();
        config.max_frame_size = 1024;
        let (server, _) = test_server_with(config);
        let server = TestServer::start(server, transport).await;
        let probe = ProbeClient::new(server.connect().await);
        let error = probe.fill(4096).await.unwrap_err();
        assert!(
            matches!(error, RpcError::FrameTooLarge { max: 1024, .. }),
            "{transport:?}: {error}"
        );
        assert_eq!(probe.fill(10).await.unwrap(), vec![7; 10]);
    }
}

#[tokio::test]
async fn a_response_over_the_clients_limit_closes_its_channel_with_frame_too_large() {
    for transport in Transport::ALL {
        let (server, _) = test_server();
        let server = TestServer::start(server, transport).await;
        let mut config = ChannelConfig::default();
        config.max_frame_size = 1024;
        let channel = server.connect_with(config).await;
        let probe = ProbeClient::new(channel.clone());
        let error = probe.fill(4096).await.unwrap_err();
        assert!(
            matches!(error, RpcError::FrameTooLarge { max: 1024, .. }),
            "{error}"
        );
        // The stream can no longer be trusted: later calls fail fast with the same cause.
        let later = probe.fill(1).await.unwrap_err();
        assert!(matches!(later, RpcError::FrameTooLarge { .. }), "{later}");
        assert!(channel.is_closed());
        assert_server_healthy(&server).await;
    }
}

#[tokio::test]
async fn an_oversized_length_prefix_closes_only_that_connection() {
    for transport in Transport::SOCKETS {
        let (server, _) = test_server();
        let server = TestServer::start(server, transport).await;
        let bystander = CalculatorClient::new(server.connect().await);
        let mut raw = server.raw().await;
        raw.write_all(&PREFACE).await.unwrap();
        raw.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let answer = read_until_closed(&mut raw, Duration::from_secs(2)).await;
        // The server's preface at most: no frame for a peer that broke the protocol.
        assert!(answer.len() <= PREFACE.len(), "{transport:?}");
        assert_eq!(bystander.add(1, 1).await.unwrap(), 2, "{transport:?}");
    }
}

#[tokio::test]
async fn garbage_and_http_are_refused_at_once() {
    let inputs: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: example\r\n\r\n",
        &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc],
        b"\x00RPC\r\n\x09\x00",
        &[0xde, 0xad, 0xbe, 0xef],
    ];
    for transport in Transport::SOCKETS {
        let mut config = ServerConfig::default();
        config.preface_timeout = Duration::from_secs(30);
        let (server, _) = test_server_with(config);
        let server = TestServer::start(server, transport).await;
        let bystander = CalculatorClient::new(server.connect().await);
        for input in inputs {
            let mut raw = server.raw().await;
            let started = Instant::now();
            raw.write_all(input).await.unwrap();
            let answer = read_until_closed(&mut raw, Duration::from_secs(2)).await;
            assert!(answer.is_empty(), "{transport:?}: answered {answer:?}");
            // Closed at once, not after the (long) preface timeout.
            assert!(started.elapsed() < Duration::from_secs(2));
        }
        assert_eq!(bystander.add(2, 2).await.unwrap(), 4, "{transport:?}");
    }
}

#[tokio::test]
async fn a_malformed_frame_after_the_preface_closes_that_connection() {
    for transport in Transport::SOCKETS {
        let (server, _) = test_server();
        let server = TestServer::start(server, transport).await;
        let mut raw = server.raw().await;
        raw.write_all(&PREFACE).await.unwrap();
        // A frame of an unknown kind.
        raw.write_all(&[0, 0, 0, 2, 0x7f, 0]).await.unwrap();
        read_until_closed(&mut raw, Duration::from_secs(2)).await;
        assert_server_healthy(&server).await;
    }
}

#[tokio::test]
async fn a_well_framed_request_with_a_bad_payload_gets_an_answer_and_the_connection_stays() {
    use rpc_core::wire::Status;
    for transport in Transport::SOCKETS {
        let (server, _) = test_server();
        let server = TestServer::start(server, transport).await;
        let mut raw = server.raw().await;
        raw.write_all(&PREFACE).await.unwrap();
        // `add` takes two integers; send a string and trailing garbage.
        raw.write_all(&request_frame(1, "Calculator", "add", &("x", 1_u8)))
            .await
            .unwrap();
        raw.write_all(&request_frame(2, "Calculator", "add", &(20_i64, 22_i64)))
            .await
            .unwrap();
        let answers = read_responses(&mut raw, &[1, 2], Duration::from_secs(2)).await;
        assert_eq!(answers[&1].0, Status::BadRequest, "{transport:?}");
        assert_eq!(answers[&2].0, Status::Ok, "{transport:?}");
        assert_eq!(
            rpc_core::codec::decode::<i64>(&answers[&2].1).unwrap(),
            42,
            "{transport:?}"
        );
    }
}

#[tokio::test]
async fn a_panicking_handler_fails_only_its_own_call() {
    for transport in Transport::ALL {
        let (server, stats) = test_server();
        let server = TestServer::start(server, transport).await;
        let channel = server.connect().await;
        let probe = ProbeClient::new(channel.clone());
        let calc = CalculatorClient::new(channel);
        let bystander = tokio::spawn(probe.sleep(200));
        eventually("the bystander started", || {
            stats.sleeping.load(Ordering::SeqCst) == 1
        })
        .await;
        let error = probe.panic("boom".into()).await.unwrap_err();
        assert!(
            matches!(&error, RpcError::HandlerPanicked { method } if &**method == "panic"),
            "{transport:?}: {error}"
        );
        // The panic text stays on the server.
        assert!(!error.to_string().contains("boom"));
        assert_eq!(bystander.await.unwrap().unwrap(), 200, "{transport:?}");
        assert_eq!(calc.add(1, 2).await.unwrap(), 3);
        assert_server_healthy(&server).await;
    }
}

#[tokio::test]
async fn a_connection_that_drops_mid_call_fails_every_pending_call_promptly() {
    use tokio::io::AsyncReadExt;
    for transport in Transport::SOCKETS {
        let channel = fake_server(transport, |mut stream| async move {
            stream.write_all(&PREFACE).await.unwrap();
            // Read the preface and the start of the requests, then vanish.
            let mut buf = [0_u8; 64];
            let _ = stream.read(&mut buf).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        })
        .await;
        let calc = CalculatorClient::new(channel.clone());
        let started = Instant::now();
        let calls: Vec<_> = (0..5).map(|i| tokio::spawn(calc.add(i, i))).collect();
        for call in calls {
            let error = call.await.unwrap().unwrap_err();
            assert!(
                matches!(error, RpcError::ConnectionClosed { .. }),
                "{transport:?}: {error}"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        // Later calls fail fast instead of hanging.
        let error = calc.add(1, 1).await.unwrap_err();
        assert!(
            matches!(error, RpcError::ConnectionClosed { .. }),
            "{error}"
        );
        assert!(channel.is_closed());
    }
}

#[tokio::test]
async fn a_peer_that_is_not_an_rpc_server_fails_calls_with_a_protocol_error() {
    for transport in Transport::SOCKETS {
        let channel = fake_server(transport, |mut stream| async move {
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
        .await;
        let calc = CalculatorClient::new(channel);
        let error = tokio::time::timeout(Duration::from_secs(2), calc.add(1, 1))
            .await
            .expect("no hang")
            .unwrap_err();
        assert!(
            matches!(error, RpcError::Protocol { .. }),
            "{transport:?}: {error}"
        );
    }
}

#[tokio::test]
async fn a_peer_that_stalls_is_closed_after_the_preface_timeout_without_blocking_others() {
    for transport in Transport::SOCKETS {
        let mut config = ServerConfig::default();
        config.preface_timeout = Duration::from_millis(200);
        let (server, _) = test_server_with(config);
        let server = TestServer::start(server, transport).await;
        let mut silent = server.raw().await;
        let mut half_preface = server.raw().await;
        half_preface.write_all(&PREFACE[..3]).await.unwrap();
        // Others are served while the stalled peers wait.
        assert_server_healthy(&server).await;
        let started = Instant::now();
        read_until_closed(&mut silent, Duration::from_secs(2)).await;
        read_until_closed(&mut half_preface, Duration::from_secs(2)).await;
        assert!(started.elapsed() < Duration::from_secs(2), "{transport:?}");
    }
}

#[tokio::test]
async fn half_a_frame_is_closed_after_the_frame_timeout() {
    for transport in Transport::SOCKETS {
        let mut config = ServerConfig::default();
        config.frame_timeout = Duration::from_millis(200);
        let (server, _) = test_server_with(config);
        let server = TestServer::start(server, transport).await;
        let mut raw = server.raw().await;
        raw.write_all(&PREFACE).await.unwrap();
        let frame = request_frame(1, "Calculator", "add", &(1_i64, 2_i64));
        raw.write_all(&frame[..frame.len() - 3]).await.unwrap();
        assert_server_healthy(&server).await;
        let answer = read_until_closed(&mut raw, Duration::from_secs(2)).await;
        assert_eq!(
            answer,
            rpc_core::wire::preface(rpc_core::wire::PREFACE_SERVES),
            "{transport:?}: only the server's preface, no response"
        );
    }
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_its_channel_fails_fast() {
    for transport in Transport::ALL {
        let mut config = ServerConfig::default();
        config.idle_timeout = Some(Duration::from_millis(200));
        let (server, _) = test_server_with(config);
        let server = TestServer::start(server, transport).await;
        let channel = server.connect().await;
        let calc = CalculatorClient::new(channel.clone());
        assert_eq!(calc.add(1, 1).await.unwrap(), 2);
        let reason = tokio::time::timeout(Duration::from_secs(2), channel.closed())
            .await
            .expect("the idle connection should close");
        assert!(
            matches!(reason, RpcError::ConnectionClosed { .. }),
            "{reason}"
        );
        let error = calc.add(1, 1).await.unwrap_err();
        assert!(
            matches!(
                error,
                RpcError::ConnectionClosed { .. } | RpcError::Unavailable { .. }
            ),
            "{transport:?}: {error}"
        );
    }
}

#[tokio::test]
async fn a_busy_connection_is_not_idle() {
    let mut config = ServerConfig::default();
    config.idle_timeout = Some(Duration::from_millis(100));
    let (server, _) = test_server_with(config);
    let server = TestServer::start(server, Transport::Tcp).await;
    let probe = ProbeClient::new(server.connect().await);
    // One call running for longer than the idle timeout keeps the connection.
    assert_eq!(probe.sleep(400).await.unwrap(), 400);
}

#[tokio::test]
async fn past_the_concurrency_limit_the_server_applies_backpressure() {
    for transport in Transport::ALL {
        let mut config = ServerConfig::default();
        config.max_concurrent_calls = 4;
        let (server, stats) = test_server_with(config);
        let server = TestServer::start(server, transport).await;
        let probe = ProbeClient::new(server.connect().await);
        let calls: Vec<_> = (0..20).map(|_| tokio::spawn(probe.sleep(50))).collect();
        for call in calls {
            assert_eq!(call.await.unwrap().unwrap(), 50);
        }
        let max = stats.max_sleeping.load(Ordering::SeqCst);
        assert!(
            (1..=4).contains(&max),
            "{transport:?}: {max} handlers ran at once"
        );
    }
}
