//! `strait dev`: a local cluster of real `strait-broker` processes on loopback. It stays
//! in the foreground; Ctrl-C stops every broker cleanly. The same data directory brings
//! the same cluster back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use strait_client::{ClientError, OffsetSpec, ProducerRecord};

#[derive(Args)]
pub struct DevArgs {
    /// Number of brokers (the first three, at most, are controller voters).
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Where the brokers keep their data and logs.
    #[arg(long, default_value = ".strait-dev")]
    data_dir: PathBuf,
    /// Port of broker 1; broker N listens on base-port + N - 1.
    #[arg(long, default_value_t = 9701)]
    base_port: u16,
    /// Once the cluster is up, create topic `demo`, produce a few records and consume them.
    #[arg(long)]
    demo: bool,
}

struct Broker {
    id: u16,
    addr: String,
    log: PathBuf,
    child: Child,
    reported_exit: bool,
}

/// Finds `strait-broker` beside this executable, else on the PATH.
fn broker_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("strait-broker")))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("strait-broker"))
}

fn spawn_broker(
    binary: &Path,
    id: u16,
    addr: &str,
    seeds: &str,
    dir: &Path,
    workers: usize,
) -> anyhow::Result<Broker> {
    let data = dir.join(format!("broker-{id}"));
    let log = dir.join(format!("broker-{id}.log"));
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    let child = Command::new(binary)
        .arg(format!("--id={id}"))
        .arg(format!("--listen={addr}"))
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--seeds={seeds}"))
        .arg(format!("--worker-threads={workers}"))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Ok(Broker {
        id,
        addr: addr.to_string(),
        log,
        child,
        reported_exit: false,
    })
}

pub async fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let last_port = u32::from(args.base_port) + u32::from(args.nodes) - 1;
    if last_port > u32::from(u16::MAX) {
        bail!(
            "--base-port {} leaves no room for {} brokers",
            args.base_port,
            args.nodes
        );
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let addrs: Vec<String> = (0..args.nodes)
        .map(|i| format!("127.0.0.1:{}", args.base_port + i))
        .collect();
    let seeds = addrs.iter().take(3).cloned().collect::<Vec<_>>().join(",");
    // The brokers share this machine: each gets its share of the cores (at least one)
    // for its async work, rather than a thread per core each.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = (cores / usize::from(args.nodes)).max(1);
    let binary = broker_binary();
    let mut brokers = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        match spawn_broker(&binary, i as u16 + 1, addr, &seeds, &args.data_dir, workers) {
            Ok(broker) => brokers.push(broker),
            Err(err) => {
                stop_all(&mut brokers);
                return Err(err);
            }
        }
    }
    println!(
        "strait dev: {} brokers (data in {})",
        brokers.len(),
        args.data_dir.display()
    );
    for b in &brokers {
        println!(
            "  broker {} at {}  (log: {})",
            b.id,
            b.addr,
            b.log.display()
        );
    }
    let outcome = async {
        let client = wait_until_ready(&addrs, &mut brokers).await?;
        println!("cluster ready: brokers {}", addrs.join(","));
        if args.demo {
            demo(&client, args.nodes).await?;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(err) = outcome {
        stop_all(&mut brokers);
        return Err(err);
    }
    println!("press Ctrl-C to stop the cluster");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                for b in &mut brokers {
                    if !b.reported_exit && let Ok(Some(status)) = b.child.try_wait() {
                        // A dev cluster is for experiments, killing brokers included: report
                        // the exit and keep the others running.
                        eprintln!("broker {} exited ({status}); the others keep running; see {}", b.id, b.log.display());
                        b.reported_exit = true;
                    }
                }
            }
        }
    }
    println!("stopping...");
    stop_all(&mut brokers);
    println!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn wait_until_ready(
    addrs: &[String],
    brokers: &mut [Broker],
) -> anyhow::Result<strait_client::Client> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        for b in brokers.iter_mut() {
            if let Ok(Some(status)) = b.child.try_wait() {
                bail!(
                    "broker {} exited during start-up ({status}); see {}",
                    b.id,
                    b.log.display()
                );
            }
        }
        let config = strait_client::ClientConfig::new(addrs.iter().cloned());
        if let Ok(client) = strait_client::Client::connect(config).await
            && let Ok(status) = client.cluster_status().await
            && status.controller_id.is_some()
            && status.brokers.iter().filter(|b| b.alive).count() == addrs.len()
        {
            return Ok(client);
        }
        if Instant::now() > deadline {
            bail!("the cluster did not become ready within 90 s; see the broker logs");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn demo(client: &strait_client::Client, nodes: u16) -> anyhow::Result<()> {
    let replicas = u32::from(nodes.min(3));
    match client.create_topic("demo", 3, replicas).await {
        Ok(_) => println!("demo: created topic `demo` (3 partitions, {replicas} replicas)"),
        Err(ClientError::TopicAlreadyExists(_)) => println!("demo: topic `demo` exists already"),
        Err(err) => return Err(err.into()),
    }
    client
        .wait_for_leaders("demo", Duration::from_secs(30))
        .await?;
    let producer = client.producer(Default::default());
    let mut deliveries = Vec::new();
    for i in 0..6 {
        let record = ProducerRecord::new(format!("hello from strait #{i}")).key(format!("key-{i}"));
        deliveries.push(producer.send("demo", record).await?);
    }
    let mut produced = Vec::new();
    for delivery in deliveries {
        let meta = delivery.await?;
        println!(
            "demo: produced to partition {} offset {}",
            meta.partition, meta.offset
        );
        produced.push(meta);
    }
    for meta in &produced {
        let mut consumer = strait_client::PartitionConsumer::new(
            client.clone(),
            "demo",
            meta.partition,
            OffsetSpec::At(meta.offset),
            Default::default(),
        )
        .await?;
        if let Some(record) = consumer.poll().await?.first() {
            println!(
                "demo: consumed partition {} offset {}: {}",
                record.partition,
                record.offset,
                String::from_utf8_lossy(&record.value)
            );
        }
    }
    Ok(())
}

/// Stops the brokers one at a time (SIGTERM, then SIGKILL after 15 s), so that each can
/// hand its leaderships to brokers still running.
fn stop_all(brokers: &mut Vec<Broker>) {
    for b in brokers.iter_mut() {
        if matches!(b.child.try_wait(), Ok(Some(_))) {
            continue;
        }
        // SAFETY: kill(2) with a child's pid and a valid signal number has no memory effects.
        unsafe {
            libc::kill(b.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match b.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    eprintln!("broker {} did not stop in time; killing it", b.id);
                    let _ = b.child.kill();
                    let _ = b.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    brokers.clear();
}
