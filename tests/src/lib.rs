//! Test harness: starts real `strait-broker` processes on free loopback ports, each
//! with its own data directory under a temporary directory, and kills them (and removes
//! the directory) when the [`Cluster`] is dropped.
//!
//! Cluster tests serialize on a process-wide lock so that two three-broker clusters do
//! not compete for this machine's two cores. Waiting is always "until a condition holds,
//! or a deadline passes" ([`wait_until`]).

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use strait_client::{Client, ClientConfig, ConsumedRecord, OffsetSpec, PartitionConsumer};

static CLUSTER_LOCK: Mutex<()> = Mutex::new(());

/// Directory holding the workspace's built binaries (`target/<profile>`), found from
/// the running executable: a test binary in `target/<profile>/deps`, or a tool such as
/// `strait-chaos` beside the brokers.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running binary knows its path");
    let dir = exe
        .parent()
        .expect("binaries live in a directory")
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

/// Path of a workspace binary; fails with a hint when it was not built.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, which scripts/test does)",
        path.display()
    );
    path
}

/// Held while a test runs brokers; see [`cluster_lock`].
pub struct ClusterLock {
    _guard: MutexGuard<'static, ()>,
}

/// Serializes tests that start clusters (every [`Cluster`] holds one too).
pub fn cluster_lock() -> ClusterLock {
    ClusterLock {
        _guard: CLUSTER_LOCK.lock().unwrap_or_else(|e| e.into_inner()),
    }
}

/// The kernel's ephemeral port range; outgoing connections take their local ports
/// from it, so a port picked there could be taken between our check and the broker's bind.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// A run of `n` consecutive loopback ports that are free now and lie outside the
/// ephemeral range.
pub fn free_ports(n: u16) -> u16 {
    let (low, high) = ephemeral_range();
    let (start, end) = if low > 12_000 {
        (10_000, low - n)
    } else {
        (high.saturating_add(1), 65_000)
    };
    let span = u32::from(end.saturating_sub(start).max(1));
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for attempt in 0..2000u32 {
        let offset = (seed.wrapping_add(attempt.wrapping_mul(7919))) % span;
        let base = start + offset as u16;
        if (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} free consecutive loopback ports between {start} and {end}");
}

fn free_port() -> u16 {
    free_ports(1)
}

/// Polls `check` every 100 ms until it yields `Some`, or fails after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
    }
}

pub struct BrokerProcess {
    pub id: u64,
    pub addr: String,
    data_dir: PathBuf,
    log: PathBuf,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl BrokerProcess {
    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// A cluster of real broker processes.
pub struct Cluster {
    /// `None` once [`Cluster::keep_files`] handed the directory over.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    seeds: String,
    pub brokers: Vec<BrokerProcess>,
    /// tmpfs mounts to undo on drop.
    mounts: Vec<PathBuf>,
    _lock: ClusterLock,
}

/// How to start a [`Cluster`] beyond the defaults.
#[derive(Default)]
pub struct ClusterOptions {
    /// Each broker's address, in id order (default: free loopback ports).
    pub addrs: Option<Vec<String>>,
    /// More flags for broker `id` (e.g. `--peer-route`).
    pub extra_args: std::collections::BTreeMap<u64, Vec<String>>,
    /// Give each broker's data directory its own tmpfs of this many bytes, so that one
    /// broker's disk can be filled (needs root).
    pub tmpfs_bytes: Option<u64>,
}

impl Cluster {
    /// Starts `n` brokers (the first three are the controller voters) and waits until all
    /// are registered and alive.
    pub async fn start(n: usize) -> anyhow::Result<Cluster> {
        Cluster::start_with(n, ClusterOptions::default()).await
    }

    /// Starts `n` brokers as `options` says, and waits until all are alive.
    pub async fn start_with(n: usize, options: ClusterOptions) -> anyhow::Result<Cluster> {
        let lock = cluster_lock();
        let dir = tempfile::Builder::new().prefix("strait-test-").tempdir()?;
        let addrs = match options.addrs {
            Some(addrs) => addrs,
            None => {
                let base = free_ports(n as u16);
                (0..n as u16)
                    .map(|i| format!("127.0.0.1:{}", base + i))
                    .collect()
            }
        };
        let seeds = addrs.iter().take(3).cloned().collect::<Vec<_>>().join(",");
        let mut cluster = Cluster {
            root: dir.path().to_path_buf(),
            dir: Some(dir),
            seeds,
            brokers: Vec::new(),
            mounts: Vec::new(),
            _lock: lock,
        };
        if let Some(bytes) = options.tmpfs_bytes {
            for id in 1..=addrs.len() as u64 {
                let data_dir = cluster.root.join(format!("broker-{id}"));
                std::fs::create_dir_all(&data_dir)?;
                let status = Command::new("mount")
                    .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
                    .arg(&data_dir)
                    .status()
                    .context("running mount")?;
                if !status.success() {
                    bail!(
                        "cannot mount a tmpfs on {} (root needed)",
                        data_dir.display()
                    );
                }
                cluster.mounts.push(data_dir);
            }
        }
        for (i, addr) in addrs.into_iter().enumerate() {
            let id = i as u64 + 1;
            let extra = options.extra_args.get(&id).cloned().unwrap_or_default();
            cluster.spawn(id, addr, extra)?;
        }
        cluster.wait_ready(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    /// Keeps the data and logs on disk after the cluster is dropped (to inspect a
    /// failure); returns where they are.
    pub fn keep_files(&mut self) -> PathBuf {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        self.root.clone()
    }

    fn spawn(&mut self, id: u64, addr: String, extra_args: Vec<String>) -> anyhow::Result<()> {
        let data_dir = self.root.join(format!("broker-{id}"));
        let log = self.root.join(format!("broker-{id}.log"));
        let mut broker = BrokerProcess {
            id,
            addr,
            data_dir,
            log,
            extra_args,
            child: None,
        };
        self.launch(&mut broker)?;
        self.brokers.push(broker);
        Ok(())
    }

    fn launch(&self, broker: &mut BrokerProcess) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&broker.log)?;
        let child = Command::new(binary("strait-broker"))
            .arg(format!("--id={}", broker.id))
            .arg(format!("--listen={}", broker.addr))
            .arg(format!("--data-dir={}", broker.data_dir.display()))
            .arg(format!("--seeds={}", self.seeds))
            .arg("--session-timeout-ms=3000")
            .arg("--retention-check-ms=500")
            .args(&broker.extra_args)
            .env(
                "STRAIT_LOG",
                std::env::var("STRAIT_TEST_LOG").unwrap_or_else(|_| "info,openraft=error".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting strait-broker")?;
        broker.child = Some(child);
        Ok(())
    }

    /// Adds a broker that joins through the seeds.
    pub async fn add_broker(&mut self) -> anyhow::Result<u64> {
        let id = self.brokers.iter().map(|b| b.id).max().unwrap_or(0) + 1;
        self.spawn(id, format!("127.0.0.1:{}", free_port()), Vec::new())?;
        self.wait_ready(Duration::from_secs(60)).await?;
        Ok(id)
    }

    pub fn addrs(&self) -> Vec<String> {
        self.brokers.iter().map(|b| b.addr.clone()).collect()
    }

    pub fn broker(&mut self, id: u64) -> &mut BrokerProcess {
        self.brokers
            .iter_mut()
            .find(|b| b.id == id)
            .expect("a broker with this id was started")
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(ClientConfig::new(self.addrs())).await?)
    }

    /// A client, after creating `topic` (RF 3) and waiting until every partition has a
    /// leader.
    pub async fn client_with_topic(&self, topic: &str, partitions: u32) -> anyhow::Result<Client> {
        let client = self.client().await?;
        client.create_topic(topic, partitions, 3).await?;
        client
            .wait_for_leaders(topic, Duration::from_secs(30))
            .await?;
        Ok(client)
    }

    /// SIGKILL: no shutdown path runs, unsynced state is lost.
    pub fn kill9(&mut self, id: u64) {
        let broker = self.broker(id);
        if let Some(mut child) = broker.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process freezes (no timers, no I/O) until [`Cluster::resume`].
    pub fn pause(&mut self, id: u64) {
        self.signal(id, libc::SIGSTOP);
    }

    /// SIGCONT after [`Cluster::pause`].
    pub fn resume(&mut self, id: u64) {
        self.signal(id, libc::SIGCONT);
    }

    fn signal(&mut self, id: u64, signal: libc::c_int) {
        if let Some(child) = self.broker(id).child.as_ref()
            && let Ok(pid) = libc::pid_t::try_from(child.id())
        {
            // SAFETY: kill(2) on our own child's pid; it cannot touch our memory.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// SIGTERM, then waits for the broker's controlled shutdown to finish (or kills it
    /// after `timeout`).
    pub async fn terminate(&mut self, id: u64, timeout: Duration) {
        self.signal(id, libc::SIGTERM);
        let broker = self.broker(id);
        let Some(mut child) = broker.child.take() else {
            return;
        };
        let deadline = Instant::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tick.tick().await;
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        }
    }

    /// Starts a killed broker again on the same address and data directory.
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        let mut broker = self
            .brokers
            .iter()
            .position(|b| b.id == id)
            .map(|i| self.brokers.remove(i))
            .context("unknown broker")?;
        let launched = self.launch(&mut broker);
        self.brokers.push(broker);
        self.brokers.sort_by_key(|b| b.id);
        launched
    }

    /// Waits until every running broker is registered and alive and a controller is known.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let mut running = Vec::new();
        let mut dead = Vec::new();
        for broker in &mut self.brokers {
            if broker.child.is_none() {
                continue;
            }
            if broker.is_running() {
                running.push(broker.id);
            } else {
                dead.push(format!(
                    "broker {} exited:\n{}",
                    broker.id,
                    broker.log_tail()
                ));
            }
        }
        if !dead.is_empty() {
            bail!("{}", dead.join("\n"));
        }
        let addrs = self.addrs();
        wait_until("all brokers alive with a controller", timeout, || {
            let addrs = addrs.clone();
            let running = running.clone();
            async move {
                let client = Client::connect(ClientConfig::new(addrs)).await.ok()?;
                let status = client.cluster_status().await.ok()?;
                let all_alive = running
                    .iter()
                    .all(|id| status.brokers.iter().any(|b| b.id == *id && b.alive));
                (status.controller_id.is_some() && all_alive).then_some(())
            }
        })
        .await
    }

    /// The logs of every broker, for failure messages.
    pub fn logs(&self) -> String {
        self.brokers
            .iter()
            .map(|b| format!("--- broker {} ---\n{}", b.id, b.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for broker in &mut self.brokers {
            if let Some(mut child) = broker.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for mount in &self.mounts {
            if self.dir.is_none() {
                // Kept for inspection: copy the data off the tmpfs first.
                let _ = Command::new("cp")
                    .arg("-a")
                    .arg(mount)
                    .arg(mount.with_extension("kept"))
                    .status();
            }
            let _ = Command::new("umount").arg("-l").arg(mount).status();
        }
    }
}

/// Every record of `topic`/`partition` from offset 0 up to its high watermark.
pub async fn read_partition(
    client: &Client,
    topic: &str,
    partition: u32,
) -> anyhow::Result<Vec<ConsumedRecord>> {
    read_partition_from(client, topic, partition, 0).await
}

/// Every record of `topic`/`partition` from offset `from` up to its high watermark.
pub async fn read_partition_from(
    client: &Client,
    topic: &str,
    partition: u32,
    from: u64,
) -> anyhow::Result<Vec<ConsumedRecord>> {
    let (_, high_watermark) = client.list_offsets(topic, partition).await?;
    let mut consumer = PartitionConsumer::new(
        client.clone(),
        topic,
        partition,
        OffsetSpec::At(from),
        Default::default(),
    )
    .await?;
    let mut records = Vec::new();
    while consumer.position() < high_watermark {
        records.extend(consumer.poll().await?);
    }
    Ok(records)
}
