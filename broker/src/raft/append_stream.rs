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
//! The wire: the request metadata `strait-raft-group` names the group; a request is an
//! `AppendEntriesRequest`, a reply a `Result<StreamAppendResult, String>` (the error: the
//! follower's group stopped), each a `RaftMessage` (`raft::wire`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::entry::RaftEntry;
use openraft::error::RPCError;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, StreamAppendResult};
use openraft::storage::RaftStateMachine;
use openraft::{OptionalSend, Raft, RaftTypeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use strait_proto::internal::RaftMessage;
use strait_proto::internal::raft_transport_client::RaftTransportClient;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use super::inbound::{RaftRpcKind, RemoteReply};
use super::network::{LinkError, call};
use super::wire::{from_message, to_message};
use crate::storage::GroupId;

/// Replies a follower buffers for a slow leader (openraft's own pipeline holds 64).
const PIPELINE_DEPTH: usize = 64;

/// The request metadata key naming the group a stream replicates.
pub const GROUP_HEADER: &str = "strait-raft-group";

/// The replies of a replication stream, in the order of its requests.
pub type Replies<'s, C> = BoxStream<'s, Result<StreamAppendResult<C>, RPCError<C>>>;

/// What a replication session to one peer needs: the unary client (the fallback), and
/// the peer's stream lane (a connection of its own, and the permits that cap the streams
/// open on it).
pub struct SessionLinks {
    pub unary: RaftTransportClient<Channel>,
    pub lane: RaftTransportClient<Channel>,
    pub permits: Arc<Semaphore>,
}

/// Runs one replication session of `group` to broker `target`: sends `input` and returns
/// the replies, in order.
///
/// A session starts with unary calls, one request at a time. Once it has sent
/// [`STREAM_AFTER`] of them within [`BUSY_WINDOW`], a group busy enough for
/// pipelining to pay, the gRPC stream opens if the peer's lane has a permit left (else
/// the calls go on, and the next request tries again). A stream closes once it has been
/// idle for [`IDLE_CLOSE`] with every request answered (openraft then starts a new
/// session), so that idle groups hold no HTTP/2 stream. A group that writes now and
/// then (one of many partitions) would otherwise open a stream for each write and close
/// it a second later, which costs more than the unary call.
/// Each request must be answered within `ttl` of being sent (checked at least every
/// `ttl`, so a late reply is noticed within `2 × ttl`); otherwise the session fails as
/// `Unreachable`, as a unary call would.
pub fn open<'s, C, S>(
    links: Result<SessionLinks, String>,
    group: GroupId,
    target: u64,
    input: S,
    ttl: Duration,
) -> BoxFuture<'s, Result<Replies<'s, C>, RPCError<C>>>
where
    C: RaftTypeConfig,
    AppendEntriesRequest<C>: Serialize,
    AppendEntriesResponse<C>: DeserializeOwned,
    StreamAppendResult<C>: DeserializeOwned,
    S: Stream<Item = AppendEntriesRequest<C>> + OptionalSend + Unpin + 'static,
{
    Box::pin(async move {
        let links = links.map_err(|why| LinkError::Unreachable(target, why))?;
        let session = Session {
            links: Arc::new(links),
            group,
            target,
            ttl,
        };
        let first = Phase::Waiting {
            input,
            unary: UnaryRate::default(),
        };
        let replies =
            futures::stream::unfold(Some(first), move |phase| session.clone().next_reply(phase));
        Ok(Box::pin(replies) as Replies<'s, C>)
    })
}

/// Idle time after which a replication stream with nothing unanswered closes.
pub const IDLE_CLOSE: Duration = Duration::from_secs(1);
/// Unary requests within [`BUSY_WINDOW`] after which a session opens its stream.
const STREAM_AFTER: u32 = 8;
const BUSY_WINDOW: Duration = Duration::from_secs(1);

/// How many unary requests a session sent in its current window of [`BUSY_WINDOW`].
#[derive(Default)]
struct UnaryRate {
    window: Option<(Instant, u32)>,
}

impl UnaryRate {
    /// Counts a request about to be sent; true once the session is busy enough for a
    /// stream.
    fn busy_after_one_more(&mut self) -> bool {
        let now = Instant::now();
        let (start, count) = match self.window {
            Some((start, count)) if now.duration_since(start) < BUSY_WINDOW => (start, count + 1),
            _ => (now, 1),
        };
        self.window = Some((start, count));
        count > STREAM_AFTER
    }
}

#[derive(Clone)]
struct Session {
    links: Arc<SessionLinks>,
    group: GroupId,
    target: u64,
    ttl: Duration,
}

/// Where a session is: waiting for a request with no stream open, or streaming.
enum Phase<S> {
    Waiting {
        input: S,
        unary: UnaryRate,
    },
    Streaming {
        replies: Box<Streaming<RaftMessage>>,
        sent: SendTimes,
        _permit: OwnedSemaphorePermit,
    },
}

/// When each unanswered request of a stream was sent, oldest first.
type SendTimes = Arc<Mutex<VecDeque<Instant>>>;

type Step<C, S> = Option<(Result<StreamAppendResult<C>, RPCError<C>>, Option<Phase<S>>)>;

impl Session {
    async fn next_reply<C, S>(self, phase: Option<Phase<S>>) -> Step<C, S>
    where
        C: RaftTypeConfig,
        AppendEntriesRequest<C>: Serialize,
        AppendEntriesResponse<C>: DeserializeOwned,
        StreamAppendResult<C>: DeserializeOwned,
        S: Stream<Item = AppendEntriesRequest<C>> + OptionalSend + Unpin + 'static,
    {
        match phase? {
            Phase::Waiting {
                mut input,
                mut unary,
            } => {
                let first = input.next().await?;
                let permit = match unary.busy_after_one_more() {
                    true => self.links.permits.clone().try_acquire_owned().ok(),
                    false => None,
                };
                match permit {
                    Some(permit) => match self.open_stream(first, input).await {
                        Ok((replies, sent)) => {
                            self.read_reply(Box::new(replies), sent, permit).await
                        }
                        Err(err) => Some((Err(err), None)),
                    },
                    None => {
                        let reply = self.unary(first).await;
                        let next = reply.is_ok().then_some(Phase::Waiting { input, unary });
                        Some((reply, next))
                    }
                }
            }
            Phase::Streaming {
                replies,
                sent,
                _permit,
            } => self.read_reply(replies, sent, _permit).await,
        }
    }

    /// Opens the gRPC stream, `first` then the rest of `input` in it.
    async fn open_stream<C, S>(
        &self,
        first: AppendEntriesRequest<C>,
        input: S,
    ) -> Result<(Streaming<RaftMessage>, SendTimes), RPCError<C>>
    where
        C: RaftTypeConfig,
        AppendEntriesRequest<C>: Serialize,
        S: Stream<Item = AppendEntriesRequest<C>> + OptionalSend + Unpin + 'static,
    {
        let (group, target) = (self.group, self.target);
        let sent = SendTimes::default();
        let body = {
            let requests = futures::stream::once(std::future::ready(first)).chain(input);
            futures::stream::unfold((requests, sent.clone()), move |(mut requests, sent)| {
                async move {
                    let request = loop {
                        match tokio::time::timeout(IDLE_CLOSE, requests.next()).await {
                            Ok(request) => break request?,
                            // Idle with nothing unanswered: close; the next session
                            // opens a new stream when there is something to send.
                            Err(_) if lock(&sent).is_empty() => return None,
                            Err(_) => continue,
                        }
                    };
                    // A request that cannot be encoded (never expected) ends the stream:
                    // later ones must not be answered in its place.
                    let message = to_message(group, &request)
                        .inspect_err(|err| {
                            tracing::error!(%err, group, target, "cannot encode an AppendEntries request")
                        })
                        .ok()?;
                    lock(&sent).push_back(Instant::now());
                    Some((message, (requests, sent)))
                }
            })
        };
        let mut request = tonic::Request::new(body);
        let group_value = group
            .to_string()
            .parse()
            .map_err(|_| LinkError::Unreachable(target, "bad group id".into()))?;
        request.metadata_mut().insert(GROUP_HEADER, group_value);
        let mut lane = self.links.lane.clone();
        match tokio::time::timeout(self.ttl, lane.append_stream(request)).await {
            Ok(Ok(response)) => Ok((response.into_inner(), sent)),
            Ok(Err(status)) => {
                Err(LinkError::Unreachable(target, status.message().to_string()).into())
            }
            Err(_) => Err(LinkError::Unreachable(
                target,
                "timed out opening the append stream".into(),
            )
            .into()),
        }
    }

    /// Waits for the reply to the oldest unanswered request of the stream.
    async fn read_reply<C, S>(
        self,
        mut replies: Box<Streaming<RaftMessage>>,
        sent: SendTimes,
        permit: OwnedSemaphorePermit,
    ) -> Step<C, S>
    where
        C: RaftTypeConfig,
        StreamAppendResult<C>: DeserializeOwned,
    {
        let target = self.target;
        let next = loop {
            let oldest = lock(&sent).front().copied();
            let deadline = oldest.map_or_else(|| Instant::now() + self.ttl, |at| at + self.ttl);
            // `Streaming::message` is cancel-safe: a timed-out wait loses nothing.
            match tokio::time::timeout_at(deadline, replies.message()).await {
                Ok(next) => break next,
                Err(_) if oldest.is_some() => {
                    let late =
                        LinkError::Unreachable(target, format!("no reply within {:?}", self.ttl));
                    return Some((Err(late.into()), None));
                }
                Err(_) => continue,
            }
        };
        let message = match next {
            Ok(Some(message)) => message,
            // Closed (idle, or the follower is stopping): the session ends here.
            Ok(None) => return None,
            Err(status) => {
                let lost = LinkError::Unreachable(target, status.message().to_string());
                return Some((Err(lost.into()), None));
            }
        };
        lock(&sent).pop_front();
        match from_message::<RemoteReply<StreamAppendResult<C>>>(message) {
            Ok(Ok(result)) => Some((
                Ok(result),
                Some(Phase::Streaming {
                    replies,
                    sent,
                    _permit: permit,
                }),
            )),
            Ok(Err(stopped)) => Some((Err(LinkError::Remote(target, stopped).into()), None)),
            Err(err) => Some((Err(LinkError::Codec(err).into()), None)),
        }
    }

    /// Sends one request as a unary call (not busy enough for a stream, or no permit).
    async fn unary<C>(
        &self,
        request: AppendEntriesRequest<C>,
    ) -> Result<StreamAppendResult<C>, RPCError<C>>
    where
        C: RaftTypeConfig,
        AppendEntriesRequest<C>: Serialize,
        AppendEntriesResponse<C>: DeserializeOwned,
    {
        let prev = request.prev_log_id.clone();
        let last = request
            .entries
            .last()
            .map(|entry| entry.log_id())
            .or_else(|| prev.clone());
        let response: AppendEntriesResponse<C> = call(
            self.links.unary.clone(),
            self.group,
            self.target,
            RaftRpcKind::Append,
            &request,
            self.ttl,
        )
        .await?;
        Ok(response.into_stream_result(prev, last))
    }
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
                Ok(message) => from_message::<AppendEntriesRequest<C>>(message)
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
            let message = to_message(group, &reply)
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
