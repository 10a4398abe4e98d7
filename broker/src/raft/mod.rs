//! The openraft adapter shared by the controller and partition groups: timing
//! configuration, the network that carries every group's RPCs over one gRPC channel per
//! peer broker, and the receiving side that hands an incoming RPC to a local group.
//!
//! Type configurations live with their state machines (`controller::types`,
//! `partition::types`); this module is generic over them.

mod append_stream;
mod inbound;
mod leadership;
mod network;
mod timing;
mod wire;

pub use append_stream::{GROUP_HEADER, serve as serve_append_stream};
pub use inbound::{RaftRpcKind, serve_rpc};
pub use leadership::transfer_leadership;
pub use network::{GroupNetworkFactory, MAX_RAFT_MESSAGE_BYTES, PeerPool};
pub use timing::{controller_config, partition_config};
