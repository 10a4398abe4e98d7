//! A fault-injecting TCP proxy for one direction of one broker-to-broker link: the
//! connecting broker dials the proxy (its `--peer-route`), which dials the peer and
//! pumps bytes both ways. Its state decides what the network does: pass, drop every
//! connection and refuse new ones (a partition), delay every byte (a slow link), or cut
//! connections at random (a lossy link).

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the link does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Up,
    /// Existing connections are cut and new ones closed at once.
    Down,
    /// Every chunk is delivered this much later (bandwidth is unchanged).
    Slow {
        delay_ms: u64,
    },
    /// Each connection is cut after a random lifetime of up to this long.
    Flaky {
        max_life_ms: u64,
    },
}

/// One direction of one link.
pub struct LinkProxy {
    addr: String,
    state: watch::Sender<LinkState>,
    task: JoinHandle<()>,
}

/// Chunks in flight inside a slow link, per connection direction.
const SLOW_QUEUE: usize = 1024;
const CHUNK: usize = 64 * 1024;

impl LinkProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: String) -> anyhow::Result<LinkProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a link proxy")?;
        let addr = listener.local_addr()?.to_string();
        let (state, rx) = watch::channel(LinkState::Up);
        let task = tokio::spawn(accept_loop(listener, target, rx));
        Ok(LinkProxy { addr, state, task })
    }

    /// The address to dial instead of the target.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn set(&self, state: LinkState) {
        self.state.send_replace(state);
    }

    pub fn state(&self) -> LinkState {
        *self.state.borrow()
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.state.send_replace(LinkState::Down);
    }
}

async fn accept_loop(listener: TcpListener, target: String, state: watch::Receiver<LinkState>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        if *state.borrow() == LinkState::Down {
            drop(inbound);
            continue;
        }
        tokio::spawn(serve(inbound, target.clone(), state.clone()));
    }
}

/// Pumps one connection until either side closes or the link state ends it.
async fn serve(inbound: TcpStream, target: String, mut state: watch::Receiver<LinkState>) {
    let Ok(outbound) = TcpStream::connect(&target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let forward = pump(in_read, out_write, state.clone());
    let backward = pump(out_read, in_write, state.clone());
    // Ends when the link goes down, or, while it is flaky, after a random lifetime.
    let cut = async {
        loop {
            let current = *state.borrow_and_update();
            match current {
                LinkState::Down => return,
                LinkState::Flaky { max_life_ms } => {
                    let life = rand::thread_rng().gen_range(0..=max_life_ms);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(life)) => return,
                        changed = state.changed() => if changed.is_err() { return },
                    }
                }
                LinkState::Up | LinkState::Slow { .. } => {
                    if state.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    // Dropping the halves closes both sockets.
    tokio::select! {
        _ = forward => {}
        _ = backward => {}
        _ = cut => {}
    }
}

/// Copies `from` to `to`, each chunk delayed by the link's current delay.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: watch::Receiver<LinkState>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(SLOW_QUEUE);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let delay = match *state.borrow() {
                LinkState::Slow { delay_ms } => Duration::from_millis(delay_ms),
                _ => Duration::ZERO,
            };
            let due = Instant::now() + delay;
            if tx
                .send((due, Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
            {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    // The writer drains what the reader queued; each stops when the other side does.
    tokio::join!(reader, writer);
}
