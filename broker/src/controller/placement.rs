//! Replica placement for new topics: spread replicas and preferred leaders evenly over
//! the live brokers, counting what existing topics already put on each broker.

use std::collections::BTreeMap;

use super::state::ClusterState;

/// Why replicas could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum PlacementError {
    #[error("replication factor {requested} exceeds the {live} live brokers")]
    NotEnoughBrokers { requested: u32, live: usize },
}

/// Chooses `replication_factor` distinct live brokers for each of `partitions`
/// partitions. The first replica of each list is the preferred leader: it goes to the
/// broker leading the fewest partitions, the others to the brokers holding the fewest
/// replicas (ties go to the lower id), so leaders and data both spread evenly.
pub fn place_replicas(
    state: &ClusterState,
    partitions: u32,
    replication_factor: u32,
) -> Result<Vec<Vec<u64>>, PlacementError> {
    let live = state.live_brokers();
    if replication_factor as usize > live.len() || replication_factor == 0 {
        return Err(PlacementError::NotEnoughBrokers {
            requested: replication_factor,
            live: live.len(),
        });
    }
    let mut leaders: BTreeMap<u64, usize> = live.iter().map(|id| (*id, 0)).collect();
    let mut replicas: BTreeMap<u64, usize> = leaders.clone();
    for partition in state.topics.values().flat_map(|t| &t.partitions) {
        if let Some(first) = partition.replicas.first() {
            leaders.entry(*first).and_modify(|n| *n += 1);
        }
        for id in &partition.replicas {
            replicas.entry(*id).and_modify(|n| *n += 1);
        }
    }
    let mut placement = Vec::with_capacity(partitions as usize);
    for _ in 0..partitions {
        let leader = *live
            .iter()
            .min_by_key(|id| (leaders[id], replicas[id], **id))
            .expect("at least replication_factor >= 1 live brokers");
        let mut chosen = vec![leader];
        while chosen.len() < replication_factor as usize {
            let next = *live
                .iter()
                .filter(|id| !chosen.contains(id))
                .min_by_key(|id| (replicas[id], leaders[id], **id))
                .expect("enough live brokers were checked above");
            chosen.push(next);
        }
        *leaders.entry(leader).or_default() += 1;
        for id in &chosen {
            *replicas.entry(*id).or_default() += 1;
        }
        placement.push(chosen);
    }
    Ok(placement)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::state::ControllerCommand;

    fn cluster(n: u64) -> ClusterState {
        let mut state = ClusterState::new();
        for id in 1..=n {
            state.apply(ControllerCommand::RegisterBroker {
                id,
                addr: format!("h:{id}"),
                roles: vec![],
                rack: String::new(),
            });
        }
        state
    }

    #[test]
    fn leaders_and_replicas_spread_evenly() {
        let state = cluster(3);
        let placement = place_replicas(&state, 6, 3).expect("placed");
        let mut leaders = BTreeMap::new();
        for replicas in &placement {
            let mut sorted = replicas.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 3, "distinct replicas");
            *leaders.entry(replicas[0]).or_insert(0) += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
    }

    #[test]
    fn new_broker_gets_the_next_topic() {
        let mut state = cluster(3);
        state.apply(ControllerCommand::CreateTopic {
            name: "a".into(),
            partitions: 3,
            replication_factor: 3,
            configs: Default::default(),
        });
        state.apply(ControllerCommand::RegisterBroker {
            id: 4,
            addr: "h:4".into(),
            roles: vec![],
            rack: String::new(),
        });
        let placement = place_replicas(&state, 1, 1).expect("placed");
        assert_eq!(placement, vec![vec![4]]);
    }

    #[test]
    fn too_high_replication_factor_is_refused() {
        let state = cluster(3);
        assert_eq!(
            place_replicas(&state, 1, 4),
            Err(PlacementError::NotEnoughBrokers {
                requested: 4,
                live: 3
            })
        );
    }
}
