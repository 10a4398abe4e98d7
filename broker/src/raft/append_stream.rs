//! Pipelined replication: both ends of the `AppendStream` RPC.
//!
//! openraft (0.10) replicates to each follower through a *stream* of AppendEntries
//! requests, and takes the replies as a stream in the same order. A transport that
//! answers one request before it sends the next (openraft's default) leaves the follower
//! idle for a round trip and an fdatasync per batch: a new entry waits until the previous
//! one's reply is back. Here one gRPC bidirectional stream (one HTTP/2 stream, so ordered)
//! carries a whole replication session: the leader sends each request as soon as openraft
//! produces it, the follower hands them to its group in order (`Raft::stream_append`) and
//! answers each, in order, once its entries are durable. Several requests are in flight
//! per follower, bounded by HTTP/2 flow control on the way out and by openraft's pipeline
//! (64 requests) on the follower.
//!
//! The wire: the request metadata `strait-raft-group` names the group; a request's
//! `data` is an encoded `AppendEntriesRequest`, a reply's an encoded
//! `Result<StreamAppendResult, String>` (the error: the follower's group stopped).

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, Unreachable};
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use openraft::storage::RaftStateMachine;
use openraft::{OptionalSend, Raft, RaftTypeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use strait_proto::internal::RaftMessage;
use strait_proto::internal::raft_transport_client::RaftTransportClient;
use tokio::time::Instant;
use tonic::Status;
use tonic::transport::Channel;

use super::inbound::RemoteReply;
use crate::storage::{GroupId, decode, encode};

/// Replies a follower buffers for a slow leader (openraft's own pipeline holds 64).
const PIPELINE_DEPTH: usize = 64;

/// The request metadata key naming the group a stream replicates.
pub const GROUP_HEADER: &str = "strait-raft-group";

/// The replies of a replication stream, in the order of its requests.
pub type Replies<'s, C> = BoxStream<'s, Result<StreamAppendResult<C>, RPCError<C>>>;

/// Opens a replication stream of `group` to broker `target` through `client`, sends
/// `input` down it, and returns the replies. Each request must be answered within `ttl`
/// of being sent (checked at least every `ttl`, so a late reply is noticed within
/// `2 × ttl`); otherwise the stream fails as `Unreachable`, as a unary call would.
pub fn open<'s, C, S>(
    client: Result<RaftTransportClient<Channel>, String>,
    group: GroupId,
    target: u64,
    input: S,
    ttl: Duration,
) -> BoxFuture<'s, Result<Replies<'s, C>, RPCError<C>>>
where
    C: RaftTypeConfig,
    AppendEntriesRequest<C>: Serialize,
    StreamAppendResult<C>: DeserializeOwned,
    S: Stream<Item = AppendEntriesRequest<C>> + OptionalSend + Unpin + 'static,
{
    Box::pin(async move {
        let unreachable = move |why: String| {
            RPCError::Unreachable(Unreachable::new(&io::Error::other(format!(
                "peer {target}: {why}"
            ))))
        };
        let mut client = client.map_err(unreachable)?;
        let sent: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
        let requests = {
            let sent = sent.clone();
            // A request that cannot be encoded (never expected) ends the stream: later
            // ones must not be answered in its place.
            input.scan((), move |_, request| {
                let message = match encode(&request) {
                    Ok(data) => {
                        lock(&sent).push_back(Instant::now());
                        Some(RaftMessage {
                            group_id: group,
                            data: data.into(),
                        })
                    }
                    Err(err) => {
                        tracing::error!(%err, group, target, "cannot encode an AppendEntries request");
                        None
                    }
                };
                std::future::ready(message)
            })
        };
        let mut request = tonic::Request::new(requests);
        let group_value = group
            .to_string()
            .parse()
            .map_err(|_| unreachable("bad group id".into()))?;
        request.metadata_mut().insert(GROUP_HEADER, group_value);
        let replies = match tokio::time::timeout(ttl, client.append_stream(request)).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return Err(unreachable(status.message().to_string())),
            Err(_) => return Err(unreachable("timed out opening the append stream".into())),
        };
        let replies = futures::stream::unfold(Some((replies, sent)), move |state| async move {
            let (mut replies, sent) = state?;
            let next = loop {
                let oldest = lock(&sent).front().copied();
                let deadline = oldest.map_or_else(|| Instant::now() + ttl, |at| at + ttl);
                // `Streaming::message` is cancel-safe: a timed-out wait loses nothing.
                match tokio::time::timeout_at(deadline, replies.message()).await {
                    Ok(next) => break next,
                    Err(_) if oldest.is_some() => {
                        let late = unreachable(format!("no reply within {ttl:?}"));
                        return Some((Err(late), None));
                    }
                    Err(_) => continue,
                }
            };
            let message = match next {
                Ok(Some(message)) => message,
                Ok(None) => return None,
                Err(status) => {
                    return Some((Err(unreachable(status.message().to_string())), None));
                }
            };
            lock(&sent).pop_front();
            match decode::<RemoteReply<StreamAppendResult<C>>>(&message.data) {
                Ok(Ok(result)) => Some((Ok(result), Some((replies, sent)))),
                Ok(Err(stopped)) => Some((Err(unreachable(stopped)), None)),
                Err(err) => Some((Err(RPCError::Network(NetworkError::new(&err))), None)),
            }
        });
        Ok(Box::pin(replies) as Replies<'s, C>)
    })
}

/// Serves one replication stream of `group` for its local replica `raft`: decodes each
/// request (calling `on_request` for it), hands them to the group in order and yields the
/// replies in the same order. A request that does not decode, or names another group,
/// ends the stream with `InvalidArgument` after the replies to the requests before it.
pub fn serve<C, SM, S>(
    raft: Raft<C, SM>,
    group: GroupId,
    input: S,
    on_request: impl Fn() + Send + 'static,
) -> impl Stream<Item = Result<RaftMessage, Status>> + Send + 'static
where
    C: RaftTypeConfig,
    SM: RaftStateMachine<C>,
    AppendEntriesRequest<C>: DeserializeOwned,
    StreamAppendResult<C>: Serialize,
    S: Stream<Item = Result<RaftMessage, Status>> + Send + 'static,
{
    let refused: Arc<Mutex<Option<Status>>> = Arc::default();
    let requests = {
        let refused = refused.clone();
        input.scan((), move |_, message| {
            let request = match message {
                Ok(message) if message.group_id != group => Err(format!(
                    "a message of group {} on a stream of group {group}",
                    message.group_id
                )),
                Ok(message) => decode::<AppendEntriesRequest<C>>(&message.data)
                    .map_err(|err| format!("bad raft message: {err}")),
                // The leader went away: the stream just ends.
                Err(_) => return std::future::ready(None),
            };
            std::future::ready(match request {
                Ok(request) => {
                    on_request();
                    Some(request)
                }
                Err(why) => {
                    *lock(&refused) = Some(Status::invalid_argument(why));
                    None
                }
            })
        })
    };
    // `Raft::stream_append` borrows the handle for as long as its stream lives, so a task
    // owns both and passes the replies on.
    let (tx, rx) = tokio::sync::mpsc::channel(PIPELINE_DEPTH);
    tokio::spawn(async move {
        let replies = raft.stream_append(requests);
        futures::pin_mut!(replies);
        while let Some(reply) = replies.next().await {
            let reply: RemoteReply<StreamAppendResult<C>> =
                reply.map_err(|fatal| fatal.to_string());
            let message = encode(&reply)
                .map(|data| RaftMessage {
                    group_id: group,
                    data: data.into(),
                })
                .map_err(|err| Status::internal(format!("cannot encode a reply: {err}")));
            if tx.send(message).await.is_err() {
                break;
            }
        }
    });
    let replies = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|reply| (reply, rx))
    });
    let refusal = futures::stream::once(async move { lock(&refused).take() })
        .filter_map(|refused| std::future::ready(refused.map(Err)));
    replies.chain(refusal)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
