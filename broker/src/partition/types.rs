//! What a partition group replicates: batches of records. The openraft type
//! configuration of partition groups lives here too.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One record as stored in the log; its offset is implied by its batch's position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub timestamp_ms: i64,
    pub headers: Vec<(String, Bytes)>,
}

/// What a record costs beyond its key, value and headers (offset, timestamp, framing),
/// charged so that empty records still count against size limits.
pub const RECORD_OVERHEAD_BYTES: usize = 32;

impl StoredRecord {
    /// Bytes the record occupies for size limits and fetch budgets.
    pub fn size(&self) -> usize {
        RECORD_OVERHEAD_BYTES
            + self.key.as_ref().map_or(0, |k| k.len())
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// The payload of a partition log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionCommand {
    /// Append a batch; the records get the next offsets, contiguously.
    Append { records: Vec<StoredRecord> },
    /// Retention: offsets below this are gone (proposed by the leader, applied by all).
    Retain { log_start_offset: u64 },
}

impl fmt::Display for PartitionCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionCommand::Append { records } => write!(f, "append({} records)", records.len()),
            PartitionCommand::Retain { log_start_offset } => {
                write!(f, "retain(from {log_start_offset})")
            }
        }
    }
}

/// The outcome of applying a partition entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionReply {
    Appended { base_offset: u64 },
    Nothing,
}

openraft::declare_raft_types!(
    /// Partition groups: entries carry [`PartitionCommand`]s.
    pub PartitionRaftConfig:
        D = PartitionCommand,
        R = PartitionReply,
);

/// A partition group's Raft handle.
pub type PartitionRaft =
    openraft::Raft<PartitionRaftConfig, super::state_machine::PartitionStateMachine>;
