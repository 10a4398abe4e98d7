//! The segmented partition log (Kafka's layout: segment files named by base offset,
//! CRC32C per batch, sparse index): the frame format of one batch, one segment file
//! with its sparse index and crash recovery, and the log of segments of a partition.
//!
//! Not wired into the partition groups yet: the Raft log store over these segments,
//! rolling, retention and the index files on disk come next (issue 3).

pub mod format;
pub mod log;
pub mod segment;
pub mod syncer;

#[cfg(test)]
mod log_tests;
#[cfg(test)]
mod tests;
