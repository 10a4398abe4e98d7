//! Consumers: reading a backlog from the start as fast as fetches allow (throughput),
//! or following the end of the log while producers write (end-to-end latency).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use strait_client::{Client, ConsumerConfig, OffsetSpec, PartitionConsumer};

use crate::produce::{now_micros, stamp_of};
use crate::stats::Latency;

/// What the consumers read.
pub struct Consumed {
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// Send-to-receive latency (followers only).
    pub latency: Latency,
}

/// The partitions consumer `i` of `consumers` reads.
fn share(partitions: u32, consumers: u32, i: u32) -> Vec<u32> {
    (0..partitions).filter(|p| p % consumers == i).collect()
}

/// Reads every partition from its start to the high watermark it has now, with
/// `consumers` consumers sharing the partitions, each reading its share concurrently;
/// `fetch_bytes` per fetch.
pub async fn backlog(
    client: &Client,
    topic: &str,
    partitions: u32,
    consumers: u32,
    fetch_bytes: u32,
) -> anyhow::Result<Consumed> {
    let consumers = consumers.clamp(1, partitions.max(1));
    let started = Instant::now();
    // A consumer reads its partitions concurrently, as Kafka's fetcher does (one fetch
    // in flight per partition), not one partition after another.
    let mut tasks = Vec::new();
    for i in 0..consumers {
        for partition in share(partitions, consumers, i) {
            let (client, topic) = (client.clone(), topic.to_string());
            tasks.push(tokio::spawn(async move {
                let (mut records, mut bytes) = (0u64, 0u64);
                let (start, end) = client.list_offsets(&topic, partition).await?;
                let config = ConsumerConfig {
                    max_bytes: fetch_bytes,
                    ..ConsumerConfig::default()
                };
                let mut consumer = PartitionConsumer::new(
                    client.clone(),
                    &topic,
                    partition,
                    OffsetSpec::Earliest,
                    config,
                )
                .await?;
                while consumer.position() < end {
                    let mut expected = consumer.position();
                    for record in consumer.poll().await? {
                        next_in_order(partition, &mut expected, record.offset)?;
                        records += 1;
                        bytes += record.value.len() as u64;
                    }
                }
                if records != end - start {
                    anyhow::bail!(
                        "partition {partition}: read {records} records of log {start}..{end}"
                    );
                }
                anyhow::Ok((records, bytes))
            }));
        }
    }
    let mut total = Consumed {
        records: 0,
        bytes: 0,
        seconds: 0.0,
        latency: Latency::new(),
    };
    for task in tasks {
        let (records, bytes) = task.await??;
        total.records += records;
        total.bytes += bytes;
    }
    total.seconds = started.elapsed().as_secs_f64();
    Ok(total)
}

/// Consumers following the end of every partition until `stop` is set and they have
/// read everything up to the high watermark at that moment.
pub struct Followers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Consumed>>>,
}

impl Followers {
    /// Starts `consumers` consumers at the current end of every partition. Records
    /// stamped before `measured_from` (µs since the epoch) are read but not timed.
    pub async fn start(
        client: &Client,
        topic: &str,
        partitions: u32,
        consumers: u32,
        measured_from: u64,
    ) -> anyhow::Result<Followers> {
        let consumers = consumers.clamp(1, partitions.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for i in 0..consumers {
            // A consumer fetches its partitions concurrently (as Kafka's fetcher does):
            // one long poll waiting on a quiet partition must not hold up the others.
            for partition in share(partitions, consumers, i) {
                let config = ConsumerConfig {
                    max_wait: Duration::from_millis(100),
                    ..ConsumerConfig::default()
                };
                let reader = PartitionConsumer::new(
                    client.clone(),
                    topic,
                    partition,
                    OffsetSpec::Latest,
                    config,
                )
                .await?;
                let (client, topic, stop) = (client.clone(), topic.to_string(), stop.clone());
                tasks.push(tokio::spawn(follow(
                    client,
                    topic,
                    vec![reader],
                    stop,
                    measured_from,
                )));
            }
        }
        Ok(Followers { stop, tasks })
    }

    /// Stops the followers once they caught up with the end of the log.
    pub async fn finish(self) -> anyhow::Result<Consumed> {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Consumed {
            records: 0,
            bytes: 0,
            seconds: 0.0,
            latency: Latency::new(),
        };
        for task in self.tasks {
            let part = task.await??;
            total.records += part.records;
            total.bytes += part.bytes;
            total.latency.add(&part.latency);
        }
        Ok(total)
    }
}

/// One fetch loop: polls its partitions in turn (the followers give it one), measuring each record's latency
/// from the send time stamped in its value.
async fn follow(
    client: Client,
    topic: String,
    mut readers: Vec<PartitionConsumer>,
    stop: Arc<AtomicBool>,
    measured_from: u64,
) -> anyhow::Result<Consumed> {
    let mut done = Consumed {
        records: 0,
        bytes: 0,
        seconds: 0.0,
        latency: Latency::new(),
    };
    // The offsets to reach once stopped.
    let mut ends: Option<Vec<u64>> = None;
    loop {
        if ends.is_none() && stop.load(Ordering::Relaxed) {
            let mut targets = Vec::new();
            for reader in &readers {
                targets.push(client.list_offsets(&topic, reader.partition()).await?.1);
            }
            ends = Some(targets);
        }
        if let Some(ends) = &ends
            && readers
                .iter()
                .zip(ends)
                .all(|(r, end)| r.position() >= *end)
        {
            return Ok(done);
        }
        for reader in &mut readers {
            let mut expected = reader.position();
            let records = reader.poll().await?;
            // A response's records all arrived now: one clock read serves them all.
            let now = now_micros();
            for record in records {
                next_in_order(reader.partition(), &mut expected, record.offset)?;
                if let Some(sent) = stamp_of(&record.value).filter(|&t| t >= measured_from) {
                    done.latency
                        .record(Duration::from_micros(now.saturating_sub(sent)));
                }
                done.records += 1;
                done.bytes += record.value.len() as u64;
            }
        }
    }
}

/// Checks that a consumer got `offset` where it expected the next one: every offset
/// must arrive once, in order, since a gap is a lost record, not a faster read.
fn next_in_order(partition: u32, expected: &mut u64, offset: u64) -> anyhow::Result<()> {
    if offset != *expected {
        anyhow::bail!("partition {partition}: expected offset {expected}, got {offset}");
    }
    *expected += 1;
    Ok(())
}
