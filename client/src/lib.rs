//! Rust client for Strait.
//!
//! Connect with a bootstrap list and the client finds everything else: it caches the
//! cluster metadata, routes every request to the partition leader, and refreshes the
//! cache on `NOT_LEADER`, on connection failures and on a timer.
//!
//! ```no_run
//! # async fn demo() -> Result<(), strait_client::ClientError> {
//! use strait_client::{Client, ClientConfig, OffsetSpec, ProducerRecord};
//! let client = Client::connect(ClientConfig::new(["127.0.0.1:9701"])).await?;
//! client.create_topic("logs", 3, 3).await?;
//! let producer = client.producer(Default::default());
//! let meta = producer.send_and_wait("logs", ProducerRecord::new("hello").key("k")).await?;
//! let mut consumer = client.consumer("logs", None, OffsetSpec::Earliest, Default::default()).await?;
//! let record = consumer.next_record().await?;
//! # Ok(()) }
//! ```
//!
//! Modules: [`client`] (connections, metadata, routing), [`producer`] (batching,
//! partitioning, retries; batches travel in produce sessions, one `ProduceStream` per
//! broker), [`consumer`] (long-polling fetch per partition), [`admin`]
//! (topics, cluster status), [`error`] (typed errors with the broker's stable codes).

pub mod admin;
pub mod client;
pub mod consumer;
pub mod error;
mod partitioner;
pub mod producer;
mod session;
pub mod types;

pub use admin::{ClusterStatus, PartitionDescription, TopicDescription};
pub use client::{Client, ClientConfig};
pub use consumer::{Consumer, ConsumerConfig, OffsetSpec, PartitionConsumer};
pub use error::ClientError;
pub use partitioner::partition_for_key;
pub use producer::{DeliveryFuture, Producer, ProducerConfig, ProducerStats};
pub use strait_proto::v1::ErrorCode;
pub use strait_records::Compression;
pub use types::{
    BrokerInfo, ConsumedRecord, PartitionInfo, ProducerRecord, RecordMetadata, TopicInfo,
};
