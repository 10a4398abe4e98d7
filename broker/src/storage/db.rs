//! The broker's RocksDB instance and its key layout.
//!
//! Column families: `raft_log` (group id ++ log index → entry), `raft_meta`
//! (group id ++ tag → vote / committed / last purged) and `snapshot` (group id → the
//! group's current snapshot). Keys are big-endian so that a group's entries sort by index.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Options, WriteBatch};

use super::flusher::Flusher;

/// Raft group id: 0 is the controller, partitions get ids from the controller.
pub type GroupId = u64;

pub(crate) const CF_LOG: &str = "raft_log";
pub(crate) const CF_META: &str = "raft_meta";
pub(crate) const CF_SNAPSHOT: &str = "snapshot";

/// Failure of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("creating data directory {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
}

/// Shared handle to the broker's RocksDB and its flusher.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
    flusher: Flusher,
}

impl Store {
    /// Opens (or creates) the database under `dir` and starts the flusher thread.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = [CF_LOG, CF_META, CF_SNAPSHOT]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = Arc::new(DB::open_cf_descriptors(&opts, dir, cfs)?);
        let flusher = Flusher::start(&db);
        Ok(Store { db, flusher })
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    pub(crate) fn flusher(&self) -> &Flusher {
        &self.flusher
    }

    pub(crate) fn cf(&self, name: &'static str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created when the store opens")
    }

    /// Deletes every key of `group` (log, vote, snapshot) and syncs the deletion.
    pub async fn delete_group_and_sync(&self, group: GroupId) -> std::io::Result<()> {
        let mut batch = WriteBatch::default();
        for name in [CF_LOG, CF_META, CF_SNAPSHOT] {
            batch.delete_range_cf(self.cf(name), group_key(group), group_key(group + 1));
        }
        self.db.write(batch).map_err(std::io::Error::other)?;
        self.flusher.sync().await
    }
}

impl Store {
    /// Ids of every group with state in this store (scans one key per group).
    pub fn group_ids(&self) -> Result<Vec<GroupId>, StoreError> {
        let cf = self.cf(CF_META);
        let mut groups = Vec::new();
        let mut next = 0u64;
        loop {
            let start = group_key(next);
            let mut iter = self.db.iterator_cf(
                cf,
                rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward),
            );
            let Some(item) = iter.next() else { break };
            let (key, _) = item?;
            let Some(bytes) = key.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
                break;
            };
            let group = u64::from_be_bytes(bytes);
            groups.push(group);
            match group.checked_add(1) {
                Some(n) => next = n,
                None => break,
            }
        }
        Ok(groups)
    }
}

pub(crate) fn group_key(group: GroupId) -> [u8; 8] {
    group.to_be_bytes()
}

pub(crate) fn log_key(group: GroupId, index: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&group.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

pub(crate) fn meta_key(group: GroupId, tag: u8) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[..8].copy_from_slice(&group.to_be_bytes());
    key[8] = tag;
    key
}

/// Reads the log index out of a `raft_log` key.
pub(crate) fn index_of_log_key(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(8..16)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}
