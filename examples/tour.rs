//! A tour of the toolkit over TCP, a Unix socket and the in-process loopback: unary calls,
//! an application error, a deadline, metadata, a streamed result, two services on one
//! connection, and a short latency and throughput figure for each transport.
//!
//! Run: `cargo run --example tour` (add `--release` for representative figures).

use std::error::Error;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rpc_core::{service, Channel, Context, RpcError, Server, Streaming};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// What can go wrong in arithmetic: an application error, returned as a value.
#[derive(Debug, Serialize, Deserialize)]
pub enum MathError {
    /// Division by zero.
    DivideByZero,
}

/// A calculator.
#[service]
pub trait Calculator {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Divides, failing on zero with an application error.
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// Takes its time.
    async fn slow_square(&self, x: i64, millis: u64) -> i64;
    /// Streams the squares of `1..=n`.
    async fn squares(&self, n: i64) -> Streaming<i64>;
}

/// Greets people in the caller's language, read from call metadata.
#[service]
pub trait Greeter {
    /// Says hello to `name`.
    async fn greet(&self, cx: &Context, name: String) -> String;
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            Err(MathError::DivideByZero)
        } else {
            Ok(a / b)
        }
    }

    async fn slow_square(&self, x: i64, millis: u64) -> i64 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        x * x
    }

    async fn squares(&self, n: i64) -> Streaming<i64> {
        Streaming::new(futures_util::stream::iter((1..=n).map(|x| x * x)))
    }
}

struct Greetings;

impl Greeter for Greetings {
    async fn greet(&self, cx: &Context, name: String) -> String {
        let greeting = match cx.metadata("lang") {
            Some("fr") => "Bonjour",
            Some("de") => "Hallo",
            _ => "Hello",
        };
        format!("{greeting}, {name} (you are {})", cx.peer())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let server = Server::new()
        .add_service(CalculatorServer::new(Calc))
        .add_service(GreeterServer::new(Greetings));

    // Serve on TCP and on a Unix socket, each with a graceful-shutdown signal.
    let tcp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let tcp_address = tcp_listener.local_addr()?;
    let (stop_tcp, tcp_stopped) = oneshot::channel::<()>();
    let tcp_server = tokio::spawn(
        rpc_transport::serve(tcp_listener, server.clone()).with_graceful_shutdown(async {
            let _ = tcp_stopped.await;
        }),
    );
    let socket_path = std::env::temp_dir().join(format!("rpc-tour-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket_path);
    let unix_listener = tokio::net::UnixListener::bind(&socket_path)?;
    let (stop_unix, unix_stopped) = oneshot::channel::<()>();
    let unix_server = tokio::spawn(
        rpc_transport::serve(unix_listener, server.clone()).with_graceful_shutdown(async {
            let _ = unix_stopped.await;
        }),
    );

    let channels = [
        ("TCP", rpc_transport::tcp::connect(tcp_address).await?),
        (
            "Unix socket",
            rpc_transport::unix::connect(&socket_path).await?,
        ),
        ("loopback", rpc_transport::loopback::connect(&server)),
    ];
    for (name, channel) in channels {
        println!("== over {name} ==");
        tour(channel).await?;
        println!();
    }

    let _ = stop_tcp.send(());
    let _ = stop_unix.send(());
    tcp_server.await??;
    unix_server.await??;
    let _ = std::fs::remove_file(&socket_path);
    println!("both servers drained and stopped cleanly");
    Ok(())
}

async fn tour(channel: Channel) -> Result<(), RpcError> {
    // Two services share one connection.
    let calc = CalculatorClient::new(channel.clone());
    let greeter = GreeterClient::new(channel);

    println!("add(2, 3)            = {}", calc.add(2, 3).await?);
    println!("div(7, 2)            = {:?}", calc.div(7, 2).await?);
    println!(
        "div(1, 0)            = {:?}  (an application error, inside Ok)",
        calc.div(1, 0).await?
    );
    println!(
        "greet (lang=fr)      = {}",
        greeter
            .with_metadata("lang", "fr")
            .greet("Ada".into())
            .await?
    );

    let hurried = calc.with_timeout(Duration::from_millis(50));
    match hurried.slow_square(12, 1_000).await {
        Err(RpcError::DeadlineExceeded { .. }) => {
            println!("slow_square, 50 ms   = deadline exceeded (the server dropped the handler)");
        }
        other => println!("slow_square, 50 ms   = unexpected {other:?}"),
    }
    println!(
        "slow_square, 1 s     = {}",
        calc.with_timeout(Duration::from_secs(1))
            .slow_square(12, 10)
            .await?
    );

    let squares: Vec<i64> = calc
        .squares(5)
        .await?
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    println!("squares(5), streamed = {squares:?}");

    // Latency: one call in flight at a time.
    let mut samples = Vec::with_capacity(2_000);
    for i in 0..2_000 {
        let started = Instant::now();
        calc.add(i, 1).await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    println!(
        "latency, 1 in flight = p50 {:.1} µs, p99 {:.1} µs ({BUILD})",
        micros(samples[samples.len() / 2]),
        micros(samples[samples.len() * 99 / 100])
    );

    // Throughput: 64 calls in flight on the one connection.
    const CALLS: i64 = 50_000;
    const IN_FLIGHT: i64 = 64;
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..IN_FLIGHT {
        let calc = calc.clone();
        workers.spawn(async move {
            for i in (worker..CALLS).step_by(IN_FLIGHT as usize) {
                calc.add(i, 1).await?;
            }
            Ok::<(), RpcError>(())
        });
    }
    while let Some(outcome) = workers.join_next().await {
        outcome.map_err(|error| RpcError::Internal {
            message: error.to_string().into(),
        })??;
    }
    let elapsed = started.elapsed();
    println!(
        "throughput, 64 in flight = {:.0} k calls/s ({CALLS} calls in {:.0} ms; {BUILD})",
        CALLS as f64 / elapsed.as_secs_f64() / 1_000.0,
        elapsed.as_secs_f64() * 1_000.0
    );
    Ok(())
}

/// Which build the figures come from: a debug build runs about ten times slower.
const BUILD: &str = if cfg!(debug_assertions) {
    "debug build: `cargo run --release --example tour` for real figures, rpc-bench to compare"
} else {
    "release build"
};

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
