//! The load: producers sending records as fast as their in-flight window allows, or at
//! a fixed total rate, recording acknowledgement latency. At a fixed rate, latency is
//! measured from each record's *intended* send time, so a stall that delays later sends
//! is counted against them (no coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use clap::Args;
use strait_client::{
    Client, ClientError, Compression, DeliveryFuture, ProducerConfig, ProducerRecord,
    ProducerStats, partition_for_key,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::pacer::Pacer;
use crate::payload::{Filler, Payload};
use crate::stats::Latency;
use crate::timeline::{Interval, Timeline};

#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Records to produce in total (ignored with --duration).
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Produce for this many seconds instead of a record count.
    #[arg(long)]
    pub duration: Option<u64>,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// A size mix instead of one size: comma-separated sizes, used in turn.
    #[arg(long, value_delimiter = ',')]
    pub record_sizes: Option<Vec<usize>>,
    /// Concurrent producers (each with its own window and batching).
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Records awaiting acknowledgement at once, per producer (1 = one at a time).
    #[arg(long, default_value_t = 1000)]
    pub in_flight: usize,
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    #[arg(long, default_value_t = 512 * 1024)]
    pub batch_bytes: usize,
    /// Total records per second across producers (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Keys: 0 for none (round-robin partitions), or this many distinct keys in turn.
    #[arg(long, default_value_t = 0)]
    pub keys: u64,
    /// Idempotent producers (`--idempotence false`: at-least-once, one batch in flight
    /// per partition).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub idempotence: bool,
    /// Batches in flight per partition and producer (1 to 5; 1 without idempotence).
    #[arg(long, default_value_t = 5)]
    pub batches_in_flight: usize,
    /// Batch compression: none, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    /// Seconds at the start whose records are sent but left out of the latency
    /// figures (OpenMessaging Benchmark's warm-up). Throughput counts the whole run.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// What values hold after their send time: synthetic log lines, or random bytes.
    #[arg(long, value_enum, default_value_t = Payload::Text)]
    pub payload: Payload,
    /// Also report acknowledgement latency per this many ms of due time, warm-up
    /// included (keeps 4 bytes per record until the end of the run).
    #[arg(long)]
    pub timeline_ms: Option<u64>,
}

fn parse_compression(name: &str) -> Result<Compression, String> {
    Compression::parse(name).ok_or_else(|| format!("`{name}`: use none, lz4 or zstd"))
}

impl LoadArgs {
    /// When the warm-up ends if the load starts now: records due from then on are timed.
    pub fn warmup_end(&self) -> Instant {
        Instant::now() + Duration::from_secs(self.warmup)
    }

    /// An empty timeline for a load started at `started`, if `--timeline-ms` asks for
    /// one.
    fn timeline(&self, started: Instant) -> Option<Timeline> {
        self.timeline_ms
            .map(|ms| Timeline::new(started, Duration::from_millis(ms)))
    }

    pub fn describe(&self) -> String {
        let sizes = match &self.record_sizes {
            Some(mix) => format!("sizes {mix:?} B"),
            None => format!("{} B records", self.record_size),
        };
        let amount = match self.duration {
            Some(secs) => format!("{secs} s"),
            None => format!("{} records", self.records),
        };
        let rate = if self.rate > 0.0 {
            format!("{} records/s", self.rate)
        } else {
            "unlimited rate".to_string()
        };
        let idempotence = if self.idempotence {
            format!(
                "idempotent, {} batches in flight per partition",
                self.batches_in_flight
            )
        } else {
            "not idempotent".to_string()
        };
        let warmup = if self.warmup > 0 {
            format!("; latency from {} s in (warm-up)", self.warmup)
        } else {
            String::new()
        };
        format!(
            "{amount} of {sizes} ({:?} payload); {} producer(s), in-flight {}, linger {} ms, batch {} B, compression {}, {idempotence}; {rate}; {} keys{warmup}",
            self.payload,
            self.producers,
            self.in_flight,
            self.linger_ms,
            self.batch_bytes,
            self.compression.name(),
            self.keys
        )
    }
}

/// What the producers did.
pub struct Produced {
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub latency: Latency,
    pub errors: u64,
    /// Requests, batches and records the producers sent.
    pub sent: ProducerStats,
    /// At a fixed rate: how late each record was handed to the producer after its due
    /// time (the load generator's own delay, part of every latency above).
    pub send_lag: Option<Latency>,
    /// Latency per interval of due time (`--timeline-ms`).
    pub timeline: Option<Vec<Interval>>,
}

/// Microseconds since the epoch: stamped into each value for end-to-end latency.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The send time stamped in a value by [`run`], if it has one.
pub fn stamp_of(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.get(..8)?.try_into().ok()?))
}

/// Runs the load against `topic`, timing the records due from `measured_from` on
/// ([`LoadArgs::warmup_end`]); prints a progress line every second.
pub async fn run(
    client: &Client,
    topic: &str,
    args: &LoadArgs,
    measured_from: Instant,
) -> anyhow::Result<Produced> {
    let producers = args.producers.max(1);
    let acked = Arc::new(AtomicU64::new(0));
    let acked_bytes = Arc::new(AtomicU64::new(0));
    let slowest = Arc::new(AtomicU64::new(0));
    let partitions = client.topic(topic).await?.partitions.len().max(1) as u32;
    // The producers are set up before the load starts (an idempotent one has its
    // producer id), as the OpenMessaging Benchmark makes its producers before it
    // measures: the first records wait for a batch, not for the cluster's id round.
    let mut made = Vec::new();
    for _ in 0..producers {
        let producer = client.producer(ProducerConfig {
            linger: Duration::from_millis(args.linger_ms),
            batch_max_bytes: args.batch_bytes,
            idempotent: args.idempotence,
            max_in_flight: args.batches_in_flight,
            compression: args.compression,
            ..ProducerConfig::default()
        });
        producer.ready().await?;
        made.push(producer);
    }
    let started = Instant::now();
    let deadline = args.duration.map(|s| started + Duration::from_secs(s));
    let progress = tokio::spawn(progress(
        acked.clone(),
        acked_bytes.clone(),
        slowest.clone(),
    ));
    let mut tasks = Vec::new();
    for (p, producer) in (0..producers).zip(made) {
        let quota = args.records / u64::from(producers)
            + u64::from(u64::from(p) < args.records % u64::from(producers));
        let (args, topic) = (args.clone(), topic.to_string());
        let (acked, acked_bytes, slowest) = (acked.clone(), acked_bytes.clone(), slowest.clone());
        tasks.push(tokio::spawn(async move {
            // A partition acknowledges its records in the order they were sent, so one
            // task per partition awaits them in turn: each acknowledgement is seen as
            // soon as it arrives, with no polling of thousands of futures.
            let window = Arc::new(Semaphore::new(args.in_flight.max(1)));
            let mut queues = Vec::new();
            let mut waiters = Vec::new();
            for _ in 0..partitions {
                let (tx, rx) = mpsc::unbounded_channel();
                queues.push(tx);
                waiters.push(tokio::spawn(await_in_order(
                    rx,
                    Tally {
                        latency: Latency::new(),
                        measured_from,
                        records: 0,
                        bytes: 0,
                        errors: 0,
                        acked: acked.clone(),
                        acked_bytes: acked_bytes.clone(),
                        slowest: slowest.clone(),
                        timeline: args.timeline(started),
                    },
                )));
            }
            let per_producer_rate = args.rate / f64::from(producers);
            let sizes = args.record_sizes.clone().unwrap_or(vec![args.record_size]);
            // Keyless records stick to one partition for a batch's worth, then move on
            // (Kafka's sticky partitioner): with many partitions, batches stay full.
            // A batch's worth counts each record as the producer does (with its
            // overhead in the batch): counting values alone, each visit left a few
            // records behind, sent as a batch of their own once the linger ran out.
            let average = sizes.iter().sum::<usize>() / sizes.len().max(1);
            let sticky = records_per_batch(args.batch_bytes, average.max(8));
            let mut sent = 0u64;
            let mut filler = Filler::new(args.payload);
            let mut arenas = Arenas::prefilled();
            let mut arena = BytesMut::with_capacity(ARENA_BYTES);
            let clock = WallClock::new();
            let mut send_lag = Latency::new();
            let pacer = (per_producer_rate > 0.0).then(Pacer::new).transpose()?;
            let start = Instant::now();
            loop {
                let Ok(permit) = window.clone().acquire_owned().await else {
                    break;
                };
                // One clock read per record here (and one after the send at a fixed
                // rate): at 150,000 records/s the benchmark's clock reads were about
                // 5% of its CPU.
                let now = Instant::now();
                let more = match deadline {
                    Some(deadline) => now < deadline,
                    None => sent < quota,
                };
                if !more {
                    break;
                }
                // At a fixed rate, record i is due at start + i / rate.
                let due = if per_producer_rate > 0.0 {
                    let due = start + Duration::from_secs_f64(sent as f64 / per_producer_rate);
                    if let Some(pacer) = pacer.as_ref().filter(|_| due > now) {
                        pacer.sleep_until(due).await?;
                    }
                    due
                } else {
                    now
                };
                let size = sizes[(sent % sizes.len() as u64) as usize].max(8);
                if arena.capacity() < size {
                    arena = arenas.next(std::mem::take(&mut arena), size);
                }
                // The intended send time, so end-to-end latency counts stalls too.
                arena.extend_from_slice(&clock.micros(due).to_le_bytes());
                filler.fill(&mut arena, size - 8);
                let mut record = ProducerRecord::new(arena.split().freeze());
                let partition = if args.keys > 0 {
                    let key = (u64::from(p) + sent * u64::from(producers)) % args.keys;
                    let key = Bytes::from(key.to_string());
                    let partition = partition_for_key(&key, partitions);
                    record = record.key(key);
                    partition
                } else {
                    ((u64::from(p) + sent / sticky) % u64::from(partitions)) as u32
                };
                sent += 1;
                let delivery = producer.send(&topic, record.partition(partition)).await;
                if per_producer_rate > 0.0 && due >= measured_from {
                    send_lag.record(due.elapsed());
                }
                // The waiter outlives the sender: this send cannot fail.
                let _ = queues[partition as usize].send((due, size, delivery, permit));
            }
            drop(queues);
            let (mut latency, mut records, mut bytes, mut errors) = (Latency::new(), 0, 0, 0);
            let mut timeline = args.timeline(started);
            for waiter in waiters {
                match waiter.await {
                    Ok(tally) => {
                        latency.add(&tally.latency);
                        if let (Some(all), Some(part)) = (&mut timeline, tally.timeline) {
                            all.merge(part);
                        }
                        records += tally.records;
                        bytes += tally.bytes;
                        errors += tally.errors;
                    }
                    // A waiter that panicked lost its count: report it as a failure.
                    Err(_) => errors += 1,
                }
            }
            anyhow::Ok((
                latency,
                records,
                bytes,
                errors,
                producer.stats(),
                send_lag,
                timeline,
            ))
        }));
    }
    let mut total = Produced {
        records: 0,
        bytes: 0,
        seconds: 0.0,
        latency: Latency::new(),
        errors: 0,
        sent: ProducerStats::default(),
        send_lag: (args.rate > 0.0).then(Latency::new),
        timeline: None,
    };
    let mut timeline = args.timeline(started);
    for task in tasks {
        let (latency, records, bytes, errors, sent, send_lag, part) = task.await??;
        if let (Some(all), Some(part)) = (&mut timeline, part) {
            all.merge(part);
        }
        if let Some(total) = &mut total.send_lag {
            total.add(&send_lag);
        }
        total.sent += sent;
        total.records += records;
        total.latency.add(&latency);
        total.bytes += bytes;
        total.errors += errors;
    }
    total.seconds = started.elapsed().as_secs_f64();
    total.timeline = timeline.map(Timeline::finish);
    progress.abort();
    Ok(total)
}

/// How many records of `value_bytes` (keyless, no headers) fill a batch of
/// `batch_bytes`, as the producer counts them.
fn records_per_batch(batch_bytes: usize, value_bytes: usize) -> u64 {
    let size = ProducerRecord::new(vec![0u8; value_bytes]).size();
    (batch_bytes / size.max(1)).max(1) as u64
}

/// One producer's tally of finished sends, also reported to the progress line.
struct Tally {
    latency: Latency,
    /// Records due before this are counted but not timed (the warm-up).
    measured_from: Instant,
    records: u64,
    bytes: u64,
    errors: u64,
    acked: Arc<AtomicU64>,
    acked_bytes: Arc<AtomicU64>,
    /// The slowest acknowledgement since the progress line last read it, in µs.
    slowest: Arc<AtomicU64>,
    /// Every record's latency by due time, warm-up included (`--timeline-ms`).
    timeline: Option<Timeline>,
}

impl Tally {
    fn count(&mut self, (due, size, result): (Instant, usize, Result<(), ClientError>)) {
        match result {
            Ok(()) => {
                let took = due.elapsed();
                if due >= self.measured_from {
                    self.latency.record(took);
                }
                if let Some(timeline) = &mut self.timeline {
                    timeline.record(due, took);
                }
                self.records += 1;
                self.slowest
                    .fetch_max(took.as_micros() as u64, Ordering::Relaxed);
                self.bytes += size as u64;
                self.acked.fetch_add(1, Ordering::Relaxed);
                self.acked_bytes.fetch_add(size as u64, Ordering::Relaxed);
            }
            Err(err) => {
                self.errors += 1;
                if self.errors == 1 {
                    eprintln!("produce failed: {err}");
                }
            }
        }
    }
}

/// A send on its way: when it was due, its size, its delivery and its place in the
/// in-flight window.
type InFlight = (
    Instant,
    usize,
    Result<DeliveryFuture, ClientError>,
    OwnedSemaphorePermit,
);

/// Awaits one partition's deliveries in the order they were sent.
async fn await_in_order(mut rx: mpsc::UnboundedReceiver<InFlight>, mut tally: Tally) -> Tally {
    while let Some((due, size, delivery, permit)) = rx.recv().await {
        let result = match delivery {
            Ok(delivery) => delivery.await.map(|_| ()),
            Err(err) => Err(err),
        };
        tally.count((due, size, result));
        drop(permit);
    }
    tally
}

/// Values are cut from shared allocations of this size: no allocation per record.
const ARENA_BYTES: usize = 1 << 20;
/// Used-up arenas kept for reuse: enough to cover the records in flight at once.
const SPARE_ARENAS: usize = 32;

/// Arenas used up and waiting for their records to be acknowledged (dropped), then
/// reused. A fresh arena each time cost the benchmark page faults on every megabyte
/// (the allocator hands freed megabytes back to the kernel), about 7% of its CPU.
#[derive(Default)]
struct Arenas {
    spare: std::collections::VecDeque<BytesMut>,
}

impl Arenas {
    /// The spare arenas, page-faulted before the load starts: otherwise the load's
    /// first fraction of a second pays for them (about 2,200 page faults at 151,000
    /// records/s, when the benchmark is already behind on its sends).
    fn prefilled() -> Arenas {
        let spare = (0..SPARE_ARENAS)
            .map(|_| {
                let mut arena = BytesMut::with_capacity(ARENA_BYTES);
                // Written, not just allocated: the kernel maps a page on its first write.
                arena.resize(ARENA_BYTES, 0);
                arena.clear();
                arena
            })
            .collect();
        Arenas { spare }
    }

    /// An arena with room for `size` bytes, in place of the used-up `done`.
    fn next(&mut self, done: BytesMut, size: usize) -> BytesMut {
        let want = ARENA_BYTES.max(size);
        if self.spare.len() < SPARE_ARENAS {
            self.spare.push_back(done);
        }
        // The oldest are the likeliest to have no records in flight any more.
        for _ in 0..self.spare.len() {
            let Some(mut arena) = self.spare.pop_front() else {
                break;
            };
            if arena.try_reclaim(want) {
                return arena;
            }
            self.spare.push_back(arena);
        }
        BytesMut::with_capacity(want)
    }
}

/// `at` as microseconds since the epoch (for a moment not long ago, or soon).
pub fn wall_micros(at: Instant) -> u64 {
    WallClock::new().micros(at)
}

/// Monotonic instants as wall-clock microseconds, from one reading of both clocks: the
/// load stamps every value without reading the clocks again.
struct WallClock {
    base: Instant,
    base_micros: u64,
}

impl WallClock {
    fn new() -> WallClock {
        WallClock {
            base: Instant::now(),
            base_micros: now_micros(),
        }
    }

    fn micros(&self, at: Instant) -> u64 {
        match at.checked_duration_since(self.base) {
            Some(after) => self.base_micros + after.as_micros() as u64,
            None => self
                .base_micros
                .saturating_sub(self.base.duration_since(at).as_micros() as u64),
        }
    }
}

/// Prints acknowledged records and bytes per second, every second, and the slowest
/// acknowledgement of that second (so a stall shows when it happened).
async fn progress(acked: Arc<AtomicU64>, bytes: Arc<AtomicU64>, slowest: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut last_records, mut last_bytes) = (0u64, 0u64);
    let mut second = 0u64;
    loop {
        tick.tick().await;
        second += 1;
        let (records, total_bytes) = (acked.load(Ordering::Relaxed), bytes.load(Ordering::Relaxed));
        let slowest_ms = slowest.swap(0, Ordering::Relaxed) as f64 / 1000.0;
        eprintln!(
            "  [{second:>4} s] {:>9} records/s {:>8.1} MB/s  max ack {slowest_ms:>7.1} ms  ({records} acknowledged)",
            records - last_records,
            (total_bytes - last_bytes) as f64 / 1e6
        );
        (last_records, last_bytes) = (records, total_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills `arena` with values until it cannot hold another, as the load does.
    fn use_up(arena: &mut BytesMut, values: &mut Vec<Bytes>) {
        while arena.capacity() >= 1000 {
            arena.extend_from_slice(&[7u8; 1000]);
            values.push(arena.split().freeze());
        }
    }

    #[test]
    fn an_arena_is_reused_once_its_values_are_dropped_and_not_before() {
        let mut arenas = Arenas::default();
        let mut arena = BytesMut::with_capacity(ARENA_BYTES);
        let first = arena.as_ptr();
        let mut in_flight = Vec::new();
        use_up(&mut arena, &mut in_flight);
        // Its values are still in flight: the next arena is another allocation.
        let mut arena = arenas.next(arena, 1000);
        assert_ne!(arena.as_ptr(), first);
        assert!(arena.capacity() >= ARENA_BYTES);
        let second = arena.as_ptr();
        let mut newer = Vec::new();
        use_up(&mut arena, &mut newer);
        // The first arena's values were acknowledged: its memory comes back, whole.
        drop(in_flight);
        let arena = arenas.next(arena, 1000);
        assert_eq!(arena.as_ptr(), first);
        assert!(arena.capacity() >= ARENA_BYTES);
        assert_ne!(arena.as_ptr(), second);
        drop(newer);
    }

    #[test]
    fn a_batch_s_worth_counts_records_as_the_producer_does() {
        // 1 KiB values in 512 KiB batches: the per-record overhead leaves room for 501,
        // not 512 (which left 11 records to go alone).
        let n = records_per_batch(512 * 1024, 1024);
        let one = ProducerRecord::new(vec![0u8; 1024]).size();
        assert!(n as usize * one <= 512 * 1024);
        assert!((n as usize + 1) * one > 512 * 1024);
        assert_eq!(records_per_batch(100, 4096), 1);
    }
}
