//! The leader's admission of idempotent batches. A batch from producer `p` starting at
//! sequence number `s` is written only if `s` is the next sequence `p` has in this
//! partition: after its last committed batch (`partition::producers`) and after its
//! batches this leader has in flight. A retry of a committed batch gets that batch's
//! first offset back instead of a second copy; a batch that arrives before its
//! predecessor (requests on separate HTTP/2 streams may overtake each other) waits a
//! moment for it. Admission and the hand-over to Raft happen under one lock, so batches
//! enter the log in the order they were admitted.
//!
//! A producer the partition does not know must start at sequence 0; one it forgot
//! (`partition::producers` bounds the table) is refused until it starts over with a
//! new producer id.
//!
//! A new leader first makes sure it has applied everything its predecessors committed
//! (once per term), so the producer table it checks against is complete.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{MutexGuard, Notify};

use super::producers::ProducerTable;
use super::types::ProducerStamp;

/// How long a batch that arrived before its predecessor waits for it.
pub const GAP_WAIT: Duration = Duration::from_millis(250);

/// A batch of this leader on its way through Raft.
#[derive(Debug, Clone, Copy)]
struct Pending {
    term: u64,
    base_sequence: u64,
    record_count: u32,
}

#[derive(Debug, Default)]
struct InFlight {
    by_producer: HashMap<u64, VecDeque<Pending>>,
}

/// What admission decided about a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Committed before, at this first offset.
    Written { base_offset: u64 },
    /// Not admitted; retry (the text says why).
    OutOfSequence(String),
}

/// One partition leader's idempotent-batch admission.
#[derive(Debug, Default)]
pub struct Sequencer {
    in_flight: tokio::sync::Mutex<InFlight>,
    changed: Notify,
    /// The term in which this replica, as leader, has applied everything committed
    /// before it (0: none yet).
    caught_up_term: AtomicU64,
}

/// The right to hand an admitted batch to Raft: admission stays locked until it is
/// dropped, so that the next batch cannot overtake this one.
pub struct Ticket<'a> {
    sequencer: &'a Sequencer,
    guard: MutexGuard<'a, InFlight>,
    producer_id: u64,
    pending: Pending,
}

impl Ticket<'_> {
    /// Notes the batch as in flight (call once it is handed to Raft).
    pub fn submitted(mut self) {
        let (producer_id, pending) = (self.producer_id, self.pending);
        self.guard
            .by_producer
            .entry(producer_id)
            .or_default()
            .push_back(pending);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.sequencer.changed.notify_waiters();
    }
}

/// Admission's answer: a ticket for the next batch, or what else to answer.
pub enum Admission<'a> {
    Write(Ticket<'a>),
    Answer(Verdict),
}

impl Sequencer {
    /// Whether this replica has caught up as leader of `term` (see [`Self::caught_up`]).
    pub fn is_caught_up(&self, term: u64) -> bool {
        self.caught_up_term.load(Ordering::Acquire) == term
    }

    /// Notes that, as leader of `term`, everything committed before has been applied.
    pub fn caught_up(&self, term: u64) {
        self.caught_up_term.fetch_max(term, Ordering::AcqRel);
    }

    /// Admits the batch `stamp` of `record_count` records for the leader of `term`,
    /// waiting up to [`GAP_WAIT`] for a predecessor that has not arrived yet.
    pub async fn admit(
        &self,
        table: &Mutex<ProducerTable>,
        stamp: ProducerStamp,
        record_count: u32,
        term: u64,
    ) -> Admission<'_> {
        let deadline = tokio::time::Instant::now() + GAP_WAIT;
        loop {
            let mut guard = self.in_flight.lock().await;
            let pending = guard.by_producer.entry(stamp.producer_id).or_default();
            // Batches of an earlier term have been answered or will be; their entries,
            // if committed, are in the table.
            pending.retain(|p| p.term == term);
            let verdict = {
                let table = table.lock().unwrap_or_else(|e| e.into_inner());
                let judged = judge(&table, pending, stamp, record_count);
                if judged != Judged::Next {
                    tracing::debug!(
                        ?judged,
                        ?stamp,
                        record_count,
                        term,
                        "idempotent batch not admitted"
                    );
                }
                judged
            };
            if pending.is_empty() {
                guard.by_producer.remove(&stamp.producer_id);
            }
            match verdict {
                Judged::Next => {
                    return Admission::Write(Ticket {
                        sequencer: self,
                        guard,
                        producer_id: stamp.producer_id,
                        pending: Pending {
                            term,
                            base_sequence: stamp.base_sequence,
                            record_count,
                        },
                    });
                }
                Judged::Early { .. } if tokio::time::Instant::now() < deadline => {
                    let notified = self.changed.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    drop(guard);
                    let _ = tokio::time::timeout_at(deadline, notified).await;
                }
                Judged::Early { expected } => {
                    return Admission::Answer(Verdict::OutOfSequence(format!(
                        "producer {} sent sequence {} but {expected} is next in this partition",
                        stamp.producer_id, stamp.base_sequence
                    )));
                }
                Judged::Written { base_offset } => {
                    return Admission::Answer(Verdict::Written { base_offset });
                }
                Judged::InFlight => {
                    return Admission::Answer(Verdict::OutOfSequence(format!(
                        "batch {} of producer {} is still being written",
                        stamp.base_sequence, stamp.producer_id
                    )));
                }
                Judged::Behind { expected } => {
                    return Admission::Answer(Verdict::OutOfSequence(format!(
                        "producer {} sent sequence {}, which is neither the next ({expected}) nor one of its last batches here",
                        stamp.producer_id, stamp.base_sequence
                    )));
                }
            }
        }
    }

    /// The batch `stamp` of the leader of `term` was answered by Raft (committed or not).
    pub async fn finished(&self, stamp: ProducerStamp, term: u64) {
        let mut guard = self.in_flight.lock().await;
        if let Some(pending) = guard.by_producer.get_mut(&stamp.producer_id) {
            pending.retain(|p| !(p.term == term && p.base_sequence == stamp.base_sequence));
            if pending.is_empty() {
                guard.by_producer.remove(&stamp.producer_id);
            }
        }
        drop(guard);
        self.changed.notify_waiters();
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Judged {
    Next,
    Written {
        base_offset: u64,
    },
    InFlight,
    /// Starts after the next expected sequence: a predecessor is missing.
    Early {
        expected: u64,
    },
    /// Starts before the next expected sequence, and is not remembered.
    Behind {
        expected: u64,
    },
}

fn judge(
    table: &ProducerTable,
    pending: &VecDeque<Pending>,
    stamp: ProducerStamp,
    record_count: u32,
) -> Judged {
    if let Some(written) = table.find(stamp.producer_id, stamp.base_sequence)
        && written.record_count == record_count
    {
        return Judged::Written {
            base_offset: written.base_offset,
        };
    }
    if pending
        .iter()
        .any(|p| p.base_sequence == stamp.base_sequence)
    {
        return Judged::InFlight;
    }
    // A producer this partition does not know starts at 0. (A producer it forgot gets
    // OUT_OF_SEQUENCE: admitting it anywhere would also admit the successors of a
    // first batch that is still on its way.)
    let expected = pending
        .back()
        .map(|p| p.base_sequence.wrapping_add(u64::from(p.record_count)))
        .or_else(|| table.next_sequence(stamp.producer_id))
        .unwrap_or(0);
    if expected == stamp.base_sequence {
        Judged::Next
    } else if (stamp.base_sequence.wrapping_sub(expected) as i64) > 0 {
        // Sequence numbers wrap: "after" means less than half the space ahead.
        Judged::Early { expected }
    } else {
        Judged::Behind { expected }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::producers::WrittenBatch;

    fn stamp(base_sequence: u64) -> ProducerStamp {
        ProducerStamp {
            producer_id: 7,
            base_sequence,
        }
    }

    fn table_with(batches: &[(u64, u32, u64)]) -> Mutex<ProducerTable> {
        let mut table = ProducerTable::default();
        for &(base_sequence, record_count, base_offset) in batches {
            table.record(
                7,
                WrittenBatch {
                    base_sequence,
                    record_count,
                    base_offset,
                },
            );
        }
        Mutex::new(table)
    }

    /// Admitted (`None`, and noted as in flight) or the answer.
    async fn answer(
        s: &Sequencer,
        table: &Mutex<ProducerTable>,
        seq: u64,
        n: u32,
    ) -> Option<Verdict> {
        match s.admit(table, stamp(seq), n, 1).await {
            Admission::Write(ticket) => {
                ticket.submitted();
                None
            }
            Admission::Answer(verdict) => Some(verdict),
        }
    }

    #[tokio::test]
    async fn admits_in_order_and_recognises_retries() {
        let s = Sequencer::default();
        let table = table_with(&[(0, 10, 100), (10, 5, 110)]);
        // A retry of a committed batch gets its offset back.
        assert_eq!(
            answer(&s, &table, 10, 5).await,
            Some(Verdict::Written { base_offset: 110 })
        );
        // The next batch is admitted; while in flight, a retry of it is refused, and
        // the batch after it is admitted.
        assert_eq!(answer(&s, &table, 15, 3).await, None);
        assert!(matches!(
            answer(&s, &table, 15, 3).await,
            Some(Verdict::OutOfSequence(_))
        ));
        assert_eq!(answer(&s, &table, 18, 2).await, None);
        // Behind the expected sequence and not remembered.
        assert!(matches!(
            answer(&s, &table, 5, 5).await,
            Some(Verdict::OutOfSequence(_))
        ));
        // Once answered by Raft (say, not committed), the batch may be written again.
        s.finished(stamp(18), 1).await;
        s.finished(stamp(15), 1).await;
        assert_eq!(answer(&s, &table, 15, 3).await, None);
    }

    #[tokio::test]
    async fn an_early_batch_waits_for_its_predecessor() {
        let s = std::sync::Arc::new(Sequencer::default());
        let table = std::sync::Arc::new(table_with(&[(0, 10, 100)]));
        let early = {
            let (s, table) = (s.clone(), table.clone());
            tokio::spawn(async move { answer(&s, &table, 12, 1).await })
        };
        // Give the early batch a chance to start waiting, then admit its predecessor.
        tokio::task::yield_now().await;
        assert_eq!(answer(&s, &table, 10, 2).await, None);
        assert_eq!(early.await.expect("joins"), None);
        // With no predecessor coming, an early batch is refused after GAP_WAIT.
        assert!(matches!(
            answer(&s, &table, 40, 1).await,
            Some(Verdict::OutOfSequence(_))
        ));
    }

    #[tokio::test]
    async fn batches_of_an_earlier_term_do_not_count() {
        let s = Sequencer::default();
        let table = table_with(&[(0, 10, 100)]);
        assert_eq!(answer(&s, &table, 10, 5).await, None);
        // A new term: the batch at 10 was never committed; its retry is admitted.
        match s.admit(&table, stamp(10), 5, 2).await {
            Admission::Write(_) => {}
            Admission::Answer(verdict) => panic!("expected admission, got {verdict:?}"),
        }
        assert!(!s.is_caught_up(2));
        s.caught_up(2);
        assert!(s.is_caught_up(2));
    }

    #[tokio::test]
    async fn an_unknown_producer_starts_at_zero() {
        let s = Sequencer::default();
        let table = Mutex::new(ProducerTable::default());
        assert!(matches!(
            answer(&s, &table, 500, 1).await,
            Some(Verdict::OutOfSequence(_))
        ));
        assert_eq!(answer(&s, &table, 0, 1).await, None);
        assert_eq!(answer(&s, &table, 1, 1).await, None);
    }
}
