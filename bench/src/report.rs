//! The medians of a run, printed as one markdown table per transport with ratios.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::systems::{Net, Stack, System};
use crate::{Options, Placement, Sample, Scenario};

/// Everything one run measured.
#[derive(Debug)]
pub struct Report {
    options: Options,
    samples: HashMap<(Placement, Scenario, System), Vec<Sample>>,
    allocations: HashMap<System, f64>,
    idle_memory: HashMap<System, f64>,
}

impl Report {
    pub(crate) fn new(options: Options) -> Self {
        Report {
            options,
            samples: HashMap::new(),
            allocations: HashMap::new(),
            idle_memory: HashMap::new(),
        }
    }

    pub(crate) fn record(
        &mut self,
        placement: Placement,
        scenario: Scenario,
        system: System,
        sample: Sample,
    ) {
        self.samples
            .entry((placement, scenario, system))
            .or_default()
            .push(sample);
    }

    pub(crate) fn record_allocations(&mut self, system: System, per_call: f64) {
        self.allocations.insert(system, per_call);
    }

    pub(crate) fn record_idle_memory(&mut self, system: System, bytes: f64) {
        self.idle_memory.insert(system, bytes);
    }

    /// Calls that returned a wrong result or none, over the whole run (must be 0).
    pub fn failures(&self) -> usize {
        self.samples
            .values()
            .flatten()
            .map(|sample| sample.failures)
            .sum()
    }

    /// How many measurements were taken.
    pub fn measurements(&self) -> usize {
        self.samples.values().map(Vec::len).sum()
    }

    fn median(
        &self,
        placement: Placement,
        scenario: Scenario,
        system: System,
        metric: Metric,
    ) -> Option<f64> {
        let samples = self.samples.get(&(placement, scenario, system))?;
        let mut values: Vec<f64> = samples.iter().map(|sample| metric.of(sample)).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied()
    }
}

#[derive(Debug, Clone, Copy)]
enum Metric {
    CpuPerCall,
    CallsPerSecond,
    P50,
    P99,
    BytesPerSecond,
}

impl Metric {
    fn of(self, sample: &Sample) -> f64 {
        match self {
            Metric::CpuPerCall => micros(sample.cpu_per_call),
            Metric::CallsPerSecond => sample.calls_per_second,
            Metric::P50 => micros(sample.p50),
            Metric::P99 => micros(sample.p99),
            Metric::BytesPerSecond => sample.bytes_per_second,
        }
    }

    fn format(self, value: f64) -> String {
        match self {
            Metric::CpuPerCall | Metric::P50 | Metric::P99 => format!("{value:.2} µs"),
            Metric::CallsPerSecond => format!("{:.0} k/s", value / 1e3),
            Metric::BytesPerSecond => format!("{:.2} GB/s", value / 1e9),
        }
    }
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

struct Row {
    label: String,
    values: [Option<f64>; 4],
    format: Box<dyn Fn(f64) -> String>,
}

const STACKS: [Stack; 4] = [Stack::Raw, Stack::Ours, Stack::Tarpc, Stack::Tonic];

impl Report {
    fn rows(&self, net: Net) -> Vec<Row> {
        let mut rows = Vec::new();
        let placements: &[(Placement, &str)] = if net == Net::InProcess {
            &[(Placement::OneCpu, "one runtime")]
        } else {
            &[
                (Placement::OneCpu, "one CPU"),
                (Placement::SeparateCpus, "separate CPUs"),
                (Placement::PlainRuntime, "plain #[tokio::main] runtime"),
            ]
        };
        let figures: [(Scenario, Metric, &str); 10] = [
            (
                Scenario::InFlight(64),
                Metric::CpuPerCall,
                "CPU per call, 64 in flight",
            ),
            (
                Scenario::InFlight(64),
                Metric::CallsPerSecond,
                "calls/s, 64 in flight",
            ),
            (Scenario::Latency, Metric::P50, "latency p50, 1 in flight"),
            (Scenario::Latency, Metric::P99, "latency p99, 1 in flight"),
            (
                Scenario::InFlight(256),
                Metric::CallsPerSecond,
                "calls/s, 256 in flight",
            ),
            (
                Scenario::InFlight(256),
                Metric::CpuPerCall,
                "CPU per call, 256 in flight",
            ),
            (
                Scenario::Connections(8, 32),
                Metric::CallsPerSecond,
                "calls/s, 8 connections × 32",
            ),
            (
                Scenario::Connections(8, 32),
                Metric::CpuPerCall,
                "CPU per call, 8 connections × 32",
            ),
            (Scenario::Bulk, Metric::BytesPerSecond, "bulk 1 MiB echo"),
            (
                Scenario::BulkShared,
                Metric::BytesPerSecond,
                "bulk 1 MiB echo of `Bytes`",
            ),
        ];
        for (scenario, metric, label) in figures {
            for (placement, where_) in placements {
                let values = STACKS
                    .map(|stack| self.median(*placement, scenario, System { stack, net }, metric));
                // Not every placement measures every figure.
                if values.iter().all(Option::is_none) {
                    continue;
                }
                rows.push(Row {
                    label: format!("{label}, {where_}"),
                    values,
                    format: Box::new(move |value| metric.format(value)),
                });
            }
        }
        rows.push(Row {
            label: "allocations per call (both sides)".to_owned(),
            values: STACKS.map(|stack| self.allocations.get(&System { stack, net }).copied()),
            format: Box::new(|value| format!("{value:.1}")),
        });
        rows.push(Row {
            label: "heap per idle connection (both sides)".to_owned(),
            values: STACKS.map(|stack| self.idle_memory.get(&System { stack, net }).copied()),
            format: Box::new(|value| format!("{:.1} KiB", value / 1024.0)),
        });
        rows
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} round(s); medians. Ratios are ours ÷ the other (below 1 is less time or CPU, above 1 is more throughput).",
            self.options.rounds
        )?;
        for net in [Net::Tcp, Net::Unix, Net::InProcess] {
            writeln!(f)?;
            writeln!(f, "### {net}")?;
            writeln!(f)?;
            writeln!(
                f,
                "| figure | raw sockets (limit) | ours | tarpc 0.38 | tonic 0.13 | ours ÷ tarpc | ours ÷ tonic | ours ÷ raw |"
            )?;
            writeln!(f, "|---|---|---|---|---|---|---|---|")?;
            for row in self.rows(net) {
                let cell = |value: Option<f64>| value.map_or_else(|| "–".to_owned(), &row.format);
                let ratio = |other: Option<f64>| match (row.values[1], other) {
                    (Some(ours), Some(other)) if other > 0.0 => format!("{:.2}×", ours / other),
                    _ => "–".to_owned(),
                };
                writeln!(
                    f,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    row.label,
                    cell(row.values[0]),
                    cell(row.values[1]),
                    cell(row.values[2]),
                    cell(row.values[3]),
                    ratio(row.values[2]),
                    ratio(row.values[3]),
                    ratio(row.values[0]),
                )?;
            }
        }
        Ok(())
    }
}
