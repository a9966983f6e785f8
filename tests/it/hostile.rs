//! Hostile clients, speaking the wire protocol by hand and breaking it on purpose: one test
//! per row of the hostile-input catalogue (HOSTILE.md §2) that concerns the server, each
//! asserting the exact status or close reason, that other connections carry on, and that
//! the peer gets no more than its budget. Hostile servers are in `hostile_client.rs`; the
//! foundation's fault cases in `faults.rs`. The end of this file maps the remaining rows to
//! their tests, and says why three rows do not apply.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rpc_core::wire::{self, Frame, PREFACE};
use rpc_core::{Channel, ServerConfig};
use rpc_tests::*;
use tokio::io::AsyncWriteExt;

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
        let frames = frames_in(&answer[PREFACE.len().min(answer.len())..]);
        let answered = frames
            .iter()
            .filter(|frame| matches!(frame, Frame::Response { .. }))
            .count();
        assert!(
            answered <= 101,
            "{transport:?}: {answered} error responses before closing"
        );
        assert!(
            went_away_for(&frames, "too many errors"),
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

/// Stream ends and stops for streams the server does not have are frames for nothing: a
/// flood of them is charged like any other and costs the peer its connection.
#[tokio::test]
async fn a_flood_of_stream_ends_and_stops_for_unknown_calls_costs_the_peer_its_connection() {
    for transport in Transport::SOCKETS {
        let server = TestServer::start(server_with_error_budget(100), transport).await;
        let mut raw = server.raw().await;
        raw.write_all(&PREFACE).await.unwrap();
        let mut flood = bytes::BytesMut::new();
        for call_id in 1..=500 {
            wire::encode_stream_end(&mut flood, call_id, wire::Status::Ok, "");
            wire::encode_stop_stream(&mut flood, call_id);
        }
        let _ = raw.write_all(&flood).await;
        let answer = read_until_closed(&mut raw, Duration::from_secs(5)).await;
        let frames = frames_in(&answer[PREFACE.len().min(answer.len())..]);
        assert!(
            went_away_for(&frames, "too many errors") || answer.len() <= PREFACE.len(),
            "{transport:?}: {} frames, no GOAWAY",
            frames.len()
        );
    }
}

/// A well-behaved client that makes the odd mistake keeps its connection.
#[tokio::test]
async fn a_few_errors_within_the_budget_are_forgiven() {
    use rpc_core::CallOptions;
    use rpc_core::codegen::MethodSpec;
    let server = TestServer::start(server_with_error_budget(100), Transport::Tcp).await;
    let channel = server.connect().await;
    let missing = MethodSpec::new("Nope", "nothing");
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

/// Two connections to `server`, each with a `hang` call in flight (so neither is idle), and
/// the tasks running those calls.
async fn two_busy_connections(
    server: &TestServer,
    stats: &ProbeStats,
) -> Vec<(
    Channel,
    tokio::task::JoinHandle<Result<(), rpc_core::RpcError>>,
)> {
    let mut busy = Vec::new();
    for _ in 0..2 {
        let channel = server.connect().await;
        let call = tokio::spawn(ProbeClient::new(channel.clone()).hang());
        busy.push((channel, call));
    }
    eventually("both calls to be running", || {
        stats.hang_started.load(Ordering::SeqCst) == 2
    })
    .await;
    busy
}

/// Past `max_connections`, when every connection has a call in flight, the server stops
/// accepting until one closes.
#[tokio::test]
async fn past_the_connection_limit_with_every_connection_busy_new_ones_wait_their_turn() {
    for transport in Transport::SOCKETS {
        let mut config = ServerConfig::default();
        config.max_connections = 2;
        let (server, stats) = test_server_with(config);
        let server = TestServer::start(server, transport).await;
        let mut busy = two_busy_connections(&server, &stats).await;
        let third = CalculatorClient::new(server.connect().await);
        let waiting = tokio::spawn(third.add(3, 3));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !waiting.is_finished(),
            "{transport:?}: served past the limit"
        );
        let (first, call) = busy.remove(0);
        call.abort();
        drop(first);
        let answer = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert_eq!(
            answer.expect("served once a slot freed").unwrap().unwrap(),
            6,
            "{transport:?}"
        );
    }
}

/// Past `max_connections`, the oldest connection with no call in flight is closed (with a
/// GOAWAY saying why) to let a new client in: idle connections never lock anyone out.
#[tokio::test]
async fn past_the_connection_limit_the_oldest_idle_connection_makes_room() {
    for transport in Transport::SOCKETS {
        let mut config = ServerConfig::default();
        config.max_connections = 2;
        let server = TestServer::start(test_server_with(config).0, transport).await;
        let first = CalculatorClient::new(server.connect().await);
        let second = CalculatorClient::new(server.connect().await);
        assert_eq!(first.add(1, 1).await.unwrap(), 2);
        assert_eq!(second.add(2, 2).await.unwrap(), 4);
        let third = CalculatorClient::new(server.connect().await);
        let answer = tokio::time::timeout(Duration::from_secs(2), third.add(3, 3)).await;
        assert_eq!(answer.expect("let in at once").unwrap(), 6, "{transport:?}");
        let error = first.add(1, 1).await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("closed an idle connection to make room"),
            "{transport:?}: {error}"
        );
        assert_eq!(second.add(2, 2).await.unwrap(), 4, "{transport:?}");
    }
}

/// Past `max_connections_per_peer`, when every connection of that peer (the same IP
/// address, or /64; the same user for Unix sockets) has a call in flight, new ones are
/// refused at once with a GOAWAY that says why, so their calls fail with `Unavailable`
/// naming the reason; a freed slot lets the next one in.
#[tokio::test]
async fn past_the_per_peer_limit_with_every_connection_busy_new_ones_are_refused() {
    for transport in Transport::SOCKETS {
        let mut config = ServerConfig::default();
        config.max_connections_per_peer = 2;
        let (server, stats) = test_server_with(config);
        let server = TestServer::start(server, transport).await;
        let mut busy = two_busy_connections(&server, &stats).await;
        let third = CalculatorClient::new(server.connect().await);
        let error = tokio::time::timeout(Duration::from_secs(2), third.add(3, 3))
            .await
            .expect("refused promptly")
            .unwrap_err();
        assert!(
            matches!(&error, rpc_core::RpcError::Unavailable { reason } if reason.contains("too many connections from this peer")),
            "{transport:?}: {error}"
        );
        let (first, call) = busy.remove(0);
        call.abort();
        drop(first);
        let mut answer = None;
        for _ in 0..100 {
            let fourth = CalculatorClient::new(server.connect().await);
            if let Ok(sum) = fourth.add(4, 4).await {
                answer = Some(sum);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            answer,
            Some(8),
            "{transport:?}: a freed slot lets the next one in"
        );
    }
}

/// Past `max_connections_per_peer`, the peer's own oldest idle connection is closed to let
/// its new one in: a fleet behind one address (a NAT, a load balancer, a sidecar) is never
/// locked out by connections it left idle.
#[tokio::test]
async fn past_the_per_peer_limit_the_peers_oldest_idle_connection_makes_room() {
    for transport in Transport::SOCKETS {
        let mut config = ServerConfig::default();
        config.max_connections_per_peer = 2;
        let (server, stats) = test_server_with(config);
        let server = TestServer::start(server, transport).await;
        let first = CalculatorClient::new(server.connect().await);
        assert_eq!(first.add(1, 1).await.unwrap(), 2);
        // The second is the younger, but busy: it is not the one closed.
        let second = server.connect().await;
        let call = tokio::spawn(ProbeClient::new(second.clone()).hang());
        eventually("the call to be running", || {
            stats.hang_started.load(Ordering::SeqCst) == 1
        })
        .await;
        let third = CalculatorClient::new(server.connect().await);
        let answer = tokio::time::timeout(Duration::from_secs(2), third.add(3, 3)).await;
        assert_eq!(answer.expect("let in at once").unwrap(), 6, "{transport:?}");
        let error = first.add(1, 1).await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("make room for a new one from the same peer"),
            "{transport:?}: {error}"
        );
        assert!(
            !call.is_finished(),
            "{transport:?}: the busy one was closed"
        );
        call.abort();
    }
}

/// With `max_connection_age`, a connection is drained when it gets old: a GOAWAY saying
/// so, the calls it took finish, new calls fail at once with `Unavailable` (safe to retry
/// on a new connection), and then it closes.
#[tokio::test]
async fn a_connection_past_its_maximum_age_is_drained_gracefully() {
    let mut config = ServerConfig::default();
    config.max_connection_age = Some(Duration::from_millis(300));
    let server = TestServer::start(test_server_with(config).0, Transport::Tcp).await;
    let channel = server.connect().await;
    let probe = ProbeClient::new(channel.clone());
    let calc = CalculatorClient::new(channel.clone());
    let started = std::time::Instant::now();
    let long_call = tokio::spawn(probe.sleep(600));
    let mut refused = None;
    while started.elapsed() < Duration::from_secs(2) {
        if let Err(error) = calc.add(1, 1).await {
            refused = Some((started.elapsed(), error));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (age, error) = refused.expect("the connection aged out");
    assert!(
        age >= Duration::from_millis(260) && age < Duration::from_millis(500),
        "aged out after {age:?}"
    );
    assert!(
        matches!(&error, rpc_core::RpcError::Unavailable { reason } if reason.contains("max connection age")),
        "{error}"
    );
    assert_eq!(
        long_call.await.unwrap().unwrap(),
        600,
        "a call it took finishes"
    );
    eventually("the drained connection closes", || channel.is_closed()).await;
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
    /// How long a text it was sent.
    async fn text(&self, text: String) -> u64;
    /// Every tagged kind of value at once.
    async fn tags(&self, flag: bool, maybe: Option<u8>, letter: char, choice: Choice) -> u8;
}

/// An enum with two variants, for the discriminant case.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Choice {
    Left,
    Right,
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

    async fn text(&self, text: String) -> u64 {
        text.len() as u64
    }

    async fn tags(&self, flag: bool, maybe: Option<u8>, letter: char, choice: Choice) -> u8 {
        u8::from(flag) + maybe.unwrap_or(0) + letter as u8 + matches!(choice, Choice::Right) as u8
    }
}

/// A request frame with a payload given as raw bytes.
fn raw_request(call_id: u32, service: &str, method: &str, payload: &[u8]) -> Vec<u8> {
    request_bytes(call_id, service, method, None, &[], payload)
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

/// Catalogue rows 9, 12, 13 and 14: payloads that lie about a length, pad a varint past its
/// longest form, carry bytes after the value, or hold an invalid bool, option tag, UTF-8,
/// char or enum discriminant. Each fails its own call with `BadRequest` (a decode error the
/// client sees as `RpcError::Codec`); the connection carries on and answers the next call.
#[tokio::test]
async fn malformed_payloads_fail_their_own_call_and_nothing_else() {
    let server = rpc_core::Server::new().add_service(ShapesServer::new(ShapesImpl));
    let server = TestServer::start(server, Transport::Tcp).await;
    let mut raw = server.raw().await;
    raw.write_all(&PREFACE).await.unwrap();
    // `tags(true, Some(7), 'a', Choice::Right)`, which decodes: a char travels as a
    // length-prefixed UTF-8 string.
    let valid_tags: [u8; 6] = [1, 1, 7, 1, b'a', 1];
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        // Row 9: a string claiming 2^62 bytes, with three behind it.
        (
            "huge length",
            "text",
            vec![
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40, b'a', b'b', b'c',
            ],
        ),
        // Row 12: a length varint padded past the ten bytes a u64 can take.
        (
            "overlong varint",
            "units",
            vec![
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
            ],
        ),
        // Row 13: a valid empty list, then two bytes nobody asked for.
        ("trailing bytes", "units", vec![0, 0, 0]),
        // Row 14: each tag of the valid call broken in turn.
        ("bad bool", "tags", [&[2], &valid_tags[1..]].concat()),
        (
            "bad option tag",
            "tags",
            [&valid_tags[..1], &[2], &valid_tags[2..]].concat(),
        ),
        (
            "bad char (a surrogate)",
            "tags",
            [&valid_tags[..3], &[3, 0xED, 0xA0, 0x80], &valid_tags[5..]].concat(),
        ),
        (
            "bad discriminant",
            "tags",
            [&valid_tags[..5], &[9]].concat(),
        ),
        ("bad UTF-8", "text", vec![2, 0xC3, 0x28]),
    ];
    for (index, (_, method, payload)) in cases.iter().enumerate() {
        let call_id = index as u32 + 1;
        raw.write_all(&raw_request(call_id, "Shapes", method, payload))
            .await
            .unwrap();
    }
    let good_call = cases.len() as u32 + 1;
    raw.write_all(&raw_request(good_call, "Shapes", "tags", &valid_tags))
        .await
        .unwrap();
    let ids: Vec<u32> = (1..=good_call).collect();
    let answers = read_responses(&mut raw, &ids, Duration::from_secs(5)).await;
    for (index, (what, ..)) in cases.iter().enumerate() {
        assert_eq!(
            answers[&(index as u32 + 1)].0,
            wire::Status::BadRequest,
            "{what}"
        );
    }
    assert_eq!(answers[&good_call].0, wire::Status::Ok);
    assert_eq!(
        rpc_core::codec::decode::<u8>(&answers[&good_call].1).unwrap(),
        1 + 7 + b'a' + 1
    );
}

/// Catalogue row 4 and 26: frames that carry nothing useful (pings, here) are answered but
/// charged to the error budget, so a flood of them ends in a GOAWAY saying why. A frame of
/// length zero is malformed outright and closes the connection.
#[tokio::test]
async fn a_flood_of_pings_costs_the_peer_its_connection() {
    let server = TestServer::start(server_with_error_budget(100), Transport::Tcp).await;
    let bystander = CalculatorClient::new(server.connect().await);
    let mut raw = server.raw().await;
    raw.write_all(&PREFACE).await.unwrap();
    let mut flood = bytes::BytesMut::new();
    for opaque in 0..1_000 {
        wire::encode_ping(&mut flood, opaque, false);
    }
    let _ = raw.write_all(&flood).await;
    let answer = read_until_closed(&mut raw, Duration::from_secs(5)).await;
    let frames = frames_in(&answer[PREFACE.len()..]);
    let pongs = frames
        .iter()
        .filter(|frame| matches!(frame, Frame::Pong { .. }))
        .count();
    assert!(pongs <= 101, "{pongs} pongs before closing");
    assert!(went_away_for(&frames, "too many errors"));

    let mut raw = server.raw().await;
    raw.write_all(&PREFACE).await.unwrap();
    raw.write_all(&[0, 0, 0, 0]).await.unwrap();
    read_until_closed(&mut raw, Duration::from_secs(5)).await;
    assert_eq!(bystander.add(1, 2).await.unwrap(), 3);
}

/// A request frame for `Probe.method` with a deadline given in microseconds.
fn request_with_deadline<A: serde::Serialize>(
    call_id: u32,
    method: &str,
    deadline_micros: u64,
    args: &A,
) -> Vec<u8> {
    request_bytes(
        call_id,
        "Probe",
        method,
        Some(deadline_micros),
        &[],
        &encoded(args),
    )
}

/// Catalogue rows 17 and 18: a deadline of 2^64-1 µs cannot overflow the server's clock:
/// it is shortened to the server's `max_deadline` (24 hours by default); and a deadline of
/// zero fails at once, without starting the handler.
#[tokio::test]
async fn hostile_deadlines_are_clamped_or_refused() {
    let (server, stats) = test_server();
    assert_eq!(
        server.config().max_deadline,
        Some(Duration::from_secs(24 * 60 * 60))
    );
    let server = TestServer::start(server, Transport::Tcp).await;
    let mut raw = server.raw().await;
    raw.write_all(&PREFACE).await.unwrap();
    raw.write_all(&request_with_deadline(1, "deadline_millis", u64::MAX, &()))
        .await
        .unwrap();
    raw.write_all(&request_with_deadline(3, "hang", 0, &()))
        .await
        .unwrap();
    let answers = read_responses(&mut raw, &[1, 3], Duration::from_secs(5)).await;
    assert_eq!(answers[&1].0, wire::Status::Ok);
    let remaining: Option<u64> = rpc_core::codec::decode(&answers[&1].1).unwrap();
    let day_millis = 24 * 60 * 60 * 1000;
    assert!(
        remaining.is_some_and(|millis| millis <= day_millis && millis > day_millis - 60_000),
        "{remaining:?}"
    );
    assert_eq!(answers[&3].0, wire::Status::DeadlineExceeded);
    assert_eq!(
        stats.hang_started.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

/// Catalogue row 22: a request reusing the id of a call still running is ignored (and
/// charged to the error budget); the original call finishes with its own answer.
#[tokio::test]
async fn a_request_reusing_a_live_call_id_does_not_disturb_the_original() {
    let server = TestServer::start(test_server().0, Transport::Tcp).await;
    let mut raw = server.raw().await;
    raw.write_all(&PREFACE).await.unwrap();
    raw.write_all(&request_frame(5, "Probe", "sleep", &(100_u64,)))
        .await
        .unwrap();
    raw.write_all(&request_frame(5, "Calculator", "add", &(1_i64, 2_i64)))
        .await
        .unwrap();
    raw.write_all(&request_frame(7, "Calculator", "add", &(3_i64, 4_i64)))
        .await
        .unwrap();
    let answers = read_responses(&mut raw, &[5, 7], Duration::from_secs(5)).await;
    assert_eq!(rpc_core::codec::decode::<u64>(&answers[&5].1).unwrap(), 100);
    assert_eq!(rpc_core::codec::decode::<i64>(&answers[&7].1).unwrap(), 7);
}

/// Catalogue row 28: metadata over `max_metadata_size` (8 KiB by default), whether one huge
/// value or thousands of tiny pairs, fails that call with `ResourceExhausted` before any of
/// it is turned into strings; the connection carries on.
#[tokio::test]
async fn oversized_metadata_fails_that_call_only() {
    let server = TestServer::start(test_server().0, Transport::Tcp).await;
    let mut raw = server.raw().await;
    raw.write_all(&PREFACE).await.unwrap();
    let huge = vec![("trace".to_owned(), "x".repeat(9 * 1024))];
    let many: Vec<_> = (0..3_000)
        .map(|i| (format!("{i}"), "v".to_owned()))
        .collect();
    for (call_id, metadata) in [(1, huge), (3, many)] {
        let args = encoded(&(1_i64, 1_i64));
        let frame = request_bytes(call_id, "Calculator", "add", None, &metadata, &args);
        raw.write_all(&frame).await.unwrap();
    }
    raw.write_all(&request_frame(5, "Calculator", "add", &(2_i64, 2_i64)))
        .await
        .unwrap();
    let answers = read_responses(&mut raw, &[1, 3, 5], Duration::from_secs(5)).await;
    assert_eq!(answers[&1].0, wire::Status::ResourceExhausted);
    assert_eq!(answers[&3].0, wire::Status::ResourceExhausted);
    assert_eq!(rpc_core::codec::decode::<i64>(&answers[&5].1).unwrap(), 4);
}

/// A listener whose `accept` fails with the given errors before it accepts for real.
struct FlakyListener {
    inner: tokio::net::TcpListener,
    failures: std::collections::VecDeque<std::io::Error>,
}

impl rpc_transport::Listener for FlakyListener {
    type Reader = <tokio::net::TcpListener as rpc_transport::Listener>::Reader;
    type Writer = <tokio::net::TcpListener as rpc_transport::Listener>::Writer;

    async fn accept(
        &mut self,
    ) -> std::io::Result<rpc_transport::Accepted<Self::Reader, Self::Writer>> {
        match self.failures.pop_front() {
            Some(error) => Err(error),
            None => rpc_transport::Listener::accept(&mut self.inner).await,
        }
    }
}

/// Catalogue row 35: `accept` failing with EMFILE (out of descriptors) or for one
/// connection (ECONNABORTED) does not end `serve`: it backs off, briefly, and keeps serving.
#[tokio::test]
async fn accept_errors_back_off_and_keep_serving() {
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = inner.local_addr().unwrap();
    let emfile = || std::io::Error::from_raw_os_error(24);
    let aborted = || std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
    let listener = FlakyListener {
        inner,
        failures: [emfile(), aborted(), emfile(), emfile(), aborted()].into(),
    };
    let serving = tokio::spawn(rpc_transport::serve(listener, test_server().0));
    let started = std::time::Instant::now();
    let calc = CalculatorClient::new(rpc_transport::tcp::connect(address).await.unwrap());
    assert_eq!(calc.add(2, 3).await.unwrap(), 5);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "backed off too long"
    );
    assert!(!serving.is_finished());
}

// Rows covered elsewhere: 1, 2, 5, 6, 7 (faults.rs), 3 and 8 server side (faults.rs:
// `half_a_frame_is_closed_after_the_frame_timeout`,
// `a_malformed_frame_after_the_preface_closes_that_connection`; client side in
// hostile_client.rs), 15 (calls.rs unknown service/method; interceptors see the resolved
// names, auth.rs), 21 (faults.rs backpressure), 29-33 (faults.rs, deadlines.rs, this file),
// 34-35 TLS (tls.rs), 36 (shutdown.rs), 37 (hostile_client.rs).
//
// Rows that do not apply:
// - 16 (compression bombs): the protocol has no compression, so a frame's size is the
//   size of what it decodes from, and the frame limit bounds it.
// - 19 (a handler that ignores cancellation): a cancel aborts the handler's task, so an
//   async handler cannot ignore it; its concurrency permit lives in that task and is freed
//   only when the task's future is really dropped. A handler that blocks its thread keeps
//   its permit until it returns (`request_then_cancel_pairs_leave_nothing_running` checks
//   the permits come back).
// - 24 (call id exhaustion): ids are 32-bit and wrap after 2^32 calls, and the client
//   skips 0 and every id still in flight (`Channel::register_call`), so a live id is never
//   reused; exercising the wrap would take 2^32 calls.

/// On a connection where both sides call, call ids say whose call a frame concerns (the
/// dialler's are odd); a client that serves and calls under the server's parity breaks the
/// protocol and loses the connection, without its call running. Under its own parity it
/// is served.
#[tokio::test]
async fn a_serving_client_calling_under_the_servers_call_ids_is_closed() {
    let server = TestServer::start(test_server().0, Transport::Tcp).await;
    for (call_id, served) in [(3, true), (4, false)] {
        let mut raw = server.raw().await;
        raw.write_all(&wire::preface(wire::PREFACE_SERVES))
            .await
            .unwrap();
        let call = request_frame(call_id, "Calculator", "add", &(1_i64, 2_i64));
        raw.write_all(&call).await.unwrap();
        if served {
            // Ends the connection after the answer.
            raw.shutdown().await.unwrap();
        }
        let answer = read_until_closed(&mut raw, Duration::from_secs(5)).await;
        let frames = frames_in(&answer[PREFACE.len().min(answer.len())..]);
        let answered = frames
            .iter()
            .any(|frame| matches!(frame, Frame::Response { call_id: id, .. } if *id == call_id));
        assert_eq!(answered, served, "call id {call_id}: {frames:?}");
    }
}
