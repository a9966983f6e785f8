//! Compression: negotiated in the prefaces, used only when both sides ask for it, never sent
//! to a peer that did not accept it, and a compressed frame that would inflate past what
//! its bytes can hold (a compression bomb) closes the connection before anything is set
//! aside for it.

use std::time::Duration;

use futures_util::StreamExt;
use rpc_core::wire::{self, Frame, PREFACE_LZ4};
use rpc_core::{ChannelConfig, Compression, ServerConfig, Streaming, service};
use rpc_tests::*;
use tokio::io::AsyncWriteExt;

/// Streams compressible items.
#[service]
trait Words {
    /// `n` lines of text, each long enough to be compressed.
    async fn lines(&self, n: u32) -> Streaming<String>;
}

struct Lines;

impl Words for Lines {
    async fn lines(&self, n: u32) -> Streaming<String> {
        Streaming::new(
            futures_util::stream::iter(0..n).map(|i| format!("{i}: {}", "word ".repeat(400))),
        )
    }
}

/// The test server with `Words`, compressing if `compresses`.
fn server(compresses: bool) -> rpc_core::Server {
    let mut config = ServerConfig::default();
    config.compression = compresses.then(Compression::lz4);
    test_server_with(config)
        .0
        .add_service(WordsServer::new(Lines))
}

fn compressing_server() -> rpc_core::Server {
    server(true)
}

fn compressing_channel() -> ChannelConfig {
    let mut config = ChannelConfig::default();
    config.compression = Some(Compression::lz4());
    config
}

/// Calls and streams carry the same values whether one side, the other, both or neither
/// asks for compression.
#[tokio::test]
async fn calls_and_streams_round_trip_whoever_asks_for_compression() {
    let text = b"compressible words, said again and again; ".repeat(25_000);
    for transport in Transport::ALL {
        for (server_compresses, client_compresses) in
            [(true, true), (true, false), (false, true), (false, false)]
        {
            let server = TestServer::start(server(server_compresses), transport).await;
            let config = if client_compresses {
                compressing_channel()
            } else {
                ChannelConfig::default()
            };
            let probe = ProbeClient::new(server.connect_with(config).await);
            let what =
                format!("{transport:?}, server {server_compresses}, client {client_compresses}");
            assert_eq!(probe.echo(text.clone()).await.unwrap(), text, "{what}");
            assert_eq!(
                probe.echo(vec![1, 2, 3]).await.unwrap(),
                vec![1, 2, 3],
                "{what}"
            );
            assert_eq!(probe.fill(1 << 20).await.unwrap().len(), 1 << 20, "{what}");
            let words = WordsClient::new(probe.channel().clone());
            let lines: Vec<String> = words
                .lines(300)
                .await
                .unwrap()
                .map(|line| line.unwrap())
                .collect()
                .await;
            assert_eq!(lines.len(), 300, "{what}");
            assert!(lines[299].starts_with("299: word word"), "{what}");
        }
    }
}

/// What a raw client that sends an `echo` of 64 KiB of zeros receives back, after a preface
/// with `flags`: each frame, and whether it came compressed.
async fn echo_answer(server: &TestServer, flags: u8) -> Vec<(bool, Frame)> {
    let mut raw = server.raw().await;
    raw.write_all(&wire::preface(flags)).await.unwrap();
    let call = request_frame(1, "Probe", "echo", &(vec![0_u8; 65_536],));
    raw.write_all(&call).await.unwrap();
    raw.shutdown().await.unwrap();
    let answer = read_until_closed(&mut raw, Duration::from_secs(5)).await;
    let mut frames = Vec::new();
    let mut decoder = wire::FrameDecoder::new(1 << 24);
    let mut bytes = bytes::BytesMut::from(&answer[..]);
    while let Some(frame) = decoder.decode(&mut bytes).unwrap() {
        let accepted = flags & PREFACE_LZ4 != 0;
        let came_compressed = frame[0] == wire::FrameKind::Compressed as u8;
        let inflated = wire::inflate(frame, accepted.then_some(1 << 24)).unwrap();
        frames.push((came_compressed, Frame::parse(inflated).unwrap()));
    }
    frames
}

#[tokio::test]
async fn a_peer_that_did_not_accept_compression_never_receives_compressed_frames() {
    let server = TestServer::start(compressing_server(), Transport::Tcp).await;
    let compressed = |frames: &[(bool, Frame)]| frames.iter().any(|(compressed, _)| *compressed);
    let answered = |frames: &[(bool, Frame)]| {
        frames.iter().any(|(_, frame)| {
            matches!(frame, Frame::Response { call_id: 1, status: wire::Status::Ok, payload } if payload.len() > 65_536)
        })
    };
    let plain = echo_answer(&server, 0).await;
    assert!(answered(&plain) && !compressed(&plain), "{plain:?}");
    let accepting = echo_answer(&server, PREFACE_LZ4).await;
    assert!(
        answered(&accepting) && compressed(&accepting),
        "{accepting:?}"
    );
}

/// Catalogue row 16 (compression bomb): a few bytes claiming megabytes are refused for the
/// claim, before anything is inflated, and the connection closed without an answer; other
/// connections carry on. A compressed frame to a server that did not accept
/// compression is refused the same way.
#[tokio::test]
async fn a_compression_bomb_closes_the_connection() {
    for server in [compressing_server(), server(false)] {
        let server = TestServer::start(server, Transport::Tcp).await;
        let bystander = ProbeClient::new(server.connect().await);
        let mut raw = server.raw().await;
        raw.write_all(&wire::preface(PREFACE_LZ4)).await.unwrap();
        let mut bomb = vec![0, 0, 0, 10, wire::FrameKind::Compressed as u8];
        bomb.extend_from_slice(&(8_u32 << 20).to_be_bytes());
        bomb.extend_from_slice(&[0x1F, 0, 0, 0, 0]);
        raw.write_all(&bomb).await.unwrap();
        let answer = read_until_closed(&mut raw, Duration::from_secs(5)).await;
        assert!(
            answer.len() <= wire::PREFACE.len(),
            "only a preface, no answer: {answer:?}"
        );
        assert_eq!(bystander.echo(vec![9]).await.unwrap(), vec![9]);
    }
}
