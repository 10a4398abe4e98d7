//! A replica that lost entries it had acknowledged (a corrupt segment, cut when the log
//! was verified) must get them back from the leader before it takes part in elections
//! again: with a shorter log it could vote for, or become, a leader that lacks a
//! committed entry. This module decides at start-up whether a replica is in that state,
//! records it durably (a crash does not make the replica forget), keeps it out of
//! elections, and lets it back in once it has applied everything it had lost.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::async_runtime::watch::WatchReceiver;

use super::types::PartitionRaft;
use crate::storage::GroupMeta;

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

/// What start-up knows about lost entries.
#[derive(Debug, Default, Clone, Copy)]
pub struct Losses {
    /// The last Raft index the log still holds.
    pub log_last_index: Option<u64>,
    /// The largest index known to have been durable here and now gone: the end of the
    /// dropped segments, or the committed index the log no longer reaches.
    pub lost_through: Option<u64>,
    /// Voters in the group: with no other replica there is nothing to recover from.
    pub voters: usize,
}

/// Decides whether the replica must recover before voting, from this start's `losses`
/// and a recovery left unfinished by an earlier run, and records the decision.
pub async fn assess(meta: &GroupMeta, losses: Losses) -> io::Result<RecoveryGate> {
    let stored = meta.recover_until()?;
    let until = stored.max(losses.lost_through);
    let gate = RecoveryGate::default();
    match until {
        Some(until) if losses.log_last_index < Some(until) && losses.voters > 1 => {
            meta.save_recover_until_and_sync(Some(until)).await?;
            gate.until.store(until.max(1), Ordering::Release);
        }
        Some(until) if losses.log_last_index < Some(until) => {
            tracing::error!(
                until,
                "entries up to this index are lost and the partition has no other replica"
            );
            meta.save_recover_until_and_sync(None).await?;
        }
        _ if stored.is_some() => meta.save_recover_until_and_sync(None).await?,
        _ => {}
    }
    Ok(gate)
}

/// Lets `raft` (started with elections off, see `raft::partition_config`) back into
/// elections once the replica has applied every entry up to the recovery point, so
/// that its log holds them again.
pub fn hold_elections_until_recovered(raft: &PartitionRaft, gate: &RecoveryGate, meta: GroupMeta) {
    let until = gate.until.load(Ordering::Acquire);
    if until == 0 {
        return;
    }
    let raft = raft.clone();
    let gate = gate.clone();
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        loop {
            let applied = metrics
                .borrow_watched()
                .last_applied
                .as_ref()
                .map(|id| id.index);
            if applied >= Some(until) {
                break;
            }
            if metrics.changed().await.is_err() {
                return; // the group stopped; the next start decides again
            }
        }
        if let Err(err) = meta.save_recover_until_and_sync(None).await {
            tracing::error!(%err, "cannot record the end of a recovery; it resumes on restart");
            return;
        }
        gate.until.store(0, Ordering::Release);
        raft.runtime_config().elect(true);
        tracing::info!(until, "replica holds its lost entries again and may vote");
    });
}
