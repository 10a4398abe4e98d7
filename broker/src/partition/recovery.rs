//! A replica that lost entries it had acknowledged (a corrupt segment, cut when the log
//! was verified) must get them back from the leader before it takes part in elections
//! again: with a shorter log it could vote for, or become, a leader that lacks a
//! committed entry. This module decides at start-up whether a replica is in that state,
//! records it durably (a crash does not make the replica forget), keeps it out of
//! elections, and lets it back in once it has applied everything it had lost.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;

use super::types::{PartitionRaft, PartitionRaftConfig};
use crate::controller::topic_config::Flush;
use crate::storage::GroupMeta;
use crate::storage::partition_log::log::{LogRecovery, Verify};

type LogId = openraft::alias::LogIdOf<PartitionRaftConfig>;

/// Whether the replica is recovering lost entries: while it is, it stands for no
/// election and the transport refuses the vote requests and leadership transfers sent
/// to it. Clones share the state.
#[derive(Clone, Default)]
pub struct RecoveryGate {
    /// The Raft index the replica must hold again; 0 when it lost nothing.
    until: Arc<AtomicU64>,
}

impl RecoveryGate {
    pub fn refuses_votes(&self) -> bool {
        self.until.load(Ordering::Acquire) != 0
    }
}

/// Called by the log before it cuts anything ([`PartitionLog::open_with`]): when the
/// cut removes entries this replica had acknowledged, records (synced) the index it must
/// hold again before it votes. Acknowledged means:
/// - a sealed segment was damaged (sealed segments were synced when they rolled);
/// - the log is being verified because a read found corruption (bit rot, not a crash);
/// - valid entries followed the damage, so it was not a torn write at the end (with
///   `flush=sync`; with `flush=async` the tail may legitimately be lost in a crash).
///
/// [`PartitionLog::open_with`]: crate::storage::partition_log::log::PartitionLog::open_with
pub fn record_loss(
    meta: &GroupMeta,
    cut: &LogRecovery,
    verify: Verify,
    flush: Flush,
    voters: usize,
) -> io::Result<()> {
    let acknowledged = cut.sealed
        || verify == Verify::Everything
        || (flush == Flush::Sync && cut.lost_through.is_some());
    if !acknowledged {
        return Ok(());
    }
    if voters <= 1 {
        tracing::error!(
            segment = %cut.segment.display(),
            "acknowledged entries are lost and the partition has no other replica"
        );
        return Ok(());
    }
    let committed = meta.committed::<LogId>()?.map(|id| id.index);
    let beyond_kept = cut.kept_through.map_or(0, |k| k + 1);
    let until = cut
        .lost_through
        .max(committed)
        .unwrap_or(0)
        .max(beyond_kept);
    meta.raise_recover_until_blocking(until)
}

/// Opens the gate of a replica whose log already holds its recovery point (or that has
/// no other replica), and keeps it closed otherwise.
pub async fn assess(
    meta: &GroupMeta,
    log_last_index: Option<u64>,
    voters: usize,
) -> io::Result<RecoveryGate> {
    let gate = RecoveryGate::default();
    match meta.recover_until()? {
        Some(until) if log_last_index < Some(until) && voters > 1 => {
            gate.until.store(until.max(1), Ordering::Release);
        }
        Some(_) => meta.save_recover_until_and_sync(None).await?,
        None => {}
    }
    Ok(gate)
}

/// How long a follower must stay caught up with its leader's commit index before a
/// recovery point beyond that index is given up (see [`hold_elections_until_recovered`]).
const CAUGHT_UP_FOR: Duration = Duration::from_secs(5);

/// Lets `raft` (started with elections off, see `raft::partition_config`) back into
/// elections once it holds again everything its lost acknowledgements may have helped
/// commit:
/// - it has applied every entry up to the recovery point; or
/// - it has followed a leader for [`CAUGHT_UP_FOR`] with every entry that leader reports
///   committed applied. Lost entries beyond that were never committed (a new leader
///   dropped them), and once the leader reset this follower's progress — on its first
///   append after the restart — commits no longer count the lost acknowledgements. So
///   an idle partition does not keep the replica out of elections forever.
pub fn hold_elections_until_recovered(
    raft: &PartitionRaft,
    gate: &RecoveryGate,
    meta: GroupMeta,
) -> Option<tokio::task::JoinHandle<()>> {
    let until = gate.until.load(Ordering::Acquire);
    if until == 0 {
        return None;
    }
    let raft = raft.clone();
    let gate = gate.clone();
    Some(tokio::spawn(async move {
        let mut metrics = raft.metrics();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut caught_up_since: Option<Instant> = None;
        loop {
            let (applied, caught_up) = {
                let m = metrics.borrow_watched();
                let applied = m.last_applied.as_ref().map(|id| id.index);
                let cluster_committed = m.cluster_committed.as_ref().map(|id| id.index);
                let following = m.state == ServerState::Follower && m.current_leader.is_some();
                (
                    applied,
                    following && cluster_committed.is_some() && applied >= cluster_committed,
                )
            };
            if applied >= Some(until) {
                break;
            }
            caught_up_since = caught_up.then(|| caught_up_since.unwrap_or_else(Instant::now));
            if caught_up_since.is_some_and(|since| since.elapsed() >= CAUGHT_UP_FOR) {
                tracing::info!(
                    until,
                    ?applied,
                    "the leader never committed the rest of the lost entries"
                );
                break;
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() {
                    return; // the group stopped; the next start decides again
                },
                _ = tick.tick() => {}
            }
        }
        if let Err(err) = meta.save_recover_until_and_sync(None).await {
            tracing::error!(%err, "cannot record the end of a recovery; it resumes on restart");
            return;
        }
        gate.until.store(0, Ordering::Release);
        raft.runtime_config().elect(true);
        tracing::info!(until, "replica holds its lost entries again and may vote");
    }))
}
