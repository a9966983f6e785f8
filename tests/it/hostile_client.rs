//! Hostile servers, scripted byte by byte against a real client channel: catalogue rows 3,
//! 8, 23 and 37 (the server-side rows are in `hostile.rs`).

use std::time::{Duration, Instant};

use bytes::BytesMut;
use rpc_core::wire::{self, Frame, FrameDecoder, PREFACE, Status};
use rpc_core::{ChannelConfig, Peer, RpcError};
use rpc_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads the client's preface and its first `count` requests; returns their call ids and
/// decoded `(i64, i64)` arguments.
async fn read_requests(stream: &mut Box<dyn RawStream>, count: usize) -> Vec<(u32, (i64, i64))> {
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    while requests.len() < count {
        if let Some(frame) = decoder.decode(&mut buf).unwrap() {
            if let Frame::Request { head, payload, .. } = Frame::parse(frame).unwrap() {
                let args = rpc_core::codec::decode(&payload).unwrap();
                requests.push((head.call_id, args));
            }
            continue;
        }
        assert_ne!(stream.read_buf(&mut buf).await.unwrap(), 0);
    }
    requests
}

fn response(call_id: u32, value: i64) -> BytesMut {
    let mut payload = BytesMut::new();
    rpc_core::codec::encode_into(&mut payload, &value).unwrap();
    let mut frame = BytesMut::new();
    wire::encode_response(&mut frame, call_id, Status::Ok, &payload, usize::MAX).unwrap();
    frame
}

/// Starts `count` `add` calls on `channel` and returns them as tasks.
fn start_calls(
    channel: &rpc_core::Channel,
    count: i64,
) -> Vec<tokio::task::JoinHandle<Result<i64, RpcError>>> {
    let calc = CalculatorClient::new(channel.clone());
    (0..count).map(|i| tokio::spawn(calc.add(i, i))).collect()
}

/// Catalogue row 3, client side: a server that sends half a response header and then
/// closes fails every pending call at once with `ConnectionClosed` saying where it stopped.
#[tokio::test]
async fn a_response_cut_off_mid_frame_fails_every_pending_call() {
    for transport in Transport::SOCKETS {
        let channel = fake_server(transport, |mut stream| async move {
            stream.write_all(&PREFACE).await.unwrap();
            read_requests(&mut stream, 3).await;
            stream.write_all(&[0, 0, 0]).await.unwrap();
        })
        .await;
        let started = Instant::now();
        for call in start_calls(&channel, 3) {
            let error = call.await.unwrap().unwrap_err();
            assert!(
                matches!(&error, RpcError::ConnectionClosed { reason } if reason.contains("middle of a frame")),
                "{transport:?}: {error}"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

/// Catalogue row 8, client side: a frame the client cannot make sense of closes the
/// connection, and every pending call fails at once with a protocol error naming it; the
/// same for a client that serves too (whose connection a server driver reads).
#[tokio::test]
async fn an_undecodable_frame_from_the_server_fails_every_pending_call_with_a_protocol_error() {
    let plain = ChannelConfig::default();
    let serving = ChannelConfig::default().serve(test_server().0);
    for (transport, config) in Transport::SOCKETS
        .into_iter()
        .flat_map(|transport| [(transport, plain.clone()), (transport, serving.clone())])
    {
        let channel = fake_server_with(transport, config, |mut stream| async move {
            stream
                .write_all(&wire::preface(wire::PREFACE_SERVES))
                .await
                .unwrap();
            read_requests(&mut stream, 3).await;
            stream.write_all(&[0, 0, 0, 1, 0x7F]).await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
        .await;
        for call in start_calls(&channel, 3) {
            let error = tokio::time::timeout(Duration::from_secs(2), call)
                .await
                .expect("no hang")
                .unwrap()
                .unwrap_err();
            assert!(
                matches!(&error, RpcError::Protocol { message } if message.contains("unknown frame kind")),
                "{transport:?}: {error}"
            );
        }
        assert!(channel.is_closed());
    }
}

/// Catalogue row 23: responses and stream frames for calls the client never made (or no
/// longer waits for) are dropped; the real calls get their own answers.
#[tokio::test]
async fn responses_for_unknown_calls_are_dropped() {
    for transport in Transport::SOCKETS {
        let channel = fake_server(transport, |mut stream| async move {
            stream.write_all(&PREFACE).await.unwrap();
            let requests = read_requests(&mut stream, 2).await;
            let mut noise = response(9_999, -1);
            wire::encode_stream_item(&mut noise, 9_998, usize::MAX, |buf| {
                rpc_core::codec::encode_into(buf, &1_u8)
            })
            .unwrap();
            wire::encode_stream_end(&mut noise, 9_997, Status::Ok, "");
            wire::encode_window(&mut noise, 9_996, 10, 1 << 20);
            stream.write_all(&noise).await.unwrap();
            for (call_id, (a, b)) in requests {
                stream.write_all(&response(call_id, a + b)).await.unwrap();
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
        .await;
        let calls = start_calls(&channel, 2);
        let mut results = Vec::new();
        for call in calls {
            results.push(call.await.unwrap().unwrap());
        }
        assert_eq!(results, [0, 2], "{transport:?}");
        assert!(!channel.is_closed());
    }
}

/// Catalogue row 37: the other end of an in-process pipe is dropped. Pending calls fail
/// at once with `ConnectionClosed`, later calls fail fast, nothing hangs.
#[tokio::test]
async fn a_dropped_in_process_peer_fails_pending_calls_at_once() {
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let (reader, writer) = tokio::io::split(client_end);
    let channel =
        rpc_transport::framed::channel(reader, writer, Peer::Loopback, ChannelConfig::default());
    let calls = start_calls(&channel, 3);
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(server_end);
    for call in calls {
        let error = tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .expect("no hang")
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(error, RpcError::ConnectionClosed { .. }),
            "{error}"
        );
    }
    let error = CalculatorClient::new(channel).add(1, 1).await.unwrap_err();
    assert!(
        matches!(error, RpcError::ConnectionClosed { .. }),
        "{error}"
    );
}

/// A server that takes a call with a request stream and never grants the stream credit
/// does not hold the client's producer for ever: after the write timeout without credit,
/// the stream ends with `ResourceExhausted` saying so, and the producer is gone.
#[tokio::test]
async fn a_server_that_never_grants_credit_does_not_hold_a_producer_for_ever() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.write_all(&PREFACE).await.unwrap();
        let mut decoder = FrameDecoder::new(1 << 20);
        let mut buf = BytesMut::new();
        loop {
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                if let Frame::StreamEnd { status, text, .. } = Frame::parse(frame).unwrap() {
                    let _ = ended_tx.send((status, text));
                    return;
                }
            }
            if stream.read_buf(&mut buf).await.unwrap() == 0 {
                return;
            }
        }
    });
    let mut config = ChannelConfig::default();
    config.write_timeout = Duration::from_millis(200);
    let channel = rpc_transport::tcp::connect_with(address, config)
        .await
        .unwrap();
    let items = rpc_core::Streaming::new(futures_util::stream::iter(0_i64..));
    let call = tokio::spawn(async move {
        channel
            .call_with_input::<_, i64, i64>(
                &rpc_core::codegen::MethodSpec::new("Calculator", "sum"),
                &rpc_core::CallOptions::default(),
                &(),
                items,
            )
            .await
    });
    let (status, text) = tokio::time::timeout(Duration::from_secs(3), ended_rx)
        .await
        .expect("the producer gave up waiting for credit")
        .unwrap();
    assert_eq!(status, Status::ResourceExhausted);
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("granted no credit"), "{text}");
    call.abort();
}

/// A server that calls a client that said (in its preface) it serves nothing gets
/// `UnknownService`, without anything running on the client, and the client's own calls
/// carry on.
#[tokio::test]
async fn a_client_that_serves_nothing_answers_calls_to_it_unknown_service() {
    for transport in Transport::SOCKETS {
        let (answer_tx, answer_rx) = tokio::sync::oneshot::channel();
        let channel = fake_server(transport, |mut stream| async move {
            stream
                .write_all(&wire::preface(wire::PREFACE_SERVES))
                .await
                .unwrap();
            let call = request_frame(2, "Calculator", "add", &(1_i64, 2_i64));
            stream.write_all(&call).await.unwrap();
            let mut decoder = FrameDecoder::new(1 << 20);
            let mut buf = BytesMut::new();
            let mut answer_tx = Some(answer_tx);
            loop {
                let Some(frame) = decoder.decode(&mut buf).unwrap() else {
                    assert_ne!(stream.read_buf(&mut buf).await.unwrap(), 0);
                    continue;
                };
                match Frame::parse(frame).unwrap() {
                    Frame::Response {
                        call_id, status, ..
                    } => {
                        assert!(!decoder.peer_serves(), "the preface says it serves nothing");
                        answer_tx.take().unwrap().send((call_id, status)).unwrap();
                    }
                    Frame::Request { head, payload, .. } => {
                        let (a, b): (i64, i64) = rpc_core::codec::decode(&payload).unwrap();
                        stream
                            .write_all(&response(head.call_id, a + b))
                            .await
                            .unwrap();
                        break;
                    }
                    Frame::Declare { .. } => {}
                    other => panic!("{other:?}"),
                }
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
        .await;
        let answer = tokio::time::timeout(Duration::from_secs(2), answer_rx)
            .await
            .expect("the client answered")
            .unwrap();
        assert_eq!(answer, (2, Status::UnknownService), "{transport:?}");
        let calc = CalculatorClient::new(channel);
        assert_eq!(calc.add(20, 22).await.unwrap(), 42, "{transport:?}");
    }
}
