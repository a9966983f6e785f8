//! A side-by-side benchmark of this toolkit, tarpc, tonic and raw sockets, in one run.
//!
//! Client and server run in one process on two tokio runtimes of one worker thread each,
//! pinned either to two different CPUs or both to one CPU. On a small VM a wake-up across
//! CPUs costs tens of microseconds, so latency and CPU per call are compared with both on
//! one CPU, where they measure code rather than the hypervisor. Systems are interleaved
//! within each round, and each figure is the median of the rounds.
//!
//! `cargo run --release -p rpc-bench` prints the table; `--quick` runs a few calls of each
//! scenario (what CI does, to keep the benchmark from rotting).

pub mod compress;
pub mod grpc;
pub mod os;
mod report;
pub mod scale;
pub mod systems;

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub use report::Report;
use systems::{Conn, Endpoint, Net, Stack, System};

pub mod http;

/// How much to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rounds per figure (the median is reported).
    pub rounds: usize,
    /// Calls per throughput measurement.
    pub throughput_calls: usize,
    /// Calls per latency measurement.
    pub latency_calls: usize,
    /// Calls per bulk measurement.
    pub bulk_calls: usize,
    /// Size of one bulk echo.
    pub bulk_size: usize,
    /// Connections held open to measure memory per idle connection.
    pub idle_connections: usize,
    /// The steps of the connections-at-scale part: how many connections call in the
    /// background (0: the measuring client alone).
    pub scale_steps: Vec<usize>,
    /// Only systems whose name (`ours-tcp`, `tarpc-unix`, `raw-inprocess`...) contains this.
    pub system_filter: Option<String>,
    /// Only scenarios whose name (`latency`, `inflight-64`, `connections-8x32`, `bulk`)
    /// contains this.
    pub scenario_filter: Option<String>,
    /// Only placements whose name (`one-cpu`, `separate-cpus`, `plain-runtime`) contains
    /// this.
    pub placement_filter: Option<String>,
}

impl Options {
    /// The full benchmark.
    pub fn full() -> Self {
        Options {
            rounds: 3,
            throughput_calls: 60_000,
            latency_calls: 5_000,
            bulk_calls: 300,
            bulk_size: 1 << 20,
            idle_connections: 200,
            scale_steps: vec![0, 1, 100, 1_000, 10_000],
            system_filter: None,
            scenario_filter: None,
            placement_filter: None,
        }
    }

    /// A few calls of everything: checks that every scenario runs, measures nothing.
    pub fn quick() -> Self {
        Options {
            rounds: 1,
            throughput_calls: 600,
            latency_calls: 50,
            bulk_calls: 2,
            bulk_size: 1 << 20,
            idle_connections: 4,
            scale_steps: vec![0, 10, 50],
            system_filter: None,
            scenario_filter: None,
            placement_filter: None,
        }
    }
}

/// Where the two runtimes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placement {
    /// Client and server on the same CPU.
    OneCpu,
    /// Client and server on different CPUs.
    SeparateCpus,
    /// Client and server in one multi-threaded runtime with a worker per CPU, unpinned: what
    /// a plain `#[tokio::main]` program gets.
    PlainRuntime,
}

impl Placement {
    /// The placement's name, for filters.
    pub fn name(self) -> &'static str {
        match self {
            Placement::OneCpu => "one-cpu",
            Placement::SeparateCpus => "separate-cpus",
            Placement::PlainRuntime => "plain-runtime",
        }
    }
}

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// One call in flight.
    Latency,
    /// Calls in flight on one connection.
    InFlight(usize),
    /// Connections, each with calls in flight.
    Connections(usize, usize),
    /// Echo of `Options::bulk_size` bytes, one at a time.
    Bulk,
    /// The same echo of a shared buffer (`bytes::Bytes`), sent and received without a copy,
    /// where the system has a way to (ours and raw sockets).
    BulkShared,
}

impl Scenario {
    /// The scenario's name, for filters.
    pub fn name(self) -> String {
        match self {
            Scenario::Latency => "latency".to_owned(),
            Scenario::InFlight(in_flight) => format!("inflight-{in_flight}"),
            Scenario::Connections(connections, in_flight) => {
                format!("connections-{connections}x{in_flight}")
            }
            Scenario::Bulk => "bulk".to_owned(),
            Scenario::BulkShared => "bulk-shared".to_owned(),
        }
    }
}

const SCENARIOS: [Scenario; 6] = [
    Scenario::Latency,
    Scenario::InFlight(64),
    Scenario::InFlight(256),
    Scenario::Connections(8, 32),
    Scenario::Bulk,
    Scenario::BulkShared,
];

/// One measurement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Median latency, for `Latency`.
    pub p50: Duration,
    /// 99th percentile latency, for `Latency`.
    pub p99: Duration,
    /// Calls per second.
    pub calls_per_second: f64,
    /// Process CPU time per call (both sides).
    pub cpu_per_call: Duration,
    /// Payload bytes echoed per second, for `Bulk`.
    pub bytes_per_second: f64,
    /// Calls that returned a wrong or no result (must be 0).
    pub failures: usize,
}

/// Every system, in the order they are reported.
pub fn all_systems() -> Vec<System> {
    let mut systems = Vec::new();
    for net in [Net::Tcp, Net::Unix, Net::InProcess] {
        for stack in [Stack::Raw, Stack::Ours, Stack::Tarpc, Stack::Tonic] {
            // tonic is measured over sockets: in process it would still be HTTP/2 over a pipe.
            if stack == Stack::Tonic && net == Net::InProcess {
                continue;
            }
            systems.push(System { stack, net });
        }
    }
    systems
}

fn matches_filter(filter: &Option<String>, name: &str) -> bool {
    filter
        .as_ref()
        .is_none_or(|filter| name.contains(filter.as_str()))
}

/// What `#[tokio::main]` builds: a worker per CPU, unpinned.
fn plain_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("bench-plain")
        .enable_all()
        .build()
}

pub(crate) fn runtime(cpu: usize, name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .on_thread_start(move || {
            os::pin_current_thread(cpu);
        })
        .enable_all()
        .build()
}

/// Runs every scenario for every system and returns the medians.
///
/// # Errors
///
/// When a runtime or a server cannot be started.
pub fn run(options: &Options) -> std::io::Result<Report> {
    let mut report = Report::new(options.clone());
    let separate_cpu = usize::from(os::available_cpus() > 1);
    for placement in [
        Placement::OneCpu,
        Placement::SeparateCpus,
        Placement::PlainRuntime,
    ] {
        if !matches_filter(&options.placement_filter, placement.name()) {
            continue;
        }
        // A plain runtime serves both sides; the others get a pinned runtime each.
        let (server_runtime, own_client_runtime) = match placement {
            Placement::PlainRuntime => (plain_runtime()?, None),
            Placement::OneCpu => (
                runtime(0, "bench-server")?,
                Some(runtime(0, "bench-client")?),
            ),
            Placement::SeparateCpus => (
                runtime(0, "bench-server")?,
                Some(runtime(separate_cpu, "bench-client")?),
            ),
        };
        let client_runtime = own_client_runtime.as_ref().unwrap_or(&server_runtime);
        // In process there is one runtime by definition: only the one-CPU placement applies.
        let systems: Vec<System> = all_systems()
            .into_iter()
            .filter(|system| system.net != Net::InProcess || placement == Placement::OneCpu)
            .filter(|system| matches_filter(&options.system_filter, &system.name()))
            .collect();
        let mut endpoints = HashMap::new();
        for system in &systems {
            let endpoint =
                server_runtime.block_on(async { systems::start_server(*system).await })?;
            endpoints.insert(*system, endpoint);
        }
        for round in 0..options.rounds {
            for scenario in SCENARIOS {
                if !matches_filter(&options.scenario_filter, &scenario.name()) {
                    continue;
                }
                // The plain runtime is measured for the headline figures only.
                let headline = matches!(scenario, Scenario::Latency | Scenario::InFlight(64));
                if placement == Placement::PlainRuntime && !headline {
                    continue;
                }
                // Interleave systems, rotating who goes first.
                for index in 0..systems.len() {
                    let system = systems[(index + round) % systems.len()];
                    let endpoint = &endpoints[&system];
                    let sample = on_worker(
                        client_runtime,
                        measure(system, endpoint.clone(), scenario, options.clone()),
                    )?;
                    if let Some(sample) = sample {
                        report.record(placement, scenario, system, sample);
                    }
                }
            }
        }
        if placement == Placement::OneCpu && options.scenario_filter.is_none() {
            for system in &systems {
                let endpoint = &endpoints[system];
                let allocations = on_worker(
                    client_runtime,
                    allocations_per_call(*system, endpoint.clone()),
                )?;
                report.record_allocations(*system, allocations);
                let memory = on_worker(
                    client_runtime,
                    idle_connection_bytes(*system, endpoint.clone(), options.clone()),
                )?;
                report.record_idle_memory(*system, memory);
            }
        }
        for endpoint in endpoints.values() {
            if let Endpoint::Unix(path) = endpoint {
                let _ = std::fs::remove_file(path);
            }
        }
        if let Some(client_runtime) = own_client_runtime {
            client_runtime.shutdown_timeout(Duration::from_secs(1));
        }
        server_runtime.shutdown_timeout(Duration::from_secs(1));
    }
    Ok(report)
}

/// Runs `work` on the runtime's (pinned) worker thread rather than on the calling thread,
/// which `block_on` would use, so that client work runs where the placement says.
pub(crate) fn on_worker<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    work: impl std::future::Future<Output = std::io::Result<T>> + Send + 'static,
) -> std::io::Result<T> {
    runtime.block_on(async { tokio::spawn(work).await.map_err(std::io::Error::other)? })
}

async fn measure(
    system: System,
    endpoint: Endpoint,
    scenario: Scenario,
    options: Options,
) -> std::io::Result<Option<Sample>> {
    let endpoint = &endpoint;
    let calls = options.throughput_calls;
    let mut sample = Sample::default();
    match scenario {
        Scenario::Latency => {
            let conn = systems::connect(system, endpoint).await?;
            warm_up(&conn).await;
            let mut latencies = Vec::with_capacity(options.latency_calls);
            for call in 0..options.latency_calls {
                let call = call as i64;
                let started = Instant::now();
                let sum = conn.add(call, 1).await;
                latencies.push(started.elapsed());
                sample.failures += usize::from(sum != call + 1);
            }
            latencies.sort();
            sample.p50 = percentile(&latencies, 50);
            sample.p99 = percentile(&latencies, 99);
        }
        Scenario::InFlight(in_flight) => {
            let conn = systems::connect(system, endpoint).await?;
            warm_up(&conn).await;
            let (correct, wall, cpu) = timed(conn.pipelined(in_flight, calls)).await;
            sample.failures = calls - correct;
            sample.calls_per_second = calls as f64 / wall.as_secs_f64();
            sample.cpu_per_call = cpu / calls as u32;
        }
        Scenario::Connections(connections, in_flight) => {
            let mut conns = Vec::with_capacity(connections);
            for _ in 0..connections {
                let conn = systems::connect(system, endpoint).await?;
                warm_up(&conn).await;
                conns.push(conn);
            }
            let per_connection = calls / connections;
            let all = futures_util::future::join_all(
                conns
                    .iter()
                    .map(|conn| conn.pipelined(in_flight, per_connection)),
            );
            let (correct, wall, cpu) = timed(all).await;
            let total = per_connection * connections;
            sample.failures = total - correct.iter().sum::<usize>();
            sample.calls_per_second = total as f64 / wall.as_secs_f64();
            sample.cpu_per_call = cpu / total as u32;
        }
        Scenario::Bulk | Scenario::BulkShared => {
            let conn = systems::connect(system, endpoint).await?;
            let data = bytes::Bytes::from(vec![0xAB_u8; options.bulk_size]);
            if echo_once(&conn, scenario, &data).await.is_none() {
                return Ok(None);
            }
            let echo_all = async {
                let mut correct = 0;
                for _ in 0..options.bulk_calls {
                    let back = echo_once(&conn, scenario, &data).await;
                    correct += usize::from(back == Some(data.len()));
                }
                correct
            };
            let (correct, wall, cpu) = timed(echo_all).await;
            sample.failures = options.bulk_calls - correct;
            sample.bytes_per_second =
                (options.bulk_calls * options.bulk_size) as f64 / wall.as_secs_f64();
            sample.cpu_per_call = cpu / options.bulk_calls as u32;
        }
    }
    Ok(Some(sample))
}

/// One echo of `data` for a bulk scenario: as a `Vec<u8>` the caller copies (as every
/// system's user would to keep their own), or shared; the length that came back, `None`
/// where the system has no shared echo.
async fn echo_once(conn: &Conn, scenario: Scenario, data: &bytes::Bytes) -> Option<usize> {
    if scenario == Scenario::BulkShared {
        conn.echo_shared(data.clone()).await
    } else {
        Some(conn.echo(data.to_vec()).await)
    }
}

async fn warm_up(conn: &Conn) {
    for call in 0..200 {
        conn.add(call, 1).await;
    }
}

async fn timed<T>(work: impl std::future::Future<Output = T>) -> (T, Duration, Duration) {
    let cpu_before = os::process_cpu_time();
    let started = Instant::now();
    let output = work.await;
    let wall = started.elapsed();
    let cpu = os::process_cpu_time().saturating_sub(cpu_before);
    (output, wall, cpu)
}

pub(crate) fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * percent / 100).min(sorted.len() - 1)]
}

/// Allocations per unary call, client and server together (the process's count).
async fn allocations_per_call(system: System, endpoint: Endpoint) -> std::io::Result<f64> {
    let endpoint = &endpoint;
    const CALLS: u64 = 2_000;
    let conn = systems::connect(system, endpoint).await?;
    warm_up(&conn).await;
    let before = os::allocations();
    for call in 0..CALLS {
        conn.add(call as i64, 1).await;
    }
    Ok((os::allocations() - before) as f64 / CALLS as f64)
}

/// Heap bytes one idle connection holds, client and server together, after one call.
async fn idle_connection_bytes(
    system: System,
    endpoint: Endpoint,
    options: Options,
) -> std::io::Result<f64> {
    let endpoint = &endpoint;
    let settle = || tokio::time::sleep(Duration::from_millis(50));
    settle().await;
    let before = os::live_bytes();
    let mut conns = Vec::with_capacity(options.idle_connections);
    for _ in 0..options.idle_connections {
        let conn = systems::connect(system, endpoint).await?;
        conn.add(1, 1).await;
        conns.push(conn);
    }
    settle().await;
    let after = os::live_bytes();
    drop(conns);
    settle().await;
    Ok((after - before) as f64 / options.idle_connections as f64)
}
