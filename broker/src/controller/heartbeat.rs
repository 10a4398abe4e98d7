//! Every broker's side of discovery: heartbeat the controller leader, which registers
//! this broker, renews its session, records the partitions it leads and sends back newer
//! metadata (brokers that are not controller voters have no other source of it). A
//! heartbeat goes every interval, and at once when a local replica becomes leader.

use std::sync::Arc;
use std::time::Duration;

use strait_proto::internal::controller_client::ControllerClient;
use strait_proto::internal::{BrokerHeartbeatRequest, LeaderReport};
use tokio::sync::watch;

use super::Controller;
use crate::metadata::ClusterImage;
use crate::partition::PartitionRegistry;
use crate::storage::decode;

/// Identity a broker announces in its heartbeats.
#[derive(Debug, Clone)]
pub struct Announcement {
    pub broker_id: u64,
    pub addr: String,
    pub roles: Vec<String>,
    pub rack: String,
}

pub async fn run_heartbeats(
    controller: Controller,
    partitions: Arc<PartitionRegistry>,
    me: Announcement,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut seed_cursor = 0usize;
    let mut target: Option<String> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let leadership = partitions.leadership_changes();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // A new leadership is reported at once: clients find the new leader sooner.
            _ = leadership.notified() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let addr = match target.clone().or_else(|| {
            controller
                .controller_id()
                .and_then(|id| controller.cache.broker_addr(id))
        }) {
            Some(addr) => addr,
            None => {
                seed_cursor += 1;
                controller.seeds[seed_cursor % controller.seeds.len()].clone()
            }
        };
        let request = BrokerHeartbeatRequest {
            broker_id: me.broker_id,
            advertised_addr: me.addr.clone(),
            roles: me.roles.clone(),
            rack: me.rack.clone(),
            leaders: partitions
                .leader_reports()
                .into_iter()
                .map(|(group_id, term, isr)| LeaderReport {
                    group_id,
                    term,
                    isr,
                })
                .collect(),
            metadata_version: controller.cache.image().version,
            want_metadata: controller.raft.is_none(),
        };
        match send(&controller, &addr, request).await {
            Ok(reply) => {
                target = Some(addr);
                if controller.raft.is_none() {
                    controller.cache.set_controller(Some(reply.controller_id));
                }
                if let Some(bytes) = reply.metadata_image {
                    match decode::<ClusterImage>(&bytes) {
                        Ok(image) => controller.cache.publish(image),
                        Err(err) => {
                            tracing::warn!(%err, "undecodable metadata image from the controller")
                        }
                    }
                }
            }
            Err(status) => {
                tracing::debug!(%addr, %status, "heartbeat not accepted");
                let hint = crate::service::status::to_broker_error(&status);
                target = match hint {
                    crate::error::BrokerError::NotController { leader } => {
                        leader.and_then(|h| h.addr).filter(|a| *a != addr)
                    }
                    _ => None,
                };
                if controller.raft.is_none() {
                    controller.cache.set_controller(None);
                }
            }
        }
    }
}

async fn send(
    controller: &Controller,
    addr: &str,
    request: BrokerHeartbeatRequest,
) -> Result<strait_proto::internal::BrokerHeartbeatResponse, tonic::Status> {
    let channel = controller
        .peers
        .channel(addr)
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = ControllerClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let mut request = tonic::Request::new(request);
    request.set_timeout(Duration::from_secs(3));
    client
        .broker_heartbeat(request)
        .await
        .map(|r| r.into_inner())
}
