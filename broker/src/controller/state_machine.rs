//! openraft state machine of the controller group.
//!
//! The state lives in memory and is rebuilt at start-up from the last snapshot plus the
//! committed log (openraft re-applies it), so only the snapshot is written here, synced.
//! After every applied batch the new image is published to the broker's
//! [`MetadataCache`].

use std::io::{self, Cursor};

use futures::{Stream, TryStreamExt};
use openraft::alias::SnapshotOf;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend};

use super::state::{ClusterState, ControllerReply};
use super::types::ControllerRaftConfig as C;
use crate::metadata::MetadataCache;
use crate::storage::{Store, decode, encode, load_snapshot, save_snapshot_and_sync};

type LogId = openraft::alias::LogIdOf<C>;
type StoredMembership = openraft::alias::StoredMembershipOf<C>;
type SnapshotMeta = openraft::alias::SnapshotMetaOf<C>;

/// Snapshot key in the store's snapshot column family: the controller is group 0.
const CONTROLLER_GROUP: u64 = 0;

pub struct ControllerStateMachine {
    state: ClusterState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    store: Store,
    cache: MetadataCache,
}

impl ControllerStateMachine {
    /// Loads the last snapshot, if any, and publishes it.
    pub fn open(store: Store, cache: MetadataCache) -> io::Result<Self> {
        let mut sm = ControllerStateMachine {
            state: ClusterState::new(),
            last_applied: None,
            membership: StoredMembership::default(),
            store,
            cache,
        };
        if let Some((meta, data)) = load_snapshot::<C>(&sm.store, CONTROLLER_GROUP)? {
            sm.state = decode(&data)?;
            sm.last_applied = meta.last_log_id;
            sm.membership = meta.last_membership;
        }
        sm.publish();
        Ok(sm)
    }

    fn publish(&self) {
        let version = self.last_applied.as_ref().map_or(0, |id| id.index() + 1);
        self.cache.publish_state(self.state.clone(), version);
    }
}

/// Captures the state at one applied index and writes it as the current snapshot.
pub struct ControllerSnapshotBuilder {
    state: ClusterState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    store: Store,
}

impl RaftSnapshotBuilder<C> for ControllerSnapshotBuilder {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Cursor<Vec<u8>>>, io::Error> {
        let data = encode(&self.state)?;
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
        };
        save_snapshot_and_sync::<C>(&self.store, CONTROLLER_GROUP, &meta, &data).await?;
        Ok(Snapshot {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<C> for ControllerStateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = ControllerSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let reply = match entry.payload {
                EntryPayload::Blank => ControllerReply::Done,
                EntryPayload::Normal(command) => self.state.apply(command),
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    ControllerReply::Done
                }
            };
            self.last_applied = Some(entry.log_id);
            if let Some(responder) = responder {
                responder.send(reply);
            }
        }
        self.publish();
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        ControllerSnapshotBuilder {
            state: self.state.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            store: self.store.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Cursor<Vec<u8>>,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let state: ClusterState = decode(&data)?;
        save_snapshot_and_sync::<C>(&self.store, CONTROLLER_GROUP, meta, &data).await?;
        self.state = state;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<C, Cursor<Vec<u8>>>>, io::Error> {
        Ok(
            load_snapshot::<C>(&self.store, CONTROLLER_GROUP)?.map(|(meta, data)| Snapshot {
                meta,
                snapshot: Cursor::new(data),
            }),
        )
    }
}
