//! Group commit for segment files: once per round, every file that appends are waiting
//! on is fdatasynced (a direct log's pending appends written), then all those appends
//! are completed. Concurrent appends to a partition share one fsync; partitions share
//! the round, whose files are synced at the same time by the sync thread and
//! [`HELPERS`] helper threads (a round costs the slowest file's device round trip, not
//! the sum of them all). Appends are completed in the order their file's first append
//! was queued, so a partition that rolled to a new segment within a round has its
//! older segment's appends reported first (Raft requires one log's flushes to be
//! reported in order).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::io;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::direct::DirectLog;
use super::seal::Seal;

type Completion = Box<dyn FnOnce(io::Result<()>) + Send>;

/// Threads that sync a round's files beside the sync thread.
const HELPERS: usize = 3;

/// A file of the round to sync, its place in the round, and where its result goes.
type Job = (SyncTarget, usize, mpsc::Sender<(usize, io::Result<()>)>);

/// What a sync makes durable: a segment file written through the page cache, or a
/// segment's direct log (its pending appends are written first), or the active segment
/// of a log whose previous segment is still to be sealed (the seal runs first; see
/// [`super::seal`]).
#[derive(Clone)]
pub enum SyncTarget {
    File(Arc<File>),
    Direct(Arc<DirectLog>),
    AfterSeal(Arc<Seal>, Box<SyncTarget>),
}

impl std::fmt::Debug for SyncTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncTarget::File(file) => f.debug_tuple("File").field(file).finish(),
            SyncTarget::Direct(log) => f.debug_tuple("Direct").field(log).finish(),
            SyncTarget::AfterSeal(seal, next) => f
                .debug_struct("AfterSeal")
                .field("sealing", &seal.base_offset)
                .field("next", next)
                .finish(),
        }
    }
}

impl SyncTarget {
    pub fn sync(&self) -> io::Result<()> {
        match self {
            SyncTarget::File(file) => file.sync_data(),
            SyncTarget::Direct(log) => log.flush(),
            SyncTarget::AfterSeal(seal, next) => {
                seal.run()?;
                next.sync()
            }
        }
    }

    /// The file a sync writes: targets with one key share one sync in a round.
    fn key(&self) -> usize {
        match self {
            SyncTarget::File(file) => Arc::as_ptr(file) as usize,
            SyncTarget::Direct(log) => Arc::as_ptr(log) as usize,
            SyncTarget::AfterSeal(_, next) => next.key(),
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
    let helpers = start_helpers();
    while let Ok(first) = rx.recv() {
        // In order of first appearance, with a map from file to its place.
        let mut by_file: Vec<(SyncTarget, Vec<Completion>)> = Vec::new();
        let mut place: HashMap<usize, usize> = HashMap::new();
        for (file, done) in std::iter::once(first).chain(rx.try_iter()) {
            match place.entry(file.key()) {
                Entry::Occupied(at) => by_file[*at.get()].1.push(done),
                Entry::Vacant(at) => {
                    at.insert(by_file.len());
                    by_file.push((file, vec![done]));
                }
            }
        }
        // The helpers take every file but the first, which this thread syncs.
        let (results_tx, results_rx) = mpsc::channel();
        let mut results: Vec<Option<io::Result<()>>> = Vec::new();
        results.resize_with(by_file.len(), || None);
        for (at, (file, _)) in by_file.iter().enumerate().skip(1) {
            let job = (file.clone(), at, results_tx.clone());
            if let Err(mpsc::SendError((file, at, _))) = helpers.send(job) {
                results[at] = Some(file.sync());
            }
        }
        drop(results_tx);
        if let Some((file, _)) = by_file.first() {
            results[0] = Some(file.sync());
        }
        for (at, (_, waiters)) in by_file.into_iter().enumerate() {
            let result = loop {
                if let Some(result) = results[at].take() {
                    break result;
                }
                match results_rx.recv() {
                    Ok((done, result)) => results[done] = Some(result),
                    // A helper died with the job: its file's appends are not durable.
                    Err(_) => break Err(io::Error::other("a segment sync helper stopped")),
                }
            };
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

/// Starts the helper threads; they stop when the returned sender is dropped. Without
/// them (a thread that cannot start), the sync thread syncs every file itself.
fn start_helpers() -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for n in 0..HELPERS {
        let rx = rx.clone();
        let started = std::thread::Builder::new()
            .name(format!("strait-segment-sync-{n}"))
            .spawn(move || {
                loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((file, at, results)) = job else { return };
                    // The round may be over only if the sync thread is gone.
                    let _ = results.send((at, file.sync()));
                }
            });
        if let Err(err) = started {
            tracing::warn!(%err, "cannot start a segment sync helper");
        }
    }
    tx
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_in(dir: &std::path::Path, name: &str) -> Arc<File> {
        Arc::new(File::create(dir.join(name)).expect("create"))
    }

    #[test]
    fn a_partitions_appends_complete_in_order_across_a_segment_roll() {
        let dir = tempfile::tempdir().expect("tempdir");
        let syncer = SegmentSyncer::start();
        let (tx, rx) = mpsc::channel::<(usize, u32)>();
        const PARTITIONS: usize = 6;
        const PER_PARTITION: u32 = 200;
        // Each partition rolls to a second segment file half way.
        let files: Vec<[Arc<File>; 2]> = (0..PARTITIONS)
            .map(|s| {
                [
                    file_in(dir.path(), &format!("{s}-a")),
                    file_in(dir.path(), &format!("{s}-b")),
                ]
            })
            .collect();
        for n in 0..PER_PARTITION {
            for (partition, pair) in files.iter().enumerate() {
                let file = &pair[usize::from(n >= PER_PARTITION / 2)];
                (&**file).write_all(b"entry").expect("write");
                let tx = tx.clone();
                syncer.after_sync(SyncTarget::File(file.clone()), move |res| {
                    res.expect("sync");
                    tx.send((partition, n)).expect("send");
                });
            }
        }
        drop(tx);
        drop(syncer);
        let mut next = [0u32; PARTITIONS];
        for (partition, n) in rx.iter() {
            assert_eq!(
                n, next[partition],
                "partition {partition} completed out of order"
            );
            next[partition] += 1;
        }
        assert_eq!(next, [PER_PARTITION; PARTITIONS], "every append completed");
    }

    #[test]
    fn dropping_the_last_handle_still_completes_what_was_queued() {
        let dir = tempfile::tempdir().expect("tempdir");
        let syncer = SegmentSyncer::start();
        let (tx, rx) = mpsc::channel();
        for partition in 0..20 {
            let tx = tx.clone();
            let file = file_in(dir.path(), &partition.to_string());
            syncer.after_sync(SyncTarget::File(file), move |res| {
                tx.send(res.is_ok()).expect("send");
            });
        }
        drop(tx);
        drop(syncer);
        let results: Vec<bool> = rx.iter().collect();
        assert_eq!(results, vec![true; 20]);
    }
}
