//! Strait's wire types and gRPC stubs, generated from `proto/` at build time.
//!
//! `v1` is the client API (metadata, produce, fetch, admin); `internal` is the
//! broker-to-broker API (Raft transport and controller calls). This crate holds no
//! logic: conversions to domain types live at the edges of `strait-broker` and
//! `strait-client`. Every service uses [`codec::PresizedCodec`].

pub mod codec;

/// Largest HTTP/2 frame a Strait endpoint accepts (brokers for requests, clients for
/// responses): a produce, replication or fetch message of up to 1 MiB (a 512 KiB batch
/// is the producer's default) then crosses in one frame rather than 64 of HTTP/2's
/// default 16 KiB, and a broker decodes it from that frame without copying it.
pub const MAX_FRAME_BYTES: u32 = 1024 * 1024;

/// The client-facing API.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("strait.v1");
}

/// The broker-to-broker API.
pub mod internal {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("strait.internal.v1");
}
