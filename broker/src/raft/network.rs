//! Outbound Raft RPCs: one lazily connected tonic `Channel` per peer broker, shared by
//! every group (HTTP/2 multiplexes them); each message names its group.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::Stream;
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::base::BoxFuture;
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, RaftTypeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use strait_proto::internal::raft_transport_client::RaftTransportClient;
use tokio::sync::Semaphore;
use tonic::transport::{Channel, Endpoint};

use super::append_stream::{Replies, SessionLinks};
use super::inbound::{RaftRpcKind, RemoteReply};
use super::wire::{from_message, to_message};
use crate::storage::GroupId;

/// Largest Raft message a broker sends or accepts.
pub const MAX_RAFT_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Connections to peer brokers and their current addresses, shared by all groups.
#[derive(Clone)]
pub struct PeerPool {
    inner: Arc<PeerPoolInner>,
}

#[derive(Default)]
struct PeerPoolInner {
    channels: Mutex<HashMap<String, Channel>>,
    /// Per peer address: the connection that carries replication streams, and the
    /// permits that cap how many are open on it.
    lanes: Mutex<HashMap<String, (Channel, Arc<Semaphore>)>>,
    addresses: RwLock<HashMap<u64, String>>,
    /// Peer address → address to dial instead (`--peer-route`).
    routes: BTreeMap<String, String>,
    /// Replication streams open at once to one peer (`--replication-streams`).
    streams_per_peer: usize,
}

impl PeerPool {
    /// A pool that dials the peers named in `routes` through their given addresses and
    /// opens at most `streams_per_peer` replication streams to each peer.
    pub fn new(routes: BTreeMap<String, String>, streams_per_peer: usize) -> Self {
        PeerPool {
            inner: Arc::new(PeerPoolInner {
                routes,
                streams_per_peer,
                ..PeerPoolInner::default()
            }),
        }
    }

    /// Records where broker `id` can be reached now (from the broker registry).
    pub fn set_addresses(&self, addrs: impl IntoIterator<Item = (u64, String)>) {
        let mut map = self
            .inner
            .addresses
            .write()
            .unwrap_or_else(|e| e.into_inner());
        map.extend(addrs);
    }

    /// The address of broker `id`: the registry's if known, else `fallback`.
    pub fn address_of(&self, id: u64, fallback: &str) -> String {
        let map = self
            .inner
            .addresses
            .read()
            .unwrap_or_else(|e| e.into_inner());
        map.get(&id)
            .cloned()
            .unwrap_or_else(|| fallback.to_string())
    }

    /// A Raft transport client for broker `id` (its registered address, else `fallback`).
    pub fn transport(
        &self,
        id: u64,
        fallback: &str,
    ) -> Result<RaftTransportClient<Channel>, tonic::transport::Error> {
        Ok(client(self.channel(&self.address_of(id, fallback))?))
    }

    /// What a replication session to broker `id` uses: the unary client, and the
    /// peer's stream lane. Replication streams are long-lived, so they get a connection
    /// of their own, capped below the server's concurrent-stream limit, and never crowd
    /// out votes, beats and unary appends.
    pub fn session_links(
        &self,
        id: u64,
        fallback: &str,
    ) -> Result<SessionLinks, tonic::transport::Error> {
        let addr = self.address_of(id, fallback);
        let (lane, permits) = {
            let mut lanes = self.inner.lanes.lock().unwrap_or_else(|e| e.into_inner());
            match lanes.get(&addr) {
                Some(lane) => lane.clone(),
                None => {
                    let lane = (
                        self.dial(&addr)?,
                        Arc::new(Semaphore::new(self.inner.streams_per_peer)),
                    );
                    lanes.insert(addr.clone(), lane.clone());
                    lane
                }
            }
        };
        Ok(SessionLinks {
            unary: client(self.channel(&addr)?),
            lane: client(lane),
            permits,
        })
    }

    /// A channel to `addr`, created on first use; it connects lazily and reconnects by itself.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = self.dial(addr)?;
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// A new lazily connecting channel to `addr` (or its `--peer-route`).
    fn dial(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let dial = self.inner.routes.get(addr).map_or(addr, String::as_str);
        Ok(Endpoint::from_shared(format!("http://{dial}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .initial_stream_window_size(crate::server::STREAM_WINDOW_BYTES)
            .initial_connection_window_size(crate::server::CONNECTION_WINDOW_BYTES)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy())
    }
}

fn client(channel: Channel) -> RaftTransportClient<Channel> {
    RaftTransportClient::new(channel)
        .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
}

/// Creates per-peer links for one group.
pub struct GroupNetworkFactory<C> {
    group: GroupId,
    peers: PeerPool,
    _config: PhantomData<fn() -> C>,
}

impl<C> GroupNetworkFactory<C> {
    pub fn new(group: GroupId, peers: PeerPool) -> Self {
        GroupNetworkFactory {
            group,
            peers,
            _config: PhantomData,
        }
    }
}

/// One group's link to one peer broker.
pub struct PeerLink<C> {
    group: GroupId,
    target: u64,
    fallback_addr: String,
    peers: PeerPool,
    _config: PhantomData<fn() -> C>,
}

impl<C> RaftNetworkFactory<C> for GroupNetworkFactory<C>
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode>,
    AppendEntriesRequest<C>: Serialize,
    AppendEntriesResponse<C>: DeserializeOwned,
    StreamAppendResult<C>: DeserializeOwned,
    VoteRequest<C>: Serialize,
    VoteResponse<C>: DeserializeOwned,
    VoteOf<C>: Serialize,
    SnapshotResponse<C>: DeserializeOwned,
    TransferLeaderRequest<C>: Serialize,
    TransferLeaderResponse<C>: DeserializeOwned,
    openraft::alias::SnapshotMetaOf<C>: Serialize,
{
    type Network = PeerLink<C>;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerLink<C> {
        PeerLink {
            group: self.group,
            target,
            fallback_addr: node.addr.clone(),
            peers: self.peers.clone(),
            _config: PhantomData,
        }
    }
}

/// Why an outbound RPC failed, before it is mapped to openraft's error kinds.
#[derive(Debug, thiserror::Error)]
pub(super) enum LinkError {
    #[error("peer {0} unreachable: {1}")]
    Unreachable(u64, String),
    #[error("peer {0} answered with an error: {1}")]
    Remote(u64, String),
    #[error("bad message: {0}")]
    Codec(#[from] std::io::Error),
}

impl<C: RaftTypeConfig> From<LinkError> for RPCError<C> {
    fn from(err: LinkError) -> Self {
        match err {
            LinkError::Unreachable(..) | LinkError::Remote(..) => {
                RPCError::Unreachable(Unreachable::new(&err))
            }
            LinkError::Codec(_) => RPCError::Network(NetworkError::new(&err)),
        }
    }
}

impl<C: RaftTypeConfig> From<LinkError> for StreamingError<C> {
    fn from(err: LinkError) -> Self {
        match err {
            LinkError::Unreachable(..) | LinkError::Remote(..) => {
                StreamingError::Unreachable(Unreachable::new(&err))
            }
            LinkError::Codec(_) => StreamingError::Network(NetworkError::new(&err)),
        }
    }
}

impl<C> PeerLink<C> {
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        kind: RaftRpcKind,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, LinkError> {
        let client = self
            .peers
            .transport(self.target, &self.fallback_addr)
            .map_err(|e| LinkError::Unreachable(self.target, e.to_string()))?;
        call(client, self.group, self.target, kind, request, timeout).await
    }
}

/// One unary Raft RPC of `group` to broker `target` through `client`.
pub(super) async fn call<Req: Serialize, Resp: DeserializeOwned>(
    mut client: RaftTransportClient<Channel>,
    group: GroupId,
    target: u64,
    kind: RaftRpcKind,
    request: &Req,
    timeout: Duration,
) -> Result<Resp, LinkError> {
    let mut req = tonic::Request::new(to_message(group, request)?);
    req.set_timeout(timeout);
    let reply = match kind {
        RaftRpcKind::Append => client.append_entries(req).await,
        RaftRpcKind::Vote => client.vote(req).await,
        RaftRpcKind::PreVote => client.pre_vote(req).await,
        RaftRpcKind::Snapshot => client.install_snapshot(req).await,
        RaftRpcKind::TransferLeader => client.transfer_leader(req).await,
    }
    .map_err(|status| LinkError::Unreachable(target, status.message().to_string()))?;
    match from_message::<RemoteReply<Resp>>(reply.into_inner())? {
        Ok(resp) => Ok(resp),
        Err(message) => Err(LinkError::Remote(target, message)),
    }
}

impl<C> RaftNetworkV2<C> for PeerLink<C>
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode>,
    AppendEntriesRequest<C>: Serialize,
    AppendEntriesResponse<C>: DeserializeOwned,
    StreamAppendResult<C>: DeserializeOwned,
    VoteRequest<C>: Serialize,
    VoteResponse<C>: DeserializeOwned,
    VoteOf<C>: Serialize,
    SnapshotResponse<C>: DeserializeOwned,
    TransferLeaderRequest<C>: Serialize,
    TransferLeaderResponse<C>: DeserializeOwned,
    openraft::alias::SnapshotMetaOf<C>: Serialize,
{
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        Ok(self
            .call(RaftRpcKind::Append, &rpc, option.soft_ttl())
            .await?)
    }

    /// Pipelined: one `AppendStream` call carries the whole session (`append_stream`).
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<Replies<'s, C>, RPCError<C>>>
    where
        S: Stream<Item = AppendEntriesRequest<C>> + OptionalSend + Unpin + 'static,
    {
        let links = self
            .peers
            .session_links(self.target, &self.fallback_addr)
            .map_err(|e| e.to_string());
        super::append_stream::open(links, self.group, self.target, input, option.soft_ttl())
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        Ok(self
            .call(RaftRpcKind::Vote, &rpc, option.soft_ttl())
            .await?)
    }

    /// Implemented, not left to openraft's default (which grants at once): a replica cut
    /// off from its peers must not reach a real election and raise its term.
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        Ok(self
            .call(RaftRpcKind::PreVote, &rpc, option.soft_ttl())
            .await?)
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, Self::SnapshotData>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let request = (vote, snapshot.meta, snapshot.snapshot.into_inner());
        // Snapshots are bigger than appends: allow them the whole hard deadline.
        Ok(self
            .call(RaftRpcKind::Snapshot, &request, option.hard_ttl())
            .await?)
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<C>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        Ok(self
            .call(RaftRpcKind::TransferLeader, &req, option.soft_ttl())
            .await?)
    }
}
