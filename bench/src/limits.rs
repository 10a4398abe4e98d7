//! The machine's physical limits, measured in the same run as a benchmark so that its
//! figures can be read as a share of what the hardware allows: the disk's sequential
//! write + fdatasync bandwidth (the durability policy of a produce), loopback TCP
//! bandwidth (every produced byte crosses it once to the leader and once per follower)
//! and memcpy bandwidth.
//!
//! Virtual disks often absorb a burst much faster than they sustain writes (this
//! machine's: about 1 GB/s for the first 2 GB, then about 250 MB/s), so the disk probe
//! writes for [`DISK_PROBE`] and reports both: the rate of its first GiB (*burst*) and
//! of its second half (*sustained*). A run that writes more than the burst absorbs is
//! limited by the sustained rate. The probe also keeps its progress, so that a run can
//! be compared with the disk's rate *for the same volume*: the probe's average over as
//! many bytes as the run wrote to the disk, every replica counted
//! ([`Limits::disk_mb_per_sec_for`]).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Bytes written per fdatasync in the disk probe: a large produce batch.
const DISK_CHUNK_BYTES: usize = 512 * 1024;
/// The burst rate is that of the first this many bytes.
const DISK_BURST_BYTES: usize = 1024 * 1024 * 1024;
/// How long the disk probe writes (it stops earlier at [`DISK_MAX_BYTES`]).
const DISK_PROBE: Duration = Duration::from_secs(30);
const DISK_MAX_BYTES: usize = 16 * 1024 * 1024 * 1024;
const LOOPBACK_CHUNK_BYTES: usize = 256 * 1024;
const LOOPBACK_TOTAL_BYTES: usize = 2 * 1024 * 1024 * 1024;
const MEMCPY_BUFFER_BYTES: usize = 256 * 1024 * 1024;
const MEMCPY_ROUNDS: usize = 8;

/// MB/s (10^6 bytes) of each limit.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// The first GiB written (burst).
    pub disk_write_fdatasync_mb_per_sec: f64,
    /// The second half of the probe (sustained).
    pub disk_sustained_write_fdatasync_mb_per_sec: f64,
    pub loopback_tcp_mb_per_sec: f64,
    pub memcpy_mb_per_sec: f64,
    /// The disk probe's progress.
    #[serde(skip)]
    pub disk_progress: Progress,
}

impl Limits {
    /// The disk probe's average MB/s over its first `bytes`: what this disk gives a run
    /// that writes that much. Past the end of the probe, the bytes it did not write are
    /// counted at its sustained rate.
    pub fn disk_mb_per_sec_for(&self, bytes: u64) -> f64 {
        let Some(&(end_secs, end_bytes)) = self.disk_progress.last() else {
            return self.disk_write_fdatasync_mb_per_sec;
        };
        let (secs, written) = match self.disk_progress.iter().find(|(_, w)| *w >= bytes) {
            Some(&at) => at,
            None => {
                let rest = (bytes - end_bytes) as f64 / 1e6;
                let sustained = self.disk_sustained_write_fdatasync_mb_per_sec.max(1e-9);
                (end_secs + rest / sustained, bytes)
            }
        };
        written as f64 / 1e6 / secs.max(1e-9)
    }

    pub fn describe(&self) -> String {
        format!(
            "disk write+fdatasync ({} KiB per sync) {:.0} MB/s burst (first GiB), {:.0} MB/s sustained (second half of {} s); loopback TCP {:.0} MB/s; memcpy {:.0} MB/s",
            DISK_CHUNK_BYTES / 1024,
            self.disk_write_fdatasync_mb_per_sec,
            self.disk_sustained_write_fdatasync_mb_per_sec,
            DISK_PROBE.as_secs(),
            self.loopback_tcp_mb_per_sec,
            self.memcpy_mb_per_sec
        )
    }
}

/// Measures the three limits, the disk one in a temporary directory under `dir`.
pub fn measure(dir: &Path) -> anyhow::Result<Limits> {
    let (burst, sustained, disk_progress) = disk(dir)?;
    Ok(Limits {
        disk_write_fdatasync_mb_per_sec: burst,
        disk_sustained_write_fdatasync_mb_per_sec: sustained,
        loopback_tcp_mb_per_sec: loopback()?,
        memcpy_mb_per_sec: memcpy(),
        disk_progress,
    })
}

fn mb_per_sec(bytes: usize, started: Instant) -> f64 {
    bytes as f64 / 1e6 / started.elapsed().as_secs_f64().max(1e-9)
}

/// (seconds since the start, bytes written) after each chunk of the disk probe.
type Progress = Vec<(f64, u64)>;

/// Burst and sustained MB/s of sequential writes with an fdatasync per chunk, and the
/// probe's progress.
fn disk(dir: &Path) -> anyhow::Result<(f64, f64, Progress)> {
    let tmp = tempfile::tempdir_in(dir)?;
    let mut file = std::fs::File::create(tmp.path().join("probe.bin"))?;
    let chunk = vec![0x5au8; DISK_CHUNK_BYTES];
    let started = Instant::now();
    let mut burst = None;
    // (elapsed, bytes written) after each chunk.
    let mut progress = Vec::new();
    let mut written = 0usize;
    while started.elapsed() < DISK_PROBE && written < DISK_MAX_BYTES {
        file.write_all(&chunk)?;
        file.sync_data()?;
        written += DISK_CHUNK_BYTES;
        progress.push((started.elapsed(), written));
        if burst.is_none() && written >= DISK_BURST_BYTES {
            burst = Some(mb_per_sec(written, started));
        }
    }
    let total = started.elapsed();
    let half = total / 2;
    let (mid_time, mid_bytes) = progress
        .iter()
        .find(|(at, _)| *at >= half)
        .copied()
        .unwrap_or((Duration::ZERO, 0));
    let sustained = (written - mid_bytes) as f64 / 1e6 / (total - mid_time).as_secs_f64().max(1e-9);
    let progress = progress
        .into_iter()
        .map(|(at, bytes)| (at.as_secs_f64(), bytes as u64))
        .collect();
    Ok((
        burst.unwrap_or_else(|| mb_per_sec(written, started)),
        sustained,
        progress,
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(progress: Progress) -> Limits {
        Limits {
            disk_write_fdatasync_mb_per_sec: 1000.0,
            disk_sustained_write_fdatasync_mb_per_sec: 250.0,
            loopback_tcp_mb_per_sec: 0.0,
            memcpy_mb_per_sec: 0.0,
            disk_progress: progress,
        }
    }

    #[test]
    fn the_disk_rate_for_a_volume_is_the_probes_average_over_it() {
        let l = limits(vec![
            (1.0, 1_000_000_000),
            (2.0, 2_000_000_000),
            (10.0, 4_000_000_000),
        ]);
        // Up to the first point that wrote as much.
        assert_eq!(l.disk_mb_per_sec_for(1_500_000_000), 1000.0);
        assert_eq!(l.disk_mb_per_sec_for(4_000_000_000), 400.0);
        // Past the probe: the rest at the sustained rate (2 GB in 8 s more).
        assert_eq!(l.disk_mb_per_sec_for(6_000_000_000), 6000.0 / 18.0);
        // No probe progress: the burst figure.
        assert_eq!(limits(Vec::new()).disk_mb_per_sec_for(1), 1000.0);
    }
}
