//! `strait.internal.v1.RaftTransport`: routes each inbound Raft RPC to its group.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::raft::VoteRequest;
use strait_proto::internal::raft_transport_server::{RaftTransport, RaftTransportServer};
use strait_proto::internal::{BeatsRequest, BeatsResponse, RaftMessage};
use tokio::sync::watch;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

use super::grpc_stream::{FastStreams, Handler, RequestStream, reply_stream};
use crate::controller::ControllerRaft;
use crate::partition::types::PartitionRaftConfig;
use crate::partition::{PartitionRegistry, PartitionReplica};
use crate::raft::{
    GROUP_HEADER, MAX_RAFT_MESSAGE_BYTES, RaftRpcKind, serve_append_stream, serve_rpc,
};
use crate::storage::decode;

/// The controller is Raft group 0.
const CONTROLLER_GROUP: u64 = 0;

#[derive(Clone)]
pub struct RaftTransportApi {
    pub controller: Option<ControllerRaft>,
    pub partitions: Arc<PartitionRegistry>,
    /// Set when the broker stops: replication streams from peers end then, or they
    /// would hold the server's graceful shutdown open for as long as their leaders live.
    pub shutdown: watch::Receiver<bool>,
}

/// The replies of one `AppendStream` call.
pub type ReplyStream = Pin<Box<dyn Stream<Item = Result<RaftMessage, Status>> + Send>>;

impl RaftTransportApi {
    /// The controller group, if this broker is one of its voters.
    fn controller(&self) -> Result<&ControllerRaft, Status> {
        self.controller
            .as_ref()
            .ok_or_else(|| Status::not_found("this broker is not a controller voter"))
    }

    /// This broker's replica of partition group `group`.
    fn replica(&self, group: u64) -> Result<Arc<PartitionReplica>, Status> {
        self.partitions
            .by_group(group)
            .ok_or_else(|| Status::not_found(format!("no local replica of group {group}")))
    }

    async fn dispatch(
        &self,
        kind: RaftRpcKind,
        message: RaftMessage,
    ) -> Result<Response<RaftMessage>, Status> {
        let group = message.group_id;
        let result = if group == CONTROLLER_GROUP {
            serve_rpc(self.controller()?, kind, message).await
        } else {
            let replica = self.replica(group)?;
            let elects = matches!(
                kind,
                RaftRpcKind::Vote | RaftRpcKind::PreVote | RaftRpcKind::TransferLeader
            );
            if elects && replica.refuses_votes() {
                return Err(Status::unavailable(format!(
                    "the replica of group {group} is recovering lost entries and cannot vote"
                )));
            }
            // openraft's leader lease sees only AppendEntries, which a quiet partition
            // does not send: a replica that knows of a live leader refuses other
            // candidates, unless the leader itself hands leadership over.
            if matches!(kind, RaftRpcKind::Vote | RaftRpcKind::PreVote)
                && replica.has_live_leader()
                && !decode::<VoteRequest<PartitionRaftConfig>>(&message.data)
                    .is_ok_and(|vote| vote.leadership_transfer)
            {
                return Err(Status::unavailable(format!(
                    "group {group} has a live leader"
                )));
            }
            if kind == RaftRpcKind::Append {
                replica.liveness().heard_leader();
            }
            serve_rpc(replica.raft(), kind, message).await
        };
        let reply =
            result.map_err(|e| Status::invalid_argument(format!("bad raft message: {e}")))?;
        Ok(Response::new(reply))
    }

    /// Serves an `AppendStream` call of `group` whose messages are `input`.
    fn open_append_stream(
        &self,
        group: u64,
        input: impl Stream<Item = Result<RaftMessage, Status>> + Send + Unpin + 'static,
    ) -> Result<ReplyStream, Status> {
        let mut shutdown = self.shutdown.clone();
        let input = input.take_until(async move {
            let _ = shutdown.wait_for(|stopping| *stopping).await;
        });
        Ok(if group == CONTROLLER_GROUP {
            let raft = self.controller()?.clone();
            Box::pin(serve_append_stream(raft, group, input, || {}))
        } else {
            let replica = self.replica(group)?;
            let raft = replica.raft().clone();
            let heard = move || replica.liveness().heard_leader();
            Box::pin(serve_append_stream(raft, group, input, heard))
        })
    }

    /// The Raft transport's service: tonic's, with `AppendStream` (every replicated
    /// record) read without tonic's copy ([`grpc_stream`]).
    pub fn into_service(self) -> FastStreams<RaftTransportServer<RaftTransportApi>> {
        let api = self.clone();
        let append_stream: Handler = Arc::new(move |request: http::Request<Body>| {
            let metadata = MetadataMap::from_headers(request.headers().clone());
            let opened = stream_group(&metadata).and_then(|group| {
                let input = RequestStream::new(request.into_body(), MAX_RAFT_MESSAGE_BYTES);
                api.open_append_stream(group, input)
            });
            Box::pin(std::future::ready(match opened {
                Ok(replies) => reply_stream(replies, MAX_RAFT_MESSAGE_BYTES),
                Err(status) => status.into_http(),
            }))
        });
        let server = RaftTransportServer::new(self)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES);
        let path = format!(
            "/{}/AppendStream",
            RaftTransportServer::<RaftTransportApi>::NAME
        );
        FastStreams::new(server, [(path, append_stream)])
    }
}

/// The group an `AppendStream` call names in its metadata.
fn stream_group(metadata: &MetadataMap) -> Result<u64, Status> {
    metadata
        .get(GROUP_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| Status::invalid_argument(format!("missing or bad `{GROUP_HEADER}`")))
}

#[tonic::async_trait]
impl RaftTransport for RaftTransportApi {
    type AppendStreamStream = ReplyStream;

    /// A running broker serves this call through [`RaftTransportApi::into_service`]
    /// (without tonic's copy); this is tonic's way to the same stream.
    async fn append_stream(
        &self,
        request: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let group = stream_group(request.metadata())?;
        self.open_append_stream(group, request.into_inner())
            .map(Response::new)
    }

    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.dispatch(RaftRpcKind::Append, request.into_inner())
            .await
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.dispatch(RaftRpcKind::Vote, request.into_inner()).await
    }

    async fn pre_vote(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.dispatch(RaftRpcKind::PreVote, request.into_inner())
            .await
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.dispatch(RaftRpcKind::Snapshot, request.into_inner())
            .await
    }

    async fn transfer_leader(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.dispatch(RaftRpcKind::TransferLeader, request.into_inner())
            .await
    }

    async fn beats(
        &self,
        request: Request<BeatsRequest>,
    ) -> Result<Response<BeatsResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(BeatsResponse {
            replies: self.partitions.answer_beats(request.from, &request.beats),
        }))
    }
}
