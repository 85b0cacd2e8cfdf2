//! One owner per shard on topologies other than a full mesh or a clean
//! split, over real sockets on loopback (docs/design.md 6.1, 6.3, 6.6, 7.9): a
//! chain and a ring (links cut with the testing hooks), a member removed
//! from the member lists with its own list fresh or stale, and a winner that
//! leaves while its loser waits for its acknowledgement.
//!
//! Every node's callbacks write to one shared ledger, which fails the test
//! the instant two nodes hold a shard at once or an epoch is issued twice.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{eventually, fast, free_addresses, Journal, Told, COOKIE};
use minishard::{
    CallbackError, Callbacks, Cluster, Config, Health, MeshNotice, NodeId, NodeState,
    ReleaseReason, Timings,
};

/// Who holds which shard, across every node of a test, checked at every
/// `allocated` and `deallocated` (they run in the nodes' callbacks, so the
/// order they reach the ledger is the order they happened in).
#[derive(Clone, Default)]
struct Ledger(Arc<Mutex<LedgerState>>);

#[derive(Default)]
struct LedgerState {
    /// A test that splits the cluster on purpose: two sides may both hold
    /// a shard until the heal, each from the epoch both last saw.
    split_on_purpose: bool,
    /// shard -> (node, epoch) holding it now.
    holders: HashMap<u32, Vec<(String, u64)>>,
    /// shard -> every epoch issued for it.
    issued: HashMap<u32, Vec<u64>>,
    /// shard -> the largest epoch of an allocation that has ended.
    ended: HashMap<u32, u64>,
    violations: Vec<String>,
}

impl Ledger {
    fn allocated(&self, node: &str, shard: u32, epoch: u64) {
        let mut l = self.0.lock().unwrap();
        let holders = l.holders.get(&shard).cloned().unwrap_or_default();
        if !holders.is_empty() && !l.split_on_purpose {
            l.violations.push(format!(
                "{node} allocated shard {shard} (epoch {epoch}) while {holders:?} held it"
            ));
        }
        // Epochs carry the issuer's rank: unique even across a split.
        if l.issued.get(&shard).is_some_and(|e| e.contains(&epoch)) {
            l.violations.push(format!(
                "epoch {epoch} of shard {shard} issued twice ({node})"
            ));
        }
        if let Some(&top) = l.ended.get(&shard) {
            if epoch <= top {
                l.violations.push(format!(
                    "{node} allocated shard {shard} at epoch {epoch}, not above {top} which had ended"
                ));
            }
        }
        l.issued.entry(shard).or_default().push(epoch);
        l.holders
            .entry(shard)
            .or_default()
            .push((node.to_owned(), epoch));
    }

    /// A winner's epoch after a conflict: raised above every rival still
    /// holding the shard (so a fenced store takes the winner's writes), and
    /// never one issued before.
    fn prolonged(&self, node: &str, shard: u32, old: u64, epoch: u64) {
        let mut l = self.0.lock().unwrap();
        if epoch < old {
            l.violations.push(format!(
                "{node} prolonged shard {shard} down from {old} to {epoch}"
            ));
        }
        let rivals: Vec<(String, u64)> = l.holders.get(&shard).cloned().unwrap_or_default();
        if let Some((rival, e)) = rivals.iter().find(|(n, e)| n != node && *e >= epoch) {
            l.violations.push(format!(
                "{node} prolonged shard {shard} at epoch {epoch}, not above {rival}'s {e}"
            ));
        }
        if epoch != old {
            if l.issued.get(&shard).is_some_and(|e| e.contains(&epoch)) {
                l.violations.push(format!(
                    "epoch {epoch} of shard {shard} issued twice ({node})"
                ));
            }
            l.issued.entry(shard).or_default().push(epoch);
            if let Some(held) = l.holders.get_mut(&shard) {
                for (n, e) in held.iter_mut() {
                    if n == node {
                        *e = epoch;
                    }
                }
            }
        }
    }

    fn deallocated(&self, node: &str, shard: u32, epoch: u64) {
        let mut l = self.0.lock().unwrap();
        l.holders
            .entry(shard)
            .or_default()
            .retain(|(n, _)| n != node);
        let top = l.ended.entry(shard).or_insert(0);
        *top = (*top).max(epoch);
    }

    fn violations(&self) -> Vec<String> {
        self.0.lock().unwrap().violations.clone()
    }

    fn allow_splits(&self) {
        self.0.lock().unwrap().split_on_purpose = true;
    }
}

/// Holds `score` callbacks back while closed: a test decides when a node's
/// score is ready.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<GateState>, Condvar)>);

#[derive(Default)]
struct GateState {
    closed: bool,
    waiting: usize,
}

impl Gate {
    fn close(&self) {
        self.0 .0.lock().unwrap().closed = true;
    }

    fn open(&self) {
        self.0 .0.lock().unwrap().closed = false;
        self.0 .1.notify_all();
    }

    fn pass(&self) {
        let (state, changed) = &*self.0;
        let mut s = state.lock().unwrap();
        s.waiting += 1;
        changed.notify_all();
        // Never longer than this: a test that fails must not hang.
        let _ = changed
            .wait_timeout_while(s, Duration::from_secs(30), |s| s.closed)
            .unwrap();
    }

    fn waiting(&self) -> usize {
        self.0 .0.lock().unwrap().waiting
    }
}

/// A test application: its own member list, score and gate, a journal,
/// and the shared ledger.
struct TopoApp {
    me: String,
    members: Arc<Mutex<Vec<String>>>,
    shards: u32,
    score: Arc<Mutex<i64>>,
    gate: Gate,
    journal: Journal,
    ledger: Ledger,
    held: Option<(u32, u64)>,
}

impl Callbacks for TopoApp {
    type State = u32;

    fn nodes(&mut self, _cluster: &str) -> Result<Vec<String>, CallbackError> {
        Ok(self.members.lock().unwrap().clone())
    }

    fn shard_count(&mut self, _cluster: &str) -> Result<u32, CallbackError> {
        Ok(self.shards)
    }

    fn allocated(&mut self, _cluster: &str, shard: u32, epoch: u64) -> Result<u32, CallbackError> {
        self.ledger.allocated(&self.me, shard, epoch);
        self.held = Some((shard, epoch));
        self.journal.push(Told::Allocated { shard, epoch });
        Ok(shard)
    }

    fn score(&mut self, _state: &mut u32) -> Result<i64, CallbackError> {
        self.gate.pass();
        let score = *self.score.lock().unwrap();
        self.journal.push(Told::Score(score));
        Ok(score)
    }

    fn prolonged(
        &mut self,
        loser: &NodeId,
        _state: &mut u32,
        epoch: u64,
    ) -> Result<(), CallbackError> {
        if let Some((shard, held)) = self.held.as_mut() {
            self.ledger.prolonged(&self.me, *shard, *held, epoch);
            *held = epoch;
        }
        self.journal.push(Told::Prolonged {
            loser: loser.to_string(),
            epoch,
        });
        Ok(())
    }

    fn deallocated(&mut self, winner: Option<&NodeId>, reason: ReleaseReason, _state: u32) {
        if let Some((shard, epoch)) = self.held.take() {
            self.ledger.deallocated(&self.me, shard, epoch);
        }
        self.journal.push(Told::Deallocated {
            winner: winner.map(|w| w.to_string()),
            reason,
        });
    }

    fn status_changed(&mut self, _cluster: &str, old: Health, new: Health) {
        self.journal.push(Told::Status { old, new });
    }
}

type Notices = Arc<Mutex<Vec<(Instant, MeshNotice)>>>;

struct Member {
    address: String,
    id: NodeId,
    cluster: Option<Cluster>,
    members: Arc<Mutex<Vec<String>>>,
    score: Arc<Mutex<i64>>,
    gate: Gate,
    journal: Journal,
    notices: Notices,
}

/// In-process members on loopback, each with its own member list.
struct Net {
    nodes: Vec<Member>,
    ledger: Ledger,
    timings: Timings,
}

impl Net {
    fn start(name: &str, n: usize, shards: u32, timings: Timings) -> Net {
        let addresses = free_addresses(n);
        let ledger = Ledger::default();
        let mut net = Net {
            nodes: addresses
                .iter()
                .map(|address| Member {
                    address: address.clone(),
                    id: NodeId::parse(address).unwrap(),
                    cluster: None,
                    members: Arc::new(Mutex::new(addresses.clone())),
                    score: Arc::default(),
                    gate: Gate::default(),
                    journal: Journal::default(),
                    notices: Notices::default(),
                })
                .collect(),
            ledger,
            timings,
        };
        for i in 0..n {
            let node = &net.nodes[i];
            let app = TopoApp {
                me: node.address.clone(),
                members: node.members.clone(),
                shards,
                score: node.score.clone(),
                gate: node.gate.clone(),
                journal: node.journal.clone(),
                ledger: net.ledger.clone(),
                held: None,
            };
            let mut config = Config::new(node.address.clone(), COOKIE.to_vec());
            config.timings = timings;
            let notices = node.notices.clone();
            config.notice_hook = Some(Arc::new(move |n: &MeshNotice| {
                notices.lock().unwrap().push((Instant::now(), n.clone()))
            }));
            net.nodes[i].cluster = Some(Cluster::join(name, app, config).expect("join"));
        }
        net
    }

    fn cluster(&self, i: usize) -> &Cluster {
        self.nodes[i].cluster.as_ref().expect("running")
    }

    fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].cluster.is_some())
            .collect()
    }

    fn index_of(&self, node: &NodeId) -> usize {
        self.nodes.iter().position(|n| n.id == *node).unwrap()
    }

    /// Which node owns `shard` in node `viewer`'s view.
    fn owner(&self, viewer: usize, shard: u32) -> Option<usize> {
        self.cluster(viewer)
            .get_node(shard)
            .map(|n| self.index_of(&n))
    }

    /// Cuts the link between a and b, both ways, at both ends.
    fn cut(&self, a: usize, b: usize) {
        self.cluster(a).cut(&self.nodes[b].id);
        self.cluster(b).cut(&self.nodes[a].id);
    }

    fn heal(&self, a: usize, b: usize) {
        self.cluster(a).heal(&self.nodes[b].id);
        self.cluster(b).heal(&self.nodes[a].id);
    }

    fn heal_all(&self) {
        for i in self.running() {
            self.cluster(i).heal_all();
        }
    }

    /// Waits until every node of `group` is available and they all report
    /// the same complete shard map, held within the group.
    fn converged(&self, group: &[usize], timeout: Duration) -> Result<Vec<usize>, String> {
        let shards = self.cluster(group[0]).shard_count();
        let ok = eventually(timeout, || {
            let maps: Vec<Vec<Option<usize>>> = group
                .iter()
                .map(|&i| (0..shards).map(|s| self.owner(i, s)).collect())
                .collect();
            group
                .iter()
                .all(|&i| self.cluster(i).health() == Health::Available)
                && maps.windows(2).all(|w| w[0] == w[1])
                && maps[0]
                    .iter()
                    .all(|o| o.is_some_and(|o| group.contains(&o)))
        });
        if !ok {
            return Err(self.describe(group));
        }
        Ok((0..shards)
            .map(|s| self.owner(group[0], s).unwrap())
            .collect())
    }

    /// Each node's health, view of the owners and own shard, for messages.
    fn describe(&self, group: &[usize]) -> String {
        let shards = self.cluster(group[0]).shard_count();
        group
            .iter()
            .map(|&i| {
                let c = self.cluster(i);
                let owners: Vec<Option<usize>> = (0..shards).map(|s| self.owner(i, s)).collect();
                format!(
                    "node {i}: {} owners {owners:?} mine {:?}",
                    c.health(),
                    c.my_shard()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Whether node a was told its connection to b ended, after `since`.
    fn saw_down(&self, a: usize, b: usize, since: Instant) -> bool {
        let peer = &self.nodes[b].id;
        self.nodes[a].notices.lock().unwrap().iter().any(|(at, n)| {
            *at >= since && matches!(n, MeshNotice::PeerDown { peer: p, .. } if p == peer)
        })
    }

    /// Whether node a refused b after `since`.
    fn refused(&self, a: usize, b: usize, since: Instant) -> bool {
        let peer = self.nodes[b].address.as_str();
        self.nodes[a].notices.lock().unwrap().iter().any(|(at, n)| {
            *at >= since && matches!(n, MeshNotice::Refused { peer: p, .. } if p == peer)
        })
    }

    /// What node i was told after `since`.
    fn told_since(&self, i: usize, since: Instant) -> Vec<Told> {
        self.nodes[i]
            .journal
            .timed()
            .into_iter()
            .filter(|(at, _)| *at >= since)
            .map(|(_, t)| t)
            .collect()
    }

    fn assert_ledger_clean(&self) {
        let violations = self.ledger.violations();
        assert!(violations.is_empty(), "{violations:#?}");
    }
}

/// Checks `condition` every few milliseconds for `window`; the first time
/// it does not hold, returns what `describe` says then.
fn holds_throughout(
    window: Duration,
    mut condition: impl FnMut() -> bool,
    describe: impl Fn() -> String,
) -> Result<(), String> {
    let end = Instant::now() + window;
    while Instant::now() < end {
        if !condition() {
            return Err(describe());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// How long a topology must stand still for a wrong claim to show: a lost
/// peer's shard moves after heartbeat_timeout + node_grace, so three times
/// that, with the health flapping it causes.
fn standing(t: &Timings) -> Duration {
    (t.heartbeat_timeout + t.node_grace) * 3
}

/// A topology standing still: after the cut links dropped, nothing moves,
/// each node keeps its view of the owners, and (once the cuts were seen)
/// nobody's health changes.
fn keeps_still(net: &Net, cuts: &[(usize, usize)], label: &str) {
    let group = net.running();
    let shards = net.cluster(group[0]).shard_count();
    let owners = net.converged(&group, Duration::from_secs(10)).unwrap();
    let cut_at = Instant::now();
    for &(a, b) in cuts {
        net.cut(a, b);
    }
    // The cut links really dropped (heartbeat timeout) at both ends.
    let dropped = eventually(Duration::from_secs(5), || {
        cuts.iter()
            .all(|&(a, b)| net.saw_down(a, b, cut_at) && net.saw_down(b, a, cut_at))
    });
    assert!(dropped, "{label}: the cut links did not all drop");
    let view_kept = holds_throughout(
        standing(&net.timings),
        || {
            group
                .iter()
                .all(|&i| (0..shards).all(|s| net.owner(i, s) == Some(owners[s as usize])))
        },
        || net.describe(&group),
    );
    assert!(
        view_kept.is_ok(),
        "{label}: an owner changed in some node's view while the topology stood still (owners were {owners:?}): {}",
        view_kept.unwrap_err()
    );
    net.assert_ledger_clean();
    for &i in &group {
        let told = net.told_since(i, cut_at);
        let moved: Vec<&Told> = told
            .iter()
            .filter(|t| matches!(t, Told::Allocated { .. } | Told::Deallocated { .. }))
            .collect();
        assert!(moved.is_empty(), "{label}: node {i} was told {moved:?}");
        // Seeing the cut may take a node to `transition` and back; more
        // is health flapping while the topology stands still.
        let flips: Vec<&Told> = told
            .iter()
            .filter(|t| matches!(t, Told::Status { .. }))
            .collect();
        assert!(
            flips.len() <= 2,
            "{label}: node {i}'s health changed {} times while the topology stood still: {flips:?}",
            flips.len()
        );
        assert_eq!(
            net.cluster(i).health(),
            Health::Available,
            "{label}: node {i}"
        );
    }
}

#[test]
fn a_chain_of_four_keeps_one_owner_per_shard_and_nothing_churns() {
    let net = Net::start("chain", 4, 2, fast());
    let owners = net
        .converged(&[0, 1, 2, 3], Duration::from_secs(10))
        .unwrap();
    let (ox, oy) = (owners[0], owners[1]);
    let standbys: Vec<usize> = (0..4).filter(|i| !owners.contains(i)).collect();
    let (s0, s1) = (standbys[0], standbys[1]);
    // Links S0-Ox-S1-Oy only: S0 reaches Oy through two hops.
    keeps_still(&net, &[(s0, s1), (s0, oy), (ox, oy)], "chain S0-Ox-S1-Oy");
    net.heal_all();
    net.converged(&[0, 1, 2, 3], Duration::from_secs(10))
        .unwrap();
    net.assert_ledger_clean();
}

#[test]
fn a_ring_of_six_keeps_one_owner_per_shard_and_nothing_churns() {
    // Each node sees its two neighbours (3 members with itself, as many as
    // shards); the node opposite is three hops away.
    let net = Net::start("ring", 6, 3, fast());
    let chords: Vec<(usize, usize)> = (0..6)
        .flat_map(|a| ((a + 2)..6).map(move |b| (a, b)))
        .filter(|&(a, b)| !(a == 0 && b == 5))
        .collect();
    assert_eq!(chords.len(), 15 - 6);
    keeps_still(&net, &chords, "ring of six");
    net.heal_all();
    net.converged(&[0, 1, 2, 3, 4, 5], Duration::from_secs(10))
        .unwrap();
    net.assert_ledger_clean();
}

/// Timings for the member-list tests: the lists are polled every 100 ms.
fn polling() -> Timings {
    Timings {
        member_poll: Duration::from_millis(100),
        ..fast()
    }
}

/// The owner of shard 0 is dropped from every other member's list (and,
/// with `own_list_updated`, from its own half a grace later).
/// docs/design.md 6.6: it is disconnected at once, its shard stays reserved while it may
/// still hold it, it releases, and only then is the shard re-allocated.
fn remove_the_owner(own_list_updated: bool) {
    let name = if own_list_updated {
        "removed-fresh"
    } else {
        "removed-stale"
    };
    let net = Net::start(name, 5, 2, polling());
    net.converged(&[0, 1, 2, 3, 4], Duration::from_secs(10))
        .unwrap();
    let x = net.owner(0, 0).unwrap();
    let rest: Vec<usize> = (0..5).filter(|&i| i != x).collect();
    let without_x: Vec<String> = rest.iter().map(|&i| net.nodes[i].address.clone()).collect();
    let removed_at = Instant::now();
    for &i in &rest {
        *net.nodes[i].members.lock().unwrap() = without_x.clone();
    }
    let x_id = net.nodes[x].id.clone();
    let all_read = eventually(Duration::from_secs(5), || {
        rest.iter()
            .all(|&i| !net.cluster(i).snapshot().members.contains(&x_id))
    });
    assert!(all_read, "the others never polled their new list");
    if own_list_updated {
        // Half a grace with x still believing it is a member: the others
        // must keep its shard reserved meanwhile.
        std::thread::sleep(net.timings.node_grace / 2);
        *net.nodes[x].members.lock().unwrap() = without_x.clone();
    }
    let released = eventually(Duration::from_secs(10), || {
        net.nodes[x]
            .journal
            .count(|t| matches!(t, Told::Deallocated { .. }))
            > 0
    });
    net.assert_ledger_clean();
    assert!(
        released,
        "the removed owner never released its shard: {}",
        net.describe(&[0, 1, 2, 3, 4])
    );
    let map = net.converged(&rest, Duration::from_secs(10)).unwrap();
    assert!(!map.contains(&x));
    // Never two holders at once (the ledger saw every callback in order).
    net.assert_ledger_clean();
    assert_eq!(
        net.told_since(x, removed_at)
            .into_iter()
            .filter(|t| !matches!(t, Told::Status { .. }))
            .collect::<Vec<_>>(),
        [Told::Deallocated {
            winner: None,
            reason: ReleaseReason::Removed
        }],
        "the removed owner gives its shard up to no one, once, and takes none"
    );
    // Disconnected at once, existing connections too.
    for &i in &rest {
        assert!(
            net.saw_down(i, x, removed_at),
            "node {i} never dropped its connection to the removed node"
        );
    }
    if !own_list_updated {
        // Still claiming to be a member, it is refused from then on, and it
        // holds no shard (a node cut off from every member degrades).
        let refused = eventually(Duration::from_secs(5), || {
            rest.iter().any(|&i| net.refused(i, x, removed_at))
        });
        assert!(refused, "nobody refused the removed member");
        assert_eq!(net.cluster(x).health(), Health::Degraded);
    }
}

#[test]
fn a_member_removed_from_every_list_releases_before_its_shard_moves() {
    remove_the_owner(true);
}

#[test]
fn a_member_removed_whose_own_list_is_stale_is_cut_off_and_releases() {
    remove_the_owner(false);
}

/// The winner W of a conflict leaves after the loser L published that it
/// yields, before W acknowledged it. docs/design.md 6.3: the conflict is void,
/// L keeps its allocation (no `deallocated`, no new allocation), and W
/// never hears `prolonged`.
///
/// The timing is built, not hoped for. One shard, four members W, R, L, X,
/// where L and X claimed the shard while split off from W. L yields only
/// once it has a score from every rival, so X's `score` is held back
/// (gate) while L and W exchange theirs over a direct link. Then L is cut
/// from W and R (X stays), and X's score is let through: L ranks itself
/// below W and yields, with no path left for its yield to reach W (which
/// the test checks: L shows itself yielding while cut). W leaves through
/// R; once L has lost its link to R, the link is healed and R tells L, on
/// the new connection, W's last record: it left.
#[test]
fn a_winner_that_leaves_before_acknowledging_voids_the_conflict() {
    let timings = Timings {
        heartbeat_interval: Duration::from_millis(100),
        // Long enough that L still counts W as a rival when X's score
        // lands after the cut; L learns that W left well within the grace.
        heartbeat_timeout: Duration::from_millis(1000),
        transition_timeout: Duration::from_millis(1500),
        node_grace: Duration::from_millis(4000),
        settle: Duration::from_millis(10),
        // X's score is held longer than a usual deadline.
        score_deadline: Duration::from_secs(10),
        member_poll: Duration::from_secs(1),
        allocation_retry: Duration::from_millis(300),
    };
    let net = Net::start("leave-race", 4, 1, timings);
    // L and X hold the shard while split from W, by design. (Both claim it
    // at the epoch after W's: two groups that each lost the shard's holder
    // may issue the same epoch, docs/design.md 2.)
    net.ledger.allow_splits();
    let owners = net
        .converged(&[0, 1, 2, 3], Duration::from_secs(10))
        .unwrap();
    let w = owners[0];
    let others: Vec<usize> = (0..4).filter(|&i| i != w).collect();
    let (r, l, x) = (others[0], others[1], others[2]);
    for (i, score) in [(w, 100), (l, 50), (x, 10), (r, 0)] {
        *net.nodes[i].score.lock().unwrap() = score;
    }

    // L and X, each alone, claim the shard once W's grace ends for them.
    for (a, b) in [(l, w), (l, r), (l, x), (x, w), (x, r)] {
        net.cut(a, b);
    }
    let both_claimed = eventually(Duration::from_secs(15), || {
        net.cluster(l).my_shard().is_some() && net.cluster(x).my_shard().is_some()
    });
    assert!(both_claimed, "{}", net.describe(&[0, 1, 2, 3]));
    let (_, l_epoch) = net.cluster(l).my_shard().unwrap();

    // The conflict: X reachable through L only, W-L direct, R between them
    // too. X's score is held; L meets X first, so that X is already its
    // rival when W comes: W and L score at once and trade offers.
    let scored = |i: usize| net.nodes[i].journal.count(|t| matches!(t, Told::Score(_))) > 0;
    net.nodes[x].gate.close();
    net.heal(l, x);
    let x_in = eventually(Duration::from_secs(10), || {
        net.nodes[x].gate.waiting() > 0 && scored(l)
    });
    assert!(
        x_in,
        "L and X did not meet: {}",
        net.describe(&[0, 1, 2, 3])
    );
    net.heal(l, w);
    net.heal(l, r);
    let scored = eventually(Duration::from_secs(10), || scored(w));
    assert!(
        scored,
        "the conflict did not start: {}; W, R, L, X were told {:?}",
        net.describe(&[0, 1, 2, 3]),
        [w, r, l, x].map(|i| net.nodes[i].journal.all())
    );
    // Offers cross one direct link each way; L waits for X's, so this wait
    // only lets them land (it is verified below: L must yield to W).
    std::thread::sleep(net.timings.heartbeat_interval * 5);
    let cut_at = Instant::now();
    net.cut(l, w);
    net.cut(l, r);
    net.nodes[x].gate.open();
    let l_state = |net: &Net| {
        net.cluster(l)
            .status()
            .nodes
            .into_iter()
            .find(|(n, _)| *n == net.nodes[l].id)
            .map(|(_, s)| s)
    };
    // Yielding: still its allocation, published as in transition.
    let yielded = eventually(net.timings.heartbeat_timeout / 2, || {
        net.cluster(l).my_shard().is_some() && l_state(&net) == Some(NodeState::Transition)
    });
    assert!(
        yielded,
        "set-up: L did not yield to W while cut from it (state {:?}); W's offer had not reached it",
        l_state(&net)
    );
    assert!(
        !net.saw_down(l, w, cut_at) && !net.saw_down(l, r, cut_at),
        "set-up: L lost W or R before it yielded, so it did not yield to a live rival"
    );
    assert_eq!(
        net.nodes[w]
            .journal
            .count(|t| matches!(t, Told::Prolonged { .. })),
        0,
        "set-up: W acknowledged L's yield through a path the test did not cut"
    );

    // W leaves, heard by R only.
    let left_at = Instant::now();
    net.cluster(w).leave().unwrap();
    let lost_r = eventually(net.timings.heartbeat_timeout * 3, || {
        net.saw_down(l, r, cut_at)
    });
    assert!(lost_r, "L kept its link to R through the cut");
    net.heal(l, r);
    let group = [r, l, x];
    let map = net.converged(&group, Duration::from_secs(10)).unwrap();

    net.assert_ledger_clean();
    let told_l = net.told_since(l, cut_at);
    assert!(
        !told_l
            .iter()
            .any(|t| matches!(t, Told::Deallocated { .. } | Told::Allocated { .. })),
        "L gave up or re-took its shard (epoch {l_epoch}): {told_l:?}"
    );
    assert_eq!(
        map[0], l,
        "L keeps the shard: its conflict with W is void, and it beats X"
    );
    assert_eq!(
        net.cluster(l).my_shard().map(|(s, _)| s),
        Some(0),
        "L's allocation goes on"
    );
    assert_eq!(
        net.nodes[w]
            .journal
            .count(|t| matches!(t, Told::Prolonged { .. })),
        0,
        "W left without acknowledging: it never hears prolonged"
    );
    for i in [r, x] {
        let allocated = net
            .told_since(i, left_at)
            .into_iter()
            .filter(|t| matches!(t, Told::Allocated { .. }))
            .count();
        assert_eq!(allocated, 0, "node {i} took the shard anew");
    }
    // X lost to L in the conflict that remained.
    let x_told = net.told_since(x, cut_at);
    assert!(
        x_told.contains(&Told::Deallocated {
            winner: Some(net.nodes[l].address.clone()),
            reason: ReleaseReason::LostConflict,
        }),
        "X should lose to L: {x_told:?}"
    );
    assert!(
        net.told_since(l, cut_at)
            .iter()
            .any(|t| matches!(t, Told::Prolonged { loser, .. } if *loser == net.nodes[x].address)),
        "L should be told prolonged(X)"
    );
}
