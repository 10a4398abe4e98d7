//! The controller: the metadata Raft group (group 0) run by the seed brokers, and the
//! calls every broker makes to it.
//!
//! - [`state`]: the replicated metadata and its deterministic `apply`;
//! - [`state_machine`]: the openraft adapter around it, with snapshots;
//! - [`placement`]: where new partitions go;
//! - [`topic_config`]: the configs a topic accepts and their defaults;
//! - [`admin`]: validation of topic requests before they are proposed;
//! - [`bootstrap`]: seeds find each other and form the group without a manual step;
//! - [`liveness`]: the leader's view of broker sessions, fencing silent brokers;
//! - [`heartbeat`]: every broker's registration and heartbeat loop.

pub mod admin;
pub mod bootstrap;
pub mod heartbeat;
pub mod liveness;
pub mod placement;
pub mod state;
pub mod state_machine;
pub mod topic_config;
pub mod types;

use std::time::{Duration, Instant};

use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use strait_proto::internal::ProposeRequest;
use strait_proto::internal::controller_client::ControllerClient;

use crate::error::{BrokerError, LeaderHint};
use crate::metadata::MetadataCache;
use crate::raft::PeerPool;
use crate::storage::{decode, encode};
use state::{ControllerCommand, ControllerReply};
pub use types::ControllerRaft;

/// How long a proposal keeps looking for a controller before giving up.
const PROPOSE_DEADLINE: Duration = Duration::from_secs(15);

/// This broker's handle on the controller: the local group when this broker is a
/// controller voter, and forwarding to the controller leader otherwise.
#[derive(Clone)]
pub struct Controller {
    pub(crate) broker_id: u64,
    pub(crate) raft: Option<ControllerRaft>,
    pub(crate) cache: MetadataCache,
    pub(crate) peers: PeerPool,
    pub(crate) seeds: Vec<String>,
}

impl Controller {
    pub fn new(
        broker_id: u64,
        raft: Option<ControllerRaft>,
        cache: MetadataCache,
        peers: PeerPool,
        seeds: Vec<String>,
    ) -> Self {
        Controller {
            broker_id,
            raft,
            cache,
            peers,
            seeds,
        }
    }

    /// The controller leader's id as far as this broker knows.
    pub fn controller_id(&self) -> Option<u64> {
        match &self.raft {
            Some(raft) => raft.metrics().borrow_watched().current_leader,
            None => self.cache.controller(),
        }
    }

    fn leader_addr(&self, id: u64) -> Option<String> {
        if let Some(raft) = &self.raft {
            let metrics = raft.metrics().borrow_watched().clone();
            if let Some(node) = metrics.membership_config.membership().get_node(&id) {
                return Some(node.addr.clone());
            }
        }
        self.cache.broker_addr(id)
    }

    pub(crate) fn hint(&self) -> Option<LeaderHint> {
        self.controller_id().map(|id| LeaderHint {
            id,
            addr: self.leader_addr(id),
        })
    }

    /// If this broker leads the controller group, hands leadership to another voter.
    pub async fn hand_off_leadership(&self, timeout: Duration) {
        let Some(raft) = &self.raft else { return };
        let image = self.cache.image();
        let target = raft.voter_ids().find(|id| {
            *id != self.broker_id && image.state.brokers.get(id).is_some_and(|b| b.alive)
        });
        if let Some(target) = target
            && !crate::raft::transfer_leadership(raft, target, timeout).await
        {
            tracing::warn!(target, "controller leadership hand-off timed out");
        }
    }

    /// Applies `command` through the local group; only succeeds on the controller leader.
    pub async fn propose_local(
        &self,
        command: ControllerCommand,
    ) -> Result<ControllerReply, BrokerError> {
        let Some(raft) = &self.raft else {
            return Err(BrokerError::NotController {
                leader: self.hint(),
            });
        };
        match raft.client_write(command).await {
            Ok(response) => Ok(response.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(BrokerError::NotController {
                    leader: forward.leader_id.map(|id| LeaderHint {
                        id,
                        addr: forward
                            .leader_node
                            .map(|n| n.addr)
                            .or_else(|| self.leader_addr(id)),
                    }),
                })
            }
            Err(RaftError::APIError(other)) => Err(BrokerError::Unavailable(format!(
                "controller leadership changed during the write: {other}"
            ))),
            Err(RaftError::Fatal(fatal)) => Err(BrokerError::Unavailable(format!(
                "controller group stopped: {fatal}"
            ))),
        }
    }

    /// Applies `command` on the controller leader, wherever it is, following leader hints.
    pub async fn propose(
        &self,
        command: ControllerCommand,
    ) -> Result<ControllerReply, BrokerError> {
        let deadline = Instant::now() + PROPOSE_DEADLINE;
        let mut target: Option<String> = None;
        let mut seed_cursor = 0usize;
        let mut last_error = String::from("no controller known yet");
        while Instant::now() < deadline {
            if target.is_none() {
                match self.propose_local(command.clone()).await {
                    Ok(reply) => return Ok(reply),
                    Err(BrokerError::NotController { leader }) => {
                        target =
                            leader.and_then(|h| if h.id == self.broker_id { None } else { h.addr });
                    }
                    Err(err) => last_error = err.to_string(),
                }
            }
            let addr = match target.take() {
                Some(addr) => addr,
                None => {
                    let Some(seed) = self.seeds.get(seed_cursor % self.seeds.len().max(1)) else {
                        break;
                    };
                    seed_cursor += 1;
                    seed.clone()
                }
            };
            match self.forward(&addr, &command).await {
                Ok(reply) => return Ok(reply),
                Err(BrokerError::NotController { leader }) => {
                    target = leader.and_then(|h| h.addr);
                    if target.as_deref() == Some(addr.as_str()) {
                        target = None;
                    }
                    last_error = format!("{addr} is not the controller");
                }
                Err(err) => last_error = err.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(BrokerError::Unavailable(format!(
            "no controller reachable: {last_error}"
        )))
    }

    async fn forward(
        &self,
        addr: &str,
        command: &ControllerCommand,
    ) -> Result<ControllerReply, BrokerError> {
        let channel = self
            .peers
            .channel(addr)
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let mut client = ControllerClient::new(channel);
        let mut request = tonic::Request::new(ProposeRequest {
            command: encode(command)?.into(),
        });
        request.set_timeout(Duration::from_secs(10));
        match client.propose(request).await {
            Ok(reply) => Ok(decode(&reply.into_inner().reply)?),
            Err(status) => Err(crate::service::status::to_broker_error(&status)),
        }
    }
}
