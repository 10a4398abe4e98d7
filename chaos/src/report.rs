//! The summary a run prints: operations by outcome, faults by kind with their recovery
//! times, every check's count, and what to do with a failure.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::checker::{self, Findings};
use crate::history::HistoryData;
use crate::run::RunConfig;

pub struct Report {
    pub seed: u64,
    pub faults_arg: String,
    pub elapsed: Duration,
    pub outcomes: BTreeMap<&'static str, usize>,
    /// Records the consumers read while the faults went on.
    pub consumed: usize,
    /// kind → (count, median ms to recover, max ms to recover, never recovered).
    pub faults: BTreeMap<String, (usize, u64, u64, usize)>,
    pub lost: usize,
    pub wrong_offset: usize,
    pub holes: usize,
    pub phantoms: usize,
    pub duplicates: usize,
    pub strict_duplicates: bool,
    pub consumer_violations: usize,
    pub groups_compared: usize,
    pub divergent: usize,
    pub longest_unavailability_ms: u64,
    /// From the final heal until every replica was in sync again.
    pub full_recovery_ms: u64,
    /// Fault kinds that could not run here, and why.
    pub skipped: Vec<String>,
    pub violations: Vec<String>,
    /// Where the history and the brokers' data and logs were kept (on failure).
    pub kept: Option<PathBuf>,
}

impl Report {
    pub fn new(
        config: &RunConfig,
        history: &HistoryData,
        findings: &Findings,
        groups_compared: usize,
        divergent: usize,
        elapsed: Duration,
    ) -> Report {
        let mut recoveries: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut never: BTreeMap<String, usize> = BTreeMap::new();
        for fault in &history.faults {
            match fault.recovered_ms {
                Some(at) => recoveries
                    .entry(fault.kind.clone())
                    .or_default()
                    .push(at.saturating_sub(fault.healed_ms)),
                None => *never.entry(fault.kind.clone()).or_default() += 1,
            }
        }
        let mut faults = BTreeMap::new();
        for fault in &history.faults {
            let times = recoveries.entry(fault.kind.clone()).or_default();
            let max = times.iter().copied().max().unwrap_or(0);
            let count = times.len() + never.get(&fault.kind).copied().unwrap_or(0);
            faults.insert(
                fault.kind.clone(),
                (
                    count,
                    checker::median(times),
                    max,
                    never.get(&fault.kind).copied().unwrap_or(0),
                ),
            );
        }
        Report {
            seed: config.seed,
            faults_arg: config
                .faults
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(","),
            elapsed,
            outcomes: checker::outcome_counts(history),
            consumed: history.consumers.iter().map(|c| c.records.len()).sum(),
            faults,
            lost: findings.lost,
            wrong_offset: findings.wrong_offset,
            holes: findings.holes,
            phantoms: findings.phantoms,
            duplicates: findings.duplicates,
            strict_duplicates: config.strict_duplicates,
            consumer_violations: findings.consumer_violations,
            groups_compared,
            divergent,
            longest_unavailability_ms: checker::longest_unavailability(history),
            full_recovery_ms: 0,
            skipped: Vec::new(),
            violations: findings.violations.clone(),
            kept: None,
        }
    }

    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "strait-chaos: seed {}, {:.0?}", self.seed, self.elapsed)?;
        writeln!(f, "operations")?;
        for (outcome, count) in &self.outcomes {
            writeln!(f, "  {outcome:<10} {count:>8}")?;
        }
        writeln!(
            f,
            "  consumed   {:>8}  (records read by the consumers)",
            self.consumed
        )?;
        writeln!(
            f,
            "faults                 count  recover p50  recover max  never"
        )?;
        for (kind, (count, median, max, never)) in &self.faults {
            writeln!(
                f,
                "  {kind:<18} {count:>7} {median:>9} ms {max:>9} ms {never:>6}"
            )?;
        }
        for skipped in &self.skipped {
            writeln!(f, "  skipped: {skipped}")?;
        }
        writeln!(f, "checks")?;
        writeln!(f, "  acknowledged records lost   {:>6}", self.lost)?;
        writeln!(f, "  acknowledged, wrong offset  {:>6}", self.wrong_offset)?;
        writeln!(f, "  offset holes                {:>6}", self.holes)?;
        writeln!(f, "  never-produced records      {:>6}", self.phantoms)?;
        writeln!(
            f,
            "  duplicates                  {:>6}  ({})",
            self.duplicates,
            if self.strict_duplicates {
                "asserted"
            } else {
                "counted: producers are not idempotent yet"
            }
        )?;
        writeln!(
            f,
            "  consumer prefix violations  {:>6}",
            self.consumer_violations
        )?;
        writeln!(
            f,
            "  divergent replicas          {:>6}  ({} groups compared)",
            self.divergent, self.groups_compared
        )?;
        writeln!(
            f,
            "  longest unavailability      {:>6} ms",
            self.longest_unavailability_ms
        )?;
        writeln!(
            f,
            "  all replicas in sync after  {:>6} ms  (from the final heal)",
            self.full_recovery_ms
        )?;
        if self.passed() {
            if let Some(kept) = &self.kept {
                writeln!(f, "history and broker logs kept in {}", kept.display())?;
            }
            writeln!(f, "PASS")
        } else {
            writeln!(f, "FAIL: {} violation(s)", self.violations.len())?;
            for v in &self.violations {
                writeln!(f, "  - {v}")?;
            }
            if let Some(kept) = &self.kept {
                writeln!(f, "history and broker logs kept in {}", kept.display())?;
            }
            writeln!(
                f,
                "replay: strait-chaos --seed {} --faults {}",
                self.seed, self.faults_arg
            )
        }
    }
}
