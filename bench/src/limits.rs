//! The machine's physical limits, measured in the same run as a benchmark so that its
//! figures can be read as a share of what the hardware allows: the disk's sequential
//! write + fdatasync bandwidth (the durability policy of a produce), loopback TCP
//! bandwidth (every produced byte crosses it once to the leader and once per follower)
//! and memcpy bandwidth.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

/// Bytes written per fdatasync in the disk probe: a large produce batch.
const DISK_CHUNK_BYTES: usize = 512 * 1024;
const DISK_TOTAL_BYTES: usize = 1024 * 1024 * 1024;
const LOOPBACK_CHUNK_BYTES: usize = 256 * 1024;
const LOOPBACK_TOTAL_BYTES: usize = 2 * 1024 * 1024 * 1024;
const MEMCPY_BUFFER_BYTES: usize = 256 * 1024 * 1024;
const MEMCPY_ROUNDS: usize = 8;

/// MB/s (10^6 bytes) of each limit.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Limits {
    pub disk_write_fdatasync_mb_per_sec: f64,
    pub loopback_tcp_mb_per_sec: f64,
    pub memcpy_mb_per_sec: f64,
}

impl Limits {
    pub fn describe(&self) -> String {
        format!(
            "disk write+fdatasync {:.0} MB/s ({} KiB per sync); loopback TCP {:.0} MB/s; memcpy {:.0} MB/s",
            self.disk_write_fdatasync_mb_per_sec,
            DISK_CHUNK_BYTES / 1024,
            self.loopback_tcp_mb_per_sec,
            self.memcpy_mb_per_sec
        )
    }
}

/// Measures the three limits, the disk one in a temporary directory under `dir`.
pub fn measure(dir: &Path) -> anyhow::Result<Limits> {
    Ok(Limits {
        disk_write_fdatasync_mb_per_sec: disk(dir)?,
        loopback_tcp_mb_per_sec: loopback()?,
        memcpy_mb_per_sec: memcpy(),
    })
}

fn mb_per_sec(bytes: usize, started: Instant) -> f64 {
    bytes as f64 / 1e6 / started.elapsed().as_secs_f64().max(1e-9)
}

fn disk(dir: &Path) -> anyhow::Result<f64> {
    let tmp = tempfile::tempdir_in(dir)?;
    let mut file = std::fs::File::create(tmp.path().join("probe.bin"))?;
    let chunk = vec![0x5au8; DISK_CHUNK_BYTES];
    let started = Instant::now();
    for _ in 0..DISK_TOTAL_BYTES / DISK_CHUNK_BYTES {
        file.write_all(&chunk)?;
        file.sync_data()?;
    }
    Ok(mb_per_sec(DISK_TOTAL_BYTES, started))
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
