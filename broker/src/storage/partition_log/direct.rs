//! Appends that bypass the page cache (`O_DIRECT`), written behind.
//!
//! A buffered `pwrite` copies every byte into the page cache before the fdatasync writes
//! it out; on a virtual machine, filling fresh page-cache pages is the broker's largest
//! CPU cost (each replica writes every record). A [`DirectLog`] keeps a segment's
//! appends in memory instead and writes them when the segment is synced, straight from
//! an aligned buffer to the disk, with `O_DSYNC` (the write and its fdatasync in one
//! device round trip). Appending stays a memory copy, so openraft's core
//! never waits for the device; reads of bytes not written yet are served from memory,
//! and so are reads of the newest written ones (up to 1 MiB per segment and 128 MiB
//! per broker), which consumers following the end of the log ask for.
//!
//! Direct I/O needs block-aligned offsets, lengths and memory. The segment's last
//! partial block is kept in memory and written again, followed by the new bytes, as
//! whole blocks from the block where the written part ends; the last block is padded
//! with zeros. The file can therefore end in up to a block of zeros past the last frame:
//! [`is_padding`] tells such an end from damage when the segment is opened, and a
//! segment is trimmed to its frames when it is sealed. Reads of written bytes go through
//! the page cache as before; the kernel keeps them coherent with direct writes.
//!
//! Nothing here is durable before [`DirectLog::flush`]; unlike a buffered write, an
//! append not yet synced does not survive the process either (so `flush=async` topics
//! write through the page cache).

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::chunks::Chunks;

/// Alignment of offsets, lengths and buffers: a page, which is at least the logical
/// block size of every device we expect.
pub const BLOCK: usize = 4096;

/// Written bytes a segment keeps in memory, the newest, so that consumers following
/// the end of the log read them from memory rather than from the disk.
const RETAIN_BYTES: usize = 1 << 20;
/// Memory all direct logs of this broker may hold before they stop keeping written
/// bytes (and give back what they do not use).
const HELD_BROKER_BYTES: usize = 128 << 20;

/// Memory held by the direct logs of this broker (their buffers' capacity).
static HELD: AtomicUsize = AtomicUsize::new(0);

/// The appends of one segment file not written yet, and the handle that writes them.
#[derive(Debug)]
pub struct DirectLog {
    file: File,
    pending: Mutex<Pending>,
    /// Held for a whole flush: writes of the same blocks must not overtake each other.
    flushing: Mutex<()>,
}

#[derive(Debug)]
struct Pending {
    /// File position of `bytes`' first byte, block-aligned.
    start: u64,
    /// The segment from `start` to its end: first `on_disk` bytes already written (the
    /// newest written bytes, kept for reads; the partial block they end in is written
    /// again with what follows), then appends. Written straight from these chunks.
    bytes: Chunks,
    on_disk: usize,
    /// `bytes`' capacity as counted in [`HELD`].
    counted: usize,
}

impl Pending {
    /// Counts a change of `bytes`' capacity in [`HELD`].
    fn count(&mut self) {
        let now = self.bytes.capacity();
        if now >= self.counted {
            HELD.fetch_add(now - self.counted, Ordering::Relaxed);
        } else {
            HELD.fetch_sub(self.counted - now, Ordering::Relaxed);
        }
        self.counted = now;
    }

    /// Drops the first `n` bytes (written whole blocks); over the broker's budget, gives
    /// back the memory the rest does not need.
    fn drop_front(&mut self, n: usize) {
        self.start += n as u64;
        self.on_disk -= n;
        self.bytes.drop_front(n);
        if HELD.load(Ordering::Relaxed) > HELD_BROKER_BYTES {
            self.bytes.shrink();
        }
        self.count();
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        HELD.fetch_sub(self.counted, Ordering::Relaxed);
    }
}

impl DirectLog {
    /// Opens the segment file at `path`, whose frames end at byte `end`, for direct
    /// writes; `buffered` is its ordinary handle (to read the partial last block).
    /// `None` when the file system refuses `O_DIRECT` (tmpfs on older kernels, for
    /// one): the segment then writes through the page cache.
    pub fn open(path: &Path, buffered: &File, end: u64) -> io::Result<Option<DirectLog>> {
        let file = match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(path)
        {
            Ok(file) => file,
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
            Err(err) => return Err(err),
        };
        let start = end - end % BLOCK as u64;
        let mut tail = vec![0u8; (end - start) as usize];
        buffered.read_exact_at(&mut tail, start)?;
        // What was written through the page cache before is made durable here: syncs
        // of this log only cover its own writes.
        buffered.sync_data()?;
        let mut bytes = Chunks::default();
        bytes.push(&tail);
        let on_disk = tail.len();
        Ok(Some(DirectLog {
            file,
            pending: Mutex::new({
                let mut pending = Pending {
                    start,
                    bytes,
                    on_disk,
                    counted: 0,
                };
                pending.count();
                pending
            }),
            flushing: Mutex::new(()),
        }))
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `parts`, one after another, in memory.
    pub fn append(&self, parts: &[&[u8]]) {
        let mut pending = self.pending();
        for part in parts {
            pending.bytes.push(part);
        }
        if pending.bytes.capacity() != pending.counted {
            pending.count();
        }
    }

    /// Fills `out` with the segment's bytes from position `at`: from memory where they
    /// are not written yet, else from the file through `buffered`.
    pub fn read_exact_at(&self, buffered: &File, out: &mut [u8], at: u64) -> io::Result<()> {
        let end = at + out.len() as u64;
        let start = {
            let pending = self.pending();
            let start = pending.start;
            if end > start {
                let from = at.max(start);
                if end - start > pending.bytes.len() as u64 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "read past the end of the segment",
                    ));
                }
                pending
                    .bytes
                    .copy_to((from - start) as usize, &mut out[(from - at) as usize..]);
            }
            start
        };
        // Bytes before `start` are on the disk for good: only later blocks are rewritten.
        if at < start {
            let before = (start.min(end) - at) as usize;
            buffered.read_exact_at(&mut out[..before], at)?;
        }
        Ok(())
    }

    /// The file position from which bytes may still change or be only in memory: the
    /// file holds everything before it for good.
    pub fn written_through(&self) -> u64 {
        self.pending().start
    }

    /// Writes whatever was appended since the last flush; durable on return (`O_DSYNC`:
    /// one device round trip per write, no separate fdatasync). The whole blocks go
    /// straight from the append buffer; only the partial last block is copied, to pad it
    /// with zeros. Appends go on meanwhile (into bytes this write does not cover).
    pub fn flush(&self) -> io::Result<()> {
        let _flushing = self.flushing.lock().unwrap_or_else(|e| e.into_inner());
        // Written from the block the written part ends in, to the end.
        let (start, from, len, whole, last) = {
            let pending = self.pending();
            let len = pending.bytes.len();
            if len == pending.on_disk {
                return Ok(());
            }
            let from = pending.on_disk - pending.on_disk % BLOCK;
            let whole = pending.bytes.pieces(from..len - len % BLOCK);
            let tail = len % BLOCK;
            let last = (tail > 0).then(|| {
                let mut last = Box::new(AlignedBlock([0; BLOCK]));
                pending.bytes.copy_to(len - tail, &mut last.0[..tail]);
                last
            });
            (pending.start, from, len, whole, last)
        };
        let mut slices: Vec<IoSlice<'_>> = whole.iter().map(|p| IoSlice::new(p.bytes())).collect();
        if let Some(last) = &last {
            slices.push(IoSlice::new(&last.0));
        }
        write_all_vectored_at(&self.file, &mut slices, start + from as u64)?;
        let mut pending = self.pending();
        pending.on_disk = len;
        // Keep the newest written bytes for reads while this broker's budget allows;
        // drop whole blocks before them (the partial last block is written again).
        let keep = if HELD.load(Ordering::Relaxed) > HELD_BROKER_BYTES {
            0
        } else {
            RETAIN_BYTES
        };
        let done = len - len % BLOCK;
        let drop = done.saturating_sub(keep);
        pending.drop_front(drop);
        Ok(())
    }
}

/// One block of aligned memory (the padded last block of a direct write).
#[repr(C, align(4096))]
struct AlignedBlock([u8; BLOCK]);

/// Writes all of `slices` at `offset` (`pwritev`), going on after a short write.
fn write_all_vectored_at(
    file: &File,
    mut slices: &mut [IoSlice<'_>],
    mut offset: u64,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    while !slices.is_empty() {
        let count = slices.len().min(1024) as libc::c_int;
        // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix; the slices borrow
        // memory that lives for the call.
        let written = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                slices.as_ptr().cast::<libc::iovec>(),
                count,
                offset as libc::off_t,
            )
        };
        match written {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n if n < 0 => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
            n => {
                offset += n as u64;
                IoSlice::advance_slices(&mut slices, n as usize);
            }
        }
    }
    Ok(())
}

/// Reads `len` bytes at `at` of the file at `path` with `O_DIRECT`, into memory of their
/// own (returned without a further copy); `None` when the file system refuses
/// `O_DIRECT`. Only for bytes no write will change any more.
pub fn read(path: &Path, at: u64, len: usize) -> io::Result<Option<bytes::Bytes>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
        Err(err) => return Err(err),
    };
    let from = at - at % BLOCK as u64;
    let lead = (at - from) as usize;
    let span = (lead + len).div_ceil(BLOCK) * BLOCK;
    let mut memory = vec![0u8; span + BLOCK];
    let skip = memory.as_ptr().align_offset(BLOCK);
    let window = &mut memory[skip..skip + span];
    let mut filled = 0;
    // The file may end inside the last block (a sealed segment is trimmed): a short
    // read there is fine as long as the asked-for bytes came.
    while filled < lead + len {
        match file.read_at(&mut window[filled..], from + filled as u64) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of the segment file",
                ));
            }
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
            Err(err) => return Err(err),
        }
        // A direct read returns whole blocks; a partial one means the end of the file.
        if filled % BLOCK != 0 && filled < lead + len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the segment file",
            ));
        }
    }
    let start = skip + lead;
    Ok(Some(bytes::Bytes::from(memory).slice(start..start + len)))
}

/// Whether the `len`-byte file, whose frames end at `end`, ends in the zero padding of
/// a direct write: fewer than a block of zero bytes after the last frame, up to a
/// block boundary.
pub fn is_padding(file: &File, end: u64, len: u64) -> io::Result<bool> {
    if len <= end || !len.is_multiple_of(BLOCK as u64) || len - end >= BLOCK as u64 {
        return Ok(false);
    }
    let mut rest = vec![0u8; (len - end) as usize];
    file.read_exact_at(&mut rest, end)?;
    Ok(rest.iter().all(|b| *b == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_bytes(path: &Path) -> Vec<u8> {
        std::fs::read(path).expect("read")
    }

    fn read(log: &DirectLog, buffered: &File, at: usize, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        log.read_exact_at(buffered, &mut out, at as u64)
            .expect("read");
        out
    }

    /// A segment file in `dir` holding `content`, and its ordinary read-write handle.
    fn segment_file(dir: &Path, content: &[u8]) -> (std::path::PathBuf, File) {
        let path = dir.join("seg");
        std::fs::write(&path, content).expect("write");
        let buffered = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        (path, buffered)
    }

    #[test]
    fn appends_are_readable_at_once_and_land_byte_for_byte_when_flushed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, buffered) = segment_file(dir.path(), &[5u8; 5000]);
        let Some(log) = DirectLog::open(&path, &buffered, 5000).expect("open") else {
            // The test directory's file system has no O_DIRECT: nothing to check.
            return;
        };
        let mut expected = vec![5u8; 5000];
        for (i, size) in [10usize, 4086, 1, 9000, 4096, 3, 0, 12_345]
            .iter()
            .enumerate()
        {
            let part: Vec<u8> = (0..*size).map(|j| (i * 31 + j) as u8 | 1).collect();
            log.append(&[&part[..size / 2], &part[size / 2..]]);
            expected.extend_from_slice(&part);
            // Readable before the write, across the written/unwritten boundary too.
            assert_eq!(read(&log, &buffered, 0, expected.len()), expected);
            assert_eq!(read(&log, &buffered, 4000, 200), expected[4000..4200]);
            if i % 2 == 1 {
                log.flush().expect("flush");
                let on_disk = file_bytes(&path);
                assert_eq!(
                    &on_disk[..expected.len()],
                    &expected[..],
                    "after append {i}"
                );
                assert_eq!(on_disk.len() % BLOCK, 0);
                assert!(on_disk[expected.len()..].iter().all(|b| *b == 0));
                assert_eq!(
                    is_padding(&buffered, expected.len() as u64, on_disk.len() as u64)
                        .expect("padding"),
                    on_disk.len() > expected.len()
                );
            }
        }
        log.flush().expect("flush");
        assert_eq!(&file_bytes(&path)[..expected.len()], &expected[..]);
        assert_eq!(read(&log, &buffered, 3, expected.len() - 3), expected[3..]);
        let mut past = vec![0u8; 2];
        assert!(
            log.read_exact_at(&buffered, &mut past, expected.len() as u64 - 1)
                .is_err()
        );
    }

    #[test]
    fn appends_that_go_on_during_flushes_all_land_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, buffered) = segment_file(dir.path(), b"");
        let Some(log) = DirectLog::open(&path, &buffered, 0).expect("open") else {
            return; // no O_DIRECT here
        };
        let part = |i: usize| -> Vec<u8> {
            (0..1000 + i * 7 % 9000)
                .map(|j| (i + j) as u8 | 1)
                .collect()
        };
        let appended = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..2000 {
                    log.append(&[&part(i)]);
                }
                appended.store(true, Ordering::Release);
            });
            while !appended.load(Ordering::Acquire) {
                log.flush().expect("flush");
            }
        });
        log.flush().expect("flush");
        let expected: Vec<u8> = (0..2000).flat_map(part).collect();
        let on_disk = file_bytes(&path);
        assert_eq!(&on_disk[..expected.len()], &expected[..]);
        assert!(on_disk[expected.len()..].iter().all(|b| *b == 0));
        assert_eq!(read(&log, &buffered, 0, expected.len()), expected);
    }

    #[test]
    fn direct_reads_return_exactly_the_asked_for_bytes_up_to_an_unaligned_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seg");
        let content: Vec<u8> = (0..3 * BLOCK + 123).map(|i| (i * 7) as u8).collect();
        std::fs::write(&path, &content).expect("write");
        for (at, len) in [
            (0, 10),
            (5, BLOCK),
            (BLOCK - 1, 2),
            (100, content.len() - 100),
            (0, content.len()),
        ] {
            let Some(got) = super::read(&path, at as u64, len).expect("read") else {
                return; // no O_DIRECT here
            };
            assert_eq!(&got[..], &content[at..at + len], "at {at} len {len}");
        }
        assert!(
            super::read(&path, 10, content.len()).is_err(),
            "past the end"
        );
    }

    #[test]
    fn padding_is_only_zeros_short_of_a_block_boundary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seg");
        std::fs::write(&path, [vec![7u8; 100], vec![0u8; BLOCK - 100]].concat()).expect("write");
        let file = File::open(&path).expect("open");
        assert!(is_padding(&file, 100, BLOCK as u64).expect("padding"));
        assert!(!is_padding(&file, 99, BLOCK as u64).expect("padding"));
        assert!(!is_padding(&file, 100, 200).expect("padding"));
        assert!(!is_padding(&file, BLOCK as u64, BLOCK as u64).expect("padding"));
        std::fs::write(&path, vec![0u8; 2 * BLOCK]).expect("write");
        let file = File::open(&path).expect("open");
        assert!(!is_padding(&file, 0, 2 * BLOCK as u64).expect("padding"));
    }
}
