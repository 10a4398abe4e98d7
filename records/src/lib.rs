//! The record batch: the one encoding of a run of records, from the producer that builds
//! it, through the produce request, the Raft entry, the segment file and replication,
//! to the fetch response the consumer reads. Nobody on the way re-encodes it: whoever
//! receives it from the network checks it ([`RecordBatch::parse`]: the leader, each
//! follower, the consumer), and otherwise the bytes are moved. The leader copies a
//! batch only to stamp its append time on records that carry no timestamp.
//!
//! A batch is its records back to back, each (little-endian):
//!
//! ```text
//! u32 body length (the bytes after this field)
//! i64 timestamp (ms since the epoch; 0 asks the leader to stamp its append time)
//! u32 key length + 1 (0: no key), key
//! u32 value length, value
//! u16 header count, then per header: u16 name length, name (UTF-8), u32 value length, value
//! ```
//!
//! Parsing never trusts its input: every length is checked against what is left, and a
//! batch must end exactly where its last record does.
//!
//! A batch may travel and be stored compressed ([`Compression`]): then it is the
//! codec's frame of those bytes, indivisible, and readers decompress it to check and
//! read it.

mod compression;

use bytes::{BufMut, Bytes, BytesMut};

pub use compression::{Compression, MAX_PLAIN_BATCH_BYTES};

/// Bytes a record adds beside its key, value and headers (length, timestamp, key
/// length, value length, header count).
pub const RECORD_OVERHEAD_BYTES: usize = 4 + 8 + 4 + 4 + 2;
/// Bytes a header adds beside its name and value.
const HEADER_OVERHEAD_BYTES: usize = 2 + 4;

/// Why bytes are not a valid record batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("a record batch needs at least one record")]
    Empty,
    #[error("record {record}: {what}")]
    Malformed { record: u32, what: &'static str },
    #[error("record {record} is {size} bytes, over the limit of {limit}")]
    RecordTooLarge {
        record: u32,
        size: usize,
        limit: usize,
    },
    #[error("the batch says {declared} records but holds {found}")]
    CountMismatch { declared: u32, found: u32 },
    #[error("a record batch holds at most {} records", u32::MAX)]
    TooManyRecords,
    #[error("damaged {0} data")]
    Compression(&'static str),
    #[error("the batch decompresses to more than {limit} bytes")]
    PlainTooLarge { limit: usize },
}

/// A checked run of records, sharing the buffer it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    /// As sent and stored: compressed when `compression` says so.
    bytes: Bytes,
    compression: Compression,
    count: u32,
    first_timestamp: i64,
    max_timestamp: i64,
    /// Some record has timestamp 0 (known only for a parsed batch).
    unstamped: bool,
}

/// One record of a batch; key, value and header values share the batch's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
}

impl RecordBatch {
    /// Checks `bytes` as a batch of records, none over `max_record_bytes` encoded.
    pub fn parse(bytes: Bytes, max_record_bytes: usize) -> Result<RecordBatch, BatchError> {
        let mut count = 0u32;
        let (mut first, mut max) = (i64::MAX, i64::MIN);
        let mut unstamped = false;
        let mut at = 0usize;
        while at < bytes.len() {
            let end = record_end(&bytes, at, count)?;
            if end - at > max_record_bytes {
                return Err(BatchError::RecordTooLarge {
                    record: count,
                    size: end - at,
                    limit: max_record_bytes,
                });
            }
            check_body(&bytes[at + 4..end], count)?;
            let ts = read_i64(&bytes, at + 4);
            unstamped |= ts == 0;
            first = first.min(ts);
            max = max.max(ts);
            count = count.checked_add(1).ok_or(BatchError::TooManyRecords)?;
            at = end;
        }
        if count == 0 {
            return Err(BatchError::Empty);
        }
        Ok(RecordBatch {
            bytes,
            compression: Compression::None,
            count,
            first_timestamp: first,
            max_timestamp: max,
            unstamped,
        })
    }

    /// Checks `bytes` as a batch compressed with `compression` that holds at most
    /// `max_plain_bytes` once decompressed, no record over `max_record_bytes`.
    pub fn parse_compressed(
        bytes: Bytes,
        compression: Compression,
        max_plain_bytes: usize,
        max_record_bytes: usize,
    ) -> Result<RecordBatch, BatchError> {
        Self::parse_keeping_plain(bytes, compression, max_plain_bytes, max_record_bytes)
            .map(|(batch, _)| batch)
    }

    /// [`RecordBatch::parse_counted`] for a reader: the checked batch's records, from
    /// the one decompression the check needed.
    pub fn read_counted(
        bytes: Bytes,
        compression: Compression,
        declared: u32,
        max_plain_bytes: usize,
        max_record_bytes: usize,
    ) -> Result<Records, BatchError> {
        let (batch, plain) =
            Self::parse_keeping_plain(bytes, compression, max_plain_bytes, max_record_bytes)?;
        if batch.count != declared {
            return Err(BatchError::CountMismatch {
                declared,
                found: batch.count,
            });
        }
        Ok(Records {
            bytes: plain,
            at: 0,
            index: 0,
            damage: None,
        })
    }

    /// The checked batch and its plain (decompressed) bytes.
    fn parse_keeping_plain(
        bytes: Bytes,
        compression: Compression,
        max_plain_bytes: usize,
        max_record_bytes: usize,
    ) -> Result<(RecordBatch, Bytes), BatchError> {
        if compression == Compression::None {
            if bytes.len() > max_plain_bytes {
                return Err(BatchError::PlainTooLarge {
                    limit: max_plain_bytes,
                });
            }
            let batch = RecordBatch::parse(bytes.clone(), max_record_bytes)?;
            return Ok((batch, bytes));
        }
        let plain = compression.decompress(&bytes, max_plain_bytes)?;
        let parsed = RecordBatch::parse(plain.clone(), max_record_bytes)?;
        Ok((
            RecordBatch {
                bytes,
                compression,
                ..parsed
            },
            plain,
        ))
    }

    /// Like [`RecordBatch::parse_compressed`], and the batch must hold `declared`
    /// records.
    pub fn parse_counted(
        bytes: Bytes,
        compression: Compression,
        declared: u32,
        max_plain_bytes: usize,
        max_record_bytes: usize,
    ) -> Result<RecordBatch, BatchError> {
        let batch =
            RecordBatch::parse_compressed(bytes, compression, max_plain_bytes, max_record_bytes)?;
        if batch.count != declared {
            return Err(BatchError::CountMismatch {
                declared,
                found: batch.count,
            });
        }
        Ok(batch)
    }

    /// A batch read back from storage that checked it (CRC) when it was written: its
    /// count and timestamps come from the stored header. Reading a damaged one yields
    /// errors, never a panic.
    pub fn from_stored(
        bytes: Bytes,
        compression: Compression,
        count: u32,
        first_timestamp: i64,
        max_timestamp: i64,
    ) -> RecordBatch {
        RecordBatch {
            bytes,
            compression,
            count,
            first_timestamp,
            max_timestamp,
            unstamped: false,
        }
    }

    /// The batch as sent and stored (compressed if it is).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Whether some record has timestamp 0 (asks for the append time); known only for
    /// a parsed batch.
    pub fn is_unstamped(&self) -> bool {
        self.unstamped
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Size in bytes as sent and stored.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn first_timestamp(&self) -> i64 {
        self.first_timestamp
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// Gives every record with timestamp 0 the time `append_time_ms` (copies the batch
    /// only when one needs it; a batch read from storage never does). A compressed
    /// batch is left as it is: its records must carry their timestamps.
    pub fn stamp_append_time(self, append_time_ms: i64) -> RecordBatch {
        if !self.unstamped || self.compression != Compression::None {
            return self;
        }
        let mut buf = BytesMut::from(&self.bytes[..]);
        let (mut first, mut max) = (i64::MAX, i64::MIN);
        for (start, end) in self.spans() {
            if end - start < 12 {
                continue; // damaged (a stored batch is not re-parsed): no timestamp
            }
            let at = start + 4;
            let mut ts = read_i64(&buf, at);
            if ts == 0 {
                ts = append_time_ms;
                buf[at..at + 8].copy_from_slice(&ts.to_le_bytes());
            }
            first = first.min(ts);
            max = max.max(ts);
        }
        RecordBatch {
            bytes: buf.freeze(),
            compression: Compression::None,
            count: self.count,
            first_timestamp: first,
            max_timestamp: max,
            unstamped: false,
        }
    }

    /// The records from the `skip`-th on (a slice of the same buffer). A compressed
    /// batch is indivisible: it is returned whole.
    pub fn skip(&self, skip: u32) -> RecordBatch {
        if skip == 0 || self.compression != Compression::None {
            return self.clone();
        }
        // A damaged batch (lengths that stop early) skips to an empty remainder.
        let (from, count) = match self.spans().nth(skip as usize) {
            Some((start, _)) => (start, self.count.saturating_sub(skip)),
            None => (self.bytes.len(), 0),
        };
        RecordBatch {
            bytes: self.bytes.slice(from..),
            compression: Compression::None,
            count,
            // Bounds of the whole batch: still bounds of the part.
            first_timestamp: self.first_timestamp,
            max_timestamp: self.max_timestamp,
            unstamped: false,
        }
    }

    /// The first records, as many as fit in `max_bytes` but at least one (a slice of
    /// the same buffer). A compressed batch is indivisible: it is returned whole.
    pub fn truncate_to(&self, max_bytes: usize) -> RecordBatch {
        if self.bytes.len() <= max_bytes || self.compression != Compression::None {
            return self.clone();
        }
        let (mut end, mut count) = (0usize, 0u32);
        for (_, record_end) in self.spans() {
            if count > 0 && record_end > max_bytes {
                break;
            }
            (end, count) = (record_end, count + 1);
        }
        RecordBatch {
            bytes: self.bytes.slice(..end),
            compression: Compression::None,
            count,
            first_timestamp: self.first_timestamp,
            max_timestamp: self.max_timestamp,
            unstamped: false,
        }
    }

    /// The records, in order (decompressed first if need be); a damaged batch ends
    /// with an error.
    pub fn records(&self) -> Records {
        match self
            .compression
            .decompress(&self.bytes, MAX_PLAIN_BATCH_BYTES)
        {
            Ok(bytes) => Records {
                bytes,
                at: 0,
                index: 0,
                damage: None,
            },
            Err(err) => Records {
                bytes: Bytes::new(),
                at: 0,
                index: 0,
                damage: Some(err),
            },
        }
    }

    /// Where each record starts and ends, stopping at the first damaged length.
    fn spans(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let mut at = 0usize;
        let mut index = 0u32;
        std::iter::from_fn(move || {
            if at >= self.bytes.len() {
                return None;
            }
            let end = record_end(&self.bytes, at, index).ok()?;
            let start = at;
            (at, index) = (end, index + 1);
            Some((start, end))
        })
    }
}

/// Iterator over a batch's records.
pub struct Records {
    bytes: Bytes,
    at: usize,
    index: u32,
    /// Why the batch could not be decompressed (reported once).
    damage: Option<BatchError>,
}

impl Iterator for Records {
    type Item = Result<Record, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(damage) = self.damage.take() {
            return Some(Err(damage));
        }
        if self.at >= self.bytes.len() {
            return None;
        }
        let record = read_record(&self.bytes, self.at, self.index);
        match &record {
            Ok((_, end)) => self.at = *end,
            // Stop after reporting the damage.
            Err(_) => self.at = self.bytes.len(),
        }
        self.index += 1;
        Some(record.map(|(record, _)| record))
    }
}

/// Builds a batch; the producer's side of the encoding.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    buf: BytesMut,
    count: u32,
}

impl BatchBuilder {
    pub fn with_capacity(bytes: usize) -> BatchBuilder {
        BatchBuilder {
            buf: BytesMut::with_capacity(bytes),
            count: 0,
        }
    }

    /// Appends one record. Panics if a key, value or header is over 4 GiB, a header
    /// name over 64 KiB or there are more than 65,535 headers: callers bound records
    /// far below that (see [`encoded_len`]).
    pub fn push(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(String, Bytes)],
    ) {
        let len = encoded_len(key.map(<[u8]>::len), value.len(), headers);
        self.buf.reserve(len);
        self.buf.put_u32_le(to_u32(len - 4));
        self.buf.put_i64_le(timestamp_ms);
        match key {
            Some(key) => {
                self.buf.put_u32_le(to_u32(key.len() + 1));
                self.buf.put_slice(key);
            }
            None => self.buf.put_u32_le(0),
        }
        self.buf.put_u32_le(to_u32(value.len()));
        self.buf.put_slice(value);
        let header_count = u16::try_from(headers.len()).expect("at most 65,535 headers");
        self.buf.put_u16_le(header_count);
        for (name, value) in headers {
            let name_len = u16::try_from(name.len()).expect("header names under 64 KiB");
            self.buf.put_u16_le(name_len);
            self.buf.put_slice(name.as_bytes());
            self.buf.put_u32_le(to_u32(value.len()));
            self.buf.put_slice(value);
        }
        self.count += 1;
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Encoded bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded records, for a produce request (with [`BatchBuilder::count`]).
    pub fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

/// Bytes a record with these parts occupies in a batch.
pub fn encoded_len(key: Option<usize>, value: usize, headers: &[(String, Bytes)]) -> usize {
    RECORD_OVERHEAD_BYTES
        + key.unwrap_or(0)
        + value
        + headers
            .iter()
            .map(|(n, v)| HEADER_OVERHEAD_BYTES + n.len() + v.len())
            .sum::<usize>()
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).expect("record parts are under 4 GiB")
}

fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn read_i64(b: &[u8], at: usize) -> i64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    i64::from_le_bytes(v)
}

/// The end of the record starting at `at` (its length field checked against the batch).
fn record_end(bytes: &[u8], at: usize, record: u32) -> Result<usize, BatchError> {
    let malformed = |what| BatchError::Malformed { record, what };
    if bytes.len() - at < 4 {
        return Err(malformed("truncated length"));
    }
    let body = read_u32(bytes, at) as usize;
    if body > bytes.len() - at - 4 {
        return Err(malformed("length runs past the batch"));
    }
    Ok(at + 4 + body)
}

/// A cursor over one record's body that refuses to read past it.
struct Body<'a> {
    b: &'a [u8],
    at: usize,
    record: u32,
}

impl Body<'_> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<std::ops::Range<usize>, BatchError> {
        if self.b.len() - self.at < n {
            return Err(BatchError::Malformed {
                record: self.record,
                what,
            });
        }
        let range = self.at..self.at + n;
        self.at += n;
        Ok(range)
    }

    fn u16(&mut self, what: &'static str) -> Result<usize, BatchError> {
        let r = self.take(2, what)?;
        Ok(read_u16(self.b, r.start) as usize)
    }

    fn u32(&mut self, what: &'static str) -> Result<usize, BatchError> {
        let r = self.take(4, what)?;
        Ok(read_u32(self.b, r.start) as usize)
    }
}

/// The parts of a record body: timestamp, key, value and header ranges (relative to
/// the body).
struct Parts {
    key: Option<std::ops::Range<usize>>,
    value: std::ops::Range<usize>,
    headers: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
}

fn split_body(body: &[u8], record: u32, keep_headers: bool) -> Result<Parts, BatchError> {
    let mut c = Body {
        b: body,
        at: 0,
        record,
    };
    c.take(8, "truncated timestamp")?;
    let key = match c.u32("truncated key length")? {
        0 => None,
        n => Some(c.take(n - 1, "key runs past the record")?),
    };
    let value_len = c.u32("truncated value length")?;
    let value = c.take(value_len, "value runs past the record")?;
    let count = c.u16("truncated header count")?;
    let mut headers = Vec::with_capacity(if keep_headers { count } else { 0 });
    for _ in 0..count {
        let name_len = c.u16("truncated header name length")?;
        let name = c.take(name_len, "header name runs past the record")?;
        if std::str::from_utf8(&body[name.clone()]).is_err() {
            return Err(BatchError::Malformed {
                record,
                what: "header name is not UTF-8",
            });
        }
        let value_len = c.u32("truncated header value length")?;
        let value = c.take(value_len, "header value runs past the record")?;
        if keep_headers {
            headers.push((name, value));
        }
    }
    if c.at != body.len() {
        return Err(BatchError::Malformed {
            record,
            what: "bytes after the last header",
        });
    }
    Ok(Parts {
        key,
        value,
        headers,
    })
}

fn check_body(body: &[u8], record: u32) -> Result<(), BatchError> {
    split_body(body, record, false).map(|_| ())
}

fn read_record(bytes: &Bytes, at: usize, record: u32) -> Result<(Record, usize), BatchError> {
    let end = record_end(bytes, at, record)?;
    let body = bytes.slice(at + 4..end);
    let parts = split_body(&body, record, true)?;
    let headers = parts
        .headers
        .into_iter()
        .map(|(name, value)| {
            // Checked UTF-8 in split_body.
            let name = String::from_utf8_lossy(&body[name]).into_owned();
            (name, body.slice(value))
        })
        .collect();
    Ok((
        Record {
            timestamp_ms: read_i64(&body, 0),
            key: parts.key.map(|k| body.slice(k)),
            value: body.slice(parts.value),
            headers,
        },
        end,
    ))
}

pub mod detached {
    //! Batches carried beside a serialized message instead of inside it. A Raft message
    //! serialized with serde would copy every batch's bytes into its encoding, and its
    //! receiver would copy them out again. Serialized inside [`detach`], a batch writes
    //! only the index of its bytes in a list that [`detach`] returns, without copying
    //! them; the transport sends that list as separate fields (one copy, into the wire
    //! buffer). Deserialized inside [`attach`] with the received list, a batch takes its
    //! bytes back from it, again without a copy.
    //!
    //! The list belongs to the thread for the duration of the closure only: serde's
    //! (de)serialization is synchronous, so nothing else runs on the thread meanwhile.
    //! An index that is out of range, or used twice, is a deserialization error.

    use std::cell::RefCell;

    use bytes::Bytes;

    thread_local! {
        static OUTGOING: RefCell<Option<Vec<Bytes>>> = const { RefCell::new(None) };
        static INCOMING: RefCell<Option<Vec<Option<Bytes>>>> = const { RefCell::new(None) };
    }

    /// Runs `serialize` with batches detached; returns its result and their bytes, in
    /// the order of the indices written.
    pub fn detach<R>(serialize: impl FnOnce() -> R) -> (R, Vec<Bytes>) {
        let outer = OUTGOING.with(|out| out.borrow_mut().replace(Vec::new()));
        // Restores the outer state even if `serialize` panics: a list left behind would
        // turn a later, plain serialization on this thread into indices.
        let restore = Restore(Some(|| {
            OUTGOING.with(|out| std::mem::replace(&mut *out.borrow_mut(), outer))
        }));
        let result = serialize();
        (result, restore.run().flatten().unwrap_or_default())
    }

    /// Runs `deserialize` with `payloads` as the detached batches' bytes.
    pub fn attach<R>(payloads: Vec<Bytes>, deserialize: impl FnOnce() -> R) -> R {
        let list = payloads.into_iter().map(Some).collect();
        let outer = INCOMING.with(|incoming| incoming.borrow_mut().replace(list));
        let restore = Restore(Some(|| {
            INCOMING.with(|incoming| std::mem::replace(&mut *incoming.borrow_mut(), outer))
        }));
        let result = deserialize();
        restore.run();
        result
    }

    /// Runs its closure once: by [`Restore::run`], or on drop (unwinding).
    struct Restore<T, F: FnOnce() -> T>(Option<F>);

    impl<T, F: FnOnce() -> T> Restore<T, F> {
        fn run(mut self) -> Option<T> {
            self.0.take().map(|f| f())
        }
    }

    impl<T, F: FnOnce() -> T> Drop for Restore<T, F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }

    /// Moves `bytes` to the current [`detach`] list, if there is one; returns its index.
    pub(crate) fn push(bytes: &Bytes) -> Option<u64> {
        OUTGOING.with(|out| {
            let mut out = out.borrow_mut();
            let list = out.as_mut()?;
            list.push(bytes.clone());
            Some(list.len() as u64 - 1)
        })
    }

    /// Takes detached bytes number `index` from the current [`attach`] list.
    pub(crate) fn take(index: u64) -> Result<Bytes, &'static str> {
        INCOMING.with(|incoming| {
            let mut incoming = incoming.borrow_mut();
            let list = incoming
                .as_mut()
                .ok_or("a detached batch outside of an attach")?;
            let slot = usize::try_from(index)
                .ok()
                .and_then(|i| list.get_mut(i))
                .ok_or("a detached batch index out of range")?;
            slot.take().ok_or("a detached batch used twice")
        })
    }
}

mod serde_impl {
    //! Raft entries carry batches between brokers: a batch travels as its compression
    //! code and its bytes (or, detached, the index of its bytes: [`super::detached`]),
    //! and is parsed again on arrival (the sending peer is not trusted).

    use std::fmt;

    use bytes::Bytes;
    use serde::de::{Error as _, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Compression, MAX_PLAIN_BATCH_BYTES, RecordBatch, detached};

    impl Serialize for RecordBatch {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match detached::push(&self.bytes) {
                Some(index) => (self.compression.code(), index).serialize(s),
                None => (self.compression.code(), &self.bytes).serialize(s),
            }
        }
    }

    /// A batch's bytes: inline, or detached.
    struct Body(Bytes);

    impl<'de> Deserialize<'de> for Body {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_byte_buf(BodyVisitor)
        }
    }

    struct BodyVisitor;

    impl<'de> Visitor<'de> for BodyVisitor {
        type Value = Body;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a record batch's bytes, or the index of detached bytes")
        }

        fn visit_u64<E: serde::de::Error>(self, index: u64) -> Result<Body, E> {
            detached::take(index).map(Body).map_err(E::custom)
        }

        fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Body, E> {
            Ok(Body(Bytes::copy_from_slice(bytes)))
        }

        fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Body, E> {
            Ok(Body(Bytes::from(bytes)))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Body, A::Error> {
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(byte) = seq.next_element::<u8>()? {
                bytes.push(byte);
            }
            Ok(Body(Bytes::from(bytes)))
        }
    }

    impl<'de> Deserialize<'de> for RecordBatch {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let (code, Body(bytes)) = <(u8, Body)>::deserialize(d)?;
            let compression = Compression::from_code(code)
                .ok_or_else(|| D::Error::custom("unknown compression code"))?;
            // Size limits were applied by the leader; here only the structure counts.
            RecordBatch::parse_compressed(bytes, compression, MAX_PLAIN_BATCH_BYTES, usize::MAX)
                .map_err(D::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests;
