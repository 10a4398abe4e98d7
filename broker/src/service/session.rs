//! Produce and fetch sessions (`ProduceStream`, `FetchStream`): a client's requests
//! pipelined on one HTTP/2 stream, each answered by a reply carrying its id.
//!
//! A unary call costs each side an HTTP/2 stream: a HEADERS frame, the message, an
//! end-of-stream frame and, going back, headers, the message and trailers, each its own
//! socket write and, often, its own wake-up of the other side. In a session a request
//! and its reply are one DATA frame each. One task per session reads the requests, runs
//! at most a set number of them at once (it stops reading until one completes, so
//! HTTP/2 flow control holds the client back) and sends each reply when its request
//! completes. A completed request's reply is built only when the task can send it, so
//! a client that stops reading holds up the task, not the broker's memory.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use strait_proto::v1::{
    ErrorDetail, FetchResponse, FetchStreamReply, FetchStreamRequest, ProduceStreamReply,
    ProduceStreamRequest,
};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::client_api::{fetch, produce};
use super::status::to_detail;
use crate::error::BrokerError;
use crate::partition::PartitionRegistry;

/// Produce requests of one session the broker works on at once.
pub const PRODUCE_IN_FLIGHT: usize = 64;
/// Fetches of one session the broker works on at once: most wait (long polls), one per
/// partition the client reads from this broker.
pub const FETCH_IN_FLIGHT: usize = 4096;
/// Replies built and not yet taken by the HTTP/2 stream.
const REPLIES_QUEUED: usize = 16;

/// A session's replies, in the order their requests complete.
pub type Replies<R> = Pin<Box<dyn Stream<Item = Result<R, Status>> + Send>>;

/// Serves a produce session.
pub fn produce_session(
    partitions: Arc<PartitionRegistry>,
    requests: Streaming<ProduceStreamRequest>,
) -> Replies<ProduceStreamReply> {
    serve(requests, PRODUCE_IN_FLIGHT, move |request| {
        let partitions = partitions.clone();
        async move {
            let id = request.id;
            let (response, error) = split(match request.request {
                Some(request) => produce(&partitions, request).await,
                None => Err(missing("ProduceRequest")),
            });
            ProduceStreamReply {
                id,
                response,
                error,
            }
        }
    })
}

/// Serves a fetch session.
pub fn fetch_session(
    partitions: Arc<PartitionRegistry>,
    requests: Streaming<FetchStreamRequest>,
) -> Replies<FetchStreamReply> {
    serve(requests, FETCH_IN_FLIGHT, move |request| {
        let partitions = partitions.clone();
        async move {
            let id = request.id;
            let (response, error): (Option<FetchResponse>, _) = split(match request.request {
                Some(request) => fetch(&partitions, request).await,
                None => Err(missing("FetchRequest")),
            });
            FetchStreamReply {
                id,
                response,
                error,
            }
        }
    })
}

fn missing(what: &str) -> BrokerError {
    BrokerError::InvalidRequest(format!("a session's request carries no {what}"))
}

/// A request's outcome as a reply's `response` and `error` fields.
fn split<T>(outcome: Result<T, BrokerError>) -> (Option<T>, Option<ErrorDetail>) {
    match outcome {
        Ok(response) => (Some(response), None),
        Err(err) => (None, Some(to_detail(err).1)),
    }
}

/// Starts the session's task; the returned stream carries the replies.
fn serve<Q, R, F, Fut>(requests: Streaming<Q>, in_flight: usize, answer: F) -> Replies<R>
where
    Q: Send + 'static,
    R: Send + 'static,
    F: Fn(Q) -> Fut + Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(REPLIES_QUEUED);
    tokio::spawn(run(requests, in_flight, answer, tx));
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|reply| (reply, rx))
    }))
}

/// The session's task: ends when the client has closed its side and every request has
/// been answered, when the client goes away (the reply stream is dropped: the requests
/// still running are dropped with it, as a cancelled unary call's would be), or on a
/// malformed message.
async fn run<Q, R, F, Fut>(
    mut requests: Streaming<Q>,
    in_flight: usize,
    answer: F,
    replies: mpsc::Sender<Result<R, Status>>,
) where
    F: Fn(Q) -> Fut,
    Fut: Future<Output = R>,
{
    let mut running = FuturesUnordered::new();
    let mut reading = true;
    loop {
        tokio::select! {
            biased;
            Some(reply) = running.next(), if !running.is_empty() => {
                if replies.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
            next = requests.message(), if reading && running.len() < in_flight => {
                match next {
                    Ok(Some(request)) => running.push(answer(request)),
                    Ok(None) => reading = false,
                    Err(status) => {
                        let _ = replies.send(Err(status)).await;
                        return;
                    }
                }
            }
            else => return,
        }
    }
}
