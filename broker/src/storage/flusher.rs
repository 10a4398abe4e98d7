//! Group commit: one thread makes RocksDB's write-ahead log durable for every waiter
//! queued since its last sync.
//!
//! Writers first write (unsynced, so the data is readable at once), then queue a
//! completion. The thread takes everything queued, calls `flush_wal(true)` (fsync of the
//! WAL, which covers every earlier write of every group), and completes them all: N
//! concurrent appends across all partitions of the broker cost one fsync.

use std::sync::mpsc;
use std::sync::{Arc, Weak};

use rocksdb::DB;

type Completion = Box<dyn FnOnce(std::io::Result<()>) + Send>;

/// Handle to the flusher thread; cheap to clone.
#[derive(Clone)]
pub struct Flusher {
    tx: mpsc::Sender<Completion>,
}

impl Flusher {
    /// Starts the thread. It holds only a weak reference so that the database closes
    /// as soon as the last `Store` is dropped (RocksDB must not be open at process exit).
    pub(crate) fn start(db: &Arc<DB>) -> Flusher {
        let db = Arc::downgrade(db);
        let (tx, rx) = mpsc::channel::<Completion>();
        std::thread::Builder::new()
            .name("strait-flusher".into())
            .spawn(move || run(db, rx))
            .expect("spawning the flusher thread at start-up");
        Flusher { tx }
    }

    /// Calls `done` once every write issued before this call is on stable storage.
    pub fn after_sync(&self, done: impl FnOnce(std::io::Result<()>) + Send + 'static) {
        if let Err(mpsc::SendError(done)) = self.tx.send(Box::new(done)) {
            done(Err(std::io::Error::other("the flusher has stopped")));
        }
    }

    /// Waits until every write issued before this call is on stable storage.
    pub async fn sync(&self) -> std::io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.after_sync(move |res| {
            let _ = tx.send(res);
        });
        rx.await
            .unwrap_or_else(|_| Err(std::io::Error::other("the flusher has stopped")))
    }
}

fn run(db: Weak<DB>, rx: mpsc::Receiver<Completion>) {
    while let Ok(first) = rx.recv() {
        let mut waiters = vec![first];
        waiters.extend(rx.try_iter());
        let Some(db) = db.upgrade() else {
            for done in waiters {
                done(Err(std::io::Error::other("the store is closed")));
            }
            return;
        };
        let result = db.flush_wal(true);
        drop(db);
        if let Err(err) = &result {
            tracing::error!(%err, "fsync of the write-ahead log failed");
        }
        for done in waiters {
            done(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| std::io::Error::other(e.to_string())),
            );
        }
    }
}
