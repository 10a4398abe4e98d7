//! Partition log tests: rolling, reads across segments, truncation across segments,
//! deleting old segments, and recovery on reopen.

use super::format::EntryKind;
use super::index_file;
use super::log::{NewEntry, PartitionLog, RollPolicy, Verify};
use super::segment::StoredBatch;

const SMALL: RollPolicy = RollPolicy {
    segment_bytes: 2048,
    segment_ms: i64::MAX,
};

fn payload(index: u64) -> Vec<u8> {
    format!("records of entry {index};").repeat(10).into_bytes()
}

/// Entry 0 is a membership entry, every other one a batch of two records.
fn append(log: &mut PartitionLog, index: u64, ts: i64) {
    let (kind, count) = if index == 0 {
        (EntryKind::Membership, 0)
    } else {
        (EntryKind::Records, 2)
    };
    append_entry(log, index, kind, count, ts, &payload(index));
}

fn append_entry(
    log: &mut PartitionLog,
    index: u64,
    kind: EntryKind,
    record_count: u32,
    ts: i64,
    payload: &[u8],
) {
    log.append(
        NewEntry {
            term: 1,
            leader_node: 1,
            index,
            kind,
            record_count,
            first_timestamp: ts,
            max_timestamp: ts,
            producer_id: 0,
            base_sequence: 0,
            compression: 0,
            payload,
        },
        ts,
    )
    .expect("append");
}

fn filled(dir: &std::path::Path, entries: u64) -> PartitionLog {
    let (mut log, recovery) = PartitionLog::open(dir, SMALL, Verify::ActiveSegment).expect("open");
    assert!(recovery.is_none());
    for i in 0..entries {
        append(&mut log, i, 1000 * i as i64);
    }
    log.sync().expect("sync");
    log
}

/// The segment files of the log in `dir`, oldest first.
fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Reopens the log in `dir`, checks that it needed no repair and holds `expected`.
fn reopens_to(dir: &std::path::Path, verify: Verify, expected: &[StoredBatch]) -> PartitionLog {
    let (log, recovery) = PartitionLog::open(dir, SMALL, verify).expect("reopen");
    assert!(recovery.is_none(), "{recovery:?}");
    assert_eq!(
        log.read_indexes(0, u64::MAX, usize::MAX).expect("read"),
        expected
    );
    log
}

fn flip_middle_byte(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(path, &bytes).expect("write");
}

#[test]
fn offsets_follow_the_log_and_segments_roll_by_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = filled(dir.path(), 100);
    assert_eq!(log.next_offset(), 2 * 99, "entry 0 carries no records");
    assert!(log.segment_count() > 5, "{} segments", log.segment_count());
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let logs = names.iter().filter(|n| n.ends_with(".log")).count();
    let indexes = names.iter().filter(|n| n.ends_with(".index")).count();
    assert!(
        names.iter().all(|n| n.len() == 24 || n.len() == 26),
        "{names:?}"
    );
    assert_eq!(logs, log.segment_count());
    assert_eq!(indexes, logs - 1, "every sealed segment has an index file");
    assert!(names.contains(&"00000000000000000000.log".to_string()));
}

#[test]
fn reads_cross_segment_boundaries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = filled(dir.path(), 100);
    let got = log.read_indexes(10, 60, usize::MAX).expect("read");
    let indexes: Vec<u64> = got.iter().map(|b| b.header.index).collect();
    assert_eq!(indexes, (10..60).collect::<Vec<_>>());
    let got = log.read_offsets(101, usize::MAX).expect("read");
    assert_eq!(
        got.first().map(|b| b.header.base_offset),
        Some(100),
        "batch holding offset 101"
    );
    assert_eq!(got.last().map(|b| b.header.index), Some(99));
    let one = log.read_offsets(0, 1).expect("read");
    assert_eq!(one.len(), 1);
    assert_eq!(
        log.offset_for_timestamp(42_000).expect("lookup"),
        Some(2 * 41)
    );
}

#[test]
fn truncation_removes_later_segments_and_offsets_are_reassigned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = filled(dir.path(), 100);
    let segments = log.segment_count();
    log.truncate_after(20).expect("truncate");
    assert!(log.segment_count() < segments);
    assert_eq!(log.last().map(|h| h.index), Some(20));
    assert_eq!(log.next_offset(), 40);
    append(&mut log, 21, 5);
    assert_eq!(log.last().map(|h| h.base_offset), Some(40));
    log.sync().expect("sync");
    drop(log);
    let (log, recovery) =
        PartitionLog::open(dir.path(), SMALL, Verify::ActiveSegment).expect("reopen");
    assert!(recovery.is_none());
    assert_eq!(log.last().map(|h| (h.index, h.base_offset)), Some((21, 40)));
}

#[test]
fn old_segments_are_deleted_whole_and_the_start_offset_moves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = filled(dir.path(), 100);
    let deleted = log.delete_segments_through(30).expect("delete");
    assert!(!deleted.is_empty());
    let start = log.log_start_offset();
    assert!(start > 0 && start <= 2 * 30, "log start {start}");
    assert!(log.first().is_some_and(|h| h.index <= 31));
    assert!(log.read_indexes(0, 5, usize::MAX).expect("read").is_empty());
    drop(log);
    let (log, _) = PartitionLog::open(dir.path(), SMALL, Verify::ActiveSegment).expect("reopen");
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(log.next_offset(), 198);
}

#[test]
fn a_torn_active_segment_is_repaired_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = filled(dir.path(), 100);
    log.trim_active().expect("trim");
    let last_index = log.last().map(|h| h.index);
    drop(log);
    let files = segment_files(dir.path());
    let active = files.last().expect("segments").clone();
    let len = std::fs::metadata(&active).expect("stat").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .and_then(|f| f.set_len(len - 3))
        .expect("tear");
    let (log, recovery) =
        PartitionLog::open(dir.path(), SMALL, Verify::ActiveSegment).expect("open");
    let recovery = recovery.expect("reported");
    assert_eq!(recovery.segment, active);
    assert_eq!(log.last().map(|h| h.index), last_index.map(|i| i - 1));
}

#[test]
fn a_corrupt_sealed_segment_is_served_never_and_cut_when_verified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = filled(dir.path(), 100);
    drop(log);
    let files = segment_files(dir.path());
    let victim = files[2].clone();
    flip_middle_byte(&victim);
    // Start-up trusts the index file and does not read the sealed segment...
    let (log, recovery) =
        PartitionLog::open(dir.path(), SMALL, Verify::ActiveSegment).expect("open");
    assert!(recovery.is_none());
    // ...but every read checks the CRC, so the damage is an error, never data.
    let err = log
        .read_indexes(0, u64::MAX, usize::MAX)
        .expect_err("corrupt batch served");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    drop(log);
    let (log, recovery) = PartitionLog::open(dir.path(), SMALL, Verify::Everything).expect("open");
    let recovery = recovery.expect("reported");
    assert_eq!(recovery.segment, victim);
    assert!(recovery.sealed);
    assert_eq!(
        recovery.lost_through,
        Some(99),
        "the dropped segments reached 99"
    );
    assert_eq!(recovery.dropped_segments.len(), files.len() - 3);
    assert_eq!(segment_files(dir.path()).len(), 3);
    assert_eq!(log.segment_count(), 3);
    // Every entry still in the log reads back intact, up to the damage.
    let last = log.last().map(|h| h.index).expect("entries");
    let read = log.read_indexes(0, u64::MAX, usize::MAX).expect("read");
    assert_eq!(read.len() as u64, last + 1);
}

#[test]
fn sealed_segments_open_from_their_index_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = filled(dir.path(), 100);
    let before = log.read_indexes(0, u64::MAX, usize::MAX).expect("read");
    let next_offset = log.next_offset();
    drop(log);
    let (log, recovery) =
        PartitionLog::open(dir.path(), SMALL, Verify::ActiveSegment).expect("open");
    assert!(recovery.is_none());
    assert_eq!(log.next_offset(), next_offset);
    assert_eq!(
        log.read_indexes(0, u64::MAX, usize::MAX).expect("read"),
        before
    );
    assert_eq!(
        log.offset_for_timestamp(42_000).expect("lookup"),
        Some(2 * 41)
    );
}

#[test]
fn missing_stale_or_damaged_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = filled(dir.path(), 100);
    let before = log.read_indexes(0, u64::MAX, usize::MAX).expect("read");
    drop(log);
    let files = segment_files(dir.path());
    std::fs::remove_file(index_file::index_path(&files[0])).expect("remove");
    std::fs::write(index_file::index_path(&files[1]), b"garbage").expect("damage");
    // Stale: the index describes a shorter file than the one on disk.
    let len = std::fs::metadata(&files[2]).expect("stat").len();
    let stale = index_file::read_valid(&files[2], len)
        .expect("read")
        .map(|s| index_file::SegmentSummary {
            segment_size: len - 1,
            ..s
        })
        .expect("valid index");
    index_file::write(&files[2], &stale).expect("write");
    std::fs::write(dir.path().join("00000000000000999999.index"), b"orphan").expect("orphan");
    let (log, recovery) =
        PartitionLog::open(dir.path(), SMALL, Verify::ActiveSegment).expect("open");
    assert!(recovery.is_none());
    assert_eq!(
        log.read_indexes(0, u64::MAX, usize::MAX).expect("read"),
        before
    );
    for file in &files[..3] {
        let len = std::fs::metadata(file).expect("stat").len();
        assert!(
            index_file::read_valid(file, len).expect("read").is_some(),
            "{} rebuilt",
            file.display()
        );
    }
    assert!(!dir.path().join("00000000000000999999.index").exists());
}

#[test]
fn a_truncation_into_a_sealed_segment_makes_it_active_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = filled(dir.path(), 100);
    log.truncate_after(20).expect("truncate");
    let files = segment_files(dir.path());
    let active = files.last().expect("segments");
    assert!(!index_file::index_path(active).exists());
    // New entries at the same indexes: an index left from before would lie.
    for i in 21..60 {
        append(&mut log, i, 7);
    }
    log.sync().expect("sync");
    let before = log.read_indexes(0, u64::MAX, usize::MAX).expect("read");
    drop(log);
    reopens_to(dir.path(), Verify::ActiveSegment, &before);
}

#[test]
fn damage_followed_by_valid_batches_reports_how_far_the_log_reached() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = filled(dir.path(), 100);
    log.trim_active().expect("trim");
    drop(log);
    let files = segment_files(dir.path());
    // Bit rot in the middle of the active segment: valid batches follow the damage.
    let active = files.last().expect("segments");
    flip_middle_byte(active);
    let (_, recovery) = PartitionLog::open(dir.path(), SMALL, Verify::ActiveSegment).expect("open");
    let recovery = recovery.expect("reported");
    assert!(!recovery.sealed);
    assert_eq!(
        recovery.lost_through,
        Some(99),
        "stepped over the damaged batch"
    );
    assert!(recovery.kept_through.is_some_and(|k| k < 99));
}

#[test]
fn nothing_is_cut_when_the_loss_cannot_be_recorded_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = filled(dir.path(), 100);
    drop(log);
    let files = segment_files(dir.path());
    flip_middle_byte(&files[2]);
    let before: Vec<u64> = files
        .iter()
        .map(|f| std::fs::metadata(f).expect("stat").len())
        .collect();
    let refused = PartitionLog::open_with(dir.path(), SMALL, Verify::Everything, |_| {
        Err(std::io::Error::other("cannot record the loss"))
    });
    assert!(refused.is_err());
    let after: Vec<u64> = segment_files(dir.path())
        .iter()
        .map(|f| std::fs::metadata(f).expect("stat").len())
        .collect();
    assert_eq!(after, before, "every segment still there, uncut");
}

#[test]
fn a_direct_io_log_rolls_truncates_and_reopens_to_the_same_entries_as_a_buffered_one() {
    let (direct_dir, buffered_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let mut logs = Vec::new();
    for (dir, direct) in [(direct_dir.path(), true), (buffered_dir.path(), false)] {
        let (mut log, _) = PartitionLog::open(dir, SMALL, Verify::ActiveSegment).expect("open");
        log.set_direct_io(direct).expect("direct io");
        for i in 0..100 {
            append(&mut log, i, 1000 * i as i64);
        }
        // Back into a sealed segment, which becomes the active one again.
        log.truncate_after(37).expect("truncate");
        for i in 38..70 {
            append(&mut log, i, 7);
        }
        log.sync().expect("sync");
        logs.push(log);
    }
    let reads: Vec<_> = logs
        .iter()
        .map(|log| log.read_indexes(0, u64::MAX, usize::MAX).expect("read"))
        .collect();
    assert_eq!(reads[0], reads[1]);
    assert_eq!(reads[0].len(), 70);
    drop(logs);
    let (log, recovery) =
        PartitionLog::open(direct_dir.path(), SMALL, Verify::Everything).expect("reopen");
    assert!(recovery.is_none(), "{recovery:?}");
    assert_eq!(
        log.read_indexes(0, u64::MAX, usize::MAX).expect("read"),
        reads[1]
    );
}

/// A consumer reading a multi-segment log from the start with a fetch-sized budget gets
/// every offset once, in order, across every roll; so does a reader of Raft indexes.
/// Batches of different sizes leave room under the budget at a segment's end that a
/// small first batch of the next segment would fill (the bug this guards against).
#[test]
fn budgeted_reads_return_every_offset_and_index_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = RollPolicy {
        segment_bytes: 1 << 20,
        segment_ms: i64::MAX,
    };
    let (mut log, _) = PartitionLog::open(dir.path(), policy, Verify::ActiveSegment).expect("open");
    let last = 3000u64;
    for index in 1..=last {
        let bytes = vec![7u8; 100 + (index as usize * 7919) % 3000];
        append_entry(&mut log, index, EntryKind::Records, 1, 0, &bytes);
    }
    log.sync().expect("sync");
    assert!(log.segment_count() > 3, "{} segments", log.segment_count());
    for budget in [1, 10 * 1024, 100 * 1024 + 17, 300 * 1024, 2 << 20] {
        let mut offset = 0;
        while offset < log.next_offset() {
            let got = log.read_offsets(offset, budget).expect("read");
            let offsets: Vec<u64> = got.iter().map(|b| b.header.base_offset).collect();
            let expected: Vec<u64> = (offset..offset + got.len() as u64).collect();
            assert_eq!(offsets, expected, "read_offsets({offset}, {budget})");
            offset += got.len() as u64;
        }
        let mut index = 1;
        while index <= last {
            let got = log.read_indexes(index, last + 1, budget).expect("read");
            let indexes: Vec<u64> = got.iter().map(|b| b.header.index).collect();
            let expected: Vec<u64> = (index..index + got.len() as u64).collect();
            assert_eq!(indexes, expected, "read_indexes({index}.., {budget})");
            index += got.len() as u64;
        }
    }
}

/// Appends to a direct-I/O log until it rolls; returns the index of the first entry of
/// the new segment.
fn direct_until_roll(dir: &std::path::Path) -> (PartitionLog, u64) {
    let (mut log, _) = PartitionLog::open(dir, SMALL, Verify::ActiveSegment).expect("open");
    log.set_direct_io(true).expect("direct io");
    let mut index = 0;
    while segment_files(dir).len() < 2 {
        append(&mut log, index, 1000 * index as i64);
        index += 1;
    }
    (log, index - 1)
}

#[test]
fn a_direct_roll_seals_the_old_segment_at_the_next_sync_of_the_new_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, first_new) = direct_until_roll(dir.path());
    let old = segment_files(dir.path())[0].clone();
    let old_entries = log.read_indexes(0, first_new, usize::MAX).expect("read");
    // The roll only created the new file: the old segment is not sealed yet.
    assert!(!index_file::index_path(&old).exists());
    append(&mut log, first_new + 1, 7);
    log.sync().expect("sync");
    // Sealed: synced, its padding cut, its index file written.
    let summary = index_file::read_any(&old).expect("the index file");
    assert_eq!(summary.last.map(|h| h.index), Some(first_new - 1));
    assert_eq!(
        std::fs::metadata(&old).expect("stat").len(),
        summary.segment_size
    );
    // Appends go on, the old segment's state in memory now that of a sealed one.
    append(&mut log, first_new + 2, 8);
    log.sync().expect("sync");
    let before = log.read_indexes(0, u64::MAX, usize::MAX).expect("read");
    assert_eq!(&before[..old_entries.len()], &old_entries[..]);
    drop(log);
    reopens_to(dir.path(), Verify::Everything, &before);
}

#[test]
fn a_pending_seal_runs_before_a_truncation_into_the_old_segment_and_on_drop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, first_new) = direct_until_roll(dir.path());
    // Back into the segment still to be sealed, before any sync.
    log.truncate_after(first_new - 3).expect("truncate");
    assert_eq!(segment_files(dir.path()).len(), 1);
    for i in first_new - 2..first_new + 40 {
        append(&mut log, i, 9);
    }
    assert!(segment_files(dir.path()).len() >= 2, "rolled again");
    // Dropped with a seal pending and nothing synced since: the seal runs, so the
    // reopened log holds at least every entry of the sealed segments, intact.
    let sealed_last = {
        let files = segment_files(dir.path());
        let next = files.last().expect("a segment").clone();
        drop(log);
        let summary = index_file::read_any(&files[files.len() - 2]).expect("sealed on drop");
        assert!(!index_file::index_path(&next).exists());
        summary.last.map(|h| h.index).expect("entries")
    };
    let (log, recovery) =
        PartitionLog::open(dir.path(), SMALL, Verify::Everything).expect("reopen");
    assert!(recovery.is_none(), "{recovery:?}");
    let after = log.read_indexes(0, u64::MAX, usize::MAX).expect("read");
    let indexes: Vec<u64> = after.iter().map(|b| b.header.index).collect();
    assert!(indexes.len() as u64 > sealed_last);
    assert!(
        indexes
            .iter()
            .enumerate()
            .all(|(i, &index)| i as u64 == index)
    );
}
