//! One run: a three-broker cluster behind link proxies, a topic, the workload, a
//! sequence of fault episodes (inject, hold, heal, time the recovery), then the final
//! reads, the replica comparison and the checker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use strait_client::{Client, ClientConfig, ProducerRecord};
use strait_tests::{Cluster, ClusterOptions, free_ports, read_partition, wait_until};

use crate::checker::{self, Findings};
use crate::faults::{self, FaultKind, Target};
use crate::history::{FaultEvent, History, Outcome, ProduceOp};
use crate::net::Network;
use crate::replicas;
use crate::report::Report;
use crate::workload::{Workload, WorkloadConfig};

const TOPIC: &str = "chaos";
const BROKERS: u64 = 3;
/// Each broker's disk (a tmpfs) when a run fills disks.
const DISK_BYTES: u64 = 256 * 1024 * 1024;
/// Producer id of the probes that time recovery.
const PROBE: u32 = 9999;
/// Numbers probe values, unique within the process.
static PROBE_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub seed: u64,
    /// Fault kinds to draw from.
    pub faults: Vec<FaultKind>,
    /// Run until this much time has passed (random faults); `None`: each kind once.
    pub duration: Option<Duration>,
    /// How long a fault stays injected, at least / at most.
    pub hold: (Duration, Duration),
    pub partitions: u32,
    pub producers: u32,
    pub consumers: u32,
    /// Assert no duplicates (producers are idempotent: each record is written once).
    pub strict_duplicates: bool,
    /// How long the cluster may take to take writes on every partition after a heal.
    pub recovery_deadline: Duration,
    /// Keep the history, data and logs even when every check holds.
    pub keep: bool,
    /// More flags for every broker.
    pub broker_args: Vec<String>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            seed: 1,
            faults: FaultKind::ALL.to_vec(),
            duration: None,
            hold: (Duration::from_secs(3), Duration::from_secs(6)),
            partitions: 3,
            producers: 6,
            consumers: 2,
            strict_duplicates: true,
            recovery_deadline: Duration::from_secs(60),
            keep: false,
            broker_args: Vec::new(),
        }
    }
}

/// Runs `config`; the report says whether every check held.
pub async fn run(mut config: RunConfig) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut skipped = Vec::new();
    if config.faults.contains(&FaultKind::DiskFull) && !can_mount_tmpfs() {
        config.faults.retain(|k| *k != FaultKind::DiskFull);
        skipped.push("disk-full: cannot mount a tmpfs here (needs root)".to_string());
    }
    let mut rng = StdRng::seed_from_u64(config.seed);
    let base = free_ports(BROKERS as u16);
    let addrs: BTreeMap<u64, String> = (1..=BROKERS)
        .map(|id| (id, format!("127.0.0.1:{}", base + id as u16 - 1)))
        .collect();
    let net = Network::start(&addrs).await?;
    let options = ClusterOptions {
        addrs: Some(addrs.values().cloned().collect()),
        extra_args: addrs
            .keys()
            .map(|id| {
                let mut args = net.routes_for(*id, &addrs);
                args.extend(config.broker_args.iter().cloned());
                (*id, args)
            })
            .collect(),
        tmpfs_bytes: config
            .faults
            .contains(&FaultKind::DiskFull)
            .then_some(DISK_BYTES),
    };
    let mut cluster = Cluster::start_with(BROKERS as usize, options).await?;
    let client = Client::connect(ClientConfig::new(cluster.addrs())).await?;
    client
        .create_topic(TOPIC, config.partitions, BROKERS as u32)
        .await?;
    client
        .wait_for_leaders(TOPIC, Duration::from_secs(30))
        .await?;

    let history = Arc::new(History::new(config.seed));
    let workload = Workload::start(
        &client,
        TOPIC,
        WorkloadConfig {
            producers: config.producers,
            consumers: config.consumers,
            partitions: config.partitions,
        },
        history.clone(),
    );
    let mut schedule: Vec<FaultKind> = config.faults.clone();
    schedule.shuffle(&mut rng);
    let mut episode = 0usize;
    let mut failure: Option<String> = None;
    loop {
        let kind = match config.duration {
            None => match schedule.get(episode) {
                Some(kind) => *kind,
                None => break,
            },
            Some(duration) if started.elapsed() < duration => *config
                .faults
                .choose(&mut rng)
                .unwrap_or(&FaultKind::KillLeader),
            Some(_) => break,
        };
        episode += 1;
        // Calm before each fault, so that every fault hits a working cluster.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..=2000))).await;
        let mut target = Target {
            cluster: &mut cluster,
            net: &net,
            client: &client,
            topic: TOPIC,
            brokers: addrs.keys().copied().collect(),
        };
        let injected_ms = history.now_ms();
        let (detail, heal) = faults::inject(kind, &mut target, &mut rng).await;
        eprintln!("[{:>6} ms] inject {kind}: {detail}", injected_ms);
        let hold = rng.gen_range(config.hold.0..=config.hold.1);
        tokio::time::sleep(hold).await;
        faults::heal(heal, &mut target).await?;
        let healed_ms = history.now_ms();
        let recovered = wait_writable(&client, &config, &history).await;
        let recovered_ms = recovered.then(|| history.now_ms());
        eprintln!(
            "[{:>6} ms] healed {kind}; writable again after {}",
            healed_ms,
            recovered_ms.map_or("NEVER".to_string(), |r| format!("{} ms", r - healed_ms))
        );
        history.lock().faults.push(FaultEvent {
            kind: kind.name().to_string(),
            detail,
            injected_ms,
            healed_ms,
            recovered_ms,
        });
        if !recovered {
            failure = Some(format!(
                "the cluster did not take writes on every partition within {:?} after healing {kind}",
                config.recovery_deadline
            ));
            break;
        }
    }
    workload.stop(&history).await;

    // Every broker up and every link healed before the final reads.
    net.heal();
    cluster.wait_ready(Duration::from_secs(60)).await?;
    let client = Client::connect(ClientConfig::new(cluster.addrs())).await?;
    client
        .wait_for_leaders(TOPIC, Duration::from_secs(60))
        .await?;
    // Full availability: every partition led and every replica in sync again.
    let final_heal_ms = history.now_ms();
    let in_sync = wait_until(
        "every replica in sync",
        config.recovery_deadline,
        || async {
            let status = client.cluster_status().await.ok()?;
            status.under_replicated.is_empty().then_some(())
        },
    )
    .await;
    let full_recovery_ms = history.now_ms() - final_heal_ms;
    if in_sync.is_err() {
        let status = client.cluster_status().await.ok();
        failure = failure.or(Some(format!(
            "replicas still out of sync {:?} after the final heal: {:?}",
            config.recovery_deadline,
            status.map(|s| s.under_replicated)
        )));
    }
    let mut finals = Vec::new();
    for partition in 0..config.partitions {
        let records = read_partition(&client, TOPIC, partition).await?;
        finals.push(
            records
                .into_iter()
                .map(|r| (r.offset, String::from_utf8_lossy(&r.value).into_owned()))
                .collect(),
        );
    }
    // Replicas compared on disk, with every broker stopped cleanly.
    for id in addrs.keys() {
        cluster.terminate(*id, Duration::from_secs(30)).await;
    }
    let dirs: Vec<(u64, std::path::PathBuf)> = cluster
        .brokers
        .iter()
        .map(|b| (b.id, b.data_dir().to_path_buf()))
        .collect();
    let (groups_compared, divergences) = replicas::compare(&dirs)?;

    let data = history.lock();
    let mut findings: Findings = checker::check(&data, &finals, config.strict_duplicates);
    findings.violations.extend(divergences.iter().cloned());
    if let Some(failure) = failure {
        findings.violations.push(failure);
    }
    let mut report = Report::new(
        &config,
        &data,
        &findings,
        groups_compared,
        divergences.len(),
        started.elapsed(),
    );
    report.full_recovery_ms = full_recovery_ms;
    report.skipped = skipped;
    if config.keep || !findings.violations.is_empty() {
        let root = cluster.keep_files();
        let path = root.join("history.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&*data)?)?;
        report.kept = Some(root);
    }
    Ok(report)
}

/// Waits until a probe write to every partition is acknowledged (recorded in the
/// history like any produce); false after the deadline.
async fn wait_writable(client: &Client, config: &RunConfig, history: &History) -> bool {
    let producer = client.producer(strait_client::ProducerConfig {
        delivery_timeout: Duration::from_secs(5),
        ..Default::default()
    });
    let pending = std::sync::Mutex::new((0..config.partitions).collect::<Vec<u32>>());
    let result = wait_until(
        "every partition writable",
        config.recovery_deadline,
        || async {
            let partitions = pending.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let mut still = Vec::new();
            for partition in partitions {
                let seq = PROBE_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let value = format!("probe-{seq}");
                let start_ms = history.now_ms();
                let result = producer
                    .send_and_wait(
                        TOPIC,
                        ProducerRecord::new(value.clone()).partition(partition),
                    )
                    .await;
                let outcome = match &result {
                    Ok(meta) => Outcome::Acked {
                        offset: meta.offset,
                    },
                    Err(err) => Outcome::Unknown {
                        error: err.to_string(),
                    },
                };
                if result.is_err() {
                    still.push(partition);
                }
                history.lock().produces.push(ProduceOp {
                    producer: PROBE,
                    partition,
                    value,
                    start_ms,
                    end_ms: history.now_ms(),
                    outcome,
                });
            }
            let done = still.is_empty();
            *pending.lock().unwrap_or_else(|e| e.into_inner()) = still;
            done.then_some(())
        },
    )
    .await;
    result.is_ok()
}

/// Whether this process may mount a tmpfs (the disk-full fault needs one per broker).
fn can_mount_tmpfs() -> bool {
    let Ok(dir) = tempfile::tempdir() else {
        return false;
    };
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(dir.path())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        let _ = std::process::Command::new("umount")
            .arg(dir.path())
            .status();
    }
    mounted
}
