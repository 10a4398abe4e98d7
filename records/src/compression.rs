//! Batch compression, chosen by the producer per batch and named in the batch itself:
//! the broker stores and replicates the compressed bytes as they came, and every
//! receiver (leader, followers, consumer) decompresses only to check and read them.
//!
//! A compressed batch is the codec's frame of the plain batch: LZ4 block format with the
//! plain length in front (4 bytes, little-endian), or one zstd frame. Decompression is
//! bounded by the caller's limit and never trusts the declared sizes.

use bytes::Bytes;

use super::BatchError;

/// Largest plain batch anyone decompresses, whatever a caller allows.
pub const MAX_PLAIN_BATCH_BYTES: usize = 64 * 1024 * 1024;
/// zstd level the producer uses (zstd's default).
const ZSTD_LEVEL: i32 = 3;

/// How a batch's records are compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    #[default]
    None,
    Lz4,
    Zstd,
}

impl Compression {
    /// The code stored in frames and sent on the wire.
    pub fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 1,
            Compression::Zstd => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<Compression> {
        match code {
            0 => Some(Compression::None),
            1 => Some(Compression::Lz4),
            2 => Some(Compression::Zstd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// `none`, `lz4` or `zstd`.
    pub fn parse(name: &str) -> Option<Compression> {
        [Compression::None, Compression::Lz4, Compression::Zstd]
            .into_iter()
            .find(|c| c.name() == name)
    }

    /// Compresses a plain batch (zstd reports its own failures, which are not expected
    /// when writing into memory).
    pub fn compress(self, plain: &[u8]) -> Result<Bytes, BatchError> {
        match self {
            Compression::None => Ok(Bytes::copy_from_slice(plain)),
            Compression::Lz4 => Ok(lz4_flex::block::compress_prepend_size(plain).into()),
            Compression::Zstd => zstd::bulk::compress(plain, ZSTD_LEVEL)
                .map(Bytes::from)
                .map_err(|_| BatchError::Compression(self.name())),
        }
    }

    /// The plain batch inside `bytes`, refused if it would be over `max_plain` bytes.
    pub fn decompress(self, bytes: &Bytes, max_plain: usize) -> Result<Bytes, BatchError> {
        let max_plain = max_plain.min(MAX_PLAIN_BATCH_BYTES);
        let corrupt = |_| BatchError::Compression(self.name());
        match self {
            Compression::None => Ok(bytes.clone()),
            Compression::Lz4 => {
                let declared = bytes
                    .get(..4)
                    .map(|n| u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize)
                    .ok_or(BatchError::Compression("lz4"))?;
                if declared > max_plain {
                    return Err(BatchError::PlainTooLarge { limit: max_plain });
                }
                lz4_flex::block::decompress_size_prepended(bytes)
                    .map(Bytes::from)
                    .map_err(|_| BatchError::Compression("lz4"))
            }
            Compression::Zstd => {
                // The frame may declare its size; it is only a hint, never trusted.
                let mut out = Vec::new();
                let mut decoder = zstd::stream::read::Decoder::new(&bytes[..]).map_err(corrupt)?;
                let read = std::io::Read::read_to_end(
                    &mut std::io::Read::take(&mut decoder, max_plain as u64 + 1),
                    &mut out,
                )
                .map_err(corrupt)?;
                if read > max_plain {
                    return Err(BatchError::PlainTooLarge { limit: max_plain });
                }
                Ok(Bytes::from(out))
            }
        }
    }
}
