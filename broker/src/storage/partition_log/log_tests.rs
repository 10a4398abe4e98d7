//! Partition log tests: rolling, reads across segments, truncation across segments,
//! deleting old segments, and recovery on reopen.

use super::format::EntryKind;
use super::log::{NewEntry, PartitionLog, RollPolicy};

const SMALL: RollPolicy = RollPolicy {
    segment_bytes: 2048,
    segment_ms: i64::MAX,
};

fn payload(index: u64) -> Vec<u8> {
    format!("records of entry {index};").repeat(10).into_bytes()
}

/// Entry 0 is a membership entry, every other one a batch of two records.
fn append(log: &mut PartitionLog, index: u64, ts: i64) {
    let bytes = payload(index);
    let (kind, count) = if index == 0 {
        (EntryKind::Membership, 0)
    } else {
        (EntryKind::Records, 2)
    };
    log.append(
        NewEntry {
            term: 1,
            leader_node: 1,
            index,
            kind,
            record_count: count,
            first_timestamp: ts,
            max_timestamp: ts,
            payload: &bytes,
        },
        ts,
    )
    .expect("append");
}

fn filled(dir: &std::path::Path, entries: u64) -> PartitionLog {
    let (mut log, recovery) = PartitionLog::open(dir, SMALL).expect("open");
    assert!(recovery.is_none());
    for i in 0..entries {
        append(&mut log, i, 1000 * i as i64);
    }
    log.sync().expect("sync");
    log
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
    assert!(
        names.iter().all(|n| n.len() == 24 && n.ends_with(".log")),
        "{names:?}"
    );
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
    let (log, recovery) = PartitionLog::open(dir.path(), SMALL).expect("reopen");
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
    let (log, _) = PartitionLog::open(dir.path(), SMALL).expect("reopen");
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(log.next_offset(), 198);
}

#[test]
fn a_torn_active_segment_is_repaired_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = filled(dir.path(), 100);
    let last_index = log.last().map(|h| h.index);
    drop(log);
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let active = files.last().expect("segments").clone();
    let len = std::fs::metadata(&active).expect("stat").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .and_then(|f| f.set_len(len - 3))
        .expect("tear");
    let (log, recovery) = PartitionLog::open(dir.path(), SMALL).expect("open");
    let recovery = recovery.expect("reported");
    assert_eq!(recovery.segment, active);
    assert_eq!(log.last().map(|h| h.index), last_index.map(|i| i - 1));
}

#[test]
fn a_corrupt_sealed_segment_cuts_the_log_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = filled(dir.path(), 100);
    drop(log);
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let victim = files[2].clone();
    let mut bytes = std::fs::read(&victim).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&victim, &bytes).expect("write");
    let (log, recovery) = PartitionLog::open(dir.path(), SMALL).expect("open");
    let recovery = recovery.expect("reported");
    assert_eq!(recovery.segment, victim);
    assert_eq!(recovery.dropped_segments.len(), files.len() - 3);
    assert_eq!(log.segment_count(), 3);
    // Every entry still in the log reads back intact, up to the damage.
    let last = log.last().map(|h| h.index).expect("entries");
    let read = log.read_indexes(0, u64::MAX, usize::MAX).expect("read");
    assert_eq!(read.len() as u64, last + 1);
}
