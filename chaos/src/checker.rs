//! Checks a finished run's history against what the cluster holds at the end.
//!
//! - every acknowledged record is present, exactly at its acknowledged offset;
//! - each partition's offsets are contiguous from 0, with no holes;
//! - no record appears that was never produced, or whose produce was refused;
//! - each consumer saw a gap-free, in-order prefix of each partition;
//! - duplicates are counted (asserted once producers are idempotent: `strict_duplicates`).
//!
//! Replica agreement is checked separately ([`crate::replicas`]), on the files.

use std::collections::{BTreeMap, HashMap};

use crate::history::{HistoryData, Outcome};

/// What the checker found; any non-empty `violations` fails the run.
#[derive(Debug, Default)]
pub struct Findings {
    pub acked: usize,
    pub failed: usize,
    pub unknown: usize,
    pub lost: usize,
    pub wrong_offset: usize,
    pub holes: usize,
    pub phantoms: usize,
    pub duplicates: usize,
    pub consumer_violations: usize,
    pub violations: Vec<String>,
}

impl Findings {
    fn violation(&mut self, message: String) {
        if self.violations.len() < 50 {
            self.violations.push(message);
        }
    }
}

/// `finals[p]` is partition `p` read from offset 0 to its end after the faults healed.
pub fn check(
    history: &HistoryData,
    finals: &[Vec<(u64, String)>],
    strict_duplicates: bool,
) -> Findings {
    let mut f = Findings::default();
    // Where each value ended up: (partition, offset) for every occurrence.
    let mut found: HashMap<&str, Vec<(u32, u64)>> = HashMap::new();
    for (partition, records) in finals.iter().enumerate() {
        for (i, (offset, value)) in records.iter().enumerate() {
            if *offset != i as u64 {
                f.holes += 1;
                f.violation(format!(
                    "partition {partition}: offset {offset} at position {i} (a hole or reordering)"
                ));
            }
            found
                .entry(value.as_str())
                .or_default()
                .push((partition as u32, *offset));
        }
    }
    let mut produced: HashMap<&str, &Outcome> = HashMap::new();
    for op in &history.produces {
        produced.insert(op.value.as_str(), &op.outcome);
        match &op.outcome {
            Outcome::Acked { offset } => {
                f.acked += 1;
                let at = finals
                    .get(op.partition as usize)
                    .and_then(|records| records.get(*offset as usize));
                match at {
                    Some((o, v)) if *o == *offset && *v == op.value => {}
                    _ => match found.get(op.value.as_str()) {
                        Some(places) => {
                            f.wrong_offset += 1;
                            f.violation(format!(
                                "{} acknowledged at {}/{offset} but found at {places:?}",
                                op.value, op.partition
                            ));
                        }
                        None => {
                            f.lost += 1;
                            f.violation(format!(
                                "{} acknowledged at {}/{offset} is lost",
                                op.value, op.partition
                            ));
                        }
                    },
                }
            }
            Outcome::Failed { .. } => f.failed += 1,
            Outcome::Unknown { .. } => f.unknown += 1,
        }
    }
    for (value, places) in &found {
        match produced.get(value) {
            None => {
                f.phantoms += 1;
                f.violation(format!("{value} at {places:?} was never produced"));
            }
            Some(Outcome::Failed { error }) => {
                f.phantoms += 1;
                f.violation(format!(
                    "{value} at {places:?} was refused ({error}) yet written"
                ));
            }
            Some(_) => {}
        }
        if places.len() > 1 {
            f.duplicates += places.len() - 1;
            if strict_duplicates {
                f.violation(format!(
                    "{value} written {} times: {places:?}",
                    places.len()
                ));
            }
        }
    }
    for view in &history.consumers {
        let Some(records) = finals.get(view.partition as usize) else {
            continue;
        };
        let prefix = records.get(..view.records.len());
        if prefix != Some(&view.records[..]) {
            f.consumer_violations += 1;
            let first_bad = view
                .records
                .iter()
                .zip(records)
                .position(|(a, b)| a != b)
                .unwrap_or(records.len());
            f.violation(format!(
                "consumer {} of partition {} read {} records that are not a prefix of the log (first difference at position {first_bad})",
                view.consumer,
                view.partition,
                view.records.len()
            ));
        }
    }
    f
}

/// Median of `values` (0 when empty).
pub fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// The longest time, in ms, during which a partition acknowledged no produce (while
/// the workload ran).
pub fn longest_unavailability(history: &HistoryData) -> u64 {
    let mut acks: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for op in &history.produces {
        if matches!(op.outcome, Outcome::Acked { .. }) {
            acks.entry(op.partition).or_default().push(op.end_ms);
        }
    }
    acks.values_mut()
        .map(|times| {
            times.sort_unstable();
            times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

/// Operations grouped by outcome name, for the summary.
pub fn outcome_counts(history: &HistoryData) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for op in &history.produces {
        let name = match op.outcome {
            Outcome::Acked { .. } => "acked",
            Outcome::Failed { .. } => "failed",
            Outcome::Unknown { .. } => "unknown",
        };
        *counts.entry(name).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{ConsumerView, ProduceOp};

    fn op(value: &str, partition: u32, outcome: Outcome) -> ProduceOp {
        ProduceOp {
            producer: 0,
            partition,
            value: value.into(),
            start_ms: 0,
            end_ms: 0,
            outcome,
        }
    }

    fn log(values: &[&str]) -> Vec<(u64, String)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u64, v.to_string()))
            .collect()
    }

    #[test]
    fn a_clean_history_passes_and_each_violation_is_caught() {
        let mut h = HistoryData::default();
        h.produces.push(op("a", 0, Outcome::Acked { offset: 0 }));
        h.produces.push(op(
            "b",
            0,
            Outcome::Unknown {
                error: "timeout".into(),
            },
        ));
        h.produces.push(op("c", 0, Outcome::Acked { offset: 2 }));
        h.consumers.push(ConsumerView {
            consumer: 0,
            partition: 0,
            records: log(&["a", "b"]),
            errors: 0,
        });
        let ok = check(&h, &[log(&["a", "b", "c"])], false);
        assert!(ok.violations.is_empty(), "{:?}", ok.violations);

        let lost = check(&h, &[log(&["a", "b"])], false);
        assert_eq!(lost.lost, 1);
        let moved = check(&h, &[log(&["a", "c", "b"])], false);
        assert_eq!(moved.wrong_offset, 1);
        let phantom = check(&h, &[log(&["a", "b", "c", "zzz"])], false);
        assert_eq!(phantom.phantoms, 1);
        let mut holes = log(&["a", "b", "c"]);
        holes[2].0 = 5;
        assert!(check(&h, &[holes], false).holes > 0);
        let dup = check(&h, &[log(&["a", "b", "c", "b"])], false);
        assert_eq!((dup.duplicates, dup.violations.len()), (1, 0));
        assert_eq!(
            check(&h, &[log(&["a", "b", "c", "b"])], true)
                .violations
                .len(),
            1
        );

        h.consumers.push(ConsumerView {
            consumer: 1,
            partition: 0,
            records: log(&["a", "c"]),
            errors: 0,
        });
        assert_eq!(
            check(&h, &[log(&["a", "b", "c"])], false).consumer_violations,
            1
        );
    }
}
