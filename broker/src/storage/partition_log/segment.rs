//! One segment file of a partition log. Batches are appended at the end; a sparse
//! in-memory index (one entry every [`INDEX_INTERVAL_BYTES`]) maps Raft indexes, offsets
//! and timestamps to file positions. Opening the active segment scans it and verifies
//! every frame: a torn or corrupt tail is cut off, reported, and never served. A sealed
//! segment opens from its index file when that is intact and current (see
//! [`super::index_file`]); reads verify every frame's CRC either way.

use bytes::Bytes;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::direct::{DirectLog, is_padding};
use super::format::{
    BatchHeader, FrameError, MAX_FRAME_BYTES, PREFIX_LEN, decode_batch, frame_head, frame_len,
};
use super::index_file::{self, IndexPoint, SegmentSummary};
use super::preallocate::{self, ZeroAhead};
use super::seal::{Seal, SealWork};
use super::syncer::SyncTarget;

/// Bytes between two sparse index entries.
pub const INDEX_INTERVAL_BYTES: u64 = 4096;

/// What opening a segment had to cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub valid_bytes: u64,
    pub dropped_bytes: u64,
    pub reason: FrameError,
    /// The largest Raft index still readable past the damage (stepping over the bad
    /// frame by its length, or from the segment's index file): valid data after it
    /// means mid-log corruption, not a torn write.
    pub index_beyond: Option<u64>,
}

/// A batch read back: its header and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    pub header: BatchHeader,
    /// A slice of the frame read from the file (no further copy).
    pub payload: Bytes,
}

#[derive(Debug)]
pub struct Segment {
    path: PathBuf,
    file: Arc<File>,
    base_offset: u64,
    size: u64,
    index: Vec<IndexPoint>,
    last_indexed_at: Option<u64>,
    first: Option<BatchHeader>,
    last: Option<BatchHeader>,
    max_timestamp: i64,
    /// How appends reach the file (opened at the first append).
    writer: Writer,
    /// Large reads of written bytes bypass the page cache (`O_DIRECT`), as appends do.
    direct_reads: bool,
    /// Zeros written ahead of buffered appends (see [`super::preallocate`]).
    zero_ahead: ZeroAhead,
}

/// A scan that may return up to [`READ_AHEAD_MAX`] bytes reads them at once; an
/// unbounded one reads this much first, then twice as much each time, up to
/// [`READ_AHEAD_MAX`].
const READ_AHEAD_START: usize = 64 * 1024;
const READ_AHEAD_MAX: usize = 8 * 1024 * 1024;
/// Reads at least this long use `O_DIRECT` when the segment reads directly.
const DIRECT_READ_MIN: usize = 64 * 1024;

/// Bytes of a segment read ahead of the frames a scan parses.
struct ReadAhead {
    at: u64,
    bytes: Bytes,
    next_len: usize,
}

impl ReadAhead {
    fn new() -> ReadAhead {
        ReadAhead {
            at: 0,
            bytes: Bytes::new(),
            next_len: READ_AHEAD_START,
        }
    }

    /// The `len` bytes at `position`, if held.
    fn get(&self, position: u64, len: usize) -> Option<Bytes> {
        let from = position.checked_sub(self.at)? as usize;
        (from + len <= self.bytes.len()).then(|| self.bytes.slice(from..from + len))
    }
}

/// How a segment's appends reach its file.
#[derive(Debug)]
enum Writer {
    /// Through the page cache (the default).
    Buffered,
    /// Direct writes asked for, the file not opened for them yet.
    DirectUnopened,
    /// Appends held by a direct log until the next sync (see [`super::direct`]).
    Direct(Arc<DirectLog>),
}

impl Segment {
    /// The file name of the segment starting at `base_offset` (Kafka's convention).
    pub fn file_name(base_offset: u64) -> String {
        format!("{base_offset:020}.log")
    }

    /// Creates an empty segment in `dir`; fails if the file exists.
    pub fn create(dir: &Path, base_offset: u64) -> io::Result<Segment> {
        let path = dir.join(Self::file_name(base_offset));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(Segment::empty(path, file, base_offset, 0))
    }

    fn empty(path: PathBuf, file: File, base_offset: u64, file_len: u64) -> Segment {
        Segment {
            path,
            file: Arc::new(file),
            base_offset,
            size: 0,
            index: Vec::new(),
            last_indexed_at: None,
            first: None,
            last: None,
            max_timestamp: i64::MIN,
            writer: Writer::Buffered,
            direct_reads: false,
            zero_ahead: ZeroAhead::new(file_len),
        }
    }

    /// Opens an existing segment, verifying every frame. A torn or corrupt tail is
    /// truncated away (and the truncation synced) and described in the returned
    /// [`Recovery`].
    pub fn open(path: &Path, base_offset: u64) -> io::Result<(Segment, Option<Recovery>)> {
        let (mut segment, recovery) = Segment::open_uncut(path, base_offset)?;
        if recovery.is_some() {
            segment.cut()?;
        }
        Ok((segment, recovery))
    }

    /// Like [`Segment::open`], but leaves the file as it is: the segment ends at its last
    /// valid batch in memory, and [`Segment::cut`] makes the file agree.
    pub fn open_uncut(path: &Path, base_offset: u64) -> io::Result<(Segment, Option<Recovery>)> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        let mut segment = Segment::empty(path.to_path_buf(), file, base_offset, len);
        let recovery = match segment.scan(len)? {
            None => None,
            Some(reason) => Some(Recovery {
                valid_bytes: segment.size,
                dropped_bytes: len - segment.size,
                reason,
                index_beyond: segment.index_beyond_damage(len),
            }),
        };
        Ok((segment, recovery))
    }

    /// Truncates the file to the valid batches found when it was opened (synced).
    pub fn cut(&mut self) -> io::Result<()> {
        self.settle()?;
        self.file.set_len(self.size)?;
        self.zero_ahead.set_file_len(self.size);
        self.file.sync_data()
    }

    /// Whether appends bypass the page cache from now on (see [`super::direct`]); where
    /// the file system has no `O_DIRECT`, they go through it anyway.
    pub fn set_direct_io(&mut self, on: bool) -> io::Result<()> {
        match (&self.writer, on) {
            (Writer::Buffered, true) => self.writer = Writer::DirectUnopened,
            (Writer::DirectUnopened | Writer::Direct(_), false) => {
                self.settle()?;
                self.writer = Writer::Buffered;
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether large reads bypass the page cache (see [`Segment::set_direct_io`]).
    pub fn set_direct_reads(&mut self, on: bool) {
        self.direct_reads = on;
    }

    /// Whether buffered appends get zeros written ahead of them (see
    /// [`super::preallocate`]; the default: while the segment appends slowly).
    pub fn set_zero_ahead(&mut self, mode: preallocate::Mode) {
        self.zero_ahead.set_mode(mode);
    }

    /// Cuts the zeros past the last frame off the end of the file (a direct write's
    /// padding, or zeros written ahead; synced).
    pub fn trim(&mut self) -> io::Result<()> {
        self.settle()?;
        if self.file.metadata()?.len() != self.size {
            self.cut()?;
        }
        Ok(())
    }

    /// Writes a direct log's pending appends to the file (durably: `O_DSYNC`) and lets
    /// it go: the file is about to change under it. The next append opens a new one.
    fn settle(&mut self) -> io::Result<()> {
        if let Writer::Direct(log) = &self.writer {
            log.flush()?;
            self.writer = Writer::DirectUnopened;
        }
        Ok(())
    }

    /// Fills `out` with the segment's bytes from `position` (some perhaps not written
    /// to the file yet).
    fn read_exact_at(&self, out: &mut [u8], position: u64) -> io::Result<()> {
        match &self.writer {
            Writer::Direct(log) => log.read_exact_at(&self.file, out, position),
            _ => self.file.read_exact_at(out, position),
        }
    }

    /// The largest Raft index readable after the damage at `size`: stepping over the
    /// damaged frame by its length field and reading on, or from the index file.
    fn index_beyond_damage(&self, len: u64) -> Option<u64> {
        let from_index = index_file::read_any(&self.path).and_then(|s| s.last.map(|h| h.index));
        let mut prefix = [0u8; PREFIX_LEN];
        let mut beyond = None;
        if self.read_exact_at(&mut prefix, self.size).is_ok() {
            let length = u32::from_le_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as u64;
            let mut position = self.size + 5 + length;
            while length as usize <= MAX_FRAME_BYTES && position < len {
                match self.read_within(position, len) {
                    Ok((batch, next)) => {
                        beyond = Some(batch.header.index);
                        position = next;
                    }
                    Err(_) => break,
                }
            }
        }
        beyond
            .max(from_index)
            .filter(|i| self.last.is_none_or(|l| *i > l.index))
    }

    /// Opens a sealed segment from its index file, without scanning it; `None` when the
    /// index is missing or stale (then [`Segment::open`] it and [`Segment::write_index`]).
    pub fn open_sealed(path: &Path, base_offset: u64) -> io::Result<Option<Segment>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        let Some(summary) = index_file::read_valid(path, len)? else {
            return Ok(None);
        };
        let mut segment = Segment::empty(path.to_path_buf(), file, base_offset, len);
        segment.size = len;
        segment.last_indexed_at = summary.points.last().map(|p| p.position);
        segment.index = summary.points;
        segment.first = summary.first;
        segment.last = summary.last;
        segment.max_timestamp = summary.max_timestamp;
        Ok(Some(segment))
    }

    /// The Raft index of the last valid entry of the segment file at `path`, read
    /// without changing the file (for reporting what a damaged log lost).
    pub fn last_valid_index(path: &Path) -> io::Result<Option<u64>> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut segment = Segment::empty(path.to_path_buf(), file, 0, len);
        segment.scan(len)?;
        Ok(segment.last.map(|h| h.index))
    }

    /// Reads and verifies frames from the start of the file (of `len` bytes), indexing
    /// them; stops at the first invalid one and returns why. `size` ends at the last
    /// valid byte.
    fn scan(&mut self, len: u64) -> io::Result<Option<FrameError>> {
        let failure = self.scan_frames(len)?;
        if failure.is_some()
            && (is_padding(&self.file, self.size, len)?
                || preallocate::is_zero_tail(&self.file, self.size, len)?)
        {
            return Ok(None);
        }
        Ok(failure)
    }

    /// [`Segment::scan`], without telling a direct write's padding from damage.
    fn scan_frames(&mut self, len: u64) -> io::Result<Option<FrameError>> {
        let mut reader = BufReader::with_capacity(1 << 20, self.file.try_clone()?);
        let mut frame = Vec::new();
        let mut position = 0u64;
        let failure = loop {
            if position == len {
                break None;
            }
            if let Err(reason) = read_frame(&mut reader, len - position, &mut frame) {
                break Some(reason);
            }
            match decode_batch(&frame) {
                Ok((header, _, total)) => {
                    if let Some(last) = self.last
                        && header.index != last.index + 1
                    {
                        break Some(FrameError::Corrupt("raft index out of sequence"));
                    }
                    self.note_appended(&header, position);
                    position += total as u64;
                    self.size = position;
                }
                Err(reason) => break Some(reason),
            }
        };
        Ok(failure)
    }

    /// Writes this (sealed and synced) segment's index file, first trimming the file to
    /// its frames (a direct write's padding).
    pub fn write_index(&mut self) -> io::Result<()> {
        self.trim()?;
        // Sealed: no more appends, unless a truncation makes it active again.
        self.set_direct_io(false)?;
        index_file::write(&self.path, &self.summary())
    }

    fn summary(&self) -> SegmentSummary {
        SegmentSummary {
            segment_size: self.size,
            max_timestamp: self.max_timestamp,
            first: self.first,
            last: self.last,
            points: self.index.clone(),
        }
    }

    /// What sealing this segment takes when it rolls, to be done off the append path
    /// (see [`super::seal`]); `None` unless its appends wait in a direct log (appends
    /// through the page cache may reach the disk before an fdatasync, so a roll seals
    /// those segments at once).
    pub fn seal_later(&self, dir: &Path) -> Option<Arc<Seal>> {
        let Writer::Direct(log) = &self.writer else {
            return None;
        };
        let work = SealWork {
            data: SyncTarget::Direct(log.clone()),
            file: self.file.clone(),
            path: self.path.clone(),
            size: self.size,
            summary: self.summary(),
            dir: dir.to_path_buf(),
        };
        Some(Seal::new(self.base_offset, work))
    }

    /// Brings the segment's state in memory in line with a seal that has run (see
    /// [`Segment::seal_later`]): no I/O, as the seal wrote everything and cut the padding.
    pub fn sealed(&mut self) -> io::Result<()> {
        self.trim()?;
        self.zero_ahead.set_file_len(self.size);
        self.set_direct_io(false)
    }

    /// Removes this segment's index file: it is (again) the active segment.
    pub fn remove_index(&self) -> io::Result<()> {
        index_file::remove(&self.path)
    }

    fn note_appended(&mut self, header: &BatchHeader, position: u64) {
        let due = self
            .last_indexed_at
            .is_none_or(|at| position >= at + INDEX_INTERVAL_BYTES);
        if due {
            self.index.push(IndexPoint {
                position,
                raft_index: header.index,
                base_offset: header.base_offset,
                max_timestamp_before: self.max_timestamp,
            });
            self.last_indexed_at = Some(position);
        }
        if self.first.is_none() {
            self.first = Some(*header);
        }
        self.last = Some(*header);
        if header.record_count > 0 {
            self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// Bytes of frames in the file (zeros may follow them).
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn first(&self) -> Option<&BatchHeader> {
        self.first.as_ref()
    }

    pub fn last(&self) -> Option<&BatchHeader> {
        self.last.as_ref()
    }

    /// Largest record timestamp in the segment (`i64::MIN` when it has no records).
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// Appends one batch (not synced; see [`Segment::sync`]). Raft indexes must follow
    /// each other without gaps.
    pub fn append(&mut self, header: &BatchHeader, payload: &[u8]) -> io::Result<()> {
        if let Some(last) = self.last
            && header.index != last.index + 1
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("append of index {} after {}", header.index, last.index),
            ));
        }
        let frame_len = frame_len(payload.len());
        if frame_len > MAX_FRAME_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "batch too large",
            ));
        }
        let head = frame_head(header, payload);
        if matches!(self.writer, Writer::DirectUnopened) {
            self.writer = match DirectLog::open(&self.path, &self.file, self.size)? {
                Some(log) => Writer::Direct(Arc::new(log)),
                None => {
                    tracing::debug!(path = %self.path.display(), "no O_DIRECT here: writing through the page cache");
                    Writer::Buffered
                }
            };
        }
        match &mut self.writer {
            Writer::Direct(log) => log.append(&[&head, payload]),
            _ => {
                // Two writes, the payload from where it is (no frame buffer): a crash
                // between them leaves a torn frame, cut at recovery like any torn write.
                self.file.write_all_at(&head, self.size)?;
                self.file
                    .write_all_at(payload, self.size + head.len() as u64)?;
                self.zero_ahead
                    .after_append(&self.file, self.size + frame_len as u64)?;
            }
        }
        let position = self.size;
        self.size += frame_len as u64;
        self.note_appended(header, position);
        Ok(())
    }

    /// A handle on the file for syncing it without holding the segment.
    pub fn sync_handle(&self) -> SyncTarget {
        match &self.writer {
            Writer::Direct(log) => SyncTarget::Direct(log.clone()),
            _ => SyncTarget::File(self.file.clone()),
        }
    }

    /// Makes every appended byte durable (fdatasync, or a direct log's write).
    pub fn sync(&self) -> io::Result<()> {
        self.sync_handle().sync()
    }

    /// Reads the batch at `position`.
    fn read_at(&self, position: u64) -> io::Result<(StoredBatch, u64)> {
        self.read_within(position, self.size)
    }

    /// Reads the batch at `position`, which must end by byte `end` of the file: a frame
    /// that runs past it is corruption (its length field is damaged).
    fn read_within(&self, position: u64, end: u64) -> io::Result<(StoredBatch, u64)> {
        self.frame_from(&mut ReadAhead::new(), position, 0, end)
    }

    /// `len` bytes at `position`: with `O_DIRECT` when this segment reads directly and
    /// the bytes are written for good, else through [`Segment::read_exact_at`].
    fn read_bytes(&self, position: u64, len: usize) -> io::Result<Bytes> {
        let written = match &self.writer {
            Writer::Direct(log) => log.written_through(),
            _ => u64::MAX,
        };
        if self.direct_reads
            && len >= DIRECT_READ_MIN
            && position + len as u64 <= written
            && let Some(bytes) = super::direct::read(&self.path, position, len)?
        {
            return Ok(bytes);
        }
        let mut bytes = vec![0u8; len];
        self.read_exact_at(&mut bytes, position)?;
        Ok(Bytes::from(bytes))
    }

    /// The batch at `position`, which must end by byte `end`, from `ahead` or read into
    /// it: in one read with the batches after it, up to `budget` bytes, so that a scan
    /// reads large chunks (0: just what the batch needs).
    fn frame_from(
        &self,
        ahead: &mut ReadAhead,
        position: u64,
        budget: usize,
        end: u64,
    ) -> io::Result<(StoredBatch, u64)> {
        let fill = |ahead: &mut ReadAhead, need: usize| -> io::Result<Bytes> {
            if let Some(bytes) = ahead.get(position, need) {
                return Ok(bytes);
            }
            let rest = end.saturating_sub(position) as usize;
            if need > rest {
                return Err(corrupt(
                    &self.path,
                    position,
                    "frame runs past the segment's end",
                ));
            }
            // A bounded scan (a fetch) reads what it may return at once; an unbounded
            // one grows its reads.
            let want = if budget <= READ_AHEAD_MAX {
                budget
            } else {
                ahead.next_len
            };
            let len = need.max(want).min(rest);
            ahead.bytes = self.read_bytes(position, len)?;
            ahead.at = position;
            ahead.next_len = (ahead.next_len * 2).min(READ_AHEAD_MAX);
            Ok(ahead.bytes.slice(..need))
        };
        let prefix = fill(ahead, PREFIX_LEN)?;
        let length = u32::from_le_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if length > MAX_FRAME_BYTES {
            return Err(corrupt(&self.path, position, "length out of bounds"));
        }
        let frame = fill(ahead, 5 + length)?;
        let (header, payload, total) =
            decode_batch(&frame).map_err(|e| corrupt(&self.path, position, &e.to_string()))?;
        // The payload ends the frame.
        let payload = frame.slice(total - payload.len()..total);
        Ok((StoredBatch { header, payload }, position + total as u64))
    }

    /// Reads batches from `position` while `keep` accepts them, up to `max_bytes`
    /// of payload (at least one batch).
    fn scan_from(
        &self,
        mut position: u64,
        max_bytes: usize,
        mut keep: impl FnMut(&BatchHeader) -> Keep,
    ) -> io::Result<Vec<StoredBatch>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut ahead = ReadAhead::new();
        while position < self.size {
            // Frame headers cost a little more than the payloads counted. Through the
            // page cache, frame by frame: the kernel reads ahead, and small reads need no
            // large buffers.
            let budget = match self.direct_reads {
                true => max_bytes
                    .saturating_sub(bytes)
                    .saturating_add(READ_AHEAD_START),
                false => 0,
            };
            let (batch, next) = self.frame_from(&mut ahead, position, budget, self.size)?;
            position = next;
            match keep(&batch.header) {
                Keep::Skip => continue,
                Keep::Stop => break,
                Keep::Take => {}
            }
            if !out.is_empty() && bytes + batch.payload.len() > max_bytes {
                break;
            }
            bytes += batch.payload.len();
            out.push(batch);
        }
        Ok(out)
    }

    /// Position of the last index point at or before the batch that `before` selects.
    fn seek(&self, before: impl Fn(&IndexPoint) -> bool) -> u64 {
        let i = self.index.partition_point(|p| before(p));
        i.checked_sub(1).map_or(0, |i| self.index[i].position)
    }

    /// Batches with Raft indexes in `[start, end)`, up to about `max_bytes`.
    pub fn read_indexes(
        &self,
        start: u64,
        end: u64,
        max_bytes: usize,
    ) -> io::Result<Vec<StoredBatch>> {
        let position = self.seek(|p| p.raft_index <= start);
        self.scan_from(position, max_bytes, |h| {
            if h.index < start {
                Keep::Skip
            } else if h.index >= end {
                Keep::Stop
            } else {
                Keep::Take
            }
        })
    }

    /// Batches holding offsets from `offset` on (the first may start before it), up to
    /// about `max_bytes`. Non-record batches are skipped.
    pub fn read_offsets(&self, offset: u64, max_bytes: usize) -> io::Result<Vec<StoredBatch>> {
        let position = self.seek(|p| p.base_offset <= offset);
        self.scan_from(position, max_bytes, |h| {
            if h.record_count == 0 || h.next_offset() <= offset {
                Keep::Skip
            } else {
                Keep::Take
            }
        })
    }

    /// The first offset whose batch has a record timestamp at or after `timestamp`.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> io::Result<Option<u64>> {
        if self.max_timestamp < timestamp {
            return Ok(None);
        }
        let position = self.seek(|p| p.max_timestamp_before < timestamp);
        let found = self.scan_from(position, 0, |h| {
            if h.record_count > 0 && h.max_timestamp >= timestamp {
                Keep::Take
            } else {
                Keep::Skip
            }
        })?;
        Ok(found.first().map(|b| b.header.base_offset))
    }

    /// Removes every batch with a Raft index above `raft_index` (synced).
    pub fn truncate_after(&mut self, raft_index: u64) -> io::Result<()> {
        self.truncate_from(raft_index.saturating_add(1))
    }

    /// Removes every batch with a Raft index at or above `first_removed` (synced).
    pub fn truncate_from(&mut self, first_removed: u64) -> io::Result<()> {
        let Some(last) = self.last else { return Ok(()) };
        if last.index < first_removed {
            return Ok(());
        }
        // Start at the last index point whose batch is kept: everything before it is
        // summarized by the point, so one forward scan finds the cut, the last kept
        // batch and the largest timestamp that remains.
        let point = self.index[..self.index.partition_point(|p| p.raft_index < first_removed)]
            .last()
            .copied();
        let (mut position, mut max_timestamp) =
            point.map_or((0, i64::MIN), |p| (p.position, p.max_timestamp_before));
        let mut kept: Option<BatchHeader> = None;
        let mut cut = None;
        while position < self.size {
            let (batch, next) = self.read_at(position)?;
            if batch.header.index >= first_removed {
                cut = Some(position);
                break;
            }
            if batch.header.record_count > 0 {
                max_timestamp = max_timestamp.max(batch.header.max_timestamp);
            }
            kept = Some(batch.header);
            position = next;
        }
        let Some(cut) = cut else { return Ok(()) };
        self.settle()?;
        self.file.set_len(cut)?;
        self.zero_ahead.set_file_len(cut);
        self.file.sync_data()?;
        self.size = cut;
        self.index.retain(|p| p.position < cut);
        self.last_indexed_at = self.index.last().map(|p| p.position);
        self.last = kept;
        if self.last.is_none() {
            self.first = None;
        }
        self.max_timestamp = max_timestamp;
        Ok(())
    }
}

enum Keep {
    Take,
    Skip,
    Stop,
}

fn corrupt(path: &Path, position: u64, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} at byte {position}: {what}", path.display()),
    )
}

/// Reads the next frame into `frame`, bounded by the `remaining` bytes of the file.
fn read_frame(
    reader: &mut impl Read,
    remaining: u64,
    frame: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let need_prefix = PREFIX_LEN as u64;
    if remaining < need_prefix {
        return Err(FrameError::Incomplete {
            have: remaining as usize,
            need: PREFIX_LEN,
        });
    }
    frame.resize(PREFIX_LEN, 0);
    reader
        .read_exact(&mut frame[..])
        .map_err(|_| FrameError::Incomplete {
            have: 0,
            need: PREFIX_LEN,
        })?;
    let length = u32::from_le_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
    if frame[0] != super::format::MAGIC {
        return Err(FrameError::Corrupt("unknown magic byte"));
    }
    if !(4..=MAX_FRAME_BYTES).contains(&length) {
        return Err(FrameError::Corrupt("length out of bounds"));
    }
    let total = 5 + length;
    if remaining < total as u64 {
        return Err(FrameError::Incomplete {
            have: remaining as usize,
            need: total,
        });
    }
    frame.resize(total, 0);
    reader
        .read_exact(&mut frame[PREFIX_LEN..])
        .map_err(|_| FrameError::Incomplete {
            have: PREFIX_LEN,
            need: total,
        })?;
    Ok(())
}
