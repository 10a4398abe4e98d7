//! The broker's request-level errors. Each variant is something a client can act on;
//! `service::status` maps them, in one place, to stable wire codes.

/// Where the caller should go instead: a broker id and its advertised address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    pub id: u64,
    pub addr: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
    #[error("topic `{topic}` has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("this broker does not lead {topic}/{partition}")]
    NotLeader {
        topic: String,
        partition: u32,
        leader: Option<LeaderHint>,
    },
    #[error("this broker is not the controller")]
    NotController { leader: Option<LeaderHint> },
    #[error("topic `{0}` already exists")]
    TopicAlreadyExists(String),
    #[error("invalid topic name `{name}`: {reason}")]
    InvalidTopicName { name: String, reason: String },
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    RecordTooLarge(String),
    #[error("offset {offset} is out of range [{log_start_offset}, {high_watermark}]")]
    OffsetOutOfRange {
        offset: u64,
        log_start_offset: u64,
        high_watermark: u64,
    },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// An idempotent batch out of its producer's order (retriable, in order).
    #[error("out of sequence: {0}")]
    OutOfSequence(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<std::io::Error> for BrokerError {
    fn from(err: std::io::Error) -> Self {
        BrokerError::Internal(err.to_string())
    }
}
