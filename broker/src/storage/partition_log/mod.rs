//! The segmented partition log (Kafka's layout: segment files named by base offset,
//! CRC32C per batch, sparse index): the frame format of one batch, one segment file
//! with its sparse index and crash recovery, and the log of segments of a partition.
//!
//! `partition::PartitionLogStore` puts each partition group's Raft log on it. Sealed
//! segments keep their sparse index in an index file, so start-up scans only the
//! active segment.

mod chunks;
pub use chunks::prefill as prefill_chunk_pool;
pub mod direct;
pub mod format;
pub mod index_file;
pub mod log;
pub mod preallocate;
pub mod seal;
pub mod segment;
pub mod syncer;

#[cfg(test)]
mod log_tests;
#[cfg(test)]
mod tests;
