//! Idempotent produce, black box: a retried batch is written once and answered with
//! its first offset, on the leader that wrote it, on a new leader after the old one was
//! killed, and after every broker restarted (the producer table is rebuilt from the
//! log); a batch ahead of its predecessor is refused with OUT_OF_SEQUENCE; producer ids
//! are unique. Also: a pipelined idempotent producer writes each record once while the
//! leader is killed under it.

use std::collections::BTreeMap;
use std::time::Duration;

use prost::Message;
use strait_client::{Client, ProducerRecord};
use strait_proto::v1::strait_client::StraitClient;
use strait_proto::v1::{ErrorCode, ErrorDetail, ProduceRequest};
use strait_records::BatchBuilder;
use strait_tests::{Cluster, read_partition, wait_until};

/// Sends one batch of `values` as producer `producer_id` from `base_sequence` to every
/// broker in turn: the first offset from the leader, or the error code of the last
/// broker asked.
async fn attempt(
    addrs: &[String],
    producer_id: u64,
    base_sequence: u64,
    values: &[&str],
) -> Result<u64, ErrorCode> {
    let mut batch = BatchBuilder::default();
    for value in values {
        batch.push(0, None, value.as_bytes(), &[]);
    }
    let records = batch.finish();
    let mut code = ErrorCode::Unavailable;
    for addr in addrs {
        let Ok(mut rpc) = StraitClient::connect(format!("http://{addr}")).await else {
            continue;
        };
        let request = ProduceRequest {
            topic: "idem".into(),
            partition: 0,
            records: records.clone(),
            record_count: values.len() as u32,
            timeout_ms: 5000,
            producer_id,
            base_sequence,
            ..Default::default()
        };
        match rpc.produce(request).await {
            Ok(reply) => return Ok(reply.into_inner().base_offset),
            Err(status) => {
                code = ErrorDetail::decode(status.details())
                    .ok()
                    .and_then(|d| ErrorCode::try_from(d.code).ok())
                    .unwrap_or(ErrorCode::Unavailable);
                if !matches!(code, ErrorCode::NotLeader | ErrorCode::Unavailable) {
                    return Err(code);
                }
            }
        }
    }
    Err(code)
}

/// [`attempt`] until some leader answers (through elections and restarts).
async fn written(
    addrs: &[String],
    producer_id: u64,
    base_sequence: u64,
    values: &[&str],
) -> anyhow::Result<u64> {
    wait_until(
        "a leader to take the batch",
        Duration::from_secs(60),
        || async {
            attempt(addrs, producer_id, base_sequence, values)
                .await
                .ok()
        },
    )
    .await
}

/// The values of partition 0 of `idem`, from the start to the high watermark.
async fn read_all(client: &Client) -> anyhow::Result<Vec<String>> {
    read_partition(client, "idem", 0)
        .await?
        .into_iter()
        .map(|r| Ok(String::from_utf8(r.value.to_vec())?))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_batches_are_written_once_across_failover_and_restart() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let client = cluster.client_with_topic("idem", 1).await?;
    let producer_id = client.init_producer_id().await?;
    assert_ne!(producer_id, 0);
    assert_ne!(client.init_producer_id().await?, producer_id);
    let addrs = cluster.addrs();

    assert_eq!(written(&addrs, producer_id, 0, &["a", "b", "c"]).await?, 0);
    // The retry of a written batch gets its offset back; nothing is written twice.
    assert_eq!(written(&addrs, producer_id, 0, &["a", "b", "c"]).await?, 0);
    assert_eq!(written(&addrs, producer_id, 3, &["d", "e"]).await?, 3);
    assert_eq!(written(&addrs, producer_id, 3, &["d", "e"]).await?, 3);
    // A batch whose predecessor never comes is refused, after the leader waited for it.
    assert_eq!(
        attempt(&addrs, producer_id, 10, &["x"]).await,
        Err(ErrorCode::OutOfSequence)
    );
    assert_eq!(client.list_offsets("idem", 0).await?, (0, 5));

    // A new leader knows what the old one wrote.
    let leader = client.topic("idem").await?.partitions[0]
        .leader
        .expect("a leader");
    cluster.kill9(leader);
    assert_eq!(written(&addrs, producer_id, 3, &["d", "e"]).await?, 3);
    assert_eq!(written(&addrs, producer_id, 5, &["f"]).await?, 5);

    // Every broker restarts: the tables are rebuilt from the log.
    cluster.restart(leader)?;
    for id in 1..=3 {
        cluster.kill9(id);
    }
    for id in 1..=3 {
        cluster.restart(id)?;
    }
    cluster.wait_ready(Duration::from_secs(60)).await?;
    assert_eq!(written(&addrs, producer_id, 5, &["f"]).await?, 5);
    assert_eq!(written(&addrs, producer_id, 0, &["a", "b", "c"]).await?, 0);
    assert_eq!(written(&addrs, producer_id, 6, &["g"]).await?, 6);

    let client = cluster.client().await?;
    assert_eq!(client.list_offsets("idem", 0).await?, (0, 7));
    assert_eq!(
        read_all(&client).await?,
        ["a", "b", "c", "d", "e", "f", "g"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_producer_writes_each_record_once_through_a_leader_kill() -> anyhow::Result<()>
{
    let mut cluster = Cluster::start(3).await?;
    let client = cluster.client_with_topic("idem", 1).await?;
    let producer = client.producer(strait_client::ProducerConfig {
        linger: Duration::from_millis(1),
        batch_max_bytes: 2048,
        ..Default::default()
    });
    // The producer id, asked for when the producer was made, is there before any batch.
    producer.ready().await?;
    let total = 4000u32;
    let mut deliveries = Vec::new();
    for i in 0..total {
        let record = ProducerRecord::new(format!("r{i:05}")).partition(0);
        deliveries.push(producer.send("idem", record).await?);
        if i == total / 4 {
            // Kill the leader while batches are in flight.
            let leader = client.topic("idem").await?.partitions[0]
                .leader
                .expect("a leader");
            cluster.kill9(leader);
        }
    }
    let mut offsets = BTreeMap::new();
    for (i, delivery) in deliveries.into_iter().enumerate() {
        let meta = delivery.await?;
        offsets.insert(meta.offset, i);
    }
    // Acknowledged in order, at distinct offsets...
    let order: Vec<usize> = offsets.values().copied().collect();
    assert_eq!(order, (0..total as usize).collect::<Vec<_>>());
    // ...and the log holds each record exactly once, in the order sent.
    let expected: Vec<String> = (0..total).map(|i| format!("r{i:05}")).collect();
    assert_eq!(read_all(&client).await?, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_for_good_does_not_stall_or_reorder_its_partition() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await?;
    let client = cluster.client_with_topic("idem", 1).await?;
    let producer = client.producer(strait_client::ProducerConfig {
        linger: Duration::from_millis(1),
        batch_max_bytes: 64 * 1024,
        delivery_timeout: Duration::from_secs(60),
        ..Default::default()
    });
    // Small records, one over the broker's 1 MiB record limit, more small records.
    let mut deliveries = Vec::new();
    for i in 0..300u32 {
        let value = if i == 100 {
            vec![b'x'; 2 * 1024 * 1024]
        } else {
            format!("r{i:03}").into_bytes()
        };
        let record = ProducerRecord::new(value).partition(0);
        deliveries.push((i, producer.send("idem", record).await?));
    }
    // Every delivery resolves well before the delivery timeout: the refused batch, and
    // any batch already sent behind it, fail; nothing waits for the timeout.
    let outcomes = tokio::time::timeout(Duration::from_secs(30), async {
        let mut outcomes = Vec::new();
        for (i, delivery) in deliveries {
            outcomes.push((i, delivery.await));
        }
        outcomes
    })
    .await?;
    let large = &outcomes[100].1;
    assert!(
        matches!(large, Err(strait_client::ClientError::RecordTooLarge(_))),
        "{large:?}"
    );
    // What was acknowledged is in the log once, in the order sent, at its offset.
    let acked: Vec<(u64, String)> = outcomes
        .iter()
        .filter_map(|(i, outcome)| {
            outcome
                .as_ref()
                .ok()
                .map(|meta| (meta.offset, format!("r{i:03}")))
        })
        .collect();
    assert!(acked.len() >= 100, "{} acknowledged", acked.len());
    let log = read_all(&client).await?;
    assert_eq!(
        log,
        acked.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>()
    );
    for (n, (offset, _)) in acked.iter().enumerate() {
        assert_eq!(*offset, n as u64);
    }
    // The partition goes on (under a new producer id).
    let meta = producer
        .send_and_wait("idem", ProducerRecord::new("after").partition(0))
        .await?;
    assert_eq!(meta.offset, acked.len() as u64);
    Ok(())
}
