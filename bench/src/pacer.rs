//! Precise waits for the fixed-rate load. tokio's timer has millisecond granularity and
//! rounds a deadline up to the next tick, so a record due at 3.2 ms is handed over at
//! 4 ms or later: about 1 ms of the benchmark's own delay in every latency it reports.
//! A `timerfd` set to the exact due time, watched by tokio's I/O driver, wakes the load
//! task within microseconds of it instead (at most [`MIN_WAIT`] late by design).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The shortest wait: records due sooner wait this long and go out together.
pub const MIN_WAIT: Duration = Duration::from_micros(100);

/// One load task's timer (a monotonic `timerfd`).
pub struct Pacer {
    fd: AsyncFd<OwnedFd>,
}

impl Pacer {
    pub fn new() -> io::Result<Pacer> {
        // SAFETY: timerfd_create takes no pointers; a non-negative result is a new fd
        // that nothing else owns.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a valid fd owned by no one else (just created).
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the OwnedFd stays open, as the same fd, for as long as the AsyncFd
        // that owns it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|err| io::Error::other(err.to_string()))?;
        Ok(Pacer { fd })
    }

    /// Returns at `due` (at once if it has passed), or up to [`MIN_WAIT`] after it: a
    /// fast load then wakes at most once per `MIN_WAIT` and hands over every record
    /// due by then, instead of paying a wake-up per record.
    pub async fn sleep_until(&self, due: Instant) -> io::Result<()> {
        let wait = due.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return Ok(());
        }
        self.arm(wait.max(MIN_WAIT))?;
        loop {
            let mut guard = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a live 8-byte buffer.
            let n = unsafe {
                libc::read(
                    self.fd.get_ref().as_raw_fd(),
                    expirations.as_mut_ptr().cast(),
                    expirations.len(),
                )
            };
            if n == 8 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(err);
            }
            guard.clear_ready();
        }
    }

    /// Sets the timer to fire once, `wait` from now.
    fn arm(&self, wait: Duration) -> io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: wait.as_secs() as libc::time_t,
                tv_nsec: wait.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked for (null).
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.get_ref().as_raw_fd(),
                0,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_at_the_due_time_not_before() {
        let pacer = Pacer::new().expect("timerfd");
        for wait_us in [50u64, 300, 1_700] {
            let due = Instant::now() + Duration::from_micros(wait_us);
            pacer.sleep_until(due).await.expect("sleep");
            assert!(Instant::now() >= due, "woke before {wait_us} µs");
        }
        // A due time in the past returns at once, and the timer is still usable.
        pacer
            .sleep_until(Instant::now() - Duration::from_millis(1))
            .await
            .expect("past");
        let due = Instant::now() + Duration::from_micros(100);
        pacer.sleep_until(due).await.expect("again");
        assert!(Instant::now() >= due);
    }
}
