//! The on-disk frame of one log entry (a *batch*): a fixed header that says where the
//! entry sits in the Raft log and in the partition's offsets, then an opaque payload.
//!
//! ```text
//! 0   magic         u8   format version (2)
//! 1   length        u32  bytes after this field (crc + body)
//! 5   crc           u32  CRC32C of the body
//! 9   body:
//!     term          u64  Raft term of the entry's leader
//!     leader_node   u64  node id of that leader
//!     index         u64  Raft log index
//!     kind          u8   0 records, 1 blank, 2 membership, 3 control
//!     base_offset   u64  offset of the first record (next offset for non-record entries)
//!     record_count  u32
//!     first_ts      i64  smallest record timestamp (ms)
//!     max_ts        i64  largest record timestamp (ms)
//!     producer_id   u64  idempotent producer that wrote the records (0: none)
//!     base_sequence u64  that producer's sequence number of the first record
//!     compression   u8   how the payload is compressed (0 none, 1 lz4, 2 zstd)
//!     payload       ...  the rest
//! ```
//!
//! All integers are little-endian. Decoding never trusts a length it has not bounded,
//! and tells a torn tail (too few bytes) from corruption (bad magic, length or CRC).

use bytes::{Buf, BufMut};

/// Format 2 added the producer fields; format 1 frames are not read.
pub const MAGIC: u8 = 2;
/// Bytes before the body: magic, length, crc.
pub const PREFIX_LEN: usize = 9;
/// Bytes of the fixed part of the body.
pub const BODY_HEADER_LEN: usize = 8 + 8 + 8 + 1 + 8 + 4 + 8 + 8 + 8 + 8 + 1;
/// Largest frame accepted on read; a longer length field is corruption, not a reason to
/// allocate.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// What an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Records = 0,
    Blank = 1,
    Membership = 2,
    /// A command about the log itself (e.g. retention), carrying no records.
    Control = 3,
}

impl EntryKind {
    fn from_u8(v: u8) -> Option<EntryKind> {
        match v {
            0 => Some(EntryKind::Records),
            1 => Some(EntryKind::Blank),
            2 => Some(EntryKind::Membership),
            3 => Some(EntryKind::Control),
            _ => None,
        }
    }
}

/// The fixed fields of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub term: u64,
    pub leader_node: u64,
    pub index: u64,
    pub kind: EntryKind,
    pub base_offset: u64,
    pub record_count: u32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    /// The idempotent producer whose records these are (0: none) and its sequence
    /// number of the first of them.
    pub producer_id: u64,
    pub base_sequence: u64,
    /// The payload's compression code (`strait_records::Compression::code`).
    pub compression: u8,
}

impl BatchHeader {
    /// The offset after this batch's records.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }
}

/// Why bytes are not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than the frame needs: a write cut short (a torn tail).
    #[error("incomplete frame: {have} of {need} bytes")]
    Incomplete { have: usize, need: usize },
    #[error("corrupt frame: {0}")]
    Corrupt(&'static str),
}

/// Total encoded size of a batch with a payload of `payload_len` bytes.
pub fn frame_len(payload_len: usize) -> usize {
    PREFIX_LEN + BODY_HEADER_LEN + payload_len
}

/// Appends the encoded batch to `out`.
#[cfg(test)]
pub fn encode_batch(header: &BatchHeader, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(frame_len(payload.len()));
    out.extend_from_slice(&frame_head(header, payload));
    out.put_slice(payload);
}

/// The bytes of a frame before its payload (prefix and header, CRC included), so that a
/// writer can write the payload from where it already is.
pub fn frame_head(header: &BatchHeader, payload: &[u8]) -> [u8; PREFIX_LEN + BODY_HEADER_LEN] {
    let mut head = [0u8; PREFIX_LEN + BODY_HEADER_LEN];
    let mut body = &mut head[PREFIX_LEN..];
    put_header(header, &mut body);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head[PREFIX_LEN..]), payload);
    head[0] = MAGIC;
    head[1..5].copy_from_slice(&((4 + BODY_HEADER_LEN + payload.len()) as u32).to_le_bytes());
    head[5..9].copy_from_slice(&crc.to_le_bytes());
    head
}

/// Decodes the batch at the start of `buf`: its header, its payload and the frame's
/// total length.
pub fn decode_batch(buf: &[u8]) -> Result<(BatchHeader, &[u8], usize), FrameError> {
    if buf.len() < PREFIX_LEN {
        return Err(FrameError::Incomplete {
            have: buf.len(),
            need: PREFIX_LEN,
        });
    }
    if buf[0] != MAGIC {
        return Err(FrameError::Corrupt("unknown magic byte"));
    }
    let mut prefix = &buf[1..PREFIX_LEN];
    let length = prefix.get_u32_le() as usize;
    let crc = prefix.get_u32_le();
    if !(4 + BODY_HEADER_LEN..=MAX_FRAME_BYTES).contains(&length) {
        return Err(FrameError::Corrupt("length out of bounds"));
    }
    let total = 5 + length;
    if buf.len() < total {
        return Err(FrameError::Incomplete {
            have: buf.len(),
            need: total,
        });
    }
    let body = &buf[PREFIX_LEN..total];
    if crc32c::crc32c(body) != crc {
        return Err(FrameError::Corrupt("checksum mismatch"));
    }
    let mut b = body;
    let header = get_header(&mut b)?;
    Ok((header, &body[BODY_HEADER_LEN..], total))
}

/// Appends the [`BODY_HEADER_LEN`] bytes of a header (also used by index files).
pub fn put_header(header: &BatchHeader, out: &mut impl BufMut) {
    out.put_u64_le(header.term);
    out.put_u64_le(header.leader_node);
    out.put_u64_le(header.index);
    out.put_u8(header.kind as u8);
    out.put_u64_le(header.base_offset);
    out.put_u32_le(header.record_count);
    out.put_i64_le(header.first_timestamp);
    out.put_i64_le(header.max_timestamp);
    out.put_u64_le(header.producer_id);
    out.put_u64_le(header.base_sequence);
    out.put_u8(header.compression);
}

/// Reads a header written by [`put_header`]; the caller has checked the length.
pub fn get_header(b: &mut impl Buf) -> Result<BatchHeader, FrameError> {
    if b.remaining() < BODY_HEADER_LEN {
        return Err(FrameError::Incomplete {
            have: b.remaining(),
            need: BODY_HEADER_LEN,
        });
    }
    let term = b.get_u64_le();
    let leader_node = b.get_u64_le();
    let index = b.get_u64_le();
    let kind = EntryKind::from_u8(b.get_u8()).ok_or(FrameError::Corrupt("unknown entry kind"))?;
    Ok(BatchHeader {
        term,
        leader_node,
        index,
        kind,
        base_offset: b.get_u64_le(),
        record_count: b.get_u32_le(),
        first_timestamp: b.get_i64_le(),
        max_timestamp: b.get_i64_le(),
        producer_id: b.get_u64_le(),
        base_sequence: b.get_u64_le(),
        compression: b.get_u8(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(index: u64) -> BatchHeader {
        BatchHeader {
            term: 3,
            leader_node: 2,
            index,
            kind: EntryKind::Records,
            base_offset: 100 + index,
            record_count: 5,
            first_timestamp: 1_700_000_000_000,
            max_timestamp: 1_700_000_000_500,
            producer_id: 7,
            base_sequence: 40 + index,
            compression: 1,
        }
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode_batch(&header(7), b"payload", &mut buf);
        assert_eq!(buf.len(), frame_len(7));
        let (h, payload, len) = decode_batch(&buf).expect("valid");
        assert_eq!((h, payload, len), (header(7), &b"payload"[..], buf.len()));
    }

    #[test]
    fn every_truncation_is_incomplete_never_misread() {
        let mut buf = Vec::new();
        encode_batch(&header(1), b"some records", &mut buf);
        for cut in 0..buf.len() {
            assert!(
                matches!(
                    decode_batch(&buf[..cut]),
                    Err(FrameError::Incomplete { .. })
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode_batch(&header(1), b"some records", &mut buf);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                match decode_batch(&bad) {
                    Err(_) => {}
                    Ok((h, p, _)) => panic!("flip at {byte}.{bit} accepted: {h:?} {p:?}"),
                }
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_batch(&bytes);
        }

        #[test]
        fn any_header_and_payload_round_trips(
            term in any::<u64>(), node in any::<u64>(), index in any::<u64>(),
            kind in 0u8..3, base in any::<u64>(), count in any::<u32>(),
            t0 in any::<i64>(), t1 in any::<i64>(), producer in any::<u64>(), seq in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let h = BatchHeader {
                term, leader_node: node, index,
                kind: EntryKind::from_u8(kind).expect("0..3"),
                base_offset: base, record_count: count, first_timestamp: t0, max_timestamp: t1,
                producer_id: producer, base_sequence: seq, compression: kind,
            };
            let mut buf = Vec::new();
            encode_batch(&h, &payload, &mut buf);
            let (decoded, p, len) = decode_batch(&buf).expect("valid");
            prop_assert_eq!(decoded, h);
            prop_assert_eq!(p, &payload[..]);
            prop_assert_eq!(len, buf.len());
        }
    }
}
