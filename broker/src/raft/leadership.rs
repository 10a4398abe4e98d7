//! Moving a group's leadership on purpose: before a clean shutdown, and back to a
//! partition's preferred replica.

use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::storage::RaftStateMachine;
use openraft::{Raft, RaftTypeConfig, ServerState};

/// Asks `raft` (if it leads) to hand leadership to `to`, then waits up to `timeout`
/// for it to step down. Returns whether it no longer leads.
pub async fn transfer_leadership<C, SM>(
    raft: &Raft<C, SM>,
    to: C::NodeId,
    timeout: Duration,
) -> bool
where
    C: RaftTypeConfig,
    SM: RaftStateMachine<C>,
{
    if raft.metrics().borrow_watched().state != ServerState::Leader {
        return true;
    }
    if raft.trigger().transfer_leader(to).await.is_err() {
        return false;
    }
    let mut metrics = raft.metrics();
    tokio::time::timeout(timeout, async {
        loop {
            if metrics.borrow_watched().state != ServerState::Leader {
                return;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    })
    .await
    .is_ok()
}
