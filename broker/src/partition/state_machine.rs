//! openraft state machine of a partition group: it moves the high watermark.
//!
//! The records and their offsets live in the segmented log (written once, by the log
//! store); applying a committed batch only advances the high watermark — the offset
//! after the last committed record — and answers the batch's base offset to the
//! producer. The watermark is rebuilt at start-up by re-applying the committed log.

use std::io::{self, Cursor};

use futures::{Stream, TryStreamExt};
use openraft::alias::SnapshotOf;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend};
use tokio::sync::watch;

use super::types::{PartitionCommand, PartitionRaftConfig as C, PartitionReply};
use crate::storage::{decode, encode};

type LogId = openraft::alias::LogIdOf<C>;
type StoredMembership = openraft::alias::StoredMembershipOf<C>;
type SnapshotMeta = openraft::alias::SnapshotMetaOf<C>;

pub struct PartitionStateMachine {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    high_watermark: watch::Sender<u64>,
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
}

impl PartitionStateMachine {
    /// A fresh state machine and a receiver of its high watermark.
    pub fn new() -> (PartitionStateMachine, watch::Receiver<u64>) {
        let (tx, rx) = watch::channel(0);
        let sm = PartitionStateMachine {
            last_applied: None,
            membership: StoredMembership::default(),
            high_watermark: tx,
            snapshot: None,
        };
        (sm, rx)
    }
}

/// A snapshot of a partition group is its high watermark: the records stay in the log.
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
                    high_watermark += records.len() as u64;
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
        let data = encode(&*self.high_watermark.borrow());
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
        let high_watermark: u64 = decode(&data)?;
        self.high_watermark.send_replace(high_watermark);
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
