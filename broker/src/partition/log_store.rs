//! openraft's log storage for partition groups, over the segmented partition log: each
//! Raft entry is one batch in a segment file, so records are written once, with their
//! offsets. Vote, committed and purged markers stay in RocksDB ([`GroupMeta`]).
//!
//! Appends are written unsynced (readable at once) and reported durable to openraft by
//! the shared [`SegmentSyncer`] after an fdatasync of the segment file; with the topic
//! config `flush=async`, at once, with the fdatasync following in the background (a
//! failed one stops the group).

use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use openraft::alias::{LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{EntryPayload, LogId, OptionalSend};
use strait_records::{Compression, RecordBatch};

use super::state_machine::InstalledOffset;
use super::tail_cache::TailCache;
use super::types::{PartitionCommand, PartitionRaftConfig as C, ProducerStamp};
use crate::storage::partition_log::format::EntryKind;
use crate::storage::partition_log::log::{NewEntry, PartitionLog};
use crate::storage::partition_log::segment::StoredBatch;
use crate::storage::partition_log::syncer::SegmentSyncer;
use crate::storage::{GroupMeta, REPLICATION_BATCH_BYTES, decode, encode, index_bounds};

type Entry = openraft::alias::EntryOf<C>;

/// The log of one partition group; clones share it.
#[derive(Clone)]
pub struct PartitionLogStore {
    log: Arc<RwLock<PartitionLog>>,
    meta: GroupMeta,
    syncer: SegmentSyncer,
    installed: InstalledOffset,
    /// The topic's `flush=async`: appends count as durable once written, and the
    /// fdatasync follows in the background.
    flush_async: Arc<AtomicBool>,
    /// Set when a background fdatasync (`flush=async`) failed: the group must stop, as
    /// acknowledged data may be lost.
    sync_failed: Arc<AtomicBool>,
    /// The newest entries as appended, so that replicating and applying them need not
    /// read them back.
    tail: Arc<TailCache>,
}

impl PartitionLogStore {
    /// Wraps an opened log; restores its purge point from `meta`.
    pub fn new(
        log: Arc<RwLock<PartitionLog>>,
        meta: GroupMeta,
        syncer: SegmentSyncer,
        installed: InstalledOffset,
        flush_async: Arc<AtomicBool>,
    ) -> io::Result<Self> {
        let purged: Option<LogIdOf<C>> = meta.last_purged()?;
        log.write()
            .unwrap_or_else(|e| e.into_inner())
            .set_purged_through(purged.map(|id| id.index()));
        Ok(PartitionLogStore {
            log,
            meta,
            syncer,
            installed,
            flush_async,
            sync_failed: Arc::default(),
            tail: Arc::default(),
        })
    }

    /// The stored committed index, when the log no longer reaches it (a cut removed
    /// committed entries).
    pub fn lost_commit(&self) -> io::Result<Option<u64>> {
        let Some(committed) = self.meta.committed::<LogIdOf<C>>()? else {
            return Ok(None);
        };
        let last = self.last_log_id()?;
        Ok((last.is_none_or(|l| l.index() < committed.index())).then(|| committed.index()))
    }

    /// Lowers the stored committed id to the log's last entry when the log no longer
    /// reaches it: openraft re-applies committed entries at start-up and would fail on
    /// missing ones. Record the loss first ([`PartitionLogStore::lost_commit`]).
    pub fn forget_lost_commits(&self) -> io::Result<()> {
        if self.lost_commit()?.is_some() {
            self.meta.save_committed(&self.last_log_id()?)?;
        }
        Ok(())
    }

    /// The last entry's id: the log's last, or the purge point when nothing is left.
    fn last_log_id(&self) -> io::Result<Option<LogIdOf<C>>> {
        Ok(self.last_log_id_after(self.meta.last_purged()?))
    }

    fn last_log_id_after(&self, last_purged_log_id: Option<LogIdOf<C>>) -> Option<LogIdOf<C>> {
        let purged_index = last_purged_log_id.map(|id| id.index());
        let last = self
            .read()
            .last()
            .copied()
            .filter(|h| purged_index.is_none_or(|p| h.index > p));
        match last {
            Some(h) => Some(LogId::new(
                LeaderId {
                    term: h.term,
                    node_id: h.leader_node,
                },
                h.index,
            )),
            None => last_purged_log_id,
        }
    }

    /// The cache of the newest entries, which the state machine empties as it applies.
    pub fn tail_cache(&self) -> Arc<TailCache> {
        self.tail.clone()
    }

    /// Entries `start..end` (at most `max_bytes`, at least one) from the tail cache.
    fn cached(&self, start: u64, end: u64, max_bytes: usize) -> Option<Vec<Entry>> {
        let log = self.read();
        let last = log.last().map(|h| (h.term, h.index));
        self.tail
            .get(start, end, max_bytes, last, log.purged_through())
    }

    fn read(&self) -> RwLockReadGuard<'_, PartitionLog> {
        self.log.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, PartitionLog> {
        self.log.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The frame fields of an entry besides its place in the Raft log.
struct Fields {
    kind: EntryKind,
    record_count: u32,
    first_timestamp: i64,
    max_timestamp: i64,
    producer: Option<ProducerStamp>,
    compression: Compression,
}

impl Fields {
    fn empty(kind: EntryKind) -> Fields {
        Fields {
            kind,
            record_count: 0,
            first_timestamp: 0,
            max_timestamp: 0,
            producer: None,
            compression: Compression::None,
        }
    }
}

/// The frame fields and payload bytes of an entry: a record batch is stored as the
/// bytes it arrived in.
fn to_batch(entry: &Entry) -> io::Result<(Fields, Bytes)> {
    Ok(match &entry.payload {
        EntryPayload::Blank => (Fields::empty(EntryKind::Blank), Bytes::new()),
        EntryPayload::Normal(PartitionCommand::Append { batch, producer }) => (
            Fields {
                kind: EntryKind::Records,
                record_count: batch.count(),
                first_timestamp: batch.first_timestamp(),
                max_timestamp: batch.max_timestamp(),
                producer: *producer,
                compression: batch.compression(),
            },
            batch.bytes().clone(),
        ),
        EntryPayload::Membership(membership) => (
            Fields::empty(EntryKind::Membership),
            encode(membership)?.into(),
        ),
        EntryPayload::Normal(command @ PartitionCommand::Retain { .. }) => {
            (Fields::empty(EntryKind::Control), encode(command)?.into())
        }
    })
}

/// Rebuilds the Raft entry stored as `batch`.
fn to_entry(batch: &StoredBatch) -> io::Result<Entry> {
    let h = &batch.header;
    let log_id = LogId::new(
        LeaderId {
            term: h.term,
            node_id: h.leader_node,
        },
        h.index,
    );
    let payload = match h.kind {
        EntryKind::Blank => EntryPayload::Blank,
        // The frame's CRC vouches for the bytes, checked when they arrived.
        EntryKind::Records => EntryPayload::Normal(PartitionCommand::Append {
            batch: RecordBatch::from_stored(
                batch.payload.clone(),
                Compression::from_code(h.compression).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "unknown compression code")
                })?,
                h.record_count,
                h.first_timestamp,
                h.max_timestamp,
            ),
            producer: (h.producer_id != 0).then_some(ProducerStamp {
                producer_id: h.producer_id,
                base_sequence: h.base_sequence,
            }),
        }),
        EntryKind::Membership => EntryPayload::Membership(decode(&batch.payload)?),
        EntryKind::Control => EntryPayload::Normal(decode(&batch.payload)?),
    };
    Ok(Entry { log_id, payload })
}

impl RaftLogReader<C> for PartitionLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = index_bounds(&range);
        if let Some(entries) = self.cached(start, end, usize::MAX) {
            return Ok(entries);
        }
        let batches = self.read().read_indexes(start, end, usize::MAX)?;
        batches.iter().map(to_entry).collect()
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        self.meta.vote()
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        // Keeps every AppendEntries well below the transport's message limit.
        if let Some(entries) = self.cached(start, end, REPLICATION_BATCH_BYTES) {
            return Ok(entries);
        }
        let batches = self
            .read()
            .read_indexes(start, end, REPLICATION_BATCH_BYTES)?;
        batches.iter().map(to_entry).collect()
    }
}

impl RaftLogStorage<C> for PartitionLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let last_purged_log_id = self.meta.last_purged()?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: self.last_log_id_after(last_purged_log_id),
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
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        if self.sync_failed.load(Ordering::Relaxed) {
            return Err(io::Error::other(
                "a background fdatasync failed (flush=async); the replica must restart",
            ));
        }
        let now = now_ms();
        let flush_async = self.flush_async.load(Ordering::Relaxed);
        let handle = {
            let mut log = self.write();
            log.set_write_through(flush_async)?;
            for entry in entries {
                let (fields, payload) = to_batch(&entry)?;
                let (leader_id, index) = entry.log_id_parts();
                let producer = fields.producer.unwrap_or(ProducerStamp {
                    producer_id: 0,
                    base_sequence: 0,
                });
                log.append(
                    NewEntry {
                        term: leader_id.term,
                        leader_node: leader_id.node_id,
                        index,
                        kind: fields.kind,
                        record_count: fields.record_count,
                        first_timestamp: fields.first_timestamp,
                        max_timestamp: fields.max_timestamp,
                        producer_id: producer.producer_id,
                        base_sequence: producer.base_sequence,
                        compression: fields.compression.code(),
                        payload: &payload,
                    },
                    now,
                )?;
                self.tail.push(&entry);
            }
            log.sync_handle()
        };
        match handle {
            Some(file) if flush_async => {
                let failed = self.sync_failed.clone();
                self.syncer.after_sync(file, move |res| {
                    if res.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                });
                callback.io_completed(Ok(()));
            }
            Some(file) => self
                .syncer
                .after_sync(file, move |res| callback.io_completed(res)),
            None => callback.io_completed(Ok(())),
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let first_removed = last_log_id.map_or(0, |id| id.index() + 1);
        let mut log = self.write();
        self.tail.clear();
        log.truncate_from(first_removed)
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        // Record the purge point first: entries at or below it are ignored from then on.
        self.meta.save_last_purged_and_sync(&log_id).await?;
        let installed = self
            .installed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let mut log = self.write();
        self.tail.clear();
        let beyond_end = log.last().is_none_or(|h| h.index <= log_id.index());
        match installed {
            // A snapshot from the leader covers everything this replica had.
            Some(next_offset) if beyond_end => log.reset(next_offset, log_id.index()),
            _ => log.purge_through(log_id.index()).map(|_| ()),
        }
    }
}
