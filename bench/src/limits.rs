//! The machine's physical limits, measured in the same run as a benchmark so that its
//! figures can be read as a share of what the hardware allows: the disk's sequential
//! write + fdatasync bandwidth (the durability policy of a produce), loopback TCP
//! bandwidth (every produced byte crosses it once to the leader and once per follower)
//! and memcpy bandwidth.
//!
//! The disk is probed twice, for [`DISK_PROBE`] each: with `O_DIRECT`, which is the
//! disk's own bandwidth (and the way brokers write by default), and through the page
//! cache. On a virtual machine the second can be far lower: each page the cache grows
//! into may cost the host a fault (this machine hands freed memory back to the host, so
//! a run pays again for memory an earlier one used), and its rate then depends on the
//! guest's memory rather than on the disk.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Bytes written per fdatasync in the disk probes: a large produce batch.
const DISK_CHUNK_BYTES: usize = 512 * 1024;
/// How long each disk probe writes (it stops earlier at [`DISK_MAX_BYTES`]).
const DISK_PROBE: Duration = Duration::from_secs(10);
const DISK_MAX_BYTES: usize = 8 * 1024 * 1024 * 1024;
/// `O_DIRECT` wants buffers, offsets and lengths aligned to the logical block size.
const DIRECT_ALIGN: usize = 4096;
const LOOPBACK_CHUNK_BYTES: usize = 256 * 1024;
const LOOPBACK_TOTAL_BYTES: usize = 2 * 1024 * 1024 * 1024;
const MEMCPY_BUFFER_BYTES: usize = 256 * 1024 * 1024;
const MEMCPY_ROUNDS: usize = 8;

/// MB/s (10^6 bytes) of each limit.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// Sequential `O_DIRECT` writes with an fdatasync each: the disk's own bandwidth.
    pub disk_write_fdatasync_mb_per_sec: f64,
    /// The same through the page cache (`None` where the file system refuses
    /// `O_DIRECT`, since the first figure is then this one).
    pub page_cache_write_fdatasync_mb_per_sec: Option<f64>,
    pub loopback_tcp_mb_per_sec: f64,
    pub memcpy_mb_per_sec: f64,
}

impl Limits {
    pub fn describe(&self) -> String {
        let cached = self
            .page_cache_write_fdatasync_mb_per_sec
            .map_or_else(String::new, |c| {
                format!(", {c:.0} MB/s through the page cache")
            });
        format!(
            "disk write+fdatasync ({} KiB per sync, {} s each) {:.0} MB/s with O_DIRECT{cached}; loopback TCP {:.0} MB/s; memcpy {:.0} MB/s",
            DISK_CHUNK_BYTES / 1024,
            DISK_PROBE.as_secs(),
            self.disk_write_fdatasync_mb_per_sec,
            self.loopback_tcp_mb_per_sec,
            self.memcpy_mb_per_sec
        )
    }
}

/// Measures the limits, the disk ones in a temporary directory under `dir`.
pub fn measure(dir: &Path) -> anyhow::Result<Limits> {
    let direct = disk(dir, true)?;
    let cached = disk(dir, false)?;
    let (disk, page_cache) = match direct {
        Some(direct) => (direct, cached),
        None => (cached.unwrap_or(0.0), None),
    };
    Ok(Limits {
        disk_write_fdatasync_mb_per_sec: disk,
        page_cache_write_fdatasync_mb_per_sec: page_cache,
        loopback_tcp_mb_per_sec: loopback()?,
        memcpy_mb_per_sec: memcpy(),
    })
}

fn mb_per_sec(bytes: usize, started: Instant) -> f64 {
    bytes as f64 / 1e6 / started.elapsed().as_secs_f64().max(1e-9)
}

/// MB/s of sequential writes with an fdatasync per chunk, with `O_DIRECT` or through
/// the page cache; `None` when the file system refuses `O_DIRECT`.
fn disk(dir: &Path, direct: bool) -> anyhow::Result<Option<f64>> {
    let tmp = tempfile::tempdir_in(dir)?;
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    if direct {
        options.custom_flags(libc::O_DIRECT);
    }
    let mut file = match options.open(tmp.path().join("probe.bin")) {
        Ok(file) => file,
        Err(err) if direct && err.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    let memory = vec![0x5au8; DISK_CHUNK_BYTES + DIRECT_ALIGN];
    let skip = memory.as_ptr().align_offset(DIRECT_ALIGN);
    let chunk = &memory[skip..skip + DISK_CHUNK_BYTES];
    let started = Instant::now();
    let mut written = 0usize;
    while started.elapsed() < DISK_PROBE && written < DISK_MAX_BYTES {
        match file.write_all(chunk) {
            Err(err) if direct && written == 0 && err.raw_os_error() == Some(libc::EINVAL) => {
                return Ok(None);
            }
            other => other?,
        }
        file.sync_data()?;
        written += DISK_CHUNK_BYTES;
    }
    Ok(Some(mb_per_sec(written, started)))
}

fn loopback() -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut conn, _) = listener.accept()?;
        let mut buf = vec![0u8; LOOPBACK_CHUNK_BYTES];
        let mut total = 0;
        loop {
            match conn.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    });
    let mut conn = TcpStream::connect(addr)?;
    conn.set_nodelay(true)?;
    let chunk = vec![0xa5u8; LOOPBACK_CHUNK_BYTES];
    let started = Instant::now();
    for _ in 0..LOOPBACK_TOTAL_BYTES / LOOPBACK_CHUNK_BYTES {
        conn.write_all(&chunk)?;
    }
    drop(conn);
    let received = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the loopback reader panicked"))??;
    anyhow::ensure!(received == LOOPBACK_TOTAL_BYTES, "loopback lost bytes");
    Ok(mb_per_sec(LOOPBACK_TOTAL_BYTES, started))
}

fn memcpy() -> f64 {
    let source = vec![0x3cu8; MEMCPY_BUFFER_BYTES];
    let mut target = vec![0u8; MEMCPY_BUFFER_BYTES];
    // One untimed round: the pages of both buffers are faulted in first.
    target.copy_from_slice(&source);
    let started = Instant::now();
    for round in 0..MEMCPY_ROUNDS {
        target.copy_from_slice(&source);
        std::hint::black_box(&target[round]);
    }
    mb_per_sec(MEMCPY_BUFFER_BYTES * MEMCPY_ROUNDS, started)
}
