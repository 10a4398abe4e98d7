//! Topic administration requests: validated here, on whichever broker received them,
//! then proposed to the controller (which places replicas when it applies them).

use std::collections::BTreeMap;

use super::Controller;
use super::state::{
    ControllerCommand, ControllerReply, MAX_PARTITIONS, MAX_TOPIC_NAME_LEN, Rejection, TopicRecord,
    check_topic_name,
};
use super::topic_config::{KEYS, TopicConfig};
use crate::error::BrokerError;

/// Checks a topic name (see [`check_topic_name`]) as a client error.
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    check_topic_name(name).map_err(|reason| BrokerError::InvalidTopicName {
        name: name.chars().take(MAX_TOPIC_NAME_LEN + 1).collect(),
        reason,
    })
}

fn rejection_to_error(rejection: Rejection) -> BrokerError {
    match rejection {
        Rejection::TopicAlreadyExists(name) => BrokerError::TopicAlreadyExists(name),
        Rejection::UnknownTopic(name) => BrokerError::UnknownTopic(name),
        Rejection::Placement(err) => BrokerError::InvalidReplicationFactor(err.to_string()),
        Rejection::InvalidTopic(problem) => BrokerError::InvalidRequest(problem),
        Rejection::InvalidConfig(problem) => BrokerError::InvalidConfig(problem),
    }
}

pub async fn create_topic(
    controller: &Controller,
    name: String,
    partitions: u32,
    replication_factor: u32,
    configs: BTreeMap<String, String>,
) -> Result<TopicRecord, BrokerError> {
    validate_topic_name(&name)?;
    if partitions == 0 || partitions > MAX_PARTITIONS {
        return Err(BrokerError::InvalidPartitions(format!(
            "{partitions} partitions requested; allowed are 1 to {MAX_PARTITIONS}"
        )));
    }
    if replication_factor == 0 {
        return Err(BrokerError::InvalidReplicationFactor(
            "the replication factor must be at least 1".into(),
        ));
    }
    TopicConfig::from_overrides(&configs).map_err(BrokerError::InvalidConfig)?;
    let command = ControllerCommand::CreateTopic {
        name,
        partitions,
        replication_factor,
        configs,
    };
    match controller.propose(command).await? {
        ControllerReply::TopicCreated(topic) => Ok(topic),
        ControllerReply::Rejected(rejection) => Err(rejection_to_error(rejection)),
        _ => Err(BrokerError::Internal(
            "topic creation returned no topic".into(),
        )),
    }
}

/// Sets and removes config overrides of a topic; returns the topic as changed.
pub async fn alter_topic_configs(
    controller: &Controller,
    name: String,
    set: BTreeMap<String, String>,
    remove: Vec<String>,
) -> Result<TopicRecord, BrokerError> {
    validate_topic_name(&name)?;
    let mut probe = set.clone();
    for key in &remove {
        probe.remove(key);
    }
    TopicConfig::from_overrides(&probe).map_err(BrokerError::InvalidConfig)?;
    if let Some(key) = remove.iter().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(BrokerError::InvalidConfig(format!(
            "unknown topic config `{key}`"
        )));
    }
    match controller
        .propose(ControllerCommand::AlterTopicConfigs { name, set, remove })
        .await?
    {
        ControllerReply::TopicCreated(topic) => Ok(topic),
        ControllerReply::Rejected(rejection) => Err(rejection_to_error(rejection)),
        _ => Err(BrokerError::Internal(
            "config change returned no topic".into(),
        )),
    }
}

pub async fn delete_topic(controller: &Controller, name: String) -> Result<(), BrokerError> {
    validate_topic_name(&name)?;
    match controller
        .propose(ControllerCommand::DeleteTopic { name })
        .await?
    {
        ControllerReply::Rejected(rejection) => Err(rejection_to_error(rejection)),
        _ => Ok(()),
    }
}

/// A new idempotent producer id, unique in the cluster (allocated through the log).
pub async fn allocate_producer_id(controller: &Controller) -> Result<u64, BrokerError> {
    match controller
        .propose(ControllerCommand::AllocateProducerId)
        .await?
    {
        ControllerReply::ProducerId(id) => Ok(id),
        ControllerReply::Rejected(rejection) => Err(rejection_to_error(rejection)),
        _ => Err(BrokerError::Internal(
            "producer id allocation returned no id".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        for ok in ["logs", "app.events-2_x", "A"] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(250);
        for bad in ["", ".", "..", "a b", "é", "a/b", long.as_str()] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }
}
