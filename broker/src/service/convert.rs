//! Protobuf ⇄ domain conversions for the client API.

use std::time::{SystemTime, UNIX_EPOCH};

use strait_proto::v1;
use strait_records::Compression;

use crate::controller::state::{ClusterState, TopicRecord};
use crate::controller::topic_config::TopicConfig;
use crate::error::BrokerError;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A topic as clients see it: leaders are only published while their broker is alive.
pub fn topic_metadata(
    state: &ClusterState,
    topic: &TopicRecord,
    defaults: &TopicConfig,
) -> v1::TopicMetadata {
    v1::TopicMetadata {
        name: topic.name.clone(),
        replication_factor: topic.replication_factor,
        configs: defaults
            .overridden(&topic.configs)
            .unwrap_or(*defaults)
            .effective()
            .into_iter()
            .collect(),
        partitions: topic
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| v1::PartitionMetadata {
                partition: i as u32,
                leader_id: p
                    .leader
                    .filter(|id| state.brokers.get(id).is_some_and(|b| b.alive)),
                replicas: p.replicas.clone(),
                isr: p
                    .isr
                    .iter()
                    .copied()
                    .filter(|id| state.brokers.get(id).is_some_and(|b| b.alive))
                    .collect(),
                leader_epoch: p.leader_term,
            })
            .collect(),
    }
}

pub fn broker_metadata(state: &ClusterState) -> Vec<v1::BrokerMetadata> {
    state
        .brokers
        .values()
        .map(|b| v1::BrokerMetadata {
            id: b.id,
            addr: b.addr.clone(),
            alive: b.alive,
            roles: b.roles.clone(),
            rack: b.rack.clone(),
        })
        .collect()
}

/// The compression a wire code names (its value is the frame code too).
pub fn compression_from_wire(code: i32) -> Result<Compression, BrokerError> {
    u8::try_from(code)
        .ok()
        .and_then(Compression::from_code)
        .ok_or_else(|| BrokerError::InvalidRequest(format!("unknown compression {code}")))
}

pub fn compression_to_wire(compression: Compression) -> i32 {
    i32::from(compression.code())
}
