//! openraft `Config`s for the two kinds of group.
//!
//! Elections must not fire on a busy two-core machine running three brokers, and
//! hundreds of partition groups per broker must stay cheap: heartbeats are 150–250 ms and
//! elections 1–2 s, well above the fsync latency (openraft's FAQ asks for 10×).

use std::sync::Arc;

use openraft::{Config, SnapshotPolicy};

fn validated(config: Config) -> Arc<Config> {
    Arc::new(
        config
            .validate()
            .expect("the built-in Raft timing constants are valid"),
    )
}

/// The controller group: small state, snapshotted every 500 entries so that its log
/// stays short.
pub fn controller_config() -> Arc<Config> {
    validated(Config {
        cluster_name: "strait-controller".into(),
        heartbeat_interval: 150,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(500),
        max_in_snapshot_log_to_keep: 100,
        enable_pre_vote: Some(true),
        ..Default::default()
    })
}

/// A partition group: the Raft log *is* the partition's data, so snapshots never purge
/// it (retention does, through `Retain` entries). openraft's tick is off: leader beats
/// and election timers run once per broker for all partitions (`partition::liveness`),
/// and the heartbeat and election values below only bound openraft's leader lease and
/// pending reads. A replica `recovering` entries it lost does not stand for election
/// (`partition::recovery` lets it back in once it holds them again).
pub fn partition_config(recovering: bool) -> Arc<Config> {
    validated(Config {
        cluster_name: "strait-partition".into(),
        heartbeat_interval: 250,
        election_timeout_min: 1200,
        election_timeout_max: 2400,
        snapshot_policy: SnapshotPolicy::Never,
        max_payload_entries: 64,
        enable_pre_vote: Some(true),
        // A replica that found a corrupt segment cuts it and gets the entries back from
        // the leader; it stays out of elections until then (`partition::recovery`).
        allow_log_reversion: Some(true),
        enable_elect: !recovering,
        enable_tick: false,
        // A restarted leader holds an election instead of resuming: its committed index
        // is not synced, and a group restarted after a storage error (a full disk) would
        // otherwise resume, fail again, and keep its followers from electing another.
        enable_leader_restore: Some(false),
        ..Default::default()
    })
}
