//! Hand-offs over real sockets on loopback (docs/design.md 11.8): what a
//! leaving owner's or a conflict loser's `deallocated` returns reaches the
//! next owner's `allocated` or the winner's `prolonged`; an owner that dies
//! hands nothing off, and its successor is told there was none.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use minishard::{CallbackError, Callbacks, Cluster, Config, HandOff, NodeId, ReleaseReason};

const WAIT: Duration = Duration::from_secs(15);

/// What a node's application received, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Got {
    Allocated(u32, Option<(String, Vec<u8>)>),
    Prolonged(String, Option<(String, Vec<u8>)>),
}

fn got(hand_off: Option<HandOff>) -> Option<(String, Vec<u8>)> {
    hand_off.map(|h| (h.from.to_string(), h.data))
}

/// Keeps for its shard the bytes it was handed (or its own name) and hands
/// them on, with its own name added, when it gives the shard up.
struct Store {
    me: String,
    members: Vec<String>,
    shards: u32,
    log: Arc<Mutex<Vec<Got>>>,
}

impl Callbacks for Store {
    type State = Vec<u8>;
    fn nodes(&mut self, _: &str) -> Result<Vec<String>, CallbackError> {
        Ok(self.members.clone())
    }
    fn shard_count(&mut self, _: &str) -> Result<u32, CallbackError> {
        Ok(self.shards)
    }
    fn allocated(&mut self, _: &str, _: u32, _: u64) -> Result<Vec<u8>, CallbackError> {
        unreachable!("allocated_with_hand_off is overridden")
    }
    fn allocated_with_hand_off(
        &mut self,
        _: &str,
        shard: u32,
        _: u64,
        hand_off: Option<HandOff>,
    ) -> Result<Vec<u8>, CallbackError> {
        let state = hand_off
            .as_ref()
            .map_or_else(|| self.me.clone().into_bytes(), |h| h.data.clone());
        self.log
            .lock()
            .unwrap()
            .push(Got::Allocated(shard, got(hand_off)));
        Ok(state)
    }
    fn score(&mut self, _: &mut Vec<u8>) -> Result<i64, CallbackError> {
        Ok(0)
    }
    fn takes_hand_offs(&self) -> bool {
        true
    }
    fn prolonged(&mut self, _: &NodeId, _: &mut Vec<u8>, _: u64) -> Result<(), CallbackError> {
        unreachable!("prolonged_with_hand_off is overridden")
    }
    fn prolonged_with_hand_off(
        &mut self,
        loser: &NodeId,
        _: &mut Vec<u8>,
        _: u64,
        hand_off: Option<HandOff>,
    ) -> Result<(), CallbackError> {
        self.log
            .lock()
            .unwrap()
            .push(Got::Prolonged(loser.to_string(), got(hand_off)));
        Ok(())
    }
    fn deallocated(&mut self, _: Option<&NodeId>, _: ReleaseReason, _: Vec<u8>) {
        unreachable!("deallocated_with_hand_off is overridden")
    }
    fn deallocated_with_hand_off(
        &mut self,
        _: Option<&NodeId>,
        _: ReleaseReason,
        mut state: Vec<u8>,
    ) -> Option<Vec<u8>> {
        state.extend_from_slice(format!(" via {}", self.me).as_bytes());
        Some(state)
    }
}

struct Nodes {
    addresses: Vec<String>,
    clusters: Vec<Option<Cluster>>,
    logs: Vec<Arc<Mutex<Vec<Got>>>>,
}

impl Nodes {
    fn start(name: &str, n: usize, shards: u32) -> Nodes {
        let addresses = free_addresses(n);
        let logs: Vec<_> = (0..n).map(|_| Arc::default()).collect();
        let clusters = (0..n)
            .map(|i| {
                let mut config = Config::new(addresses[i].clone(), COOKIE.to_vec());
                config.timings = fast();
                // Whether the bytes arrive is the question, not how fast: a
                // loaded machine must not turn a late hand-off into none.
                config.hand_off_wait = Duration::from_secs(10);
                let store = Store {
                    me: addresses[i].clone(),
                    members: addresses.clone(),
                    shards,
                    log: Arc::clone(&logs[i]),
                };
                Some(Cluster::join(name, store, config).unwrap())
            })
            .collect();
        Nodes {
            addresses,
            clusters,
            logs,
        }
    }

    fn cluster(&self, i: usize) -> &Cluster {
        self.clusters[i].as_ref().unwrap()
    }

    fn owner(&self, viewer: usize, shard: u32) -> Option<usize> {
        let node = self.cluster(viewer).get_node(shard)?;
        self.addresses.iter().position(|a| a == node.as_str())
    }

    fn converged(&self, shards: u32) -> bool {
        let running: Vec<usize> = (0..self.clusters.len())
            .filter(|i| self.clusters[*i].is_some())
            .collect();
        (0..shards).all(|s| {
            let first = self.owner(running[0], s);
            first.is_some() && running.iter().all(|i| self.owner(*i, s) == first)
        })
    }

    fn log(&self, i: usize) -> Vec<Got> {
        self.logs[i].lock().unwrap().clone()
    }

    fn cut(&self, a: &[usize], b: &[usize]) {
        for &i in a {
            for &j in b {
                let (ni, nj) = (
                    NodeId::parse(&self.addresses[i]).unwrap(),
                    NodeId::parse(&self.addresses[j]).unwrap(),
                );
                self.cluster(i).cut(&nj);
                self.cluster(j).cut(&ni);
            }
        }
    }
}

#[test]
fn a_leaving_owner_hands_its_shard_data_to_the_standby_that_takes_it() {
    let nodes = Nodes::start("hand-off-leave", 3, 2);
    assert!(eventually(WAIT, || nodes.converged(2)));
    let owner = nodes.owner(0, 0).unwrap();
    let standby = (0..3)
        .find(|i| nodes.owner(0, 0) != Some(*i) && nodes.owner(0, 1) != Some(*i))
        .unwrap();
    nodes.cluster(owner).leave().unwrap();
    let me = &nodes.addresses[owner];
    let wanted = Got::Allocated(0, Some((me.clone(), format!("{me} via {me}").into_bytes())));
    assert!(
        eventually(WAIT, || nodes.log(standby).contains(&wanted)),
        "the standby got {:?}, not {wanted:?}",
        nodes.log(standby)
    );
}

#[test]
fn a_conflicts_loser_hands_its_data_to_the_winner_in_prolonged() {
    let nodes = Nodes::start("hand-off-conflict", 4, 1);
    assert!(eventually(WAIT, || nodes.converged(1)));
    let first = nodes.owner(0, 0).unwrap();
    let (a, b): (Vec<usize>, Vec<usize>) = if first < 2 {
        (vec![0, 1], vec![2, 3])
    } else {
        (vec![2, 3], vec![0, 1])
    };
    nodes.cut(&a, &b);
    // The side without the owner takes the shard over after its grace.
    assert!(eventually(WAIT, || nodes
        .owner(b[0], 0)
        .is_some_and(|o| b.contains(&o))));
    let second = nodes.owner(b[0], 0).unwrap();
    for c in nodes.clusters.iter().flatten() {
        c.heal_all();
    }
    assert!(eventually(WAIT, || nodes.converged(1)));
    let winner = nodes.owner(0, 0).unwrap();
    let loser = if winner == first { second } else { first };
    let name = &nodes.addresses[loser];
    let wanted = Got::Prolonged(
        name.clone(),
        Some((name.clone(), format!("{name} via {name}").into_bytes())),
    );
    assert!(
        eventually(WAIT, || nodes.log(winner).contains(&wanted)),
        "the winner got {:?}, not {wanted:?}",
        nodes.log(winner)
    );
}

#[test]
fn an_owner_that_dies_hands_nothing_off_and_its_successor_is_told_so() {
    let mut nodes = Nodes::start("hand-off-crash", 3, 2);
    assert!(eventually(WAIT, || nodes.converged(2)));
    let owner = nodes.owner(0, 0).unwrap();
    let standby = (0..3)
        .find(|i| nodes.owner(0, 0) != Some(*i) && nodes.owner(0, 1) != Some(*i))
        .unwrap();
    nodes.clusters[owner].take().unwrap().crash();
    assert!(
        eventually(WAIT, || nodes
            .log(standby)
            .contains(&Got::Allocated(0, None))),
        "the standby got {:?}",
        nodes.log(standby)
    );
}
