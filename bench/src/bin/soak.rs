//! A soak run: many connections making mixed unary and streaming calls, with random
//! cancels, timeouts, disconnects and panicking handlers, while hostile peers attack the
//! same server (slow frames, oversized and malformed frames, floods of bad requests and
//! pings, streams for calls that fail, payloads that claim more than they carry, idle
//! connections held open), for a set time. Every minute it prints the process's resident
//! memory, open file descriptors, live tasks, the client calls in flight, and the server's
//! running handlers and buffered bytes; it fails if a polite call never ends or if any of
//! those keeps growing.
//!
//! Run: `cargo run --release -p rpc-bench --bin soak -- --minutes 10`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::StreamExt;
use rpc_core::wire::{self, RequestHead, PREFACE};
use rpc_core::{service, Channel, RpcError, Server, ServerConfig, Streaming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The service the soak calls.
#[service]
pub trait Soak {
    /// Adds.
    async fn add(&self, a: u64, b: u64) -> u64;
    /// Sleeps, then echoes.
    async fn slow_echo(&self, data: Vec<u8>, millis: u64) -> Vec<u8>;
    /// Panics.
    async fn explode(&self) -> u64;
    /// Streams `n` numbers, one every `millis`.
    async fn count(&self, n: u64, millis: u64) -> Streaming<u64>;
    /// Sums a stream.
    async fn sum(&self, numbers: Streaming<u64>) -> u64;
}

struct SoakImpl;

impl Soak for SoakImpl {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }

    async fn slow_echo(&self, data: Vec<u8>, millis: u64) -> Vec<u8> {
        let _running = Running::start();
        tokio::time::sleep(Duration::from_millis(millis)).await;
        data
    }

    async fn explode(&self) -> u64 {
        panic!("the soak asked for it");
    }

    async fn count(&self, n: u64, millis: u64) -> Streaming<u64> {
        Streaming::new(
            futures_util::stream::iter(0..n).then(move |item| async move {
                tokio::time::sleep(Duration::from_millis(millis)).await;
                item
            }),
        )
    }

    async fn sum(&self, mut numbers: Streaming<u64>) -> u64 {
        let _running = Running::start();
        let mut total = 0_u64;
        while let Some(Ok(number)) = numbers.next().await {
            total = total.wrapping_add(number);
        }
        total
    }
}

/// What the workers did.
#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    errors: AtomicU64,
    hung: AtomicU64,
    reconnects: AtomicU64,
}

/// No call may take longer than this: the soak's own definition of a hang.
const HANG: Duration = Duration::from_secs(30);

/// A small, fast generator (xorshift), seeded per worker.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Each worker's current channel, for the in-flight count (a worker's old channel is
/// replaced, so that it can close).
type Channels = Arc<std::sync::Mutex<std::collections::HashMap<u64, Channel>>>;

async fn worker(
    address: std::net::SocketAddr,
    seed: u64,
    until: Instant,
    tally: Arc<Tally>,
    channels: Channels,
) {
    let mut rng = Rng(seed | 1);
    let connect = || async { rpc_transport::tcp::connect(address).await.ok() };
    let Some(mut channel) = connect().await else {
        return;
    };
    channels
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(seed, channel.clone());
    while Instant::now() < until {
        let client = SoakClient::new(channel.clone());
        let outcome = tokio::time::timeout(HANG, one_call(&client, &mut rng)).await;
        tally.calls.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Err(_) => {
                tally.hung.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(_)) => {
                tally.errors.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok(())) => {}
        }
        // Now and then, hang up and dial again.
        if rng.below(500) == 0 || channel.is_closed() {
            drop(client);
            let Some(next) = connect().await else { return };
            channel = next;
            channels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(seed, channel.clone());
            tally.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn one_call(client: &SoakClient, rng: &mut Rng) -> Result<(), RpcError> {
    match rng.below(10) {
        0..=3 => {
            let (a, b) = (rng.next(), rng.next());
            if client.add(a, b).await? != a.wrapping_add(b) {
                return Err(RpcError::Internal {
                    message: "wrong sum".into(),
                });
            }
        }
        4 => {
            // A deadline that may pass: the server drops the handler.
            let data = vec![7_u8; rng.below(64 * 1024) as usize];
            let millis = rng.below(20);
            let _ = client
                .with_timeout(Duration::from_millis(10))
                .slow_echo(data, millis)
                .await;
        }
        5 => {
            // A call dropped before it ends: the server drops the handler.
            let call = client.slow_echo(vec![1; 100], 50);
            let _ = tokio::time::timeout(Duration::from_millis(rng.below(30)), call).await;
        }
        6 => {
            let _ = client.explode().await;
        }
        7 => {
            // A stream read partly, then dropped: the producer stops.
            let mut numbers = client.count(1_000, 1).await?;
            for _ in 0..rng.below(20) {
                let _ = numbers.next().await;
            }
        }
        8 => {
            let n = rng.below(200);
            let total = client
                .sum(Streaming::new(futures_util::stream::iter(0..n)))
                .await?;
            if total != n * n.saturating_sub(1) / 2 {
                return Err(RpcError::Internal {
                    message: "wrong total".into(),
                });
            }
        }
        _ => {
            let data = vec![9_u8; rng.below(256 * 1024) as usize];
            if client.slow_echo(data.clone(), 0).await? != data {
                return Err(RpcError::Internal {
                    message: "wrong echo".into(),
                });
            }
        }
    }
    Ok(())
}

/// What hostile peers did.
#[derive(Default)]
struct Attacks {
    made: AtomicU64,
}

/// One hostile peer: connects again and again, each time with one attack chosen at
/// random, and reads whatever the server answers until it closes (or a short while).
async fn attacker(address: std::net::SocketAddr, seed: u64, until: Instant, attacks: Arc<Attacks>) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9) | 1);
    while Instant::now() < until {
        let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let bytes = attack(&mut rng);
        let _ = stream.write_all(&bytes).await;
        attacks.made.fetch_add(1, Ordering::Relaxed);
        // Read what comes back for a while (a slow frame waits here, holding its bytes).
        let mut sink = vec![0_u8; 16 * 1024];
        let _ = tokio::time::timeout(Duration::from_millis(rng.below(2_000)), async {
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

/// The bytes of one attack.
fn attack(rng: &mut Rng) -> Vec<u8> {
    let mut out = BytesMut::from(&PREFACE[..]);
    let request = |out: &mut BytesMut, call_id: u32, method: &str, stream: bool, payload: &[u8]| {
        let head = RequestHead {
            call_id,
            service_id: wire::wire_id("Soak"),
            method_id: wire::wire_id(method),
            deadline_micros: None,
            request_stream: stream,
        };
        let _ = wire::encode_request(out, &head, &[], usize::MAX, |buf| {
            buf.extend_from_slice(payload);
            Ok(())
        });
    };
    match rng.below(8) {
        // A large frame started and never finished (slow body).
        0 => {
            out.extend_from_slice(&(4_u32 << 20).to_be_bytes());
            out.extend(std::iter::repeat_n(0_u8, rng.below(300_000) as usize));
        }
        // A length prefix over the frame limit.
        1 => out.extend_from_slice(&u32::MAX.to_be_bytes()),
        // Not our protocol at all.
        2 => return b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n".to_vec(),
        // A flood of requests for a method that does not exist.
        3 => {
            for call_id in 1..2_000 {
                request(&mut out, call_id, "nope", false, &[]);
            }
        }
        // A flood of pings.
        4 => {
            for opaque in 0..5_000 {
                wire::encode_ping(&mut out, opaque, false);
            }
        }
        // Streams opened for calls that fail to dispatch, then items for them.
        5 => {
            for call_id in 1..200 {
                request(&mut out, call_id, "nope", true, &[]);
                let _ = wire::encode_stream_item(&mut out, call_id, usize::MAX, |buf| {
                    buf.extend_from_slice(&[1]);
                    Ok(())
                });
            }
        }
        // Payloads that claim more than they carry: 2^63 zero-sized elements, deep
        // nesting, a huge claimed length.
        6 => {
            let claims: [&[u8]; 3] = [
                &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
                &[1; 4_000],
                &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F],
            ];
            for (call_id, payload) in (1..).zip(claims) {
                request(&mut out, call_id, "add", false, payload);
                request(&mut out, call_id + 10, "slow_echo", false, payload);
            }
        }
        // An idle connection held open (the fleet behind one address).
        _ => {}
    }
    out.to_vec()
}

/// Resident memory in KiB, from /proc.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4)
}

/// Open file descriptors, from /proc.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    rss_kib: u64,
    fds: usize,
    tasks: usize,
    in_flight: usize,
    /// Server-side handlers running.
    handlers: u64,
    /// Bytes the server's connections hold in their read buffers.
    buffered: usize,
}

/// Server-side handlers running now (each handler counts itself in and out).
static HANDLERS: AtomicU64 = AtomicU64::new(0);

/// Counts a handler while it runs, however it ends.
struct Running;

impl Running {
    fn start() -> Running {
        HANDLERS.fetch_add(1, Ordering::Relaxed);
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        HANDLERS.fetch_sub(1, Ordering::Relaxed);
    }
}

fn main() -> std::io::Result<()> {
    let mut minutes = 10_u64;
    let mut workers = 32_u64;
    let mut attackers = 8_u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--minutes" => minutes = args.next().and_then(|m| m.parse().ok()).unwrap_or(minutes),
            "--workers" => workers = args.next().and_then(|w| w.parse().ok()).unwrap_or(workers),
            "--attackers" => {
                attackers = args
                    .next()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(attackers);
            }
            other => {
                eprintln!(
                    "unknown argument `{other}`; expected --minutes N, --workers N, --attackers N"
                );
                std::process::exit(2);
            }
        }
    }
    // The soak makes handlers panic on purpose: keep those out of the output.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let on_purpose = info
            .payload()
            .downcast_ref::<&str>()
            .is_some_and(|message| *message == "the soak asked for it");
        if !on_purpose {
            default_hook(info);
        }
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let failed = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let mut config = ServerConfig::default();
        // Slow frames are given up on within the soak's minute, so growth would show.
        config.frame_timeout = Duration::from_secs(5);
        let server = Server::with_config(config).add_service(SoakServer::new(SoakImpl));
        let buffers = server.buffer_budget().clone();
        tokio::spawn(rpc_transport::serve(listener, server));
        let started = Instant::now();
        let until = started + Duration::from_secs(minutes * 60);
        let tally = Arc::new(Tally::default());
        let channels: Channels = Arc::default();
        for seed in 0..workers {
            tokio::spawn(worker(
                address,
                seed + 1,
                until,
                tally.clone(),
                channels.clone(),
            ));
        }
        let attacks = Arc::new(Attacks::default());
        for seed in 0..attackers {
            tokio::spawn(attacker(address, seed + 1, until, attacks.clone()));
        }
        let reading = |channels: &Channels| {
            let channels = channels.lock().unwrap_or_else(|p| p.into_inner());
            Reading {
                rss_kib: rss_kib(),
                fds: open_fds(),
                tasks: tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks(),
                in_flight: channels.values().map(Channel::calls_in_flight).sum(),
                handlers: HANDLERS.load(Ordering::Relaxed),
                buffered: buffers.held(),
            }
        };
        println!(
            "minute | calls | errors | hung | reconnects | attacks | RSS KiB | fds | tasks | calls in flight | handlers | buffered"
        );
        let mut readings = Vec::new();
        let mut minute = 0;
        while Instant::now() < until {
            tokio::time::sleep(
                Duration::from_secs(60).min(until.saturating_duration_since(Instant::now())),
            )
            .await;
            minute += 1;
            let now = reading(&channels);
            println!(
                "{minute:6} | {:5} | {:6} | {:4} | {:10} | {:7} | {:7} | {:3} | {:5} | {:15} | {:8} | {}",
                tally.calls.load(Ordering::Relaxed),
                tally.errors.load(Ordering::Relaxed),
                tally.hung.load(Ordering::Relaxed),
                tally.reconnects.load(Ordering::Relaxed),
                attacks.made.load(Ordering::Relaxed),
                now.rss_kib,
                now.fds,
                now.tasks,
                now.in_flight,
                now.handlers,
                now.buffered,
            );
            readings.push(now);
        }
        // Let the last calls end: nothing may be left in flight.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let end = reading(&channels);
        println!("after the workers stopped: {end:?}");
        // Then hang up: the server must let go of every buffer.
        channels.lock().unwrap_or_else(|p| p.into_inner()).clear();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let closed = reading(&channels);
        println!("after the clients hung up: {closed:?}");
        let hung = tally.hung.load(Ordering::Relaxed);
        let mut failed = false;
        if hung > 0 {
            println!("FAIL: {hung} calls never ended within {HANG:?}");
            failed = true;
        }
        // Growth without bound: the last minute's figures far above the second minute's
        // (the first minute warms caches and pools up).
        if let (Some(early), Some(late)) = (readings.get(1).or(readings.first()), readings.last()) {
            if late.rss_kib > early.rss_kib * 2 + 64 * 1024 {
                println!(
                    "FAIL: resident memory grew from {} to {} KiB",
                    early.rss_kib, late.rss_kib
                );
                failed = true;
            }
            if late.fds > early.fds + 64 || late.tasks > early.tasks * 2 + 256 {
                println!("FAIL: descriptors or tasks grew: {early:?} -> {late:?}");
                failed = true;
            }
        }
        if closed.handlers != 0 || closed.buffered != 0 {
            println!(
                "FAIL: the server still runs {} handlers or buffers {} bytes after the clients hung up",
                closed.handlers, closed.buffered
            );
            failed = true;
        }
        if end.in_flight != 0 {
            println!(
                "FAIL: {} calls still in flight after the workers stopped",
                end.in_flight
            );
            failed = true;
        }
        Ok::<bool, std::io::Error>(failed)
    })?;
    if failed {
        std::process::exit(1);
    }
    println!("PASS");
    Ok(())
}
