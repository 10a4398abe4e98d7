//! Durable state of a broker: one RocksDB instance holding every Raft group's log, vote
//! and snapshots, plus the group-commit flusher that makes writes durable; and the
//! segmented partition log that holds partition data.
//!
//! This module knows openraft's storage traits and nothing of gRPC or of what the
//! entries mean.

mod db;
mod flusher;
mod group_meta;
pub mod partition_log;
mod raft_log;
mod snapshot_store;

pub use db::{GroupId, Store, StoreError};
pub use flusher::Flusher;
pub use group_meta::GroupMeta;
pub use raft_log::{REPLICATION_BATCH_BYTES, RaftLogStore, decode, encode, index_bounds};
pub use snapshot_store::{load_snapshot, save_snapshot_and_sync};
