//! openraft state machine of a partition group: assigns offsets to committed batches.
//!
//! The records themselves stay in the Raft log (written once); the state machine keeps
//! only the offset index — base offset of each batch → its log index — and the high
//! watermark (next offset). Both are rebuilt at start-up by re-applying the committed
//! log, which is never purged until retention arrives with the segmented log.

use std::collections::BTreeMap;
use std::io::{self, Cursor};
use std::sync::{Arc, RwLock};

use futures::{Stream, TryStreamExt};
use openraft::alias::SnapshotOf;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::types::{PartitionCommand, PartitionRaftConfig as C, PartitionReply};
use crate::storage::{decode, encode};

type LogId = openraft::alias::LogIdOf<C>;
type StoredMembership = openraft::alias::StoredMembershipOf<C>;
type SnapshotMeta = openraft::alias::SnapshotMetaOf<C>;

/// Where each committed batch lives, and the high watermark.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OffsetIndex {
    /// One past the last committed offset.
    pub high_watermark: u64,
    /// Base offset → (Raft log index, record count).
    pub batches: BTreeMap<u64, (u64, u32)>,
}

impl OffsetIndex {
    /// The batches holding offsets from `offset` on, in order, at most `limit` of them.
    pub fn batches_from(&self, offset: u64, limit: usize) -> Vec<(u64, u64, u32)> {
        let start = self
            .batches
            .range(..=offset)
            .next_back()
            .map_or(offset, |(base, _)| *base);
        self.batches
            .range(start..)
            .take(limit)
            .map(|(base, (index, count))| (*base, *index, *count))
            .collect()
    }
}

/// Shared, read-mostly view of the index for the fetch path.
#[derive(Clone)]
pub struct IndexHandle {
    index: Arc<RwLock<OffsetIndex>>,
    high_watermark: watch::Receiver<u64>,
}

impl IndexHandle {
    pub fn read<T>(&self, f: impl FnOnce(&OffsetIndex) -> T) -> T {
        f(&self.index.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn high_watermark(&self) -> u64 {
        *self.high_watermark.borrow()
    }

    /// A receiver notified whenever the high watermark moves.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.high_watermark.clone()
    }
}

pub struct PartitionStateMachine {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    index: Arc<RwLock<OffsetIndex>>,
    high_watermark: watch::Sender<u64>,
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
}

impl PartitionStateMachine {
    pub fn new() -> (PartitionStateMachine, IndexHandle) {
        let index = Arc::new(RwLock::new(OffsetIndex::default()));
        let (tx, rx) = watch::channel(0);
        let sm = PartitionStateMachine {
            last_applied: None,
            membership: StoredMembership::default(),
            index: index.clone(),
            high_watermark: tx,
            snapshot: None,
        };
        (
            sm,
            IndexHandle {
                index,
                high_watermark: rx,
            },
        )
    }

    fn replace_index(&self, new: OffsetIndex) {
        let hw = new.high_watermark;
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = new;
        self.high_watermark.send_replace(hw);
    }
}

/// Captures the offset index; see the module docs on why the log is not included.
pub struct PartitionSnapshotBuilder {
    meta: SnapshotMeta,
    data: io::Result<Vec<u8>>,
}

impl RaftSnapshotBuilder<C> for PartitionSnapshotBuilder {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Cursor<Vec<u8>>>, io::Error> {
        let data = std::mem::replace(&mut self.data, Ok(Vec::new()))?;
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
                EntryPayload::Normal(PartitionCommand::Append { records }) => {
                    let base_offset = high_watermark;
                    let count = records.len() as u32;
                    let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
                    index
                        .batches
                        .insert(base_offset, (entry.log_id.index(), count));
                    high_watermark += u64::from(count);
                    index.high_watermark = high_watermark;
                    PartitionReply::Appended { base_offset }
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
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let data = encode(&*self.index.read().unwrap_or_else(|e| e.into_inner()));
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
        };
        if let Ok(bytes) = &data {
            self.snapshot = Some((meta.clone(), bytes.clone()));
        }
        PartitionSnapshotBuilder { meta, data }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Cursor<Vec<u8>>,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let index: OffsetIndex = decode(&data)?;
        self.replace_index(index);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<C, Cursor<Vec<u8>>>>, io::Error> {
        Ok(self.snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Cursor::new(data.clone()),
        }))
    }
}
