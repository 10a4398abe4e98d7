//! What record values hold after their 8-byte send time: synthetic log lines (what a
//! log broker carries; they compress about as well as real ones) or random bytes
//! (which do not compress at all). Values are slices of one pool generated at start,
//! taken at a moving offset, so a run spends nothing per record on making them.

use clap::ValueEnum;

/// Size of the pool values are cut from.
const POOL_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Payload {
    /// Synthetic log lines: timestamps, levels, services, messages, numbers.
    Text,
    /// Random bytes.
    Random,
}

/// The pool of filler bytes and where the next value starts.
pub struct Filler {
    pool: Vec<u8>,
    at: usize,
}

impl Filler {
    pub fn new(payload: Payload) -> Filler {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let pool = match payload {
            Payload::Random => (0..POOL_BYTES).map(|_| rng.next() as u8).collect(),
            Payload::Text => log_lines(&mut rng),
        };
        Filler { pool, at: 0 }
    }

    /// The next `len` filler bytes (wrapping around the pool).
    pub fn fill(&mut self, out: &mut impl bytes::BufMut, len: usize) {
        let mut left = len;
        while left > 0 {
            if self.at >= self.pool.len() {
                self.at = 0;
            }
            let n = left.min(self.pool.len() - self.at);
            out.put_slice(&self.pool[self.at..self.at + n]);
            self.at += n;
            left -= n;
        }
    }
}

fn log_lines(rng: &mut XorShift) -> Vec<u8> {
    const LEVELS: [&str; 4] = ["INFO", "INFO", "WARN", "DEBUG"];
    const SERVICES: [&str; 6] = ["api", "auth", "billing", "search", "ingest", "web"];
    const WORDS: [&str; 16] = [
        "request",
        "completed",
        "user",
        "session",
        "cache",
        "miss",
        "retry",
        "upstream",
        "timeout",
        "query",
        "rows",
        "ms",
        "status",
        "connection",
        "opened",
        "closed",
    ];
    let mut out = Vec::with_capacity(POOL_BYTES + 256);
    let mut ms = 1_764_000_000_000u64;
    while out.len() < POOL_BYTES {
        ms += rng.next() % 50;
        let line = format!(
            "{ms} {} {} host-{:02} req={:016x} {} {} {} latency={}ms bytes={}\n",
            LEVELS[(rng.next() % 4) as usize],
            SERVICES[(rng.next() % 6) as usize],
            rng.next() % 40,
            rng.next(),
            WORDS[(rng.next() % 16) as usize],
            WORDS[(rng.next() % 16) as usize],
            WORDS[(rng.next() % 16) as usize],
            rng.next() % 900,
            rng.next() % 100_000,
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(POOL_BYTES);
    out
}

/// A small deterministic generator (xorshift64), enough for filler.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
