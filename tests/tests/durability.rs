//! Crash durability of the segment store: brokers are killed with SIGKILL while
//! producers write, over several rounds, then every acknowledged record must be read
//! back at its acknowledged offset, and nothing unreadable or unknown may be served.
//! Brokers 1 and 2 write with direct I/O (bypassing the page cache, the default),
//! broker 3 through it (`--direct-io=false`), so that both ways of writing are killed
//! mid-append.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use strait_client::{Client, OffsetSpec, PartitionConsumer, ProducerRecord};
use strait_tests::{Cluster, ClusterOptions, wait_until};
use tokio::sync::Mutex;

type Acked = Arc<Mutex<BTreeMap<(u32, u64), String>>>;

/// Writes windows of 50 records until `stop`, recording every acknowledgement.
fn spawn_writer(
    client: Client,
    acked: Acked,
    sent: Arc<Mutex<HashSet<String>>>,
    stop: Arc<AtomicBool>,
    id: u32,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let producer = client.producer(Default::default());
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let mut window = Vec::new();
            for _ in 0..50 {
                let value = format!("w{id}-{n}");
                n += 1;
                sent.lock().await.insert(value.clone());
                match producer
                    .send(
                        "crashy",
                        ProducerRecord::new(value.clone()).key(format!("k{}", n % 17)),
                    )
                    .await
                {
                    Ok(delivery) => window.push((value, delivery)),
                    Err(_) => break,
                }
            }
            for (value, delivery) in window {
                if let Ok(meta) = delivery.await {
                    acked
                        .lock()
                        .await
                        .insert((meta.partition, meta.offset), value);
                }
            }
        }
    })
}

async fn acked_count(acked: &Acked) -> usize {
    acked.lock().await.len()
}

/// Acknowledged records per partition.
async fn per_partition(acked: &Acked) -> [usize; 3] {
    let mut counts = [0; 3];
    for (partition, _) in acked.lock().await.keys() {
        if let Some(c) = counts.get_mut(*partition as usize) {
            *c += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_rounds_of_kill9_during_produce() -> anyhow::Result<()> {
    let mut options = ClusterOptions::default();
    options
        .extra_args
        .insert(3, vec!["--direct-io=false".to_string()]);
    let mut cluster = Cluster::start_with(3, options).await?;
    let client = cluster.client().await?;
    client.create_topic("crashy", 3, 3).await?;
    client
        .wait_for_leaders("crashy", Duration::from_secs(30))
        .await?;

    let acked: Acked = Arc::default();
    let sent = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|id| {
            spawn_writer(
                client.clone(),
                acked.clone(),
                sent.clone(),
                stop.clone(),
                id,
            )
        })
        .collect();

    // One broker at a time, then all three at once.
    let rounds: Vec<Vec<u64>> = vec![vec![1], vec![2], vec![3], vec![1, 2, 3]];
    for victims in rounds {
        let before = acked_count(&acked).await;
        wait_until(
            "writes before the kill",
            Duration::from_secs(60),
            || async { (acked_count(&acked).await >= before + 300).then_some(()) },
        )
        .await?;
        let t0 = std::time::Instant::now();
        for id in &victims {
            cluster.kill9(*id);
        }
        if victims.len() == 1 {
            // With one broker down, the others elect new leaders and keep taking writes;
            // the victim comes back with a log to reconcile (truncating what never
            // committed).
            let down = per_partition(&acked).await;
            wait_until(
                "writes to every partition with one broker down",
                Duration::from_secs(90),
                || async {
                    let now = per_partition(&acked).await;
                    now.iter()
                        .zip(down)
                        .all(|(n, b)| *n >= b + 100)
                        .then_some(())
                },
            )
            .await?;
        }
        for id in &victims {
            cluster.restart(*id)?;
        }
        cluster.wait_ready(Duration::from_secs(60)).await?;
        // Every partition, including those the victims led, takes writes again.
        let after_restart = per_partition(&acked).await;
        wait_until(
            "writes to every partition after the restart",
            Duration::from_secs(90),
            || async {
                let now = per_partition(&acked).await;
                now.iter()
                    .zip(after_restart)
                    .all(|(n, b)| *n >= b + 100)
                    .then_some(())
            },
        )
        .await?;
        eprintln!(
            "round {victims:?}: every partition writable {:?} after the kill; {:?} acknowledged",
            t0.elapsed(),
            per_partition(&acked).await
        );
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await?;
    }

    let client = cluster.client().await?;
    client
        .wait_for_leaders("crashy", Duration::from_secs(60))
        .await?;
    let acked = acked.lock().await.clone();
    let sent = sent.lock().await.clone();
    for partition in 0..3u32 {
        let (start, high_watermark) = client.list_offsets("crashy", partition).await?;
        assert_eq!(start, 0);
        let mut consumer = PartitionConsumer::new(
            client.clone(),
            "crashy",
            partition,
            OffsetSpec::At(0),
            Default::default(),
        )
        .await?;
        let mut next = 0u64;
        while consumer.position() < high_watermark {
            for record in consumer.poll().await? {
                assert_eq!(
                    record.offset, next,
                    "offsets are contiguous in partition {partition}"
                );
                next += 1;
                let value = String::from_utf8(record.value.to_vec())?;
                assert!(
                    sent.contains(&value),
                    "partition {partition} serves {value:?}, never produced"
                );
                if let Some(expected) = acked.get(&(partition, record.offset)) {
                    assert_eq!(
                        &value, expected,
                        "acknowledged record {partition}/{} changed",
                        record.offset
                    );
                }
            }
        }
        let acked_here = acked.keys().filter(|(p, _)| *p == partition).count() as u64;
        assert!(
            acked
                .keys()
                .filter(|(p, _)| *p == partition)
                .all(|(_, o)| *o < high_watermark)
        );
        assert!(acked_here <= high_watermark);
    }
    assert!(
        acked.len() >= 2400,
        "only {} records acknowledged",
        acked.len()
    );
    Ok(())
}

/// `flush=async` is chosen explicitly, shown by describe, and acknowledges before the
/// fdatasync; the page cache belongs to the kernel, so kill -9 of every broker loses
/// nothing acknowledged even then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_async_is_explicit_and_survives_kill9_of_every_broker() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let client = cluster.client().await?;
    let bad = client
        .create_topic_with_configs(
            "fast",
            1,
            3,
            [("flush".to_string(), "whenever".to_string())].into(),
        )
        .await;
    assert!(bad.is_err(), "an unknown flush policy is refused");
    client
        .create_topic_with_configs(
            "fast",
            1,
            3,
            [("flush".to_string(), "async".to_string())].into(),
        )
        .await?;
    let described = client.describe_topic("fast").await?;
    assert_eq!(
        described.topic.configs.get("flush").map(String::as_str),
        Some("async")
    );
    client
        .wait_for_leaders("fast", Duration::from_secs(30))
        .await?;
    let producer = client.producer(Default::default());
    let mut acked = Vec::new();
    for i in 0..300u32 {
        let value = format!("fast {i}");
        let meta = producer
            .send_and_wait("fast", ProducerRecord::new(value.clone()))
            .await?;
        acked.push((meta.offset, value));
    }
    for id in [1, 2, 3] {
        cluster.kill9(id);
    }
    for id in [1, 2, 3] {
        cluster.restart(id)?;
    }
    cluster.wait_ready(Duration::from_secs(60)).await?;
    let client = cluster.client().await?;
    client
        .wait_for_leaders("fast", Duration::from_secs(60))
        .await?;
    let mut consumer = PartitionConsumer::new(
        client.clone(),
        "fast",
        0,
        OffsetSpec::At(0),
        Default::default(),
    )
    .await?;
    let mut read = Vec::new();
    while read.len() < acked.len() {
        read.extend(
            consumer
                .poll()
                .await?
                .into_iter()
                .map(|r| (r.offset, String::from_utf8_lossy(&r.value).into_owned())),
        );
    }
    assert_eq!(read[..acked.len()], acked[..]);
    Ok(())
}
