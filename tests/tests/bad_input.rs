//! Bad input gets a clear, typed error with a stable code, and the cluster keeps serving.

use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use strait_client::{ClientError, ErrorCode, OffsetSpec, PartitionConsumer, ProducerRecord};
use strait_proto::internal::RaftMessage;
use strait_proto::internal::raft_transport_client::RaftTransportClient;
use strait_proto::v1::strait_client::StraitClient;
use strait_proto::v1::{
    ErrorDetail, FetchRequest, FetchStreamRequest, ProduceRequest, ProduceStreamRequest,
};
use strait_records::BatchBuilder;
use strait_tests::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_typed_errors_and_the_cluster_keeps_serving() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await?;
    let client = cluster.client().await?;
    client.create_topic("good", 1, 3).await?;
    client
        .wait_for_leaders("good", Duration::from_secs(30))
        .await?;
    let producer = client.producer(Default::default());

    // Unknown topic, for produce and for consume.
    let err = producer
        .send_and_wait("missing", ProducerRecord::new("x"))
        .await
        .expect_err("unknown topic");
    assert_eq!(err.code(), Some(ErrorCode::UnknownTopic), "{err}");
    let err = client
        .consumer("missing", None, OffsetSpec::Earliest, Default::default())
        .await
        .err()
        .expect("unknown topic");
    assert_eq!(err.code(), Some(ErrorCode::UnknownTopic), "{err}");

    // Replication factor above the live brokers, zero partitions, invalid names, duplicates.
    let err = client
        .create_topic("too-many", 1, 4)
        .await
        .expect_err("rf 4 > 3 brokers");
    assert!(
        matches!(err, ClientError::InvalidReplicationFactor(_)),
        "{err}"
    );
    assert!(err.to_string().contains("3 live brokers"), "{err}");
    let err = client
        .create_topic("none", 0, 1)
        .await
        .expect_err("0 partitions");
    assert_eq!(err.code(), Some(ErrorCode::InvalidPartitions), "{err}");
    for name in ["bad name", "a/b", "..", ""] {
        let err = client
            .create_topic(name, 1, 1)
            .await
            .expect_err("invalid name");
        assert_eq!(
            err.code(),
            Some(ErrorCode::InvalidTopicName),
            "{name}: {err}"
        );
    }
    let err = client.create_topic("good", 1, 1).await.expect_err("exists");
    assert_eq!(err.code(), Some(ErrorCode::TopicAlreadyExists), "{err}");

    // A record over the broker's 1 MiB limit.
    let huge = Bytes::from(vec![b'x'; 1024 * 1024 + 1]);
    let err = producer
        .send_and_wait("good", ProducerRecord::new(huge))
        .await
        .expect_err("too large");
    assert_eq!(err.code(), Some(ErrorCode::RecordTooLarge), "{err}");

    // A partition that does not exist.
    let err = producer
        .send_and_wait("good", ProducerRecord::new("x").partition(7))
        .await
        .expect_err("no partition 7");
    assert_eq!(err.code(), Some(ErrorCode::UnknownPartition), "{err}");

    // An offset past the end names the valid range.
    producer
        .send_and_wait("good", ProducerRecord::new("one"))
        .await?;
    let mut consumer = PartitionConsumer::new(
        client.clone(),
        "good",
        0,
        OffsetSpec::At(1000),
        Default::default(),
    )
    .await?;
    match consumer.poll().await {
        Err(ClientError::OffsetOutOfRange {
            offset,
            log_start_offset,
            high_watermark,
        }) => {
            assert_eq!((offset, log_start_offset, high_watermark), (1000, 0, 1));
        }
        other => panic!("expected OFFSET_OUT_OF_RANGE, got {other:?}"),
    }

    // A broker that does not lead a partition says so and names the leader.
    let info = client.topic("good").await?;
    let leader = info.partitions[0].leader.expect("a leader");
    let leader_addr = cluster.addrs()[(leader - 1) as usize].clone();
    let follower_addr = cluster.addrs()[(leader % 3) as usize].clone();
    let mut follower = StraitClient::connect(format!("http://{follower_addr}")).await?;
    let mut batch = BatchBuilder::default();
    batch.push(0, None, b"misrouted", &[]);
    let status = follower
        .produce(ProduceRequest {
            topic: "good".into(),
            partition: 0,
            records: batch.finish(),
            record_count: 1,
            timeout_ms: 0,
            ..Default::default()
        })
        .await
        .expect_err("a follower refuses produce");
    let detail = ErrorDetail::decode(status.details())?;
    assert_eq!(detail.code, ErrorCode::NotLeader as i32, "{status:?}");
    assert_eq!(detail.leader_id, Some(leader));
    assert_eq!(detail.leader_addr, leader_addr);

    // Malformed record batches sent straight to the leader are refused, whole.
    let mut leader_rpc = StraitClient::connect(format!("http://{leader_addr}")).await?;
    let mut one = BatchBuilder::default();
    one.push(0, Some(b"k"), b"v", &[]);
    let one = one.finish();
    let mut truncated = one.to_vec();
    truncated.pop();
    let mut lying_length = one.to_vec();
    lying_length[0] = 0xff;
    for (what, records, record_count) in [
        ("garbage", Bytes::from_static(b"\x01\x02\x03"), 1),
        ("empty", Bytes::new(), 0),
        ("truncated", Bytes::from(truncated), 1),
        ("length past the end", Bytes::from(lying_length), 1),
        ("count mismatch", one.clone(), 2),
    ] {
        let status = leader_rpc
            .produce(ProduceRequest {
                topic: "good".into(),
                partition: 0,
                records,
                record_count,
                timeout_ms: 0,
                ..Default::default()
            })
            .await
            .expect_err(what);
        let detail = ErrorDetail::decode(status.details())?;
        assert_eq!(
            detail.code,
            ErrorCode::InvalidRequest as i32,
            "{what}: {status:?}"
        );
    }

    // In a produce session the same refusals come back in-band, each in the reply
    // carrying its request's id, and the session goes on serving the requests after them.
    let produce = |topic: &str, records: Bytes, record_count| ProduceRequest {
        topic: topic.into(),
        partition: 0,
        records,
        record_count,
        ..Default::default()
    };
    let session = [
        (7, Some(produce("good", one.clone(), 1))),
        (8, None),
        (9, Some(produce("missing", one.clone(), 1))),
        (
            10,
            Some(produce("good", Bytes::from_static(b"\x01\x02"), 1)),
        ),
        (11, Some(produce("good", one.clone(), 1))),
    ]
    .map(|(id, request)| ProduceStreamRequest { id, request });
    let replies = leader_rpc
        .produce_stream(futures::stream::iter(session))
        .await?
        .into_inner();
    let answered = by_id(replies, |r| r.id).await?;
    assert_eq!(
        answered.keys().copied().collect::<Vec<_>>(),
        [7, 8, 9, 10, 11]
    );
    let code = |id: u64| answered[&id].error.as_ref().map(|e| e.code);
    assert_eq!(code(8), Some(ErrorCode::InvalidRequest as i32));
    assert_eq!(code(9), Some(ErrorCode::UnknownTopic as i32));
    assert_eq!(code(10), Some(ErrorCode::InvalidRequest as i32));
    let offset = |id: u64| answered[&id].response.as_ref().map(|r| r.base_offset);
    let (first, second) = (
        offset(7).expect("7 written"),
        offset(11).expect("11 written"),
    );
    assert_eq!(first.abs_diff(second), 1, "both written, once each");
    // A follower's session answers NOT_LEADER and names the leader.
    let mut replies = follower
        .produce_stream(futures::stream::iter([ProduceStreamRequest {
            id: 1,
            request: Some(produce("good", one.clone(), 1)),
        }]))
        .await?
        .into_inner();
    let reply = replies.message().await?.expect("a reply");
    let detail = reply.error.expect("refused");
    assert_eq!(detail.code, ErrorCode::NotLeader as i32, "{detail:?}");
    assert_eq!(detail.leader_addr, leader_addr);
    assert!(
        replies.message().await?.is_none(),
        "the session ends with its requests"
    );

    // A fetch session answers in-band too: out of range (with the valid range), an
    // unknown topic, a request left out, and a good fetch after them.
    let fetch = |topic: &str, offset| FetchRequest {
        topic: topic.into(),
        partition: 0,
        offset,
        max_bytes: 1 << 20,
        max_wait_ms: 0,
    };
    let session = [
        (1, Some(fetch("good", 1000))),
        (2, Some(fetch("missing", 0))),
        (3, None),
        (4, Some(fetch("good", 0))),
    ]
    .map(|(id, request)| FetchStreamRequest { id, request });
    let replies = leader_rpc
        .fetch_stream(futures::stream::iter(session))
        .await?
        .into_inner();
    let answered = by_id(replies, |r| r.id).await?;
    assert_eq!(answered.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
    let refused = |id: u64| answered[&id].error.clone().expect("refused");
    assert_eq!(refused(1).code, ErrorCode::OffsetOutOfRange as i32);
    assert_eq!(
        (refused(1).log_start_offset, refused(1).high_watermark),
        (0, 3)
    );
    assert_eq!(refused(2).code, ErrorCode::UnknownTopic as i32);
    assert_eq!(refused(3).code, ErrorCode::InvalidRequest as i32);
    let fetched = answered[&4].response.clone().expect("fetched");
    let counted: u32 = fetched.batches.iter().map(|b| b.record_count).sum();
    assert_eq!((counted, fetched.high_watermark), (3, 3));

    // A peer sending garbage on the Raft transport is refused, not obeyed.
    let mut raft = RaftTransportClient::connect(format!("http://{}", cluster.addrs()[0])).await?;
    for group_id in [0, 1, 999] {
        let garbage = RaftMessage {
            group_id,
            data: Bytes::from_static(b"\xff\x00 definitely not a raft message"),
            payloads: vec![Bytes::from_static(b"a stray payload")],
        };
        let status = raft
            .append_entries(garbage)
            .await
            .expect_err("garbage refused");
        assert!(
            matches!(
                status.code(),
                tonic::Code::InvalidArgument | tonic::Code::NotFound
            ),
            "{status:?}"
        );
    }

    // ... on a replication stream too, with or without a group named.
    for group in [Some("0"), Some("1"), Some("999"), None] {
        let garbage = RaftMessage {
            group_id: 1,
            data: Bytes::from_static(b"\xff\x00 definitely not a raft message"),
            payloads: Vec::new(),
        };
        let mut request = tonic::Request::new(futures::stream::iter([garbage]));
        if let Some(group) = group {
            request
                .metadata_mut()
                .insert("strait-raft-group", group.parse()?);
        }
        let status = match raft.append_stream(request).await {
            Err(status) => status,
            Ok(replies) => replies
                .into_inner()
                .message()
                .await
                .expect_err("a garbage stream refused"),
        };
        assert!(
            matches!(
                status.code(),
                tonic::Code::InvalidArgument | tonic::Code::NotFound
            ),
            "{group:?}: {status:?}"
        );
    }

    // After all of that the cluster still serves.
    let meta = producer
        .send_and_wait("good", ProducerRecord::new("two"))
        .await?;
    // Offsets 1 and 2 went to the produce session's two good requests.
    assert_eq!(meta.offset, 3);
    let mut consumer = PartitionConsumer::new(
        client.clone(),
        "good",
        0,
        OffsetSpec::Earliest,
        Default::default(),
    )
    .await?;
    let records = consumer.poll().await?;
    let values: Vec<&[u8]> = records.iter().map(|r| r.value.as_ref()).collect();
    assert_eq!(
        values,
        vec![
            b"one".as_ref(),
            b"v".as_ref(),
            b"v".as_ref(),
            b"two".as_ref()
        ]
    );
    Ok(())
}

/// Every reply of a session until it ends, by request id; each id answered once.
async fn by_id<T: Clone + std::fmt::Debug>(
    mut replies: tonic::Streaming<T>,
    id: impl Fn(&T) -> u64,
) -> anyhow::Result<std::collections::BTreeMap<u64, T>> {
    let mut answered = std::collections::BTreeMap::new();
    while let Some(reply) = replies.message().await? {
        let previous = answered.insert(id(&reply), reply.clone());
        assert!(previous.is_none(), "one reply per request: {reply:?}");
    }
    Ok(answered)
}
