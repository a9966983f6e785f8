//! Streaming calls: server, client and bidirectional streams over every transport, with
//! flow control, cancellation and errors that end a stream visibly.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use rpc_core::{RpcError, Streaming, service};
use rpc_tests::*;

/// A service with one method of each streaming kind.
#[service]
pub trait Feed {
    /// Streams `0..n`.
    async fn ticks(&self, n: u64) -> Streaming<u64>;
    /// Sums the numbers it is sent.
    async fn sum(&self, nums: Streaming<i64>) -> i64;
    /// Echoes every message, upper-cased.
    async fn shout(&self, messages: Streaming<String>) -> Streaming<String>;
    /// Streams forever, counting what it produced.
    async fn endless(&self) -> Streaming<u64>;
    /// Streams `n` items, then panics.
    async fn explode_after(&self, n: u64) -> Streaming<u64>;
    /// Streams one item per `millis`, forever.
    async fn slow(&self, millis: u64) -> Streaming<u64>;
    /// Reads its input until it ends, counting the items.
    async fn drain(&self, items: Streaming<u64>) -> u64;
    /// Streams `count` items of `size` bytes.
    async fn blobs(&self, count: u32, size: u32) -> Streaming<Vec<u8>>;
    /// Streams `count` strings of `size` letters, item `i` made of letter `a + i % 26`.
    async fn big(&self, count: u32, size: u32) -> Streaming<String>;
    /// Waits `millis` without reading its input, then returns.
    async fn ignore(&self, items: Streaming<u64>, millis: u64) -> u64;
    /// Waits `millis` without reading its blobs, then returns.
    async fn hoard(&self, blobs: Streaming<Vec<u8>>, millis: u64) -> u64;
    /// Returns the metadata value under `key` and the deadline's presence, as a stream.
    async fn describe(&self, cx: &rpc_core::Context, key: String) -> Streaming<String>;
}

/// What `Feed`'s producers did.
#[derive(Debug, Default)]
struct FeedStats {
    /// Items `endless` produced.
    produced: AtomicUsize,
    /// `endless` producers dropped.
    dropped: AtomicUsize,
    /// `drain` handlers dropped before their input ended.
    drains_dropped: AtomicUsize,
}

#[derive(Clone, Default)]
struct FeedImpl {
    stats: Arc<FeedStats>,
}

struct CountDrop(Arc<FeedStats>);

struct CountDrainDrop(Arc<FeedStats>, bool);

impl Drop for CountDrainDrop {
    fn drop(&mut self) {
        if !self.1 {
            self.0.drains_dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for CountDrop {
    fn drop(&mut self) {
        self.0.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl Feed for FeedImpl {
    async fn ticks(&self, n: u64) -> Streaming<u64> {
        Streaming::new(futures_util::stream::iter(0..n))
    }

    async fn sum(&self, mut nums: Streaming<i64>) -> i64 {
        let mut total = 0;
        while let Some(Ok(number)) = nums.next().await {
            total += number;
        }
        total
    }

    async fn shout(&self, messages: Streaming<String>) -> Streaming<String> {
        Streaming::new(
            messages.filter_map(|message| async move { message.ok().map(|m| m.to_uppercase()) }),
        )
    }

    async fn endless(&self) -> Streaming<u64> {
        let stats = self.stats.clone();
        let guard = CountDrop(stats.clone());
        Streaming::new(futures_util::stream::iter(0..).map(move |item| {
            let _ = &guard;
            stats.produced.fetch_add(1, Ordering::SeqCst);
            item
        }))
    }

    async fn explode_after(&self, n: u64) -> Streaming<u64> {
        Streaming::new(futures_util::stream::iter(0..).map(move |item| {
            assert!(item < n, "the producer gives up");
            item
        }))
    }

    async fn drain(&self, mut items: Streaming<u64>) -> u64 {
        let mut guard = CountDrainDrop(self.stats.clone(), false);
        let mut count = 0;
        while let Some(Ok(_)) = items.next().await {
            count += 1;
        }
        guard.1 = true;
        count
    }

    async fn big(&self, count: u32, size: u32) -> Streaming<String> {
        Streaming::new(futures_util::stream::iter((0..count).map(move |index| {
            let letter = char::from(b'a' + (index % 26) as u8);
            letter.to_string().repeat(size as usize)
        })))
    }

    async fn ignore(&self, items: Streaming<u64>, millis: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        drop(items);
        millis
    }

    async fn hoard(&self, blobs: Streaming<Vec<u8>>, millis: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        drop(blobs);
        millis
    }

    async fn blobs(&self, count: u32, size: u32) -> Streaming<Vec<u8>> {
        Streaming::new(futures_util::stream::iter(
            (0..count).map(move |_| vec![9; size as usize]),
        ))
    }

    async fn describe(&self, cx: &rpc_core::Context, key: String) -> Streaming<String> {
        let value = cx.metadata(&key).unwrap_or("none").to_owned();
        let deadline = if cx.deadline().is_some() {
            "deadline"
        } else {
            "no deadline"
        };
        Streaming::new(futures_util::stream::iter([value, deadline.to_owned()]))
    }

    async fn slow(&self, millis: u64) -> Streaming<u64> {
        Streaming::new(futures_util::stream::unfold(
            0_u64,
            move |item| async move {
                tokio::time::sleep(Duration::from_millis(millis)).await;
                Some((item, item + 1))
            },
        ))
    }
}

/// A server with `Feed` (and the shared test services) on `transport`, a client of it, and
/// the producers' counters.
async fn feed_on(transport: Transport) -> (TestServer, FeedClient, Arc<FeedStats>) {
    let (server, stats) = feed_server();
    let server = TestServer::start(server, transport).await;
    let feed = FeedClient::new(server.connect().await);
    (server, feed, stats)
}

/// Ten unary calls on `feed`'s connection, each answered within a second. They run as a task
/// beside the stream's, as in a real program (the test's own future is polled only between
/// batches of task polls on this runtime).
async fn assert_calls_answered_promptly(feed: &FeedClient, transport: Transport) {
    let calc = CalculatorClient::new(feed.channel().clone());
    let calls = tokio::spawn(async move {
        for i in 0..10 {
            let answer = tokio::time::timeout(Duration::from_secs(1), calc.add(i, 1)).await;
            let answer =
                answer.unwrap_or_else(|_| panic!("{transport:?}: call {i} not answered promptly"));
            assert_eq!(answer.unwrap(), i + 1, "{transport:?}");
        }
    });
    calls.await.unwrap();
}

fn feed_server() -> (rpc_core::Server, Arc<FeedStats>) {
    feed_server_with(rpc_core::ServerConfig::default())
}

fn feed_server_with(config: rpc_core::ServerConfig) -> (rpc_core::Server, Arc<FeedStats>) {
    let feed = FeedImpl::default();
    let stats = feed.stats.clone();
    let (server, _) = test_server_with(config);
    (server.add_service(FeedServer::new(feed)), stats)
}

#[tokio::test]
async fn a_server_stream_yields_every_item_in_order() {
    for transport in Transport::ALL {
        let (_server, feed, _) = feed_on(transport).await;
        let ticks: Vec<u64> = feed
            .ticks(100_000)
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(ticks, (0..100_000).collect::<Vec<_>>(), "{transport:?}");
        let empty: Vec<_> = feed.ticks(0).await.unwrap().collect().await;
        assert!(empty.is_empty(), "{transport:?}");
    }
}

#[tokio::test]
async fn a_client_stream_reaches_the_handler() {
    for transport in Transport::ALL {
        let (_server, feed, _) = feed_on(transport).await;
        let total = feed
            .sum(Streaming::new(futures_util::stream::iter(1..=1_000)))
            .await
            .unwrap();
        assert_eq!(total, 500_500, "{transport:?}");
        let nothing = feed
            .sum(Streaming::new(futures_util::stream::empty()))
            .await
            .unwrap();
        assert_eq!(nothing, 0, "{transport:?}");
    }
}

#[tokio::test]
async fn a_bidirectional_stream_flows_both_ways_at_once() {
    for transport in Transport::ALL {
        let (_server, feed, _) = feed_on(transport).await;
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<String>();
        let input = Streaming::new(futures_util::stream::unfold(
            receiver,
            |mut receiver| async move { receiver.recv().await.map(|message| (message, receiver)) },
        ));
        let mut output = feed.shout(input).await.unwrap();
        // Each answer comes back before the next message is sent.
        for word in ["one", "two", "three"] {
            sender.send(word.to_owned()).unwrap();
            let answer = tokio::time::timeout(Duration::from_secs(2), output.next())
                .await
                .unwrap();
            assert_eq!(
                answer.unwrap().unwrap(),
                word.to_uppercase(),
                "{transport:?}"
            );
        }
        drop(sender);
        assert!(output.next().await.is_none(), "{transport:?}");
    }
}

#[tokio::test]
async fn a_reader_that_does_not_read_holds_the_producer_to_its_window() {
    for transport in Transport::ALL {
        let (_server, feed, stats) = feed_on(transport).await;
        let mut endless = feed.endless().await.unwrap();
        assert_eq!(endless.next().await.unwrap().unwrap(), 0);
        tokio::time::sleep(Duration::from_millis(200)).await;
        // One window (64) plus what the producer holds in hand: never thousands.
        let produced = stats.produced.load(Ordering::SeqCst);
        assert!(produced <= 2 * 64 + 2, "{transport:?}: produced {produced}");
        // A unary call on the same connection is answered meanwhile.
        let calc = CalculatorClient::new(feed.channel().clone());
        let answer = tokio::time::timeout(Duration::from_secs(2), calc.add(1, 2))
            .await
            .unwrap();
        assert_eq!(answer.unwrap(), 3);
        // Dropping the stream stops the producer.
        drop(endless);
        eventually("the producer was dropped", || {
            stats.dropped.load(Ordering::SeqCst) == 1
        })
        .await;
    }
}

#[tokio::test]
async fn a_producer_that_panics_ends_the_stream_with_an_error() {
    for transport in Transport::ALL {
        let (_server, feed, _) = feed_on(transport).await;
        let items: Vec<_> = feed.explode_after(3).await.unwrap().collect().await;
        assert_eq!(items.len(), 4, "{transport:?}: {items:?}");
        assert!(items[..3].iter().all(Result::is_ok));
        assert!(
            matches!(items[3], Err(RpcError::HandlerPanicked { .. })),
            "{items:?}"
        );
    }
}

#[tokio::test]
async fn a_deadline_passing_mid_stream_ends_it_with_deadline_exceeded() {
    for transport in Transport::ALL {
        let (_server, feed, _) = feed_on(transport).await;
        let items: Vec<_> = feed
            .with_timeout(Duration::from_millis(200))
            .slow(20)
            .await
            .unwrap()
            .collect()
            .await;
        let last = items.last().expect("at least the error");
        assert!(
            matches!(last, Err(RpcError::DeadlineExceeded { .. })),
            "{transport:?}: {last:?}"
        );
        assert!(items[..items.len() - 1].iter().all(Result::is_ok));
    }
}

#[tokio::test]
async fn a_connection_cut_mid_stream_ends_it_with_an_error() {
    for transport in Transport::SOCKETS {
        let feed_impl = FeedImpl::default();
        let mut config = rpc_core::ServerConfig::default();
        config.shutdown_grace_period = Duration::from_millis(100);
        let (server, _) = test_server_with(config);
        let server = server.add_service(FeedServer::new(feed_impl));
        let mut server = TestServer::start(server, transport).await;
        let feed = FeedClient::new(server.connect().await);
        let mut slow = feed.slow(10).await.unwrap();
        assert!(slow.next().await.unwrap().is_ok());
        // The server closes the connection once its grace period is over.
        let serving = server.start_shutdown();
        let mut last = None;
        while let Some(item) = tokio::time::timeout(Duration::from_secs(5), slow.next())
            .await
            .unwrap()
        {
            last = Some(item);
        }
        assert!(
            matches!(last, Some(Err(RpcError::ConnectionClosed { .. }))),
            "{transport:?}: {last:?}"
        );
        serving.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn dropping_a_client_streaming_call_ends_its_handler() {
    for transport in Transport::ALL {
        let (_server, feed, stats) = feed_on(transport).await;
        let endless_input = Streaming::new(futures_util::stream::iter(0_u64..));
        let call = tokio::spawn(feed.drain(endless_input));
        tokio::time::sleep(Duration::from_millis(100)).await;
        call.abort();
        eventually("the handler was dropped", || {
            stats.drains_dropped.load(Ordering::SeqCst) == 1
        })
        .await;
        // The connection carries on.
        let total = feed
            .sum(Streaming::new(futures_util::stream::iter([1, 2])))
            .await
            .unwrap();
        assert_eq!(total, 3, "{transport:?}");
    }
}

#[tokio::test]
async fn a_unary_call_is_answered_promptly_while_a_stream_runs_flat_out() {
    for transport in Transport::ALL {
        let (_server, feed, _) = feed_on(transport).await;
        let mut blobs = feed.blobs(u32::MAX, 16 * 1024).await.unwrap();
        let reader = tokio::spawn(async move {
            let mut bytes = 0_usize;
            while let Some(Ok(blob)) = blobs.next().await {
                bytes += blob.len();
            }
            bytes
        });
        assert_calls_answered_promptly(&feed, transport).await;
        assert!(
            !reader.is_finished(),
            "{transport:?}: the stream ran throughout"
        );
        reader.abort();
    }
}

#[tokio::test]
async fn metadata_and_deadline_reach_a_streaming_handler() {
    let (server, _) = feed_server();
    let server = TestServer::start(server, Transport::Tcp).await;
    let feed = FeedClient::new(server.connect().await);
    let described: Vec<String> = feed
        .with_metadata("tenant", "acme")
        .with_timeout(Duration::from_secs(5))
        .describe("tenant".into())
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(described, ["acme", "deadline"]);
}

#[tokio::test]
async fn a_handler_that_does_not_read_holds_the_client_producer_to_its_window() {
    for transport in Transport::ALL {
        let (_server, feed, _) = feed_on(transport).await;
        let produced = Arc::new(AtomicUsize::new(0));
        let counter = produced.clone();
        let endless = Streaming::new(futures_util::stream::iter(0_u64..).map(move |item| {
            counter.fetch_add(1, Ordering::SeqCst);
            item
        }));
        assert_eq!(
            feed.ignore(endless, 200).await.unwrap(),
            200,
            "{transport:?}"
        );
        // The server's window (64) and what the producer holds in hand: never thousands.
        let count = produced.load(Ordering::SeqCst);
        assert!(count <= 64 + 2, "{transport:?}: produced {count}");
        // The server stopped the stream when the handler returned: nothing more is produced.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(produced.load(Ordering::SeqCst), count, "{transport:?}");
    }
}

#[tokio::test]
async fn large_items_arrive_whole_while_calls_go_out_between_their_pieces() {
    for transport in Transport::ALL {
        let (_server, feed, _) = feed_on(transport).await;
        // 8 MiB items: each goes in 128 pieces, and calls are answered between the pieces.
        let size = 8 << 20;
        let mut big = feed.big(u32::MAX, size).await.unwrap();
        let first = big.next().await.unwrap().unwrap();
        assert_eq!(first.len(), size as usize);
        assert!(first.bytes().all(|byte| byte == b'a'), "{transport:?}");
        let reader = tokio::spawn(async move {
            let mut index = 1_u32;
            while let Some(Ok(item)) = big.next().await {
                let letter = b'a' + (index % 26) as u8;
                assert!(item.len() == size as usize && item.bytes().all(|byte| byte == letter));
                index += 1;
            }
        });
        assert_calls_answered_promptly(&feed, transport).await;
        assert!(
            !reader.is_finished(),
            "{transport:?}: the stream ran throughout"
        );
        reader.abort();
    }
}

/// A stream keeps its connection open while it is read, even once every handle to the
/// channel it came on is dropped (and over a balanced channel, whatever the balancer does).
#[tokio::test]
async fn a_stream_keeps_its_connection_open_after_the_channel_is_dropped() {
    for transport in Transport::ALL {
        let (_server, feed, _) = feed_on(transport).await;
        let ticks = feed.ticks(20_000).await.unwrap();
        drop(feed);
        let received: Vec<u64> = ticks.map(|tick| tick.unwrap()).collect().await;
        assert_eq!(received.len(), 20_000, "{transport:?}");
    }
}

/// The window counts bytes as well as items: a handler that does not read holds a client
/// sending large items to the server's byte window (plus the one item it may start with
/// credit left), not to 64 of them.
#[tokio::test]
async fn a_handler_that_does_not_read_holds_large_client_items_to_the_byte_window() {
    for transport in Transport::ALL {
        let mut config = rpc_core::ServerConfig::default();
        config.stream_window_bytes = 256 * 1024;
        let server = TestServer::start(feed_server_with(config).0, transport).await;
        let feed = FeedClient::new(server.connect().await);
        let produced = Arc::new(AtomicUsize::new(0));
        let counter = produced.clone();
        let blobs = Streaming::new(futures_util::stream::iter(0..).map(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            vec![7_u8; 100 * 1024]
        }));
        assert_eq!(feed.hoard(blobs, 200).await.unwrap(), 200, "{transport:?}");
        // 256 KiB of 100 KiB items is three started (the last with credit left), plus what
        // the producer holds in hand; the item window alone would have let 64 through.
        let count = produced.load(Ordering::SeqCst);
        assert!(count <= 5, "{transport:?}: produced {count}");
    }
}

/// A peer that sends more bytes than the byte window lets it have buffered breaks the
/// protocol: the connection is closed with a GOAWAY that says so.
#[tokio::test]
async fn a_stream_past_its_byte_window_closes_the_connection() {
    use rpc_core::wire::{self, Frame, PREFACE, RequestHead};
    use tokio::io::AsyncWriteExt;
    let mut config = rpc_core::ServerConfig::default();
    config.stream_window_bytes = 64 * 1024;
    config.max_frame_size = 64 * 1024;
    let server = TestServer::start(feed_server_with(config).0, Transport::Tcp).await;
    let mut raw = server.raw().await;
    let mut bytes = bytes::BytesMut::from(&PREFACE[..]);
    let head = RequestHead {
        call_id: 1,
        service_id: wire::wire_id("Feed"),
        method_id: wire::wire_id("hoard"),
        deadline_micros: None,
        request_stream: true,
    };
    wire::encode_request(&mut bytes, &head, &[], 1 << 20, |buf| {
        rpc_core::codec::encode_into(buf, &(10_000_u64,))
    })
    .unwrap();
    // Four items of 60 KiB: past 64 KiB of window plus one 64 KiB item, within 64 items.
    for _ in 0..4 {
        wire::encode_stream_item(&mut bytes, 1, 1 << 20, |buf| {
            rpc_core::codec::encode_into(buf, &rpc_core::codegen::ByteBuf(vec![1; 60 * 1024]))
        })
        .unwrap();
    }
    let _ = raw.write_all(&bytes).await;
    // Closed, with the GOAWAY saying so unless the close reset the socket first (the server
    // closes with bytes unread); with the byte window unchecked, the connection stays open
    // and `read_until_closed` fails.
    let answer = read_until_closed(&mut raw, Duration::from_secs(5)).await;
    let frames = frames_in(&answer);
    assert!(
        frames.iter().all(|frame| matches!(
            frame,
            Frame::GoAway { reason, .. } if reason.contains("more bytes than its window allows")
        )),
        "{frames:?}"
    );
}
