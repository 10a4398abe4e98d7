//! How a Raft RPC travels: its openraft request or reply serialized into a
//! `RaftMessage`, with the record batches it carries detached from the serialization
//! into the message's `payloads` (`strait_records::detached`). A batch's bytes are then
//! copied once on the way out (into the gRPC frame) and not at all on arrival, instead
//! of into and out of the serialization as well.

use std::io;

use serde::Serialize;
use serde::de::DeserializeOwned;
use strait_proto::internal::RaftMessage;
use strait_records::detached;

use crate::storage::{GroupId, decode, encode};

/// `value` as a message of `group`.
pub fn to_message<T: Serialize>(group: GroupId, value: &T) -> io::Result<RaftMessage> {
    let (data, payloads) = detached::detach(|| encode(value));
    Ok(RaftMessage {
        group_id: group,
        data: data?.into(),
        payloads,
    })
}

/// The value `message` carries. A peer is not trusted: a message that does not decode,
/// or whose batches do not match its payloads, is an `InvalidData` error.
pub fn from_message<T: DeserializeOwned>(message: RaftMessage) -> io::Result<T> {
    let RaftMessage { data, payloads, .. } = message;
    detached::attach(payloads, || decode(&data))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::impls::leader_id_adv::LeaderId;
    use openraft::raft::AppendEntriesRequest;
    use openraft::{EntryPayload, LogId, Vote};
    use strait_records::{BatchBuilder, Compression, RecordBatch};

    use super::*;
    use crate::partition::types::{PartitionCommand, PartitionRaftConfig as C};

    fn request(values: &[&[u8]]) -> AppendEntriesRequest<C> {
        let entries = values
            .iter()
            .enumerate()
            .map(|(i, value)| {
                let mut builder = BatchBuilder::default();
                builder.push(1, None, value, &[]);
                let batch =
                    RecordBatch::parse_compressed(builder.finish(), Compression::None, 1024, 1024)
                        .expect("a valid batch");
                openraft::alias::EntryOf::<C> {
                    log_id: LogId::new(
                        LeaderId {
                            term: 2,
                            node_id: 1,
                        },
                        i as u64 + 1,
                    ),
                    payload: EntryPayload::Normal(PartitionCommand::Append {
                        batch,
                        producer: None,
                    }),
                }
            })
            .collect();
        AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: None,
            entries,
            leader_commit: None,
        }
    }

    fn batches(request: &AppendEntriesRequest<C>) -> Vec<Bytes> {
        request
            .entries
            .iter()
            .filter_map(|entry| match &entry.payload {
                EntryPayload::Normal(PartitionCommand::Append { batch, .. }) => {
                    Some(batch.bytes().clone())
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn batches_travel_as_payloads_and_come_back_uncopied() {
        let sent = request(&[b"one", b"two", b"three"]);
        let message = to_message(7, &sent).expect("encodes");
        assert_eq!(message.group_id, 7);
        assert_eq!(message.payloads, batches(&sent));
        assert!(
            !message.data.windows(5).any(|w| w == b"three"),
            "records are not inside the serialization"
        );
        let payloads = message.payloads.clone();
        let received: AppendEntriesRequest<C> = from_message(message).expect("decodes");
        assert_eq!(batches(&received), batches(&sent));
        for (got, wire) in batches(&received).iter().zip(&payloads) {
            assert_eq!(
                got.as_ptr(),
                wire.as_ptr(),
                "taken from the payload, not copied"
            );
        }
    }

    #[test]
    fn a_message_whose_payloads_do_not_match_is_invalid_data() {
        let mut message = to_message(7, &request(&[b"one", b"two"])).expect("encodes");
        message.payloads.pop();
        let err = from_message::<AppendEntriesRequest<C>>(message.clone()).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        message.payloads.push(Bytes::from_static(b"\x05\0\0\0abc"));
        let err = from_message::<AppendEntriesRequest<C>>(message).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
