//! What the brokers on this machine cost while a benchmark runs: CPU (share of one core,
//! from `/proc/<pid>/stat`) and resident memory (`/proc/<pid>/status`); how busy the
//! whole machine's cores were (`/proc/stat`) and the benchmark's own share (its
//! `/proc/<pid>/stat`); and the disks' stalls over the same span (`disk_stalls`).

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

/// The machine's CPU over a run.
#[derive(Debug, Clone, Serialize)]
pub struct MachineCpu {
    pub cores: usize,
    /// Percent of all the cores' time spent running anything (user, system,
    /// interrupts), averaged over the run: 100 when every core was busy throughout.
    pub busy_percent: f64,
    /// Percent of all the cores' time the hypervisor gave to something else.
    pub steal_percent: f64,
    /// This benchmark's own CPU, percent of one core.
    pub bench_percent: f64,
}

/// Everything a [`UsageProbe`] measured.
pub struct Usage {
    pub brokers: Vec<BrokerUsage>,
    pub disk_stalls: Option<DiskStalls>,
    pub cpu: Option<MachineCpu>,
}

/// CPU counters of the brokers, the machine and this process at the start of a run.
pub struct UsageProbe {
    start: Instant,
    ticks: Vec<(u32, u64)>,
    machine: Option<CpuTimes>,
    own: Option<u64>,
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
            machine: CpuTimes::now(),
            own: cpu_ticks(std::process::id()),
            ticks: pids
                .into_iter()
                .filter_map(|pid| Some((pid, cpu_ticks(pid)?)))
                .collect(),
        }
    }

    /// Each broker's CPU since [`UsageProbe::start`] and its memory now, the machine's
    /// CPU, and the disks' stalls over the same span (their watch stops here).
    pub fn finish(&self) -> Usage {
        let disk_stalls = self
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
        let cpu = self.machine_cpu(per_second, seconds);
        Usage {
            brokers,
            disk_stalls,
            cpu,
        }
    }
}

impl UsageProbe {
    /// The machine's CPU since [`UsageProbe::start`], and this process's, over
    /// `seconds` (`per_second`: clock ticks a second).
    fn machine_cpu(&self, per_second: f64, seconds: f64) -> Option<MachineCpu> {
        let (before, after) = (self.machine?, CpuTimes::now()?);
        let total = after.total.checked_sub(before.total).filter(|t| *t > 0)? as f64;
        let own = cpu_ticks(std::process::id())?.checked_sub(self.own?)? as f64;
        Some(MachineCpu {
            cores: after.cores,
            busy_percent: 100.0 * after.busy.saturating_sub(before.busy) as f64 / total,
            steal_percent: 100.0 * after.steal.saturating_sub(before.steal) as f64 / total,
            bench_percent: 100.0 * own / per_second / seconds,
        })
    }
}

/// The summed counters of `/proc/stat`'s `cpu` line, in clock ticks.
#[derive(Debug, Clone, Copy)]
struct CpuTimes {
    /// user, nice, system, irq and softirq.
    busy: u64,
    steal: u64,
    /// All of them, with idle and I/O wait.
    total: u64,
    cores: usize,
}

impl CpuTimes {
    fn now() -> Option<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        CpuTimes::parse(&stat)
    }

    fn parse(stat: &str) -> Option<CpuTimes> {
        let mut lines = stat.lines();
        let fields: Vec<u64> = lines
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal (guest time is within user).
        let [user, nice, system, idle, iowait, irq, softirq, steal, ..] = fields[..] else {
            return None;
        };
        let cores = lines
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count();
        let busy = user + nice + system + irq + softirq;
        Some(CpuTimes {
            busy,
            steal,
            total: busy + idle + iowait + steal,
            cores,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_cpu_times_are_summed_and_cores_counted() {
        let stat = "cpu  100 5 50 800 20 3 7 15 0 0\n\
                    cpu0 50 2 25 400 10 1 3 8 0 0\n\
                    cpu1 50 3 25 400 10 2 4 7 0 0\n\
                    intr 12345\n";
        let t = CpuTimes::parse(stat).expect("parses");
        assert_eq!(t.busy, 100 + 5 + 50 + 3 + 7);
        assert_eq!(t.steal, 15);
        assert_eq!(t.total, 165 + 800 + 20 + 15);
        assert_eq!(t.cores, 2);
        assert!(CpuTimes::parse("cpu  1 2 3\n").is_none(), "too few fields");
        assert!(CpuTimes::parse("intr 1\n").is_none(), "no cpu line");
    }
}
