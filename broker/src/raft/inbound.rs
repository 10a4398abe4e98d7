//! Inbound Raft RPCs: decode the message, hand it to the local group, encode the reply.
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

use crate::storage::{decode, encode};

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

/// Runs one inbound RPC of `kind` against the local group `raft`; returns the encoded reply.
pub async fn serve_rpc<C, SM>(
    raft: &Raft<C, SM>,
    kind: RaftRpcKind,
    data: &[u8],
) -> io::Result<Vec<u8>>
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
    match kind {
        RaftRpcKind::Append => {
            let req: AppendEntriesRequest<C> = decode(data)?;
            let reply: RemoteReply<_> = raft.append_entries(req).await.map_err(|e| e.to_string());
            encode(&reply)
        }
        RaftRpcKind::Vote => {
            let req: VoteRequest<C> = decode(data)?;
            let reply: RemoteReply<_> = raft.vote(req).await.map_err(|e| e.to_string());
            encode(&reply)
        }
        RaftRpcKind::PreVote => {
            let req: VoteRequest<C> = decode(data)?;
            let reply: RemoteReply<_> = raft.pre_vote(req).await.map_err(|e| e.to_string());
            encode(&reply)
        }
        RaftRpcKind::Snapshot => {
            let (vote, meta, bytes): (VoteOf<C>, SnapshotMetaOf<C>, Vec<u8>) = decode(data)?;
            let snapshot = Snapshot {
                meta,
                snapshot: Cursor::new(bytes),
            };
            let reply: RemoteReply<_> = raft
                .install_full_snapshot(vote, snapshot)
                .await
                .map_err(|e| e.to_string());
            encode(&reply)
        }
        RaftRpcKind::TransferLeader => {
            let req: TransferLeaderRequest<C> = decode(data)?;
            let reply: RemoteReply<_> = raft
                .handle_transfer_leader(req)
                .await
                .map_err(|e| e.to_string());
            encode(&reply)
        }
    }
}
