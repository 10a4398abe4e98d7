//! Consumers. [`PartitionConsumer`] reads one partition from a position, following the
//! leader; [`Consumer`] reads several partitions of a topic concurrently (one
//! long-polling task per partition) and hands out their records as they arrive, in
//! order within each partition.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strait_records::{Compression, MAX_PLAIN_BATCH_BYTES, RecordBatch};

use strait_proto::v1::{FetchRequest, ListOffsetsRequest};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::error::ClientError;
use crate::types::ConsumedRecord;

/// Where to start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark: only records produced from now on.
    Latest,
    At(u64),
    /// The first record with a timestamp (ms since the epoch) at or after this one; the
    /// end of the log when there is none.
    Timestamp(i64),
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Soft cap on the bytes of one fetch response.
    pub max_bytes: u32,
    /// How long a fetch waits at the end of the log for new records.
    pub max_wait: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_bytes: 1024 * 1024,
            max_wait: Duration::from_millis(500),
        }
    }
}

/// How long transient failures (leader changes, a dead broker) are retried before a
/// poll gives up and reports the error.
const RETRY_WINDOW: Duration = Duration::from_secs(60);

/// Most records a poll makes room for before reading them (a broker is not trusted to
/// announce honest counts).
const MAX_PRESIZED_RECORDS: usize = 64 * 1024;

pub struct PartitionConsumer {
    client: Client,
    /// Shared with the records it returns.
    topic: Arc<str>,
    partition: u32,
    position: u64,
    config: ConsumerConfig,
}

impl Client {
    /// `(log start offset, high watermark)` of a partition, asked of its leader.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(u64, u64), ClientError> {
        let (start, end, _) = self.list_offsets_at(topic, partition, None).await?;
        Ok((start, end))
    }

    /// The first offset whose record timestamp is at or after `timestamp_ms`, or `None`
    /// when no committed record is that recent.
    pub async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<Option<u64>, ClientError> {
        Ok(self
            .list_offsets_at(topic, partition, Some(timestamp_ms))
            .await?
            .2)
    }

    async fn list_offsets_at(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: Option<i64>,
    ) -> Result<(u64, u64, Option<u64>), ClientError> {
        let deadline = Instant::now() + RETRY_WINDOW;
        self.with_leader(topic, partition, deadline, |addr| async move {
            let mut rpc = self.data_client(&addr)?;
            let request = ListOffsetsRequest {
                topic: topic.to_string(),
                partition,
                timestamp_ms,
            };
            rpc.list_offsets(request)
                .await
                .map(|r| {
                    let r = r.into_inner();
                    (r.log_start_offset, r.high_watermark, r.timestamp_offset)
                })
                .map_err(|s| ClientError::from_status(&addr, &s))
        })
        .await
    }
}

impl PartitionConsumer {
    pub async fn new(
        client: Client,
        topic: &str,
        partition: u32,
        start: OffsetSpec,
        config: ConsumerConfig,
    ) -> Result<Self, ClientError> {
        let position = match start {
            OffsetSpec::At(offset) => offset,
            OffsetSpec::Earliest => client.list_offsets(topic, partition).await?.0,
            OffsetSpec::Latest => client.list_offsets(topic, partition).await?.1,
            OffsetSpec::Timestamp(ts) => {
                match client.offset_for_timestamp(topic, partition, ts).await? {
                    Some(offset) => offset,
                    None => client.list_offsets(topic, partition).await?.1,
                }
            }
        };
        Ok(PartitionConsumer {
            client,
            topic: Arc::from(topic),
            partition,
            position,
            config,
        })
    }

    /// The offset of the next record this consumer will return.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The partition this consumer reads.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Fetches the next records (possibly none after a long-poll timeout).
    pub async fn poll(&mut self) -> Result<Vec<ConsumedRecord>, ClientError> {
        let deadline = Instant::now() + RETRY_WINDOW;
        let (topic, partition, offset) = (self.topic.clone(), self.partition, self.position);
        let config = self.config.clone();
        let client = self.client.clone();
        let response = client
            .with_leader(&topic, partition, deadline, |addr| {
                let request = FetchRequest {
                    topic: topic.to_string(),
                    partition,
                    offset,
                    max_bytes: config.max_bytes,
                    max_wait_ms: config.max_wait.as_millis() as u32,
                };
                let client = client.clone();
                // The broker answers by the long poll's end; beyond that, it is stuck.
                let timeout = config.max_wait + client.config().request_timeout;
                async move {
                    client
                        .fetch_session(&addr)?
                        .call(request, timeout)
                        .await
                        .map_err(|err| match err {
                            ClientError::OffsetOutOfRange {
                                log_start_offset,
                                high_watermark,
                                ..
                            } => ClientError::OffsetOutOfRange {
                                offset,
                                log_start_offset,
                                high_watermark,
                            },
                            other => other,
                        })
                }
            })
            .await?;
        // Sized for the batches' records up front (bounded: the counts are the broker's).
        let announced: usize = response
            .batches
            .iter()
            .map(|b| b.record_count as usize)
            .sum();
        let mut records = Vec::with_capacity(announced.min(MAX_PRESIZED_RECORDS));
        for batch in response.batches {
            // The broker is not trusted: each batch is checked before it is read.
            let compression = u8::try_from(batch.compression)
                .ok()
                .and_then(Compression::from_code)
                .ok_or_else(|| {
                    ClientError::Internal(format!(
                        "unknown compression {} at offset {} of {topic}/{partition}",
                        batch.compression, batch.base_offset
                    ))
                })?;
            let parsed = RecordBatch::read_counted(
                batch.records,
                compression,
                batch.record_count,
                MAX_PLAIN_BATCH_BYTES,
                usize::MAX,
            )
            .map_err(|e| {
                ClientError::Internal(format!(
                    "malformed batch at offset {} of {topic}/{partition}: {e}",
                    batch.base_offset
                ))
            })?;
            for (i, record) in parsed.enumerate() {
                let record = record.map_err(|e| ClientError::Internal(e.to_string()))?;
                let at = batch.base_offset.checked_add(i as u64).ok_or_else(|| {
                    ClientError::Internal(format!("offset out of range in {topic}/{partition}"))
                })?;
                if at >= offset {
                    records.push(ConsumedRecord::from_batch(&topic, partition, at, record));
                }
            }
        }
        if let Some(last) = records.last() {
            self.position = last.offset + 1;
        }
        Ok(records)
    }
}

/// Reads several partitions of one topic concurrently. Transient failures are retried
/// for as long as the consumer lives; a permanent error (such as an offset out of range)
/// is returned once by [`Consumer::next_record`] and stops that partition's reader.
pub struct Consumer {
    rx: mpsc::Receiver<Result<Vec<ConsumedRecord>, ClientError>>,
    buffered: VecDeque<ConsumedRecord>,
    tasks: Vec<JoinHandle<()>>,
}

impl Client {
    /// Reads `partitions` of `topic` (all of them when `None`) from `start`.
    pub async fn consumer(
        &self,
        topic: &str,
        partitions: Option<Vec<u32>>,
        start: OffsetSpec,
        config: ConsumerConfig,
    ) -> Result<Consumer, ClientError> {
        let info = self.topic(topic).await?;
        let partitions = partitions.unwrap_or_else(|| (0..info.partitions.len() as u32).collect());
        let (tx, rx) = mpsc::channel(2 * partitions.len().max(1));
        let mut tasks = Vec::new();
        for partition in partitions {
            let mut consumer =
                PartitionConsumer::new(self.clone(), topic, partition, start, config.clone())
                    .await?;
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let result = match consumer.poll().await {
                        Ok(records) if records.is_empty() => continue,
                        // The cluster is still failing over: keep reading this partition.
                        Err(err) if err.is_retriable() => {
                            tracing::warn!(partition, %err, "fetch failing; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            continue;
                        }
                        other => other,
                    };
                    let failed = result.is_err();
                    if tx.send(result).await.is_err() || failed {
                        return;
                    }
                }
            }));
        }
        Ok(Consumer {
            rx,
            buffered: VecDeque::new(),
            tasks,
        })
    }
}

impl Consumer {
    /// The next record from any assigned partition; waits until one arrives.
    pub async fn next_record(&mut self) -> Result<ConsumedRecord, ClientError> {
        loop {
            if let Some(record) = self.buffered.pop_front() {
                return Ok(record);
            }
            match self.rx.recv().await {
                Some(Ok(records)) => self.buffered.extend(records),
                Some(Err(err)) => return Err(err),
                None => {
                    return Err(ClientError::Unavailable(
                        "every partition reader stopped".into(),
                    ));
                }
            }
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
