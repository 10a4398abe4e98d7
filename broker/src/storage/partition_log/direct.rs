//! Appends that bypass the page cache (`O_DIRECT`).
//!
//! A buffered `pwrite` copies every byte into the page cache before the fdatasync writes
//! it out; on a virtual machine, filling fresh page-cache pages is the broker's largest
//! CPU cost (each replica writes every record). A direct write hands the disk our own
//! buffer instead.
//!
//! Direct I/O needs block-aligned offsets, lengths and memory. The writer keeps the
//! segment's last partial block in memory and rewrites it, followed by the new bytes,
//! as whole blocks from the block where the segment ends; the last block is padded with
//! zeros. The file can therefore end in up to a block of zeros past the last frame:
//! [`is_padding`] tells such an end from damage when the segment is opened, and a
//! segment is trimmed to its frames when it is sealed. Reads go through the page cache
//! as before; the kernel keeps them coherent with direct writes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Alignment of offsets, lengths and buffers: a page, which is at least the logical
/// block size of every device we expect.
pub const BLOCK: usize = 4096;

/// Writes a segment file's appends with `O_DIRECT`.
#[derive(Debug)]
pub struct DirectWriter {
    file: File,
    /// Scratch memory for one write; the aligned window is found inside it.
    scratch: Vec<u8>,
    /// The bytes of the segment's last, partial block (from the block's start to the
    /// segment's end), or `None` when they must be read from the file first.
    tail: Option<Vec<u8>>,
}

impl DirectWriter {
    /// Opens `path` for direct writes; `None` when the file system refuses `O_DIRECT`
    /// (tmpfs on older kernels, for one): the segment then writes through the page cache.
    pub fn open(path: &Path) -> io::Result<Option<DirectWriter>> {
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(file) => Ok(Some(DirectWriter {
                file,
                scratch: Vec::new(),
                tail: None,
            })),
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The segment's end moved other than by [`DirectWriter::append`] (a truncation): the
    /// partial block is read again before the next write.
    pub fn forget_tail(&mut self) {
        self.tail = None;
    }

    /// Writes `parts`, one after another, at byte `end` of the segment (its current
    /// end). `buffered` is the segment's ordinary handle, to read the partial last block
    /// when it is not known. Not durable until the file is synced.
    pub fn append(&mut self, buffered: &File, end: u64, parts: &[&[u8]]) -> io::Result<()> {
        let block_start = end - end % BLOCK as u64;
        let tail = match self.tail.take() {
            Some(tail) if tail.len() as u64 == end - block_start => tail,
            _ => {
                let mut tail = vec![0u8; (end - block_start) as usize];
                buffered.read_exact_at(&mut tail, block_start)?;
                tail
            }
        };
        let len = tail.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        let padded = len.div_ceil(BLOCK) * BLOCK;
        let window = aligned_window(&mut self.scratch, padded);
        let mut at = 0;
        for part in std::iter::once(tail.as_slice()).chain(parts.iter().copied()) {
            window[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        window[len..].fill(0);
        self.file.write_all_at(window, block_start)?;
        let last_block = len - len % BLOCK;
        let mut tail = tail;
        tail.clear();
        tail.extend_from_slice(&window[last_block..len]);
        self.tail = Some(tail);
        Ok(())
    }
}

/// A `len`-byte, [`BLOCK`]-aligned window inside `scratch`, grown as needed.
fn aligned_window(scratch: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if scratch.len() < len + BLOCK {
        scratch.resize(len + BLOCK, 0);
    }
    let skip = scratch.as_ptr().align_offset(BLOCK);
    &mut scratch[skip..skip + len]
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
        std::fs::read(path).unwrap()
    }

    #[test]
    fn appends_land_byte_for_byte_with_zero_padding_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let buffered = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let Some(mut writer) = DirectWriter::open(&path).unwrap() else {
            // The test directory's file system has no O_DIRECT: nothing to check.
            return;
        };
        let mut expected = Vec::new();
        for (i, size) in [10usize, 4086, 1, 9000, 4096, 3, 0, 12_345]
            .iter()
            .enumerate()
        {
            let part: Vec<u8> = (0..*size).map(|j| (i * 31 + j) as u8 | 1).collect();
            writer
                .append(
                    &buffered,
                    expected.len() as u64,
                    &[&part[..size / 2], &part[size / 2..]],
                )
                .unwrap();
            expected.extend_from_slice(&part);
            let on_disk = file_bytes(&path);
            assert_eq!(
                &on_disk[..expected.len()],
                &expected[..],
                "after append {i}"
            );
            assert_eq!(on_disk.len() % BLOCK, 0);
            assert!(on_disk[expected.len()..].iter().all(|b| *b == 0));
            assert_eq!(
                is_padding(&buffered, expected.len() as u64, on_disk.len() as u64).unwrap(),
                on_disk.len() > expected.len()
            );
        }
        // A truncation elsewhere: the writer reads the partial block back.
        expected.truncate(5000);
        buffered.set_len(5000).unwrap();
        writer.forget_tail();
        writer.append(&buffered, 5000, &[b"after the cut"]).unwrap();
        expected.extend_from_slice(b"after the cut");
        assert_eq!(&file_bytes(&path)[..expected.len()], &expected[..]);
    }

    #[test]
    fn padding_is_only_zeros_short_of_a_block_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        std::fs::write(&path, [vec![7u8; 100], vec![0u8; BLOCK - 100]].concat()).unwrap();
        let file = File::open(&path).unwrap();
        assert!(is_padding(&file, 100, BLOCK as u64).unwrap());
        assert!(!is_padding(&file, 99, BLOCK as u64).unwrap());
        assert!(!is_padding(&file, 100, 200).unwrap());
        assert!(!is_padding(&file, BLOCK as u64, BLOCK as u64).unwrap());
        std::fs::write(&path, vec![0u8; 2 * BLOCK]).unwrap();
        let file = File::open(&path).unwrap();
        assert!(!is_padding(&file, 0, 2 * BLOCK as u64).unwrap());
    }
}
