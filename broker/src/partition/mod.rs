//! Partitions: one openraft group per partition replica, produce and fetch on it, and
//! the registry that starts and stops groups as the metadata says.

pub mod liveness;
mod log_store;
mod producers;
mod recovery;
mod registry;
mod repair;
mod replica;
mod sequencer;
pub mod state_machine;
mod tail_cache;
pub mod types;

pub use log_store::PartitionLogStore;
pub use registry::{PartitionRegistry, PartitionStorage};
pub use replica::{Fetched, Limits, PartitionReplica};
pub use state_machine::PartitionStateMachine;
