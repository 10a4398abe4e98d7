//! Forms the controller group on a fresh cluster without a manual step.
//!
//! Each seed asks every other seed for its broker id (`Identify`). Once it knows all of
//! them it initializes the group with that full membership. Every seed computes the same
//! membership, and openraft accepts an initialization only on a pristine node, so
//! concurrent initializations agree; restarts find the group initialized and skip this.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::BasicNode;
use strait_proto::internal::IdentifyRequest;
use strait_proto::internal::controller_client::ControllerClient;

use super::ControllerRaft;
use crate::raft::PeerPool;

pub async fn form_controller_group(
    raft: ControllerRaft,
    broker_id: u64,
    advertise: String,
    seeds: Vec<String>,
    peers: PeerPool,
) {
    loop {
        match raft.is_initialized().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(err) => {
                tracing::error!(%err, "controller group stopped during bootstrap");
                return;
            }
        }
        let mut members = BTreeMap::new();
        for seed in &seeds {
            if *seed == advertise {
                members.insert(broker_id, BasicNode { addr: seed.clone() });
                continue;
            }
            match identify(&peers, seed).await {
                Ok(id) if id == broker_id => {
                    tracing::error!(%seed, id, "another seed uses this broker's id; fix --id");
                }
                Ok(id) => {
                    members.insert(id, BasicNode { addr: seed.clone() });
                }
                Err(err) => tracing::debug!(%seed, %err, "seed not reachable yet"),
            }
        }
        if members.len() == seeds.len() {
            tracing::info!(?members, "initializing the controller group");
            match raft.initialize(members).await {
                Ok(()) => return,
                Err(err) => tracing::debug!(%err, "controller group already initialized"),
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn identify(peers: &PeerPool, addr: &str) -> Result<u64, String> {
    let channel = peers.channel(addr).map_err(|e| e.to_string())?;
    let mut client = ControllerClient::new(channel);
    let mut request = tonic::Request::new(IdentifyRequest {});
    request.set_timeout(Duration::from_secs(1));
    client
        .identify(request)
        .await
        .map(|r| r.into_inner().broker_id)
        .map_err(|s| s.message().to_string())
}
