//! Sealing a rolled segment off the append path.
//!
//! A roll used to seal the old segment where the append that triggered it ran: write its
//! pending direct appends, cut the padding, write and sync its index file, create the
//! new segment and sync the directory. That is four device round trips (8 ms and more
//! on a busy disk) on the broker's async worker, and the partitions of a topic roll
//! together (they fill at the same pace), so every partition of the broker waited
//! 20–30 ms now and then.
//!
//! With direct appends a roll now only creates the new segment's file and hands the rest
//! to a [`Seal`], which runs once, on whichever thread gets to it first: normally the
//! sync thread, because the new segment's sync handle
//! ([`super::syncer::SyncTarget::AfterSeal`]) runs the seal before it writes anything of
//! the new segment. So, as before the change:
//! - the old segment's appends are durable, and the new segment's file and the old
//!   one's index file are in the synced directory, before any append to the new segment
//!   is reported durable;
//! - no byte of the new segment reaches the disk before the old segment's last byte
//!   (a direct log writes only when synced), so a crash never leaves a later segment
//!   holding data after a torn one.
//!
//! The log waits for the seal itself (running it if no one has) before anything that
//! touches the sealed segment's file or writes the new one outside a sync: truncation,
//! deletion, a reset, a change of write mode.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::index_file::{self, SegmentSummary};
use super::syncer::SyncTarget;

/// What sealing a segment takes, gathered when it rolls.
pub struct SealWork {
    /// The segment's pending appends (its direct log).
    pub data: SyncTarget,
    /// The segment file, to cut the padding of its last direct write.
    pub file: Arc<File>,
    pub path: PathBuf,
    /// The segment's length in bytes (its last frame's end).
    pub size: u64,
    pub summary: SegmentSummary,
    /// The log's directory: synced last, for the new segment's file and the index file.
    pub dir: PathBuf,
}

impl SealWork {
    fn run(self) -> io::Result<()> {
        self.data.sync()?;
        if self.file.metadata()?.len() != self.size {
            self.file.set_len(self.size)?;
            self.file.sync_data()?;
        }
        index_file::write(&self.path, &self.summary)?;
        sync_dir(&self.dir)
    }
}

enum State {
    Pending(Box<SealWork>),
    Done,
    Failed(io::ErrorKind, String),
}

/// The sealing of one rolled segment: pending until someone runs it, then its outcome.
pub struct Seal {
    /// The base offset of the segment it seals.
    pub base_offset: u64,
    state: Mutex<State>,
}

impl Seal {
    pub fn new(base_offset: u64, work: SealWork) -> Arc<Seal> {
        Arc::new(Seal {
            base_offset,
            state: Mutex::new(State::Pending(Box::new(work))),
        })
    }

    /// Runs the seal unless it has run, waiting while another thread runs it; its
    /// outcome either way (a failure stays: the new segment's appends cannot be durable).
    pub fn run(&self) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match std::mem::replace(&mut *state, State::Done) {
            State::Pending(work) => {
                if let Err(err) = work.run() {
                    tracing::error!(%err, "sealing a rolled segment failed");
                    *state = State::Failed(err.kind(), err.to_string());
                }
            }
            ran => *state = ran,
        }
        match &*state {
            State::Failed(kind, why) => Err(io::Error::new(*kind, why.clone())),
            _ => Ok(()),
        }
    }

    /// Whether the seal has run (without waiting for one that is running).
    pub fn has_run(&self) -> bool {
        match self.state.try_lock() {
            Ok(state) => !matches!(&*state, State::Pending(_)),
            Err(_) => false,
        }
    }
}

/// Makes file creations and removals in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
