//! The broker-to-broker network: one [`LinkProxy`] per ordered pair of brokers, and the
//! topologies a fault asks for (isolate a broker, split the cluster, bridge it, slow or
//! lossy links), always applied to both directions of a link.

use std::collections::BTreeMap;

use crate::proxy::{LinkProxy, LinkState};

pub struct Network {
    /// `(from, to)` → the proxy `from` dials to reach `to`.
    links: BTreeMap<(u64, u64), LinkProxy>,
}

impl Network {
    /// Proxies for every ordered pair of the brokers in `addrs` (id → advertised address).
    pub async fn start(addrs: &BTreeMap<u64, String>) -> anyhow::Result<Network> {
        let mut links = BTreeMap::new();
        for from in addrs.keys() {
            for (to, target) in addrs {
                if from != to {
                    links.insert((*from, *to), LinkProxy::start(target.clone()).await?);
                }
            }
        }
        Ok(Network { links })
    }

    /// The `--peer-route` flags of broker `from`: each peer's address via its proxy.
    pub fn routes_for(&self, from: u64, addrs: &BTreeMap<u64, String>) -> Vec<String> {
        self.links
            .iter()
            .filter(|((f, _), _)| *f == from)
            .filter_map(|((_, to), proxy)| {
                Some(format!("--peer-route={}={}", addrs.get(to)?, proxy.addr()))
            })
            .collect()
    }

    fn set_pair(&self, a: u64, b: u64, state: LinkState) {
        for key in [(a, b), (b, a)] {
            if let Some(link) = self.links.get(&key) {
                link.set(state);
            }
        }
    }

    /// Every link back up.
    pub fn heal(&self) {
        for link in self.links.values() {
            link.set(LinkState::Up);
        }
    }

    /// Cuts every link between different `sides`; links within a side stay up.
    pub fn partition(&self, sides: &[Vec<u64>]) {
        let side_of = |id: u64| sides.iter().position(|s| s.contains(&id));
        for &(a, b) in self.links.keys() {
            let state = if side_of(a) == side_of(b) {
                LinkState::Up
            } else {
                LinkState::Down
            };
            self.set_pair(a, b, state);
        }
    }

    /// Cuts only the link between `a` and `b` (for a bridge: A-B and B-C up, A-C down).
    pub fn cut(&self, a: u64, b: u64) {
        self.set_pair(a, b, LinkState::Down);
    }

    /// Puts `state` on every link of broker `id`.
    pub fn degrade(&self, id: u64, state: LinkState) {
        let peers: Vec<u64> = self
            .links
            .keys()
            .filter(|(from, _)| *from == id)
            .map(|(_, to)| *to)
            .collect();
        for peer in peers {
            self.set_pair(id, peer, state);
        }
    }

    /// Whether every link is up.
    pub fn is_healed(&self) -> bool {
        self.links.values().all(|l| l.state() == LinkState::Up)
    }
}
