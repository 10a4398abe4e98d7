//! openraft state machine of a partition group: it moves the high watermark and the
//! log start offset, and keeps the table of idempotent producers' batches.
//!
//! The records and their offsets live in the segmented log (written once, by the log
//! store); applying a committed batch only advances the high watermark — the offset
//! after the last committed record — and answers the batch's base offset to the
//! producer. A `Retain` entry moves the log start offset (retention), identically on
//! every replica. Snapshots (positions only) are stored in RocksDB; at start-up the state
//! is the last snapshot plus the committed log re-applied after it.

use std::io::{self, Cursor};
use std::sync::{Arc, Mutex, RwLock};

use futures::{Stream, TryStreamExt};
use openraft::alias::SnapshotOf;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::producers::{ProducerTable, WrittenBatch};
use super::tail_cache::TailCache;
use super::types::{PartitionCommand, PartitionRaftConfig as C, PartitionReply};
use crate::storage::partition_log::log::PartitionLog;
use crate::storage::{GroupId, Store, decode, encode, load_snapshot, save_snapshot_and_sync};

type LogId = openraft::alias::LogIdOf<C>;
use openraft::impls::leader_id_adv::LeaderId;
type StoredMembership = openraft::alias::StoredMembershipOf<C>;
type SnapshotMeta = openraft::alias::SnapshotMetaOf<C>;

/// What a partition snapshot holds: positions, not records (those stay in the log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSnapshot {
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

/// Set when a snapshot from the leader is installed: the offset at which the log store
/// must restart the local log when openraft then purges everything up to the snapshot.
pub type InstalledOffset = Arc<Mutex<Option<u64>>>;

/// Receivers of a partition state machine's positions, and its producer table.
#[derive(Clone)]
pub struct Positions {
    pub high_watermark: watch::Receiver<u64>,
    pub log_start_offset: watch::Receiver<u64>,
    pub producers: Arc<Mutex<ProducerTable>>,
}

pub struct PartitionStateMachine {
    group: GroupId,
    store: Store,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    high_watermark: watch::Sender<u64>,
    log_start_offset: watch::Sender<u64>,
    installed: InstalledOffset,
    log: Arc<RwLock<PartitionLog>>,
    producers: Arc<Mutex<ProducerTable>>,
    /// The log store's cache of the newest entries: applied ones leave it.
    tail: Arc<TailCache>,
}

impl PartitionStateMachine {
    /// The state machine of `group`, restored from its stored snapshot if any, and
    /// receivers of its positions. Applied entries leave `tail`, the log store's cache.
    pub fn open(
        store: Store,
        group: GroupId,
        installed: InstalledOffset,
        log: Arc<RwLock<PartitionLog>>,
        tail: Arc<TailCache>,
    ) -> io::Result<(PartitionStateMachine, Positions)> {
        let mut sm = PartitionStateMachine {
            group,
            store,
            last_applied: None,
            membership: StoredMembership::default(),
            high_watermark: watch::Sender::new(0),
            log_start_offset: watch::Sender::new(0),
            installed,
            log,
            producers: Arc::default(),
            tail,
        };
        if let Some((meta, data)) = load_snapshot::<C>(&sm.store, group)? {
            let snapshot: PartitionSnapshot = decode(&data)?;
            sm.last_applied = meta.last_log_id;
            sm.membership = meta.last_membership;
            sm.high_watermark.send_replace(snapshot.high_watermark);
            sm.log_start_offset.send_replace(snapshot.log_start_offset);
        }
        let positions = Positions {
            high_watermark: sm.high_watermark.subscribe(),
            log_start_offset: sm.log_start_offset.subscribe(),
            producers: sm.producers.clone(),
        };
        Ok((sm, positions))
    }
}

/// Captures the positions at one applied index and stores them as the snapshot.
pub struct PartitionSnapshotBuilder {
    group: GroupId,
    store: Store,
    meta: SnapshotMeta,
    snapshot: PartitionSnapshot,
}

impl RaftSnapshotBuilder<C> for PartitionSnapshotBuilder {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Cursor<Vec<u8>>>, io::Error> {
        let data = encode(&self.snapshot)?;
        save_snapshot_and_sync::<C>(&self.store, self.group, &self.meta, &data).await?;
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<C> for PartitionStateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = PartitionSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
    {
        let mut high_watermark = *self.high_watermark.borrow();
        while let Some((entry, responder)) = entries.try_next().await? {
            let reply = match entry.payload {
                EntryPayload::Blank => PartitionReply::Nothing,
                EntryPayload::Normal(PartitionCommand::Append { batch, producer }) => {
                    let base_offset = high_watermark;
                    high_watermark += u64::from(batch.count());
                    if let Some(stamp) = producer {
                        self.producers
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .record(
                                stamp.producer_id,
                                WrittenBatch {
                                    base_sequence: stamp.base_sequence,
                                    record_count: batch.count(),
                                    base_offset,
                                },
                            );
                    }
                    PartitionReply::Appended { base_offset }
                }
                EntryPayload::Normal(PartitionCommand::Retain { log_start_offset }) => {
                    // Never past what is committed, never backwards.
                    let target = log_start_offset.min(high_watermark);
                    self.log_start_offset.send_if_modified(|start| {
                        let moved = target > *start;
                        if moved {
                            *start = target;
                        }
                        moved
                    });
                    PartitionReply::Nothing
                }
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    PartitionReply::Nothing
                }
            };
            self.last_applied = Some(entry.log_id);
            if let Some(responder) = responder {
                responder.send(reply);
            }
        }
        self.high_watermark.send_if_modified(|hw| {
            let moved = *hw != high_watermark;
            *hw = high_watermark;
            moved
        });
        if let Some(applied) = self.last_applied {
            self.tail.applied(applied.index());
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Cut the snapshot at the retention boundary when there is one: a replica that
        // installs it then receives every entry after the boundary, i.e. all retained
        // records, instead of skipping to the latest applied entry.
        let log_start_offset = *self.log_start_offset.borrow();
        let boundary = {
            let log = self.log.read().unwrap_or_else(|e| e.into_inner());
            log.retention_boundary(log_start_offset)
        };
        let membership_before = |index: u64| {
            self.membership
                .log_id()
                .as_ref()
                .is_none_or(|id| id.index() <= index)
        };
        let applied = self.last_applied.map(|id| id.index());
        if let Some(b) = boundary
            && applied.is_some_and(|a| b.index <= a)
            && membership_before(b.index)
        {
            return PartitionSnapshotBuilder {
                group: self.group,
                store: self.store.clone(),
                meta: SnapshotMeta {
                    last_log_id: Some(LogId::new(
                        LeaderId {
                            term: b.term,
                            node_id: b.leader_node,
                        },
                        b.index,
                    )),
                    last_membership: self.membership.clone(),
                },
                snapshot: PartitionSnapshot {
                    high_watermark: b.next_offset(),
                    log_start_offset,
                },
            };
        }
        PartitionSnapshotBuilder {
            group: self.group,
            store: self.store.clone(),
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
            },
            snapshot: PartitionSnapshot {
                high_watermark: *self.high_watermark.borrow(),
                log_start_offset: *self.log_start_offset.borrow(),
            },
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Cursor<Vec<u8>>,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let state: PartitionSnapshot = decode(&data)?;
        save_snapshot_and_sync::<C>(&self.store, self.group, meta, &data).await?;
        *self.installed.lock().unwrap_or_else(|e| e.into_inner()) = Some(state.high_watermark);
        self.high_watermark.send_replace(state.high_watermark);
        self.log_start_offset.send_replace(state.log_start_offset);
        self.producers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<C, Cursor<Vec<u8>>>>, io::Error> {
        Ok(
            load_snapshot::<C>(&self.store, self.group)?.map(|(meta, data)| Snapshot {
                meta,
                snapshot: Cursor::new(data),
            }),
        )
    }
}
