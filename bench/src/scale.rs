//! Connections at scale: 1, 100, 1,000 and 10,000 connections to one server over loopback
//! TCP, each calling `add` about once a second, while one more client measures its round
//! trips; at each step, the heap and resident memory the connections add (client and server
//! together, their calling tasks included) and the active client's p50 and p99. Ours against
//! tarpc.
//!
//! The server runs in a child process (the bench binary with `--scale-server STACK`), so
//! each process holds one descriptor per connection; both raise their descriptor limit
//! themselves, and both run on CPU 0. The child prints its address, then answers each line
//! on its standard input with its heap and resident bytes.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::systems::{self, Conn, Endpoint, Net, Stack, System};
use crate::{on_worker, os, percentile, runtime, Options};

/// What one step measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScaleStep {
    /// Connections calling in the background.
    pub connections: usize,
    /// Heap bytes per connection (both sides, with its calling task).
    pub heap_per_connection: f64,
    /// Resident bytes per connection (both sides, with its calling task).
    pub rss_per_connection: f64,
    /// The active client's median round trip.
    pub p50: Duration,
    /// The active client's 99th percentile.
    pub p99: Duration,
    /// Calls that returned a wrong result.
    pub failures: usize,
}

/// Every step, for ours and tarpc.
#[derive(Debug, Clone, Default)]
pub struct ScaleReport {
    /// This toolkit.
    pub ours: Vec<ScaleStep>,
    /// tarpc.
    pub tarpc: Vec<ScaleStep>,
    /// Steps left out for want of descriptors, if any.
    pub skipped: Option<String>,
}

impl ScaleReport {
    /// Calls that returned a wrong result, over every step.
    pub fn failures(&self) -> usize {
        self.ours
            .iter()
            .chain(&self.tarpc)
            .map(|step| step.failures)
            .sum()
    }
}

impl fmt::Display for ScaleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "### Connections at scale: each calling once a second, one more client measuring; TCP, one CPU\n"
        )?;
        writeln!(
            f,
            "| connections | ours heap / conn | tarpc heap / conn | ours RSS / conn | tarpc RSS / conn | ours p50 / p99 | tarpc p50 / p99 |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|---|")?;
        let kib = |bytes: f64, connections: usize| {
            if connections == 0 {
                "–".to_owned()
            } else {
                format!("{:.1} KiB", bytes / 1024.0)
            }
        };
        for (ours, tarpc) in self.ours.iter().zip(&self.tarpc) {
            let n = ours.connections;
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {:.1} / {:.1} µs | {:.1} / {:.1} µs |",
                if n == 0 {
                    "0 (alone)".to_owned()
                } else {
                    n.to_string()
                },
                kib(ours.heap_per_connection, n),
                kib(tarpc.heap_per_connection, n),
                kib(ours.rss_per_connection, n),
                kib(tarpc.rss_per_connection, n),
                micros(ours.p50),
                micros(ours.p99),
                micros(tarpc.p50),
                micros(tarpc.p99),
            )?;
        }
        if let Some(skipped) = &self.skipped {
            writeln!(f, "\n{skipped}")?;
        }
        Ok(())
    }
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// Runs every step for ours and tarpc, with servers started from `server_exe` (the bench
/// binary).
///
/// # Errors
///
/// When a runtime, the server process or a connection cannot be set up.
pub fn run(options: &Options, server_exe: &Path) -> io::Result<ScaleReport> {
    let most = options.scale_steps.iter().copied().max().unwrap_or(0);
    let limit = os::raise_descriptor_limit((most + 1_024) as u64);
    let fits = |connections: usize| (connections + 256) as u64 <= limit;
    let steps: Vec<usize> = options
        .scale_steps
        .iter()
        .copied()
        .filter(|step| fits(*step))
        .collect();
    let mut report = ScaleReport::default();
    if steps.len() < options.scale_steps.len() {
        report.skipped = Some(format!(
            "Steps over {} connections were left out: the descriptor limit is {limit}.",
            steps.last().copied().unwrap_or(0)
        ));
    }
    for (stack, name) in [(Stack::Ours, "ours"), (Stack::Tarpc, "tarpc")] {
        let server = ServerProcess::start(server_exe, name)?;
        let client_runtime = runtime(0, "bench-client")?;
        let system = System {
            stack,
            net: Net::Tcp,
        };
        // On the pinned worker, not on the thread that blocks on it.
        let (measured, server) = on_worker(
            &client_runtime,
            steps_for(system, server, steps.clone(), options.latency_calls),
        )?;
        // Dropping the runtime closes every connection; the server process ends with its
        // standard input.
        drop(client_runtime);
        server.stop();
        match stack {
            Stack::Ours => report.ours = measured?,
            _ => report.tarpc = measured?,
        }
    }
    Ok(report)
}

/// A bench server in a child process.
struct ServerProcess {
    child: Child,
    commands: ChildStdin,
    answers: BufReader<ChildStdout>,
    address: std::net::SocketAddr,
}

impl ServerProcess {
    /// Starts `server_exe --scale-server stack` and reads the address it listens on.
    fn start(server_exe: &Path, stack: &str) -> io::Result<ServerProcess> {
        let mut child = Command::new(server_exe)
            .args(["--scale-server", stack])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let (Some(commands), Some(answers)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(io::Error::other("the server process has no pipes"));
        };
        let mut answers = BufReader::new(answers);
        let mut line = String::new();
        answers.read_line(&mut line)?;
        let address = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|address| address.parse().ok())
            .ok_or_else(|| io::Error::other(format!("the server process said {line:?}")))?;
        Ok(ServerProcess {
            child,
            commands,
            answers,
            address,
        })
    }

    /// The server process's heap and resident bytes.
    fn memory(&mut self) -> io::Result<(i64, u64)> {
        writeln!(self.commands, "memory")?;
        self.commands.flush()?;
        let mut line = String::new();
        self.answers.read_line(&mut line)?;
        let mut fields = line.split_whitespace().map(str::parse::<i64>);
        match (fields.next(), fields.next()) {
            (Some(Ok(heap)), Some(Ok(resident))) => Ok((heap, resident.max(0) as u64)),
            _ => Err(io::Error::other(format!(
                "the server process said {line:?}"
            ))),
        }
    }

    fn stop(mut self) {
        drop(self.commands);
        let _ = self.child.wait();
    }
}

/// Heap and resident bytes of both processes.
fn memory(server: &mut ServerProcess) -> io::Result<(i64, u64)> {
    let (heap, resident) = server.memory()?;
    Ok((heap + os::live_bytes(), resident + os::resident_bytes()))
}

/// The server side of the scale part, in its own process (`--scale-server STACK`): serves
/// `stack` on CPU 0, prints `listening ADDRESS`, then answers every line of its standard
/// input with `HEAP RESIDENT` (bytes), until it ends.
///
/// # Errors
///
/// When the runtime or the listener cannot be set up, or the stack is unknown.
pub fn serve_child(stack: &str) -> io::Result<()> {
    let stack = match stack {
        "ours" => Stack::Ours,
        "tarpc" => Stack::Tarpc,
        other => return Err(io::Error::other(format!("no scale server for {other:?}"))),
    };
    os::raise_descriptor_limit(1 << 20);
    let server_runtime = runtime(0, "bench-server")?;
    let Endpoint::Tcp(address) = server_runtime.block_on(start(stack))? else {
        return Err(io::Error::other("the scale server listens on TCP"));
    };
    let mut out = io::stdout().lock();
    writeln!(out, "listening {address}")?;
    out.flush()?;
    for line in io::stdin().lock().lines() {
        line?;
        writeln!(out, "{} {}", os::live_bytes(), os::resident_bytes())?;
        out.flush()?;
    }
    Ok(())
}

/// Starts `stack`'s server, allowing every connection the steps open (ours limits
/// connections per server and per peer by default, and all of these come from one address).
async fn start(stack: Stack) -> io::Result<Endpoint> {
    if stack != Stack::Ours {
        return systems::start_server(System {
            stack,
            net: Net::Tcp,
        })
        .await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let mut config = rpc_core::ServerConfig::default();
    config.max_connections = 1 << 20;
    config.max_connections_per_peer = 1 << 20;
    tokio::spawn(rpc_transport::serve(
        listener,
        systems::ours_server_with(config),
    ));
    Ok(Endpoint::Tcp(address))
}

/// Adds connections up to each step in turn, and measures.
/// Hands back the server process, with the steps' outcome.
async fn steps_for(
    system: System,
    mut server: ServerProcess,
    steps: Vec<usize>,
    latency_calls: usize,
) -> io::Result<(io::Result<Vec<ScaleStep>>, ServerProcess)> {
    let measured = measure_steps(system, &mut server, steps, latency_calls).await;
    Ok((measured, server))
}

async fn measure_steps(
    system: System,
    server: &mut ServerProcess,
    steps: Vec<usize>,
    latency_calls: usize,
) -> io::Result<Vec<ScaleStep>> {
    let endpoint = Endpoint::Tcp(server.address);
    let active = systems::connect(system, &endpoint).await?;
    for call in 0..200 {
        active.add(call, 1).await;
    }
    settle().await;
    let (heap_before, rss_before) = memory(server)?;
    let mut callers = Vec::new();
    let mut measured = Vec::new();
    for connections in steps {
        while callers.len() < connections {
            let conn = systems::connect(system, &endpoint).await?;
            conn.add(1, 1).await;
            callers.push(tokio::spawn(call_now_and_then(conn)));
        }
        settle().await;
        let (heap_now, rss_now) = memory(server)?;
        let heap = (heap_now - heap_before) as f64;
        let rss = rss_now.saturating_sub(rss_before) as f64;
        let mut latencies = Vec::with_capacity(latency_calls);
        let mut failures = 0;
        for call in 0..latency_calls {
            let started = Instant::now();
            let sum = active.add(call as i64, 1).await;
            latencies.push(started.elapsed());
            failures += usize::from(sum != call as i64 + 1);
        }
        latencies.sort();
        measured.push(ScaleStep {
            connections,
            heap_per_connection: heap / connections.max(1) as f64,
            rss_per_connection: rss / connections.max(1) as f64,
            p50: percentile(&latencies, 50),
            p99: percentile(&latencies, 99),
            failures,
        });
    }
    for caller in callers {
        caller.abort();
    }
    Ok(measured)
}

/// Calls `add` on `conn` about once a second, starting at a random point of the second so
/// that the connections' calls spread out.
async fn call_now_and_then(conn: Conn) {
    let start = tokio::time::Instant::now() + Duration::from_secs_f64(fastrand::f64());
    let mut ticks = tokio::time::interval_at(start, Duration::from_secs(1));
    loop {
        ticks.tick().await;
        conn.add(2, 2).await;
    }
}

/// Lets connections finish starting and allocators settle.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}
