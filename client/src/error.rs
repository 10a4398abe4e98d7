//! Typed client errors. Broker errors keep the broker's stable [`ErrorCode`]; transport
//! failures are separate. [`ClientError::is_retriable`] tells what the client retries.

use prost::Message;
use strait_proto::v1::{ErrorCode, ErrorDetail};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("unknown topic: {0}")]
    UnknownTopic(String),
    #[error("unknown partition: {0}")]
    UnknownPartition(String),
    #[error("not the leader: {message}")]
    NotLeader {
        message: String,
        leader_id: Option<u64>,
        leader_addr: Option<String>,
    },
    #[error("topic already exists: {0}")]
    TopicAlreadyExists(String),
    #[error("{0}")]
    InvalidTopicName(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    RecordTooLarge(String),
    #[error("offset {offset} out of range: valid offsets are {log_start_offset}..{high_watermark}")]
    OffsetOutOfRange {
        offset: u64,
        log_start_offset: u64,
        high_watermark: u64,
    },
    #[error("{0}")]
    InvalidConfig(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// An idempotent batch arrived out of its producer's order; retried in order.
    #[error("out of sequence: {0}")]
    OutOfSequence(String),
    #[error("broker internal error: {0}")]
    Internal(String),
    #[error("cannot reach {addr}: {message}")]
    Transport { addr: String, message: String },
    #[error("{0}")]
    Config(String),
    /// Not sent: an earlier batch of the same partition failed for good, and this one
    /// may not overtake it (idempotent producers keep a partition's order).
    #[error("not sent: {0}")]
    Aborted(String),
}

impl ClientError {
    /// The broker's stable error code, when the broker produced this error.
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            ClientError::UnknownTopic(_) => ErrorCode::UnknownTopic,
            ClientError::UnknownPartition(_) => ErrorCode::UnknownPartition,
            ClientError::NotLeader { .. } => ErrorCode::NotLeader,
            ClientError::TopicAlreadyExists(_) => ErrorCode::TopicAlreadyExists,
            ClientError::InvalidTopicName(_) => ErrorCode::InvalidTopicName,
            ClientError::InvalidPartitions(_) => ErrorCode::InvalidPartitions,
            ClientError::InvalidReplicationFactor(_) => ErrorCode::InvalidReplicationFactor,
            ClientError::RecordTooLarge(_) => ErrorCode::RecordTooLarge,
            ClientError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            ClientError::InvalidConfig(_) => ErrorCode::InvalidConfig,
            ClientError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            ClientError::Timeout(_) => ErrorCode::Timeout,
            ClientError::Unavailable(_) => ErrorCode::Unavailable,
            ClientError::OutOfSequence(_) => ErrorCode::OutOfSequence,
            ClientError::Internal(_) => ErrorCode::Internal,
            ClientError::Transport { .. } | ClientError::Config(_) | ClientError::Aborted(_) => {
                return None;
            }
        })
    }

    /// Whether retrying (after refreshing metadata) may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            ClientError::NotLeader { .. }
                | ClientError::Timeout(_)
                | ClientError::Unavailable(_)
                | ClientError::OutOfSequence(_)
                | ClientError::Transport { .. }
        )
    }

    /// Converts a gRPC status from `addr` into a typed error.
    pub(crate) fn from_status(addr: &str, status: &tonic::Status) -> ClientError {
        let detail = ErrorDetail::decode(status.details())
            .ok()
            .filter(|d| d.code != ErrorCode::Unspecified as i32);
        let Some(detail) = detail else {
            return match status.code() {
                tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown => {
                    ClientError::Transport {
                        addr: addr.to_string(),
                        message: status.message().to_string(),
                    }
                }
                tonic::Code::DeadlineExceeded => ClientError::Timeout(status.message().to_string()),
                tonic::Code::OutOfRange | tonic::Code::ResourceExhausted => {
                    ClientError::RecordTooLarge(status.message().to_string())
                }
                _ => ClientError::Internal(format!("{}: {}", status.code(), status.message())),
            };
        };
        ClientError::from_detail(detail)
    }

    /// Converts a broker's error detail (with a code set) into a typed error.
    pub(crate) fn from_detail(detail: ErrorDetail) -> ClientError {
        let message = detail.message;
        match ErrorCode::try_from(detail.code).unwrap_or(ErrorCode::Internal) {
            ErrorCode::UnknownTopic => ClientError::UnknownTopic(message),
            ErrorCode::UnknownPartition => ClientError::UnknownPartition(message),
            ErrorCode::NotLeader | ErrorCode::NotController => ClientError::NotLeader {
                message,
                leader_id: detail.leader_id,
                leader_addr: (!detail.leader_addr.is_empty()).then_some(detail.leader_addr),
            },
            ErrorCode::TopicAlreadyExists => ClientError::TopicAlreadyExists(message),
            ErrorCode::InvalidTopicName => ClientError::InvalidTopicName(message),
            ErrorCode::InvalidPartitions => ClientError::InvalidPartitions(message),
            ErrorCode::InvalidReplicationFactor => ClientError::InvalidReplicationFactor(message),
            ErrorCode::RecordTooLarge => ClientError::RecordTooLarge(message),
            ErrorCode::OffsetOutOfRange => ClientError::OffsetOutOfRange {
                offset: 0,
                log_start_offset: detail.log_start_offset,
                high_watermark: detail.high_watermark,
            },
            ErrorCode::InvalidConfig => ClientError::InvalidConfig(message),
            ErrorCode::InvalidRequest => ClientError::InvalidRequest(message),
            ErrorCode::Timeout => ClientError::Timeout(message),
            ErrorCode::Unavailable => ClientError::Unavailable(message),
            ErrorCode::OutOfSequence => ClientError::OutOfSequence(message),
            ErrorCode::Internal | ErrorCode::Unspecified => ClientError::Internal(message),
        }
    }
}
