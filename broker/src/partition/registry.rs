//! The partition replicas this broker hosts. A reconciler follows the metadata image:
//! it starts a Raft group for every partition that lists this broker as a replica and
//! stops (and deletes) the groups of deleted topics. Restarts of damaged or stopped
//! replicas are in [`super::repair`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::{BasicNode, Raft};
use tokio::sync::{mpsc, watch};

use super::log_store::PartitionLogStore;
use super::recovery;
use super::repair::RepairRequest;
use super::replica::{Limits, PartitionReplica, roll_policy};
use super::state_machine::{InstalledOffset, PartitionStateMachine};
use crate::controller::state::{ClusterState, PartitionRecord};
use crate::controller::topic_config::{Flush, TopicConfig};
use crate::error::{BrokerError, LeaderHint};
use crate::metadata::{ClusterImage, MetadataCache};
use crate::raft::{GroupNetworkFactory, PeerPool, partition_config, transfer_leadership};
use crate::storage::partition_log::log::{PartitionLog, Verify};
use crate::storage::partition_log::syncer::SegmentSyncer;
use crate::storage::{GroupMeta, Store};

/// How often a non-preferred replica of a new group checks whether it must form the group
/// itself because the preferred replica's broker is down.
const FALLBACK_INIT_DELAY: Duration = Duration::from_secs(4);

pub struct PartitionRegistry {
    pub(super) broker_id: u64,
    store: Store,
    /// Each partition's segments live in `storage.dir/<group id>/`.
    storage: PartitionStorage,
    syncer: SegmentSyncer,
    pub(super) peers: PeerPool,
    pub(super) cache: MetadataCache,
    limits: Limits,
    pub(super) groups: RwLock<HashMap<u64, Arc<PartitionReplica>>>,
    topic_defaults: TopicConfig,
    /// Whether orphaned data was swept since start-up (once is enough: later deletions
    /// are handled as they happen).
    swept: AtomicBool,
    /// Groups to restart (see [`super::repair`]).
    pub(super) repairs: mpsc::UnboundedSender<RepairRequest>,
    pub(super) repair_requests: Mutex<Option<mpsc::UnboundedReceiver<RepairRequest>>>,
    /// Held while groups start, stop or restart, so a reconcile and a repair never
    /// start the same group twice.
    pub(super) lifecycle: tokio::sync::Mutex<()>,
    /// Signalled when a local replica becomes leader.
    pub(super) leadership: Arc<tokio::sync::Notify>,
    /// Numbers each start of a replica (see [`RepairRequest`]).
    generations: std::sync::atomic::AtomicU64,
}

/// Where and how the broker stores partition data.
#[derive(Debug, Clone)]
pub struct PartitionStorage {
    /// The directory holding one directory per partition group.
    pub dir: PathBuf,
    /// Appends bypass the page cache (`O_DIRECT`; broker option `--direct-io`).
    pub direct_io: bool,
}

impl PartitionRegistry {
    pub fn new(
        broker_id: u64,
        store: Store,
        storage: PartitionStorage,
        peers: PeerPool,
        cache: MetadataCache,
        limits: Limits,
        topic_defaults: TopicConfig,
    ) -> Self {
        let (repairs, repair_requests) = mpsc::unbounded_channel();
        PartitionRegistry {
            broker_id,
            store,
            storage,
            syncer: SegmentSyncer::start(),
            peers,
            cache,
            limits,
            groups: RwLock::new(HashMap::new()),
            swept: AtomicBool::new(false),
            topic_defaults,
            repairs,
            repair_requests: Mutex::new(Some(repair_requests)),
            lifecycle: tokio::sync::Mutex::new(()),
            leadership: Arc::new(tokio::sync::Notify::new()),
            generations: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Notified whenever a local replica becomes leader of its group.
    pub fn leadership_changes(&self) -> Arc<tokio::sync::Notify> {
        self.leadership.clone()
    }

    pub fn by_group(&self, group: u64) -> Option<Arc<PartitionReplica>> {
        self.groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&group)
            .cloned()
    }

    pub(super) fn all(&self) -> Vec<Arc<PartitionReplica>> {
        self.groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The local replica of `topic`/`partition`, or the error a client should see.
    pub fn get(&self, topic: &str, partition: u32) -> Result<Arc<PartitionReplica>, BrokerError> {
        let image = self.cache.image();
        let record = lookup(&image.state, topic, partition)?;
        if let Some(replica) = self.by_group(record.group_id) {
            return Ok(replica);
        }
        Err(BrokerError::NotLeader {
            topic: topic.to_string(),
            partition,
            leader: record.leader.map(|id| LeaderHint {
                id,
                addr: self.cache.broker_addr(id),
            }),
        })
    }

    /// `(group, term, isr)` for every group this broker leads.
    pub fn leader_reports(&self) -> Vec<(u64, u64, Vec<u64>)> {
        self.all()
            .iter()
            .filter_map(|r| r.leader_report().map(|(term, isr)| (r.group_id, term, isr)))
            .collect()
    }

    /// Hands the leadership of every group this broker leads to an in-sync peer, so that
    /// a clean shutdown does not leave partitions leaderless for an election timeout.
    pub async fn hand_off_leadership(&self, timeout: Duration) {
        let image = self.cache.image();
        let alive = |id: &u64| image.state.brokers.get(id).is_some_and(|b| b.alive);
        let handoffs = self.all().into_iter().filter_map(|replica| {
            let (_, isr) = replica.leader_report()?;
            // A target missing entries would ignore the transfer and stall writes.
            let target = isr.into_iter().find(|id| {
                *id != self.broker_id && alive(id) && replica.follower_fully_caught_up(*id)
            })?;
            Some(async move {
                if !transfer_leadership(replica.raft(), target, timeout).await {
                    tracing::warn!(
                        group = replica.group_id,
                        target,
                        "leadership hand-off timed out"
                    );
                }
            })
        });
        futures::future::join_all(handoffs).await;
    }

    /// Moves leadership back to each partition's preferred replica (the first one) when
    /// that broker is alive and caught up, so leaders stay spread as placed.
    pub async fn restore_preferred_leaders(&self) {
        let image = self.cache.image();
        for replica in self.all() {
            if replica.leader_report().is_none() {
                continue;
            }
            let Some(record) = image
                .state
                .partition_by_group(replica.group_id)
                .map(|(_, _, p)| p)
            else {
                continue;
            };
            let Some(&preferred) = record.replicas.first() else {
                continue;
            };
            let alive = image.state.brokers.get(&preferred).is_some_and(|b| b.alive);
            if preferred != self.broker_id && alive && replica.follower_fully_caught_up(preferred) {
                tracing::info!(
                    group = replica.group_id,
                    preferred,
                    "moving leadership to the preferred replica"
                );
                transfer_leadership(replica.raft(), preferred, Duration::from_secs(3)).await;
            }
        }
    }

    /// Every `interval`, applies each partition's retention: leaders propose a new log
    /// start offset when sealed segments expired, and every replica purges the segments
    /// below the log start.
    pub async fn run_retention(
        self: Arc<Self>,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let image = self.cache.image();
            for replica in self.all() {
                let config = topic_config(&image.state, &replica.topic, &self.topic_defaults);
                if let Err(err) = replica.enforce_retention(&config).await {
                    tracing::warn!(topic = %replica.topic, partition = replica.partition, %err, "retention failed");
                }
            }
        }
    }

    /// Follows the metadata image until `shutdown` fires, then stops every group.
    pub async fn run_reconciler(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut images = self.cache.subscribe();
        loop {
            let image = images.borrow_and_update().clone();
            self.reconcile(&image).await;
            tokio::select! {
                changed = images.changed() => if changed.is_err() { break },
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        for replica in self.all() {
            if let Err(err) = replica.raft().shutdown().await {
                tracing::warn!(group = replica.group_id, %err, "partition group did not stop cleanly");
            }
        }
    }

    async fn reconcile(&self, image: &ClusterImage) {
        let _lifecycle = self.lifecycle.lock().await;
        let mut wanted = HashMap::new();
        for topic in image.state.topics.values() {
            for (i, p) in topic.partitions.iter().enumerate() {
                if p.replicas.contains(&self.broker_id) {
                    wanted.insert(p.group_id, (topic.name.clone(), i as u32, p.clone()));
                }
            }
        }
        let running: Vec<u64> = self
            .groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        for group in running.iter().filter(|g| !wanted.contains_key(g)) {
            self.remove(*group).await;
        }
        self.sweep_orphans(image, &wanted).await;
        for (group, (topic, partition, record)) in wanted {
            if running.contains(&group) {
                if let Some(replica) = self.by_group(group) {
                    replica.apply_config(&topic_config(&image.state, &topic, &self.topic_defaults));
                }
                continue;
            }
            if let Err(err) = self
                .start(
                    &image.state,
                    topic.clone(),
                    partition,
                    &record,
                    Verify::ActiveSegment,
                )
                .await
            {
                tracing::error!(%topic, partition, group, %err, "cannot start partition replica");
            }
        }
    }

    /// Deletes the data of partition groups deleted while this broker was down. Group ids
    /// are never reused, so a stored group below the image's `next_group_id` that the
    /// image does not place here is gone for good.
    async fn sweep_orphans<T>(&self, image: &ClusterImage, wanted: &HashMap<u64, T>) {
        if image.version == 0 || self.swept.swap(true, Ordering::Relaxed) {
            return;
        }
        let stored = match self.stored_groups() {
            Ok(stored) => stored,
            Err(err) => {
                tracing::warn!(%err, "cannot list stored groups");
                return;
            }
        };
        for group in stored {
            let orphan =
                group != 0 && group < image.state.next_group_id && !wanted.contains_key(&group);
            if orphan && self.by_group(group).is_none() {
                tracing::info!(
                    group,
                    "deleting the data of a partition deleted while this broker was away"
                );
                if let Err(err) = self.delete_group_data(group).await {
                    tracing::warn!(group, %err, "cannot delete orphaned partition data");
                }
            }
        }
    }

    /// Groups with data here: Raft state in RocksDB or a segment directory.
    fn stored_groups(&self) -> Result<Vec<u64>, BrokerError> {
        let mut groups = self
            .store
            .group_ids()
            .map_err(|e| BrokerError::Internal(e.to_string()))?;
        if let Ok(entries) = std::fs::read_dir(&self.storage.dir) {
            groups.extend(
                entries.filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse::<u64>().ok()),
            );
        }
        groups.sort_unstable();
        groups.dedup();
        Ok(groups)
    }

    /// The directory of `group`'s segments.
    pub(super) fn group_dir(&self, group: u64) -> PathBuf {
        self.storage.dir.join(group.to_string())
    }

    /// Deletes a group's segments and its Raft state.
    async fn delete_group_data(&self, group: u64) -> std::io::Result<()> {
        let dir = self.group_dir(group);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        self.store.delete_group_and_sync(group).await
    }

    pub(super) async fn start(
        &self,
        state: &ClusterState,
        topic: String,
        partition: u32,
        record: &PartitionRecord,
        verify: Verify,
    ) -> Result<(), BrokerError> {
        let group = record.group_id;
        let dir = self.group_dir(group);
        let config = topic_config(state, &topic, &self.topic_defaults);
        let meta = GroupMeta::new(self.store.clone(), group);
        let voters = record.replicas.len();
        let flush = config.flush;
        // Opening may scan every segment: off the async workers.
        let (mut log, repaired) = {
            let (dir, policy, meta) = (dir.clone(), roll_policy(&config), meta.clone());
            tokio::task::spawn_blocking(move || {
                PartitionLog::open_with(&dir, policy, verify, |cut| {
                    recovery::record_loss(&meta, cut, verify, flush, voters)
                })
            })
            .await
            .map_err(|e| {
                BrokerError::Internal(format!("opening the log of group {group}: {e}"))
            })??
        };
        if let Some(r) = repaired {
            tracing::warn!(
                %topic, partition, group,
                segment = %r.segment.display(),
                sealed = r.sealed,
                valid_bytes = r.recovery.valid_bytes,
                dropped_bytes = r.recovery.dropped_bytes,
                dropped_segments = r.dropped_segments.len(),
                lost_through = ?r.lost_through,
                reason = %r.recovery.reason,
                "cut a torn or corrupt log; the leader will send what was lost"
            );
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        log.set_corruption_hook(self.corruption_hook(group, generation));
        log.set_direct_io(self.storage.direct_io)?;
        let log = Arc::new(RwLock::new(log));
        let installed = InstalledOffset::default();
        let flush_async = Arc::new(AtomicBool::new(flush == Flush::Async));
        let log_store = PartitionLogStore::new(
            log.clone(),
            meta.clone(),
            self.syncer.clone(),
            installed.clone(),
            flush_async.clone(),
        )?;
        // The log ends below the stored committed index: record the loss before
        // lowering that index, so that no crash can forget both.
        if let Some(index) = log_store.lost_commit()? {
            match flush {
                Flush::Sync if voters > 1 => meta.raise_recover_until_blocking(index)?,
                Flush::Sync => {}
                // Acknowledged before fsync, by the topic's choice: a machine crash may
                // lose the tail everywhere, so waiting for it could wait forever.
                Flush::Async => {
                    tracing::warn!(%topic, partition, group, index, "entries acknowledged with flush=async were lost in a crash")
                }
            }
            log_store.forget_lost_commits()?;
        }
        let log_last_index = log
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .map(|h| h.index);
        let gate = recovery::assess(&meta, log_last_index, voters).await?;
        let (sm, positions) = PartitionStateMachine::open(
            self.store.clone(),
            group,
            installed,
            log.clone(),
            log_store.tail_cache(),
        )?;
        let network = GroupNetworkFactory::new(group, self.peers.clone());
        let raft = Raft::new(
            self.broker_id,
            partition_config(gate.refuses_votes()),
            network,
            log_store,
            sm,
        )
        .await
        .map_err(|e| BrokerError::Internal(format!("starting group {group}: {e}")))?;
        let recovery_task = recovery::hold_elections_until_recovered(&raft, &gate, meta);
        self.watch_group(group, generation, &raft);
        let members: BTreeMap<u64, BasicNode> = record
            .replicas
            .iter()
            .map(|id| {
                let addr = state
                    .brokers
                    .get(id)
                    .map(|b| b.addr.clone())
                    .unwrap_or_default();
                (*id, BasicNode { addr })
            })
            .collect();
        tokio::spawn(initialize_group(
            raft.clone(),
            members,
            record.replicas.first().copied(),
            self.broker_id,
            self.cache.clone(),
        ));
        tracing::info!(%topic, partition, group, "started partition replica");
        let replica = PartitionReplica {
            topic,
            partition,
            group_id: group,
            raft,
            positions,
            log,
            cache: self.cache.clone(),
            limits: self.limits,
            recovery: gate,
            recovery_task: std::sync::Mutex::new(recovery_task),
            flush_async,
            generation,
            liveness: Default::default(),
            sequencer: Default::default(),
        };
        self.groups
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(group, Arc::new(replica));
        Ok(())
    }

    /// Takes `group` out of the running replicas and stops its Raft group.
    pub(super) async fn take_and_stop(&self, group: u64) -> Option<Arc<PartitionReplica>> {
        let replica = self
            .groups
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&group)?;
        if let Err(err) = replica.raft().shutdown().await {
            tracing::warn!(group, %err, "partition group did not stop cleanly");
        }
        // Its recovery task must be gone before a next start may set a marker it would
        // clear.
        let task = replica
            .recovery_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        Some(replica)
    }

    async fn remove(&self, group: u64) {
        if let Some(replica) = self.take_and_stop(group).await {
            if let Err(err) = self.delete_group_data(group).await {
                tracing::error!(group, %err, "cannot delete the data of a deleted partition");
            }
            tracing::info!(topic = %replica.topic, partition = replica.partition, group, "removed partition replica");
        }
    }
}

/// Forms a new group. The preferred leader initializes it at once, so that it becomes
/// the first leader and no leadership move is needed later. The other replicas
/// initialize it themselves only if no leader appeared and the preferred broker is down
/// (openraft accepts the same membership from several replicas, so this is safe).
async fn initialize_group(
    raft: super::types::PartitionRaft,
    members: BTreeMap<u64, BasicNode>,
    preferred_broker: Option<u64>,
    local_broker: u64,
    cache: MetadataCache,
) {
    if raft.is_initialized().await.unwrap_or(true) {
        return;
    }
    if preferred_broker != Some(local_broker) {
        let mut metrics = raft.metrics();
        loop {
            let appeared = tokio::time::timeout(FALLBACK_INIT_DELAY, async {
                loop {
                    let m = metrics.borrow_watched().clone();
                    if m.current_leader.is_some() || m.last_log_index.is_some() {
                        return;
                    }
                    if metrics.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await;
            if appeared.is_ok() || raft.is_initialized().await.unwrap_or(true) {
                return;
            }
            let preferred_alive = preferred_broker.is_some_and(|id| {
                cache
                    .image()
                    .state
                    .brokers
                    .get(&id)
                    .is_some_and(|b| b.alive)
            });
            if !preferred_alive {
                break;
            }
        }
    }
    match raft.initialize(members).await {
        // Nobody leads a group just formed: no reason to wait for an election timeout.
        Ok(()) => {
            let _ = raft.trigger().elect(false).await;
        }
        Err(err) => tracing::debug!(%err, "group already initialized"),
    }
}

/// The effective config of `topic`: its overrides over the cluster defaults (the
/// defaults alone when it is unknown or its configs invalid).
fn topic_config(state: &ClusterState, topic: &str, defaults: &TopicConfig) -> TopicConfig {
    state
        .topics
        .get(topic)
        .and_then(|t| defaults.overridden(&t.configs).ok())
        .unwrap_or(*defaults)
}

/// Finds a partition in the image, or the client error for a missing one.
pub(crate) fn lookup<'a>(
    state: &'a ClusterState,
    topic: &str,
    partition: u32,
) -> Result<&'a PartitionRecord, BrokerError> {
    let record = state
        .topics
        .get(topic)
        .ok_or_else(|| BrokerError::UnknownTopic(topic.to_string()))?;
    record
        .partitions
        .get(partition as usize)
        .ok_or_else(|| BrokerError::UnknownPartition {
            topic: topic.to_string(),
            partition,
        })
}
