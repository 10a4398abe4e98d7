//! Partitions: one openraft group per partition replica, produce and fetch on it, and
//! the registry that starts and stops groups as the metadata says.

mod registry;
mod replica;
mod state_machine;
pub mod types;

pub use registry::PartitionRegistry;
pub use replica::{FetchedBatch, Limits, PartitionReplica};
pub use state_machine::PartitionStateMachine;
pub use types::StoredRecord;
