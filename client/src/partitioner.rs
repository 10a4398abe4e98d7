//! Partition choice for records without an explicit partition: a stable hash of the key
//! (FNV-1a, 32-bit), or round-robin for keyless records.

use std::sync::atomic::{AtomicU64, Ordering};

/// The partition a keyed record without an explicit partition goes to.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % partitions.max(1)
}

#[derive(Default)]
pub(crate) struct RoundRobin(AtomicU64);

impl RoundRobin {
    pub(crate) fn next(&self, partitions: u32) -> u32 {
        (self.0.fetch_add(1, Ordering::Relaxed) % u64::from(partitions.max(1))) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_partition() {
        let p = partition_for_key(b"user-42", 12);
        for _ in 0..10 {
            assert_eq!(partition_for_key(b"user-42", 12), p);
        }
        assert!(p < 12);
    }

    #[test]
    fn keys_spread_over_partitions() {
        let mut seen = [false; 8];
        for i in 0..200 {
            seen[partition_for_key(format!("k{i}").as_bytes(), 8) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn round_robin_cycles() {
        let rr = RoundRobin::default();
        let got: Vec<u32> = (0..6).map(|_| rr.next(3)).collect();
        assert_eq!(got, vec![0, 1, 2, 0, 1, 2]);
    }
}
