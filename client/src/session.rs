//! Produce sessions: the producer's requests to one broker pipelined on one
//! `ProduceStream` (one HTTP/2 stream), instead of an HTTP/2 stream per request.
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

use strait_proto::v1::{ProduceRequest, ProduceResponse, ProduceStreamReply, ProduceStreamRequest};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::client::Client;
use crate::error::ClientError;

/// Requests queued for a session's stream before senders wait.
const SESSION_QUEUE: usize = 64;

type Answer = Result<ProduceResponse, ClientError>;

/// One broker's produce session.
pub(crate) struct ProduceSession {
    addr: String,
    requests: mpsc::Sender<ProduceStreamRequest>,
    next_id: AtomicU64,
    state: Mutex<State>,
    /// Tells the stream's task to stop (the session was closed from this side).
    stop: Notify,
}

#[derive(Default)]
struct State {
    /// The requests sent and not answered yet, by id.
    waiting: HashMap<u64, oneshot::Sender<Answer>>,
    /// Why the session ended; set once, and then no request may join.
    closed: Option<ClientError>,
}

impl ProduceSession {
    /// Opens a session to `addr` (the stream starts in the background).
    pub(crate) fn open(client: &Client, addr: &str) -> Result<Arc<ProduceSession>, ClientError> {
        let mut rpc = client.data_client(addr)?;
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let session = Arc::new(ProduceSession {
            addr: addr.to_string(),
            requests: tx,
            next_id: AtomicU64::new(0),
            state: Mutex::default(),
            stop: Notify::new(),
        });
        let this = session.clone();
        tokio::spawn(async move {
            let outbound = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|request| (request, rx))
            });
            let ended = match rpc.produce_stream(outbound).await {
                Ok(replies) => {
                    let mut replies = replies.into_inner();
                    loop {
                        let next = tokio::select! {
                            next = replies.message() => next,
                            // Dropping the stream resets it; the broker drops its side.
                            () = this.stop.notified() => return,
                        };
                        match next {
                            Ok(Some(reply)) => this.deliver(reply),
                            Ok(None) => break this.transport_error("the session ended"),
                            Err(status) => break ClientError::from_status(&this.addr, &status),
                        }
                    }
                }
                Err(status) => ClientError::from_status(&this.addr, &status),
            };
            this.close(ended);
        });
        Ok(session)
    }

    /// Whether the session has ended (a new one must be opened).
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    /// Sends `request` and waits up to `timeout` for its reply.
    pub(crate) async fn produce(&self, request: ProduceRequest, timeout: Duration) -> Answer {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, answer) = oneshot::channel();
        {
            let mut state = self.lock();
            if let Some(err) = &state.closed {
                return Err(err.clone());
            }
            state.waiting.insert(id, done);
        }
        let request = ProduceStreamRequest {
            id,
            request: Some(request),
        };
        if self.requests.send(request).await.is_err() {
            self.lock().waiting.remove(&id);
            return Err(self.transport_error("the session ended"));
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(self.transport_error("the session ended")),
            Err(_) => {
                self.lock().waiting.remove(&id);
                self.close(self.transport_error("a request of the session timed out"));
                Err(ClientError::Timeout(format!(
                    "no reply from {} within {timeout:?}",
                    self.addr
                )))
            }
        }
    }

    /// Hands a reply to its waiting request (an unknown id is one that timed out).
    fn deliver(&self, reply: ProduceStreamReply) {
        let Some(done) = self.lock().waiting.remove(&reply.id) else {
            return;
        };
        let answer = match (reply.response, reply.error) {
            (_, Some(detail)) => Err(ClientError::from_detail(detail)),
            (Some(response), None) => Ok(response),
            (None, None) => Err(ClientError::Internal(format!(
                "{} answered a produce with neither a response nor an error",
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

    fn transport_error(&self, message: &str) -> ClientError {
        ClientError::Transport {
            addr: self.addr.clone(),
            message: message.to_string(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
