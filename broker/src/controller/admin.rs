//! Topic administration requests: validated here, on whichever broker received them,
//! then proposed to the controller (which places replicas when it applies them).

use std::collections::BTreeMap;

use super::Controller;
use super::state::{ControllerCommand, ControllerReply, Rejection, TopicRecord};
use crate::error::BrokerError;

/// Most partitions one topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;
/// Longest topic name (Kafka's limit).
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Checks a topic name: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    let invalid = |reason: &str| BrokerError::InvalidTopicName {
        name: name.chars().take(MAX_TOPIC_NAME_LEN + 1).collect(),
        reason: reason.into(),
    };
    if name.is_empty() {
        return Err(invalid("the name is empty"));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(invalid("longer than 249 characters"));
    }
    if name == "." || name == ".." {
        return Err(invalid("`.` and `..` are reserved"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(&format!(
            "character {bad:?} is not allowed (use letters, digits, '.', '_' and '-')"
        )));
    }
    Ok(())
}

fn rejection_to_error(rejection: Rejection) -> BrokerError {
    match rejection {
        Rejection::TopicAlreadyExists(name) => BrokerError::TopicAlreadyExists(name),
        Rejection::UnknownTopic(name) => BrokerError::UnknownTopic(name),
        Rejection::Placement(err) => BrokerError::InvalidReplicationFactor(err.to_string()),
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
    if let Some(key) = configs.keys().next() {
        return Err(BrokerError::InvalidConfig(format!(
            "unknown topic config `{key}`: this version accepts no topic configs"
        )));
    }
    let command = ControllerCommand::CreateTopic {
        name,
        partitions,
        replication_factor,
        configs,
    };
    match controller.propose(command).await? {
        ControllerReply::TopicCreated(topic) => Ok(topic),
        ControllerReply::Rejected(rejection) => Err(rejection_to_error(rejection)),
        ControllerReply::Done => Err(BrokerError::Internal(
            "topic creation returned no topic".into(),
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
