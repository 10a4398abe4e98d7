//! `strait-bench`: drives a running cluster and reports throughput and acknowledgement
//! latency percentiles (HDR histogram). Build it with `--release`; figures from a debug
//! build say nothing.

use std::time::{Duration, Instant};

mod storage;

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use strait_client::{Client, ClientConfig, ClientError, ProducerConfig, ProducerRecord};

#[derive(Parser)]
#[command(name = "strait-bench", about = "Benchmarks a Strait cluster")]
struct Cli {
    /// Comma-separated broker addresses.
    #[arg(
        long,
        env = "STRAIT_BROKERS",
        default_value = "127.0.0.1:9701,127.0.0.1:9702,127.0.0.1:9703",
        value_delimiter = ','
    )]
    brokers: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Partition log append (with fdatasync per batch) and read speed against the raw
    /// disk, in the current directory. Needs no cluster.
    Storage {
        #[arg(long, default_value_t = 2000)]
        batches: u64,
        /// Bytes per batch.
        #[arg(long, default_value_t = 256 * 1024)]
        batch_bytes: usize,
        #[arg(long, default_value_t = 256)]
        records_per_batch: u32,
    },
    /// Produce records as fast as the in-flight window allows (acks=all).
    Produce {
        #[arg(long, default_value = "bench")]
        topic: String,
        #[arg(long, default_value_t = 3)]
        partitions: u32,
        #[arg(long, default_value_t = 3)]
        replicas: u32,
        /// Records to produce.
        #[arg(long, default_value_t = 100_000)]
        records: u64,
        /// Value size in bytes.
        #[arg(long, default_value_t = 1024)]
        record_size: usize,
        /// Records awaiting acknowledgement at once (1 = one at a time).
        #[arg(long, default_value_t = 1000)]
        in_flight: usize,
        #[arg(long, default_value_t = 5)]
        linger_ms: u64,
        #[arg(long, default_value_t = 512 * 1024)]
        batch_bytes: usize,
    },
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
        })
        .unwrap_or(0);
    format!("{cores} cores, {:.1} GiB", mem_kib as f64 / 1024.0 / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Storage {
            batches,
            batch_bytes,
            records_per_batch,
        } => {
            println!("machine: {}", machine());
            storage::run(storage::StorageArgs {
                batches,
                batch_bytes,
                records_per_batch,
            })?;
        }
        Command::Produce {
            topic,
            partitions,
            replicas,
            records,
            record_size,
            in_flight,
            linger_ms,
            batch_bytes,
        } => {
            let client = Client::connect(ClientConfig::new(cli.brokers.clone()))
                .await
                .context("connecting to the cluster")?;
            match client.create_topic(&topic, partitions, replicas).await {
                Ok(_) | Err(ClientError::TopicAlreadyExists(_)) => {}
                Err(err) => return Err(err.into()),
            }
            client
                .wait_for_leaders(&topic, Duration::from_secs(30))
                .await?;
            let producer = client.producer(ProducerConfig {
                linger: Duration::from_millis(linger_ms),
                batch_max_bytes: batch_bytes,
                ..Default::default()
            });
            let value = Bytes::from(vec![b'x'; record_size]);
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut pending = FuturesUnordered::new();
            let started = Instant::now();
            let mut last_report = Instant::now();
            let mut acked = 0u64;
            let mut sent = 0u64;
            println!(
                "strait-bench produce: machine {}; topic {topic} ({partitions} partitions, RF {replicas}); {records} records of {record_size} B; in-flight {in_flight}",
                machine()
            );
            while acked < records {
                while sent < records && pending.len() < in_flight.max(1) {
                    let t0 = Instant::now();
                    let delivery = producer
                        .send(&topic, ProducerRecord::new(value.clone()))
                        .await?;
                    pending.push(async move { (t0, delivery.await) });
                    sent += 1;
                }
                if let Some((t0, result)) = pending.next().await {
                    result?;
                    latency.record(t0.elapsed().as_micros().max(1) as u64)?;
                    acked += 1;
                }
                if last_report.elapsed() >= Duration::from_secs(1) {
                    last_report = Instant::now();
                    let secs = started.elapsed().as_secs_f64();
                    eprintln!(
                        "  {acked} acked, {:.0} records/s, p99 {:.2} ms",
                        acked as f64 / secs,
                        latency.value_at_quantile(0.99) as f64 / 1000.0
                    );
                }
            }
            let secs = started.elapsed().as_secs_f64();
            let mb = (records as f64 * record_size as f64) / 1_000_000.0;
            println!(
                "throughput: {:.0} records/s, {:.1} MB/s ({records} records in {secs:.2} s)",
                records as f64 / secs,
                mb / secs
            );
            println!("ack latency (ms):");
            for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
                println!(
                    "  {name:>6} {:>9.3}",
                    latency.value_at_quantile(q) as f64 / 1000.0
                );
            }
            println!("  {:>6} {:>9.3}", "max", latency.max() as f64 / 1000.0);
        }
    }
    Ok(())
}
