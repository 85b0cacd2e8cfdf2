//! Hand-offs over real sockets on loopback (docs/design.md 11.8): what a
//! leaving owner's or a conflict loser's `deallocated` returns reaches the
//! next owner's `allocated` or the winner's `prolonged`, also when it takes
//! many chunks still arriving as the next owner starts; an owner that dies
//! hands nothing off, and its successor is told there was none; a receiver
//! that dies takes the bytes with it.

mod common;

use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex};
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

/// Where a callback waits while a test holds it, so the test can act (kill
/// a node) while it knows the callback is under way.
#[derive(Default)]
struct Door {
    state: Mutex<DoorState>,
    changed: Condvar,
}

#[derive(Default)]
struct DoorState {
    shut: bool,
    /// Who came to the door while it was shut, in order.
    held: Vec<String>,
}

impl Door {
    fn shut(&self) {
        self.state.lock().unwrap().shut = true;
    }

    fn open(&self) {
        self.state.lock().unwrap().shut = false;
        self.changed.notify_all();
    }

    fn pass(&self, who: &str) {
        let mut state = self.state.lock().unwrap();
        if state.shut {
            state.held.push(who.to_string());
        }
        while state.shut {
            state = self.changed.wait(state).unwrap();
        }
    }

    fn held(&self) -> Vec<String> {
        self.state.lock().unwrap().held.clone()
    }
}

/// Keeps for its shard the bytes it was handed (or its own name, followed by
/// `filler` bytes) and hands them on, with its own name added, when it gives
/// the shard up.
struct Store {
    me: String,
    members: Vec<String>,
    shards: u32,
    log: Arc<Mutex<Vec<Got>>>,
    score: Arc<Mutex<i64>>,
    filler: usize,
    /// Held after `allocated` took its hand-off, before it returns.
    allocating: Arc<Door>,
    /// Held in `deallocated` after a lost conflict, before it returns.
    losing: Arc<Door>,
}

/// `len` bytes that are not all alike, so a chunk out of place shows.
fn filler(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
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
        let state = hand_off.as_ref().map_or_else(
            || [self.me.as_bytes(), &filler(self.filler)].concat(),
            |h| h.data.clone(),
        );
        self.log
            .lock()
            .unwrap()
            .push(Got::Allocated(shard, got(hand_off)));
        self.allocating.pass(&self.me);
        Ok(state)
    }
    fn score(&mut self, _: &mut Vec<u8>) -> Result<i64, CallbackError> {
        Ok(*self.score.lock().unwrap())
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
        reason: ReleaseReason,
        mut state: Vec<u8>,
    ) -> Option<Vec<u8>> {
        if reason == ReleaseReason::LostConflict {
            self.losing.pass(&self.me);
        }
        state.extend_from_slice(format!(" via {}", self.me).as_bytes());
        Some(state)
    }
}

struct Nodes {
    addresses: Vec<String>,
    clusters: Vec<Option<Cluster>>,
    logs: Vec<Arc<Mutex<Vec<Got>>>>,
    scores: Vec<Arc<Mutex<i64>>>,
    allocating: Arc<Door>,
    losing: Arc<Door>,
}

impl Nodes {
    fn start(name: &str, n: usize, shards: u32) -> Nodes {
        Nodes::start_with(name, n, shards, 0)
    }

    /// Each node's own data is its name and `filler` bytes.
    fn start_with(name: &str, n: usize, shards: u32, filler: usize) -> Nodes {
        let addresses = free_addresses(n);
        let logs: Vec<_> = (0..n).map(|_| Arc::default()).collect();
        let scores: Vec<_> = (0..n).map(|_| Arc::default()).collect();
        let allocating = Arc::new(Door::default());
        let losing = Arc::new(Door::default());
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
                    score: Arc::clone(&scores[i]),
                    filler,
                    allocating: Arc::clone(&allocating),
                    losing: Arc::clone(&losing),
                };
                Some(Cluster::join(name, store, config).unwrap())
            })
            .collect();
        Nodes {
            addresses,
            clusters,
            logs,
            scores,
            allocating,
            losing,
        }
    }

    fn index(&self, address: &str) -> usize {
        self.addresses.iter().position(|a| a == address).unwrap()
    }

    /// Whether node `i` was told `what` after its first `after` entries.
    fn told_since(&self, i: usize, after: usize, what: impl Fn(&Got) -> bool) -> bool {
        self.logs[i].lock().unwrap().iter().skip(after).any(what)
    }

    /// The node, other than `except`, whose `allocated` of `shard` ran after
    /// its first `after[i]` entries, with what it got.
    fn allocated_since(
        &self,
        after: &[usize],
        except: &[usize],
        shard: u32,
    ) -> Option<(usize, Got)> {
        (0..self.addresses.len())
            .filter(|i| !except.contains(i))
            .find_map(|i| {
                let log = self.logs[i].lock().unwrap();
                log.iter()
                    .skip(after[i])
                    .find(|g| matches!(g, Got::Allocated(s, _) if *s == shard))
                    .map(|g| (i, g.clone()))
            })
    }

    fn log_lengths(&self) -> Vec<usize> {
        self.logs.iter().map(|l| l.lock().unwrap().len()).collect()
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

    /// Kills node `i`, which may be inside a callback held at a door: the
    /// kill returns once the node's callback thread ends, so it runs aside,
    /// and this returns once the node no longer listens (it is dead to its
    /// peers).
    fn crash_aside(&mut self, i: usize) -> std::thread::JoinHandle<()> {
        let cluster = self.clusters[i].take().unwrap();
        let killing = std::thread::spawn(move || cluster.crash());
        let address = &self.addresses[i];
        assert!(
            eventually(WAIT, || TcpStream::connect(address).is_err()),
            "{address} still listens after its crash"
        );
        killing
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

impl Nodes {
    /// Restores every link but the one between `x` and `y`.
    fn heal_all_but(&self, x: usize, y: usize) {
        for i in 0..self.addresses.len() {
            for j in 0..self.addresses.len() {
                if i != j && (i, j) != (x, y) && (i, j) != (y, x) {
                    if let Some(c) = &self.clusters[i] {
                        c.heal(&NodeId::parse(&self.addresses[j]).unwrap());
                    }
                }
            }
        }
    }

    fn heal_link(&self, x: usize, y: usize) {
        let id = |i: usize| NodeId::parse(&self.addresses[i]).unwrap();
        self.cluster(x).heal(&id(y));
        self.cluster(y).heal(&id(x));
    }
}

impl Drop for Nodes {
    /// A test that failed with a door shut must not leave a callback
    /// waiting for ever.
    fn drop(&mut self) {
        self.allocating.open();
        self.losing.open();
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

#[test]
fn a_hand_off_of_many_chunks_still_arriving_reaches_allocated_whole() {
    // 16 MiB: 64 chunks of 256 KiB on the request lane, while the record
    // that frees the shard overtakes them on the core lane; the standby
    // claims within `settle` of reading it, long before the last chunk.
    const SIZE: usize = 16 << 20;
    let nodes = Nodes::start_with("hand-off-large", 3, 2, SIZE);
    assert!(eventually(WAIT, || nodes.converged(2)));
    let owner = nodes.owner(0, 0).unwrap();
    let standby = (0..3)
        .find(|i| nodes.owner(0, 0) != Some(*i) && nodes.owner(0, 1) != Some(*i))
        .unwrap();
    let after = nodes.log_lengths();
    nodes.cluster(owner).leave().unwrap();
    let me = &nodes.addresses[owner];
    let wanted = [
        me.as_bytes(),
        &filler(SIZE),
        format!(" via {me}").as_bytes(),
    ]
    .concat();
    assert!(eventually(WAIT, || nodes
        .allocated_since(&after, &[owner], 0)
        .is_some()));
    let (next, got) = nodes.allocated_since(&after, &[owner], 0).unwrap();
    assert_eq!(next, standby, "the standby took the shard");
    match got {
        Got::Allocated(_, Some((from, data))) => {
            assert_eq!(&from, me);
            assert!(
                data == wanted,
                "allocated got {} bytes, not the {} handed off (or not the same)",
                data.len(),
                wanted.len()
            );
        }
        other => panic!("allocated got {other:?}, not the hand-off"),
    }
}

#[test]
fn a_conflicts_winner_that_dies_before_the_losers_bytes_arrive_loses_them() {
    let mut nodes = Nodes::start("hand-off-winner-dies", 4, 1);
    assert!(eventually(WAIT, || nodes.converged(1)));
    let first = nodes.owner(0, 0).unwrap();
    // The first owner splits off with the lowest other node, so that after
    // the first owner (the winner) dies, that node, not the loser, is first
    // in line for the shard: the loser's bytes could only reach it if they
    // went somewhere they must not.
    let mut others: Vec<usize> = (0..4).filter(|i| *i != first).collect();
    others.sort_by_key(|i| NodeId::parse(&nodes.addresses[*i]).unwrap());
    let a = vec![first, others[0]];
    let b = vec![others[1], others[2]];
    nodes.cut(&a, &b);
    assert!(eventually(WAIT, || nodes
        .owner(b[0], 0)
        .is_some_and(|o| b.contains(&o))));
    let second = nodes.owner(b[0], 0).unwrap();
    // The first owner wins the conflict; the loser is held in its
    // `deallocated`, so its bytes are not on their way yet.
    *nodes.scores[first].lock().unwrap() = 10;
    nodes.losing.shut();
    for c in nodes.clusters.iter().flatten() {
        c.heal_all();
    }
    assert!(eventually(WAIT, || !nodes.losing.held().is_empty()));
    assert_eq!(
        nodes.losing.held(),
        vec![nodes.addresses[second].clone()],
        "the second owner lost"
    );
    // The winner waits in `prolonged` for the loser's word; killed there, it
    // ends once that wait does (`hand_off_wait`), which nothing here needs.
    let _killing = nodes.crash_aside(first);
    let after = nodes.log_lengths();
    nodes.losing.open();
    // Someone else takes the shard once the winner's grace ends, and is
    // told there was nothing handed off.
    assert!(
        eventually(WAIT, || nodes
            .allocated_since(&after, &[first], 0)
            .is_some()),
        "nobody took the shard after the winner died: {:?}",
        (0..4).map(|i| nodes.log(i)).collect::<Vec<_>>()
    );
    let (next, got) = nodes.allocated_since(&after, &[first], 0).unwrap();
    assert_eq!(
        got,
        Got::Allocated(0, None),
        "{} took the shard",
        nodes.addresses[next]
    );
    let loser = &nodes.addresses[second];
    for i in (0..4).filter(|i| *i != first) {
        assert!(
            !nodes.told_since(i, after[i], |g| matches!(g,
                Got::Allocated(_, Some((from, _))) | Got::Prolonged(_, Some((from, _)))
                    if from == loser)),
            "{} got the loser's bytes: {:?}",
            nodes.addresses[i],
            nodes.log(i)
        );
    }
}

#[test]
fn after_a_leave_a_receiver_that_dies_takes_its_copy_along_and_another_standby_uses_its_own() {
    let mut nodes = Nodes::start("hand-off-receiver-dies", 4, 1);
    assert!(eventually(WAIT, || nodes.converged(1)));
    let owner = nodes.owner(0, 0).unwrap();
    nodes.allocating.shut();
    let after = nodes.log_lengths();
    nodes.cluster(owner).leave().unwrap();
    // The standby that claims the shard dies inside its `allocated`: the
    // bytes it received die with it.
    assert!(eventually(WAIT, || !nodes.allocating.held().is_empty()));
    let receiver = nodes.index(&nodes.allocating.held()[0]);
    let killing = nodes.crash_aside(receiver);
    nodes.allocating.open();
    killing.join().unwrap();
    // The next standby to claim it got the leaving owner's bytes too, since
    // a leaving node sends them to every standby (docs/design.md 11.8).
    assert!(
        eventually(WAIT, || nodes
            .allocated_since(&after, &[owner, receiver], 0)
            .is_some()),
        "nobody took the shard after the receiver died: {:?}",
        (0..4).map(|i| nodes.log(i)).collect::<Vec<_>>()
    );
    let (_, got) = nodes
        .allocated_since(&after, &[owner, receiver], 0)
        .unwrap();
    let me = &nodes.addresses[owner];
    assert_eq!(
        got,
        Got::Allocated(0, Some((me.clone(), format!("{me} via {me}").into_bytes())))
    );
}

#[test]
fn a_losers_bytes_reach_a_winner_it_reconnects_to_only_after_the_conflict_ended() {
    let nodes = Nodes::start("hand-off-reconnect", 4, 1);
    assert!(eventually(WAIT, || nodes.converged(1)));
    let first = nodes.owner(0, 0).unwrap();
    let others: Vec<usize> = (0..4).filter(|i| *i != first).collect();
    let (a, b) = (vec![first, others[0]], vec![others[1], others[2]]);
    nodes.cut(&a, &b);
    assert!(eventually(WAIT, || nodes
        .owner(b[0], 0)
        .is_some_and(|o| b.contains(&o))));
    let second = nodes.owner(b[0], 0).unwrap();
    *nodes.scores[first].lock().unwrap() = 10;
    nodes.losing.shut();
    // Every link but the two owners' comes back: they resolve the conflict
    // through the other nodes, and the loser gives up while it has no
    // connection to its winner, as after a heal where the others redial
    // first.
    nodes.heal_all_but(first, second);
    assert!(
        eventually(WAIT, || !nodes.losing.held().is_empty()),
        "the conflict was not resolved: {:?}",
        (0..4).map(|i| nodes.log(i)).collect::<Vec<_>>()
    );
    nodes.heal_link(first, second);
    nodes.losing.open();
    let name = &nodes.addresses[second];
    let wanted = Got::Prolonged(
        name.clone(),
        Some((name.clone(), format!("{name} via {name}").into_bytes())),
    );
    assert!(
        eventually(WAIT, || nodes
            .log(first)
            .iter()
            .any(|g| matches!(g, Got::Prolonged(..)))),
        "the winner was never prolonged: {:?}",
        nodes.log(first)
    );
    assert!(
        eventually(WAIT, || nodes.log(first).contains(&wanted)),
        "the winner got {:?}, not {wanted:?}",
        nodes.log(first)
    );
}
