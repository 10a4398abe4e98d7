//! openraft's `RaftLogStorage` over the broker's RocksDB, one key range per group.
//!
//! Appends are written unsynced (readable at once) and handed to the [`Flusher`]; openraft
//! is told an entry is durable only from the flusher, after the fsync. Votes are synced
//! before `save_vote` returns. All write IO of a group goes through its single
//! `RaftLogStore` (openraft serializes calls), so no extra locking is needed.

use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};

use openraft::alias::{LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, RaftTypeConfig};
use rocksdb::{Direction, IteratorMode, WriteBatch};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::db::{CF_LOG, GroupId, Store, index_of_log_key, log_key};
use super::group_meta::GroupMeta;

/// Most entry bytes openraft reads for one AppendEntries (the transport allows 256 MiB).
pub const REPLICATION_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Serializes a value stored on disk or sent between brokers.
pub fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    rmp_serde::to_vec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Deserializes bytes written by [`encode`]; malformed input is an `InvalidData` error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The Raft log, vote and commit index of one group.
pub struct RaftLogStore<C> {
    store: Store,
    group: GroupId,
    meta: GroupMeta,
    _config: PhantomData<fn() -> C>,
}

impl<C> Clone for RaftLogStore<C> {
    fn clone(&self) -> Self {
        RaftLogStore {
            store: self.store.clone(),
            group: self.group,
            meta: self.meta.clone(),
            _config: PhantomData,
        }
    }
}

impl<C: RaftTypeConfig> RaftLogStore<C> {
    pub fn new(store: Store, group: GroupId) -> Self {
        RaftLogStore {
            meta: GroupMeta::new(store.clone(), group),
            store,
            group,
            _config: PhantomData,
        }
    }

    /// Reads the entries with indexes in `[start, end)` that are present.
    fn read_range(&self, start: u64, end: u64) -> io::Result<Vec<C::Entry>> {
        self.read_range_limited(start, end, usize::MAX)
    }

    /// Like [`read_range`](Self::read_range), but stops once the entries read add up to
    /// `byte_budget` (always returning at least one entry when the range is not empty).
    fn read_range_limited(
        &self,
        start: u64,
        end: u64,
        byte_budget: usize,
    ) -> io::Result<Vec<C::Entry>> {
        let cf = self.store.cf(CF_LOG);
        let from = log_key(self.group, start);
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for item in self
            .store
            .db()
            .iterator_cf(cf, IteratorMode::From(&from, Direction::Forward))
        {
            let (key, value) = item.map_err(io::Error::other)?;
            if key.get(..8) != Some(&self.group.to_be_bytes()[..]) {
                break;
            }
            let Some(index) = index_of_log_key(&key) else {
                break;
            };
            if index >= end || (!entries.is_empty() && bytes + value.len() > byte_budget) {
                break;
            }
            bytes += value.len();
            entries.push(decode::<C::Entry>(&value)?);
        }
        Ok(entries)
    }

    fn last_entry(&self) -> io::Result<Option<C::Entry>> {
        let cf = self.store.cf(CF_LOG);
        let upper = log_key(self.group, u64::MAX);
        let mut iter = self
            .store
            .db()
            .iterator_cf(cf, IteratorMode::From(&upper, Direction::Reverse));
        match iter.next() {
            Some(item) => {
                let (key, value) = item.map_err(io::Error::other)?;
                if key.get(..8) != Some(&self.group.to_be_bytes()[..]) {
                    return Ok(None);
                }
                decode(&value).map(Some)
            }
            None => Ok(None),
        }
    }

    fn delete_range_unsynced(&self, start: u64, end: u64) -> io::Result<()> {
        let cf = self.store.cf(CF_LOG);
        self.store
            .db()
            .delete_range_cf(cf, log_key(self.group, start), log_key(self.group, end))
            .map_err(io::Error::other)
    }
}

/// `[start, end)` of a range of log indexes.
pub fn index_bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(x) => *x,
        Bound::Excluded(x) => x.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(x) => x.saturating_add(1),
        Bound::Excluded(x) => *x,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl<C> RaftLogReader<C> for RaftLogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
    VoteOf<C>: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
        let (start, end) = index_bounds(&range);
        self.read_range(start, end)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        self.meta.vote()
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<C::Entry>, io::Error> {
        // Keeps every AppendEntries well below the transport's message limit.
        self.read_range_limited(start, end, REPLICATION_BATCH_BYTES)
    }
}

impl<C> RaftLogStorage<C> for RaftLogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
    VoteOf<C>: Serialize + DeserializeOwned,
    LogIdOf<C>: Serialize + DeserializeOwned,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let last_purged_log_id: Option<LogIdOf<C>> = self.meta.last_purged()?;
        let last_log_id = match self.last_entry()? {
            Some(entry) => Some(entry.log_id()),
            None => last_purged_log_id.clone(),
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        self.meta.save_vote_and_sync(vote).await
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        self.meta.save_committed(&committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        self.meta.committed()
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self.store.cf(CF_LOG);
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(cf, log_key(self.group, entry.index()), encode(&entry)?);
        }
        self.store.db().write(batch).map_err(io::Error::other)?;
        self.store
            .flusher()
            .after_sync(move |res| callback.io_completed(res));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let from = last_log_id.map(|id| id.index() + 1).unwrap_or(0);
        // Later appends are synced by the flusher, which covers this deletion too.
        self.delete_range_unsynced(from, u64::MAX)
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        // Record the purge point first: entries at or below it are ignored from then on.
        self.meta.save_last_purged_and_sync(&log_id).await?;
        self.delete_range_unsynced(0, log_id.index() + 1)
    }
}
