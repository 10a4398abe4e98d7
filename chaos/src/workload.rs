//! The workload: producers writing unique values, each to its own partition (so that
//! one unavailable partition does not stall the others), recording every outcome; and
//! consumers following every partition from offset 0, recording what they read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use strait_client::{
    Client, ClientError, Compression, OffsetSpec, PartitionConsumer, ProducerConfig, ProducerRecord,
};
use tokio::task::JoinHandle;

use crate::history::{ConsumerView, History, Outcome, ProduceOp};

#[derive(Debug, Clone, Copy)]
pub struct WorkloadConfig {
    pub producers: u32,
    pub consumers: u32,
    pub partitions: u32,
}

/// The running workload; [`Workload::stop`] ends it and files the consumers' views.
pub struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    consumers: Vec<JoinHandle<ConsumerView>>,
}

/// Errors that prove nothing was written.
fn refused_before_write(err: &ClientError) -> bool {
    matches!(
        err,
        ClientError::UnknownTopic(_)
            | ClientError::UnknownPartition(_)
            | ClientError::RecordTooLarge(_)
            | ClientError::InvalidRequest(_)
            | ClientError::Config(_)
    )
}

impl Workload {
    pub fn start(
        client: &Client,
        topic: &str,
        config: WorkloadConfig,
        history: Arc<History>,
    ) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for producer_id in 0..config.producers {
            let producer = client.producer(ProducerConfig {
                linger: Duration::from_millis(1),
                delivery_timeout: Duration::from_secs(10),
                // Every other producer compresses, so that compressed batches go
                // through every fault too.
                compression: if producer_id % 2 == 1 {
                    Compression::Lz4
                } else {
                    Compression::None
                },
                ..ProducerConfig::default()
            });
            let (stop, history, topic) = (stop.clone(), history.clone(), topic.to_string());
            tasks.push(tokio::spawn(async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let partition = producer_id % config.partitions;
                    let value = format!("p{producer_id}-{seq}");
                    seq += 1;
                    let start_ms = history.now_ms();
                    let result = producer
                        .send_and_wait(
                            &topic,
                            ProducerRecord::new(value.clone()).partition(partition),
                        )
                        .await;
                    let outcome = match result {
                        Ok(meta) => Outcome::Acked {
                            offset: meta.offset,
                        },
                        Err(err) if refused_before_write(&err) => Outcome::Failed {
                            error: err.to_string(),
                        },
                        Err(err) => Outcome::Unknown {
                            error: err.to_string(),
                        },
                    };
                    history.lock().produces.push(ProduceOp {
                        producer: producer_id,
                        partition,
                        value,
                        start_ms,
                        end_ms: history.now_ms(),
                        outcome,
                    });
                }
            }));
        }
        let mut consumers = Vec::new();
        for consumer_id in 0..config.consumers {
            for partition in 0..config.partitions {
                let (stop, client, topic) = (stop.clone(), client.clone(), topic.to_string());
                consumers.push(tokio::spawn(follow(
                    client,
                    topic,
                    consumer_id,
                    partition,
                    stop,
                )));
            }
        }
        Workload {
            stop,
            tasks,
            consumers,
        }
    }

    /// Stops every task and records the consumers' views in `history`.
    pub async fn stop(self, history: &History) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        for consumer in self.consumers {
            if let Ok(view) = consumer.await {
                history.lock().consumers.push(view);
            }
        }
    }
}

/// Reads `partition` from offset 0 until stopped, re-creating the consumer at its
/// position after errors.
async fn follow(
    client: Client,
    topic: String,
    consumer: u32,
    partition: u32,
    stop: Arc<AtomicBool>,
) -> ConsumerView {
    let mut view = ConsumerView {
        consumer,
        partition,
        ..ConsumerView::default()
    };
    let mut current: Option<PartitionConsumer> = None;
    let mut retry = tokio::time::interval(Duration::from_millis(200));
    while !stop.load(Ordering::Relaxed) {
        let next = view.records.last().map_or(0, |(o, _)| o + 1);
        let reader = match current.as_mut() {
            Some(reader) => reader,
            None => {
                retry.tick().await;
                match PartitionConsumer::new(
                    client.clone(),
                    &topic,
                    partition,
                    OffsetSpec::At(next),
                    Default::default(),
                )
                .await
                {
                    Ok(reader) => current.insert(reader),
                    Err(_) => {
                        view.errors += 1;
                        continue;
                    }
                }
            }
        };
        let polled = tokio::time::timeout(Duration::from_secs(5), reader.poll()).await;
        match polled {
            Ok(Ok(records)) => view.records.extend(
                records
                    .into_iter()
                    .map(|r| (r.offset, String::from_utf8_lossy(&r.value).into_owned())),
            ),
            Ok(Err(_)) | Err(_) => {
                view.errors += 1;
                current = None;
            }
        }
    }
    view
}
