//! Inbound Raft RPCs: decode the message, hand it to the local group, encode the reply
//! (`raft::wire`).
//!
//! Peers are not trusted: a message that does not decode is refused with an
//! `InvalidData` error and never reaches openraft.

use std::io::{self, Cursor};

use openraft::alias::{SnapshotMetaOf, VoteOf};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{Raft, RaftTypeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;

use strait_proto::internal::RaftMessage;

use super::wire::{from_message, to_message};

/// What the receiving group answers: openraft's reply, or why it could not.
pub(crate) type RemoteReply<T> = Result<T, String>;

/// The Raft RPCs a group exchanges with its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftRpcKind {
    Append,
    Vote,
    PreVote,
    Snapshot,
    TransferLeader,
}

/// Runs one inbound RPC of `kind`, `message`, against the local group `raft`; returns
/// the reply.
pub async fn serve_rpc<C, SM>(
    raft: &Raft<C, SM>,
    kind: RaftRpcKind,
    message: RaftMessage,
) -> io::Result<RaftMessage>
where
    C: RaftTypeConfig,
    SM: RaftStateMachine<C, SnapshotData = Cursor<Vec<u8>>>,
    AppendEntriesRequest<C>: DeserializeOwned,
    AppendEntriesResponse<C>: Serialize,
    VoteRequest<C>: DeserializeOwned,
    VoteResponse<C>: Serialize,
    VoteOf<C>: DeserializeOwned,
    SnapshotMetaOf<C>: DeserializeOwned,
    SnapshotResponse<C>: Serialize,
    TransferLeaderRequest<C>: DeserializeOwned,
    TransferLeaderResponse<C>: Serialize,
{
    let group = message.group_id;
    match kind {
        RaftRpcKind::Append => {
            let req: AppendEntriesRequest<C> = from_message(message)?;
            let reply: RemoteReply<_> = raft.append_entries(req).await.map_err(|e| e.to_string());
            to_message(group, &reply)
        }
        RaftRpcKind::Vote => {
            let req: VoteRequest<C> = from_message(message)?;
            let reply: RemoteReply<_> = raft.vote(req).await.map_err(|e| e.to_string());
            to_message(group, &reply)
        }
        RaftRpcKind::PreVote => {
            let req: VoteRequest<C> = from_message(message)?;
            let reply: RemoteReply<_> = raft.pre_vote(req).await.map_err(|e| e.to_string());
            to_message(group, &reply)
        }
        RaftRpcKind::Snapshot => {
            let (vote, meta, bytes): (VoteOf<C>, SnapshotMetaOf<C>, Vec<u8>) =
                from_message(message)?;
            let snapshot = Snapshot {
                meta,
                snapshot: Cursor::new(bytes),
            };
            let reply: RemoteReply<_> = raft
                .install_full_snapshot(vote, snapshot)
                .await
                .map_err(|e| e.to_string());
            to_message(group, &reply)
        }
        RaftRpcKind::TransferLeader => {
            let req: TransferLeaderRequest<C> = from_message(message)?;
            let reply: RemoteReply<_> = raft
                .handle_transfer_leader(req)
                .await
                .map_err(|e| e.to_string());
            to_message(group, &reply)
        }
    }
}
