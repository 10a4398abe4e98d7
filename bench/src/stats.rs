//! Latency histograms (HDR, microseconds) and the report every command prints: a table
//! for people, or JSON (`--json`) for scripts.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use strait_client::ProducerStats;

/// Percentiles of one latency histogram, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// A latency histogram from 1 µs to 10 min.
pub struct Latency(Histogram<u64>);

impl Latency {
    pub fn new() -> Latency {
        Latency(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"))
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, 600_000_000);
        let _ = self.0.record(micros);
    }

    pub fn add(&mut self, other: &Latency) {
        let _ = self.0.add(&other.0);
    }

    pub fn percentiles(&self) -> Percentiles {
        let q = |q: f64| self.0.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            count: self.0.len(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: self.0.max() as f64 / 1000.0,
        }
    }
}

/// The result of one run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub command: String,
    pub machine: String,
    pub settings: String,
    pub seconds: f64,
    pub records: u64,
    pub bytes: u64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    /// Produce to acknowledgement (from the intended send time at a fixed rate).
    pub ack_latency_ms: Option<Percentiles>,
    /// Produce to consumption.
    pub e2e_latency_ms: Option<Percentiles>,
    /// Produces that failed (counted; the first is printed).
    pub errors: u64,
    /// How the producers batched (a produce run only).
    pub batching: Option<Batching>,
    /// At a fixed rate: due time to the hand-over of each record to the producer.
    pub send_lag_ms: Option<Percentiles>,
    /// Acknowledgement latency per interval of due time (`--timeline-ms`).
    pub ack_timeline: Option<Vec<crate::timeline::Interval>>,
    /// The brokers' CPU and memory over the run (brokers on this machine only).
    pub brokers: Vec<crate::usage::BrokerUsage>,
    /// Spans in which this machine's disks had requests waiting and completed none.
    pub disk_stalls: Option<crate::disk_stalls::DiskStalls>,
    /// How busy the machine's cores were over the run, and the benchmark's own share.
    pub cpu: Option<crate::usage::MachineCpu>,
    /// The machine's limits measured in the same run (`--limits`).
    pub limits: Option<crate::limits::Limits>,
    /// Replicas per partition, for the share of the disk a produce run used (0: not a
    /// produce run).
    pub replication_factor: u32,
}

/// How the producers batched their records: produce requests and batches sent (a
/// batch counts once however many attempts it took), and their average size.
#[derive(Debug, Clone, Serialize)]
pub struct Batching {
    pub requests: u64,
    pub batches: u64,
    pub records_per_batch: f64,
    pub bytes_per_batch: f64,
}

impl Batching {
    pub fn new(sent: &ProducerStats) -> Batching {
        let per = |n: u64| n as f64 / sent.batches.max(1) as f64;
        Batching {
            requests: sent.requests,
            batches: sent.batches,
            records_per_batch: per(sent.records),
            bytes_per_batch: per(sent.batch_bytes),
        }
    }
}

impl Report {
    /// Takes in what the run's [`crate::usage::UsageProbe`] measured.
    pub fn set_usage(&mut self, usage: crate::usage::Usage) {
        self.brokers = usage.brokers;
        self.disk_stalls = usage.disk_stalls;
        self.cpu = usage.cpu;
    }

    pub fn print(&self, json: bool) {
        if json {
            match serde_json::to_string_pretty(self) {
                Ok(text) => println!("{text}"),
                Err(err) => eprintln!("cannot encode the report: {err}"),
            }
            return;
        }
        println!("strait-bench {}: {}", self.command, self.settings);
        println!("machine: {}", self.machine);
        println!(
            "throughput: {:.0} records/s, {:.1} MB/s ({} records, {:.1} MB in {:.2} s)",
            self.records_per_sec,
            self.mb_per_sec,
            self.records,
            self.bytes as f64 / 1e6,
            self.seconds
        );
        for (name, p) in [
            ("ack latency", &self.ack_latency_ms),
            ("end-to-end latency", &self.e2e_latency_ms),
            ("send lag, due to hand-over", &self.send_lag_ms),
        ] {
            if let Some(p) = p {
                println!(
                    "{name} (ms): p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  ({} samples)",
                    p.p50, p.p90, p.p99, p.p999, p.max, p.count
                );
            }
        }
        if let Some(timeline) = &self.ack_timeline {
            println!("ack latency by due time (ms): from, records, p50, p99, max");
            for i in timeline {
                println!(
                    "  {:>7} {:>8} {:>9.3} {:>9.3} {:>9.3}",
                    i.from_ms, i.records, i.p50_ms, i.p99_ms, i.max_ms
                );
            }
        }
        if let Some(b) = &self.batching {
            println!(
                "batches: {} sent in {} requests, {:.1} records and {:.1} KB each on average",
                b.batches,
                b.requests,
                b.records_per_batch,
                b.bytes_per_batch / 1e3
            );
        }
        if self.errors > 0 {
            println!("errors: {}", self.errors);
        }
        if let Some(limits) = &self.limits {
            println!("limits: {}", limits.describe());
            let rf = f64::from(self.replication_factor.max(1));
            if self.replication_factor > 0 {
                let own = limits.disk_write_fdatasync_mb_per_sec / rf;
                let mut line = format!(
                    "share of disk write+fdatasync / RF (every replica on this one disk): {:.0}% of the disk's own {own:.0} MB/s (O_DIRECT)",
                    100.0 * self.mb_per_sec / own
                );
                if let Some(cached) = limits.page_cache_write_fdatasync_mb_per_sec {
                    let cached = cached / rf;
                    line.push_str(&format!(
                        ", {:.0}% of {cached:.0} MB/s through the page cache",
                        100.0 * self.mb_per_sec / cached
                    ));
                }
                println!("{line}");
            }
        }
        if !self.brokers.is_empty() {
            let each: Vec<String> = self
                .brokers
                .iter()
                .map(|b| format!("{:.1}% CPU, {:.0} MiB", b.cpu_percent, b.rss_mib))
                .collect();
            println!("brokers (CPU as % of one core, RSS): {}", each.join("; "));
        }
        if let Some(cpu) = &self.cpu {
            println!(
                "machine CPU ({} cores): {:.1}% busy, {:.1}% stolen by the hypervisor; the benchmark {:.1}% of a core",
                cpu.cores, cpu.busy_percent, cpu.steal_percent, cpu.bench_percent
            );
        }
        if let Some(stalls) = &self.disk_stalls {
            println!(
                "disk stalls (requests waiting, none completed): longest {:.0} ms, {} of 50 ms or more",
                stalls.longest_ms, stalls.over_50ms
            );
        }
    }
}

/// The machine's cores and memory, for every report's header.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!("{cores} cores, {:.1} GiB", mem_kib as f64 / 1024.0 / 1024.0)
}
