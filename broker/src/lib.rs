//! The Strait broker.
//!
//! A broker stores partition replicas and serves clients. Every partition is its own
//! openraft group whose voters are the partition's replicas; the controller group
//! (group 0) replicates the cluster's metadata among the seed brokers. Start reading at
//! [`server::run`], which wires the pieces together:
//!
//! - [`storage`]: RocksDB, the group-commit flusher and the Raft log store (no Raft or gRPC
//!   knowledge beyond openraft's storage traits);
//! - [`raft`]: the openraft type configurations, timing and the gRPC-backed network;
//! - [`controller`]: the metadata state machine, placement, discovery and liveness;
//! - [`partition`]: produce and fetch on one partition's Raft group;
//! - [`service`]: tonic handlers that translate wire types and call the above.

pub mod config;
pub mod controller;
pub mod error;
pub mod metadata;
pub mod partition;
pub mod pretouch;
pub mod raft;
pub mod server;
pub mod service;
pub mod storage;
