//! Compression: an echo of 1 MiB of log lines (compressible, as text is) over loopback TCP,
//! client and server runtimes on one CPU, with compression off and with LZ4 on both sides:
//! bytes on the wire per call (both directions), CPU per call and throughput.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rpc_core::{ChannelConfig, Compression, Peer, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::systems::{ours_server_with, BenchClient};
use crate::{on_worker, os, runtime, Options};

/// What one configuration measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompressionFigures {
    /// Bytes the client's socket wrote and read per call.
    pub wire_bytes_per_call: f64,
    /// Process CPU time per call (both sides).
    pub cpu_per_call: Duration,
    /// Payload bytes echoed per second.
    pub bytes_per_second: f64,
    /// Echoes that came back wrong.
    pub failures: usize,
}

/// Without and with compression.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompressionReport {
    /// The payload's size.
    pub payload: usize,
    /// Compression off.
    pub plain: CompressionFigures,
    /// LZ4 on both sides.
    pub lz4: CompressionFigures,
}

impl fmt::Display for CompressionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "### Compression: echo of {} KiB of log lines, TCP, one CPU\n",
            self.payload / 1024
        )?;
        writeln!(f, "| figure | off | LZ4 | LZ4 ÷ off |")?;
        writeln!(f, "|---|---|---|---|")?;
        let (plain, lz4) = (self.plain, self.lz4);
        writeln!(
            f,
            "| bytes on the wire per call (both ways) | {:.0} KiB | {:.0} KiB | {:.2}× |",
            plain.wire_bytes_per_call / 1024.0,
            lz4.wire_bytes_per_call / 1024.0,
            lz4.wire_bytes_per_call / plain.wire_bytes_per_call.max(1.0)
        )?;
        writeln!(
            f,
            "| CPU per call | {:.1} µs | {:.1} µs | {:.2}× |",
            plain.cpu_per_call.as_secs_f64() * 1e6,
            lz4.cpu_per_call.as_secs_f64() * 1e6,
            lz4.cpu_per_call.as_secs_f64()
                / plain.cpu_per_call.as_secs_f64().max(f64::MIN_POSITIVE)
        )?;
        writeln!(
            f,
            "| payload echoed per second | {:.2} GB/s | {:.2} GB/s | {:.2}× |",
            plain.bytes_per_second / 1e9,
            lz4.bytes_per_second / 1e9,
            lz4.bytes_per_second / plain.bytes_per_second.max(f64::MIN_POSITIVE)
        )
    }
}

/// `len` bytes of access-log lines.
fn log_lines(len: usize) -> Vec<u8> {
    let mut text = Vec::with_capacity(len + 128);
    let mut line = 0_u64;
    while text.len() < len {
        let status = [200, 200, 200, 304, 404][(line % 5) as usize];
        text.extend_from_slice(
            format!(
                "2026-11-30T10:{:02}:{:02}.{:03}Z 10.0.{}.{} GET /api/items/{} {status} {}ms\n",
                (line / 60) % 60,
                line % 60,
                (line * 7) % 1000,
                line % 7,
                line % 250,
                line * 31 % 100_000,
                line % 90
            )
            .as_bytes(),
        );
        line += 1;
    }
    text.truncate(len);
    text
}

/// Measures the echo with compression off, then with LZ4 on both sides.
///
/// # Errors
///
/// When a runtime, the listener or a connection cannot be set up.
pub fn run(options: &Options) -> io::Result<CompressionReport> {
    let server_runtime = runtime(0, "bench-server")?;
    let client_runtime = runtime(0, "bench-client")?;
    let payload = log_lines(options.bulk_size);
    let mut report = CompressionReport {
        payload: payload.len(),
        ..CompressionReport::default()
    };
    for compression in [None, Some(Compression::lz4())] {
        let mut server_config = ServerConfig::default();
        server_config.compression = compression;
        let server = ours_server_with(server_config);
        let listener = server_runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let address = listener.local_addr()?;
        let serving = server_runtime.spawn(rpc_transport::serve(listener, server));
        let figures = on_worker(
            &client_runtime,
            echo(address, compression, payload.clone(), options.bulk_calls),
        )?;
        serving.abort();
        match compression {
            None => report.plain = figures,
            Some(_) => report.lz4 = figures,
        }
    }
    Ok(report)
}

async fn echo(
    address: std::net::SocketAddr,
    compression: Option<Compression>,
    payload: Vec<u8>,
    calls: usize,
) -> io::Result<CompressionFigures> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let wire = Arc::new(AtomicU64::new(0));
    let counted = Counted {
        inner: stream,
        bytes: wire.clone(),
    };
    let (reader, writer) = tokio::io::split(counted);
    let mut config = ChannelConfig::default();
    config.compression = compression;
    let channel = rpc_transport::framed::channel(reader, writer, Peer::Tcp(address), config);
    let client = BenchClient::new(channel);
    let mut failures =
        usize::from(client.echo(payload.clone()).await.ok() != Some(payload.clone()));
    wire.store(0, Ordering::Relaxed);
    let cpu_before = os::process_cpu_time();
    let started = std::time::Instant::now();
    for _ in 0..calls {
        let echoed = client.echo(payload.clone()).await;
        failures += usize::from(echoed.ok().as_ref() != Some(&payload));
    }
    let wall = started.elapsed();
    let cpu = os::process_cpu_time().saturating_sub(cpu_before);
    Ok(CompressionFigures {
        wire_bytes_per_call: wire.load(Ordering::Relaxed) as f64 / calls as f64,
        cpu_per_call: cpu / calls as u32,
        bytes_per_second: (calls * payload.len()) as f64 / wall.as_secs_f64(),
        failures,
    })
}

/// A byte stream that counts the bytes it reads and writes.
struct Counted<S> {
    inner: S,
    bytes: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.bytes.fetch_add(read as u64, Ordering::Relaxed);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = &polled {
            self.bytes.fetch_add(*written as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
