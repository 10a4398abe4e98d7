//! A partition's log: an ordered run of segment files in one directory. Appends go to
//! the last (active) segment, which rolls when it reaches `segment_bytes` or
//! `segment_ms`; reads find the segment by Raft index, offset or timestamp; a suffix
//! can be truncated (uncommitted entries after a leader change) and a prefix of whole
//! segments deleted (retention).
//!
//! Offsets are a pure function of the log: a batch's base offset is the offset after
//! the batch before it, so replicas holding the same entries agree on every offset.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{BatchHeader, EntryKind};
use super::index_file;
use super::seal::{Seal, sync_dir};
use super::segment::{Recovery, Segment, StoredBatch};
use super::syncer::SyncTarget;

/// When the active segment rolls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollPolicy {
    /// Roll once the active segment holds this many bytes (Kafka's `segment.bytes`).
    pub segment_bytes: u64,
    /// Roll once the active segment's first record is this old (`segment.ms`).
    pub segment_ms: i64,
}

impl Default for RollPolicy {
    fn default() -> Self {
        RollPolicy {
            segment_bytes: 256 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// An entry to append: everything but its offset, which the log assigns.
#[derive(Debug, Clone, Copy)]
pub struct NewEntry<'a> {
    pub term: u64,
    pub leader_node: u64,
    pub index: u64,
    pub kind: EntryKind,
    pub record_count: u32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    /// The idempotent producer of the records (0: none) and its first sequence number.
    pub producer_id: u64,
    pub base_sequence: u64,
    /// The payload's compression code.
    pub compression: u8,
    pub payload: &'a [u8],
}

/// What opening the log repaired.
#[derive(Debug)]
pub struct LogRecovery {
    pub segment: PathBuf,
    pub recovery: Recovery,
    /// Later segments dropped because they no longer follow the repaired one.
    pub dropped_segments: Vec<PathBuf>,
    /// The Raft index of the last entry the log keeps.
    pub kept_through: Option<u64>,
    /// Whether the damage was in a sealed segment: those were synced when they rolled,
    /// so what was cut had been durable (and acknowledged), not a torn write.
    pub sealed: bool,
    /// The largest Raft index the dropped data reached, as far as it could be read
    /// (past the damage, or in the dropped segments). Known only when valid data
    /// followed the damage: then it was corruption in the middle of the log, not a
    /// torn write at its end.
    pub lost_through: Option<u64>,
}

/// How much of the log opening verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Scan the active segment; open sealed segments from their index files when those
    /// are intact and current (normal start-up).
    ActiveSegment,
    /// Scan and verify every segment (after a read found corruption).
    Everything,
}

/// Called when a read finds a batch that fails its checks (bit rot in a sealed segment).
pub type CorruptionHook = std::sync::Arc<dyn Fn(&io::Error) + Send + Sync>;

pub struct PartitionLog {
    dir: PathBuf,
    corruption_hook: Option<CorruptionHook>,
    policy: RollPolicy,
    /// Ordered by base offset and by Raft index alike; never empty after `open`.
    segments: Vec<Segment>,
    /// Offset the next record batch gets.
    next_offset: u64,
    /// Entries at or below this Raft index are purged: never read, even while the
    /// segment holding them still exists.
    purged_through: Option<u64>,
    /// Whether appends bypass the page cache (when not writing through).
    direct_io: bool,
    /// Appends must reach the file at once (`flush=async`: acknowledged before the
    /// fsync, they must survive the process): no direct log holding them.
    write_through: bool,
    /// The sealing of the segment before the active one, while it may not have run
    /// (see [`super::seal`]).
    sealing: Option<Arc<Seal>>,
}

impl Drop for PartitionLog {
    /// A seal still pending runs now: no one would run it later, and a log reopened on
    /// these files must not find it writing to them.
    fn drop(&mut self) {
        if let Some(seal) = &self.sealing {
            let _ = seal.run();
        }
    }
}

fn parse_base_offset(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".log")?;
    (stem.len() == 20).then(|| stem.parse().ok()).flatten()
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`. The active segment is always scanned; sealed
    /// segments are scanned when `verify` asks for it or their index file is missing or
    /// stale (the index is then rewritten). A torn or corrupt segment is cut at its last
    /// valid batch and the segments after it are deleted: the replica fetches what it
    /// lost from the leader again.
    pub fn open(
        dir: &Path,
        policy: RollPolicy,
        verify: Verify,
    ) -> io::Result<(PartitionLog, Option<LogRecovery>)> {
        PartitionLog::open_with(dir, policy, verify, |_| Ok(()))
    }

    /// Like [`PartitionLog::open`]; `before_cut` sees what must be cut before any file
    /// changes, so that the caller can durably record a loss first (and refuse it).
    pub fn open_with(
        dir: &Path,
        policy: RollPolicy,
        verify: Verify,
        before_cut: impl FnOnce(&LogRecovery) -> io::Result<()>,
    ) -> io::Result<(PartitionLog, Option<LogRecovery>)> {
        std::fs::create_dir_all(dir)?;
        let mut paths: Vec<(u64, PathBuf)> = Vec::new();
        let mut index_files = Vec::new();
        for path in std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())) {
            if let Some(base) = parse_base_offset(&path) {
                paths.push((base, path));
            } else if path.extension().is_some_and(|e| e == "index" || e == "tmp") {
                index_files.push(path);
            }
        }
        paths.sort();
        // Index files whose segment is gone (a crash between the two removals).
        for path in index_files {
            if !paths.iter().any(|(_, p)| index_file::index_path(p) == path) {
                std::fs::remove_file(&path)?;
            }
        }
        let last_base = paths.last().map(|(base, _)| *base);
        let mut segments: Vec<Segment> = Vec::new();
        let mut repaired: Option<LogRecovery> = None;
        // A scanned segment that does not continue the log: dropped whole.
        let mut misfit: Option<Segment> = None;
        let mut paths = paths.into_iter();
        for (base, path) in paths.by_ref() {
            let sealed = Some(base) != last_base;
            if sealed
                && verify == Verify::ActiveSegment
                && let Some(segment) = Segment::open_sealed(&path, base)?
                // Otherwise not what the index promised: read the file itself.
                && segments_follow(segments.last(), &segment)
            {
                segments.push(segment);
                continue;
            }
            let (mut segment, recovery) = Segment::open_uncut(&path, base)?;
            if !segments_follow(segments.last(), &segment) {
                repaired = Some(LogRecovery {
                    segment: path.clone(),
                    recovery: Recovery {
                        valid_bytes: 0,
                        dropped_bytes: segment.size(),
                        reason: super::format::FrameError::Corrupt(
                            "segment does not follow its predecessor",
                        ),
                        index_beyond: segment.last().map(|h| h.index),
                    },
                    dropped_segments: vec![path.clone()],
                    kept_through: None,
                    sealed,
                    lost_through: segment.last().map(|h| h.index),
                });
                misfit = Some(segment);
                break;
            }
            if let Some(recovery) = recovery {
                repaired = Some(LogRecovery {
                    segment: path.clone(),
                    lost_through: recovery.index_beyond,
                    recovery,
                    dropped_segments: Vec::new(),
                    kept_through: None,
                    sealed,
                });
                segments.push(segment);
                break;
            }
            if sealed && index_file::read_valid(&path, segment.size())?.is_none() {
                segment.write_index()?;
            }
            segments.push(segment);
        }
        // Whatever follows a repaired segment is no longer contiguous with it; the last of
        // them tells how far the lost data reached.
        let later: Vec<PathBuf> = paths.map(|(_, path)| path).collect();
        if let (Some(r), Some(last)) = (repaired.as_mut(), later.last()) {
            let reached = match index_file::read_any(last) {
                Some(summary) => summary.last.map(|h| h.index),
                None => Segment::last_valid_index(last).unwrap_or(None),
            };
            r.lost_through = r.lost_through.max(reached);
            r.dropped_segments.extend(later.iter().cloned());
        }
        // Nothing was changed on disk so far: the caller records the loss first.
        if let Some(r) = repaired.as_mut() {
            r.kept_through = segments
                .iter()
                .rev()
                .find_map(|s| s.last().map(|h| h.index));
        }
        if let Some(r) = &repaired {
            before_cut(r)?;
            match misfit {
                Some(segment) => remove_segment(segment)?,
                None => {
                    if let Some(damaged) = segments.last_mut() {
                        damaged.cut()?;
                    }
                }
            }
            for path in &later {
                remove_segment_files(path)?;
            }
        }
        // An empty segment in the middle would only come from a crash during a roll.
        if segments.is_empty() {
            segments.push(Segment::create(dir, 0)?);
        }
        // The last segment is the active one, whatever index file it had.
        if let Some(active) = segments.last() {
            active.remove_index()?;
        }
        let next_offset = segments
            .iter()
            .rev()
            .find_map(|s| s.last().map(|h| h.next_offset()))
            .unwrap_or_else(|| segments.last().map_or(0, |s| s.base_offset()));
        sync_dir(dir)?;
        Ok((
            PartitionLog {
                dir: dir.to_path_buf(),
                corruption_hook: None,
                policy,
                segments,
                next_offset,
                purged_through: None,
                direct_io: false,
                write_through: false,
                sealing: None,
            },
            repaired,
        ))
    }

    /// Whether appends to the active segment, and every later one, bypass the page cache
    /// (`O_DIRECT`, see [`super::direct`]).
    pub fn set_direct_io(&mut self, on: bool) -> io::Result<()> {
        self.finish_seal()?;
        self.direct_io = on;
        self.apply_write_mode()
    }

    /// Whether appends must reach the file when made (no direct log holding them); see
    /// [`super::direct`].
    pub fn set_write_through(&mut self, on: bool) -> io::Result<()> {
        if self.write_through == on {
            return Ok(());
        }
        self.finish_seal()?;
        self.write_through = on;
        self.apply_write_mode()
    }

    fn direct_appends(&self) -> bool {
        self.direct_io && !self.write_through
    }

    /// Creates the segment starting at `base_offset` as the new active one.
    fn start_segment(&mut self, base_offset: u64) -> io::Result<()> {
        let mut segment = Segment::create(&self.dir, base_offset)?;
        segment.set_direct_io(self.direct_appends())?;
        segment.set_direct_reads(self.direct_appends());
        self.segments.push(segment);
        Ok(())
    }

    fn apply_write_mode(&mut self) -> io::Result<()> {
        let direct = self.direct_appends();
        for segment in &mut self.segments {
            segment.set_direct_reads(direct);
        }
        self.active().set_direct_io(direct)
    }

    /// Cuts the active segment's padding off (see [`super::direct`]): its file then holds
    /// exactly its frames, as tests that damage it on purpose expect.
    #[cfg(test)]
    pub fn trim_active(&mut self) -> io::Result<()> {
        self.active().trim()
    }

    fn active(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a partition log always has an active segment")
    }

    /// Runs `hook` whenever a read finds corrupt data (the read itself fails).
    pub fn set_corruption_hook(&mut self, hook: CorruptionHook) {
        self.corruption_hook = Some(hook);
    }

    /// Passes `result` through, telling the corruption hook about corrupt data.
    fn checked<T>(&self, result: io::Result<T>) -> io::Result<T> {
        if let (Err(err), Some(hook)) = (&result, &self.corruption_hook)
            && err.kind() == io::ErrorKind::InvalidData
        {
            hook(err);
        }
        result
    }

    /// Changes when the active segment rolls (a topic config change).
    pub fn set_policy(&mut self, policy: RollPolicy) {
        self.policy = policy;
    }

    /// Offset the next record gets (Kafka's log end offset).
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// The first offset still in the log (moves forward as segments are deleted).
    pub fn log_start_offset(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.base_offset())
    }

    /// The last entry in the log.
    pub fn last(&self) -> Option<&BatchHeader> {
        self.segments.iter().rev().find_map(|s| s.last())
    }

    /// The first entry in the log.
    pub fn first(&self) -> Option<&BatchHeader> {
        self.segments.iter().find_map(|s| s.first())
    }

    /// Bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Appends an entry, assigning its base offset; rolls first when the active segment
    /// is full or old. Not synced: call [`PartitionLog::sync`].
    pub fn append(&mut self, entry: NewEntry<'_>, now_ms: i64) -> io::Result<BatchHeader> {
        // Each segment checks its own entries; this also covers the first entry of a
        // new segment.
        if let Some(last) = self.last()
            && entry.index != last.index + 1
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("append of index {} after {}", entry.index, last.index),
            ));
        }
        let header = BatchHeader {
            term: entry.term,
            leader_node: entry.leader_node,
            index: entry.index,
            kind: entry.kind,
            base_offset: self.next_offset,
            record_count: entry.record_count,
            first_timestamp: entry.first_timestamp,
            max_timestamp: entry.max_timestamp,
            producer_id: entry.producer_id,
            base_sequence: entry.base_sequence,
            compression: entry.compression,
        };
        if self.sealing.as_ref().is_some_and(|seal| seal.has_run()) {
            self.finish_seal()?;
        }
        if entry.kind == EntryKind::Records && self.should_roll(now_ms) {
            self.roll()?;
        }
        self.active().append(&header, entry.payload)?;
        self.next_offset = header.next_offset();
        Ok(header)
    }

    fn should_roll(&self, now_ms: i64) -> bool {
        let Some(active) = self.segments.last() else {
            return false;
        };
        let Some(first) = active.first() else {
            return false;
        };
        active.size() >= self.policy.segment_bytes
            || (first.record_count > 0
                && now_ms.saturating_sub(first.first_timestamp) >= self.policy.segment_ms)
    }

    /// Starts a new active segment at the next offset. The old one is sealed (synced, its
    /// index file written) by the next sync of the new one, off the append path, when
    /// its appends wait in a direct log; otherwise here (see [`super::seal`]).
    fn roll(&mut self) -> io::Result<()> {
        self.finish_seal()?;
        let seal = self.segments.last().and_then(|s| s.seal_later(&self.dir));
        match seal {
            Some(seal) => {
                self.start_segment(self.next_offset)?;
                self.sealing = Some(seal);
                Ok(())
            }
            None => {
                self.active().sync()?;
                self.active().write_index()?;
                self.start_segment(self.next_offset)?;
                sync_dir(&self.dir)
            }
        }
    }

    /// Waits for the seal of the segment before the active one (running it if no one
    /// has) and brings that segment's state in memory in line with it.
    fn finish_seal(&mut self) -> io::Result<()> {
        let Some(seal) = self.sealing.clone() else {
            return Ok(());
        };
        seal.run()?;
        self.sealing = None;
        match self
            .segments
            .iter_mut()
            .find(|s| s.base_offset() == seal.base_offset)
        {
            Some(segment) => segment.sealed(),
            None => Ok(()),
        }
    }

    /// The active segment's file: syncing it makes every appended entry durable (sealed
    /// segments were synced when they rolled, or are sealed first).
    pub fn sync_handle(&self) -> Option<SyncTarget> {
        let active = self.segments.last().map(Segment::sync_handle)?;
        Some(match &self.sealing {
            Some(seal) => SyncTarget::AfterSeal(seal.clone(), Box::new(active)),
            None => active,
        })
    }

    /// Makes every appended entry durable.
    pub fn sync(&self) -> io::Result<()> {
        self.sync_handle().map_or(Ok(()), |target| target.sync())
    }

    /// Entries with Raft indexes in `[start, end)`, up to about `max_bytes` (at least
    /// one entry when the range is not empty).
    pub fn read_indexes(
        &self,
        start: u64,
        end: u64,
        max_bytes: usize,
    ) -> io::Result<Vec<StoredBatch>> {
        self.checked(self.read_indexes_unchecked(start, end, max_bytes))
    }

    fn read_indexes_unchecked(
        &self,
        start: u64,
        end: u64,
        max_bytes: usize,
    ) -> io::Result<Vec<StoredBatch>> {
        let start = match self.purged_through {
            Some(purged) => start.max(purged.saturating_add(1)),
            None => start,
        };
        let first = self
            .segments
            .partition_point(|s| s.first().is_some_and(|h| h.index <= start))
            .saturating_sub(1);
        let mut out = Budgeted::new(max_bytes);
        for segment in &self.segments[first..] {
            if out.full() || segment.first().is_some_and(|h| h.index >= end) {
                break;
            }
            if !out.extend(segment, segment.read_indexes(start, end, out.remaining())?) {
                break;
            }
        }
        Ok(out.batches)
    }

    /// Record batches holding offsets from `offset` on, up to about `max_bytes` (at
    /// least one batch when there is one).
    pub fn read_offsets(&self, offset: u64, max_bytes: usize) -> io::Result<Vec<StoredBatch>> {
        self.checked(self.read_offsets_unchecked(offset, max_bytes))
    }

    fn read_offsets_unchecked(
        &self,
        offset: u64,
        max_bytes: usize,
    ) -> io::Result<Vec<StoredBatch>> {
        let first = self
            .segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1);
        let mut out = Budgeted::new(max_bytes);
        for segment in &self.segments[first..] {
            if out.full() {
                break;
            }
            if !out.extend(segment, segment.read_offsets(offset, out.remaining())?) {
                break;
            }
        }
        Ok(out.batches)
    }

    /// The first offset with a record timestamp at or after `timestamp`.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> io::Result<Option<u64>> {
        for segment in &self.segments {
            if let Some(offset) = self.checked(segment.offset_for_timestamp(timestamp))? {
                return Ok(Some(offset.max(self.log_start_offset())));
            }
        }
        Ok(None)
    }

    /// Removes every entry with a Raft index above `raft_index` (synced).
    pub fn truncate_after(&mut self, raft_index: u64) -> io::Result<()> {
        self.truncate_from(raft_index.saturating_add(1))
    }

    /// Removes every entry with a Raft index at or above `first_removed` (synced).
    pub fn truncate_from(&mut self, first_removed: u64) -> io::Result<()> {
        self.finish_seal()?;
        while self.segments.len() > 1 {
            let drop_whole = self
                .segments
                .last()
                .and_then(|s| s.first())
                .is_none_or(|h| h.index >= first_removed);
            if !drop_whole {
                break;
            }
            if let Some(segment) = self.segments.pop() {
                remove_segment(segment)?;
            }
        }
        // The segment the cut lands in may have been sealed: it is the active one now.
        self.active().remove_index()?;
        self.apply_write_mode()?;
        self.active().truncate_from(first_removed)?;
        sync_dir(&self.dir)?;
        self.next_offset = self.last().map_or_else(
            || self.segments.last().map_or(0, |s| s.base_offset()),
            |h| h.next_offset(),
        );
        Ok(())
    }

    /// Drops every segment and starts the log afresh: the next entry follows Raft index
    /// `purged_through` and gets offset `next_offset` (a snapshot from the leader replaced
    /// everything this replica had).
    pub fn reset(&mut self, next_offset: u64, purged_through: u64) -> io::Result<()> {
        self.finish_seal()?;
        for segment in self.segments.drain(..) {
            remove_segment(segment)?;
        }
        self.start_segment(next_offset)?;
        self.next_offset = next_offset;
        self.purged_through = Some(purged_through);
        sync_dir(&self.dir)
    }

    /// Hides every entry at or below `raft_index` from reads, then deletes the segments
    /// that hold nothing else (see [`PartitionLog::delete_segments_through`]).
    pub fn purge_through(&mut self, raft_index: u64) -> io::Result<Vec<BatchHeader>> {
        self.purged_through = Some(
            self.purged_through
                .map_or(raft_index, |p| p.max(raft_index)),
        );
        self.delete_segments_through(raft_index)
    }

    /// Entries at or below this Raft index are purged.
    pub fn purged_through(&self) -> Option<u64> {
        self.purged_through
    }

    /// Restores the purge point recorded elsewhere (at start-up).
    pub fn set_purged_through(&mut self, raft_index: Option<u64>) {
        self.purged_through = raft_index;
    }

    /// Deletes whole segments whose entries all have Raft indexes at or below
    /// `raft_index`, keeping the active segment. Returns the deleted segments' last entries.
    pub fn delete_segments_through(&mut self, raft_index: u64) -> io::Result<Vec<BatchHeader>> {
        self.finish_seal()?;
        let mut deleted = Vec::new();
        while self.segments.len() > 1 {
            let last = self.segments[0].last().copied();
            if last.is_some_and(|last| last.index > raft_index) {
                break;
            }
            remove_segment(self.segments.remove(0))?;
            deleted.extend(last);
        }
        sync_dir(&self.dir)?;
        Ok(deleted)
    }

    /// The last entry of the sealed segments that lie wholly below `log_start_offset`: the
    /// point up to which retention lets the log be purged.
    pub fn retention_boundary(&self, log_start_offset: u64) -> Option<BatchHeader> {
        self.sealed_segments()
            .into_iter()
            .map(|(last, _, _)| last)
            .filter(|last| last.next_offset() <= log_start_offset)
            .max_by_key(|last| last.index)
    }

    /// Each sealed segment's last entry, size and largest timestamp, oldest first (for
    /// retention decisions).
    pub fn sealed_segments(&self) -> Vec<(BatchHeader, u64, i64)> {
        let sealed = self.segments.len().saturating_sub(1);
        self.segments[..sealed]
            .iter()
            .filter_map(|s| s.last().map(|h| (*h, s.size(), s.max_timestamp())))
            .collect()
    }
}

/// Batches collected under a byte budget: the first batch is always taken.
struct Budgeted {
    batches: Vec<StoredBatch>,
    used: usize,
    max: usize,
}

impl Budgeted {
    fn new(max: usize) -> Self {
        Budgeted {
            batches: Vec::new(),
            used: 0,
            max,
        }
    }

    fn full(&self) -> bool {
        !self.batches.is_empty() && self.used >= self.max
    }

    fn remaining(&self) -> usize {
        self.max.saturating_sub(self.used)
    }

    /// Adds the batches read from `segment` while they fit. Returns whether the read
    /// may go on into the next segment: only when every batch fitted and the segment
    /// was read to its end. A segment's read stops early when its budget ran out, and
    /// going on into the next one would leave out the rest of this one.
    fn extend(&mut self, segment: &Segment, batches: Vec<StoredBatch>) -> bool {
        let read_to_end = batches
            .last()
            .is_none_or(|b| segment.last().is_some_and(|l| l.index == b.header.index));
        for batch in batches {
            let len = batch.payload.len();
            if !self.batches.is_empty() && self.used + len > self.max {
                return false;
            }
            self.used += len;
            self.batches.push(batch);
        }
        read_to_end
    }
}

/// Closes a segment and deletes its files (the caller syncs the directory).
fn remove_segment(segment: Segment) -> io::Result<()> {
    let path = segment.path().to_path_buf();
    drop(segment);
    remove_segment_files(&path)
}

/// Deletes a segment file and its index file (the caller syncs the directory).
fn remove_segment_files(path: &Path) -> io::Result<()> {
    index_file::remove(path)?;
    std::fs::remove_file(path)
}

/// Whether `next` continues the log where `prev` ends (Raft index and offset).
fn segments_follow(prev: Option<&Segment>, next: &Segment) -> bool {
    match (prev.and_then(|s| s.last()), next.first()) {
        (Some(prev), Some(first)) => {
            first.index == prev.index + 1 && first.base_offset == prev.next_offset()
        }
        _ => true,
    }
}
