//! Raft snapshots of any group, one per group, in RocksDB's `snapshot` column family.
//! A snapshot is written synced, and only over an older one: a background build must
//! not replace a newer snapshot installed meanwhile (the log below it may be purged).

use std::io;

use openraft::RaftTypeConfig;
use openraft::alias::SnapshotMetaOf;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::db::{CF_SNAPSHOT, GroupId, Store, group_key};
use super::raft_log::{decode, encode};

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct StoredSnapshot<C: RaftTypeConfig>
where
    SnapshotMetaOf<C>: Serialize + DeserializeOwned,
{
    meta: SnapshotMetaOf<C>,
    data: Vec<u8>,
}

/// Serializes the read-compare-write of snapshots.
static SNAPSHOT_WRITE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The stored snapshot of `group`: its metadata and data.
pub fn load_snapshot<C>(
    store: &Store,
    group: GroupId,
) -> io::Result<Option<(SnapshotMetaOf<C>, Vec<u8>)>>
where
    C: RaftTypeConfig,
    SnapshotMetaOf<C>: Serialize + DeserializeOwned,
{
    let cf = store.cf(CF_SNAPSHOT);
    match store
        .db()
        .get_cf(cf, group_key(group))
        .map_err(io::Error::other)?
    {
        Some(bytes) => {
            let stored: StoredSnapshot<C> = decode(&bytes)?;
            Ok(Some((stored.meta, stored.data)))
        }
        None => Ok(None),
    }
}

/// Stores a snapshot of `group` unless the stored one is at least as recent, and syncs.
pub async fn save_snapshot_and_sync<C>(
    store: &Store,
    group: GroupId,
    meta: &SnapshotMetaOf<C>,
    data: &[u8],
) -> io::Result<()>
where
    C: RaftTypeConfig,
    SnapshotMetaOf<C>: Serialize + DeserializeOwned,
{
    {
        let _guard = SNAPSHOT_WRITE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((current, _)) = load_snapshot::<C>(store, group)?
            && current.last_log_id >= meta.last_log_id
        {
            return Ok(());
        }
        let stored = StoredSnapshot::<C> {
            meta: meta.clone(),
            data: data.to_vec(),
        };
        store
            .db()
            .put_cf(store.cf(CF_SNAPSHOT), group_key(group), encode(&stored)?)
            .map_err(io::Error::other)?;
    }
    store.flusher().sync().await
}
