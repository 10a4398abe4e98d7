//! The client's own record and metadata types (wire types stay inside the crate).

use bytes::Bytes;
use strait_proto::v1;

/// A record to produce.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
    /// Explicit partition; otherwise chosen by key hash, or round-robin without a key.
    pub partition: Option<u32>,
    /// Milliseconds since the epoch; `None` lets the leader stamp its append time.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    pub fn new(value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            value: value.into(),
            ..Default::default()
        }
    }

    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the record's timestamp (ms since the epoch) instead of the leader's append time.
    pub fn timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }

    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }

    /// Bytes the record occupies in a batch: what counts toward
    /// `ProducerConfig::batch_max_bytes` (its key, value and headers, plus a fixed
    /// overhead per record and per header).
    pub fn size(&self) -> usize {
        strait_records::encoded_len(
            self.key.as_ref().map(Bytes::len),
            self.value.len(),
            &self.headers,
        )
    }

    /// Refuses what the batch encoding cannot hold (before it reaches a batch).
    pub(crate) fn check(&self) -> Result<(), crate::ClientError> {
        let too_large = |what: &str| Err(crate::ClientError::RecordTooLarge(what.to_string()));
        if self.headers.len() > usize::from(u16::MAX) {
            return too_large("a record holds at most 65,535 headers");
        }
        if self
            .headers
            .iter()
            .any(|(name, _)| name.len() > usize::from(u16::MAX))
        {
            return too_large("header names are at most 65,535 bytes");
        }
        if self.size() > u32::MAX as usize {
            return too_large("a record is at most 4 GiB");
        }
        Ok(())
    }

    /// Appends the record to a batch; without a timestamp it gets `default_timestamp_ms`
    /// (0: the leader stamps its append time).
    pub(crate) fn encode(
        &self,
        batch: &mut strait_records::BatchBuilder,
        default_timestamp_ms: i64,
    ) {
        batch.push(
            self.timestamp_ms.unwrap_or(default_timestamp_ms),
            self.key.as_deref(),
            &self.value,
            &self.headers,
        );
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Shared by the records of a batch (no allocation per record).
    pub topic: std::sync::Arc<str>,
    pub partition: u32,
    pub offset: u64,
}

/// A consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Shared by the records of a consumer (no allocation per record).
    pub topic: std::sync::Arc<str>,
    pub partition: u32,
    pub offset: u64,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub timestamp_ms: i64,
    pub headers: Vec<(String, Bytes)>,
}

impl ConsumedRecord {
    pub(crate) fn from_batch(
        topic: &std::sync::Arc<str>,
        partition: u32,
        offset: u64,
        r: strait_records::Record,
    ) -> Self {
        ConsumedRecord {
            topic: topic.clone(),
            partition,
            offset,
            key: r.key,
            value: r.value,
            timestamp_ms: r.timestamp_ms,
            headers: r.headers,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: u64,
    pub addr: String,
    pub alive: bool,
    pub roles: Vec<String>,
    pub rack: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    pub leader: Option<u64>,
    pub replicas: Vec<u64>,
    pub isr: Vec<u64>,
    pub leader_epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: Vec<PartitionInfo>,
    pub replication_factor: u32,
    /// Effective configs (defaults overridden by the topic's settings).
    pub configs: std::collections::BTreeMap<String, String>,
}

impl From<v1::BrokerMetadata> for BrokerInfo {
    fn from(b: v1::BrokerMetadata) -> Self {
        BrokerInfo {
            id: b.id,
            addr: b.addr,
            alive: b.alive,
            roles: b.roles,
            rack: b.rack,
        }
    }
}

impl From<v1::TopicMetadata> for TopicInfo {
    fn from(t: v1::TopicMetadata) -> Self {
        TopicInfo {
            name: t.name,
            replication_factor: t.replication_factor,
            configs: t.configs.into_iter().collect(),
            partitions: t
                .partitions
                .into_iter()
                .map(|p| PartitionInfo {
                    partition: p.partition,
                    leader: p.leader_id,
                    replicas: p.replicas,
                    isr: p.isr,
                    leader_epoch: p.leader_epoch,
                })
                .collect(),
        }
    }
}
