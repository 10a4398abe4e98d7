//! gRPC services. Handlers translate wire types to domain calls and errors back to
//! stable codes; they hold no business logic.
//!
//! - [`client_api`]: `strait.v1.Strait` (metadata, produce, fetch, offsets);
//! - [`session`]: produce and fetch requests pipelined on one stream per client;
//! - [`admin_api`]: `strait.v1.Admin` (topic create/delete);
//! - [`raft_transport`] and [`controller_api`]: the broker-to-broker services;
//! - [`status`]: the one mapping between `BrokerError` and gRPC status + error code;
//! - [`convert`]: protobuf ⇄ domain conversions.

pub mod admin_api;
pub mod client_api;
pub mod controller_api;
pub mod convert;
pub mod grpc_stream;
pub mod raft_transport;
pub mod session;
pub mod status;
