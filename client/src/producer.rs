//! The batching producer.
//!
//! Each partition gets a worker task fed by a bounded queue (backpressure: `send` waits
//! when it is full). A worker takes the first waiting record, lingers up to `linger` for
//! more (up to `batch_max_bytes`), sends the batch to the partition leader and retries it
//! through leader changes until `delivery_timeout`. One batch per partition is in flight
//! at a time, so records of a partition are written in the order they were sent.
//! Without idempotence (a later feature) a retry after a timed-out request may write a
//! batch twice.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use strait_proto::v1::ProduceRequest;
use strait_records::BatchBuilder;
use tokio::sync::{mpsc, oneshot};

use crate::client::Client;
use crate::error::ClientError;
use crate::partitioner::{RoundRobin, partition_for_key};
use crate::types::{ProducerRecord, RecordMetadata};

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a worker waits for more records before sending a partial batch.
    pub linger: Duration,
    /// Largest batch sent in one request (a single larger record is sent alone).
    pub batch_max_bytes: usize,
    /// Records that may wait per partition before `send` applies backpressure.
    pub queue_capacity: usize,
    /// How long a record may take from `send` to acknowledgement, retries included.
    pub delivery_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::from_millis(5),
            batch_max_bytes: 512 * 1024,
            queue_capacity: 10_000,
            delivery_timeout: Duration::from_secs(60),
        }
    }
}

struct Pending {
    record: ProducerRecord,
    done: oneshot::Sender<Result<RecordMetadata, ClientError>>,
}

/// Resolves to where the record landed once the cluster acknowledged it.
pub struct DeliveryFuture {
    rx: oneshot::Receiver<Result<RecordMetadata, ClientError>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.unwrap_or_else(|_| Err(ClientError::Unavailable("the producer was dropped".into())))
        })
    }
}

pub struct Producer {
    client: Client,
    config: ProducerConfig,
    /// Topic → partition → that partition's worker queue.
    workers: Mutex<HashMap<String, HashMap<u32, mpsc::Sender<Pending>>>>,
    round_robin: RoundRobin,
}

impl Client {
    /// A producer sharing this client's connections and metadata.
    pub fn producer(&self, config: ProducerConfig) -> Producer {
        Producer {
            client: self.clone(),
            config,
            workers: Mutex::new(HashMap::new()),
            round_robin: RoundRobin::default(),
        }
    }
}

impl Producer {
    /// Queues `record` for `topic`; the returned future resolves on acknowledgement.
    pub async fn send(
        &self,
        topic: &str,
        record: ProducerRecord,
    ) -> Result<DeliveryFuture, ClientError> {
        record.check()?;
        let partitions = self.client.partition_count(topic).await?;
        let partition = match (record.partition, &record.key) {
            (Some(p), _) if p < partitions => p,
            (Some(p), _) => {
                return Err(ClientError::UnknownPartition(format!(
                    "topic `{topic}` has {partitions} partitions, not {}",
                    p.saturating_add(1)
                )));
            }
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => self.round_robin.next(partitions),
        };
        let (done, rx) = oneshot::channel();
        let queue = self.worker(topic, partition);
        queue
            .send(Pending { record, done })
            .await
            .map_err(|_| ClientError::Unavailable("the producer worker stopped".into()))?;
        Ok(DeliveryFuture { rx })
    }

    /// Sends one record and waits for its acknowledgement.
    pub async fn send_and_wait(
        &self,
        topic: &str,
        record: ProducerRecord,
    ) -> Result<RecordMetadata, ClientError> {
        self.send(topic, record).await?.await
    }

    fn worker(&self, topic: &str, partition: u32) -> mpsc::Sender<Pending> {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up by `&str`: no allocation per record once the worker exists.
        if let Some(tx) = workers
            .get(topic)
            .and_then(|partitions| partitions.get(&partition))
            .filter(|tx| !tx.is_closed())
        {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(self.config.queue_capacity.max(1));
        tokio::spawn(run_partition_worker(
            self.client.clone(),
            self.config.clone(),
            topic.to_string(),
            partition,
            rx,
        ));
        workers
            .entry(topic.to_string())
            .or_default()
            .insert(partition, tx.clone());
        tx
    }
}

async fn run_partition_worker(
    client: Client,
    config: ProducerConfig,
    topic: String,
    partition: u32,
    mut queue: mpsc::Receiver<Pending>,
) {
    while let Some(first) = queue.recv().await {
        let mut bytes = first.record.size();
        let mut batch = vec![first];
        let linger_until = tokio::time::Instant::now() + config.linger;
        while bytes < config.batch_max_bytes {
            let next = match queue.try_recv() {
                Ok(next) => Some(next),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                // Tokio's timers tick in whole milliseconds: a linger that is over (or
                // zero) must not wait for the next tick.
                Err(mpsc::error::TryRecvError::Empty)
                    if tokio::time::Instant::now() >= linger_until =>
                {
                    None
                }
                Err(mpsc::error::TryRecvError::Empty) => {
                    tokio::time::timeout_at(linger_until, queue.recv())
                        .await
                        .ok()
                        .flatten()
                }
            };
            let Some(next) = next else { break };
            let size = next.record.size();
            if bytes + size > config.batch_max_bytes {
                // Too big to join: send what we have, then start the next batch with it.
                send_batch(&client, &config, &topic, partition, batch).await;
                bytes = size;
                batch = vec![next];
                continue;
            }
            bytes += size;
            batch.push(next);
        }
        send_batch(&client, &config, &topic, partition, batch).await;
    }
}

async fn send_batch(
    client: &Client,
    config: &ProducerConfig,
    topic: &str,
    partition: u32,
    batch: Vec<Pending>,
) {
    let bytes: usize = batch.iter().map(|p| p.record.size()).sum();
    let mut builder = BatchBuilder::with_capacity(bytes);
    for pending in &batch {
        pending.record.encode(&mut builder);
    }
    let record_count = builder.count();
    let records = builder.finish();
    let deadline = Instant::now() + config.delivery_timeout;
    let request_timeout = client.config().request_timeout;
    let result = client
        .with_leader(topic, partition, deadline, |addr| {
            let request = ProduceRequest {
                topic: topic.to_string(),
                partition,
                records: records.clone(),
                record_count,
                timeout_ms: request_timeout.as_millis() as u32,
            };
            async move {
                let mut rpc = client.data_client(&addr)?;
                let mut request = tonic::Request::new(request);
                request.set_timeout(request_timeout + Duration::from_secs(1));
                rpc.produce(request)
                    .await
                    .map(|r| r.into_inner().base_offset)
                    .map_err(|s| ClientError::from_status(&addr, &s))
            }
        })
        .await;
    for (i, pending) in batch.into_iter().enumerate() {
        let outcome = match &result {
            Ok(base) => Ok(RecordMetadata {
                topic: topic.to_string(),
                partition,
                offset: base + i as u64,
            }),
            Err(err) => Err(err.clone()),
        };
        // The caller may have stopped waiting; that is fine.
        let _ = pending.done.send(outcome);
    }
}
