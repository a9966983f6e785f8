//! Fuzz harnesses: each takes arbitrary bytes and drives one decoder, or a whole connection,
//! asserting that nothing panics, hangs or allocates more than the bytes pay for.
//!
//! The libFuzzer targets in `fuzz/` call these, and `tests/it/fuzz_corpus.rs` replays the
//! committed corpus through them on every `cargo test`, so an input that once found a bug
//! stays a regression test. A harness must not make a handler panic on purpose: libFuzzer's
//! panic hook aborts the process before our `catch_unwind` sees the panic.
//!
//! The connection harnesses feed the fuzz bytes through [`MockIo`]: the first byte seeds the
//! choice of read sizes, `Pending` reads and writes, short writes and I/O errors, and the
//! rest is what the peer sends.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use rpc_core::wire::{self, Frame, FrameDecoder};
use rpc_core::{ChannelConfig, Peer, Server, ServerConfig, Shutdown, Streaming, service};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a fuzzed connection may take before the harness calls it a hang. Every input
/// ends in end-of-stream, so a healthy run finishes in microseconds.
const HANG_LIMIT: Duration = Duration::from_secs(10);

/// The frame limit the connection harnesses run with, small so that a hostile length
/// prefix is refused rather than reserved.
const FUZZ_MAX_FRAME: usize = 64 * 1024;

/// A small deterministic generator (xorshift64*), so one input always takes one path.
#[derive(Debug, Clone)]
struct Dice(u64);

impl Dice {
    fn new(seed: u8) -> Self {
        Dice(0x9E37_79B9_7F4A_7C15 ^ u64::from(seed).wrapping_mul(0x2545_F491_4F6C_DD1D) | 1)
    }

    fn roll(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True one time in `n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.roll() % n == 0
    }

    /// A size in `1..=max`, small sizes more likely.
    fn size(&mut self, max: usize) -> usize {
        let bound = [1, 7, 64, 4096, max][(self.roll() % 5) as usize].min(max);
        1 + (self.roll() as usize) % bound.max(1)
    }
}

/// Splits `data` into the seed for [`Dice`] and the bytes the peer sends.
fn split_seed(data: &[u8]) -> (Dice, &[u8]) {
    match data.split_first() {
        Some((seed, rest)) => (Dice::new(*seed), rest),
        None => (Dice::new(0), &[]),
    }
}

/// Feeds `data` to a [`FrameDecoder`] in chunks the input chooses, parsing every frame it
/// yields, and checks the decoder never keeps more than the bytes it was given.
pub fn frame_decoder(data: &[u8]) {
    let (mut dice, stream) = split_seed(data);
    let max_frame = [16, 1024, FUZZ_MAX_FRAME][(dice.roll() % 3) as usize];
    let mut decoder = if dice.one_in(2) {
        FrameDecoder::new(max_frame)
    } else {
        FrameDecoder::after_preface(max_frame)
    };
    let mut buf = BytesMut::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(dice.size(rest.len()));
        rest = tail;
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(body)) => {
                    assert!(
                        body.len() <= max_frame,
                        "a frame over the limit got through"
                    );
                    let _ = Frame::parse(body);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        let missing = decoder.bytes_missing(&buf);
        if decoder.preface_seen() && buf.len() >= 4 {
            // The only claim it may act on is a length within the limit.
            assert!(buf.len() + missing <= max_frame + 4);
        }
    }
}

/// A recursive type, so the nesting-depth guard is exercised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Tree {
    /// A leaf holding a number.
    Leaf(i64),
    /// A node holding named subtrees.
    Node(Vec<(String, Tree)>),
    /// A subtree that may be absent.
    Maybe(Option<Box<Tree>>),
}

/// An argument type with every kind of field a decoder has to check: lengths, tags, UTF-8,
/// chars, floats, zero-sized elements, maps and recursion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// A varint.
    pub id: u64,
    /// A zigzag varint.
    pub delta: i32,
    /// A bool tag.
    pub flag: bool,
    /// A char.
    pub initial: char,
    /// A length-prefixed string.
    pub name: String,
    /// A byte block.
    pub blob: Vec<u8>,
    /// An option tag.
    pub parent: Option<u32>,
    /// Zero-sized elements.
    pub units: Vec<()>,
    /// A map.
    pub labels: std::collections::BTreeMap<String, u16>,
    /// Recursion.
    pub tree: Tree,
    /// A float (compared bitwise).
    pub weight: f64,
    /// A hash map (its claimed length is a capacity hint).
    pub index: std::collections::HashMap<u16, String>,
    /// Boxed values, present or not.
    pub boxes: Vec<Option<Box<[u16; 8]>>>,
}

impl Envelope {
    /// Whether two envelopes are the same, floats compared bitwise (a NaN is itself).
    fn same(&self, other: &Envelope) -> bool {
        self.weight.to_bits() == other.weight.to_bits()
            && Envelope {
                weight: 0.0,
                ..self.clone()
            } == Envelope {
                weight: 0.0,
                ..other.clone()
            }
    }
}

/// Values far larger in memory than on the wire, which only the decoder's memory limit
/// stops: decoded (never round-tripped: the encoder cannot see their memory) to check that
/// what they make the decoder allocate stays within the payload's budget.
#[derive(Debug, Deserialize)]
pub struct Heavy {
    /// Boxes of mostly-empty 512-byte slots: one wire byte, over 512 bytes of heap each.
    #[allow(clippy::vec_box)] // the box is the point: what it holds is charged too
    pub boxed: Vec<Box<Option<[[u64; 32]; 2]>>>,
    /// A map of mostly-empty slots, whose claimed length is a capacity hint.
    pub map: std::collections::HashMap<u64, Option<[[u8; 32]; 8]>>,
    /// Zero-sized elements in nested sequences.
    pub units: Vec<Vec<()>>,
    /// Recursion through boxes.
    pub tree: Tree,
}

/// Decodes `data` as a frame body, then its metadata section and its payload as an
/// [`Envelope`] and a [`Heavy`] with every decoding limit on. Whatever decodes as an
/// envelope and the encoder writes must decode to the same value: the encoder may refuse
/// a value the peer's limits would refuse (a non-canonical input can pay for more elements
/// than its canonical form), but never write one the decoder refuses.
pub fn envelope(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    if let Ok(Frame::Request { metadata, .. }) = Frame::parse(body) {
        let _ = wire::decode_metadata(metadata, 8 * 1024);
    }
    for payload in [data, data.get(1..).unwrap_or_default()] {
        if let Ok(value) = rpc_core::codec::decode::<Envelope>(payload) {
            let mut buf = BytesMut::new();
            match rpc_core::codec::encode_into(&mut buf, &value) {
                Ok(()) => {
                    let again: Envelope = match rpc_core::codec::decode(&buf) {
                        Ok(again) => again,
                        Err(error) => panic!("the decoder refuses what the encoder wrote: {error}"),
                    };
                    assert!(value.same(&again), "round trip changed it");
                }
                Err(error) => assert!(
                    error.to_string().contains("the peer would refuse it"),
                    "the encoder failed: {error}"
                ),
            }
        }
        let _ = rpc_core::codec::decode::<Heavy>(payload);
    }
}

/// What the fuzzed peer's stream does on each poll.
#[derive(Debug)]
struct Script {
    dice: Dice,
    input: Bytes,
    /// Whether the input may also inject I/O errors (chosen by the seed).
    errors: bool,
    /// Reads stay pending until this is set (the client harness opens it once its calls
    /// are on their way, so responses can meet them).
    open: bool,
    waiting: Option<Waker>,
    written: usize,
}

/// One end of an in-memory byte stream driven by a script: reads return the fuzz input
/// in chunks it chooses, with `Pending` and errors mixed in, then end-of-stream; writes are
/// accepted (possibly short, possibly `Pending`) and counted.
#[derive(Debug, Clone)]
pub struct MockIo(Arc<Mutex<Script>>);

impl MockIo {
    fn new(data: &[u8], open: bool) -> MockIo {
        let (mut dice, input) = split_seed(data);
        let errors = dice.one_in(4);
        MockIo(Arc::new(Mutex::new(Script {
            dice,
            input: Bytes::copy_from_slice(input),
            errors,
            open,
            waiting: None,
            written: 0,
        })))
    }

    fn open(&self) {
        let mut script = self.0.lock().unwrap();
        script.open = true;
        if let Some(waker) = script.waiting.take() {
            waker.wake();
        }
    }
}

impl AsyncRead for MockIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut script = self.0.lock().unwrap();
        if !script.open {
            script.waiting = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if script.dice.one_in(5) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if script.errors && script.dice.one_in(64) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        let len = script.input.len().min(out.remaining());
        if len == 0 {
            return Poll::Ready(Ok(()));
        }
        let len = script.dice.size(len);
        let chunk = script.input.split_to(len);
        out.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for MockIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut script = self.0.lock().unwrap();
        if script.dice.one_in(5) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if script.errors && script.dice.one_in(64) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let len = if bytes.is_empty() {
            0
        } else {
            script.dice.size(bytes.len())
        };
        script.written += len;
        Poll::Ready(Ok(len))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The service the connection harnesses serve and call: one method of each kind, none of
/// which can be made to use much memory or time.
#[service]
pub trait Fuzzed {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Returns its argument.
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    /// Takes a structured argument.
    async fn inspect(&self, envelope: Envelope) -> u64;
    /// Streams `0..n` (at most 100 items).
    async fn count(&self, n: u32) -> Streaming<u32>;
    /// Sums what it is sent.
    async fn sum(&self, numbers: Streaming<i64>) -> i64;
    /// Sends back what it is sent.
    async fn mirror(&self, items: Streaming<String>) -> Streaming<String>;
    /// Waits up to 5 ms.
    async fn nap(&self, micros: u16) -> u16;
}

struct FuzzedImpl;

impl Fuzzed for FuzzedImpl {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }

    async fn inspect(&self, envelope: Envelope) -> u64 {
        envelope.id
    }

    async fn count(&self, n: u32) -> Streaming<u32> {
        Streaming::new(futures_util::stream::iter(0..n.min(100)))
    }

    async fn sum(&self, mut numbers: Streaming<i64>) -> i64 {
        let mut total = 0_i64;
        while let Some(Ok(number)) = numbers.next().await {
            total = total.wrapping_add(number);
        }
        total
    }

    async fn mirror(&self, items: Streaming<String>) -> Streaming<String> {
        Streaming::new(items.filter_map(|item| async move { item.ok() }))
    }

    async fn nap(&self, micros: u16) -> u16 {
        tokio::time::sleep(Duration::from_micros(u64::from(micros.min(5000)))).await;
        micros
    }
}

thread_local! {
    /// One runtime per fuzzing thread, reused across inputs (building one per input would
    /// dominate the run).
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
}

fn run<F: std::future::Future>(future: F) -> F::Output {
    RUNTIME.with(|runtime| {
        runtime.block_on(async {
            tokio::time::timeout(HANG_LIMIT, future)
                .await
                .expect("the connection hung")
        })
    })
}

/// Tight limits, so a hostile peer meets each of them within a small input.
fn fuzz_server_config() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.max_frame_size = FUZZ_MAX_FRAME;
    config.max_metadata_size = 1024;
    config.max_concurrent_calls = 8;
    config.stream_window = 4;
    config.error_budget = 64;
    // Accepts compressed frames (and compresses towards peers that do), so inputs reach
    // the inflating code.
    config.compression = Some(rpc_core::Compression::lz4());
    config
}

/// A server connection reading `data` (after its seed byte) as what the client sent. It
/// must end (the input ends in end-of-stream) with every handler gone.
pub fn server_connection(data: &[u8]) {
    let io = MockIo::new(data, true);
    run(async {
        let server =
            Server::with_config(fuzz_server_config()).add_service(FuzzedServer::new(FuzzedImpl));
        let connection = rpc_transport::framed::server_connection(
            io.clone(),
            io.clone(),
            Peer::Other("fuzz".into()),
            &server,
        );
        server.serve_connection(connection, Shutdown::new()).await;
    });
}

/// A client channel reading `data` (after its seed byte) as what the server sent, with one
/// call of each kind in flight. Every call must end, with its result or an error. When the
/// seed byte's top bit is set, the client serves `Fuzzed` too, so the server's calls run.
pub fn client_connection(data: &[u8]) {
    let io = MockIo::new(data, false);
    let serves = data.first().is_some_and(|seed| seed & 0x80 != 0);
    run(async {
        let mut config = ChannelConfig::default();
        config.max_frame_size = FUZZ_MAX_FRAME;
        config.stream_window = 4;
        config.compression = Some(rpc_core::Compression::lz4());
        if serves {
            let server = Server::with_config(fuzz_server_config())
                .add_service(FuzzedServer::new(FuzzedImpl));
            config = config.serve(server);
        }
        let channel = rpc_transport::framed::channel(
            io.clone(),
            io.clone(),
            Peer::Other("fuzz".into()),
            config,
        );
        let client = FuzzedClient::new(channel.clone());
        let unary = tokio::spawn(client.add(1, 2));
        let bytes = tokio::spawn(client.echo(vec![7; 3]));
        let counted = {
            let client = client.clone();
            tokio::spawn(async move {
                let mut stream = client.count(3).await?;
                while stream.next().await.transpose()?.is_some() {}
                Ok::<_, rpc_core::RpcError>(())
            })
        };
        let summed = tokio::spawn(client.sum(Streaming::new(futures_util::stream::iter([1, 2]))));
        let mirrored = {
            let client = client.clone();
            tokio::spawn(async move {
                let input = futures_util::stream::iter(["a".to_owned()]);
                let mut stream = client.mirror(Streaming::new(input)).await?;
                while stream.next().await.transpose()?.is_some() {}
                Ok::<_, rpc_core::RpcError>(())
            })
        };
        // Let every call send its request before the "server" starts talking.
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        io.open();
        let _ = unary.await.unwrap();
        let _ = bytes.await.unwrap();
        let _ = counted.await.unwrap();
        let _ = summed.await.unwrap();
        let _ = mirrored.await.unwrap();
        assert!(
            channel.is_closed(),
            "the input ended, so the channel must have"
        );
        assert_eq!(channel.calls_in_flight(), 0, "a call was left in the table");
    });
}

/// Inputs that start each harness on a real conversation, so the fuzzer begins from valid
/// frames instead of having to discover the preface by chance. (Written to the corpus by
/// `tests/it/fuzz_corpus.rs::write_seeds`.)
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let request = |call_id, method: &str, args: &dyn erased::Encode| {
        let mut buf = BytesMut::new();
        let head = wire::RequestHead {
            call_id,
            service_id: wire::wire_id("Fuzzed"),
            method_id: wire::wire_id(method),
            deadline_micros: Some(1_000_000),
            request_stream: matches!(method, "sum" | "mirror"),
        };
        let metadata = [("k".to_owned(), "v".to_owned())];
        let start = wire::start_request(&mut buf, &head, &metadata).unwrap();
        args.encode(&mut buf);
        wire::finish_frame(&mut buf, start, usize::MAX).unwrap();
        buf
    };
    let sample = Envelope {
        id: 7,
        delta: -3,
        flag: true,
        initial: 'λ',
        name: "name".into(),
        blob: vec![1, 2, 3],
        parent: Some(9),
        units: vec![(), ()],
        labels: [("a".to_owned(), 1)].into_iter().collect(),
        tree: Tree::Node(vec![(
            "x".into(),
            Tree::Maybe(Some(Box::new(Tree::Leaf(5)))),
        )]),
        weight: 0.5,
        index: [(3, "three".to_owned())].into_iter().collect(),
        boxes: vec![None, Some(Box::new([1, 2, 3, 4, 5, 6, 7, 8]))],
    };

    let mut client_speech = BytesMut::from(&wire::PREFACE[..]);
    let fingerprints = [(wire::wire_id("add"), 1), (wire::wire_id("echo"), 2)];
    wire::encode_declare(&mut client_speech, wire::wire_id("Fuzzed"), &fingerprints);
    client_speech.extend(request(1, "add", &(1_i64, 2_i64)));
    client_speech.extend(request(3, "echo", &(vec![5_u8; 10],)));
    client_speech.extend(request(5, "inspect", &(sample.clone(),)));
    client_speech.extend(request(7, "count", &(3_u32,)));
    client_speech.extend(request(9, "sum", &()));
    stream_item(&mut client_speech, 9, &5_i64);
    wire::encode_stream_end(&mut client_speech, 9, wire::Status::Ok, "");
    client_speech.extend(request(11, "mirror", &()));
    wire::encode_window(&mut client_speech, 11, 4, 1 << 20);
    stream_item(&mut client_speech, 11, &"hi");
    client_speech.extend(request(13, "nap", &(100_u16,)));
    wire::encode_cancel(&mut client_speech, 13);
    wire::encode_ping(&mut client_speech, 42, false);

    // The client's calls get odd ids 1, 3, .. in the order the harness starts them.
    let mut server_speech = BytesMut::from(&wire::preface(wire::PREFACE_SERVES)[..]);
    let respond = |buf: &mut BytesMut, call_id, value: &dyn erased::Encode| {
        let mut payload = BytesMut::new();
        value.encode(&mut payload);
        wire::encode_response(buf, call_id, wire::Status::Ok, &payload, usize::MAX).unwrap();
    };
    respond(&mut server_speech, 1, &3_i64);
    respond(&mut server_speech, 3, &vec![7_u8; 3]);
    respond(&mut server_speech, 5, &());
    stream_item(&mut server_speech, 5, &0_u32);
    wire::encode_stream_end(&mut server_speech, 5, wire::Status::Ok, "");
    wire::encode_window(&mut server_speech, 7, 4, 1 << 20);
    respond(&mut server_speech, 7, &3_i64);
    respond(&mut server_speech, 9, &());
    stream_item(&mut server_speech, 9, &"a");
    wire::encode_stream_end(&mut server_speech, 9, wire::Status::Ok, "");
    wire::encode_ping(&mut server_speech, 1, false);
    // Calls from the server (even ids), which a client that serves runs (the harness
    // serves when the seed byte's top bit is set) and a plain client answers
    // `UNKNOWN_SERVICE`.
    let mut calls_back = server_speech.clone();
    calls_back.extend(request(2, "add", &(4_i64, 5_i64)));
    calls_back.extend(request(4, "count", &(3_u32,)));
    wire::encode_window(&mut calls_back, 4, 4, 1 << 20);
    calls_back.extend(request(6, "mirror", &()));
    stream_item(&mut calls_back, 6, &"back");
    wire::encode_stream_end(&mut calls_back, 6, wire::Status::Ok, "");
    calls_back.extend(request(8, "nap", &(100_u16,)));
    wire::encode_cancel(&mut calls_back, 8);
    wire::encode_go_away(&mut server_speech, 9, "bye");
    wire::encode_go_away(&mut calls_back, 9, "bye");

    // A client that serves: the same calls, and answers to the server's calls (even ids).
    let mut serving_client_speech = BytesMut::from(&wire::preface(wire::PREFACE_SERVES)[..]);
    serving_client_speech.extend_from_slice(&client_speech[wire::PREFACE.len()..]);
    respond(&mut serving_client_speech, 2, &9_i64);
    stream_item(&mut serving_client_speech, 2, &1_u32);
    wire::encode_window(&mut serving_client_speech, 4, 4, 1 << 20);
    wire::encode_stream_end(&mut serving_client_speech, 4, wire::Status::Ok, "");
    wire::encode_ping(&mut serving_client_speech, 1 << 63, true);

    // The same speech with every frame compressed, after prefaces that accept compression.
    // (Small frames do not shrink, so each speech gets a large one that does.)
    let compressed = |speech: &BytesMut, large: BytesMut, flags: u8| {
        let mut out = BytesMut::from(&wire::preface(flags | wire::PREFACE_LZ4)[..]);
        out.extend_from_slice(&large);
        out.extend_from_slice(&speech[wire::PREFACE.len()..]);
        wire::compress_frames(&mut out, wire::PREFACE.len(), 1);
        out
    };
    let large_request = request(15, "echo", &(vec![5_u8; 2000],));
    let compressed_client_speech = compressed(&client_speech, large_request, 0);
    let mut large_response = BytesMut::new();
    respond(&mut large_response, 3, &vec![7_u8; 2000]);
    let compressed_server_speech = compressed(&calls_back, large_response, wire::PREFACE_SERVES);
    assert!(
        compressed_client_speech.len() < client_speech.len() + 1000,
        "the seeds hold compressed frames"
    );

    let mut envelope_seed = BytesMut::new();
    rpc_core::codec::encode_into(&mut envelope_seed, &sample).unwrap();

    let with_seed = |seed: u8, bytes: &[u8]| [&[seed][..], bytes].concat();
    vec![
        ("frame_decoder", with_seed(0, &client_speech)),
        ("frame_decoder", with_seed(1, &server_speech)),
        (
            "envelope",
            client_speech[wire::PREFACE.len() + 4..].to_vec(),
        ),
        ("envelope", envelope_seed.to_vec()),
        ("envelope", heavy_seed()),
        ("envelope", padded_envelope_seed()),
        // A `Heavy` whose map claims 2^20 entries in five bytes: postcard passes the claim to
        // serde as a capacity hint, which would reserve a megabyte before the first entry.
        ("envelope", vec![0, 0x80, 0x80, 0x40, 7]),
        ("server_connection", with_seed(0, &client_speech)),
        ("server_connection", with_seed(7, &client_speech)),
        ("server_connection", with_seed(0, &serving_client_speech)),
        ("server_connection", with_seed(0, &compressed_client_speech)),
        ("client_connection", with_seed(0, &server_speech)),
        ("client_connection", with_seed(7, &server_speech)),
        ("client_connection", with_seed(0, &calls_back)),
        ("client_connection", with_seed(0x80, &calls_back)),
        ("client_connection", with_seed(0x87, &calls_back)),
        (
            "client_connection",
            with_seed(0x80, &compressed_server_speech),
        ),
    ]
}

/// A non-canonical [`Envelope`] encoding that pays for more elements than the canonical
/// form of its value can: the shape of the `envelope` target's first finding, an envelope
/// that decoded, re-encoded smaller, and was then refused by the decoder ("more elements
/// than the payload can hold"). 50,000 units and 1,000 tree entries whose varints are
/// padded to their longest form (postcard accepts them), 16 KB; canonically 3 KB, which
/// cannot pay for 50,000 elements, so the encoder must refuse to write it.
fn padded_envelope_seed() -> Vec<u8> {
    fn varint(out: &mut BytesMut, mut value: u64) {
        while value >= 0x80 {
            out.extend_from_slice(&[(value as u8) | 0x80]);
            value >>= 7;
        }
        out.extend_from_slice(&[value as u8]);
    }
    let mut out = BytesMut::new();
    let head = (7_u64, -3_i32, true, 'x', "name", vec![1_u8], None::<u32>);
    rpc_core::codec::encode_into(&mut out, &head).unwrap();
    varint(&mut out, 50_000); // units
    varint(&mut out, 0); // labels
    varint(&mut out, 1); // tree: Tree::Node
    varint(&mut out, 1_000);
    for _ in 0..1_000 {
        out.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x00]); // "" (length 0, padded)
        varint(&mut out, 0); // Tree::Leaf
        out.extend_from_slice(&[0x80; 9]); // 0_i64, padded to ten bytes
        out.extend_from_slice(&[0x00]);
    }
    out.extend_from_slice(&0.25_f64.to_le_bytes()); // weight
    varint(&mut out, 0); // index
    varint(&mut out, 0); // boxes
    out.to_vec()
}

/// A [`Heavy`] value near the decoder's limits.
fn heavy_seed() -> Vec<u8> {
    #[derive(Serialize)]
    struct HeavyOut {
        #[allow(clippy::vec_box)]
        boxed: Vec<Box<Option<[[u64; 32]; 2]>>>,
        map: Vec<(u64, Option<[[u8; 32]; 8]>)>,
        units: Vec<Vec<()>>,
        tree: Tree,
    }
    let heavy = HeavyOut {
        boxed: vec![Box::new(None); 50],
        map: (0..50).map(|key| (key, None)).collect(),
        units: vec![vec![(); 1000]; 3],
        tree: Tree::Maybe(Some(Box::new(Tree::Leaf(1)))),
    };
    let mut out = BytesMut::new();
    rpc_core::codec::encode_into(&mut out, &heavy).unwrap();
    out.to_vec()
}

/// Appends a stream item frame carrying `value`.
fn stream_item(buf: &mut BytesMut, call_id: u32, value: &dyn erased::Encode) {
    wire::encode_stream_item(buf, call_id, usize::MAX, |buf| {
        value.encode(buf);
        Ok(())
    })
    .unwrap();
}

/// Encoding any serializable value behind a `dyn`, for building seeds.
mod erased {
    use bytes::BytesMut;

    pub(super) trait Encode {
        fn encode(&self, buf: &mut BytesMut);
    }

    impl<T: serde::Serialize> Encode for T {
        fn encode(&self, buf: &mut BytesMut) {
            rpc_core::codec::encode_into(buf, self).unwrap();
        }
    }
}

/// The harness for a target name, as `fuzz/` and the corpus replay know them.
pub fn harness(target: &str) -> Option<fn(&[u8])> {
    Some(match target {
        "frame_decoder" => frame_decoder,
        "envelope" => envelope,
        "server_connection" => server_connection,
        "client_connection" => client_connection,
        _ => return None,
    })
}

/// Every harness's target name.
pub const TARGETS: [&str; 4] = [
    "frame_decoder",
    "envelope",
    "server_connection",
    "client_connection",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_padded_envelope_decodes_and_its_canonical_form_is_refused_by_the_encoder() {
        let padded = padded_envelope_seed();
        let value: Envelope = rpc_core::codec::decode(&padded).unwrap();
        assert_eq!(value.units.len(), 50_000);
        let error = rpc_core::codec::encode_into(&mut BytesMut::new(), &value).unwrap_err();
        assert!(error.to_string().contains("more elements"), "{error}");
        envelope(&padded);
    }

    #[test]
    fn the_heavy_seed_decodes() {
        if let Err(error) = rpc_core::codec::decode::<Heavy>(&heavy_seed()) {
            panic!("{error}");
        }
    }
}
