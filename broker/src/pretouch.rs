//! Heap memory touched at start-up (`pretouch-mib`), as the JVM's `AlwaysPreTouch`
//! does for a Kafka broker's heap.
//!
//! The first time a process writes a page, the kernel maps it: a page fault, about
//! 2.8 µs on a virtual machine. A broker that goes from idle to full load allocates
//! its buffers (HTTP/2 frames, record batches, replication requests) for the first
//! time all at once: on a two-core machine at half its maximum rate, the three brokers
//! and the benchmark took about 34,000 page faults in the load's first 0.3 s, about
//! 100 ms of CPU when the cores had little to spare, and every record of that start
//! waited for it.
//!
//! So, before the runtime starts, glibc's allocator is told to keep what is freed (no
//! trimming, and blocks up to 32 MiB served from its arenas rather than from fresh
//! mappings that would be unmapped again), and each of the first worker threads
//! writes its share of the pages once, in its own arena, and frees them for later
//! allocations to reuse.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const MIB: usize = 1 << 20;

/// Tells glibc's allocator to keep freed memory for reuse. Call before other threads
/// start (nothing elsewhere than glibc on Linux).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes plain integers and changes only the allocator's settings.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}

/// Sets up `runtime` to touch `total_mib` MiB at start-up, split over its worker
/// threads (`worker_threads`, 0 for one per core, as tokio counts them), after telling
/// the allocator to keep freed memory. Nothing for 0 MiB.
pub fn install(runtime: &mut tokio::runtime::Builder, total_mib: usize, worker_threads: usize) {
    if total_mib == 0 {
        return;
    }
    keep_freed_memory();
    let workers = match worker_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let hook = PerThread::new(total_mib, workers);
    runtime.on_thread_start(move || {
        hook.on_thread_start();
    });
}

/// Writes `mib` MiB of heap once and frees it: the calling thread's arena then holds
/// mapped pages.
fn touch(mib: usize) {
    let blocks: Vec<Vec<u8>> = (0..mib).map(|_| vec![1u8; MIB]).collect();
    std::hint::black_box(&blocks);
}

/// The share of the pages each of the first worker threads touches.
struct PerThread {
    share_mib: usize,
    left: AtomicUsize,
}

impl PerThread {
    /// `total_mib` split over the first `threads` threads to start.
    fn new(total_mib: usize, threads: usize) -> Arc<PerThread> {
        let threads = threads.max(1);
        Arc::new(PerThread {
            share_mib: total_mib.div_ceil(threads),
            left: AtomicUsize::new(threads),
        })
    }

    /// For tokio's `on_thread_start`: the first threads to start (the workers, started
    /// with the runtime) each touch their share; later ones (the blocking pool's)
    /// nothing. Returns the MiB this thread touched.
    fn on_thread_start(&self) -> usize {
        let first = self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if !first {
            return 0;
        }
        touch(self.share_mib);
        self.share_mib
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_threads_touch_their_share_and_later_ones_nothing() {
        let hook = PerThread::new(10, 4);
        let touched: Vec<usize> = (0..6).map(|_| hook.on_thread_start()).collect();
        assert_eq!(touched, [3, 3, 3, 3, 0, 0]);
        assert_eq!(PerThread::new(0, 2).on_thread_start(), 0);
    }
}
