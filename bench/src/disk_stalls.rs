//! Stalls of this machine's disks while a benchmark runs: spans in which requests were
//! waiting at a disk and none completed (the disks' counters, sampled every
//! [`SAMPLE_EVERY`]). A virtual disk can stop completing writes for a second now and
//! then; at a fixed rate such a stall alone sets a run's latency tail, and the report
//! says so rather than leave it to guesswork. Each sample is one `pread` of each whole
//! disk's `/sys/block/<disk>/stat` (0.7% of a core measured here).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How often the disks' counters are read.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// Stalls at least this long are counted.
const COUNTED: Duration = Duration::from_millis(50);

/// The disks' stalls over a run.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct DiskStalls {
    /// The longest span with requests waiting and none completed, in ms.
    pub longest_ms: f64,
    /// Spans of at least 50 ms.
    pub over_50ms: u32,
}

/// What a sample of the disks says: requests in flight, and completions so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    in_flight: u64,
    completed: u64,
}

/// Follows samples and measures the stalls in them.
#[derive(Debug, Default)]
struct Tracker {
    last: Option<Sample>,
    /// When the current stall began: the last sample that saw a completion.
    since: Option<Instant>,
    stalls: DiskStalls,
}

impl Tracker {
    fn observe(&mut self, sample: Sample, at: Instant) {
        let progressed = self
            .last
            .is_none_or(|last| last.completed != sample.completed);
        self.last = Some(sample);
        if progressed || sample.in_flight == 0 {
            self.end(at);
            if sample.in_flight > 0 {
                self.since = Some(at);
            }
        } else if self.since.is_none() {
            self.since = Some(at);
        }
    }

    /// Closes the current stall, if any, at `at`.
    fn end(&mut self, at: Instant) {
        let Some(since) = self.since.take() else {
            return;
        };
        let stalled = at.duration_since(since);
        self.stalls.longest_ms = self.stalls.longest_ms.max(stalled.as_secs_f64() * 1e3);
        if stalled >= COUNTED {
            self.stalls.over_50ms += 1;
        }
    }
}

/// Samples the disks on a thread of its own until finished.
pub struct DiskWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Option<DiskStalls>>>,
}

impl DiskWatch {
    pub fn start() -> DiskWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("disk-stalls".into())
                .spawn(move || {
                    let mut buf = [0u8; 512];
                    let disks = whole_disks();
                    let mut tracker = Tracker::default();
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(sample) = sample(&disks, &mut buf) {
                            tracker.observe(sample, Instant::now());
                        }
                        std::thread::sleep(SAMPLE_EVERY);
                    }
                    tracker.end(Instant::now());
                    tracker.last.is_some().then_some(tracker.stalls)
                })
                .ok()
        };
        DiskWatch { stop, thread }
    }

    /// The stalls seen since [`DiskWatch::start`]; `None` if the disks could not be
    /// read (or this was asked before).
    pub fn finish(&mut self) -> Option<DiskStalls> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take()?.join().ok().flatten()
    }
}

impl Drop for DiskWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The `stat` files of this machine's whole disks (partitions would count their disk's
/// requests twice; loop, RAM and compressed-RAM devices are not disks).
fn whole_disks() -> Vec<std::fs::File> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            if ["loop", "ram", "zram"].iter().any(|p| name.starts_with(p)) {
                return None;
            }
            std::fs::File::open(entry.path().join("stat")).ok()
        })
        .collect()
}

/// The counters of `disks`, summed.
fn sample(disks: &[std::fs::File], buf: &mut [u8]) -> Option<Sample> {
    use std::os::unix::fs::FileExt;
    let mut total = Sample {
        in_flight: 0,
        completed: 0,
    };
    for disk in disks {
        // sysfs renders the file afresh for each read from its start.
        let len = disk.read_at(buf, 0).ok()?;
        let text = std::str::from_utf8(buf.get(..len)?).ok()?;
        let fields: Vec<&str> = text.split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        // Reads and writes completed (fields 1 and 5), flushes completed (field 16, on
        // kernels that count them), requests in flight (field 9).
        total.completed += field(0)? + field(4)? + field(15).unwrap_or(0);
        total.in_flight += field(8)?;
    }
    (!disks.is_empty()).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(samples: &[(u64, u64)]) -> DiskStalls {
        let start = Instant::now();
        let mut tracker = Tracker::default();
        for (i, &(in_flight, completed)) in samples.iter().enumerate() {
            let at = start + Duration::from_millis(10 * i as u64);
            tracker.observe(
                Sample {
                    in_flight,
                    completed,
                },
                at,
            );
        }
        tracker.end(start + Duration::from_millis(10 * samples.len() as u64));
        tracker.stalls
    }

    #[test]
    fn a_stall_is_requests_waiting_with_no_completion() {
        // Completions every sample: spans of one sample (10 ms). Then no completion
        // from the sample at 20 ms until the one at 90 ms while requests wait: 70 ms.
        let stalls = run(&[
            (1, 1),
            (1, 2),
            (2, 3),
            (2, 3),
            (2, 3),
            (2, 3),
            (2, 3),
            (2, 3),
            (2, 3),
            (1, 9),
            (1, 10),
        ]);
        assert_eq!(stalls.over_50ms, 1);
        assert!(
            (stalls.longest_ms - 70.0).abs() < 1e-6,
            "{}",
            stalls.longest_ms
        );
    }

    #[test]
    fn an_idle_disk_is_not_stalled() {
        let stalls = run(&[(0, 5), (0, 5), (0, 5), (0, 5), (0, 5), (0, 5), (0, 5)]);
        assert_eq!(stalls, DiskStalls::default());
    }
}
