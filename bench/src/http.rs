//! HTTP/JSON: `add(a, b)` through `rpc-http` against a hand-written axum handler doing the
//! same work (parse `{"a": .., "b": ..}`, add, write the sum as JSON), both served and called
//! over HTTP/1.1 keep-alive on loopback TCP, client and server runtimes on one CPU.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rpc_core::{service, Server};
use serde::Deserialize;

use crate::{on_worker, os, percentile, runtime, Options};

/// The calculator, as the RPC side serves it.
#[service]
pub trait HttpCalc {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
}

struct Calc;

impl HttpCalc for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

#[derive(Deserialize)]
struct AddArgs {
    a: i64,
    b: i64,
}

/// What was measured for one server.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpFigures {
    /// Median round trip, one request at a time.
    pub p50: Duration,
    /// Process CPU time per request (both sides), 16 connections each sending in turn.
    pub cpu_per_call: Duration,
    /// Requests answered with anything but the right sum.
    pub failures: usize,
}

/// The two servers' figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpReport {
    /// `rpc-http` serving the `#[service]`.
    pub rpc_http: HttpFigures,
    /// A hand-written axum handler.
    pub axum: HttpFigures,
}

impl fmt::Display for HttpReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ratio = |ours: Duration, theirs: Duration| {
            ours.as_secs_f64() / theirs.as_secs_f64().max(f64::MIN_POSITIVE)
        };
        writeln!(f, "### HTTP/JSON, one CPU\n")?;
        writeln!(
            f,
            "| figure | hand-written axum | rpc-http | rpc-http ÷ axum |"
        )?;
        writeln!(f, "|---|---|---|---|")?;
        writeln!(
            f,
            "| latency p50, 1 in flight | {:.2} µs | {:.2} µs | {:.2}× |",
            micros(self.axum.p50),
            micros(self.rpc_http.p50),
            ratio(self.rpc_http.p50, self.axum.p50)
        )?;
        writeln!(
            f,
            "| CPU per call, 16 connections | {:.2} µs | {:.2} µs | {:.2}× |",
            micros(self.axum.cpu_per_call),
            micros(self.rpc_http.cpu_per_call),
            ratio(self.rpc_http.cpu_per_call, self.axum.cpu_per_call)
        )
    }
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// Serves both, measures both (interleaved, `options.rounds` rounds, medians).
///
/// # Errors
///
/// When a runtime or a listener cannot be started.
pub fn run(options: &Options) -> std::io::Result<HttpReport> {
    let server_runtime = runtime(0, "http-server")?;
    let client_runtime = runtime(0, "http-client")?;
    let (rpc_address, axum_address) = server_runtime.block_on(async {
        let rpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let axum = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addresses = (rpc.local_addr()?, axum.local_addr()?);
        let server = Server::new().add_service(HttpCalcServer::new(Calc));
        tokio::spawn(rpc_http::serve(rpc, server));
        let app = axum::Router::new().route(
            "/add",
            axum::routing::post(|axum::Json(args): axum::Json<AddArgs>| async move {
                axum::Json(args.a + args.b)
            }),
        );
        tokio::spawn(async move { axum::serve(axum, app).await });
        Ok::<_, std::io::Error>(addresses)
    })?;
    let mut rpc_runs = Vec::new();
    let mut axum_runs = Vec::new();
    for _ in 0..options.rounds {
        let calls = options.latency_calls;
        rpc_runs.push(on_worker(
            &client_runtime,
            measure(rpc_address, "/HttpCalc/add", calls),
        )?);
        axum_runs.push(on_worker(
            &client_runtime,
            measure(axum_address, "/add", calls),
        )?);
    }
    client_runtime.shutdown_timeout(Duration::from_secs(1));
    server_runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(HttpReport {
        rpc_http: median(&rpc_runs),
        axum: median(&axum_runs),
    })
}

fn median(runs: &[HttpFigures]) -> HttpFigures {
    let mut p50: Vec<Duration> = runs.iter().map(|run| run.p50).collect();
    let mut cpu: Vec<Duration> = runs.iter().map(|run| run.cpu_per_call).collect();
    p50.sort();
    cpu.sort();
    HttpFigures {
        p50: p50.get(p50.len() / 2).copied().unwrap_or_default(),
        cpu_per_call: cpu.get(cpu.len() / 2).copied().unwrap_or_default(),
        failures: runs.iter().map(|run| run.failures).sum(),
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(address: SocketAddr) -> std::io::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One request; whether it answered the right sum.
async fn add(sender: &mut Sender, address: SocketAddr, path: &str, a: i64) -> bool {
    let body = format!(r#"{{"a": {a}, "b": 1}}"#);
    let Ok(request) = hyper::Request::post(format!("http://{address}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
    else {
        return false;
    };
    let Ok(response) = sender.send_request(request).await else {
        return false;
    };
    let Ok(body) = response.into_body().collect().await else {
        return false;
    };
    body.to_bytes() == (a + 1).to_string().as_bytes()
}

async fn measure(
    address: SocketAddr,
    path: &'static str,
    calls: usize,
) -> std::io::Result<HttpFigures> {
    let mut figures = HttpFigures::default();
    let mut sender = connect(address).await?;
    for call in 0..50 {
        add(&mut sender, address, path, call).await;
    }
    let mut latencies = Vec::with_capacity(calls);
    for call in 0..calls {
        let started = Instant::now();
        let right = add(&mut sender, address, path, call as i64).await;
        latencies.push(started.elapsed());
        figures.failures += usize::from(!right);
    }
    latencies.sort();
    figures.p50 = percentile(&latencies, 50);
    // Throughput: 16 connections, each sending its share in turn.
    let connections = 16;
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        senders.push(connect(address).await?);
    }
    let per_connection = (calls * 4 / connections).max(1);
    let cpu_before = os::process_cpu_time();
    let rights = futures_util::future::join_all(senders.into_iter().map(|mut sender| async move {
        let mut right = 0;
        for call in 0..per_connection {
            right += usize::from(add(&mut sender, address, path, call as i64).await);
        }
        right
    }))
    .await;
    let cpu = os::process_cpu_time().saturating_sub(cpu_before);
    let total = per_connection * connections;
    figures.failures += total - rights.iter().sum::<usize>();
    figures.cpu_per_call = cpu / total as u32;
    Ok(figures)
}
