//! Compressed batches, black box: records produced with lz4 and zstd are stored and
//! replicated compressed and read back intact (also from an offset inside a compressed
//! batch, and from a follower-turned-leader); bad compressed input is refused with a
//! stable code and leaves the log as it was.

use std::time::Duration;

use prost::Message;
use strait_client::{Compression, ProducerConfig, ProducerRecord};
use strait_proto::v1::strait_client::StraitClient;
use strait_proto::v1::{self, ErrorCode, ErrorDetail, FetchRequest, ProduceRequest};
use strait_records::BatchBuilder;
use strait_tests::{Cluster, read_partition_from, wait_until};

/// `n` log-like values (compressible, each distinct).
fn values(codec: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "{codec} 2026-11-25T10:00:{:02} INFO api request {i} completed in {} ms",
                i % 60,
                i % 97
            )
        })
        .collect()
}

/// Every value of `topic`/0 from `from` to the end, with its offset.
async fn read_from(
    client: &strait_client::Client,
    topic: &str,
    from: u64,
) -> anyhow::Result<Vec<(u64, String)>> {
    read_partition_from(client, topic, 0, from)
        .await?
        .into_iter()
        .map(|r| Ok((r.offset, String::from_utf8(r.value.to_vec())?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_batches_are_stored_replicated_and_read_back() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let client = cluster.client_with_topic("packed", 1).await?;
    let mut expected = Vec::new();
    for (codec, name) in [
        (Compression::Lz4, "lz4"),
        (Compression::Zstd, "zstd"),
        (Compression::None, "none"),
    ] {
        let producer = client.producer(ProducerConfig {
            compression: codec,
            linger: Duration::from_millis(20),
            ..Default::default()
        });
        let mut deliveries = Vec::new();
        for value in values(name, 500) {
            deliveries.push(
                producer
                    .send("packed", ProducerRecord::new(value.clone()).partition(0))
                    .await?,
            );
            expected.push(value);
        }
        for delivery in deliveries {
            delivery.await?;
        }
    }
    let all = read_from(&client, "packed", 0).await?;
    let offsets: Vec<u64> = all.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (0..1500).collect::<Vec<_>>());
    let read: Vec<String> = all.into_iter().map(|(_, v)| v).collect();
    assert_eq!(read, expected);
    // From inside a compressed batch: the broker sends the whole batch, the client
    // starts at the offset asked.
    let tail = read_from(&client, "packed", 777).await?;
    assert_eq!(tail.first().map(|(o, _)| *o), Some(777));
    assert_eq!(tail.len(), 1500 - 777);

    // The data is stored compressed: the fetch response carries compressed batches.
    let leader = client.topic("packed").await?.partitions[0]
        .leader
        .expect("a leader");
    let addr = cluster.addrs()[(leader - 1) as usize].clone();
    let mut rpc = StraitClient::connect(format!("http://{addr}")).await?;
    let fetched = rpc
        .fetch(FetchRequest {
            topic: "packed".into(),
            partition: 0,
            offset: 0,
            max_bytes: 1 << 20,
            max_wait_ms: 0,
        })
        .await?
        .into_inner();
    let codecs: Vec<i32> = fetched.batches.iter().map(|b| b.compression).collect();
    assert!(
        codecs.contains(&(v1::Compression::Lz4 as i32)),
        "{codecs:?}"
    );
    assert!(
        codecs.contains(&(v1::Compression::Zstd as i32)),
        "{codecs:?}"
    );

    // Bad input is refused with a stable code, and the log stays as it was.
    let mut plain = BatchBuilder::default();
    plain.push(0, None, b"no timestamp", &[]);
    let unstamped = strait_records::Compression::Lz4.compress(&plain.finish())?;
    let mut bomb = (1u32 << 30).to_le_bytes().to_vec();
    bomb.extend_from_slice(&[0u8; 32]);
    for (what, records, compression, code) in [
        (
            "unstamped records",
            unstamped,
            v1::Compression::Lz4 as i32,
            ErrorCode::InvalidRequest,
        ),
        (
            "garbage",
            bytes::Bytes::from_static(b"not zstd at all"),
            v1::Compression::Zstd as i32,
            ErrorCode::InvalidRequest,
        ),
        (
            "a batch that decompresses to 1 GiB",
            bytes::Bytes::from(bomb),
            v1::Compression::Lz4 as i32,
            ErrorCode::RecordTooLarge,
        ),
        (
            "an unknown codec",
            bytes::Bytes::from_static(b"x"),
            7,
            ErrorCode::InvalidRequest,
        ),
    ] {
        let status = rpc
            .produce(ProduceRequest {
                topic: "packed".into(),
                partition: 0,
                records,
                record_count: 1,
                compression,
                ..Default::default()
            })
            .await
            .expect_err(what);
        let detail = ErrorDetail::decode(status.details())?;
        assert_eq!(detail.code, code as i32, "{what}: {status:?}");
    }
    assert_eq!(client.list_offsets("packed", 0).await?, (0, 1500));

    // A new leader serves the compressed batches it replicated.
    cluster.kill9(leader);
    let read = wait_until(
        "a new leader serving the log",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            async move { read_from(&client, "packed", 0).await.ok() }
        },
    )
    .await?;
    assert_eq!(read.len(), 1500);
    assert_eq!(
        read.last().map(|(_, v)| v.as_str()),
        expected.last().map(String::as_str)
    );
    Ok(())
}
