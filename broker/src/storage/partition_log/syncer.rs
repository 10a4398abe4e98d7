//! Group commit for segment files: one thread fdatasyncs, once per round, every file
//! that appends are waiting on, then completes all those appends. Concurrent appends to
//! a partition share one fsync; partitions share the thread.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::mpsc;

type Completion = Box<dyn FnOnce(io::Result<()>) + Send>;

#[derive(Clone)]
pub struct SegmentSyncer {
    tx: mpsc::Sender<(Arc<File>, Completion)>,
}

impl SegmentSyncer {
    pub fn start() -> SegmentSyncer {
        let (tx, rx) = mpsc::channel::<(Arc<File>, Completion)>();
        std::thread::Builder::new()
            .name("strait-segment-sync".into())
            .spawn(move || run(rx))
            .expect("spawning the segment sync thread at start-up");
        SegmentSyncer { tx }
    }

    /// Calls `done` once everything written to `file` before this call is durable.
    pub fn after_sync(&self, file: Arc<File>, done: impl FnOnce(io::Result<()>) + Send + 'static) {
        if let Err(mpsc::SendError((_, done))) = self.tx.send((file, Box::new(done))) {
            done(Err(io::Error::other("the segment syncer has stopped")));
        }
    }
}

fn run(rx: mpsc::Receiver<(Arc<File>, Completion)>) {
    while let Ok(first) = rx.recv() {
        let mut by_file: HashMap<*const File, (Arc<File>, Vec<Completion>)> = HashMap::new();
        for (file, done) in std::iter::once(first).chain(rx.try_iter()) {
            by_file
                .entry(Arc::as_ptr(&file))
                .or_insert_with(|| (file.clone(), Vec::new()))
                .1
                .push(done);
        }
        for (_, (file, waiters)) in by_file {
            let result = file.sync_data();
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
