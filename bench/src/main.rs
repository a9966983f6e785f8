//! Runs the benchmark and prints the table.
//!
//! Run: `cargo run --release -p rpc-bench` (`-- --quick` for a smoke run, `-- --rounds N`,
//! `-- --system ours-tcp --scenario inflight-64 --placement one-cpu` to run a part, e.g.
//! under a profiler;
//! `-- --scenario scale` (or `http`, `compression`) for one of the parts after the table).

use rpc_bench::os::CountingAllocator;
use rpc_bench::Options;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn main() -> std::io::Result<()> {
    let mut options = Options::full();
    let mut args = std::env::args().skip(1);
    if std::env::args().nth(1).as_deref() == Some("--scale-server") {
        let stack = std::env::args().nth(2).unwrap_or_default();
        return rpc_bench::scale::serve_child(&stack);
    }
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options = Options::quick(),
            "--rounds" => {
                options.rounds = args
                    .next()
                    .and_then(|rounds| rounds.parse().ok())
                    .unwrap_or(options.rounds);
            }
            "--system" => options.system_filter = args.next(),
            "--scenario" => options.scenario_filter = args.next(),
            "--placement" => options.placement_filter = args.next(),
            other => {
                eprintln!(
                    "unknown argument `{other}`; expected --quick, --rounds N, --system NAME, --scenario NAME, --placement NAME"
                );
                std::process::exit(2);
            }
        }
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|name| name.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    println!(
        "machine: {} CPU(s), {cpu}; client and server: one tokio worker each",
        rpc_bench::os::available_cpus()
    );
    let report = rpc_bench::run(&options)?;
    println!("{report}");
    // The parts after the table run with no filter, or when `--scenario` names them
    // (`http`, `scale`, `compression`).
    let part = |name: &str| {
        options.system_filter.is_none()
            && options.placement_filter.is_none()
            && options
                .scenario_filter
                .as_deref()
                .is_none_or(|filter| filter == name)
    };
    if part("http") {
        let http = rpc_bench::http::run(&options)?;
        let failures = http.rpc_http.failures + http.axum.failures;
        print_part(
            &http,
            failures,
            "HTTP requests returned a wrong result or failed",
        );
    }
    if part("scale") {
        let scale = rpc_bench::scale::run(&options, &std::env::current_exe()?)?;
        print_part(
            &scale,
            scale.failures(),
            "calls at scale returned a wrong result",
        );
    }
    if part("compression") {
        let compression = rpc_bench::compress::run(&options)?;
        let failures = compression.plain.failures + compression.lz4.failures;
        print_part(
            &compression,
            failures,
            "echoes with or without compression came back wrong",
        );
    }
    if report.failures() > 0 {
        eprintln!(
            "{} calls returned a wrong result or failed",
            report.failures()
        );
        std::process::exit(1);
    }
    Ok(())
}

/// Prints a part's report, and exits with `wrong` when any of its calls failed.
fn print_part(report: &impl std::fmt::Display, failures: usize, wrong: &str) {
    println!("{report}");
    if failures > 0 {
        eprintln!("{wrong}");
        std::process::exit(1);
    }
}
