//! Cluster behaviour seen from a client: replication, failover, durability, discovery.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use strait_client::{
    Client, ConsumedRecord, ConsumerConfig, OffsetSpec, PartitionConsumer, ProducerRecord,
};
use strait_tests::{Cluster, binary, read_partition, wait_until};
use tokio::sync::Mutex;

/// `(partition, offset) -> value` for every record of the topic.
async fn read_topic(
    client: &Client,
    topic: &str,
) -> anyhow::Result<BTreeMap<(u32, u64), ConsumedRecord>> {
    let info = client.topic(topic).await?;
    let mut all = BTreeMap::new();
    for p in 0..info.partitions.len() as u32 {
        for record in read_partition(client, topic, p).await? {
            all.insert((p, record.offset), record);
        }
    }
    Ok(all)
}

/// Produces `values` and returns `(partition, offset) -> value` of the acknowledgements.
async fn produce_all(
    client: &Client,
    topic: &str,
    values: Vec<(String, String)>,
) -> anyhow::Result<BTreeMap<(u32, u64), String>> {
    let producer = client.producer(Default::default());
    let mut deliveries = Vec::new();
    for (key, value) in values {
        let delivery = producer
            .send(topic, ProducerRecord::new(value.clone()).key(key))
            .await?;
        deliveries.push((value, delivery));
    }
    let sent = deliveries.len() as u64;
    let mut acked = BTreeMap::new();
    for (value, delivery) in deliveries {
        let meta = delivery.await?;
        acked.insert((meta.partition, meta.offset), value);
    }
    // Every record went out in exactly one batch; a retry is another request for it.
    let stats = producer.stats();
    assert_eq!(stats.records, sent, "records counted once each: {stats:?}");
    assert!(
        (1..=sent).contains(&stats.batches) && stats.requests >= stats.batches,
        "{stats:?}"
    );
    assert!(stats.batch_bytes >= sent, "{stats:?}");
    Ok(acked)
}

fn assert_acked_present(
    acked: &BTreeMap<(u32, u64), String>,
    read: &BTreeMap<(u32, u64), ConsumedRecord>,
) {
    for ((partition, offset), value) in acked {
        let record = read
            .get(&(*partition, *offset))
            .unwrap_or_else(|| panic!("acknowledged record {partition}/{offset} is missing"));
        assert_eq!(
            record.value.as_ref(),
            value.as_bytes(),
            "record {partition}/{offset} holds the wrong value"
        );
    }
}

fn assert_contiguous(read: &BTreeMap<(u32, u64), ConsumedRecord>) {
    let mut next: BTreeMap<u32, u64> = BTreeMap::new();
    for (partition, offset) in read.keys() {
        let expected = next.entry(*partition).or_insert(0);
        assert_eq!(*offset, *expected, "gap in partition {partition}");
        *expected += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_replicate_and_serve_records_in_order() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await?;
    let client = cluster.client().await?;
    let topic = client.create_topic("orders", 3, 3).await?;
    assert_eq!(topic.partitions.len(), 3);
    for p in &topic.partitions {
        let mut replicas = p.replicas.clone();
        replicas.sort();
        assert_eq!(
            replicas,
            vec![1, 2, 3],
            "every partition is on all three brokers"
        );
    }
    let leaders: Vec<u64> = topic.partitions.iter().map(|p| p.replicas[0]).collect();
    let mut sorted = leaders.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![1, 2, 3],
        "preferred leaders are spread over the brokers"
    );
    client
        .wait_for_leaders("orders", Duration::from_secs(30))
        .await?;

    // 10,000 records through the client library, keyed so that order per key is checkable.
    let values: Vec<(String, String)> = (0..10_000)
        .map(|i| (format!("user-{}", i % 97), format!("client-{i:05}")))
        .collect();
    let mut acked = produce_all(&client, "orders", values).await?;
    assert_eq!(acked.len(), 10_000);

    // 2,000 more through the CLI, one per stdin line, with keys.
    let input: String = (0..2_000)
        .map(|i| format!("cli-user-{}:cli-{i:05}\n", i % 13))
        .collect();
    let mut cli = Command::new(binary("strait"))
        .args(["--brokers", &cluster.addrs().join(","), "--format", "json"])
        .args(["topic", "produce", "orders", "--key-separator", ":"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        let mut stdin = cli.stdin.take().expect("piped stdin");
        stdin.write_all(input.as_bytes())?;
    }
    let output = cli.wait_with_output()?;
    assert!(
        output.status.success(),
        "strait topic produce failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(summary["produced"], 2_000, "{summary}");

    let read = read_topic(&client, "orders").await?;
    let mut values: Vec<&[u8]> = read.values().map(|r| r.value.as_ref()).collect();
    values.sort();
    let total = values.len();
    values.dedup();
    assert_eq!(
        (total, values.len()),
        (12_000, 12_000),
        "every record is consumed back exactly once (read, distinct)"
    );
    assert_contiguous(&read);
    assert_acked_present(&acked, &read);

    // Within a partition, records of one key keep their production order.
    let mut last_seen: BTreeMap<String, String> = BTreeMap::new();
    for record in read.values() {
        let key = String::from_utf8(record.key.clone().expect("keyed").to_vec())?;
        let value = String::from_utf8(record.value.to_vec())?;
        if let Some(previous) = last_seen.insert(key.clone(), value.clone()) {
            let same_source = previous.split('-').next() == value.split('-').next();
            if same_source {
                assert!(
                    previous < value,
                    "key {key}: {previous} came before {value}"
                );
            }
        }
    }
    // Keys hash consistently: each key lives in exactly one partition.
    let mut partition_of: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    for ((partition, _), record) in &read {
        let key = record.key.clone().expect("keyed").to_vec();
        assert_eq!(*partition_of.entry(key).or_insert(*partition), *partition);
    }

    // The CLI consumer reads the same records.
    let output = Command::new(binary("strait"))
        .args(["--brokers", &cluster.addrs().join(","), "--format", "json"])
        .args([
            "topic",
            "consume",
            "orders",
            "--partition",
            "1",
            "--num",
            "100",
        ])
        .output()?;
    assert!(output.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 100);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["offset"], i as u64);
        assert_eq!(line["partition"], 1);
        let expected = &read[&(1, i as u64)];
        assert_eq!(
            line["value"].as_str().map(str::as_bytes),
            Some(expected.value.as_ref())
        );
    }
    acked.clear();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_records_survive_leader_kill_during_produce() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let client = cluster.client().await?;
    client.create_topic("events", 1, 3).await?;
    let info = client
        .wait_for_leaders("events", Duration::from_secs(30))
        .await?;
    let leader = info.partitions[0].leader.expect("a leader");

    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let producer = client.producer(Default::default());
            let mut i = 0u64;
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let value = format!("event-{i}");
                match producer
                    .send_and_wait("events", ProducerRecord::new(value.clone()))
                    .await
                {
                    Ok(meta) => {
                        acked
                            .lock()
                            .await
                            .insert((meta.partition, meta.offset), value);
                    }
                    Err(err) => failures.push(err.to_string()),
                }
                i += 1;
            }
            failures
        })
    };
    wait_until(
        "200 acknowledged records",
        Duration::from_secs(60),
        || async { (acked.lock().await.len() >= 200).then_some(()) },
    )
    .await?;
    cluster.kill9(leader);
    let before_kill = acked.lock().await.len();
    wait_until(
        "writes to resume on a new leader",
        Duration::from_secs(60),
        || async { (acked.lock().await.len() >= before_kill + 200).then_some(()) },
    )
    .await?;

    // The dead broker is noticed: it is marked down and its partitions are under-replicated.
    let status = wait_until(
        "the killed broker to be marked down",
        Duration::from_secs(30),
        || async {
            let status = client.cluster_status().await.ok()?;
            let down = status.brokers.iter().any(|b| b.id == leader && !b.alive);
            (down && status.leaderless.is_empty()).then_some(status)
        },
    )
    .await?;
    assert_eq!(status.under_replicated, vec![("events".to_string(), 0)]);
    assert_ne!(status.topics[0].partitions[0].leader, Some(leader));

    stop.store(true, Ordering::Relaxed);
    let failures = writer.await?;
    let acked = acked.lock().await.clone();
    let read = read_topic(&client, "events").await?;
    assert_contiguous(&read);
    assert_acked_present(&acked, &read);
    assert!(
        failures.is_empty(),
        "the producer should retry through the failover, but {} sends failed, first: {:?}",
        failures.len(),
        failures.first()
    );

    // The old leader comes back, catches up and the partition is fully replicated again.
    cluster.restart(leader)?;
    cluster.wait_ready(Duration::from_secs(60)).await?;
    wait_until(
        "full replication after restart",
        Duration::from_secs(60),
        || async {
            let status = client.cluster_status().await.ok()?;
            status.under_replicated.is_empty().then_some(())
        },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_records_survive_kill9_of_every_broker() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let client = cluster.client().await?;
    client.create_topic("durable", 3, 3).await?;
    client
        .wait_for_leaders("durable", Duration::from_secs(30))
        .await?;
    let values = (0..3_000)
        .map(|i| (format!("k{i}"), format!("durable-{i}")))
        .collect();
    let acked = produce_all(&client, "durable", values).await?;

    for id in [1, 2, 3] {
        cluster.kill9(id);
    }
    for id in [1, 2, 3] {
        cluster.restart(id)?;
    }
    cluster.wait_ready(Duration::from_secs(60)).await?;
    let client = cluster.client().await?;
    let info = client
        .wait_for_leaders("durable", Duration::from_secs(60))
        .await?;
    assert_eq!(
        info.partitions.len(),
        3,
        "the topic survived in the controller"
    );
    let read = read_topic(&client, "durable").await?;
    assert_eq!(read.len(), acked.len());
    assert_contiguous(&read);
    assert_acked_present(&acked, &read);

    // And the cluster still takes writes after the restart.
    let more = produce_all(
        &client,
        "durable",
        vec![("k".into(), "after-restart".into())],
    )
    .await?;
    let read = read_topic(&client, "durable").await?;
    assert_acked_present(&more, &read);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fourth_broker_joins_and_hosts_new_topics() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let client = cluster.client().await?;
    client.create_topic("before", 3, 3).await?;
    let id = cluster.add_broker().await?;
    assert_eq!(id, 4);
    let status = client.cluster_status().await?;
    let joined = status
        .brokers
        .iter()
        .find(|b| b.id == 4)
        .expect("registered");
    assert!(joined.alive);
    assert_eq!(joined.roles, vec!["broker".to_string()]);

    // The new broker holds no replicas yet, so a new single-replica partition goes to it.
    let topic = client.create_topic("on-four", 1, 1).await?;
    assert_eq!(topic.partitions[0].replicas, vec![4]);
    let topic = client.create_topic("spread", 4, 3).await?;
    assert!(topic.partitions.iter().any(|p| p.replicas.contains(&4)));
    client
        .wait_for_leaders("on-four", Duration::from_secs(30))
        .await?;
    let acked = produce_all(&client, "on-four", vec![("a".into(), "hello four".into())]).await?;
    let read = read_topic(&client, "on-four").await?;
    assert_acked_present(&acked, &read);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_long_polls_and_respects_max_bytes() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await?;
    let client = cluster.client().await?;
    client.create_topic("poll", 1, 3).await?;
    client
        .wait_for_leaders("poll", Duration::from_secs(30))
        .await?;
    let producer = client.producer(Default::default());

    // A consumer waiting at the end of the log gets the record as soon as it is committed.
    let config = ConsumerConfig {
        max_wait: Duration::from_secs(20),
        ..Default::default()
    };
    let mut consumer =
        PartitionConsumer::new(client.clone(), "poll", 0, OffsetSpec::Latest, config).await?;
    let waiting = tokio::spawn(async move { consumer.poll().await });
    producer
        .send_and_wait("poll", ProducerRecord::new("first"))
        .await?;
    let records = waiting.await??;
    assert_eq!(
        records.len(),
        1,
        "the long poll returned the new record, not an empty answer"
    );
    assert_eq!(records[0].value.as_ref(), b"first");

    // max_bytes bounds a response, but at least one record always comes back.
    let values: Vec<(String, String)> = (0..50)
        .map(|i| ("k".to_string(), format!("{i:0>100}")))
        .collect();
    produce_all(&client, "poll", values).await?;
    let small = ConsumerConfig {
        max_bytes: 350,
        max_wait: Duration::ZERO,
    };
    let mut consumer =
        PartitionConsumer::new(client.clone(), "poll", 0, OffsetSpec::At(1), small).await?;
    let records = consumer.poll().await?;
    assert!(
        (1..=3).contains(&records.len()),
        "{} records for 350 bytes",
        records.len()
    );
    let tiny = ConsumerConfig {
        max_bytes: 1,
        max_wait: Duration::ZERO,
    };
    let mut consumer =
        PartitionConsumer::new(client.clone(), "poll", 0, OffsetSpec::At(1), tiny).await?;
    assert_eq!(consumer.poll().await?.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_topic_is_removed_everywhere_and_its_name_reusable() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await?;
    let client = cluster.client().await?;
    client.create_topic("gone", 2, 3).await?;
    client
        .wait_for_leaders("gone", Duration::from_secs(30))
        .await?;
    produce_all(&client, "gone", vec![("k".into(), "old".into())]).await?;
    client.delete_topic("gone").await?;
    assert!(client.list_topics().await?.iter().all(|t| t.name != "gone"));
    let err = client.describe_topic("gone").await.expect_err("deleted");
    assert!(
        matches!(err, strait_client::ClientError::UnknownTopic(_)),
        "{err}"
    );
    // Every broker stopped both replicas and deleted their data.
    for broker in &cluster.brokers {
        let log = broker.log_path().to_path_buf();
        wait_until(
            "replicas removed on every broker",
            Duration::from_secs(20),
            || {
                let log = log.clone();
                async move {
                    let text = std::fs::read_to_string(&log).ok()?;
                    (text.matches("removed partition replica topic=gone").count() == 2)
                        .then_some(())
                }
            },
        )
        .await?;
    }
    // ...and their segment directories are gone.
    for broker in &cluster.brokers {
        let left: Vec<_> = std::fs::read_dir(broker.data_dir().join("partitions"))?
            .filter_map(|e| e.ok())
            .collect();
        assert!(left.is_empty(), "broker {} still has {left:?}", broker.id);
    }
    // The name can be used again, by a brand-new log.
    client.create_topic("gone", 1, 3).await?;
    client
        .wait_for_leaders("gone", Duration::from_secs(30))
        .await?;
    let acked = produce_all(&client, "gone", vec![("k".into(), "new".into())]).await?;
    assert_eq!(acked.keys().next(), Some(&(0, 0)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consuming_from_a_timestamp_starts_at_the_first_record_at_or_after_it() -> anyhow::Result<()>
{
    let cluster = Cluster::start(3).await?;
    let client = cluster.client().await?;
    client.create_topic("timed", 1, 3).await?;
    client
        .wait_for_leaders("timed", Duration::from_secs(30))
        .await?;
    let producer = client.producer(Default::default());
    for i in 1..=10i64 {
        let record = ProducerRecord::new(format!("at-{}", i * 1000)).timestamp(i * 1000);
        producer.send_and_wait("timed", record).await?;
    }
    assert_eq!(
        client.offset_for_timestamp("timed", 0, 4500).await?,
        Some(4)
    );
    assert_eq!(
        client.offset_for_timestamp("timed", 0, 5000).await?,
        Some(4)
    );
    assert_eq!(client.offset_for_timestamp("timed", 0, 0).await?, Some(0));
    assert_eq!(client.offset_for_timestamp("timed", 0, 10_001).await?, None);

    let mut consumer = PartitionConsumer::new(
        client.clone(),
        "timed",
        0,
        OffsetSpec::Timestamp(4500),
        Default::default(),
    )
    .await?;
    let records = consumer.poll().await?;
    assert_eq!(
        records.first().map(|r| (r.offset, r.timestamp_ms)),
        Some((4, 5000))
    );
    let consumer = PartitionConsumer::new(
        client.clone(),
        "timed",
        0,
        OffsetSpec::Timestamp(99_999),
        Default::default(),
    )
    .await?;
    assert_eq!(
        consumer.position(),
        10,
        "no record that recent: start at the end"
    );

    let output = Command::new(binary("strait"))
        .args(["--brokers", &cluster.addrs().join(",")])
        .args([
            "topic", "consume", "timed", "--offset", "@7000", "--num", "1",
        ])
        .output()?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8(output.stdout)?.trim(), "at-7000");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_configs_are_validated_shown_altered_and_roll_segments() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await?;
    let brokers = cluster.addrs().join(",");
    let strait = |args: &[&str]| {
        Command::new(binary("strait"))
            .args(["--brokers", &brokers])
            .args(args)
            .output()
    };
    let out = strait(&[
        "topic",
        "create",
        "rolled",
        "-p",
        "1",
        "-r",
        "3",
        "-c",
        "segment.bytes=4096",
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for bad in [
        "bogus=1",
        "segment.bytes=abc",
        "segment.bytes=1",
        "segment.ms",
    ] {
        let out = strait(&["topic", "create", "refused", "-c", bad])?;
        assert!(!out.status.success(), "-c {bad} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("segment") || stderr.contains("bogus"),
            "{bad}: {stderr}"
        );
    }

    let client = cluster.client().await?;
    let info = client.topic("rolled").await?;
    assert_eq!(
        info.configs.get("segment.bytes").map(String::as_str),
        Some("4096")
    );
    assert!(
        info.configs.contains_key("segment.ms"),
        "effective configs include defaults"
    );

    // Small segments roll on every replica.
    // One record per request, so that each is its own batch (4 KiB holds 5 to 40 of
    // them): batches of different sizes, so that a read stopping for its budget leaves
    // room that the next segment's first batch could take.
    let producer = client.producer(Default::default());
    for i in 0..100usize {
        let width = 50 + (i * 337) % 700;
        producer
            .send_and_wait("rolled", ProducerRecord::new(format!("{i:0>width$}")))
            .await?;
    }
    for broker in &cluster.brokers {
        let partitions = broker.data_dir().join("partitions");
        let most = std::fs::read_dir(&partitions)?
            .filter_map(|e| e.ok())
            .map(|dir| {
                std::fs::read_dir(dir.path())
                    .map(|files| {
                        files
                            .filter_map(|f| f.ok())
                            .filter(|f| f.path().extension().is_some_and(|x| x == "log"))
                            .count()
                    })
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        assert!(most >= 4, "broker {} has {most} segments", broker.id);
    }
    let read = read_topic(&client, "rolled").await?;
    assert_eq!(read.len(), 100);
    assert_contiguous(&read);
    // Fetches smaller than a segment stop inside it and go on where they stopped.
    let config = ConsumerConfig {
        max_bytes: 1500,
        ..ConsumerConfig::default()
    };
    let mut consumer =
        PartitionConsumer::new(client.clone(), "rolled", 0, OffsetSpec::Earliest, config).await?;
    let mut offsets = Vec::new();
    while consumer.position() < 100 {
        offsets.extend(consumer.poll().await?.iter().map(|r| r.offset));
    }
    assert_eq!(offsets, (0..100).collect::<Vec<u64>>());

    // alter-config sets and resets overrides; bad values are refused.
    let out = strait(&[
        "topic",
        "alter-config",
        "rolled",
        "--set",
        "segment.ms=60000",
        "--delete",
        "segment.bytes",
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = strait(&["--format", "json", "topic", "describe", "rolled"])?;
    let described: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(described["configs"]["segment.ms"], "60000");
    assert_eq!(described["configs"]["segment.bytes"], "268435456");
    let err = client
        .alter_topic_configs(
            "rolled",
            [("segment.ms".to_string(), "-5".to_string())].into(),
            vec![],
        )
        .await
        .expect_err("refused");
    assert_eq!(
        err.code(),
        Some(strait_client::ErrorCode::InvalidConfig),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_without_a_replication_stream_replicate_one_append_at_a_time() -> anyhow::Result<()>
{
    // Broker 1 pipelines nothing, the others one group per peer: most groups replicate
    // with unary AppendEntries, and a record is only acknowledged once a follower has it.
    let mut options = strait_tests::ClusterOptions::default();
    for (id, streams) in [(1, "0"), (2, "1"), (3, "1")] {
        options.extra_args.insert(
            id,
            vec!["--replication-streams".to_string(), streams.to_string()],
        );
    }
    let cluster = Cluster::start_with(3, options).await?;
    let client = cluster.client_with_topic("narrow", 6).await?;
    let values = |round: usize| {
        (0..600)
            .map(|i| (format!("k{}", i % 37), format!("round {round} value {i}")))
            .collect::<Vec<_>>()
    };
    let mut acked = produce_all(&client, "narrow", values(1)).await?;
    // Idle long enough for open replication streams to close (`IDLE_CLOSE`, 1 s); the
    // next round must open them again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    acked.extend(produce_all(&client, "narrow", values(2)).await?);
    assert_eq!(acked.len(), 1200);
    let read = read_topic(&client, "narrow").await?;
    assert_eq!(read.len(), 1200);
    assert_acked_present(&acked, &read);
    assert_contiguous(&read);
    Ok(())
}
