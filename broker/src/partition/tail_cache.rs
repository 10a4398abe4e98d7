//! The newest entries of a partition's Raft log, kept in memory as they were appended.
//!
//! openraft reads each entry back soon after appending it: the leader to replicate it,
//! every replica to apply it once committed. Served from here, those reads skip the
//! segment read, its CRC check and the re-parse. Entries leave once this replica has
//! applied them, or when the cache is over its caps, per partition and for the whole
//! broker; a miss reads the segment as before. (Until 2026-12-07 they left two commits
//! of their partition later: with 1,000 partitions, each committing every few seconds,
//! the broker's budget filled with entries long applied, and new ones were read back
//! from the disk.)
//!
//! A hit must match the log: the cache's newest entry must be the log's last entry
//! (same index and term; by Raft's log matching, the entries before it then agree
//! too), and the range must lie above the purge point. Truncation clears the cache.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use openraft::EntryPayload;

use super::types::{PartitionCommand, PartitionRaftConfig as C};

type Entry = openraft::alias::EntryOf<C>;

/// Entries one partition keeps at most.
const MAX_ENTRIES: usize = 128;
/// Payload bytes one partition keeps at most (its newest entry is kept regardless).
const MAX_BYTES: usize = 8 * 1024 * 1024;
/// Payload bytes all partitions of this broker keep at most.
const MAX_BROKER_BYTES: usize = 64 * 1024 * 1024;

static BROKER_BYTES: AtomicUsize = AtomicUsize::new(0);

#[derive(Default)]
pub struct TailCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: VecDeque<Entry>,
    bytes: usize,
}

fn payload_bytes(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(PartitionCommand::Append { batch, .. }) => batch.bytes().len(),
        _ => 0,
    }
}

impl Inner {
    fn pop_front(&mut self) {
        if let Some(entry) = self.entries.pop_front() {
            let size = payload_bytes(&entry);
            self.bytes -= size;
            BROKER_BYTES.fetch_sub(size, Ordering::Relaxed);
        }
    }

    fn clear(&mut self) {
        while !self.entries.is_empty() {
            self.pop_front();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        BROKER_BYTES.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl TailCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes `entry`, just appended to the log.
    pub fn push(&self, entry: &Entry) {
        let mut inner = self.lock();
        let index = entry.log_id.index;
        if inner
            .entries
            .back()
            .is_some_and(|last| last.log_id.index + 1 != index)
        {
            inner.clear();
        }
        let size = payload_bytes(entry);
        if BROKER_BYTES.load(Ordering::Relaxed) + size > MAX_BROKER_BYTES {
            // Over the broker's budget: this partition reads its segments instead.
            inner.clear();
            return;
        }
        BROKER_BYTES.fetch_add(size, Ordering::Relaxed);
        inner.bytes += size;
        inner.entries.push_back(entry.clone());
        while inner.entries.len() > MAX_ENTRIES
            || (inner.bytes > MAX_BYTES && inner.entries.len() > 1)
        {
            inner.pop_front();
        }
    }

    /// Notes that entries up to `index` are applied: they leave (a follower still behind
    /// reads them from the segment).
    pub fn applied(&self, index: u64) {
        let mut inner = self.lock();
        while inner
            .entries
            .front()
            .is_some_and(|first| first.log_id.index <= index)
        {
            inner.pop_front();
        }
    }

    /// Forgets every entry (the log was truncated or replaced).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The entries `start..end`, if all are here and the cache matches `log_last` (the
    /// term and index of the log's last entry) above `purged` (the log's purge point);
    /// at most `max_bytes` of payload unless the first entry alone is larger.
    pub fn get(
        &self,
        start: u64,
        end: u64,
        max_bytes: usize,
        log_last: Option<(u64, u64)>,
        purged: Option<u64>,
    ) -> Option<Vec<Entry>> {
        let inner = self.lock();
        let first = inner.entries.front()?;
        let last = inner.entries.back()?;
        let (last_term, last_index) = log_last?;
        let matches = last.log_id.index == last_index
            && last.log_id.leader_id.term == last_term
            && purged.is_none_or(|p| start > p);
        if !matches || start >= end || start < first.log_id.index || end - 1 > last.log_id.index {
            return None;
        }
        let skip = usize::try_from(start - first.log_id.index).ok()?;
        let count = usize::try_from(end - start).ok()?;
        let mut used = 0;
        let mut out = Vec::with_capacity(count);
        for entry in inner.entries.iter().skip(skip).take(count) {
            let size = payload_bytes(entry);
            if !out.is_empty() && used + size > max_bytes {
                break;
            }
            used += size;
            out.push(entry.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::LogId;
    use openraft::impls::leader_id_adv::LeaderId;
    use strait_records::{Compression, RecordBatch};

    use super::*;

    fn entry(term: u64, index: u64, payload: usize) -> Entry {
        let batch =
            RecordBatch::from_stored(Bytes::from(vec![0u8; payload]), Compression::None, 1, 0, 0);
        Entry {
            log_id: LogId::new(LeaderId { term, node_id: 1 }, index),
            payload: EntryPayload::Normal(PartitionCommand::Append {
                batch,
                producer: None,
            }),
        }
    }

    fn header(term: u64, index: u64) -> (u64, u64) {
        (term, index)
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[test]
    fn serves_only_what_it_holds_and_only_while_it_matches_the_log() {
        let cache = TailCache::default();
        for index in 5..10 {
            cache.push(&entry(2, index, 100));
        }
        let last = header(2, 9);
        let got = cache
            .get(6, 9, usize::MAX, Some(last), None)
            .expect("a hit");
        assert_eq!(indexes(&got), vec![6, 7, 8]);
        // Not all there, or past the end.
        assert!(cache.get(4, 7, usize::MAX, Some(last), None).is_none());
        assert!(cache.get(8, 11, usize::MAX, Some(last), None).is_none());
        // The log's last entry differs (another term, or another index).
        assert!(
            cache
                .get(6, 9, usize::MAX, Some(header(3, 9)), None)
                .is_none()
        );
        assert!(
            cache
                .get(6, 9, usize::MAX, Some(header(2, 8)), None)
                .is_none()
        );
        assert!(cache.get(6, 9, usize::MAX, None, None).is_none());
        // At or below the purge point.
        assert!(cache.get(6, 9, usize::MAX, Some(last), Some(6)).is_none());
        // The byte limit cuts the run, but never below one entry.
        let got = cache.get(5, 10, 250, Some(last), None).expect("a hit");
        assert_eq!(indexes(&got), vec![5, 6]);
        let got = cache.get(5, 10, 10, Some(last), None).expect("a hit");
        assert_eq!(indexes(&got), vec![5]);
    }

    #[test]
    fn a_gap_or_a_clear_starts_over_and_applied_entries_leave() {
        let cache = TailCache::default();
        for index in 1..=4 {
            cache.push(&entry(1, index, 10));
        }
        cache.push(&entry(1, 9, 10));
        assert!(
            cache
                .get(1, 2, usize::MAX, Some(header(1, 9)), None)
                .is_none()
        );
        assert!(
            cache
                .get(9, 10, usize::MAX, Some(header(1, 9)), None)
                .is_some()
        );
        cache.clear();
        assert!(
            cache
                .get(9, 10, usize::MAX, Some(header(1, 9)), None)
                .is_none()
        );

        for index in 10..=20 {
            cache.push(&entry(1, index, 10));
        }
        let last = header(1, 20);
        assert!(cache.get(10, 11, usize::MAX, Some(last), None).is_some());
        cache.applied(12);
        // Applied (up to 12): gone; 13 and up stay.
        assert!(cache.get(12, 13, usize::MAX, Some(last), None).is_none());
        assert!(cache.get(13, 21, usize::MAX, Some(last), None).is_some());
        cache.applied(20);
        assert!(cache.get(20, 21, usize::MAX, Some(last), None).is_none());
    }

    #[test]
    fn a_partition_keeps_its_newest_entries_within_its_caps() {
        let cache = TailCache::default();
        for index in 1..=200 {
            cache.push(&entry(1, index, 1));
        }
        let last = header(1, 200);
        assert!(cache.get(72, 73, usize::MAX, Some(last), None).is_none());
        assert!(cache.get(73, 201, usize::MAX, Some(last), None).is_some());
        cache.push(&entry(1, 201, MAX_BYTES + 1));
        let last = header(1, 201);
        assert!(cache.get(200, 201, usize::MAX, Some(last), None).is_none());
        assert!(cache.get(201, 202, usize::MAX, Some(last), None).is_some());
    }
}
