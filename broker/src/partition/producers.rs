//! Idempotent producers, as the committed log says: for each producer id, the sequence
//! numbers and first offsets of its last few batches in this partition. Every replica
//! builds the same table by applying the same entries in the same order (it is rebuilt
//! at start-up by re-applying the log after the last snapshot), so a new leader knows
//! what its predecessor wrote. The leader's admission of new batches
//! (`partition::sequencer`) reads it.
//!
//! The table is bounded: [`REMEMBERED_BATCHES`] batches per producer and
//! [`MAX_PRODUCERS`] producers per partition; the producer that wrote least recently is
//! forgotten first (by apply order, so identically on every replica). A forgotten
//! producer's next batch is refused: it must start over under a new producer id.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// Batches remembered per producer: a retry of any of them is recognised. A producer
/// keeps at most this many batches in flight per partition.
pub const REMEMBERED_BATCHES: usize = 5;
/// Producers remembered per partition.
pub const MAX_PRODUCERS: usize = 10_000;

/// A batch an idempotent producer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenBatch {
    pub base_sequence: u64,
    pub record_count: u32,
    pub base_offset: u64,
}

impl WrittenBatch {
    /// The sequence number the producer's next batch starts at.
    pub fn next_sequence(&self) -> u64 {
        self.base_sequence
            .wrapping_add(u64::from(self.record_count))
    }
}

#[derive(Debug)]
struct Producer {
    batches: VecDeque<WrittenBatch>,
    /// When it last wrote, in this table's apply clock.
    last_write: u64,
}

/// The committed batches of each known producer.
#[derive(Debug, Default)]
pub struct ProducerTable {
    producers: HashMap<u64, Producer>,
    /// `last_write` → producer id, oldest first.
    by_last_write: BTreeMap<u64, u64>,
    clock: u64,
}

impl ProducerTable {
    /// Notes a committed batch of `producer_id` (called in log order).
    pub fn record(&mut self, producer_id: u64, batch: WrittenBatch) {
        self.clock += 1;
        let clock = self.clock;
        let producer = self.producers.entry(producer_id).or_insert(Producer {
            batches: VecDeque::with_capacity(REMEMBERED_BATCHES),
            last_write: clock,
        });
        self.by_last_write.remove(&producer.last_write);
        producer.last_write = clock;
        self.by_last_write.insert(clock, producer_id);
        if producer.batches.len() == REMEMBERED_BATCHES {
            producer.batches.pop_front();
        }
        producer.batches.push_back(batch);
        while self.producers.len() > MAX_PRODUCERS {
            let Some((_, oldest)) = self.by_last_write.pop_first() else {
                break;
            };
            self.producers.remove(&oldest);
        }
    }

    /// The sequence number the producer's next batch must start at, if it is known.
    pub fn next_sequence(&self, producer_id: u64) -> Option<u64> {
        let producer = self.producers.get(&producer_id)?;
        producer.batches.back().map(WrittenBatch::next_sequence)
    }

    /// The committed batch of `producer_id` starting at `base_sequence`, if remembered.
    pub fn find(&self, producer_id: u64, base_sequence: u64) -> Option<WrittenBatch> {
        let producer = self.producers.get(&producer_id)?;
        producer
            .batches
            .iter()
            .find(|b| b.base_sequence == base_sequence)
            .copied()
    }

    /// Forgets everything (a snapshot from the leader replaces the state; the entries
    /// after it are applied again).
    pub fn clear(&mut self) {
        self.producers.clear();
        self.by_last_write.clear();
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base_sequence: u64, record_count: u32, base_offset: u64) -> WrittenBatch {
        WrittenBatch {
            base_sequence,
            record_count,
            base_offset,
        }
    }

    #[test]
    fn remembers_the_last_batches_of_each_producer() {
        let mut table = ProducerTable::default();
        assert_eq!(table.next_sequence(7), None);
        for i in 0..8u64 {
            table.record(7, batch(i * 10, 10, 100 + i * 10));
        }
        table.record(9, batch(0, 3, 500));
        assert_eq!(table.next_sequence(7), Some(80));
        assert_eq!(table.next_sequence(9), Some(3));
        // The last five batches of producer 7 are remembered, the older ones are not.
        assert_eq!(table.find(7, 70), Some(batch(70, 10, 170)));
        assert_eq!(table.find(7, 30), Some(batch(30, 10, 130)));
        assert_eq!(table.find(7, 20), None);
        assert_eq!(table.find(7, 35), None);
        assert_eq!(table.find(8, 0), None);
    }

    #[test]
    fn forgets_the_producer_that_wrote_least_recently() {
        let mut table = ProducerTable::default();
        for id in 1..=MAX_PRODUCERS as u64 {
            table.record(id, batch(0, 1, id));
        }
        // Producer 1 writes again: producer 2 is now the least recent.
        table.record(1, batch(1, 1, 0));
        table.record(u64::MAX, batch(0, 1, 0));
        assert_eq!(table.len(), MAX_PRODUCERS);
        assert_eq!(table.next_sequence(2), None);
        assert_eq!(table.next_sequence(1), Some(2));
        assert_eq!(table.next_sequence(3), Some(1));
        table.clear();
        assert!(table.is_empty());
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut table = ProducerTable::default();
        table.record(1, batch(u64::MAX - 1, 4, 0));
        assert_eq!(table.next_sequence(1), Some(2));
    }
}
