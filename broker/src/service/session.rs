//! Produce and fetch sessions (`ProduceStream`, `FetchStream`): a client's requests
//! pipelined on one HTTP/2 stream, each answered by a reply carrying its id.
//!
//! A unary call costs each side an HTTP/2 stream: a HEADERS frame, the message, an
//! end-of-stream frame and, going back, headers, the message and trailers, each its own
//! socket write and, often, its own wake-up of the other side. In a session a request
//! and its reply are one DATA frame each. One task per session reads the requests, runs
//! at most a set number of them at once (it stops reading until one completes, so
//! HTTP/2 flow control holds the client back) and sends each reply when its request
//! completes. A fetch's reply (possibly MiBs) is built only when the task can queue it,
//! and a fetch session queues one: a client that stops reading holds up its session,
//! not the broker's memory. The record batches that produce sessions hold while their
//! requests run come out of one broker-wide budget ([`ProduceBudget`]): when it is
//! spent, sessions read no further. A produce session has room to queue every (small)
//! reply it owes, so its requests finish and give their share back even when its client
//! stops reading.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::future::OptionFuture;
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use strait_proto::v1::{
    ErrorDetail, FetchResponse, FetchStreamReply, FetchStreamRequest, ProduceStreamReply,
    ProduceStreamRequest,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
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
/// Fetch replies built and not yet taken by the HTTP/2 stream (one may be MiBs).
const FETCH_REPLIES_QUEUED: usize = 1;
/// Bytes of record batches that all produce sessions of a broker hold at once.
pub const PRODUCE_SESSIONS_BYTES: usize = 256 * 1024 * 1024;
/// What a produce request counts against the budget beyond its batch.
const REQUEST_OVERHEAD_BYTES: usize = 1024;

/// The broker-wide budget of produce sessions' request bytes.
#[derive(Clone)]
pub struct ProduceBudget(Arc<Semaphore>);

impl Default for ProduceBudget {
    fn default() -> Self {
        ProduceBudget(Arc::new(Semaphore::new(PRODUCE_SESSIONS_BYTES)))
    }
}

impl ProduceBudget {
    /// Waits for room for `request` and holds it until the permit is dropped. A request
    /// larger than the whole budget waits for all of it.
    async fn admit(
        self,
        request: ProduceStreamRequest,
    ) -> (ProduceStreamRequest, Option<OwnedSemaphorePermit>) {
        let bytes =
            request.request.as_ref().map_or(0, |r| r.records.len()) + REQUEST_OVERHEAD_BYTES;
        let permits = bytes.min(PRODUCE_SESSIONS_BYTES) as u32;
        // The semaphore is never closed: an error cannot happen, and would only mean
        // running without the budget.
        let permit = self.0.acquire_many_owned(permits).await.ok();
        (request, permit)
    }
}

/// A session's replies, in the order their requests complete.
pub type Replies<R> = Pin<Box<dyn Stream<Item = Result<R, Status>> + Send>>;

/// Serves a produce session.
pub fn produce_session(
    partitions: Arc<PartitionRegistry>,
    budget: ProduceBudget,
    requests: impl Stream<Item = Result<ProduceStreamRequest, Status>> + Send + Unpin + 'static,
) -> Replies<ProduceStreamReply> {
    let admit = move |request| budget.clone().admit(request);
    // Room for every request's (small) reply: the task never waits to queue one, so a
    // client that stops reading cannot keep finished requests holding the budget.
    let limits = (PRODUCE_IN_FLIGHT, PRODUCE_IN_FLIGHT);
    serve(requests, limits, admit, move |request| {
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
    let admit = |request| std::future::ready((request, None));
    serve(
        requests,
        (FETCH_IN_FLIGHT, FETCH_REPLIES_QUEUED),
        admit,
        move |request| {
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
        },
    )
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

/// Starts the session's task; the returned stream carries the replies. At most
/// `in_flight` requests are running or answered and waiting in the reply queue of
/// `queued`. `admit` waits until a request may run and hands it over with what it
/// holds while it runs.
fn serve<Q, R, A, AFut, F, Fut>(
    requests: impl Stream<Item = Result<Q, Status>> + Send + Unpin + 'static,
    (in_flight, queued): (usize, usize),
    admit: A,
    answer: F,
) -> Replies<R>
where
    Q: Send + 'static,
    R: Send + 'static,
    A: Fn(Q) -> AFut + Send + 'static,
    AFut: Future<Output = (Q, Option<OwnedSemaphorePermit>)> + Send + 'static,
    F: Fn(Q) -> Fut + Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(queued.max(1));
    tokio::spawn(run(requests, in_flight, admit, answer, tx));
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|reply| (reply, rx))
    }))
}

/// The session's task: ends when the client has closed its side and every request has
/// been answered, when the client goes away (the reply stream is dropped: the requests
/// still running are dropped with it, as a cancelled unary call's would be), or on a
/// malformed message. One request at a time waits to be admitted; meanwhile the
/// running ones go on (they are what frees the budget).
async fn run<Q, R, A, AFut, F, Fut>(
    mut requests: impl Stream<Item = Result<Q, Status>> + Unpin,
    in_flight: usize,
    admit: A,
    answer: F,
    replies: mpsc::Sender<Result<R, Status>>,
) where
    A: Fn(Q) -> AFut,
    AFut: Future<Output = (Q, Option<OwnedSemaphorePermit>)>,
    F: Fn(Q) -> Fut,
    Fut: Future<Output = R>,
{
    let mut running = FuturesUnordered::new();
    let mut admitting = std::pin::pin!(OptionFuture::from(None::<AFut>));
    let mut waiting = false;
    let mut reading = true;
    loop {
        let queued = replies.max_capacity() - replies.capacity();
        let room = running.len() + queued < in_flight;
        tokio::select! {
            biased;
            Some(reply) = running.next(), if !running.is_empty() => {
                if replies.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
            admitted = &mut admitting, if waiting => {
                waiting = false;
                if let Some((request, held)) = admitted {
                    running.push(hold(answer(request), held));
                }
            }
            // No room only because replies wait for the client: wait for it to take one.
            slot = replies.reserve(), if reading && !waiting && !room && running.is_empty() => {
                if slot.is_err() {
                    return;
                }
            }
            next = requests.next(), if reading && !waiting && room => {
                match next {
                    Some(Ok(request)) => {
                        admitting.set(Some(admit(request)).into());
                        waiting = true;
                    }
                    None => reading = false,
                    Some(Err(status)) => {
                        let _ = replies.send(Err(status)).await;
                        return;
                    }
                }
            }
            // Not reading, nothing running or waiting: every request was answered.
            else => return,
        }
    }
}

/// Runs `work`, holding `held` (its share of a budget) until it completes.
async fn hold<R>(work: impl Future<Output = R>, held: Option<OwnedSemaphorePermit>) -> R {
    let reply = work.await;
    drop(held);
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(permits: usize) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(permits))
    }

    /// A session over `requests` (each asks for that many permits of `budget`) whose
    /// requests finish at once with their own number.
    fn session(
        requests: Vec<usize>,
        budget: Arc<Semaphore>,
        limits: (usize, usize),
    ) -> (
        mpsc::Receiver<Result<usize, Status>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = mpsc::channel(limits.1);
        let admit = move |n: usize| {
            let budget = budget.clone();
            async move { (n, budget.acquire_many_owned(n as u32).await.ok()) }
        };
        let requests = futures::stream::iter(requests.into_iter().map(Ok));
        let task = tokio::spawn(run(requests, limits.0, admit, std::future::ready, tx));
        (rx, task)
    }

    #[tokio::test]
    async fn every_request_is_answered_once_then_the_session_ends() {
        let (mut rx, task) = session((1..=200).collect(), budget(1000), (64, 64));
        let mut answered = Vec::new();
        while let Some(reply) = rx.recv().await {
            answered.push(reply.expect("a reply"));
        }
        answered.sort_unstable();
        assert_eq!(answered, (1..=200).collect::<Vec<_>>());
        task.await.expect("the session ends");
    }

    /// Lets the (single-threaded) runtime run the session until it can go no further:
    /// every future in these tests is ready at once or waits for the test.
    async fn settle() {
        for _ in 0..1000 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_replies_holds_none_of_the_budget() {
        let shared = budget(100);
        // Nobody reads the replies; 200 requests of 10 permits each against 100.
        let (rx, _task) = session(vec![10; 200], shared.clone(), (64, 64));
        settle().await;
        // The session stopped at 64 answered requests, waiting for its client, with
        // every permit back in the budget for other sessions.
        assert_eq!(rx.len(), 64, "no request runs beyond the session's limit");
        assert_eq!(shared.available_permits(), 100);
    }

    #[tokio::test]
    async fn a_slow_reader_of_large_replies_keeps_at_most_the_queue_built() {
        // Fetch-like: many may run, one reply may wait. Requests that finished but
        // could not be queued are not polled, so their replies are not built.
        let (mut rx, task) = session((1..=50).collect(), budget(10_000), (4096, 1));
        settle().await;
        assert_eq!(rx.len(), 1);
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, 50);
        task.await.expect("the session ends");
    }
}
