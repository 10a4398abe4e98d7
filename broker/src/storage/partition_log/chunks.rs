//! Block-aligned memory that appends never move: the buffer a direct log's appends wait
//! in, which the disk is then written from without another copy.
//!
//! [`Chunks`] is a run of aligned allocations ([`Chunk`]s). Appending copies into the
//! last chunk and starts a new one when it is full; a byte, once appended, stays where
//! it is and is never written again. So a [`Piece`] of appended bytes can be handed to
//! the kernel (a direct write reads them while the device copies them) while appends
//! go on filling the bytes after it, and without holding the log's lock meanwhile.
//! Dropping bytes from the front frees whole chunks; a piece keeps its chunk alive.
//! Freed chunks of the standard sizes go to a broker-wide [`Pool`] (at most
//! [`POOL_BYTES`]) that new chunks come from first: fresh memory from the allocator
//! was page-faulted and zeroed by the kernel on first touch, which with 1,000
//! partitions cost about 4% of a broker's CPU.
//!
//! This is the module's only `unsafe`: the chunks are shared memory whose front is read
//! and whose back is written at the same time. What makes that sound is the split kept
//! here: bytes below the end are only read, bytes past it only written, by appends
//! (which take `&mut Chunks`), and a piece only covers bytes below the end. A chunk
//! from the pool holds an earlier chunk's bytes; like fresh memory, it is only read
//! below the end, where this buffer's appends wrote it.

use std::alloc::{self, Layout};
use std::collections::VecDeque;
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::direct::BLOCK;

/// The smallest chunk: a partition appending little holds little.
const MIN_CHUNK: usize = 64 * 1024;
/// The largest chunk: a busy partition allocates once per this many bytes.
const MAX_CHUNK: usize = 1 << 20;

/// One [`BLOCK`]-aligned allocation of a multiple of [`BLOCK`] bytes.
struct Chunk {
    ptr: NonNull<u8>,
    cap: usize,
}

// SAFETY: a chunk is plain memory; who may touch which bytes when is kept by `Chunks`
// (see the module documentation).
unsafe impl Send for Chunk {}
unsafe impl Sync for Chunk {}

impl Chunk {
    fn layout(cap: usize) -> Layout {
        Layout::from_size_align(cap, BLOCK).expect("a block multiple is a valid layout")
    }

    fn new(cap: usize) -> Chunk {
        debug_assert!(cap > 0 && cap.is_multiple_of(BLOCK));
        if let Some(ptr) = POOL.take(cap) {
            return Chunk { ptr, cap };
        }
        let layout = Chunk::layout(cap);
        // SAFETY: the layout's size is not zero.
        let ptr = unsafe { alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            alloc::handle_alloc_error(layout)
        };
        Chunk { ptr, cap }
    }

    /// Copies `src` to `at`.
    ///
    /// SAFETY: `at..at + src.len()` lies within the chunk, and nobody reads those bytes
    /// meanwhile (they are past the end of the `Chunks` that owns the chunk).
    unsafe fn write(&self, at: usize, src: &[u8]) {
        debug_assert!(at + src.len() <= self.cap);
        // SAFETY: in bounds (above); `src` is other memory.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(at), src.len());
        }
    }

    /// The bytes `range`.
    ///
    /// SAFETY: `range` lies within the chunk, was written, and is not written again while
    /// the slice lives (it is below the end of the `Chunks` that owns the chunk).
    unsafe fn bytes(&self, range: Range<usize>) -> &[u8] {
        debug_assert!(range.start <= range.end && range.end <= self.cap);
        // SAFETY: in bounds, initialized and not written meanwhile (above).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(range.start), range.len()) }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if POOL.put(self.ptr, self.cap) {
            return;
        }
        // SAFETY: allocated in `new` with this layout (or taken from the pool, which
        // holds only such allocations).
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Chunk::layout(self.cap)) }
    }
}

/// Freed chunk memory kept for reuse.
pub const POOL_BYTES: usize = 32 << 20;

/// Chunks [`prefill`] puts in the pool, per size class from [`MIN_CHUNK`] up: what three
/// busy partitions' buffers grow through and hold (11.75 MiB in all).
const PREFILL: [usize; CLASSES] = [4, 4, 4, 4, 8];

/// Puts page-faulted chunks in the pool (as JVM brokers pre-touch their heap), so that
/// the first load after start-up copies into memory the kernel has already mapped.
/// Measured at 151,000 records/s starting from idle: the three brokers took about
/// 11,000 page faults (about 2.6 µs each on the test machine) in the load's first
/// 0.4 s, a third or more of them appends into fresh chunks.
pub fn prefill() {
    POOL.prefill(&PREFILL);
}

/// The chunk sizes the pool keeps: the powers of two from [`MIN_CHUNK`] to
/// [`MAX_CHUNK`] (what [`Chunks::push`] allocates).
const CLASSES: usize = (MAX_CHUNK / MIN_CHUNK).trailing_zeros() as usize + 1;

static POOL: Pool = Pool::new(POOL_BYTES);

/// An allocation of [`Chunk::layout`] of its class's size that nobody uses.
struct Free(NonNull<u8>);

// SAFETY: unused memory, owned by the pool that holds it.
unsafe impl Send for Free {}

/// Freed chunks by size, up to a number of bytes in all.
struct Pool {
    classes: [Mutex<Vec<Free>>; CLASSES],
    held: AtomicUsize,
    limit: usize,
}

impl Pool {
    const fn new(limit: usize) -> Pool {
        Pool {
            classes: [const { Mutex::new(Vec::new()) }; CLASSES],
            held: AtomicUsize::new(0),
            limit,
        }
    }

    fn class(cap: usize) -> Option<usize> {
        (cap.is_power_of_two() && (MIN_CHUNK..=MAX_CHUNK).contains(&cap))
            .then(|| (cap / MIN_CHUNK).trailing_zeros() as usize)
    }

    fn lock(&self, class: usize) -> std::sync::MutexGuard<'_, Vec<Free>> {
        self.classes[class]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A freed allocation of `cap` bytes (with [`Chunk::layout`]), if one is held.
    fn take(&self, cap: usize) -> Option<NonNull<u8>> {
        let Free(ptr) = self.lock(Self::class(cap)?).pop()?;
        self.held.fetch_sub(cap, Ordering::Relaxed);
        Some(ptr)
    }

    /// Adds `counts[class]` fresh, page-faulted chunks of each class (up to the limit).
    fn prefill(&self, counts: &[usize; CLASSES]) {
        for (class, count) in counts.iter().enumerate() {
            let cap = MIN_CHUNK << class;
            let layout = Chunk::layout(cap);
            for _ in 0..*count {
                // SAFETY: the layout's size is not zero.
                let Some(ptr) = NonNull::new(unsafe { alloc::alloc(layout) }) else {
                    alloc::handle_alloc_error(layout)
                };
                // SAFETY: the `cap` bytes just allocated, which nobody else holds.
                unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, cap) };
                if !self.put(ptr, cap) {
                    // SAFETY: allocated above with this layout; the pool refused it.
                    unsafe { alloc::dealloc(ptr.as_ptr(), layout) };
                    return;
                }
            }
        }
    }

    /// Keeps `ptr`, an unused allocation of `cap` bytes with [`Chunk::layout`], unless
    /// its size is not pooled or the pool is full (false: the caller frees it).
    fn put(&self, ptr: NonNull<u8>, cap: usize) -> bool {
        let Some(class) = Self::class(cap) else {
            return false;
        };
        if self.held.fetch_add(cap, Ordering::Relaxed) + cap > self.limit {
            self.held.fetch_sub(cap, Ordering::Relaxed);
            return false;
        }
        self.lock(class).push(Free(ptr));
        true
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for (class, free) in self.classes.iter_mut().enumerate() {
            let cap = MIN_CHUNK << class;
            for Free(ptr) in free.get_mut().unwrap_or_else(|e| e.into_inner()).drain(..) {
                // SAFETY: the pool holds only allocations of `cap` bytes with this layout.
                unsafe { alloc::dealloc(ptr.as_ptr(), Chunk::layout(cap)) }
            }
        }
    }
}

/// Appended bytes that no append will change, in the chunk that holds them (kept alive
/// by the piece). A piece that starts at a multiple of [`BLOCK`] from the front of its
/// `Chunks` starts at a [`BLOCK`]-aligned address, as direct I/O needs.
pub struct Piece {
    chunk: Arc<Chunk>,
    range: Range<usize>,
}

impl Piece {
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: a piece is only made of bytes below the end of its `Chunks`, which
        // are written and never written again; the `Arc` keeps the chunk allocated.
        unsafe { self.chunk.bytes(self.range.clone()) }
    }
}

/// An append-only byte buffer in aligned chunks; bytes are dropped from the front.
#[derive(Default)]
pub struct Chunks {
    chunks: VecDeque<Arc<Chunk>>,
    /// Where byte 0 is in the first chunk: a multiple of [`BLOCK`].
    head: usize,
    len: usize,
    /// The chunks' capacity in all.
    capacity: usize,
}

impl std::fmt::Debug for Chunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunks")
            .field("len", &self.len)
            .field("chunks", &self.chunks.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Chunks {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Memory held, in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends `src` after the last byte.
    pub fn push(&mut self, mut src: &[u8]) {
        while !src.is_empty() {
            let end = self.head + self.len;
            if end == self.capacity {
                // Full (or empty): a new chunk, growing with what the buffer holds.
                let cap = (self.len + src.len())
                    .next_power_of_two()
                    .clamp(MIN_CHUNK, MAX_CHUNK);
                self.chunks.push_back(Arc::new(Chunk::new(cap)));
                self.capacity += cap;
                continue;
            }
            // Every chunk but the last is full: the end is in the last one.
            let last = self.chunks.back().expect("room means a chunk");
            let at = end - (self.capacity - last.cap);
            let n = (self.capacity - end).min(src.len());
            // SAFETY: `at..at + n` is within the last chunk and past the end, where
            // nobody reads; this is the only writer (`&mut self`).
            unsafe { last.write(at, &src[..n]) };
            self.len += n;
            src = &src[n..];
        }
    }

    /// Calls `each` with the chunk and the range within it of every part of the bytes
    /// `range`, in order.
    fn walk(&self, range: Range<usize>, mut each: impl FnMut(&Arc<Chunk>, Range<usize>)) {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "range within the bytes"
        );
        let (mut from, to) = (self.head + range.start, self.head + range.end);
        let mut chunk_start = 0;
        for chunk in &self.chunks {
            if from >= to {
                break;
            }
            let chunk_end = chunk_start + chunk.cap;
            if from < chunk_end {
                let part_end = to.min(chunk_end);
                each(chunk, from - chunk_start..part_end - chunk_start);
                from = part_end;
            }
            chunk_start = chunk_end;
        }
    }

    /// Copies the bytes from `at` into `out`, which they must fill.
    pub fn copy_to(&self, at: usize, out: &mut [u8]) {
        let mut filled = 0;
        self.walk(at..at + out.len(), |chunk, range| {
            let n = range.len();
            // SAFETY: below the end (checked by `walk`): written and not written again.
            out[filled..filled + n].copy_from_slice(unsafe { chunk.bytes(range) });
            filled += n;
        });
    }

    /// The bytes `range` as pieces that stay valid while appends go on.
    pub fn pieces(&self, range: Range<usize>) -> Vec<Piece> {
        let mut pieces = Vec::new();
        self.walk(range, |chunk, range| {
            pieces.push(Piece {
                chunk: chunk.clone(),
                range,
            })
        });
        pieces
    }

    /// Drops the first `n` bytes, a multiple of [`BLOCK`] (so byte 0 stays aligned),
    /// freeing the chunks that held only them.
    pub fn drop_front(&mut self, n: usize) {
        assert!(
            n <= self.len && n.is_multiple_of(BLOCK),
            "whole blocks held"
        );
        self.head += n;
        self.len -= n;
        while let Some(first) = self.chunks.front()
            && self.head >= first.cap
        {
            self.head -= first.cap;
            self.capacity -= first.cap;
            self.chunks.pop_front();
        }
    }

    /// Moves the bytes into one chunk just large enough when the chunks hold much more
    /// than that (for a log that must give memory back).
    pub fn shrink(&mut self) {
        let fit = self.len.next_multiple_of(BLOCK).max(BLOCK);
        if self.capacity <= fit.max(MIN_CHUNK) {
            return;
        }
        let chunk = Arc::new(Chunk::new(fit));
        let mut at = 0;
        self.walk(0..self.len, |from, range| {
            // SAFETY: `from` bytes are below the end (checked by `walk`); the new chunk
            // is not shared yet.
            unsafe { chunk.write(at, from.bytes(range.clone())) };
            at += range.len();
        });
        self.chunks = VecDeque::from([chunk]);
        self.head = 0;
        self.capacity = fit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(chunks: &Chunks) -> Vec<u8> {
        let mut out = vec![0u8; chunks.len()];
        chunks.copy_to(0, &mut out);
        out
    }

    #[test]
    fn bytes_come_back_across_chunks_pieces_are_aligned_and_outlive_the_front() {
        let mut chunks = Chunks::default();
        let mut expected = Vec::new();
        for (i, size) in [1usize, 4095, 70_000, 3 * MAX_CHUNK + 17, 5, 0, 200_000]
            .into_iter()
            .enumerate()
        {
            let part: Vec<u8> = (0..size).map(|j| (i * 37 + j * 11) as u8).collect();
            chunks.push(&part);
            expected.extend_from_slice(&part);
            assert_eq!(content(&chunks), expected, "after push {i}");
        }
        let mut middle = vec![0u8; 100_000];
        chunks.copy_to(MAX_CHUNK - 50_000, &mut middle);
        assert_eq!(middle, expected[MAX_CHUNK - 50_000..][..100_000]);

        let front = chunks.pieces(BLOCK..3 * MAX_CHUNK);
        let joined: Vec<u8> = front.iter().flat_map(|p| p.bytes().to_vec()).collect();
        assert_eq!(joined, expected[BLOCK..3 * MAX_CHUNK]);
        for piece in &front {
            assert!(piece.bytes().as_ptr().addr().is_multiple_of(BLOCK));
        }

        let held = chunks.capacity();
        chunks.drop_front(2 * MAX_CHUNK);
        assert!(chunks.capacity() < held, "whole chunks freed");
        assert_eq!(content(&chunks), expected[2 * MAX_CHUNK..]);
        // The pieces still read what they covered; appends do not touch it.
        chunks.push(&[9u8; 10_000]);
        expected.extend_from_slice(&[9u8; 10_000]);
        let joined: Vec<u8> = front.iter().flat_map(|p| p.bytes().to_vec()).collect();
        assert_eq!(joined, expected[BLOCK..3 * MAX_CHUNK]);

        let whole = chunks.len() - chunks.len() % BLOCK;
        chunks.drop_front(whole);
        chunks.shrink();
        assert_eq!(chunks.capacity(), BLOCK);
        assert_eq!(content(&chunks), expected[2 * MAX_CHUNK + whole..]);
        chunks.push(b"more");
        expected.extend_from_slice(b"more");
        assert_eq!(content(&chunks), expected[2 * MAX_CHUNK + whole..]);
    }

    #[test]
    fn the_pool_reuses_freed_chunks_of_its_sizes_up_to_its_limit() {
        let pool = Pool::new(MIN_CHUNK + MAX_CHUNK);
        let layout = Chunk::layout;
        // SAFETY (the allocations below): non-zero sizes; each is freed by the pool's
        // drop or here.
        let small = NonNull::new(unsafe { alloc::alloc(layout(MIN_CHUNK)) }).expect("alloc");
        let large = NonNull::new(unsafe { alloc::alloc(layout(MAX_CHUNK)) }).expect("alloc");
        let odd_cap = 3 * BLOCK;
        let odd = NonNull::new(unsafe { alloc::alloc(layout(odd_cap)) }).expect("alloc");
        assert!(pool.take(MIN_CHUNK).is_none(), "empty at first");
        assert!(pool.put(small, MIN_CHUNK));
        assert!(!pool.put(odd, odd_cap), "not a pooled size");
        // SAFETY: refused by the pool, allocated above with this layout.
        unsafe { alloc::dealloc(odd.as_ptr(), layout(odd_cap)) };
        assert!(pool.put(large, MAX_CHUNK));
        let extra = NonNull::new(unsafe { alloc::alloc(layout(MIN_CHUNK)) }).expect("alloc");
        assert!(!pool.put(extra, MIN_CHUNK), "over the limit");
        // SAFETY: refused by the pool, allocated above with this layout.
        unsafe { alloc::dealloc(extra.as_ptr(), layout(MIN_CHUNK)) };
        assert_eq!(pool.take(MAX_CHUNK), Some(large), "by size");
        assert!(pool.take(MAX_CHUNK).is_none());
        assert_eq!(pool.held.load(Ordering::Relaxed), MIN_CHUNK);
        // `small` is freed with the pool.
    }

    #[test]
    fn prefilling_fills_each_class_up_to_the_limit() {
        let pool = Pool::new(MAX_CHUNK + 3 * MIN_CHUNK);
        pool.prefill(&[3, 0, 0, 0, 2]);
        // Three small chunks, then one large one: the second would pass the limit.
        assert_eq!(pool.held.load(Ordering::Relaxed), 3 * MIN_CHUNK + MAX_CHUNK);
        assert!(pool.take(MAX_CHUNK).is_some());
        assert!(pool.take(MAX_CHUNK).is_none());
        assert!(
            pool.take(2 * MIN_CHUNK).is_none(),
            "none asked of that class"
        );
        assert!(pool.take(MIN_CHUNK).is_some());
        // The rest is freed with the pool.
    }

    #[test]
    fn a_new_buffer_grows_its_chunks_with_what_it_holds() {
        let mut chunks = Chunks::default();
        chunks.push(&[1u8; 10]);
        assert_eq!(chunks.capacity(), MIN_CHUNK);
        chunks.push(&vec![2u8; MIN_CHUNK]);
        assert_eq!(chunks.capacity(), MIN_CHUNK + 2 * MIN_CHUNK);
        chunks.push(&vec![3u8; 4 * MAX_CHUNK]);
        assert!(chunks.capacity() <= chunks.len() + MAX_CHUNK);
    }
}
