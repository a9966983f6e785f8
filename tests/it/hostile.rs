//! Hostile peers, speaking the wire protocol by hand (the start of the catalogue in
//! `shared/HOSTILE.md`; the fault cases of the foundation live in `faults.rs`).

use std::time::Duration;

use rpc_core::ServerConfig;
use rpc_core::wire::{self, Frame, FrameDecoder, PREFACE};
use rpc_tests::*;
use tokio::io::AsyncWriteExt;

/// The frames in `bytes` (what the server sent after its preface).
fn frames_in(bytes: &[u8]) -> Vec<Frame> {
    let mut decoder = FrameDecoder::after_preface(1 << 24);
    let mut buf = bytes::BytesMut::from(bytes);
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        frames.push(Frame::parse(frame).unwrap());
    }
    frames
}

fn server_with_error_budget(budget: u32) -> rpc_core::Server {
    let mut config = ServerConfig::default();
    config.error_budget = budget;
    test_server_with(config).0
}

/// Catalogue row 25: a flood of requests that each force an error response.
#[tokio::test]
async fn a_flood_of_bad_requests_costs_the_peer_its_connection() {
    for transport in Transport::SOCKETS {
        let server = TestServer::start(server_with_error_budget(100), transport).await;
        let bystander = CalculatorClient::new(server.connect().await);
        let mut raw = server.raw().await;
        raw.write_all(&PREFACE).await.unwrap();
        let mut flood = Vec::new();
        for call_id in 1..=1_000 {
            flood.extend(request_frame(call_id, "NoSuchService", "nothing", &()));
        }
        // The server may close before it has read everything; that is the point.
        let _ = raw.write_all(&flood).await;
        let answer = read_until_closed(&mut raw, Duration::from_secs(5)).await;
        let frames = frames_in(&answer[PREFACE.len()..]);
        let answered = frames
            .iter()
            .filter(|frame| matches!(frame, Frame::Response { .. }))
            .count();
        assert!(
            answered <= 101,
            "{transport:?}: {answered} error responses before closing"
        );
        assert!(
            frames.iter().any(
                |frame| matches!(frame, Frame::GoAway { reason, .. } if reason == "too many errors")
            ),
            "{transport:?}: closed with a GOAWAY that says why"
        );
        assert_eq!(bystander.add(1, 2).await.unwrap(), 3, "{transport:?}");
    }
}

/// Catalogue row 20: request-then-cancel pairs (the Rapid Reset pattern). Each cancel stops
/// its handler at once and frees its slot, so the work stays bounded and nothing piles up.
#[tokio::test]
async fn request_then_cancel_pairs_leave_nothing_running() {
    for transport in Transport::SOCKETS {
        let mut config = ServerConfig::default();
        config.max_concurrent_calls = 16;
        let (server, stats) = test_server_with(config);
        let server = TestServer::start(server, transport).await;
        let mut raw = server.raw().await;
        raw.write_all(&PREFACE).await.unwrap();
        let mut flood = bytes::BytesMut::new();
        for call_id in 1..=2_000 {
            flood.extend_from_slice(&request_frame(call_id, "Probe", "hang", &()));
            wire::encode_cancel(&mut flood, call_id);
        }
        raw.write_all(&flood).await.unwrap();
        eventually("every handler started was dropped", || {
            let started = stats.hang_started.load(std::sync::atomic::Ordering::SeqCst);
            started == 2_000
                && stats.hang_dropped.load(std::sync::atomic::Ordering::SeqCst) == started
        })
        .await;
        // The connection is still served.
        raw.write_all(&request_frame(5_000, "Calculator", "add", &(2_i64, 3_i64)))
            .await
            .unwrap();
        let answers = read_responses(&mut raw, &[5_000], Duration::from_secs(2)).await;
        let sum = rpc_core::codec::decode::<i64>(&answers[&5_000].1).unwrap();
        assert_eq!(sum, 5, "{transport:?}");
    }
}

/// Cancels for calls the server does not have are useless frames: a flood of them is
/// charged to the error budget like bad requests.
#[tokio::test]
async fn a_flood_of_cancels_for_unknown_calls_costs_the_peer_its_connection() {
    for transport in Transport::SOCKETS {
        let server = TestServer::start(server_with_error_budget(100), transport).await;
        let mut raw = server.raw().await;
        raw.write_all(&PREFACE).await.unwrap();
        let mut flood = bytes::BytesMut::new();
        for call_id in 1..=1_000 {
            wire::encode_cancel(&mut flood, call_id);
        }
        let _ = raw.write_all(&flood).await;
        let answer = read_until_closed(&mut raw, Duration::from_secs(5)).await;
        let frames = frames_in(&answer[PREFACE.len()..]);
        assert!(
            frames
                .iter()
                .any(|frame| matches!(frame, Frame::GoAway { .. })),
            "{transport:?}: {} frames, no GOAWAY",
            frames.len()
        );
    }
}

/// A well-behaved client that makes the odd mistake keeps its connection.
#[tokio::test]
async fn a_few_errors_within_the_budget_are_forgiven() {
    use rpc_core::{CallOptions, MethodSpec};
    let server = TestServer::start(server_with_error_budget(100), Transport::Tcp).await;
    let channel = server.connect().await;
    let missing = MethodSpec {
        service: "Nope",
        method: "nothing",
        service_id: wire::wire_id("Nope"),
        method_id: wire::wire_id("nothing"),
    };
    for _ in 0..50 {
        assert!(
            channel
                .call::<_, ()>(&missing, &CallOptions::default(), &())
                .await
                .is_err()
        );
    }
    assert_eq!(CalculatorClient::new(channel).add(1, 1).await.unwrap(), 2);
}

/// Past `max_connections`, the server stops accepting until a connection closes.
#[tokio::test]
async fn past_the_connection_limit_new_connections_wait_their_turn() {
    for transport in Transport::SOCKETS {
        let mut config = ServerConfig::default();
        config.max_connections = 2;
        let (server, _) = test_server_with(config);
        let server = TestServer::start(server, transport).await;
        let first = CalculatorClient::new(server.connect().await);
        let second = CalculatorClient::new(server.connect().await);
        assert_eq!(first.add(1, 1).await.unwrap(), 2);
        assert_eq!(second.add(2, 2).await.unwrap(), 4);
        let third = CalculatorClient::new(server.connect().await);
        let waiting = tokio::spawn(third.add(3, 3));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !waiting.is_finished(),
            "{transport:?}: served past the limit"
        );
        drop(first);
        let answer = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert_eq!(
            answer.expect("served once a slot freed").unwrap().unwrap(),
            6,
            "{transport:?}"
        );
    }
}

/// Catalogue row 29: a server that stops answering without closing (power loss, a cut link)
/// cannot leave a call without a deadline hanging: an unanswered keepalive ping ends it.
#[tokio::test]
async fn a_silent_server_is_detected_by_keepalive() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.write_all(&PREFACE).await.unwrap();
        // Read everything, answer nothing, never close.
        let mut sink = [0_u8; 4096];
        while stream.read(&mut sink).await.is_ok_and(|read| read > 0) {}
        std::future::pending::<()>().await;
    });
    let mut config = rpc_core::ChannelConfig::default();
    config.keepalive_interval = Some(Duration::from_millis(100));
    config.keepalive_timeout = Duration::from_millis(100);
    let channel = rpc_transport::tcp::connect_with(address, config)
        .await
        .unwrap();
    let calc = CalculatorClient::new(channel);
    let outcome = tokio::time::timeout(Duration::from_secs(5), calc.add(1, 2))
        .await
        .expect("the call ends without a deadline of its own");
    assert!(
        matches!(outcome, Err(rpc_core::RpcError::ConnectionClosed { .. })),
        "{outcome:?}"
    );
}

/// A live server answers keepalive pings, so a long call is not cut short by them.
#[tokio::test]
async fn keepalive_pings_are_answered_by_a_live_server() {
    for transport in Transport::ALL {
        let (server, _) = test_server();
        let server = TestServer::start(server, transport).await;
        let mut config = rpc_core::ChannelConfig::default();
        config.keepalive_interval = Some(Duration::from_millis(20));
        config.keepalive_timeout = Duration::from_millis(200);
        let probe = ProbeClient::new(server.connect_with(config).await);
        assert_eq!(probe.sleep(600).await.unwrap(), 600, "{transport:?}");
    }
}

/// A recursive type, for the nesting-depth case.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Node(Option<Box<Node>>);

/// A service whose argument types a hostile payload can abuse.
#[rpc_core::service]
trait Shapes {
    /// How deep a node nests.
    async fn depth(&self, node: Node) -> u32;
    /// How many units it was sent.
    async fn units(&self, units: Vec<()>) -> u64;
}

struct ShapesImpl;

impl Shapes for ShapesImpl {
    async fn depth(&self, node: Node) -> u32 {
        let mut depth = 0;
        let mut current = node.0;
        while let Some(next) = current {
            depth += 1;
            current = next.0;
        }
        depth
    }

    async fn units(&self, units: Vec<()>) -> u64 {
        units.len() as u64
    }
}

/// A request frame with a payload given as raw bytes.
fn raw_request(call_id: u32, service: &str, method: &str, payload: &[u8]) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    let head = wire::RequestHead {
        call_id,
        service_id: wire::wire_id(service),
        method_id: wire::wire_id(method),
        deadline_micros: None,
        request_stream: false,
    };
    let start = wire::start_request(&mut buf, &head, &[]).unwrap();
    buf.extend_from_slice(payload);
    wire::finish_frame(&mut buf, start, usize::MAX).unwrap();
    buf.to_vec()
}

/// Catalogue rows 10 and 11: a payload nesting 100,000 levels deep, and a `Vec<()>` claiming
/// 2^63 elements. Each fails its own call with a decode error, promptly; the connection and
/// the server carry on.
#[tokio::test]
async fn payloads_that_would_overflow_the_stack_or_spin_fail_their_call_only() {
    let server = rpc_core::Server::new().add_service(ShapesServer::new(ShapesImpl));
    let server = TestServer::start(server, Transport::Tcp).await;
    let mut raw = server.raw().await;
    raw.write_all(&PREFACE).await.unwrap();
    let mut deep = vec![1_u8; 100_000];
    deep.push(0);
    raw.write_all(&raw_request(1, "Shapes", "depth", &deep))
        .await
        .unwrap();
    let endless_units = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
    raw.write_all(&raw_request(2, "Shapes", "units", &endless_units))
        .await
        .unwrap();
    raw.write_all(&raw_request(3, "Shapes", "units", &[3]))
        .await
        .unwrap();
    let answers = read_responses(&mut raw, &[1, 2, 3], Duration::from_secs(5)).await;
    assert_eq!(answers[&1].0, wire::Status::BadRequest);
    assert_eq!(answers[&2].0, wire::Status::BadRequest);
    assert_eq!(answers[&3].0, wire::Status::Ok);
    assert_eq!(rpc_core::codec::decode::<u64>(&answers[&3].1).unwrap(), 3);
}

fn server_with_keepalive(
    interval_millis: u64,
    timeout_millis: u64,
) -> (rpc_core::Server, std::sync::Arc<ProbeStats>) {
    let mut config = ServerConfig::default();
    config.keepalive_interval = Some(Duration::from_millis(interval_millis));
    config.keepalive_timeout = Duration::from_millis(timeout_millis);
    test_server_with(config)
}

/// Catalogue row 29, server side: a client that vanished without closing, with a handler
/// running, is pinged, and when it stays silent the server closes the connection and drops
/// the handler.
#[tokio::test]
async fn a_silent_client_with_calls_running_is_dropped_by_keepalive() {
    for transport in Transport::SOCKETS {
        let (server, stats) = server_with_keepalive(100, 100);
        let server = TestServer::start(server, transport).await;
        let mut raw = server.raw().await;
        raw.write_all(&PREFACE).await.unwrap();
        raw.write_all(&request_frame(1, "Probe", "hang", &()))
            .await
            .unwrap();
        // Read what comes (a ping or two) and never answer.
        read_until_closed(&mut raw, Duration::from_secs(5)).await;
        eventually("the handler was dropped", || {
            stats.hang_dropped.load(std::sync::atomic::Ordering::SeqCst) == 1
        })
        .await;
    }
}

/// A live client answers the server's pings, so a long call is not cut short by them.
#[tokio::test]
async fn server_pings_are_answered_by_a_live_client() {
    for transport in Transport::ALL {
        let (server, _) = server_with_keepalive(20, 200);
        let server = TestServer::start(server, transport).await;
        let probe = ProbeClient::new(server.connect().await);
        assert_eq!(probe.sleep(500).await.unwrap(), 500, "{transport:?}");
    }
}

/// Catalogue row 27: a client that never reads its responses. The server's queue stays
/// bounded (handlers wait for room), and a write that makes no progress for the write
/// timeout closes the connection.
#[tokio::test]
async fn a_client_that_never_reads_is_closed_after_the_write_timeout() {
    for transport in Transport::SOCKETS {
        let mut config = ServerConfig::default();
        config.write_timeout = Duration::from_millis(300);
        let (server, _) = test_server_with(config);
        let server = TestServer::start(server, transport).await;
        let bystander = CalculatorClient::new(server.connect().await);
        let mut raw = server.raw().await;
        raw.write_all(&PREFACE).await.unwrap();
        for call_id in 1..=64 {
            raw.write_all(&request_frame(call_id, "Probe", "fill", &(1_u64 << 20)))
                .await
                .unwrap();
        }
        // Read nothing while the server's write stalls past its timeout.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(bystander.add(1, 1).await.unwrap(), 2, "{transport:?}");
        // Now read: what the socket buffers held, then the end, not 64 MiB.
        let received = read_until_closed(&mut raw, Duration::from_secs(5)).await;
        assert!(
            received.len() < 32 << 20,
            "{transport:?}: {} bytes",
            received.len()
        );
    }
}
