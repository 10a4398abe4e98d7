//! Partition liveness at the broker level: leader beats and election timers for every
//! partition group, in place of openraft's per-group ticks and heartbeats.
//!
//! openraft ticks each group every fifth of a heartbeat interval and sends every
//! follower a heartbeat RPC; with a thousand partitions that kept the brokers of an idle
//! cluster half busy. Partition groups run with openraft's tick off
//! (`raft::partition_config`) and this module does its timing work for all of them:
//! - every [`BEAT_INTERVAL`] a broker sends each peer one [`BeatsRequest`] naming the
//!   groups it leads with that peer as a voter, and notes which followers recognised it
//!   (the leader's quorum and in-sync checks read these acknowledgements);
//! - a follower that recognises the sender and term notes the contact; one that does not
//!   know the leader, or is behind its commit, asks for an openraft heartbeat, which the
//!   leader then sends (so a restarted follower learns its leader and commit index);
//! - a voter that has heard no leader for a random election timeout starts a pre-vote
//!   election, and retries every few hundred milliseconds while none is heard;
//! - a replica that heard its leader recently refuses (pre-)votes for others, as does a
//!   leader a majority acknowledges (`service::raft_transport`): openraft's own leader
//!   lease only sees its AppendEntries, which a quiet partition no longer sends.
//!
//! Safety is still Raft's: only the moment an election starts is decided here.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;
use rand::Rng;
use strait_proto::internal::{BeatReply, BeatsRequest, LeaderBeat};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::registry::PartitionRegistry;
use super::replica::PartitionReplica;

/// How often a leader tells its followers it is alive.
pub const BEAT_INTERVAL: Duration = Duration::from_millis(250);
/// Silence from the leader after which a voter starts an election (ms, drawn at random
/// per wait so that voters rarely start together).
const ELECTION_TIMEOUT_MS: Range<u64> = 1200..2400;
/// Wait between election attempts while no leader is heard (ms).
const ELECTION_RETRY_MS: Range<u64> = 300..900;
/// A replica that heard its leader within this long (the shortest election timeout)
/// refuses to help elect another.
pub const LEADER_STICKINESS: Duration = Duration::from_millis(1200);
/// How long one beats RPC may take.
const BEATS_RPC_TIMEOUT: Duration = Duration::from_secs(1);

/// What one replica knows of its leader's liveness, or, when it leads, of its followers'.
pub struct Liveness {
    state: Mutex<State>,
}

struct State {
    leader_contact: Instant,
    election_due: Instant,
    /// Follower → when it last recognised this replica as its leader, and in which term.
    acks: HashMap<u64, (Instant, u64)>,
}

fn random_ms(range: Range<u64>) -> Duration {
    Duration::from_millis(rand::thread_rng().gen_range(range))
}

impl Default for Liveness {
    fn default() -> Self {
        let now = Instant::now();
        Liveness {
            state: Mutex::new(State {
                leader_contact: now,
                election_due: now + random_ms(ELECTION_TIMEOUT_MS),
                acks: HashMap::new(),
            }),
        }
    }
}

impl Liveness {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The leader was heard from (a recognised beat or an AppendEntries).
    pub fn heard_leader(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        state.leader_contact = now;
        state.election_due = now + random_ms(ELECTION_TIMEOUT_MS);
    }

    pub fn heard_leader_within(&self, window: Duration) -> bool {
        self.lock().leader_contact.elapsed() <= window
    }

    /// Whether an election is due now; if so, the next attempt is scheduled.
    fn take_election_turn(&self, now: Instant) -> bool {
        let mut state = self.lock();
        if now < state.election_due {
            return false;
        }
        state.election_due = now + random_ms(ELECTION_RETRY_MS);
        true
    }

    /// `follower` recognised this replica as its leader in `term`.
    pub fn acked_by(&self, follower: u64, term: u64) {
        self.lock().acks.insert(follower, (Instant::now(), term));
    }

    /// Whether `follower` recognised this replica as its leader in `term` within
    /// `window`.
    pub fn acked_within(&self, follower: u64, term: u64, window: Duration) -> bool {
        self.lock()
            .acks
            .get(&follower)
            .is_some_and(|(at, t)| *t == term && at.elapsed() <= window)
    }
}

/// What one local replica's metrics say, read once per round.
struct View {
    state: ServerState,
    term: u64,
    committed: u64,
    leader: Option<u64>,
    voters: Vec<u64>,
}

fn view(replica: &PartitionReplica) -> View {
    let watch = replica.raft().metrics();
    let m = watch.borrow_watched();
    View {
        state: m.state,
        term: m.current_term,
        committed: m.cluster_committed.as_ref().map_or(0, |id| id.index),
        leader: m.current_leader,
        voters: m.membership_config.membership().voter_ids().collect(),
    }
}

impl PartitionRegistry {
    /// Sends leader beats and starts elections until `shutdown` fires.
    pub async fn run_liveness(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(BEAT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sending: HashMap<u64, JoinHandle<()>> = HashMap::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let now = Instant::now();
            let mut beats: HashMap<u64, Vec<LeaderBeat>> = HashMap::new();
            for replica in self.all() {
                let v = view(&replica);
                if !v.voters.contains(&self.broker_id) {
                    continue;
                }
                if v.state == ServerState::Leader {
                    // A leader that steps down waits a full election timeout before
                    // standing itself.
                    replica.liveness.heard_leader();
                    for &peer in v.voters.iter().filter(|&&id| id != self.broker_id) {
                        beats.entry(peer).or_default().push(LeaderBeat {
                            group_id: replica.group_id,
                            term: v.term,
                            committed: v.committed,
                        });
                    }
                } else if !replica.refuses_votes() && replica.liveness.take_election_turn(now) {
                    tracing::debug!(
                        group = replica.group_id,
                        leader = ?v.leader,
                        "no leader heard: starting a pre-vote election"
                    );
                    let raft = replica.raft().clone();
                    tokio::spawn(async move {
                        let _ = raft.trigger().elect(true).await;
                    });
                }
            }
            for (peer, beats) in beats {
                // A peer still answering the previous round is skipped, not queued.
                if sending.get(&peer).is_some_and(|task| !task.is_finished()) {
                    continue;
                }
                let registry = self.clone();
                sending.insert(
                    peer,
                    tokio::spawn(async move { registry.send_beats(peer, beats).await }),
                );
            }
            sending.retain(|_, task| !task.is_finished());
        }
    }

    async fn send_beats(&self, peer: u64, beats: Vec<LeaderBeat>) {
        let terms: HashMap<u64, u64> = beats.iter().map(|b| (b.group_id, b.term)).collect();
        let fallback = self.cache.broker_addr(peer).unwrap_or_default();
        let Ok(mut client) = self.peers.transport(peer, &fallback) else {
            return;
        };
        let mut request = tonic::Request::new(BeatsRequest {
            from: self.broker_id,
            beats,
        });
        request.set_timeout(BEATS_RPC_TIMEOUT);
        let reply = match tokio::time::timeout(BEATS_RPC_TIMEOUT, client.beats(request)).await {
            Ok(Ok(reply)) => reply,
            // An unreachable follower simply stops acknowledging.
            Ok(Err(status)) => {
                tracing::debug!(peer, %status, "leader beats refused");
                return;
            }
            Err(_) => {
                tracing::debug!(peer, "leader beats timed out");
                return;
            }
        };
        let replies = reply.into_inner().replies;
        tracing::trace!(
            peer,
            replies = replies.len(),
            recognized = replies.iter().filter(|r| r.recognized).count(),
            "leader beats answered"
        );
        for reply in replies {
            let Some(replica) = self.by_group(reply.group_id) else {
                continue;
            };
            if reply.recognized
                && let Some(&term) = terms.get(&reply.group_id)
            {
                replica.liveness.acked_by(peer, term);
            }
            if reply.needs_append {
                let raft = replica.raft().clone();
                tokio::spawn(async move {
                    let _ = raft.trigger().heartbeat().await;
                });
            }
        }
    }

    /// Answers a peer's leader beats (the follower's side).
    pub fn answer_beats(&self, from: u64, beats: &[LeaderBeat]) -> Vec<BeatReply> {
        beats
            .iter()
            .map(|beat| {
                let Some(replica) = self.by_group(beat.group_id) else {
                    return BeatReply {
                        group_id: beat.group_id,
                        recognized: false,
                        needs_append: false,
                    };
                };
                let v = view(&replica);
                let recognized =
                    v.leader == Some(from) && v.term == beat.term && v.state != ServerState::Leader;
                if recognized {
                    replica.liveness.heard_leader();
                } else {
                    tracing::debug!(
                        group = beat.group_id,
                        from,
                        term = beat.term,
                        my_term = v.term,
                        my_leader = ?v.leader,
                        state = ?v.state,
                        "beat from a leader this replica does not know"
                    );
                }
                BeatReply {
                    group_id: beat.group_id,
                    recognized,
                    needs_append: !recognized || v.committed < beat.committed,
                }
            })
            .collect()
    }
}

impl PartitionReplica {
    /// Whether this replica knows of a live leader: it leads with a majority
    /// acknowledging it, or it heard its leader within [`LEADER_STICKINESS`]. Such a
    /// replica refuses to help elect another leader.
    pub fn has_live_leader(&self) -> bool {
        let v = view(self);
        if v.state == ServerState::Leader {
            return self.majority_acked_within(v.leader, v.term, &v.voters, LEADER_STICKINESS);
        }
        v.leader.is_some() && self.liveness.heard_leader_within(LEADER_STICKINESS)
    }

    /// Whether a majority of `voters`, this leader (`me`) included, recognised it within
    /// `window`.
    pub(super) fn majority_acked_within(
        &self,
        me: Option<u64>,
        term: u64,
        voters: &[u64],
        window: Duration,
    ) -> bool {
        let acked = voters
            .iter()
            .filter(|&&id| Some(id) == me || self.liveness.acked_within(id, term, window))
            .count();
        acked * 2 > voters.len()
    }
}
