//! The faults a run injects, each undone by its heal: process faults (kill -9, pause,
//! rolling restart) through signals, network faults through the link proxies.

use std::fmt;
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use strait_client::Client;
use strait_tests::Cluster;

use crate::net::Network;
use crate::proxy::LinkState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    KillLeader,
    KillFollower,
    KillController,
    KillTwo,
    PauseLeader,
    IsolateLeader,
    SplitOneTwo,
    Bridge,
    SlowLinks,
    FlakyLinks,
    RollingRestart,
    DiskFull,
}

impl FaultKind {
    pub const ALL: [FaultKind; 12] = [
        FaultKind::KillLeader,
        FaultKind::KillFollower,
        FaultKind::KillController,
        FaultKind::KillTwo,
        FaultKind::PauseLeader,
        FaultKind::IsolateLeader,
        FaultKind::SplitOneTwo,
        FaultKind::Bridge,
        FaultKind::SlowLinks,
        FaultKind::FlakyLinks,
        FaultKind::RollingRestart,
        FaultKind::DiskFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::KillController => "kill-controller",
            FaultKind::KillTwo => "kill-two",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::SplitOneTwo => "split-1-2",
            FaultKind::Bridge => "bridge",
            FaultKind::SlowLinks => "slow-links",
            FaultKind::FlakyLinks => "flaky-links",
            FaultKind::RollingRestart => "rolling-restart",
            FaultKind::DiskFull => "disk-full",
        }
    }

    pub fn parse(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What must be done to undo an injected fault.
pub enum Heal {
    Restart(Vec<u64>),
    /// Delete the file that filled a broker's disk.
    FreeDisk(std::path::PathBuf),
    Resume(u64),
    Network,
    Nothing,
}

/// Everything a fault acts on.
pub struct Target<'a> {
    pub cluster: &'a mut Cluster,
    pub net: &'a Network,
    pub client: &'a Client,
    pub topic: &'a str,
    pub brokers: Vec<u64>,
}

impl Target<'_> {
    /// The current leader of partition 0, or a random broker when none is known.
    async fn leader(&self, rng: &mut StdRng) -> u64 {
        let _ = self.client.refresh_metadata().await;
        match self.client.topic(self.topic).await {
            Ok(info) => info.partitions.first().and_then(|p| p.leader),
            Err(_) => None,
        }
        .unwrap_or_else(|| self.random(rng, &[]))
    }

    fn random(&self, rng: &mut StdRng, except: &[u64]) -> u64 {
        let candidates: Vec<u64> = self
            .brokers
            .iter()
            .copied()
            .filter(|b| !except.contains(b))
            .collect();
        *candidates.choose(rng).unwrap_or(&self.brokers[0])
    }
}

/// Injects `kind`; returns a description and how to heal it.
pub async fn inject(kind: FaultKind, t: &mut Target<'_>, rng: &mut StdRng) -> (String, Heal) {
    match kind {
        FaultKind::KillLeader => {
            let id = t.leader(rng).await;
            t.cluster.kill9(id);
            (
                format!("kill -9 broker {id} (leader)"),
                Heal::Restart(vec![id]),
            )
        }
        FaultKind::KillFollower => {
            let leader = t.leader(rng).await;
            let id = t.random(rng, &[leader]);
            t.cluster.kill9(id);
            (
                format!("kill -9 broker {id} (follower)"),
                Heal::Restart(vec![id]),
            )
        }
        FaultKind::KillController => {
            let status = t.client.cluster_status().await.ok();
            let id = status
                .and_then(|s| s.controller_id)
                .unwrap_or_else(|| t.random(rng, &[]));
            t.cluster.kill9(id);
            (
                format!("kill -9 broker {id} (controller)"),
                Heal::Restart(vec![id]),
            )
        }
        FaultKind::KillTwo => {
            let a = t.leader(rng).await;
            let b = t.random(rng, &[a]);
            t.cluster.kill9(a);
            t.cluster.kill9(b);
            (
                format!("kill -9 brokers {a} and {b}"),
                Heal::Restart(vec![a, b]),
            )
        }
        FaultKind::PauseLeader => {
            let id = t.leader(rng).await;
            t.cluster.pause(id);
            (format!("SIGSTOP broker {id} (leader)"), Heal::Resume(id))
        }
        FaultKind::IsolateLeader => {
            let id = t.leader(rng).await;
            let rest: Vec<u64> = t.brokers.iter().copied().filter(|b| *b != id).collect();
            t.net.partition(&[vec![id], rest]);
            (format!("isolate broker {id} (leader)"), Heal::Network)
        }
        FaultKind::SplitOneTwo => {
            let id = t.random(rng, &[]);
            let rest: Vec<u64> = t.brokers.iter().copied().filter(|b| *b != id).collect();
            t.net.partition(&[vec![id], rest.clone()]);
            (format!("split {id} | {rest:?}"), Heal::Network)
        }
        FaultKind::Bridge => {
            let mut order = t.brokers.clone();
            order.shuffle(rng);
            let (a, bridge, c) = (order[0], order[1], order[2]);
            t.net.cut(a, c);
            (
                format!("bridge {a}-{bridge}-{c} ({a} and {c} cut)"),
                Heal::Network,
            )
        }
        FaultKind::SlowLinks => {
            let id = t.random(rng, &[]);
            let delay_ms = rng.gen_range(50..=200);
            t.net.degrade(id, LinkState::Slow { delay_ms });
            (
                format!("links of broker {id} delayed {delay_ms} ms"),
                Heal::Network,
            )
        }
        FaultKind::FlakyLinks => {
            let id = t.random(rng, &[]);
            t.net.degrade(id, LinkState::Flaky { max_life_ms: 1000 });
            (
                format!("links of broker {id} cut at random within 1 s"),
                Heal::Network,
            )
        }
        FaultKind::DiskFull => {
            let id = t.leader(rng).await;
            let filler = t.cluster.broker(id).data_dir().join("filler");
            let written = fill(&filler);
            (
                format!("disk of broker {id} (leader) filled ({written} bytes)"),
                Heal::FreeDisk(filler),
            )
        }
        FaultKind::RollingRestart => {
            for id in t.brokers.clone() {
                t.cluster.terminate(id, Duration::from_secs(30)).await;
                if t.cluster.restart(id).is_ok() {
                    let _ = t.cluster.wait_ready(Duration::from_secs(60)).await;
                }
            }
            ("rolling restart of every broker".to_string(), Heal::Nothing)
        }
    }
}

/// Undoes a fault.
pub async fn heal(heal: Heal, t: &mut Target<'_>) -> anyhow::Result<()> {
    match heal {
        Heal::Restart(ids) => {
            for id in ids {
                t.cluster.restart(id)?;
            }
        }
        Heal::Resume(id) => t.cluster.resume(id),
        Heal::FreeDisk(filler) => std::fs::remove_file(&filler)?,
        Heal::Network => t.net.heal(),
        Heal::Nothing => {}
    }
    Ok(())
}

/// Writes `path` until the file system is full; returns the bytes written.
fn fill(path: &std::path::Path) -> u64 {
    use std::io::Write;
    let Ok(mut file) = std::fs::File::create(path) else {
        return 0;
    };
    let mut written = 0u64;
    for chunk in [1 << 20, 4096, 512] {
        let zeros = vec![0u8; chunk];
        while file.write_all(&zeros).is_ok() {
            written += chunk as u64;
        }
    }
    let _ = file.sync_all();
    written
}
