//! Produce and fetch sessions: the client's produce requests (fetches) to one broker
//! pipelined on one `ProduceStream` (`FetchStream`), one HTTP/2 stream, instead of an
//! HTTP/2 stream per request.
//!
//! Each request gets a number; the broker answers it with a reply carrying that number
//! as soon as it completes. A session that fails (the broker went away, the stream was
//! reset) fails the requests waiting on it with a retriable transport error and is
//! replaced by a fresh one on the next request; so is one whose request timed out,
//! since its stream may be stuck.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use strait_proto::v1::strait_client::StraitClient;
use strait_proto::v1::{
    ErrorDetail, FetchRequest, FetchResponse, FetchStreamReply, FetchStreamRequest, ProduceRequest,
    ProduceResponse, ProduceStreamReply, ProduceStreamRequest,
};
use tokio::sync::{Notify, mpsc, oneshot};
use tonic::Streaming;
use tonic::transport::Channel;

use crate::client::Client;
use crate::error::ClientError;

/// Requests queued for a session's stream before senders wait.
const SESSION_QUEUE: usize = 64;

/// One kind of session: its call and how its messages carry the ids.
pub(crate) trait Kind: Send + Sync + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    /// The request as the stream carries it, with its id.
    type Numbered: Send + 'static;
    /// The reply as the stream carries it.
    type Reply: Send + 'static;
    fn number(id: u64, request: Self::Request) -> Self::Numbered;
    /// The reply's id, and its response or error.
    fn open_reply(reply: Self::Reply) -> (u64, Option<Self::Response>, Option<ErrorDetail>);
    /// Starts the call with `requests` as the stream of requests.
    fn call(
        rpc: StraitClient<Channel>,
        requests: Outbound<Self::Numbered>,
    ) -> BoxFuture<'static, Result<Streaming<Self::Reply>, tonic::Status>>;
}

/// `Strait.ProduceStream`.
pub(crate) struct Produce;

impl Kind for Produce {
    type Request = ProduceRequest;
    type Response = ProduceResponse;
    type Numbered = ProduceStreamRequest;
    type Reply = ProduceStreamReply;
    fn number(id: u64, request: ProduceRequest) -> ProduceStreamRequest {
        ProduceStreamRequest {
            id,
            request: Some(request),
        }
    }
    fn open_reply(r: ProduceStreamReply) -> (u64, Option<ProduceResponse>, Option<ErrorDetail>) {
        (r.id, r.response, r.error)
    }
    fn call(
        mut rpc: StraitClient<Channel>,
        requests: Outbound<ProduceStreamRequest>,
    ) -> BoxFuture<'static, Result<Streaming<ProduceStreamReply>, tonic::Status>> {
        Box::pin(async move { rpc.produce_stream(requests).await.map(|r| r.into_inner()) })
    }
}

/// `Strait.FetchStream`.
pub(crate) struct Fetch;

impl Kind for Fetch {
    type Request = FetchRequest;
    type Response = FetchResponse;
    type Numbered = FetchStreamRequest;
    type Reply = FetchStreamReply;
    fn number(id: u64, request: FetchRequest) -> FetchStreamRequest {
        FetchStreamRequest {
            id,
            request: Some(request),
        }
    }
    fn open_reply(r: FetchStreamReply) -> (u64, Option<FetchResponse>, Option<ErrorDetail>) {
        (r.id, r.response, r.error)
    }
    fn call(
        mut rpc: StraitClient<Channel>,
        requests: Outbound<FetchStreamRequest>,
    ) -> BoxFuture<'static, Result<Streaming<FetchStreamReply>, tonic::Status>> {
        Box::pin(async move { rpc.fetch_stream(requests).await.map(|r| r.into_inner()) })
    }
}

/// One broker's session of kind `K`.
pub(crate) struct Session<K: Kind> {
    addr: String,
    requests: mpsc::Sender<K::Numbered>,
    next_id: AtomicU64,
    state: Mutex<State<K::Response>>,
    /// Tells the stream's task to stop (the session was closed from this side).
    stop: Arc<Notify>,
}

struct State<R> {
    /// The requests sent and not answered yet, by id.
    waiting: HashMap<u64, oneshot::Sender<Result<R, ClientError>>>,
    /// Why the session ended; set once, and then no request may join.
    closed: Option<ClientError>,
}

impl<R> Default for State<R> {
    fn default() -> Self {
        State {
            waiting: HashMap::new(),
            closed: None,
        }
    }
}

impl<K: Kind> Session<K> {
    /// Opens a session to `addr` (the stream starts in the background).
    pub(crate) fn open(client: &Client, addr: &str) -> Result<Arc<Session<K>>, ClientError> {
        let rpc = client.data_client(addr)?;
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let session = Arc::new(Session {
            addr: addr.to_string(),
            requests: tx,
            next_id: AtomicU64::new(0),
            state: Mutex::default(),
            stop: Arc::new(Notify::new()),
        });
        // The task holds the session weakly: once the client drops it, its request
        // sender goes, the stream's request side ends, the broker answers what is left
        // and ends the replies, and the task ends too.
        let (this, stop, addr) = (
            Arc::downgrade(&session),
            session.stop.clone(),
            addr.to_string(),
        );
        tokio::spawn(async move {
            let ended = match K::call(rpc, Outbound(rx)).await {
                Ok(mut replies) => loop {
                    let next = tokio::select! {
                        next = replies.message() => next,
                        // Dropping the stream resets it; the broker drops its side.
                        () = stop.notified() => return,
                    };
                    match next {
                        Ok(Some(reply)) => match this.upgrade() {
                            Some(session) => session.deliver(reply),
                            None => continue,
                        },
                        Ok(None) => break transport_error(&addr, "the session ended"),
                        Err(status) => break ClientError::from_status(&addr, &status),
                    }
                },
                Err(status) => ClientError::from_status(&addr, &status),
            };
            if let Some(session) = this.upgrade() {
                session.close(ended);
            }
        });
        Ok(session)
    }

    /// Whether the session has ended (a new one must be opened).
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    /// Sends `request` and waits up to `timeout` for its reply.
    pub(crate) async fn call(
        &self,
        request: K::Request,
        timeout: Duration,
    ) -> Result<K::Response, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, answer) = oneshot::channel();
        {
            let mut state = self.lock();
            if let Some(err) = &state.closed {
                return Err(err.clone());
            }
            state.waiting.insert(id, done);
        }
        if self.requests.send(K::number(id, request)).await.is_err() {
            self.lock().waiting.remove(&id);
            return Err(transport_error(&self.addr, "the session ended"));
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(transport_error(&self.addr, "the session ended")),
            Err(_) => {
                self.lock().waiting.remove(&id);
                self.close(transport_error(
                    &self.addr,
                    "a request of the session timed out",
                ));
                Err(ClientError::Timeout(format!(
                    "no reply from {} within {timeout:?}",
                    self.addr
                )))
            }
        }
    }

    /// Hands a reply to its waiting request (an unknown id is one that timed out).
    fn deliver(&self, reply: K::Reply) {
        let (id, response, error) = K::open_reply(reply);
        let Some(done) = self.lock().waiting.remove(&id) else {
            return;
        };
        let answer = match (response, error) {
            (_, Some(detail)) => Err(ClientError::from_detail(detail)),
            (Some(response), None) => Ok(response),
            (None, None) => Err(ClientError::Internal(format!(
                "{} answered a session's request with neither a response nor an error",
                self.addr
            ))),
        };
        // The caller may have stopped waiting.
        let _ = done.send(answer);
    }

    /// Ends the session: every waiting request fails with `err`, later ones at once.
    fn close(&self, err: ClientError) {
        let waiting = {
            let mut state = self.lock();
            state.closed.get_or_insert(err.clone());
            std::mem::take(&mut state.waiting)
        };
        for (_, done) in waiting {
            let _ = done.send(Err(err.clone()));
        }
        self.stop.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K::Response>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn transport_error(addr: &str, message: &str) -> ClientError {
    ClientError::Transport {
        addr: addr.to_string(),
        message: message.to_string(),
    }
}

/// A session's requests on their way to the stream.
pub(crate) struct Outbound<T>(mpsc::Receiver<T>);

impl<T> futures::Stream for Outbound<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// The open session of kind `K` to each broker, by address.
pub(crate) struct Sessions<K: Kind>(Mutex<HashMap<String, Arc<Session<K>>>>);

impl<K: Kind> Default for Sessions<K> {
    fn default() -> Self {
        Sessions(Mutex::new(HashMap::new()))
    }
}

impl<K: Kind> Sessions<K> {
    /// The session to `addr`, opened (again) when there is none or it ended.
    pub(crate) fn get(&self, client: &Client, addr: &str) -> Result<Arc<Session<K>>, ClientError> {
        let mut sessions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(session) = sessions.get(addr).filter(|s| !s.is_closed()) {
            return Ok(session.clone());
        }
        let session = Session::open(client, addr)?;
        sessions.insert(addr.to_string(), session.clone());
        Ok(session)
    }
}
