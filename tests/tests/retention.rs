//! Retention: old segments disappear on every replica, the log start offset moves, a
//! consumer below it gets OFFSET_OUT_OF_RANGE with the valid range, and a replica that
//! was down while retention moved on catches up (from a snapshot cut at the retention
//! boundary) with every retained record.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use strait_client::{ClientError, OffsetSpec, PartitionConsumer, ProducerRecord};
use strait_tests::{Cluster, binary, wait_until};

fn segment_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("partitions"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .flat_map(|group| {
            std::fs::read_dir(group.path())
                .into_iter()
                .flatten()
                .filter_map(|f| f.ok())
        })
        .filter_map(|f| f.file_name().into_string().ok())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_segments_everywhere_and_a_returning_replica_catches_up()
-> anyhow::Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let brokers = cluster.addrs().join(",");
    let out = Command::new(binary("strait"))
        .args([
            "--brokers",
            &brokers,
            "topic",
            "create",
            "ret",
            "-p",
            "1",
            "-r",
            "3",
        ])
        .args(["-c", "segment.bytes=4096", "-c", "retention.bytes=8192"])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = cluster.client().await?;
    let info = client
        .wait_for_leaders("ret", Duration::from_secs(30))
        .await?;
    let leader = info.partitions[0].leader.expect("leader");
    let follower = info.partitions[0]
        .replicas
        .iter()
        .copied()
        .find(|r| *r != leader)
        .expect("follower");

    let producer = client.producer(Default::default());
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let produce = |n: std::ops::Range<u32>| {
        let producer = &producer;
        async move {
            let mut got = Vec::new();
            for i in n {
                let value = format!("{i:0>200}");
                let meta = producer
                    .send_and_wait("ret", ProducerRecord::new(value.clone()))
                    .await?;
                got.push((meta.offset, value));
            }
            anyhow::Ok(got)
        }
    };
    acked.extend(produce(0..20).await?);
    // One replica is away while most of the data is written and retention moves on.
    cluster.kill9(follower);
    acked.extend(produce(20..200).await?);

    // Retention may move the start in several steps: wait until it has settled (the
    // same for 15 checks in a row, i.e. three retention rounds).
    let streak = std::sync::Mutex::new((0u64, 0u32));
    let start = wait_until(
        "the log start to move and settle",
        Duration::from_secs(60),
        || async {
            let (start, _) = client.list_offsets("ret", 0).await.ok()?;
            let mut seen = streak.lock().unwrap_or_else(|e| e.into_inner());
            *seen = if seen.0 == start {
                (start, seen.1 + 1)
            } else {
                (start, 1)
            };
            (start > 20 && seen.1 >= 15).then_some(start)
        },
    )
    .await?;

    // Below the start: a clear error naming the range; from the start: everything retained.
    let mut below = PartitionConsumer::new(
        client.clone(),
        "ret",
        0,
        OffsetSpec::At(0),
        Default::default(),
    )
    .await?;
    match below.poll().await {
        Err(ClientError::OffsetOutOfRange {
            log_start_offset, ..
        }) => assert!(log_start_offset >= start),
        other => panic!("expected OFFSET_OUT_OF_RANGE, got {other:?}"),
    }
    let read_all = |client: strait_client::Client| async move {
        let (_, high_watermark) = client.list_offsets("ret", 0).await?;
        let mut consumer =
            PartitionConsumer::new(client, "ret", 0, OffsetSpec::Earliest, Default::default())
                .await?;
        let start = consumer.position();
        let mut records = Vec::new();
        while consumer.position() < high_watermark {
            records.extend(consumer.poll().await?);
        }
        anyhow::Ok((start, records))
    };
    let (start, records) = read_all(client.clone()).await?;
    assert_eq!(records.first().map(|r| r.offset), Some(start));
    for record in &records {
        assert_eq!(
            Some(record.value.as_ref()),
            acked.get(&record.offset).map(|v| v.as_bytes()),
            "offset {}",
            record.offset
        );
    }
    assert_eq!(
        records.last().map(|r| r.offset),
        acked.keys().next_back().copied()
    );

    // Disk use is bounded on the live replicas.
    for broker in cluster.brokers.iter().filter(|b| b.id != follower) {
        let dir = broker.data_dir().to_path_buf();
        wait_until("old segments deleted", Duration::from_secs(30), || {
            let dir = dir.clone();
            async move { (segment_files(&dir).len() <= 5).then_some(()) }
        })
        .await?;
    }

    // The returning replica catches up from a snapshot at the retention boundary.
    cluster.restart(follower)?;
    cluster.wait_ready(Duration::from_secs(60)).await?;
    wait_until(
        "the returning replica to be in sync",
        Duration::from_secs(60),
        || async {
            let status = client.cluster_status().await.ok()?;
            status.under_replicated.is_empty().then_some(())
        },
    )
    .await?;
    // Its old segments are replaced by a log that starts at the retention boundary.
    let follower_dir = cluster.broker(follower).data_dir().to_path_buf();
    wait_until(
        "the returning replica to restart its log past retention",
        Duration::from_secs(60),
        || {
            let dir = follower_dir.clone();
            async move {
                let files = segment_files(&dir);
                files
                    .first()
                    .is_some_and(|f| f != "00000000000000000000.log")
                    .then_some(())
            }
        },
    )
    .await?;

    // With the old leader gone, the others (the returned replica among them) serve
    // every retained record.
    cluster.kill9(leader);
    let client = cluster.client().await?;
    wait_until("a new leader", Duration::from_secs(60), || async {
        let info = client.topic("ret").await.ok()?;
        let _ = client.refresh_metadata().await;
        info.partitions[0].leader.filter(|l| *l != leader)
    })
    .await?;
    let (_, again) = read_all(client.clone()).await?;
    for record in &again {
        assert_eq!(
            Some(record.value.as_ref()),
            acked.get(&record.offset).map(|v| v.as_bytes())
        );
    }
    assert_eq!(
        again.last().map(|r| r.offset),
        acked.keys().next_back().copied()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_older_than_retention_ms_are_deleted() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await?;
    let client = cluster.client().await?;
    let configs = [
        ("segment.bytes".to_string(), "4096".to_string()),
        ("retention.ms".to_string(), "60000".to_string()),
    ];
    client
        .create_topic_with_configs("aged", 1, 3, configs.into())
        .await?;
    client
        .wait_for_leaders("aged", Duration::from_secs(30))
        .await?;
    let producer = client.producer(Default::default());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    // An hour-old batch of records fills several segments, then fresh ones follow.
    for i in 0..60 {
        let record = ProducerRecord::new(format!("{i:0>200}")).timestamp(now - 3_600_000);
        producer.send_and_wait("aged", record).await?;
    }
    for i in 60..80 {
        producer
            .send_and_wait("aged", ProducerRecord::new(format!("{i:0>200}")))
            .await?;
    }
    // Retention may move the start in several steps: wait until it has settled (the
    // same for 15 checks in a row, i.e. three retention rounds).
    let streak = std::sync::Mutex::new((0u64, 0u32));
    let start = wait_until(
        "expired segments to go",
        Duration::from_secs(60),
        || async {
            let (start, _) = client.list_offsets("aged", 0).await.ok()?;
            let mut seen = streak.lock().unwrap_or_else(|e| e.into_inner());
            *seen = if seen.0 == start {
                (start, seen.1 + 1)
            } else {
                (start, 1)
            };
            (start > 0 && seen.1 >= 15).then_some(start)
        },
    )
    .await?;
    assert!(start <= 60, "only expired records go: log start {start}");
    let (_, high_watermark) = client.list_offsets("aged", 0).await?;
    assert_eq!(high_watermark, 80);
    let mut consumer = PartitionConsumer::new(
        client.clone(),
        "aged",
        0,
        OffsetSpec::Earliest,
        Default::default(),
    )
    .await?;
    let mut fresh = Vec::new();
    while consumer.position() < high_watermark {
        fresh.extend(consumer.poll().await?);
    }
    assert_eq!(fresh.first().map(|r| r.offset), Some(start));
    assert_eq!(fresh.len() as u64, high_watermark - start);
    Ok(())
}
