//! The small per-group Raft state kept in RocksDB whatever holds the entries: vote,
//! committed log id, last purged log id, and the index a replica that lost data must
//! get back before it may vote again (column family `raft_meta`).

use std::io;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::db::{CF_META, GroupId, Store, meta_key};
use super::raft_log::{decode, encode};

const TAG_VOTE: u8 = 1;
const TAG_COMMITTED: u8 = 2;
const TAG_LAST_PURGED: u8 = 3;
const TAG_RECOVER_UNTIL: u8 = 4;

/// Vote, committed and purged markers of one group.
#[derive(Clone)]
pub struct GroupMeta {
    store: Store,
    group: GroupId,
}

impl GroupMeta {
    pub fn new(store: Store, group: GroupId) -> Self {
        GroupMeta { store, group }
    }

    fn get<T: DeserializeOwned>(&self, tag: u8) -> io::Result<Option<T>> {
        let cf = self.store.cf(CF_META);
        match self
            .store
            .db()
            .get_cf(cf, meta_key(self.group, tag))
            .map_err(io::Error::other)?
        {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn put<T: Serialize>(&self, tag: u8, value: &T) -> io::Result<()> {
        let cf = self.store.cf(CF_META);
        self.store
            .db()
            .put_cf(cf, meta_key(self.group, tag), encode(value)?)
            .map_err(io::Error::other)
    }

    pub fn vote<V: DeserializeOwned>(&self) -> io::Result<Option<V>> {
        self.get(TAG_VOTE)
    }

    /// Stores the vote and returns once it is on stable storage: Raft's safety depends
    /// on a node never forgetting whom it voted for.
    pub async fn save_vote_and_sync<V: Serialize>(&self, vote: &V) -> io::Result<()> {
        self.put(TAG_VOTE, vote)?;
        self.store.flusher().sync().await
    }

    pub fn committed<L: DeserializeOwned>(&self) -> io::Result<Option<L>> {
        Ok(self.get::<Option<L>>(TAG_COMMITTED)?.flatten())
    }

    /// Not synced: losing it only delays re-applying entries until the next commit.
    pub fn save_committed<L: Serialize>(&self, committed: &Option<L>) -> io::Result<()> {
        self.put(TAG_COMMITTED, committed)
    }

    pub fn last_purged<L: DeserializeOwned>(&self) -> io::Result<Option<L>> {
        self.get(TAG_LAST_PURGED)
    }

    /// The Raft index this replica must hold again before it votes: set when it found
    /// entries it had acknowledged lost (a corrupt segment).
    pub fn recover_until(&self) -> io::Result<Option<u64>> {
        self.get(TAG_RECOVER_UNTIL)
    }

    /// Synced: a replica that forgot it lost data could help elect a leader without it.
    pub async fn save_recover_until_and_sync(&self, index: Option<u64>) -> io::Result<()> {
        match index {
            Some(index) => self.put(TAG_RECOVER_UNTIL, &index)?,
            None => self.delete(TAG_RECOVER_UNTIL)?,
        }
        self.store.flusher().sync().await
    }

    /// [`GroupMeta::save_recover_until_and_sync`] for blocking code (opening a log): a
    /// synced write of its own. Never lowers a stored value.
    pub fn raise_recover_until_blocking(&self, index: u64) -> io::Result<()> {
        if self.recover_until()?.is_some_and(|stored| stored >= index) {
            return Ok(());
        }
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        self.store
            .db()
            .put_cf_opt(
                self.store.cf(CF_META),
                meta_key(self.group, TAG_RECOVER_UNTIL),
                encode(&index)?,
                &options,
            )
            .map_err(io::Error::other)
    }

    fn delete(&self, tag: u8) -> io::Result<()> {
        self.store
            .db()
            .delete_cf(self.store.cf(CF_META), meta_key(self.group, tag))
            .map_err(io::Error::other)
    }

    /// Synced, because entries at or below it may be deleted right after.
    pub async fn save_last_purged_and_sync<L: Serialize>(&self, log_id: &L) -> io::Result<()> {
        self.put(TAG_LAST_PURGED, log_id)?;
        self.store.flusher().sync().await
    }
}
