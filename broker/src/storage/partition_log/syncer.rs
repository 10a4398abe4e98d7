//! Group commit for segment files: one thread fdatasyncs, once per round, every file
//! that appends are waiting on (first writing a direct log's pending appends), then
//! completes all those appends. Concurrent appends to a partition share one fsync;
//! partitions share the thread.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::mpsc;

use super::direct::DirectLog;

type Completion = Box<dyn FnOnce(io::Result<()>) + Send>;

/// What a sync makes durable: a segment file written through the page cache, or a
/// segment's direct log (its pending appends are written first).
#[derive(Debug, Clone)]
pub enum SyncTarget {
    File(Arc<File>),
    Direct(Arc<DirectLog>),
}

impl SyncTarget {
    pub fn sync(&self) -> io::Result<()> {
        match self {
            SyncTarget::File(file) => file.sync_data(),
            SyncTarget::Direct(log) => log.flush(),
        }
    }

    fn key(&self) -> usize {
        match self {
            SyncTarget::File(file) => Arc::as_ptr(file) as usize,
            SyncTarget::Direct(log) => Arc::as_ptr(log) as usize,
        }
    }
}

#[derive(Clone)]
pub struct SegmentSyncer {
    tx: mpsc::Sender<(SyncTarget, Completion)>,
}

impl SegmentSyncer {
    pub fn start() -> SegmentSyncer {
        let (tx, rx) = mpsc::channel::<(SyncTarget, Completion)>();
        std::thread::Builder::new()
            .name("strait-segment-sync".into())
            .spawn(move || run(rx))
            .expect("spawning the segment sync thread at start-up");
        SegmentSyncer { tx }
    }

    /// Calls `done` once everything appended to `file` before this call is durable.
    pub fn after_sync(&self, file: SyncTarget, done: impl FnOnce(io::Result<()>) + Send + 'static) {
        if let Err(mpsc::SendError((_, done))) = self.tx.send((file, Box::new(done))) {
            done(Err(io::Error::other("the segment syncer has stopped")));
        }
    }
}

fn run(rx: mpsc::Receiver<(SyncTarget, Completion)>) {
    while let Ok(first) = rx.recv() {
        let mut by_file: HashMap<usize, (SyncTarget, Vec<Completion>)> = HashMap::new();
        for (file, done) in std::iter::once(first).chain(rx.try_iter()) {
            by_file
                .entry(file.key())
                .or_insert_with(|| (file.clone(), Vec::new()))
                .1
                .push(done);
        }
        for (_, (file, waiters)) in by_file {
            let result = file.sync();
            if let Err(err) = &result {
                tracing::error!(%err, "fdatasync of a segment failed");
            }
            for done in waiters {
                done(match &result {
                    Ok(()) => Ok(()),
                    Err(err) => Err(io::Error::new(err.kind(), err.to_string())),
                });
            }
        }
    }
}
