//! Broker sessions, kept by the controller leader: every heartbeat renews a session
//! (registering the broker if it is new, was fenced or moved), and a broker silent for
//! longer than the session timeout is fenced (marked down) through the Raft log.
//!
//! Sessions are soft state of the current leader; a new leader grants every broker a
//! full session from the moment it took over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;
use tokio::sync::watch;

use super::Controller;
use super::state::{ControllerCommand, LeaderUpdate};
use crate::error::BrokerError;
use crate::metadata::ClusterImage;

/// One heartbeat, as received from a broker.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub broker_id: u64,
    pub addr: String,
    pub roles: Vec<String>,
    pub rack: String,
    pub leaders: Vec<LeaderUpdate>,
    pub metadata_version: u64,
    pub want_metadata: bool,
}

/// What the controller answers.
#[derive(Debug, Clone)]
pub struct HeartbeatReply {
    pub controller_id: u64,
    pub image: Option<Arc<ClusterImage>>,
}

#[derive(Default)]
pub struct Liveness {
    last_seen: Mutex<HashMap<u64, Instant>>,
}

impl Liveness {
    fn record(&self, id: u64) {
        self.last_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Instant::now());
    }

    fn last_seen(&self, id: u64) -> Option<Instant> {
        self.last_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .copied()
    }
}

/// Handles a heartbeat on the controller leader.
pub async fn handle_heartbeat(
    controller: &Controller,
    liveness: &Liveness,
    beat: Heartbeat,
) -> Result<HeartbeatReply, BrokerError> {
    let Some(raft) = &controller.raft else {
        return Err(BrokerError::NotController {
            leader: controller.hint(),
        });
    };
    // A leader cut off from its quorum still believes it leads for a while; a lease
    // check keeps it from renewing sessions it can no longer vouch for.
    if raft
        .ensure_linearizable(openraft::raft::ReadPolicy::LeaseRead)
        .await
        .is_err()
    {
        return Err(BrokerError::NotController {
            leader: controller.hint(),
        });
    }
    liveness.record(beat.broker_id);
    let image = controller.cache.image();
    let registered = image.state.brokers.get(&beat.broker_id);
    let needs_registration = registered.is_none_or(|b| {
        !b.alive || b.addr != beat.addr || b.roles != beat.roles || b.rack != beat.rack
    });
    if needs_registration {
        tracing::info!(broker = beat.broker_id, addr = %beat.addr, "registering broker");
        controller
            .propose_local(ControllerCommand::RegisterBroker {
                id: beat.broker_id,
                addr: beat.addr.clone(),
                roles: beat.roles.clone(),
                rack: beat.rack.clone(),
            })
            .await?;
    }
    let updates: Vec<LeaderUpdate> = beat
        .leaders
        .into_iter()
        .filter(|u| image.state.leader_update_is_news(u))
        .collect();
    if !updates.is_empty() {
        controller
            .propose_local(ControllerCommand::UpdateLeaders { updates })
            .await?;
    }
    let image = controller.cache.image();
    Ok(HeartbeatReply {
        controller_id: controller.broker_id,
        image: (beat.want_metadata && image.version > beat.metadata_version).then_some(image),
    })
}

/// On the controller leader, fences brokers whose session expired; idle elsewhere.
pub async fn run_fencer(
    controller: Controller,
    liveness: Arc<Liveness>,
    session_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(raft) = controller.raft.clone() else {
        return;
    };
    let mut leader_since: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let is_leader = raft.metrics().borrow_watched().state == ServerState::Leader;
        if !is_leader {
            leader_since = None;
            continue;
        }
        let since = *leader_since.get_or_insert_with(Instant::now);
        let now = Instant::now();
        let expired: Vec<u64> = controller
            .cache
            .image()
            .state
            .brokers
            .values()
            .filter(|b| b.alive)
            .filter(|b| {
                let seen = liveness.last_seen(b.id).map_or(since, |t| t.max(since));
                now.duration_since(seen) > session_timeout
            })
            .map(|b| b.id)
            .collect();
        if !expired.is_empty() {
            tracing::warn!(?expired, "broker sessions expired; fencing");
            if let Err(err) = controller
                .propose_local(ControllerCommand::FenceBrokers { ids: expired })
                .await
            {
                tracing::warn!(%err, "could not fence expired brokers");
            }
        }
    }
}
