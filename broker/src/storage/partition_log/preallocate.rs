//! Zeros written ahead of a quiet segment's appends, so that syncing them is cheap.
//!
//! An fdatasync after an append that grew the file must commit the file system's
//! journal (the new size, the new blocks). On ext4 that is one journal for the whole
//! file system, so the brokers on one disk queue behind each other's commits: measured
//! here, three processes each appending 1.1 KB and fdatasyncing in a loop took 430 µs
//! per sync (p50) with growing files and 290 µs when the bytes they overwrote were
//! already written (zeros written and synced beforehand). Real zeros are needed:
//! `fallocate` leaves unwritten extents, whose conversion is journaled too.
//!
//! Zeros cost a second write of every byte, so only segments appending slowly get them
//! (below [`SLOW_BYTES_PER_SEC`], measured over [`METER_WINDOW`]): those are the
//! latency-bound ones, with a sync per small batch. A busy segment's syncs carry many
//! bytes each and it grows its file as before. A broker-wide budget
//! ([`BUDGET_BYTES_PER_SEC`]) bounds the extra writes however many partitions are slow.
//!
//! The file therefore may end in up to [`MAX_ZERO_TAIL`] zero bytes past its last
//! frame: [`is_zero_tail`] tells such an end from damage when the segment is opened, and
//! sealing trims it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bytes of zeros one extension writes past the last frame.
pub const CHUNK: u64 = 1 << 20;
/// An append that leaves fewer zero bytes than this ahead of it extends them.
const LOW_WATER: u64 = 256 << 10;
/// The longest run of zeros a segment can end in: an extension starts at most
/// [`LOW_WATER`] before the zeros end, or at the frame end rounded up to a page.
pub const MAX_ZERO_TAIL: u64 = CHUNK + LOW_WATER + 4096;
/// Segments appending more than this are busy: they get no zeros.
const SLOW_BYTES_PER_SEC: u64 = 4 << 20;
/// How long a segment's append rate is measured over before it counts.
const METER_WINDOW: Duration = Duration::from_millis(250);
/// Zero bytes all the segments of this process may write per second (and at once).
const BUDGET_BYTES_PER_SEC: u64 = 4 << 20;
const BUDGET_BURST: u64 = 4 << 20;

static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

static BUDGET: Mutex<Option<Bucket>> = Mutex::new(None);

struct Bucket {
    tokens: u64,
    at: Instant,
}

/// Takes `bytes` from the broker-wide budget, if it holds them.
fn take_budget(bytes: u64) -> bool {
    let mut guard = BUDGET.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let bucket = guard.get_or_insert(Bucket {
        tokens: BUDGET_BURST,
        at: now,
    });
    let refill =
        now.duration_since(bucket.at).as_micros() as u64 * BUDGET_BYTES_PER_SEC / 1_000_000;
    if refill > 0 {
        bucket.tokens = (bucket.tokens + refill).min(BUDGET_BURST);
        bucket.at = now;
    }
    if bucket.tokens < bytes {
        return false;
    }
    bucket.tokens -= bytes;
    true
}

/// Whether a segment gets zeros ahead of its appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// While it appends slowly, within the broker's budget (the default).
    WhenSlow,
    /// Never (direct writes, or a test that wants the file to end at its last frame).
    Off,
    /// Always, without the budget (tests).
    #[cfg(test)]
    Always,
}

/// One segment's zeros ahead: where they end, and its recent append rate.
#[derive(Debug)]
pub struct ZeroAhead {
    mode: Mode,
    /// The file's length: frames, then zeros (synced with the next sync).
    file_len: u64,
    meter_at: Instant,
    meter_size: u64,
    slow: bool,
}

impl ZeroAhead {
    /// For a file of `file_len` bytes (frames, then perhaps zeros).
    pub fn new(file_len: u64) -> ZeroAhead {
        ZeroAhead {
            mode: Mode::WhenSlow,
            file_len,
            meter_at: Instant::now(),
            meter_size: file_len,
            // A new segment starts as slow: most are, and a busy one shows it within a
            // window.
            slow: true,
        }
    }

    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// The file was cut or grown to `len` bytes by something else.
    pub fn set_file_len(&mut self, len: u64) {
        self.file_len = len;
    }

    /// Called after an append that ended at `end`: writes the next chunk of zeros if the
    /// ones ahead run low and the segment is slow. Not synced: the append's own sync
    /// covers them.
    pub fn after_append(&mut self, file: &File, end: u64) -> io::Result<()> {
        self.file_len = self.file_len.max(end);
        if self.mode == Mode::Off || end + LOW_WATER <= self.file_len {
            return Ok(());
        }
        let now = Instant::now();
        let elapsed = now.duration_since(self.meter_at);
        if elapsed >= METER_WINDOW {
            let appended = end.saturating_sub(self.meter_size);
            self.slow = appended * 1_000_000 <= SLOW_BYTES_PER_SEC * elapsed.as_micros() as u64;
            self.meter_at = now;
            self.meter_size = end;
        }
        let wanted = match self.mode {
            Mode::WhenSlow => self.slow && take_budget(CHUNK),
            Mode::Off => false,
            #[cfg(test)]
            Mode::Always => true,
        };
        if !wanted {
            return Ok(());
        }
        let from = if end < self.file_len {
            self.file_len
        } else {
            end.next_multiple_of(4096)
        };
        let to = from + CHUNK;
        // The bytes between the frame end and the page boundary stay as they are: past
        // the file's old end they read as zeros.
        let mut at = from;
        while at < to {
            let len = (to - at).min(ZEROS.len() as u64) as usize;
            file.write_all_at(&ZEROS[..len], at)?;
            at += len as u64;
        }
        self.file_len = to;
        Ok(())
    }
}

/// Whether the `len`-byte file, whose frames end at `end`, ends in zeros written ahead
/// of its appends: at most [`MAX_ZERO_TAIL`] bytes, all zero.
pub fn is_zero_tail(file: &File, end: u64, len: u64) -> io::Result<bool> {
    if len <= end || len - end > MAX_ZERO_TAIL {
        return Ok(false);
    }
    let mut buf = vec![0u8; ZEROS.len()];
    let mut at = end;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(len: usize, zeros_from: usize) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seg");
        let mut bytes = vec![7u8; len];
        bytes[zeros_from..].fill(0);
        std::fs::write(&path, &bytes).expect("write");
        let file = File::open(&path).expect("open");
        (dir, file)
    }

    #[test]
    fn a_zero_tail_is_only_zeros_and_no_longer_than_an_extension() {
        let (_dir, file) = file_of(100 + MAX_ZERO_TAIL as usize, 100);
        assert!(is_zero_tail(&file, 100, 100 + MAX_ZERO_TAIL).expect("read"));
        assert!(!is_zero_tail(&file, 99, 100 + MAX_ZERO_TAIL).expect("read"));
        assert!(!is_zero_tail(&file, 100, 100).expect("read"));
        let (_dir, file) = file_of(101 + MAX_ZERO_TAIL as usize, 100);
        assert!(!is_zero_tail(&file, 100, 101 + MAX_ZERO_TAIL).expect("read"));
    }

    #[test]
    fn zeros_are_written_ahead_when_they_run_low_and_only_then() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seg");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create");
        let mut ahead = ZeroAhead::new(0);
        ahead.set_mode(Mode::Always);
        file.write_all_at(&[1u8; 100], 0).expect("write");
        ahead.after_append(&file, 100).expect("zeros");
        let len = std::fs::metadata(&path).expect("stat").len();
        assert_eq!(len, 4096 + CHUNK, "a chunk from the next page");
        assert!(is_zero_tail(&file, 100, len).expect("read"));
        // Plenty left ahead: nothing written.
        ahead.after_append(&file, 5000).expect("zeros");
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), len);
        // Running low: the next chunk follows the zeros.
        ahead.after_append(&file, len - 1000).expect("zeros");
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), len + CHUNK);
        ahead.set_mode(Mode::Off);
        ahead.after_append(&file, len + CHUNK - 10).expect("zeros");
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), len + CHUNK);
    }

    #[test]
    fn a_busy_segment_gets_no_zeros() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = File::create(dir.path().join("seg")).expect("create");
        let mut ahead = ZeroAhead::new(0);
        // As if the last window saw 64 MiB appended in 250 ms.
        ahead.meter_at = Instant::now() - METER_WINDOW;
        ahead.after_append(&file, 64 << 20).expect("zeros");
        assert!(!ahead.slow);
        assert_eq!(ahead.file_len, 64 << 20, "no zeros written");
    }
}
