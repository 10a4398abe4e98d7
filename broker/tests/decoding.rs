//! Bytes from peers and from disk are decoded with `storage::decode`: arbitrary input
//! must yield an error, never a panic, and what the broker encodes must decode back.

use bytes::Bytes;
use proptest::prelude::*;
use strait_broker::controller::state::{ControllerCommand, LeaderUpdate};
use strait_broker::controller::types::ControllerRaftConfig;
use strait_broker::metadata::ClusterImage;
use strait_broker::partition::types::{PartitionCommand, PartitionRaftConfig, ProducerStamp};
use strait_broker::storage::{decode, encode};
use strait_records::{BatchBuilder, RecordBatch};

type PartitionEntry = openraft::alias::EntryOf<PartitionRaftConfig>;
type ControllerAppend = openraft::raft::AppendEntriesRequest<ControllerRaftConfig>;
type PartitionVote = openraft::raft::VoteRequest<PartitionRaftConfig>;

fn record_batch() -> impl Strategy<Value = RecordBatch> {
    let record = (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)),
        proptest::collection::vec(any::<u8>(), 0..256),
        any::<i64>(),
        proptest::collection::vec(
            ("[a-z]{0,8}", proptest::collection::vec(any::<u8>(), 0..16)),
            0..3,
        ),
    );
    proptest::collection::vec(record, 1..20).prop_map(|records| {
        let mut builder = BatchBuilder::default();
        for (key, value, timestamp_ms, headers) in records {
            let headers: Vec<(String, Bytes)> = headers
                .into_iter()
                .map(|(k, v)| (k, Bytes::from(v)))
                .collect();
            builder.push(timestamp_ms, key.as_deref(), &value, &headers);
        }
        RecordBatch::parse(builder.finish(), usize::MAX).expect("a built batch parses")
    })
}

fn command() -> impl Strategy<Value = ControllerCommand> {
    prop_oneof![
        (any::<u64>(), "[a-z0-9.:]{0,20}").prop_map(|(id, addr)| {
            ControllerCommand::RegisterBroker {
                id,
                addr,
                roles: vec!["broker".into()],
                rack: String::new(),
            }
        }),
        proptest::collection::vec(any::<u64>(), 0..5)
            .prop_map(|ids| ControllerCommand::FenceBrokers { ids }),
        ("[a-z]{1,10}", any::<u32>(), any::<u32>()).prop_map(
            |(name, partitions, replication_factor)| {
                ControllerCommand::CreateTopic {
                    name,
                    partitions,
                    replication_factor,
                    configs: Default::default(),
                }
            }
        ),
        "[a-z]{1,10}".prop_map(|name| ControllerCommand::DeleteTopic { name }),
        Just(ControllerCommand::AllocateProducerId),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(group_id, leader, term)| {
            ControllerCommand::UpdateLeaders {
                updates: vec![LeaderUpdate {
                    group_id,
                    leader,
                    term,
                    isr: vec![leader],
                }],
            }
        }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<PartitionEntry>(&bytes);
        let _ = decode::<ControllerAppend>(&bytes);
        let _ = decode::<PartitionVote>(&bytes);
        let _ = decode::<ControllerCommand>(&bytes);
        let _ = decode::<ClusterImage>(&bytes);
    }

    #[test]
    fn partition_commands_round_trip(
        batch in record_batch(),
        producer in proptest::option::of((1u64.., any::<u64>())),
    ) {
        let producer = producer.map(|(producer_id, base_sequence)| ProducerStamp {
            producer_id,
            base_sequence,
        });
        let command = PartitionCommand::Append { batch, producer };
        let bytes = encode(&command).expect("encodes");
        prop_assert_eq!(decode::<PartitionCommand>(&bytes).expect("decodes"), command);
    }

    #[test]
    fn controller_commands_round_trip(command in command()) {
        let bytes = encode(&command).expect("encodes");
        prop_assert_eq!(decode::<ControllerCommand>(&bytes).expect("decodes"), command);
    }

    #[test]
    fn truncated_encodings_are_errors(batch in record_batch(), cut in 0usize..64) {
        let bytes = encode(&PartitionCommand::Append { batch, producer: None }).expect("encodes");
        let cut = cut.min(bytes.len() - 1);
        prop_assert!(decode::<PartitionCommand>(&bytes[..cut]).is_err());
    }
}
