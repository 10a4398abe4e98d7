//! Produce sessions (`ProduceStream`): a client's produce requests pipelined on one
//! HTTP/2 stream, each answered by a reply carrying its id.
//!
//! A unary produce costs each side an HTTP/2 stream: a HEADERS frame, the message, an
//! end-of-stream frame and, going back, headers, the message and trailers, each its own
//! socket write and, often, its own wake-up of the other side. In a session a request
//! and its reply are one DATA frame each. One task per session reads the requests, runs
//! at most [`SESSION_IN_FLIGHT`] of them at once (it stops reading until one completes,
//! so HTTP/2 flow control holds the client back) and sends each reply when its request
//! completes.

use std::pin::Pin;
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use strait_proto::v1::{ProduceStreamReply, ProduceStreamRequest};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::client_api::produce;
use super::status::to_detail;
use crate::error::BrokerError;
use crate::partition::PartitionRegistry;

/// Requests of one session the broker works on at once.
pub const SESSION_IN_FLIGHT: usize = 64;

/// The replies of a session, in the order their requests complete.
pub type Replies = Pin<Box<dyn Stream<Item = Result<ProduceStreamReply, Status>> + Send>>;

/// Starts serving a session's `requests`; the returned stream carries the replies.
pub fn serve(
    partitions: Arc<PartitionRegistry>,
    requests: Streaming<ProduceStreamRequest>,
) -> Replies {
    let (tx, rx) = mpsc::channel(SESSION_IN_FLIGHT);
    tokio::spawn(run(partitions, requests, tx));
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|reply| (reply, rx))
    }))
}

/// The session's task: ends when the client has closed its side and every request has
/// been answered, when the client goes away (the reply stream is dropped: the requests
/// still running are dropped with it, as a cancelled unary call's would be), or on a
/// malformed message.
async fn run(
    partitions: Arc<PartitionRegistry>,
    mut requests: Streaming<ProduceStreamRequest>,
    replies: mpsc::Sender<Result<ProduceStreamReply, Status>>,
) {
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
            next = requests.message(), if reading && running.len() < SESSION_IN_FLIGHT => {
                match next {
                    Ok(Some(request)) => running.push(answer(&partitions, request)),
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

/// Runs one request of the session and builds its reply.
async fn answer(
    partitions: &PartitionRegistry,
    request: ProduceStreamRequest,
) -> ProduceStreamReply {
    let id = request.id;
    let outcome = match request.request {
        Some(request) => produce(partitions, request).await,
        None => Err(BrokerError::InvalidRequest(
            "a produce session's request carries no ProduceRequest".into(),
        )),
    };
    match outcome {
        Ok(response) => ProduceStreamReply {
            id,
            response: Some(response),
            error: None,
        },
        Err(err) => ProduceStreamReply {
            id,
            response: None,
            error: Some(to_detail(err).1),
        },
    }
}
