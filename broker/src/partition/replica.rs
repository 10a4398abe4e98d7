//! One local replica of a partition: its Raft group, produce (leader only, answered
//! after a majority has the batch on disk, or written with `flush=async`, and it is
//! applied) and fetch (committed records only, with long-polling).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use openraft::alias::CommittedLeaderIdOf;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::impls::ProgressResponder;
use openraft::{Instant as _, ServerState};
use strait_records::{BatchError, Compression, RecordBatch};

use super::liveness::Liveness;
use super::recovery::RecoveryGate;
use super::sequencer::{Admission, Sequencer, Verdict};
use super::state_machine::Positions;
use super::types::{
    PartitionCommand, PartitionRaft, PartitionRaftConfig, PartitionReply, ProducerStamp,
};
use crate::controller::topic_config::{Flush, TopicConfig};
use crate::error::{BrokerError, LeaderHint};
use crate::metadata::MetadataCache;
use crate::storage::partition_log::format::{BatchHeader, EntryKind};
use crate::storage::partition_log::log::{PartitionLog, RollPolicy};

/// Size limits applied to produce and fetch.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_record_bytes: usize,
    pub max_request_bytes: usize,
    pub produce_timeout: Duration,
}

/// Largest fetch response a broker builds, whatever the client asks.
const MAX_FETCH_BYTES: usize = 8 * 1024 * 1024;
/// Longest long-poll a broker honours.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(30);
/// Longest produce timeout a client may ask for.
const MAX_PRODUCE_TIMEOUT: Duration = Duration::from_secs(300);
/// A follower this many entries behind the leader's log is out of the in-sync set.
const ISR_MAX_LAG_ENTRIES: u64 = 1000;
/// A follower whose last acknowledgement (append, heartbeat or leader beat) is older
/// than this is out of the in-sync set (leader beats go every 250 ms).
const ISR_MAX_SILENCE: Duration = Duration::from_secs(3);
/// A leader whose last acknowledgement by a majority is older than this (the longest
/// election timeout) refuses writes with NOT_LEADER: the others have likely elected
/// a new leader.
const QUORUM_SILENCE: Duration = Duration::from_millis(2400);
/// A write first renews openraft's leader lease (the longest election timeout) when the
/// last majority acknowledgement is older than this.
const LEASE_RENEW_AFTER: Duration = Duration::from_millis(1200);

/// The compression of a stored batch (its frame passed the CRC check, so an unknown
/// code is a bug or a newer format, not damage).
fn stored_compression(h: &BatchHeader) -> Result<Compression, BrokerError> {
    Compression::from_code(h.compression).ok_or_else(|| {
        BrokerError::Internal(format!(
            "batch at offset {} has unknown compression code {}",
            h.base_offset, h.compression
        ))
    })
}

/// An admitted idempotent batch awaiting Raft's answer. It stays in its producer's
/// in-flight set (a next batch is checked against it, which is as right as checking it
/// against the producer table) until Raft answers, whatever becomes of the request:
/// dropped early (a timeout, a client gone), the wait goes on in a task.
struct Admitted {
    answer: Option<BoxFuture<'static, Outcome>>,
    sequencer: Arc<Sequencer>,
    stamp: ProducerStamp,
    term: u64,
}

impl Admitted {
    /// Takes the batch out of the in-flight set once `answer` (if still pending) is in.
    fn finish(&mut self, answer: Option<BoxFuture<'static, Outcome>>) {
        let (sequencer, stamp, term) = (self.sequencer.clone(), self.stamp, self.term);
        // Without a runtime the process is stopping, and the set with it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Some(answer) = answer {
                    answer.await;
                }
                sequencer.finished(stamp, term).await;
            });
        }
    }
}

impl Future for Admitted {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let Some(answer) = self.answer.as_mut() else {
            return Poll::Ready(Outcome::Unknown("polled after its answer".into()));
        };
        let outcome = std::task::ready!(answer.as_mut().poll(cx));
        self.answer = None;
        // Answer first, then leave the in-flight set.
        self.finish(None);
        Poll::Ready(outcome)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(answer) = self.answer.take() {
            self.finish(Some(answer));
        }
    }
}

/// What became of a write, as far as its producer is concerned.
enum Outcome {
    Appended(u64),
    NotLeader(Option<u64>),
    /// Raft gave up on the entry; it may still be committed by a later leader.
    Unknown(String),
}

/// Committed record batches read from the log, the first starting at the requested
/// offset.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Base offset and records of each batch.
    pub batches: Vec<(u64, RecordBatch)>,
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

pub struct PartitionReplica {
    pub topic: String,
    pub partition: u32,
    pub group_id: u64,
    pub(super) raft: PartitionRaft,
    pub(super) positions: Positions,
    pub(super) log: Arc<RwLock<PartitionLog>>,
    pub(super) cache: MetadataCache,
    pub(super) limits: Limits,
    pub(super) recovery: RecoveryGate,
    /// Reopens elections once the replica recovered (see `partition::recovery`).
    pub(super) recovery_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Which start of this group this replica is (repair requests name it).
    pub(super) generation: u64,
    /// Shared with the log store: whether appends are acknowledged before fdatasync.
    pub(super) flush_async: Arc<AtomicBool>,
    /// Leader contact and follower acknowledgements (see `partition::liveness`).
    pub(super) liveness: Liveness,
    /// Admission of idempotent producers' batches while leader.
    pub(super) sequencer: Arc<Sequencer>,
}

impl PartitionReplica {
    /// Applies the topic's current segment and flush settings to this replica.
    pub fn apply_config(&self, config: &TopicConfig) {
        self.log
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .set_policy(roll_policy(config));
        self.flush_async
            .store(config.flush == Flush::Async, Ordering::Relaxed);
    }

    pub fn raft(&self) -> &PartitionRaft {
        &self.raft
    }

    /// Leader contact and follower acknowledgements of this replica.
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// Whether this replica is getting back entries it lost, and so must not vote or
    /// take leadership.
    pub fn refuses_votes(&self) -> bool {
        self.recovery.refuses_votes()
    }

    fn not_leader(&self, leader: Option<u64>) -> BrokerError {
        BrokerError::NotLeader {
            topic: self.topic.clone(),
            partition: self.partition,
            leader: leader.map(|id| LeaderHint {
                id,
                addr: self.cache.broker_addr(id),
            }),
        }
    }

    fn ensure_leader(&self) -> Result<(), BrokerError> {
        let (state, leader, term, voters, replication_silent) = {
            let watch = self.raft.metrics();
            let metrics = watch.borrow_watched();
            let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
            let silent = metrics
                .last_quorum_acked
                .as_ref()
                .is_some_and(|acked| acked.elapsed() > QUORUM_SILENCE);
            (
                metrics.state,
                metrics.current_leader,
                metrics.current_term,
                voters,
                silent,
            )
        };
        // A single voter is its own majority (openraft reports no acknowledgements). A
        // quiet partition sends no AppendEntries: its followers' answers to leader beats
        // count too.
        let quorum_silent = voters.len() > 1
            && replication_silent
            && !self.majority_acked_within(leader, term, &voters, QUORUM_SILENCE);
        match state {
            // A leader no majority has heard from lately is probably cut off, and another
            // is being elected: say so at once rather than let the write time out.
            ServerState::Leader if quorum_silent => {
                tracing::debug!(
                    topic = %self.topic,
                    partition = self.partition,
                    ?voters,
                    "no majority acknowledged this leader lately: refusing the write"
                );
                Err(self.not_leader(None))
            }
            ServerState::Leader => Ok(()),
            _ => Err(self.not_leader(leader)),
        }
    }

    /// Appends the record batch `records` (declared to hold `record_count` records)
    /// through Raft; returns the base offset once it is committed: a majority has it on
    /// disk (with `flush=async`, written) and it is applied. A batch of an idempotent
    /// `producer` is written at most once (`partition::sequencer`).
    pub async fn produce(
        &self,
        records: Bytes,
        compression: Compression,
        record_count: u32,
        producer: Option<ProducerStamp>,
        append_time_ms: i64,
        timeout: Option<Duration>,
    ) -> Result<u64, BrokerError> {
        self.ensure_leader()?;
        if records.len() > self.limits.max_request_bytes {
            return Err(BrokerError::RecordTooLarge(format!(
                "produce request of {} bytes exceeds max-request-bytes {}",
                records.len(),
                self.limits.max_request_bytes
            )));
        }
        let batch = RecordBatch::parse_counted(
            records,
            compression,
            record_count,
            self.limits.max_request_bytes,
            self.limits.max_record_bytes,
        )
        .map_err(|err| match err {
            BatchError::RecordTooLarge { size, .. } => BrokerError::RecordTooLarge(format!(
                "record of {size} bytes exceeds max-record-bytes {}",
                self.limits.max_record_bytes
            )),
            BatchError::Empty => {
                BrokerError::InvalidRequest("a produce request needs at least one record".into())
            }
            BatchError::PlainTooLarge { limit } => BrokerError::RecordTooLarge(format!(
                "the batch decompresses to more than max-request-bytes {limit}"
            )),
            other => BrokerError::InvalidRequest(format!("malformed record batch: {other}")),
        })?;
        if batch.compression() != Compression::None && batch.is_unstamped() {
            return Err(BrokerError::InvalidRequest(
                "the records of a compressed batch must carry timestamps".into(),
            ));
        }
        let batch = batch.stamp_append_time(append_time_ms);
        let timeout = timeout
            .unwrap_or(self.limits.produce_timeout)
            .min(MAX_PRODUCE_TIMEOUT);
        self.renew_lease().await?;
        let command = PartitionCommand::Append { batch, producer };
        let written = match producer {
            None => Box::pin(self.write(command, None).await?),
            Some(stamp) => self.write_once(command, stamp, record_count).await?,
        };
        match tokio::time::timeout(timeout, written).await {
            Err(_) => Err(BrokerError::Timeout(format!(
                "no majority acknowledged within {} ms; the records may or may not be written",
                timeout.as_millis()
            ))),
            Ok(Outcome::Appended(base_offset)) => Ok(base_offset),
            Ok(Outcome::NotLeader(leader)) => Err(self.not_leader(leader)),
            Ok(Outcome::Unknown(why)) => Err(BrokerError::Unavailable(format!(
                "leadership changed while writing; outcome unknown: {why}"
            ))),
        }
    }

    /// Hands `command` to Raft (only while `leader` leads, if given); the future
    /// resolves once the entry is applied, or Raft gave up on it.
    async fn write(
        &self,
        command: PartitionCommand,
        leader: Option<CommittedLeaderIdOf<PartitionRaftConfig>>,
    ) -> Result<impl Future<Output = Outcome> + Send + 'static, BrokerError> {
        let (responder, answer) = ProgressResponder::complete_only();
        let mut write = self.raft.write(command).responder(responder);
        if let Some(leader) = leader {
            write = write.with_leader(leader);
        }
        write.await.map_err(|fatal| {
            BrokerError::Unavailable(format!("partition replica stopped: {fatal}"))
        })?;
        Ok(async move {
            match answer.await {
                Ok(Ok(response)) => match response.data {
                    PartitionReply::Appended { base_offset } => Outcome::Appended(base_offset),
                    PartitionReply::Nothing => Outcome::Unknown("applied without an offset".into()),
                },
                Ok(Err(ClientWriteError::ForwardToLeader(forward))) => {
                    Outcome::NotLeader(forward.leader_id)
                }
                Ok(Err(other)) => Outcome::Unknown(other.to_string()),
                Err(_) => Outcome::Unknown("the leader dropped the write".into()),
            }
        })
    }

    /// [`Self::write`] for a batch of an idempotent producer: admitted in its producer's
    /// sequence, or answered with the offset of its earlier, committed copy.
    async fn write_once(
        &self,
        command: PartitionCommand,
        stamp: ProducerStamp,
        record_count: u32,
    ) -> Result<BoxFuture<'static, Outcome>, BrokerError> {
        let leader = self
            .raft
            .as_leader()
            .map_err(|forward| self.not_leader(forward.leader_id))?
            .to_committed_leader_id();
        let term = leader.term;
        if !self.sequencer.is_caught_up(term) {
            // Everything earlier leaders committed must be in the producer table first.
            self.catch_up_high_watermark().await?;
            self.sequencer.caught_up(term);
        }
        let ticket = match self
            .sequencer
            .admit(&self.positions.producers, stamp, record_count, term)
            .await
        {
            Admission::Write(ticket) => ticket,
            Admission::Answer(Verdict::Written { base_offset }) => {
                return Ok(Box::pin(std::future::ready(Outcome::Appended(base_offset))));
            }
            Admission::Answer(Verdict::OutOfSequence(why)) => {
                return Err(BrokerError::OutOfSequence(why));
            }
        };
        let answer = self.write(command, Some(leader)).await?;
        ticket.submitted();
        Ok(Box::pin(Admitted {
            answer: Some(Box::pin(answer)),
            sequencer: self.sequencer.clone(),
            stamp,
            term,
        }))
    }

    /// A quiet leader sends no AppendEntries (`partition::liveness`), so openraft's leader
    /// lease, which it requires for a write, lapses: renew it with one heartbeat round
    /// when it is getting old.
    async fn renew_lease(&self) -> Result<(), BrokerError> {
        let stale = {
            let watch = self.raft.metrics();
            let m = watch.borrow_watched();
            m.membership_config.membership().voter_ids().count() > 1
                && m.last_quorum_acked
                    .as_ref()
                    .is_none_or(|acked| acked.elapsed() > LEASE_RENEW_AFTER)
        };
        if stale {
            self.catch_up_high_watermark().await?;
        }
        Ok(())
    }

    /// The log start offset and the high watermark, as of everything committed so far.
    pub async fn offsets(&self) -> Result<(u64, u64), BrokerError> {
        self.ensure_leader()?;
        self.catch_up_high_watermark().await?;
        Ok((self.log_start_offset(), self.high_watermark()))
    }

    /// The first committed offset whose record timestamp is at or after `timestamp_ms`.
    pub async fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<u64>, BrokerError> {
        self.ensure_leader()?;
        self.catch_up_high_watermark().await?;
        let high_watermark = self.high_watermark();
        let batch = {
            let log = self.log.read().unwrap_or_else(|e| e.into_inner());
            match log.offset_for_timestamp(timestamp_ms)? {
                Some(base) => log.read_offsets(base, 1)?.into_iter().next(),
                None => None,
            }
        };
        let Some(batch) = batch.filter(|b| b.header.kind == EntryKind::Records) else {
            return Ok(None);
        };
        let h = &batch.header;
        let records = RecordBatch::from_stored(
            batch.payload,
            stored_compression(h)?,
            h.record_count,
            h.first_timestamp,
            h.max_timestamp,
        );
        let mut found = None;
        for (i, record) in records.records().enumerate() {
            let record = record.map_err(|e| damaged(h.base_offset, &e))?;
            if record.timestamp_ms >= timestamp_ms {
                found = Some(h.base_offset + i as u64);
                break;
            }
        }
        Ok(found.filter(|offset| *offset < high_watermark))
    }

    /// Waits until this leader has applied everything committed in the cluster, so a
    /// newly elected leader does not report a high watermark below acknowledged records.
    async fn catch_up_high_watermark(&self) -> Result<(), BrokerError> {
        match self
            .raft
            .ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex)
            .await
        {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(openraft::error::LinearizableReadError::ForwardToLeader(
                forward,
            ))) => Err(self.not_leader(forward.leader_id)),
            Err(err) => Err(BrokerError::Unavailable(format!(
                "cannot confirm leadership of {}/{}: {err}",
                self.topic, self.partition
            ))),
        }
    }

    fn high_watermark(&self) -> u64 {
        *self.positions.high_watermark.borrow()
    }

    /// The first offset this replica can serve: retention's log start, or later when
    /// this replica's log was restarted from a snapshot.
    fn log_start_offset(&self) -> u64 {
        let log = self.log.read().unwrap_or_else(|e| e.into_inner());
        self.log_start_in(&log)
    }

    fn log_start_in(&self, log: &PartitionLog) -> u64 {
        log.log_start_offset()
            .max(*self.positions.log_start_offset.borrow())
    }

    /// Reads committed records from `offset`, up to about `max_bytes`, waiting up to
    /// `max_wait` when there is nothing at `offset` yet.
    pub async fn fetch(
        &self,
        offset: u64,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<Fetched, BrokerError> {
        self.ensure_leader()?;
        let max_bytes = max_bytes.clamp(1, MAX_FETCH_BYTES);
        let mut high_watermark = self.high_watermark();
        if offset > high_watermark {
            // A newly elected leader may not have applied everything committed yet: make
            // sure the high watermark is current before calling the offset out of range.
            self.catch_up_high_watermark().await?;
            high_watermark = self.high_watermark();
        }
        let log_start_offset = self.log_start_offset();
        if offset > high_watermark || offset < log_start_offset {
            return Err(BrokerError::OffsetOutOfRange {
                offset,
                log_start_offset,
                high_watermark,
            });
        }
        if offset == high_watermark && !max_wait.is_zero() {
            let mut watch = self.positions.high_watermark.clone();
            let wait = watch.wait_for(|hw| *hw > offset);
            // Timing out is a normal, empty long-poll answer.
            let _ = tokio::time::timeout(max_wait.min(MAX_FETCH_WAIT), wait).await;
        }
        self.read_committed(offset, max_bytes)
    }

    /// Batches from `offset` below the high watermark, read from the segments; the
    /// first is cut to start at `offset`. Up to `max_bytes`: whole batches, or the first
    /// records of the first batch when it alone is larger (at least one record).
    fn read_committed(&self, offset: u64, max_bytes: usize) -> Result<Fetched, BrokerError> {
        let high_watermark = self.high_watermark();
        let (batches, log_start_offset) = {
            let log = self.log.read().unwrap_or_else(|e| e.into_inner());
            (
                log.read_offsets(offset, max_bytes)?,
                self.log_start_in(&log),
            )
        };
        let mut fetched = Fetched {
            batches: Vec::new(),
            high_watermark,
            log_start_offset,
        };
        let mut bytes = 0usize;
        for stored in batches {
            let h = &stored.header;
            let end = h.base_offset + u64::from(h.record_count);
            if h.kind != EntryKind::Records || end <= offset {
                continue;
            }
            // Batches commit whole: one that starts below the high watermark ends there.
            if h.base_offset >= high_watermark {
                break;
            }
            let compression = stored_compression(h)?;
            let mut batch = RecordBatch::from_stored(
                stored.payload,
                compression,
                h.record_count,
                h.first_timestamp,
                h.max_timestamp,
            );
            let mut base = h.base_offset;
            // A compressed batch is returned whole, from its own base offset.
            if base < offset && compression == Compression::None {
                batch = batch.skip((offset - base) as u32);
                base = offset;
            }
            if bytes > 0 && bytes + batch.len() > max_bytes {
                break;
            }
            let full = bytes + batch.len() > max_bytes;
            if full {
                // The first batch alone is over: as many of its records as fit (one at
                // least).
                batch = batch.truncate_to(max_bytes);
            }
            bytes += batch.len();
            fetched.batches.push((base, batch));
            if full {
                break;
            }
        }
        Ok(fetched)
    }

    /// Retention, in two steps. The leader proposes a new log start offset through Raft
    /// when sealed segments are past `retention.ms` or the log is over `retention.bytes`
    /// (committed records only); every replica applies it identically. Then each replica
    /// snapshots at the retention boundary and lets openraft purge the segments below it.
    pub async fn enforce_retention(&self, config: &TopicConfig) -> Result<(), BrokerError> {
        if self.leader_report().is_some() {
            let now = crate::service::convert::now_ms();
            let high_watermark = self.high_watermark();
            let current = *self.positions.log_start_offset.borrow();
            let new_start = {
                let log = self.log.read().unwrap_or_else(|e| e.into_inner());
                let mut remaining = log.size_bytes();
                let mut start = current;
                for (last, size, max_timestamp) in log.sealed_segments() {
                    let expired = config.retention_ms >= 0
                        && max_timestamp < now.saturating_sub(config.retention_ms);
                    let oversize =
                        config.retention_bytes >= 0 && remaining > config.retention_bytes as u64;
                    if !(expired || oversize) || last.next_offset() > high_watermark {
                        break;
                    }
                    remaining -= size;
                    start = start.max(last.next_offset());
                }
                start
            };
            if new_start > current {
                tracing::info!(topic = %self.topic, partition = self.partition, log_start_offset = new_start, "retention moves the log start");
                let retain = PartitionCommand::Retain {
                    log_start_offset: new_start,
                };
                // Losing leadership meanwhile is fine: the next leader will propose it.
                if self.renew_lease().await.is_ok() {
                    let _ = self.raft.client_write(retain).await;
                }
            }
        }
        self.purge_below_log_start().await
    }

    async fn purge_below_log_start(&self) -> Result<(), BrokerError> {
        let log_start = *self.positions.log_start_offset.borrow();
        let (boundary, purged) = {
            let log = self.log.read().unwrap_or_else(|e| e.into_inner());
            (log.retention_boundary(log_start), log.purged_through())
        };
        let Some(boundary) = boundary else {
            return Ok(());
        };
        if purged.is_some_and(|p| p >= boundary.index) {
            return Ok(());
        }
        let stopped = |e: openraft::error::Fatal<PartitionRaftConfig>| {
            BrokerError::Unavailable(e.to_string())
        };
        let mut metrics = self.raft.metrics();
        let has_snapshot = |m: &openraft::RaftMetrics<PartitionRaftConfig>| {
            m.snapshot.is_some_and(|s| s.index() >= boundary.index)
        };
        if !has_snapshot(&metrics.borrow_watched()) {
            self.raft.trigger().snapshot().await.map_err(stopped)?;
            let built = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    if has_snapshot(&metrics.borrow_watched()) {
                        return true;
                    }
                    if metrics.changed().await.is_err() {
                        return false;
                    }
                }
            })
            .await;
            if !matches!(built, Ok(true)) {
                return Ok(());
            }
        }
        self.raft
            .trigger()
            .purge_log(boundary.index)
            .await
            .map_err(stopped)
    }

    /// Whether this replica leads and `follower` has every entry of its log.
    pub fn follower_fully_caught_up(&self, follower: u64) -> bool {
        let watch = self.raft.metrics();
        let metrics = watch.borrow_watched();
        let Some(replication) = metrics.replication.as_ref() else {
            return false;
        };
        let last = metrics.last_log_index;
        replication
            .get(&follower)
            .is_some_and(|matched| matched.as_ref().map(|m| m.index()) == last)
    }

    /// `(term, in-sync replicas)` when this replica leads its group.
    pub fn leader_report(&self) -> Option<(u64, Vec<u64>)> {
        let watch = self.raft.metrics();
        let metrics = watch.borrow_watched();
        if metrics.state != ServerState::Leader {
            return None;
        }
        let last = metrics.last_log_index.unwrap_or(0);
        let mut isr = vec![metrics.id];
        if let Some(replication) = &metrics.replication {
            for (id, matched) in replication {
                let caught_up = matched
                    .as_ref()
                    .is_some_and(|m| last.saturating_sub(m.index()) <= ISR_MAX_LAG_ENTRIES);
                // An idle partition does not grow a lag: a follower that stopped
                // answering (a dead broker, a stopped group, a cut link) is out too.
                let answering = metrics
                    .heartbeat
                    .as_ref()
                    .and_then(|h| h.get(id).cloned().flatten())
                    .is_some_and(|acked| acked.elapsed() <= ISR_MAX_SILENCE)
                    || self
                        .liveness
                        .acked_within(*id, metrics.current_term, ISR_MAX_SILENCE);
                if *id != metrics.id && caught_up && answering {
                    isr.push(*id);
                }
            }
        }
        isr.sort_unstable();
        Some((metrics.current_term, isr))
    }
}

/// The segment settings of a topic config.
pub(super) fn roll_policy(config: &TopicConfig) -> RollPolicy {
    RollPolicy {
        segment_bytes: config.segment_bytes,
        segment_ms: config.segment_ms,
    }
}

/// A stored record batch that does not parse (its CRC matched: a bug, not bit rot).
fn damaged(base_offset: u64, err: &BatchError) -> BrokerError {
    BrokerError::Internal(format!(
        "stored batch at offset {base_offset} is malformed: {err}"
    ))
}
