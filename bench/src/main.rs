//! `strait-bench`: drives a Strait cluster (a running one, or `--local N` brokers it
//! starts itself) and reports throughput and latency percentiles from HDR histograms:
//! `produce` (acknowledgement latency), `consume` (reading a backlog from the start),
//! `e2e` (produce-to-consume latency), and `storage` (the partition log against the raw
//! disk, no cluster). Build it with `--release`; debug-build figures say nothing.

mod consume;
mod disk_stalls;
mod fault;
mod limits;
mod pacer;
mod payload;
mod produce;
mod stats;
mod storage;
mod timeline;
mod usage;

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use strait_client::{Client, ClientConfig, ClientError};
use strait_tests::Cluster;

use crate::produce::LoadArgs;
use crate::stats::{Batching, Latency, Report, machine};
use crate::usage::UsageProbe;

#[derive(Parser)]
#[command(name = "strait-bench", about = "Benchmarks a Strait cluster")]
struct Cli {
    /// Threads running the benchmark's own async work (load, acknowledgements,
    /// consumers). One keeps the load generator's share of a small shared machine
    /// small; 0 = one per core. Reading a backlog at over 1 GB/s wants more.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

/// Where to run and on which topic.
#[derive(Args, Debug, Clone)]
struct Target {
    /// Comma-separated broker addresses of a running cluster.
    #[arg(
        long,
        env = "STRAIT_BROKERS",
        default_value = "127.0.0.1:9701,127.0.0.1:9702,127.0.0.1:9703",
        value_delimiter = ','
    )]
    brokers: Vec<String>,
    /// Start this many brokers on loopback ports (release binaries beside this one)
    /// instead of using --brokers; they stop when the run ends.
    #[arg(long)]
    local: Option<usize>,
    /// With --local: one more flag for every broker (repeatable, e.g.
    /// `--broker-arg=--replication-streams=0`).
    #[arg(long = "broker-arg", allow_hyphen_values = true)]
    broker_args: Vec<String>,
    #[arg(long, default_value = "bench")]
    topic: String,
    #[arg(long, default_value_t = 3)]
    partitions: u32,
    #[arg(long, default_value_t = 3)]
    replicas: u32,
    /// Topic config overrides for the topic the run creates, as key=value (repeatable),
    /// e.g. `--config flush=async`.
    #[arg(long = "config", value_parser = parse_config)]
    configs: Vec<(String, String)>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Measure the machine's limits (disk write + fdatasync, loopback TCP, memcpy) first,
    /// and report the results beside them.
    #[arg(long)]
    limits: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Produce with acks=all: throughput and acknowledgement latency.
    Produce {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        fault: fault::FaultArgs,
    },
    /// Read the topic from the start to its end (fill it first with --fill-records):
    /// consume throughput.
    Consume {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1)]
        consumers: u32,
        /// Bytes asked per fetch (the broker caps it at 8 MiB).
        #[arg(long, default_value_t = 8 * 1024 * 1024)]
        fetch_bytes: u32,
        /// Produce this many records first (unmeasured), with the load settings below.
        #[arg(long, default_value_t = 0)]
        fill_records: u64,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Produce while consumers follow the end of the log: acknowledgement and
    /// end-to-end latency (use --rate for latency at a fixed load).
    E2e {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1)]
        consumers: u32,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// An idle cluster holding the topic (create it with many partitions): what each
    /// broker costs doing nothing but keeping its partitions alive.
    Idle {
        #[command(flatten)]
        target: Target,
        /// Seconds to measure, after the partitions are all in sync.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// The machine's physical limits: disk write + fdatasync, loopback TCP, memcpy.
    Limits,
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
}

/// The tokio worker threads of each of `brokers` brokers sharing this machine: an even
/// share of its cores, at least one. More workers than cores only trade wake-ups.
fn cores_per_broker(brokers: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / brokers.max(1)).max(1)
}

/// A connected client, and the local cluster it talks to when `--local` asked for one.
async fn connect(target: &Target) -> anyhow::Result<(Client, Option<Cluster>)> {
    let (addrs, cluster) = match target.local {
        Some(n) => {
            let mut options = strait_tests::ClusterOptions::default();
            let mut args = target.broker_args.clone();
            // Brokers sharing the machine each get their share of its cores (as `strait
            // dev` gives them), unless told otherwise.
            let share = (!args.iter().any(|a| a.starts_with("--worker-threads")))
                .then(|| cores_per_broker(n));
            if let Some(workers) = share {
                args.push(format!("--worker-threads={workers}"));
            }
            for id in 1..=n as u64 {
                options.extra_args.insert(id, args.clone());
            }
            let cluster = Cluster::start_with(n, options)
                .await
                .context("starting local brokers")?;
            let threads = share.map_or("threads as --broker-arg says".into(), |w| {
                format!("{w} worker thread(s) each")
            });
            eprintln!(
                "started {n} local brokers ({threads}): {}",
                cluster.addrs().join(",")
            );
            (cluster.addrs(), Some(cluster))
        }
        None => (target.brokers.clone(), None),
    };
    let client = Client::connect(ClientConfig::new(addrs))
        .await
        .context("connecting to the cluster")?;
    let configs = target.configs.iter().cloned().collect();
    match client
        .create_topic_with_configs(&target.topic, target.partitions, target.replicas, configs)
        .await
    {
        Ok(_) | Err(ClientError::TopicAlreadyExists(_)) => {}
        Err(err) => return Err(err.into()),
    }
    client
        .wait_for_leaders(&target.topic, Duration::from_secs(30))
        .await?;
    Ok((client, cluster))
}

/// Waits until every partition of `topic` has all its replicas in sync (elections
/// settled), up to two minutes.
async fn wait_in_sync(client: &Client, topic: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let info = client.topic(topic).await?;
        let lagging = info
            .partitions
            .iter()
            .filter(|p| p.leader.is_none() || p.isr.len() < p.replicas.len())
            .count();
        if lagging == 0 {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("{lagging} partitions of {topic} still not in sync after 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The machine's limits, when `--limits` asked for them (measured before any broker
/// starts, so that nothing else competes).
fn measure_limits(target: &Target) -> anyhow::Result<Option<limits::Limits>> {
    if !target.limits {
        return Ok(None);
    }
    eprintln!("measuring the machine's limits (about 25 s)");
    Ok(Some(limits::measure(&std::env::temp_dir())?))
}

fn describe(target: &Target) -> String {
    let mut out = format!(
        "topic {} ({} partitions, RF {})",
        target.topic, target.partitions, target.replicas
    );
    for (key, value) in &target.configs {
        out.push_str(&format!(", {key}={value}"));
    }
    out
}

/// `key=value`, as `--config` takes it.
fn parse_config(arg: &str) -> Result<(String, String), String> {
    arg.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{arg}` is not key=value"))
}

fn report(command: &str, settings: String, records: u64, bytes: u64, seconds: f64) -> Report {
    Report {
        command: command.to_string(),
        machine: machine(),
        settings,
        seconds,
        records,
        bytes,
        records_per_sec: records as f64 / seconds.max(1e-9),
        mb_per_sec: bytes as f64 / 1e6 / seconds.max(1e-9),
        ack_latency_ms: None,
        e2e_latency_ms: None,
        errors: 0,
        batching: None,
        send_lag_ms: None,
        ack_timeline: None,
        brokers: Vec::new(),
        disk_stalls: None,
        cpu: None,
        limits: None,
        replication_factor: 0,
    }
}

/// The report of a run that produced: throughput, acknowledgement latency, errors,
/// the brokers' cost and the machine's limits.
fn produced_report(
    command: &str,
    settings: String,
    produced: &produce::Produced,
    target: &Target,
    usage: &UsageProbe,
    limits: Option<limits::Limits>,
) -> Report {
    let mut out = report(
        command,
        settings,
        produced.records,
        produced.bytes,
        produced.seconds,
    );
    out.ack_latency_ms = Some(produced.latency.percentiles());
    out.errors = produced.errors;
    out.batching = Some(Batching::new(&produced.sent));
    out.send_lag_ms = produced.send_lag.as_ref().map(Latency::percentiles);
    out.ack_timeline = produced.timeline.clone();
    out.set_usage(usage.finish());
    out.limits = limits;
    out.replication_factor = target.replicas;
    out
}

/// Starts measuring the brokers: those of the local cluster, or every broker process on
/// this machine.
fn probe(cluster: &Option<Cluster>) -> UsageProbe {
    let pids: Vec<u32> = cluster
        .iter()
        .flat_map(|c| c.brokers.iter().filter_map(|b| b.pid()))
        .collect();
    UsageProbe::start(&pids)
}

/// Heap the benchmark writes once before its load (split over its worker threads).
const PRETOUCH_MIB: usize = 64;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if cli.threads > 0 {
        runtime.worker_threads(cli.threads);
    }
    // The load's own buffers page-faulted before it starts, as the brokers' are
    // (`pretouch-mib`): otherwise its first fraction of a second pays for them.
    strait_broker::pretouch::install(&mut runtime, PRETOUCH_MIB, cli.threads);
    runtime
        .build()
        .context("starting the tokio runtime")?
        .block_on(run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
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
        Command::Limits => {
            println!("machine: {}", machine());
            println!("{}", limits::measure(&std::env::temp_dir())?.describe());
        }
        Command::Produce {
            target,
            load,
            fault,
        } => {
            let limits = measure_limits(&target)?;
            let (client, mut cluster) = connect(&target).await?;
            let mut settings = format!("{}; {}", describe(&target), load.describe());
            eprintln!("strait-bench produce: {settings}; machine {}", machine());
            let usage = probe(&cluster);
            let (produced, faulted) = tokio::join!(
                produce::run(&client, &target.topic, &load, load.warmup_end()),
                fault::run(fault, cluster.as_mut(), &client, &target.topic)
            );
            let produced = produced?;
            if let Some(what) = faulted? {
                settings.push_str(&format!("; {what}"));
            }
            produced_report("produce", settings, &produced, &target, &usage, limits)
                .print(target.json);
        }
        Command::Consume {
            target,
            consumers,
            fetch_bytes,
            fill_records,
            load,
        } => {
            let limits = measure_limits(&target)?;
            let (client, cluster) = connect(&target).await?;
            if fill_records > 0 {
                eprintln!("filling {} with {fill_records} records", target.topic);
                let fill = LoadArgs {
                    records: fill_records,
                    duration: None,
                    ..load
                };
                produce::run(&client, &target.topic, &fill, fill.warmup_end()).await?;
            }
            let settings = format!(
                "{}; {consumers} consumer(s), {fetch_bytes} B per fetch, from the start",
                describe(&target)
            );
            eprintln!("strait-bench consume: {settings}; machine {}", machine());
            let usage = probe(&cluster);
            let consumed = consume::backlog(
                &client,
                &target.topic,
                target.partitions,
                consumers,
                fetch_bytes,
            )
            .await?;
            let mut out = report(
                "consume",
                settings,
                consumed.records,
                consumed.bytes,
                consumed.seconds,
            );
            out.set_usage(usage.finish());
            out.limits = limits;
            out.print(target.json);
        }
        Command::E2e {
            target,
            consumers,
            load,
        } => {
            let limits = measure_limits(&target)?;
            let (client, cluster) = connect(&target).await?;
            let settings = format!(
                "{}; {}; {consumers} consumer(s)",
                describe(&target),
                load.describe()
            );
            eprintln!("strait-bench e2e: {settings}; machine {}", machine());
            // One warm-up for both: the consumers compare it with the due time stamped
            // into each value.
            let measured_from = load.warmup_end();
            let followers = consume::Followers::start(
                &client,
                &target.topic,
                target.partitions,
                consumers,
                produce::wall_micros(measured_from),
            )
            .await?;
            let usage = probe(&cluster);
            let produced = produce::run(&client, &target.topic, &load, measured_from).await?;
            let consumed = followers.finish().await?;
            let mut out = produced_report("e2e", settings, &produced, &target, &usage, limits);
            out.e2e_latency_ms = Some(consumed.latency.percentiles());
            out.print(target.json);
        }
        Command::Idle { target, seconds } => {
            let (client, cluster) = connect(&target).await?;
            wait_in_sync(&client, &target.topic).await?;
            let settings = format!("{}; idle for {seconds} s", describe(&target));
            eprintln!("strait-bench idle: {settings}; machine {}", machine());
            let usage = probe(&cluster);
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let mut out = report("idle", settings, 0, 0, seconds as f64);
            out.set_usage(usage.finish());
            out.print(target.json);
        }
    }
    Ok(())
}
