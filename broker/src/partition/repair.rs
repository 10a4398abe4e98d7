//! Restarting a partition replica that can no longer run as it is:
//!
//! - a read found **corrupt data** in its log: it restarts with every segment verified,
//!   so the damage is cut and the lost entries come back from the leader
//!   ([`super::recovery`] keeps it out of elections meanwhile);
//! - its Raft group **stopped on a storage error** (a full disk, a failing write): it
//!   restarts from what is on disk once a probe write to its directory succeeds again
//!   (checked every second). Until then the replica serves nothing and votes for
//!   nothing, so it refuses writes rather than lie, and the other replicas carry on.
//!
//! Restarts of one group back off (1 s doubling to 30 s) so that a disk that stays full
//! does not turn into a restart loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::Fatal;
use tokio::sync::watch;
use tokio::time::Instant;

use super::registry::PartitionRegistry;
use super::types::PartitionRaft;
use crate::storage::partition_log::log::{CorruptionHook, Verify};

/// Why a replica must restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A read found corrupt data: verify every segment.
    Corrupt,
    /// The Raft group stopped on an error: restart once the disk takes writes.
    Stopped,
}

impl Reason {
    fn verify(self) -> Verify {
        match self {
            Reason::Corrupt => Verify::Everything,
            Reason::Stopped => Verify::ActiveSegment,
        }
    }
}

/// A replica to restart: its group, the start (generation) that asked, and why. A
/// request from an earlier start of a group that has restarted since is dropped.
#[derive(Debug, Clone, Copy)]
pub struct RepairRequest {
    pub group: u64,
    pub generation: u64,
    pub reason: Reason,
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A group that ran this long since its last restart starts over at [`FIRST_BACKOFF`].
const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// How often a replica stopped by a storage error checks whether it can write again.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

impl PartitionRegistry {
    /// Serves repair requests until `shutdown` fires.
    pub async fn run_repairs(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let requests = self
            .repair_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(mut requests) = requests else { return };
        // group → (last restart, wait before the next one)
        let mut backoff: HashMap<u64, (Instant, Duration)> = HashMap::new();
        loop {
            let request = tokio::select! {
                request = requests.recv() => match request { Some(r) => r, None => return },
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let group = request.group;
            if self
                .by_group(group)
                .is_some_and(|r| r.generation != request.generation)
            {
                continue; // that start is gone; the running one is not the one that failed
            }
            if request.reason == Reason::Stopped && !self.can_write(group).await {
                self.repair_later(request, PROBE_INTERVAL);
                continue;
            }
            let now = Instant::now();
            let next = match backoff.get(&group) {
                Some(&(last, wait)) if now < last + wait => {
                    self.repair_later(request, last + wait - now);
                    continue;
                }
                Some(&(last, wait)) if now < last + BACKOFF_RESET => (wait * 2).min(MAX_BACKOFF),
                _ => FIRST_BACKOFF,
            };
            backoff.insert(group, (now, next));
            if !self.repair(request).await {
                self.repair_later(request, next);
            }
        }
    }

    /// Whether a small synced write in `group`'s directory succeeds (a full or failing
    /// disk makes it fail).
    async fn can_write(&self, group: u64) -> bool {
        let probe = self.group_dir(group).join(".write-probe");
        let written = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let written = std::fs::File::create(&probe)
                .and_then(|mut file| {
                    file.write_all(&[0u8; 4096])?;
                    file.sync_all()
                })
                .is_ok();
            let _ = std::fs::remove_file(&probe);
            written
        })
        .await
        .unwrap_or(false);
        if !written {
            tracing::debug!(group, "the partition's disk still refuses writes");
        }
        written
    }

    fn repair_later(&self, request: RepairRequest, delay: Duration) {
        let repairs = self.repairs.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = repairs.send(request);
        });
    }

    /// Stops the group if it runs and starts it again; false if it could not start.
    async fn repair(&self, request: RepairRequest) -> bool {
        let (group, verify) = (request.group, request.reason.verify());
        let _lifecycle = self.lifecycle.lock().await;
        if let Some(replica) = self.take_and_stop(group).await {
            tracing::warn!(topic = %replica.topic, partition = replica.partition, group, reason = ?request.reason, "restarting a partition replica");
        }
        let image = self.cache.image();
        let Some((topic, partition, record)) = image.state.partition_by_group(group) else {
            return true;
        };
        if !record.replicas.contains(&self.broker_id) || self.by_group(group).is_some() {
            return true;
        }
        let topic = topic.name.clone();
        match self
            .start(&image.state, topic.clone(), partition, record, verify)
            .await
        {
            Ok(()) => true,
            Err(err) => {
                tracing::error!(%topic, partition, group, %err, "cannot restart the partition replica; retrying");
                false
            }
        }
    }

    /// Reports corrupt data read from `group`'s log (once) and asks for its repair.
    pub(super) fn corruption_hook(&self, group: u64, generation: u64) -> CorruptionHook {
        let repairs = self.repairs.clone();
        let reported = AtomicBool::new(false);
        Arc::new(move |err: &std::io::Error| {
            if !reported.swap(true, Ordering::Relaxed) {
                tracing::error!(group, %err, "corrupt data in a partition log; it is never served and will be recovered from the leader");
                let _ = repairs.send(RepairRequest {
                    group,
                    generation,
                    reason: Reason::Corrupt,
                });
            }
        })
    }

    /// Follows `group`'s Raft state: asks for a restart if the group stops on an error
    /// (a storage error such as a full disk) rather than by a shutdown, and signals
    /// [`PartitionRegistry::leadership_changes`] when it becomes leader.
    ///
    /// It follows openraft's *server* metrics, which change only with the vote, the
    /// role, the leader or the membership: the full metrics change with every append,
    /// commit and apply, and waking a task per group on each of them cost the brokers
    /// CPU on every batch. How the group stopped is read from the full metrics once
    /// its core is gone (it records the error there before it stops).
    pub(super) fn watch_group(&self, group: u64, generation: u64, raft: &PartitionRaft) {
        let repairs = self.repairs.clone();
        let leadership = self.leadership.clone();
        let mut server = raft.server_metrics();
        let metrics = raft.metrics();
        tokio::spawn(async move {
            let mut leading = false;
            loop {
                let leader = server.borrow_watched().state == openraft::ServerState::Leader;
                if leader && !leading {
                    leadership.notify_one();
                }
                leading = leader;
                if server.changed().await.is_err() {
                    break;
                }
            }
            let failed = match &metrics.borrow_watched().running_state {
                Ok(()) | Err(Fatal::Stopped) => return,
                Err(err) => err.to_string(),
            };
            tracing::error!(group, err = %failed, "partition group stopped on an error; it refuses every request until restarted");
            let _ = repairs.send(RepairRequest {
                group,
                generation,
                reason: Reason::Stopped,
            });
        });
    }
}
