//! The batching producer.
//!
//! Each partition gets a worker task fed by a bounded queue (backpressure: `send` waits
//! when it is full). A worker takes the first waiting record, lingers up to `linger` for
//! more (up to `batch_max_bytes`), sends the batch to the partition leader and retries it
//! through leader changes until `delivery_timeout`.
//!
//! An idempotent producer (the default) takes a producer id from the cluster and numbers
//! the records it sends to each partition; the leader writes each batch once, so a retry
//! after a lost answer does not duplicate it, and up to `max_in_flight` batches per
//! partition may be on their way at once without reordering (the leader admits them in
//! sequence). When a batch fails for good, later batches of its partition already sent
//! fail too (the order would break otherwise), and the partition starts over with a new
//! producer id. Without idempotence one batch per partition is in flight, and a retry
//! after a timed-out request may write a batch twice.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use strait_proto::v1::{InitProducerRequest, ProduceRequest};
use strait_records::{BatchBuilder, Compression};
use tokio::sync::{OnceCell, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::error::ClientError;
use crate::partitioner::{RoundRobin, partition_for_key};
use crate::types::{ProducerRecord, RecordMetadata};

/// Most batches an idempotent producer has in flight per partition (the leader
/// remembers as many per producer).
pub const MAX_IN_FLIGHT_LIMIT: usize = 5;

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
    /// Write each batch exactly once per partition, even when retried (see the module
    /// documentation).
    pub idempotent: bool,
    /// Batches in flight per partition: 1 to [`MAX_IN_FLIGHT_LIMIT`] when idempotent,
    /// always 1 otherwise.
    pub max_in_flight: usize,
    /// How batches are compressed (brokers store them so; consumers decompress).
    /// Records of a compressed batch get the producer's clock as their timestamp
    /// when they carry none.
    pub compression: Compression,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::from_millis(5),
            batch_max_bytes: 512 * 1024,
            queue_capacity: 10_000,
            delivery_timeout: Duration::from_secs(60),
            idempotent: true,
            max_in_flight: MAX_IN_FLIGHT_LIMIT,
            compression: Compression::None,
        }
    }
}

impl ProducerConfig {
    fn in_flight(&self) -> usize {
        if self.idempotent {
            self.max_in_flight.clamp(1, MAX_IN_FLIGHT_LIMIT)
        } else {
            1
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

/// What a producer has sent so far (Kafka's `records-per-request-avg` and
/// `batch-size-avg`, from these). Requests count every attempt, retries included;
/// batches and records count each batch once, whether it was acknowledged or failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// Produce requests sent.
    pub requests: u64,
    /// Batches built and sent (each once, however many attempts it took).
    pub batches: u64,
    /// Records in those batches.
    pub records: u64,
    /// Their encoded (compressed, if so configured) bytes.
    pub batch_bytes: u64,
}

impl std::ops::AddAssign for ProducerStats {
    /// Sums the stats of several producers.
    fn add_assign(&mut self, other: ProducerStats) {
        self.requests += other.requests;
        self.batches += other.batches;
        self.records += other.records;
        self.batch_bytes += other.batch_bytes;
    }
}

/// The counters behind [`ProducerStats`], shared by a producer's partition workers.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    batches: AtomicU64,
    records: AtomicU64,
    batch_bytes: AtomicU64,
}

pub struct Producer {
    client: Client,
    config: ProducerConfig,
    counters: Arc<Counters>,
    /// Topic → partition → that partition's worker queue.
    workers: Mutex<HashMap<String, HashMap<u32, mpsc::Sender<Pending>>>>,
    round_robin: RoundRobin,
    /// The producer id, asked for when the producer is made (or by its first batch).
    producer_id: Arc<OnceCell<u64>>,
}

impl Client {
    /// A producer sharing this client's connections and metadata.
    ///
    /// An idempotent producer asks for its producer id at once, in the background (as
    /// Kafka's sender thread does when it starts), so that its first batch need not wait
    /// for it; if that fails, its first batch asks again.
    pub fn producer(&self, config: ProducerConfig) -> Producer {
        let producer_id = Arc::new(OnceCell::new());
        if config.idempotent
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (client, id) = (self.clone(), producer_id.clone());
            runtime.spawn(async move {
                let _ = shared_id(&id, &client).await;
            });
        }
        Producer {
            client: self.clone(),
            config,
            counters: Arc::default(),
            workers: Mutex::new(HashMap::new()),
            round_robin: RoundRobin::default(),
            producer_id,
        }
    }

    /// A new idempotent producer id from the cluster (unique, never reused).
    pub async fn init_producer_id(&self) -> Result<u64, ClientError> {
        self.with_any_broker(|addr| async move {
            self.data_client(&addr)?
                .init_producer(InitProducerRequest {})
                .await
                .map(|r| r.into_inner().producer_id)
                .map_err(|s| ClientError::from_status(&addr, &s))
        })
        .await
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

    /// Waits until an idempotent producer has its producer id (at once for one that is
    /// not idempotent): what a producer sets up before its first batch can go out.
    pub async fn ready(&self) -> Result<(), ClientError> {
        if self.config.idempotent {
            shared_id(&self.producer_id, &self.client).await?;
        }
        Ok(())
    }

    /// Requests, batches and records sent so far.
    pub fn stats(&self) -> ProducerStats {
        let c = &self.counters;
        ProducerStats {
            requests: c.requests.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            records: c.records.load(Ordering::Relaxed),
            batch_bytes: c.batch_bytes.load(Ordering::Relaxed),
        }
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
            Worker {
                client: self.client.clone(),
                config: self.config.clone(),
                counters: self.counters.clone(),
                topic: topic.to_string(),
                partition,
                producer_id: self.producer_id.clone(),
                sequence: Arc::new(Mutex::new(Sequence::default())),
            },
            rx,
        ));
        workers
            .entry(topic.to_string())
            .or_default()
            .insert(partition, tx.clone());
        tx
    }
}

/// The producer id its partitions share: asked for once, by whoever needs it first.
async fn shared_id(cell: &OnceCell<u64>, client: &Client) -> Result<u64, ClientError> {
    cell.get_or_try_init(|| client.init_producer_id())
        .await
        .copied()
}

/// One partition's worker: batches, numbers and sends.
#[derive(Clone)]
struct Worker {
    client: Client,
    config: ProducerConfig,
    counters: Arc<Counters>,
    topic: String,
    partition: u32,
    /// The producer's id, shared by its workers.
    producer_id: Arc<OnceCell<u64>>,
    sequence: Arc<Mutex<Sequence>>,
}

/// How a worker numbers its batches.
#[derive(Debug, Default)]
struct Sequence {
    /// The id this partition's batches go under: the producer's, or a fresh one after a
    /// batch failed for good (0: not chosen yet).
    producer_id: u64,
    /// The producer's shared id may not be used any more (a batch under it failed).
    own_id: bool,
    next: u64,
    /// The first batch that failed for good: `(producer id, sequence)`. Later batches
    /// under that id cannot be written in order.
    failed: Option<(u64, u64)>,
}

/// A batch's producer id and first sequence number.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    producer_id: u64,
    base_sequence: u64,
}

async fn run_partition_worker(worker: Worker, mut queue: mpsc::Receiver<Pending>) {
    let config = worker.config.clone();
    // Batches on their way, oldest first. A batch goes out only when the one
    // `max_in_flight` places before it is done: a leader remembers that many batches
    // per producer, so a late retry of the oldest is still recognised.
    let mut in_flight = VecDeque::new();
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
                worker.dispatch(batch, &mut in_flight).await;
                bytes = size;
                batch = vec![next];
                continue;
            }
            bytes += size;
            batch.push(next);
        }
        worker.dispatch(batch, &mut in_flight).await;
    }
}

impl Worker {
    /// Waits for room in the window, numbers the batch and sends it in the background.
    async fn dispatch(&self, batch: Vec<Pending>, in_flight: &mut VecDeque<JoinHandle<()>>) {
        while in_flight.front().is_some_and(JoinHandle::is_finished) {
            in_flight.pop_front();
        }
        while in_flight.len() >= self.config.in_flight() {
            if let Some(oldest) = in_flight.pop_front() {
                // A send task that panicked has dropped its records' senders: their
                // callers see the producer as dropped.
                let _ = oldest.await;
            }
        }
        let stamp = if self.config.idempotent {
            match self.stamp(batch.len()).await {
                Ok(stamp) => Some(stamp),
                Err(err) => {
                    for pending in batch {
                        let _ = pending.done.send(Err(err.clone()));
                    }
                    return;
                }
            }
        } else {
            None
        };
        in_flight.push_back(tokio::spawn(self.clone().send_batch(batch, stamp)));
    }

    /// Numbers the next batch of `records` records.
    async fn stamp(&self, records: usize) -> Result<Stamp, ClientError> {
        let (current, own_id) = {
            let sequence = self.lock_sequence();
            (sequence.producer_id, sequence.own_id)
        };
        if current == 0 {
            let id = if own_id {
                self.client.init_producer_id().await?
            } else {
                shared_id(&self.producer_id, &self.client).await?
            };
            let mut sequence = self.lock_sequence();
            sequence.producer_id = id;
            sequence.next = 0;
        }
        let mut sequence = self.lock_sequence();
        let stamp = Stamp {
            producer_id: sequence.producer_id,
            base_sequence: sequence.next,
        };
        sequence.next = sequence.next.wrapping_add(records as u64);
        Ok(stamp)
    }

    fn lock_sequence(&self) -> std::sync::MutexGuard<'_, Sequence> {
        self.sequence.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why the batch `stamp` must not be sent: an earlier batch under its id failed.
    fn blocked(&self, stamp: Option<Stamp>) -> Option<ClientError> {
        let stamp = stamp?;
        let (id, seq) = self.lock_sequence().failed?;
        (id == stamp.producer_id && stamp.base_sequence.wrapping_sub(seq) as i64 > 0).then(|| {
            ClientError::Aborted(format!(
                "an earlier batch of partition {} failed; this one was not written, to keep the order",
                self.partition
            ))
        })
    }

    /// The batch `stamp` failed for good: later batches under its id cannot follow it,
    /// and the partition goes on under a fresh producer id.
    fn note_failure(&self, stamp: Option<Stamp>) {
        let Some(stamp) = stamp else { return };
        let mut sequence = self.lock_sequence();
        if sequence
            .failed
            .is_some_and(|(id, seq)| id == stamp.producer_id && seq <= stamp.base_sequence)
        {
            return;
        }
        sequence.failed = Some((stamp.producer_id, stamp.base_sequence));
        if sequence.producer_id == stamp.producer_id {
            sequence.producer_id = 0;
            sequence.own_id = true;
        }
    }

    async fn send_batch(self, batch: Vec<Pending>, stamp: Option<Stamp>) {
        let (client, config, topic, partition) =
            (&self.client, &self.config, &self.topic, self.partition);
        let bytes: usize = batch.iter().map(|p| p.record.size()).sum();
        let mut builder = BatchBuilder::with_capacity(bytes);
        let compression = config.compression;
        // The leader cannot stamp the append time into a compressed batch.
        let default_timestamp = match compression {
            Compression::None => 0,
            _ => now_ms(),
        };
        for pending in &batch {
            pending.record.encode(&mut builder, default_timestamp);
        }
        let record_count = builder.count();
        let records = match compression {
            Compression::None => Ok(builder.finish()),
            codec => codec
                .compress(&builder.finish())
                .map_err(|err| ClientError::Internal(format!("cannot compress a batch: {err}"))),
        };
        let records = match records {
            Ok(records) => records,
            Err(err) => {
                // Its sequence numbers were taken: later batches cannot follow it.
                self.note_failure(stamp);
                for pending in batch {
                    let _ = pending.done.send(Err(err.clone()));
                }
                return;
            }
        };
        let counters = &self.counters;
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters
            .records
            .fetch_add(u64::from(record_count), Ordering::Relaxed);
        counters
            .batch_bytes
            .fetch_add(records.len() as u64, Ordering::Relaxed);
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
                    producer_id: stamp.map_or(0, |s| s.producer_id),
                    base_sequence: stamp.map_or(0, |s| s.base_sequence),
                    compression: i32::from(compression.code()),
                };
                let blocked = self.blocked(stamp);
                async move {
                    if let Some(err) = blocked {
                        return Err(err);
                    }
                    let session = client.produce_session(&addr)?;
                    counters.requests.fetch_add(1, Ordering::Relaxed);
                    session
                        .call(request, request_timeout + Duration::from_secs(1))
                        .await
                        .map(|r| r.base_offset)
                }
            })
            .await;
        if result.is_err() && self.blocked(stamp).is_none() {
            self.note_failure(stamp);
        }
        let topic: Arc<str> = Arc::from(topic.as_str());
        for (i, pending) in batch.into_iter().enumerate() {
            let outcome = match &result {
                Ok(base) => Ok(RecordMetadata {
                    topic: topic.clone(),
                    partition,
                    offset: base + i as u64,
                }),
                Err(err) => Err(err.clone()),
            };
            // The caller may have stopped waiting; that is fine.
            let _ = pending.done.send(outcome);
        }
    }
}

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
