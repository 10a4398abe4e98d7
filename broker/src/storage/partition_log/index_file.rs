//! The index file of a sealed segment (`<base offset>.index` beside `<base offset>.log`):
//! the segment's sparse index and its first and last entries, so that opening a log
//! does not have to scan sealed segments again.
//!
//! ```text
//! magic          u32  "SIDX"
//! version        u8   2 (2: headers of frame format 2)
//! segment_size   u64  length of the .log file it describes
//! max_timestamp  i64
//! first, last    u8 present flag + header (format::put_header) each
//! point_count    u32
//! points         (position, raft_index, base_offset u64; max_timestamp_before i64)*
//! crc            u32  CRC32C of everything before it
//! ```
//!
//! An index is trusted only if its CRC holds and it describes a `.log` file of exactly
//! the length it names; anything else is *stale* and the segment is scanned (and its
//! index rewritten). The index is written (to a temporary name, synced, renamed) only
//! once its segment is sealed and synced, and removed when a truncation makes the
//! segment active again.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut};

use super::format::{BODY_HEADER_LEN, BatchHeader, get_header, put_header};

const MAGIC: u32 = u32::from_be_bytes(*b"SIDX");
const VERSION: u8 = 2;
const POINT_LEN: usize = 32;
/// An index file longer than this is not one of ours (a 1 GiB segment indexed every
/// 4 KiB needs 8 MiB).
const MAX_INDEX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// One sparse index point: the batch starting at `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexPoint {
    pub position: u64,
    pub raft_index: u64,
    pub base_offset: u64,
    /// Largest record timestamp of every batch before `position`.
    pub max_timestamp_before: i64,
}

/// Everything opening a sealed segment needs besides its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    pub segment_size: u64,
    pub max_timestamp: i64,
    pub first: Option<BatchHeader>,
    pub last: Option<BatchHeader>,
    pub points: Vec<IndexPoint>,
}

/// The index file that belongs to the segment file `log_path`.
pub fn index_path(log_path: &Path) -> PathBuf {
    log_path.with_extension("index")
}

fn encode(summary: &SegmentSummary) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 2 * BODY_HEADER_LEN + summary.points.len() * POINT_LEN);
    out.put_u32(MAGIC);
    out.put_u8(VERSION);
    out.put_u64_le(summary.segment_size);
    out.put_i64_le(summary.max_timestamp);
    for header in [&summary.first, &summary.last] {
        match header {
            Some(h) => {
                out.put_u8(1);
                put_header(h, &mut out);
            }
            None => out.put_u8(0),
        }
    }
    out.put_u32_le(summary.points.len() as u32);
    for p in &summary.points {
        out.put_u64_le(p.position);
        out.put_u64_le(p.raft_index);
        out.put_u64_le(p.base_offset);
        out.put_i64_le(p.max_timestamp_before);
    }
    let crc = crc32c::crc32c(&out);
    out.put_u32_le(crc);
    out
}

fn decode(bytes: &[u8]) -> Option<SegmentSummary> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let mut b = body;
    if b.remaining() < 4 + 1 + 8 + 8 || b.get_u32() != MAGIC || b.get_u8() != VERSION {
        return None;
    }
    let segment_size = b.get_u64_le();
    let max_timestamp = b.get_i64_le();
    let mut headers = [None, None];
    for slot in &mut headers {
        if !b.has_remaining() {
            return None;
        }
        if b.get_u8() == 1 {
            *slot = Some(get_header(&mut b).ok()?);
        }
    }
    if b.remaining() < 4 {
        return None;
    }
    let count = b.get_u32_le() as usize;
    if b.remaining() != count.checked_mul(POINT_LEN)? {
        return None;
    }
    let points = (0..count)
        .map(|_| IndexPoint {
            position: b.get_u64_le(),
            raft_index: b.get_u64_le(),
            base_offset: b.get_u64_le(),
            max_timestamp_before: b.get_i64_le(),
        })
        .collect();
    let [first, last] = headers;
    Some(SegmentSummary {
        segment_size,
        max_timestamp,
        first,
        last,
        points,
    })
}

/// Writes the index of the (sealed, synced) segment `log_path` durably: a temporary
/// file, fsync'd, renamed into place. The caller syncs the directory.
pub fn write(log_path: &Path, summary: &SegmentSummary) -> io::Result<()> {
    let path = index_path(log_path);
    let tmp = path.with_extension("index.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(&encode(summary))?;
    file.sync_data()?;
    std::fs::rename(&tmp, &path)
}

/// The summary stored for `log_path`, if its index file exists, is intact and describes
/// the segment file as it is (`segment_size` bytes). `None` means: scan the segment.
pub fn read_valid(log_path: &Path, segment_size: u64) -> io::Result<Option<SegmentSummary>> {
    let mut file = match File::open(index_path(log_path)) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    if file.metadata()?.len() > MAX_INDEX_FILE_BYTES {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(decode(&bytes).filter(|s| s.segment_size == segment_size && consistent(s)))
}

/// The summary stored for `log_path` if its index file is intact, whatever length it
/// describes (what a damaged segment held before the damage).
pub fn read_any(log_path: &Path) -> Option<SegmentSummary> {
    let file = File::open(index_path(log_path)).ok()?;
    if file.metadata().ok()?.len() > MAX_INDEX_FILE_BYTES {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MAX_INDEX_FILE_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    decode(&bytes).filter(consistent)
}

/// Internal sanity of a decoded summary: points ordered and inside the segment, entries
/// present exactly when the segment has bytes.
fn consistent(s: &SegmentSummary) -> bool {
    let ordered = s.points.windows(2).all(|w| {
        w[0].position < w[1].position
            && w[0].raft_index < w[1].raft_index
            && w[0].base_offset <= w[1].base_offset
    });
    let inside = s.points.iter().all(|p| p.position < s.segment_size);
    let entries = match (s.first, s.last) {
        (Some(first), Some(last)) => first.index <= last.index && s.segment_size > 0,
        (None, None) => s.segment_size == 0,
        _ => false,
    };
    ordered && inside && entries && s.points.first().is_none_or(|p| p.position == 0)
}

/// Removes the index file of `log_path`, if any.
pub fn remove(log_path: &Path) -> io::Result<()> {
    match std::fs::remove_file(index_path(log_path)) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::partition_log::format::EntryKind;

    fn summary() -> SegmentSummary {
        let header = |index| BatchHeader {
            term: 2,
            leader_node: 1,
            index,
            kind: EntryKind::Records,
            base_offset: index * 10,
            record_count: 10,
            first_timestamp: 5,
            max_timestamp: 9,
            producer_id: 3,
            base_sequence: index * 10,
            compression: 2,
        };
        SegmentSummary {
            segment_size: 10_000,
            max_timestamp: 9,
            first: Some(header(1)),
            last: Some(header(40)),
            points: vec![
                IndexPoint {
                    position: 0,
                    raft_index: 1,
                    base_offset: 10,
                    max_timestamp_before: i64::MIN,
                },
                IndexPoint {
                    position: 4200,
                    raft_index: 17,
                    base_offset: 170,
                    max_timestamp_before: 9,
                },
            ],
        }
    }

    #[test]
    fn round_trips_and_rejects_any_damage() {
        let bytes = encode(&summary());
        assert_eq!(decode(&bytes), Some(summary()));
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
        for byte in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[byte] ^= 0x10;
            assert_eq!(decode(&bad), None, "flip in byte {byte}");
        }
    }

    #[test]
    fn a_stale_or_missing_index_is_not_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("00000000000000000000.log");
        assert_eq!(read_valid(&log, 10_000).expect("read"), None);
        write(&log, &summary()).expect("write");
        assert_eq!(read_valid(&log, 10_000).expect("read"), Some(summary()));
        assert_eq!(read_valid(&log, 9_999).expect("read"), None, "size changed");
        remove(&log).expect("remove");
        assert_eq!(read_valid(&log, 10_000).expect("read"), None);
    }
}
