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
use serde::{Deserialize, Serialize};

use super::state::{ClusterState, ControllerReply};
use super::types::ControllerRaftConfig as C;
use crate::metadata::MetadataCache;
use crate::storage::{Store, decode, encode};

type LogId = openraft::alias::LogIdOf<C>;
type StoredMembership = openraft::alias::StoredMembershipOf<C>;
type SnapshotMeta = openraft::alias::SnapshotMetaOf<C>;

/// Snapshot key in the store's snapshot column family: the controller is group 0.
const CONTROLLER_GROUP: u64 = 0;

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

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
        if let Some(stored) = sm.load_snapshot()? {
            sm.state = decode(&stored.data)?;
            sm.last_applied = stored.meta.last_log_id;
            sm.membership = stored.meta.last_membership;
        }
        sm.publish();
        Ok(sm)
    }

    fn publish(&self) {
        let version = self.last_applied.as_ref().map_or(0, |id| id.index() + 1);
        self.cache.publish_state(self.state.clone(), version);
    }

    fn load_snapshot(&self) -> io::Result<Option<StoredSnapshot>> {
        let cf = self.store.cf(crate::storage::CF_SNAPSHOT);
        match self
            .store
            .db()
            .get_cf(cf, CONTROLLER_GROUP.to_be_bytes())
            .map_err(io::Error::other)?
        {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }
}

/// Serializes snapshot writes: a build running in the background must not overwrite a
/// newer snapshot installed meanwhile (the log below it may be purged already).
static SNAPSHOT_WRITE: std::sync::Mutex<()> = std::sync::Mutex::new(());

async fn save_snapshot_and_sync(store: &Store, snapshot: &StoredSnapshot) -> io::Result<()> {
    {
        let _guard = SNAPSHOT_WRITE.lock().unwrap_or_else(|e| e.into_inner());
        let cf = store.cf(crate::storage::CF_SNAPSHOT);
        let key = CONTROLLER_GROUP.to_be_bytes();
        if let Some(bytes) = store.db().get_cf(cf, key).map_err(io::Error::other)? {
            let current: StoredSnapshot = decode(&bytes)?;
            if current.meta.last_log_id >= snapshot.meta.last_log_id {
                return Ok(());
            }
        }
        store
            .db()
            .put_cf(cf, key, encode(snapshot)?)
            .map_err(io::Error::other)?;
    }
    store.flusher().sync().await
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
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        save_snapshot_and_sync(&self.store, &stored).await?;
        Ok(Snapshot {
            meta,
            snapshot: Cursor::new(stored.data),
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
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        save_snapshot_and_sync(&self.store, &stored).await?;
        self.state = state;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<C, Cursor<Vec<u8>>>>, io::Error> {
        Ok(self.load_snapshot()?.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Cursor::new(stored.data),
        }))
    }
}
