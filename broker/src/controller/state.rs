//! The cluster metadata the controller replicates, and the deterministic rules that
//! change it. Every controller voter applies the same commands in the same order, so
//! `apply` must depend on nothing but the state and the command.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::placement::{PlacementError, place_replicas};
use super::topic_config::TopicConfig;

/// Most partitions one topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;
/// Longest topic name (Kafka's limit).
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Checks a topic name: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
/// Returns what is wrong with it.
pub fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err("longer than 249 characters".into());
    }
    if name == "." || name == ".." {
        return Err("`.` and `..` are reserved".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "character {bad:?} is not allowed (use letters, digits, '.', '_' and '-')"
        ));
    }
    Ok(())
}

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    pub id: u64,
    pub addr: String,
    pub roles: Vec<String>,
    pub rack: String,
    /// False once the broker's session expired or it deregistered.
    pub alive: bool,
}

/// One partition: its Raft group, replicas and the leader last reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub group_id: u64,
    /// The first replica is the preferred leader.
    pub replicas: Vec<u64>,
    pub leader: Option<u64>,
    /// The Raft term of `leader` (Kafka's leader epoch).
    pub leader_term: u64,
    /// Replicas the leader reports as caught up.
    pub isr: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub partitions: Vec<PartitionRecord>,
    pub replication_factor: u32,
    pub configs: BTreeMap<String, String>,
}

/// The whole replicated metadata image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub brokers: BTreeMap<u64, BrokerRecord>,
    pub topics: BTreeMap<String, TopicRecord>,
    /// Next partition group id to hand out; ids are never reused (0 is the controller).
    pub next_group_id: u64,
    /// The last idempotent producer id handed out; ids are never reused (0 is none).
    #[serde(default)]
    pub last_producer_id: u64,
}

/// A leadership report of a partition leader, relayed by the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderUpdate {
    pub group_id: u64,
    pub leader: u64,
    pub term: u64,
    pub isr: Vec<u64>,
}

/// A change to the cluster metadata; the payload of controller log entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerCommand {
    /// A broker (re)joins or changed its address; marks it alive.
    RegisterBroker {
        id: u64,
        addr: String,
        roles: Vec<String>,
        rack: String,
    },
    /// The brokers' sessions expired: mark them down.
    FenceBrokers {
        ids: Vec<u64>,
    },
    /// Create a topic; replicas are placed when the command is applied, from the
    /// replicated broker registry, so every voter places them identically.
    CreateTopic {
        name: String,
        partitions: u32,
        replication_factor: u32,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    /// Sets and removes per-topic config overrides.
    AlterTopicConfigs {
        name: String,
        set: BTreeMap<String, String>,
        remove: Vec<String>,
    },
    UpdateLeaders {
        updates: Vec<LeaderUpdate>,
    },
    /// Hand out the next idempotent producer id.
    AllocateProducerId,
}

impl std::fmt::Display for ControllerCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControllerCommand::RegisterBroker { id, addr, .. } => {
                write!(f, "register-broker({id}@{addr})")
            }
            ControllerCommand::FenceBrokers { ids } => write!(f, "fence-brokers({ids:?})"),
            ControllerCommand::CreateTopic { name, .. } => write!(f, "create-topic({name})"),
            ControllerCommand::DeleteTopic { name } => write!(f, "delete-topic({name})"),
            ControllerCommand::AlterTopicConfigs { name, .. } => {
                write!(f, "alter-topic-configs({name})")
            }
            ControllerCommand::UpdateLeaders { updates } => {
                write!(f, "update-leaders({})", updates.len())
            }
            ControllerCommand::AllocateProducerId => write!(f, "allocate-producer-id"),
        }
    }
}

/// Why a command was refused when applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("topic `{0}` already exists")]
    TopicAlreadyExists(String),
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
    #[error("{0}")]
    Placement(#[from] PlacementError),
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    #[error("{0}")]
    InvalidConfig(String),
}

/// The outcome of applying a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerReply {
    Done,
    TopicCreated(TopicRecord),
    ProducerId(u64),
    Rejected(Rejection),
}

impl ClusterState {
    pub fn new() -> ClusterState {
        ClusterState {
            next_group_id: 1,
            ..Default::default()
        }
    }

    /// Applies one command; a refused command leaves the state unchanged.
    pub fn apply(&mut self, command: ControllerCommand) -> ControllerReply {
        match command {
            ControllerCommand::RegisterBroker {
                id,
                addr,
                roles,
                rack,
            } => {
                self.brokers.insert(
                    id,
                    BrokerRecord {
                        id,
                        addr,
                        roles,
                        rack,
                        alive: true,
                    },
                );
                ControllerReply::Done
            }
            ControllerCommand::FenceBrokers { ids } => {
                for id in ids {
                    if let Some(broker) = self.brokers.get_mut(&id) {
                        broker.alive = false;
                    }
                }
                ControllerReply::Done
            }
            ControllerCommand::CreateTopic {
                name,
                partitions,
                replication_factor,
                configs,
            } => self.create_topic(name, partitions, replication_factor, configs),
            ControllerCommand::DeleteTopic { name } => match self.topics.remove(&name) {
                Some(_) => ControllerReply::Done,
                None => ControllerReply::Rejected(Rejection::UnknownTopic(name)),
            },
            ControllerCommand::AlterTopicConfigs { name, set, remove } => {
                let Some(topic) = self.topics.get_mut(&name) else {
                    return ControllerReply::Rejected(Rejection::UnknownTopic(name));
                };
                let mut configs = topic.configs.clone();
                for key in remove {
                    configs.remove(&key);
                }
                configs.extend(set);
                if let Err(problem) = TopicConfig::from_overrides(&configs) {
                    return ControllerReply::Rejected(Rejection::InvalidConfig(problem));
                }
                topic.configs = configs;
                ControllerReply::TopicCreated(topic.clone())
            }
            ControllerCommand::AllocateProducerId => {
                self.last_producer_id += 1;
                ControllerReply::ProducerId(self.last_producer_id)
            }
            ControllerCommand::UpdateLeaders { updates } => {
                for update in updates {
                    self.update_leader(update);
                }
                ControllerReply::Done
            }
        }
    }

    fn create_topic(
        &mut self,
        name: String,
        partitions: u32,
        replication_factor: u32,
        configs: BTreeMap<String, String>,
    ) -> ControllerReply {
        // Validated again here, deterministically, whatever the proposer checked: a bad
        // command must be refused by every voter, never make one of them fail.
        if let Err(problem) = check_topic_name(&name) {
            return ControllerReply::Rejected(Rejection::InvalidTopic(problem));
        }
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return ControllerReply::Rejected(Rejection::InvalidTopic(format!(
                "{partitions} partitions requested; allowed are 1 to {MAX_PARTITIONS}"
            )));
        }
        if let Err(problem) = TopicConfig::from_overrides(&configs) {
            return ControllerReply::Rejected(Rejection::InvalidConfig(problem));
        }
        if self.topics.contains_key(&name) {
            return ControllerReply::Rejected(Rejection::TopicAlreadyExists(name));
        }
        let replicas = match place_replicas(self, partitions, replication_factor) {
            Ok(replicas) => replicas,
            Err(err) => return ControllerReply::Rejected(err.into()),
        };
        let partitions = replicas
            .into_iter()
            .map(|replicas| {
                let group_id = self.next_group_id;
                self.next_group_id += 1;
                PartitionRecord {
                    group_id,
                    replicas,
                    leader: None,
                    leader_term: 0,
                    isr: Vec::new(),
                }
            })
            .collect();
        let topic = TopicRecord {
            name: name.clone(),
            partitions,
            replication_factor,
            configs,
        };
        self.topics.insert(name, topic.clone());
        ControllerReply::TopicCreated(topic)
    }

    fn update_leader(&mut self, update: LeaderUpdate) {
        let Some(partition) = self
            .topics
            .values_mut()
            .flat_map(|t| t.partitions.iter_mut())
            .find(|p| p.group_id == update.group_id)
        else {
            return;
        };
        // A report from an older term is stale: a newer leader already took over. Only a
        // replica of the partition can lead it.
        if update.term < partition.leader_term || !partition.replicas.contains(&update.leader) {
            return;
        }
        partition.leader = Some(update.leader);
        partition.leader_term = update.term;
        partition.isr = update.isr;
    }

    /// Finds the partition served by Raft group `group_id`.
    pub fn partition_by_group(
        &self,
        group_id: u64,
    ) -> Option<(&TopicRecord, u32, &PartitionRecord)> {
        self.topics.values().find_map(|t| {
            t.partitions
                .iter()
                .enumerate()
                .find(|(_, p)| p.group_id == group_id)
                .map(|(i, p)| (t, i as u32, p))
        })
    }

    /// Ids of the brokers currently alive, ascending.
    pub fn live_brokers(&self) -> Vec<u64> {
        self.brokers
            .values()
            .filter(|b| b.alive)
            .map(|b| b.id)
            .collect()
    }

    /// Whether a leader update would change anything (so the controller skips no-op writes).
    pub fn leader_update_is_news(&self, update: &LeaderUpdate) -> bool {
        match self.partition_by_group(update.group_id) {
            Some((_, _, p)) => {
                update.term > p.leader_term
                    || (update.term == p.leader_term
                        && (p.leader != Some(update.leader) || p.isr != update.isr))
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(state: &mut ClusterState, id: u64) {
        state.apply(ControllerCommand::RegisterBroker {
            id,
            addr: format!("127.0.0.1:{}", 9700 + id),
            roles: vec!["broker".into()],
            rack: String::new(),
        });
    }

    fn create(state: &mut ClusterState, name: &str) -> ControllerReply {
        state.apply(ControllerCommand::CreateTopic {
            name: name.into(),
            partitions: 2,
            replication_factor: 2,
            configs: BTreeMap::new(),
        })
    }

    #[test]
    fn group_ids_are_unique_and_never_reused() {
        let mut state = ClusterState::new();
        register(&mut state, 1);
        register(&mut state, 2);
        create(&mut state, "a");
        state.apply(ControllerCommand::DeleteTopic { name: "a".into() });
        let ControllerReply::TopicCreated(topic) = create(&mut state, "a") else {
            panic!("expected creation");
        };
        let ids: Vec<u64> = topic.partitions.iter().map(|p| p.group_id).collect();
        assert_eq!(ids, vec![3, 4]);
    }

    #[test]
    fn duplicate_topic_is_rejected_without_change() {
        let mut state = ClusterState::new();
        register(&mut state, 1);
        register(&mut state, 2);
        create(&mut state, "a");
        let before = state.clone();
        assert_eq!(
            create(&mut state, "a"),
            ControllerReply::Rejected(Rejection::TopicAlreadyExists("a".into()))
        );
        assert_eq!(state, before);
    }

    #[test]
    fn stale_leader_reports_are_ignored() {
        let mut state = ClusterState::new();
        register(&mut state, 1);
        register(&mut state, 2);
        create(&mut state, "a");
        let update = |leader, term| ControllerCommand::UpdateLeaders {
            updates: vec![LeaderUpdate {
                group_id: 1,
                leader,
                term,
                isr: vec![leader],
            }],
        };
        state.apply(update(2, 5));
        state.apply(update(1, 4));
        let (_, _, p) = state.partition_by_group(1).expect("exists");
        assert_eq!((p.leader, p.leader_term), (Some(2), 5));
    }

    #[test]
    fn invalid_topics_are_refused_when_applied() {
        let mut state = ClusterState::new();
        register(&mut state, 1);
        for (name, partitions) in [
            ("ok", 0),
            ("ok", MAX_PARTITIONS + 1),
            ("bad/name", 1),
            ("", 1),
        ] {
            let reply = state.apply(ControllerCommand::CreateTopic {
                name: name.into(),
                partitions,
                replication_factor: 1,
                configs: BTreeMap::new(),
            });
            assert!(
                matches!(reply, ControllerReply::Rejected(Rejection::InvalidTopic(_))),
                "{name} {partitions}"
            );
        }
        assert!(state.topics.is_empty());
    }

    #[test]
    fn fenced_brokers_are_down_until_they_register_again() {
        let mut state = ClusterState::new();
        register(&mut state, 1);
        state.apply(ControllerCommand::FenceBrokers { ids: vec![1] });
        assert!(state.live_brokers().is_empty());
        register(&mut state, 1);
        assert_eq!(state.live_brokers(), vec![1]);
    }

    #[test]
    fn producer_ids_are_handed_out_once() {
        let mut state = ClusterState::new();
        let ids: Vec<_> = (0..3)
            .map(|_| state.apply(ControllerCommand::AllocateProducerId))
            .collect();
        assert_eq!(
            ids,
            vec![
                ControllerReply::ProducerId(1),
                ControllerReply::ProducerId(2),
                ControllerReply::ProducerId(3)
            ]
        );
    }
}
