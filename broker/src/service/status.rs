//! `BrokerError` ⇄ gRPC status. The status carries an encoded `ErrorDetail` with the
//! stable `ErrorCode` and, where useful, a leader hint or the valid offset range.

use prost::Message;
use strait_proto::v1::{ErrorCode, ErrorDetail};
use tonic::{Code, Status};

use crate::error::{BrokerError, LeaderHint};

pub fn to_status(err: BrokerError) -> Status {
    let (grpc, detail) = to_detail(err);
    Status::with_details(grpc, detail.message.clone(), detail.encode_to_vec().into())
}

/// The error as the gRPC code and the `ErrorDetail` a status carries (a produce
/// session's reply carries the detail alone).
pub fn to_detail(err: BrokerError) -> (Code, ErrorDetail) {
    let message = err.to_string();
    let mut detail = ErrorDetail {
        message,
        ..Default::default()
    };
    let mut hint = |leader: &Option<LeaderHint>| {
        if let Some(h) = leader {
            detail.leader_id = Some(h.id);
            detail.leader_addr = h.addr.clone().unwrap_or_default();
        }
    };
    let (grpc, code) = match &err {
        BrokerError::UnknownTopic(_) => (Code::NotFound, ErrorCode::UnknownTopic),
        BrokerError::UnknownPartition { .. } => (Code::NotFound, ErrorCode::UnknownPartition),
        BrokerError::NotLeader { leader, .. } => {
            hint(leader);
            (Code::FailedPrecondition, ErrorCode::NotLeader)
        }
        BrokerError::NotController { leader } => {
            hint(leader);
            (Code::FailedPrecondition, ErrorCode::NotController)
        }
        BrokerError::TopicAlreadyExists(_) => (Code::AlreadyExists, ErrorCode::TopicAlreadyExists),
        BrokerError::InvalidTopicName { .. } => {
            (Code::InvalidArgument, ErrorCode::InvalidTopicName)
        }
        BrokerError::InvalidPartitions(_) => (Code::InvalidArgument, ErrorCode::InvalidPartitions),
        BrokerError::InvalidReplicationFactor(_) => {
            (Code::InvalidArgument, ErrorCode::InvalidReplicationFactor)
        }
        BrokerError::RecordTooLarge(_) => (Code::InvalidArgument, ErrorCode::RecordTooLarge),
        BrokerError::OffsetOutOfRange {
            log_start_offset,
            high_watermark,
            ..
        } => {
            detail.log_start_offset = *log_start_offset;
            detail.high_watermark = *high_watermark;
            (Code::OutOfRange, ErrorCode::OffsetOutOfRange)
        }
        BrokerError::InvalidRequest(_) => (Code::InvalidArgument, ErrorCode::InvalidRequest),
        BrokerError::InvalidConfig(_) => (Code::InvalidArgument, ErrorCode::InvalidConfig),
        BrokerError::Timeout(_) => (Code::DeadlineExceeded, ErrorCode::Timeout),
        BrokerError::Unavailable(_) => (Code::Unavailable, ErrorCode::Unavailable),
        BrokerError::OutOfSequence(_) => (Code::Aborted, ErrorCode::OutOfSequence),
        BrokerError::Internal(_) => (Code::Internal, ErrorCode::Internal),
    };
    detail.code = code as i32;
    (grpc, detail)
}

/// Reads a peer broker's error back (used when forwarding to the controller).
pub fn to_broker_error(status: &Status) -> BrokerError {
    let detail = ErrorDetail::decode(status.details())
        .ok()
        .filter(|d| d.code != ErrorCode::Unspecified as i32);
    let Some(detail) = detail else {
        return BrokerError::Unavailable(format!("{}: {}", status.code(), status.message()));
    };
    let leader = detail.leader_id.map(|id| LeaderHint {
        id,
        addr: (!detail.leader_addr.is_empty()).then(|| detail.leader_addr.clone()),
    });
    let message = detail.message.clone();
    match ErrorCode::try_from(detail.code).unwrap_or(ErrorCode::Internal) {
        ErrorCode::NotController => BrokerError::NotController { leader },
        ErrorCode::UnknownTopic => BrokerError::UnknownTopic(message),
        ErrorCode::TopicAlreadyExists => BrokerError::TopicAlreadyExists(message),
        ErrorCode::InvalidReplicationFactor => BrokerError::InvalidReplicationFactor(message),
        ErrorCode::InvalidPartitions => BrokerError::InvalidPartitions(message),
        ErrorCode::InvalidConfig => BrokerError::InvalidConfig(message),
        ErrorCode::InvalidRequest => BrokerError::InvalidRequest(message),
        ErrorCode::Timeout => BrokerError::Timeout(message),
        ErrorCode::Internal => BrokerError::Internal(message),
        _ => BrokerError::Unavailable(message),
    }
}
