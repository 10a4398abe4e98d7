//! Segment tests: append and read back, lookups, truncation, and recovery from a file
//! cut at every byte of its last batch or with a flipped bit anywhere.

use super::format::{BatchHeader, EntryKind, frame_len};
use super::preallocate::{MAX_ZERO_TAIL, Mode};
use super::segment::{INDEX_INTERVAL_BYTES, Segment, StoredBatch};

fn batch(index: u64, base_offset: u64, count: u32, ts: i64) -> BatchHeader {
    BatchHeader {
        term: 1,
        leader_node: 1,
        index,
        kind: if count == 0 {
            EntryKind::Blank
        } else {
            EntryKind::Records
        },
        base_offset,
        record_count: count,
        first_timestamp: ts,
        max_timestamp: ts + 10,
        producer_id: 0,
        base_sequence: 0,
        compression: 0,
    }
}

fn payload(index: u64) -> Vec<u8> {
    format!("payload of entry {index} ").repeat(20).into_bytes()
}

/// Writes `n` batches of 3 records each (index i, offsets 3i..3i+3, timestamps 1000·i).
fn filled(dir: &std::path::Path, n: u64) -> Segment {
    let mut segment = Segment::create(dir, 0).expect("create");
    // Direct writes where the file system has them (the broker's option); the
    // partition log's tests cover writes through the page cache.
    segment.set_direct_io(true).expect("direct io");
    segment.set_direct_reads(true);
    for i in 0..n {
        segment
            .append(&batch(i, 3 * i, 3, 1000 * i as i64), &payload(i))
            .expect("append");
    }
    segment.sync().expect("sync");
    segment
}

#[test]
fn appended_batches_read_back_by_index_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segment = filled(dir.path(), 200);
    assert!(
        segment.size() > 4 * INDEX_INTERVAL_BYTES,
        "several index intervals"
    );
    let got = segment.read_indexes(50, 53, usize::MAX).expect("read");
    let indexes: Vec<u64> = got.iter().map(|b| b.header.index).collect();
    assert_eq!(indexes, vec![50, 51, 52]);
    assert_eq!(got[0].payload, payload(50));
    // Offset 301 is inside batch 100 (offsets 300..303).
    let got = segment.read_offsets(301, 1).expect("read");
    assert_eq!(got.len(), 1, "max_bytes still returns one batch");
    assert_eq!(got[0].header.index, 100);
    assert!(
        segment
            .read_offsets(600, usize::MAX)
            .expect("read")
            .is_empty()
    );
}

#[test]
fn timestamp_lookup_finds_the_first_batch_at_or_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segment = filled(dir.path(), 200);
    // Batch i has timestamps 1000i..1000i+10.
    assert_eq!(segment.offset_for_timestamp(0).expect("lookup"), Some(0));
    assert_eq!(
        segment.offset_for_timestamp(57_005).expect("lookup"),
        Some(3 * 57)
    );
    assert_eq!(
        segment.offset_for_timestamp(57_011).expect("lookup"),
        Some(3 * 58)
    );
    assert_eq!(
        segment.offset_for_timestamp(10_000_000).expect("lookup"),
        None
    );
}

#[test]
fn appends_must_continue_the_raft_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut segment = filled(dir.path(), 3);
    assert!(segment.append(&batch(5, 9, 1, 0), b"gap").is_err());
    assert!(segment.append(&batch(3, 9, 1, 0), b"next").is_ok());
}

#[test]
fn truncation_drops_the_suffix_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut segment = filled(dir.path(), 100);
    segment.truncate_after(41).expect("truncate");
    assert_eq!(segment.last().map(|h| h.index), Some(41));
    segment
        .append(&batch(42, 126, 2, 5), b"new 42")
        .expect("append after truncate");
    segment.sync().expect("sync");
    let path = segment.path().to_path_buf();
    drop(segment);
    let (segment, recovery) = Segment::open(&path, 0).expect("open");
    assert_eq!(recovery, None);
    assert_eq!(
        segment.last().map(|h| (h.index, h.record_count)),
        Some((42, 2))
    );
    let got = segment.read_indexes(41, 100, usize::MAX).expect("read");
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].payload, &b"new 42"[..]);
    // Truncating everything leaves an empty segment.
    let (mut segment, _) = Segment::open(&path, 0).expect("open");
    segment.truncate_after(0).expect("truncate");
    assert_eq!(segment.last().map(|h| h.index), Some(0));
}

#[test]
fn a_file_cut_at_any_byte_of_its_last_batch_recovers_to_the_previous_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut segment = filled(dir.path(), 5);
    segment.trim().expect("trim");
    let path = segment.path().to_path_buf();
    let full = std::fs::read(&path).expect("read");
    let last_len = frame_len(payload(4).len());
    let last_start = full.len() - last_len;
    drop(segment);
    std::fs::write(&path, &full[..last_start]).expect("write");
    let (_, recovery) = Segment::open(&path, 0).expect("open");
    assert_eq!(recovery, None, "a cut between batches leaves a clean file");
    for cut in last_start + 1..full.len() {
        std::fs::write(&path, &full[..cut]).expect("write");
        let (segment, recovery) = Segment::open(&path, 0).expect("open");
        let recovery = recovery.expect("the torn tail is reported");
        assert_eq!(recovery.valid_bytes, last_start as u64, "cut at {cut}");
        assert_eq!(segment.last().map(|h| h.index), Some(3), "cut at {cut}");
        assert_eq!(
            std::fs::metadata(&path).expect("stat").len(),
            last_start as u64
        );
    }
}

#[test]
fn a_flipped_bit_anywhere_is_detected_and_never_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut segment = filled(dir.path(), 4);
    segment.trim().expect("trim");
    let path = segment.path().to_path_buf();
    let full = std::fs::read(&path).expect("read");
    drop(segment);
    let frame = frame_len(payload(0).len());
    for byte in (0..full.len()).step_by(7) {
        let mut bad = full.clone();
        bad[byte] ^= 0x10;
        std::fs::write(&path, &bad).expect("write");
        let (segment, recovery) = Segment::open(&path, 0).expect("open");
        assert!(recovery.is_some(), "flip at {byte} went unnoticed");
        // Only the batches before the damaged one survive.
        let damaged = (byte / frame) as u64;
        assert_eq!(
            segment.last().map(|h| h.index),
            damaged.checked_sub(1),
            "flip at {byte}"
        );
        let readable = segment.read_indexes(0, 100, usize::MAX).expect("read");
        assert_eq!(readable.len() as u64, damaged);
    }
}

#[test]
fn a_direct_write_padding_is_a_clean_end_but_a_torn_frame_in_it_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segment = filled(dir.path(), 5);
    let path = segment.path().to_path_buf();
    let size = segment.size() as usize;
    drop(segment);
    let mut padded = std::fs::read(&path).expect("read");
    padded.truncate(size);
    padded.resize(size.div_ceil(4096) * 4096, 0);
    std::fs::write(&path, &padded).expect("write");
    let (segment, recovery) = Segment::open(&path, 0).expect("open");
    assert_eq!(recovery, None, "zeros up to a block boundary are padding");
    assert_eq!(segment.size() as usize, size);
    assert_eq!(segment.last().map(|h| h.index), Some(4));
    drop(segment);
    // The last frame torn: its first bytes landed, zeros follow to the block's end.
    let last_start = size - frame_len(payload(4).len());
    let mut torn = padded.clone();
    torn[last_start + 7..].fill(0);
    std::fs::write(&path, &torn).expect("write");
    let (segment, recovery) = Segment::open(&path, 0).expect("open");
    let recovery = recovery.expect("a torn frame is reported");
    assert_eq!(recovery.valid_bytes, last_start as u64);
    assert_eq!(segment.last().map(|h| h.index), Some(3));
    // More zeros than an extension writes ahead are damage, not padding.
    let mut long = padded[..size].to_vec();
    long.resize(size + MAX_ZERO_TAIL as usize + 1, 0);
    std::fs::write(&path, &long).expect("write");
    let (_, recovery) = Segment::open(&path, 0).expect("open");
    assert!(recovery.is_some());
}

/// Syncs `segment`, reopens its file and checks that it holds exactly `expected`.
fn reopens_to(segment: Segment, expected: &[StoredBatch]) {
    segment.sync().expect("sync");
    let path = segment.path().to_path_buf();
    drop(segment);
    let (segment, recovery) = Segment::open(&path, 0).expect("open");
    assert_eq!(recovery, None);
    assert_eq!(
        segment.read_indexes(0, 100, usize::MAX).expect("read"),
        expected
    );
}

#[test]
fn sealing_trims_the_padding_and_appends_go_on_after_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut segment = filled(dir.path(), 50);
    let path = segment.path().to_path_buf();
    segment.write_index().expect("seal");
    assert_eq!(
        std::fs::metadata(&path).expect("stat").len(),
        segment.size()
    );
    drop(segment);
    let (mut segment, recovery) = Segment::open(&path, 0).expect("open");
    assert_eq!(recovery, None);
    segment.remove_index().expect("unseal");
    for i in 50..60 {
        segment
            .append(&batch(i, 3 * i, 3, 1000 * i as i64), &payload(i))
            .expect("append");
    }
    let before = segment.read_indexes(0, 100, usize::MAX).expect("read");
    assert_eq!(before.len(), 60);
    reopens_to(segment, &before);
}

#[test]
fn direct_appends_read_back_before_the_sync_and_truncate_while_unwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut segment = Segment::create(dir.path(), 0).expect("create");
    segment.set_direct_io(true).expect("direct io");
    for i in 0..30 {
        segment
            .append(&batch(i, 3 * i, 3, 1000 * i as i64), &payload(i))
            .expect("append");
        // Read back at once: served from memory until the sync writes it.
        let got = segment.read_indexes(i, i + 1, usize::MAX).expect("read");
        assert_eq!(got[0].payload, payload(i));
        if i == 12 {
            segment.sync().expect("sync");
        }
    }
    // Cut while entries 13..30 are unwritten: they reach the file first, then go.
    segment.truncate_after(20).expect("truncate");
    for i in 21..25 {
        segment
            .append(&batch(i, 3 * i, 3, 7), b"after the cut")
            .expect("append");
    }
    let before = segment.read_indexes(0, 100, usize::MAX).expect("read");
    assert_eq!(before.len(), 25);
    assert_eq!(before[24].payload, &b"after the cut"[..]);
    reopens_to(segment, &before);
}

#[test]
fn large_scans_read_the_same_batches_directly_or_through_the_page_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut direct = Segment::create(dir.path(), 0).expect("create");
    direct.set_direct_io(true).expect("direct io");
    direct.set_direct_reads(true);
    let other = tempfile::tempdir().expect("tempdir");
    let mut buffered = Segment::create(other.path(), 0).expect("create");
    let big = |i: u64| format!("{i:>6} ").repeat(500).into_bytes();
    for i in 0..300 {
        for segment in [&mut direct, &mut buffered] {
            segment
                .append(&batch(i, 3 * i, 3, 1000 * i as i64), &big(i))
                .expect("append");
        }
        if i == 150 {
            direct.sync().expect("sync");
        }
    }
    // Half written (read directly, in growing chunks), half still in memory.
    for (offset, max) in [(0, usize::MAX), (301, 200_000), (449, 1), (0, 5_000_000)] {
        let a = direct.read_offsets(offset, max).expect("read");
        let b = buffered.read_offsets(offset, max).expect("read");
        assert_eq!(a, b, "offset {offset} max {max}");
    }
    assert_eq!(direct.read_offsets(0, usize::MAX).expect("read").len(), 300);
    direct.sync().expect("sync");
    assert_eq!(
        direct.read_indexes(7, 299, usize::MAX).expect("read"),
        buffered.read_indexes(7, 299, usize::MAX).expect("read")
    );
}

#[test]
fn zeros_written_ahead_are_a_clean_end_appends_overwrite_them_and_sealing_trims_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut segment = Segment::create(dir.path(), 0).expect("create");
    segment.set_zero_ahead(Mode::Always);
    for i in 0..20 {
        segment
            .append(&batch(i, 3 * i, 3, 1000 * i as i64), &payload(i))
            .expect("append");
    }
    let path = segment.path().to_path_buf();
    let size = segment.size();
    assert!(
        std::fs::metadata(&path).expect("stat").len() > size + 4096,
        "zeros follow the frames"
    );
    let written = segment.read_indexes(0, 100, usize::MAX).expect("read");
    reopens_to(segment, &written);

    // Reopened, the segment appends over the zeros; a crash leaves frames then zeros.
    let (mut segment, _) = Segment::open(&path, 0).expect("open");
    assert_eq!(segment.size(), size);
    segment.set_zero_ahead(Mode::Always);
    for i in 20..30 {
        segment
            .append(&batch(i, 3 * i, 3, 1000 * i as i64), &payload(i))
            .expect("append");
    }
    let written = segment.read_indexes(0, 100, usize::MAX).expect("read");
    assert_eq!(written.len(), 30);
    let size = segment.size();
    drop(segment);
    let (segment, recovery) = Segment::open(&path, 0).expect("open");
    assert_eq!(recovery, None);
    assert_eq!(segment.size(), size);
    drop(segment);

    // A frame torn inside the zeros is damage like any torn write.
    let mut bytes = std::fs::read(&path).expect("read");
    let last_start = size as usize - frame_len(payload(29).len());
    bytes[last_start + 20..size as usize].fill(0);
    std::fs::write(&path, &bytes).expect("write");
    let (segment, recovery) = Segment::open(&path, 0).expect("open");
    let recovery = recovery.expect("a torn frame is reported");
    assert_eq!(recovery.valid_bytes, last_start as u64);
    assert_eq!(segment.last().map(|h| h.index), Some(28));
    drop(segment);

    // Sealing cuts the file to its frames.
    let (mut segment, _) = Segment::open(&path, 0).expect("open");
    segment.set_zero_ahead(Mode::Always);
    segment
        .append(&batch(29, 87, 3, 29_000), &payload(29))
        .expect("append");
    segment.sync().expect("sync");
    segment.write_index().expect("seal");
    assert_eq!(
        std::fs::metadata(&path).expect("stat").len(),
        segment.size()
    );
}
