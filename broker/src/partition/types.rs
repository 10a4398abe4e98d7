//! What a partition group replicates: batches of records. The openraft type
//! configuration of partition groups lives here too.

use std::fmt;

use serde::{Deserialize, Serialize};
use strait_records::RecordBatch;

/// The idempotent producer a batch came from, and its sequence number of the batch's
/// first record in this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStamp {
    pub producer_id: u64,
    pub base_sequence: u64,
}

/// The payload of a partition log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionCommand {
    /// Append a batch; the records get the next offsets, contiguously.
    Append {
        batch: RecordBatch,
        #[serde(default)]
        producer: Option<ProducerStamp>,
    },
    /// Retention: offsets below this are gone (proposed by the leader, applied by all).
    Retain { log_start_offset: u64 },
}

impl fmt::Display for PartitionCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionCommand::Append { batch, .. } => {
                write!(f, "append({} records)", batch.count())
            }
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
