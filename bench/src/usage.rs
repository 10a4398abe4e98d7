//! What the brokers on this machine cost while a benchmark runs: CPU (share of one core,
//! from `/proc/<pid>/stat`) and resident memory (`/proc/<pid>/status`); and the disks'
//! stalls over the same span (`disk_stalls`).

use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::disk_stalls::{DiskStalls, DiskWatch};

/// One broker's cost over a run.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerUsage {
    pub pid: u32,
    /// Percent of one core, averaged over the run.
    pub cpu_percent: f64,
    /// Resident memory at the end of the run.
    pub rss_mib: f64,
}

/// CPU counters of the brokers at the start of a run.
pub struct UsageProbe {
    start: Instant,
    ticks: Vec<(u32, u64)>,
    disks: Mutex<DiskWatch>,
}

impl UsageProbe {
    /// Starts measuring `pids`, or every `strait-broker` process on this machine when
    /// none are given.
    pub fn start(pids: &[u32]) -> UsageProbe {
        let pids = if pids.is_empty() {
            broker_pids()
        } else {
            pids.to_vec()
        };
        UsageProbe {
            disks: Mutex::new(DiskWatch::start()),
            start: Instant::now(),
            ticks: pids
                .into_iter()
                .filter_map(|pid| Some((pid, cpu_ticks(pid)?)))
                .collect(),
        }
    }

    /// Each broker's CPU since [`UsageProbe::start`] and its memory now, and the
    /// disks' stalls over the same span (their watch stops here).
    pub fn finish(&self) -> (Vec<BrokerUsage>, Option<DiskStalls>) {
        let stalls = self
            .disks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finish();
        let seconds = self.start.elapsed().as_secs_f64().max(1e-9);
        let per_second = ticks_per_second();
        let brokers = self
            .ticks
            .iter()
            .filter_map(|&(pid, before)| {
                let used = cpu_ticks(pid)?.saturating_sub(before) as f64 / per_second;
                Some(BrokerUsage {
                    pid,
                    cpu_percent: 100.0 * used / seconds,
                    rss_mib: rss_kib(pid)? as f64 / 1024.0,
                })
            })
            .collect();
        (brokers, stalls)
    }
}

/// Processes named `strait-broker`.
fn broker_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "strait-broker")
        })
        .collect()
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the running system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}
