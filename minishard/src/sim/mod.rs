//! A deterministic simulator: many nodes of the real [`crate::core`] on a
//! simulated network and clock, driven by a seed.
//!
//! It is another executor of the core's actions, like the tokio engine: it
//! delivers messages with latency over TCP-like connections, fires timers,
//! runs the applications' callbacks one at a time per node (fast, slow or
//! failing), and injects faults: cuts in one or both directions, splits,
//! crashes, restarts with new incarnations and graceful leaves. The
//! [`Ledger`] checks callback discipline as it happens; [`schedule`] runs
//! random fault schedules and checks docs/design.md section 7 after each.
//!
//! Scenario tests script it directly:
//! ```
//! use minishard::sim::{Sim, SimConfig};
//! let mut sim = Sim::new(SimConfig::new(5, 3));
//! sim.start_all();
//! assert!(sim.wait_until(std::time::Duration::from_secs(5), |s| s.converged()));
//! ```

pub mod ledger;
mod network;
pub mod schedule;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::core::{
    Action, Call, CallId, Claim, Core, CoreConfig, Epoch, Event, Health, Holding, Incarnation,
    Instant, NodeId, Outcome, PeerMessage, Quorum, RefusalReason, Role, Shard, Snapshot, Timings,
    Yield,
};
pub use ledger::{Allocation, Ending, Ledger};
use network::{Delivery, Net};

/// The shape of a simulated cluster.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Members (nodes in the member list).
    pub members: usize,
    /// Observers (joined, not in the member list).
    pub observers: usize,
    /// Shards to keep.
    pub shard_count: u32,
    /// Protocol timings.
    pub timings: Timings,
    /// The members a node must see to hold shards; in strict mode the
    /// ledger also checks that no two nodes ever hold a shard at once
    /// (docs/design.md 6.7, 7.11).
    pub quorum: Quorum,
    /// Seed for every random choice.
    pub seed: u64,
}

impl SimConfig {
    /// `members` members keeping `shard_count` shards, default timings, seed 1.
    pub fn new(members: usize, shard_count: u32) -> SimConfig {
        SimConfig {
            members,
            observers: 0,
            shard_count,
            timings: Timings::default(),
            quorum: Quorum::Any,
            seed: 1,
        }
    }
}

/// How the simulated network and applications behave; change it at any time.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// Message latency, uniformly drawn from this range.
    pub latency: (Duration, Duration),
    /// Duration of an ordinary callback.
    pub callback: (Duration, Duration),
    /// Probability that a callback is slow.
    pub slow_probability: f64,
    /// Duration of a slow callback.
    pub slow: (Duration, Duration),
    /// Probability that `allocated`, `score` or `prolonged` fails.
    pub fail_probability: f64,
    /// Delay before a node dials a peer it is not connected to.
    pub dial: (Duration, Duration),
    /// When set, a node is busy for a while drawn from this range after an
    /// event arrives, and takes everything that arrived meanwhile in one
    /// batch ([`Core::handle_all`]), as the engine does under load.
    pub batch_window: Option<(Duration, Duration)>,
    /// When set, each message is held back, with this probability, for an
    /// extra delay drawn from this range (and, TCP being ordered, so is
    /// everything sent after it on that connection): the one late message
    /// a rule must not depend on.
    pub spikes: Option<(f64, (Duration, Duration))>,
}

impl Default for Behaviour {
    fn default() -> Behaviour {
        Behaviour {
            latency: (Duration::from_micros(100), Duration::from_millis(2)),
            callback: (Duration::from_micros(10), Duration::from_millis(2)),
            slow_probability: 0.0,
            slow: (Duration::from_millis(200), Duration::from_millis(2500)),
            fail_probability: 0.0,
            dial: (Duration::from_millis(5), Duration::from_millis(300)),
            batch_window: None,
            spikes: None,
        }
    }
}

/// One simulated node slot: an address that may be running an incarnation.
#[derive(Debug)]
struct Node {
    id: NodeId,
    role: Role,
    core: Option<Core>,
    incarnation: Incarnation,
    timer: Option<Instant>,
    pending_calls: VecDeque<(CallId, Call)>,
    /// The callback running now, if any.
    running: Option<Call>,
    busy: bool,
    /// When the latest slow callback of this node ends.
    slow_until: Instant,
    snapshot: Option<Arc<Snapshot>>,
    /// The largest epoch this incarnation has seen for each shard.
    seen_epochs: Vec<Epoch>,
    /// What its `score` returns; random when `None`.
    fixed_score: Option<i64>,
    /// Events waiting for the node's next batch (see `Behaviour::batch_window`).
    backlog: Vec<Event>,
    flush_due: bool,
    /// What its `nodes` callback returns (it may lag behind the operator's
    /// list: a node picks a change up at its next poll).
    list: Vec<NodeId>,
    /// The member list its mesh enforces, as its core last set it: it
    /// accepts these as members (and observers not among them) and drops
    /// any other member-role peer at once (docs/design.md 6.6).
    admits: Vec<NodeId>,
}

/// The other end of a connection being closed.
struct FarEnd {
    conn: u64,
    node: NodeId,
    incarnation: Incarnation,
    drained: Instant,
}

#[derive(Debug)]
enum Ev {
    Deliver(Delivery),
    Timer {
        node: usize,
        incarnation: Incarnation,
        at: Instant,
    },
    CallDone {
        node: usize,
        incarnation: Incarnation,
        id: CallId,
        outcome: Outcome,
    },
    SilenceCheck {
        conn: u64,
        from: NodeId,
        to: NodeId,
    },
    Lost {
        conn: u64,
        node: usize,
        incarnation: Incarnation,
        peer: NodeId,
    },
    Dial {
        a: usize,
        b: usize,
    },
    Refused {
        node: usize,
        incarnation: Incarnation,
        peer: NodeId,
    },
    Flush {
        node: usize,
        incarnation: Incarnation,
    },
}

/// The simulated world.
pub struct Sim {
    config: SimConfig,
    now: Instant,
    rng: StdRng,
    queue: BTreeMap<(Instant, u64), Ev>,
    seq: u64,
    nodes: Vec<Node>,
    /// The member list the operator intends; each node's `list` follows it
    /// unless the node was left stale.
    members: Vec<NodeId>,
    /// Node pairs (smaller index first) with a dial already scheduled.
    dials: BTreeSet<(usize, usize)>,
    net: Net,
    /// What the network and applications do.
    pub behaviour: Behaviour,
    ledger: Ledger,
    /// Every change of the conflict each node publishes it lost (`None`:
    /// it withdrew it and kept its shard), in order.
    yields: Vec<(Instant, NodeId, Option<Yield>)>,
    /// Claims whose `allocated` failed: (node, shard, when it failed).
    failed_claims: Vec<(NodeId, u32, Instant)>,
    /// Every change of health, when the core decided it (its
    /// `status_changed` callback may run later, behind others).
    health_log: Vec<(Instant, NodeId, Health, Health)>,
    /// Losers told `deallocated(winner)` while no path led to the winner:
    /// (loser, shard, epoch). A winner cut off before it acknowledged may
    /// never learn of the loss (docs/design.md 6.3).
    cut_off_losses: Vec<(NodeId, u32, Epoch)>,
    /// Yields withdrawn before the winner's acknowledgement was seen: no
    /// path led to the winner (it crashed, or was cut off), or the loser
    /// gave its shard up for another reason (it degraded, or was removed):
    /// (loser, shard, epoch). The winner may have acknowledged unseen.
    unseen_withdrawals: Vec<(NodeId, u32, Epoch)>,
    trace: bool,
    delivered: Delivered,
    /// Strict mode (docs/design.md 6.7, 7.11): every `allocated` is checked
    /// to start while no other node holds its shard.
    strict: bool,
    /// Strict mode: allocations that started while another node's engine
    /// had already given the shard up but its application had not been
    /// told yet, its callbacks held up by a slow one of its own.
    excused_overlaps: u64,
}

/// Messages that reached a node, by kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct Delivered {
    /// Nodes' own records.
    pub records: u64,
    /// Records passed on by a peer.
    pub relays: u64,
    /// Epoch tables, sent on connect.
    pub epochs: u64,
}

impl Sim {
    /// A world with every node stopped.
    pub fn new(config: SimConfig) -> Sim {
        let address = |i: usize| {
            NodeId::parse(&format!("10.0.{}.{}:7000", i / 200, i % 200 + 1)).expect("valid")
        };
        let total = config.members + config.observers;
        let nodes: Vec<Node> = (0..total)
            .map(|i| Node {
                id: address(i),
                role: if i < config.members {
                    Role::Member
                } else {
                    Role::Observer
                },
                core: None,
                incarnation: 0,
                timer: None,
                pending_calls: VecDeque::new(),
                running: None,
                busy: false,
                slow_until: Instant::ZERO,
                snapshot: None,
                seen_epochs: vec![0; config.shard_count as usize],
                fixed_score: None,
                backlog: Vec::new(),
                flush_due: false,
                list: Vec::new(),
                admits: Vec::new(),
            })
            .collect();
        let members: Vec<NodeId> = nodes[..config.members]
            .iter()
            .map(|n| n.id.clone())
            .collect();
        let mut nodes = nodes;
        for node in &mut nodes {
            node.list = members.clone();
        }
        let strict = config.quorum == Quorum::Majority;
        Sim {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            now: Instant::ZERO,
            queue: BTreeMap::new(),
            seq: 0,
            nodes,
            members,
            dials: BTreeSet::new(),
            net: Net::default(),
            behaviour: Behaviour::default(),
            ledger: Ledger::default(),
            strict,
            excused_overlaps: 0,
            yields: Vec::new(),
            failed_claims: Vec::new(),
            health_log: Vec::new(),
            cut_off_losses: Vec::new(),
            unseen_withdrawals: Vec::new(),
            trace: false,
            delivered: Delivered::default(),
        }
    }

    /// Prints every step to stderr.
    pub fn set_trace(&mut self, on: bool) {
        self.trace = on;
    }

    /// The current simulated instant.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The cluster's shape.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Number of node slots (members first, then observers).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no node slots.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The address of node `i`.
    pub fn id(&self, i: usize) -> &NodeId {
        &self.nodes[i].id
    }

    /// Whether node `i` is an observer.
    pub fn is_observer(&self, i: usize) -> bool {
        self.nodes[i].role == Role::Observer
    }

    /// Whether node `i` is running.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].core.is_some()
    }

    /// Node `i`'s current incarnation.
    pub fn incarnation(&self, i: usize) -> Incarnation {
        self.nodes[i].incarnation
    }

    /// Node `i`'s latest snapshot (kept after it stops).
    pub fn snapshot(&self, i: usize) -> Option<&Arc<Snapshot>> {
        self.nodes[i].snapshot.as_ref()
    }

    /// The highest allocation of `shard` node `i` has seen, if it runs.
    pub fn highest_seen(&self, i: usize, shard: Shard) -> Option<&Claim> {
        self.nodes[i].core.as_ref()?.highest_seen(shard)
    }

    /// Node `i`'s health, if it is running.
    pub fn health(&self, i: usize) -> Option<Health> {
        self.nodes[i].core.as_ref().map(Core::health)
    }

    /// Every callback so far.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Losers told `deallocated(winner)` while no path led to the winner:
    /// (loser, shard, epoch).
    pub fn cut_off_losses(&self) -> &[(NodeId, u32, Epoch)] {
        &self.cut_off_losses
    }

    /// Yields withdrawn before the winner's acknowledgement was seen: no
    /// path led to the winner, or the loser gave its shard up for another
    /// reason. (loser, shard, epoch).
    pub fn unseen_withdrawals(&self) -> &[(NodeId, u32, Epoch)] {
        &self.unseen_withdrawals
    }

    /// Every change of health so far, as the cores decided it.
    pub fn health_log(&self) -> &[(Instant, NodeId, Health, Health)] {
        &self.health_log
    }

    /// Every change of a node's published lost conflict so far: a yield, or
    /// `None` once it withdrew it (its winner moved on or left unacknowledged).
    pub fn yields(&self) -> &[(Instant, NodeId, Option<Yield>)] {
        &self.yields
    }

    /// Fixes what node `i`'s `score` returns (`None`: random).
    pub fn set_score(&mut self, i: usize, score: Option<i64>) {
        self.nodes[i].fixed_score = score;
    }

    /// The operator changes the member list to `list`: every node's `nodes`
    /// callback returns it from now on (each node picks it up at its next
    /// poll), except the nodes in `stale`, whose callbacks keep returning
    /// what they did.
    pub fn set_member_list(&mut self, list: Vec<NodeId>, stale: &[usize]) {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if !stale.contains(&i) {
                node.list = list.clone();
            }
        }
        self.members = list;
    }

    /// The member list the operator intends (see [`Sim::set_member_list`]).
    pub fn member_list(&self) -> &[NodeId] {
        &self.members
    }

    /// What node `i`'s `nodes` callback returns.
    pub fn list_of(&self, i: usize) -> &[NodeId] {
        &self.nodes[i].list
    }

    /// The member list node `i`'s mesh enforces now.
    pub fn admitted_by(&self, i: usize) -> &[NodeId] {
        &self.nodes[i].admits
    }

    /// Whether node `i` is in the operator's member list.
    pub fn is_member(&self, i: usize) -> bool {
        self.members.contains(&self.nodes[i].id)
    }

    /// Whether node `i`'s mesh accepts node `j` (docs/design.md 2): a member-role
    /// peer only if it is in `i`'s list, an observer only if it is not.
    pub fn admits(&self, i: usize, j: usize) -> bool {
        let listed = self.nodes[i].admits.contains(&self.nodes[j].id);
        match self.nodes[j].role {
            Role::Member => listed,
            Role::Observer => !listed,
        }
    }

    /// When node `i`'s latest slow callback ends.
    pub fn slow_until(&self, i: usize) -> Instant {
        self.nodes[i].slow_until
    }

    fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| &n.id == id)
    }

    fn schedule(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at.max(self.now), self.seq), ev);
    }

    fn draw(&mut self, range: (Duration, Duration)) -> Duration {
        if range.1 <= range.0 {
            return range.0;
        }
        let micros = self
            .rng
            .random_range(range.0.as_micros() as u64..=range.1.as_micros() as u64);
        Duration::from_micros(micros)
    }

    /// Whether node `i` could join now: a member must be in the list its
    /// `nodes` callback returns, or `join` refuses it.
    pub fn can_start(&self, i: usize) -> bool {
        self.start_config(i).validate().is_ok()
    }

    fn start_config(&self, i: usize) -> CoreConfig {
        let node = &self.nodes[i];
        CoreConfig {
            me: node.id.clone(),
            role: node.role,
            members: node.list.clone(),
            shard_count: self.config.shard_count,
            timings: self.config.timings,
            metadata: Default::default(),
            quorum: self.config.quorum,
        }
    }

    /// Starts node `i` with a fresh incarnation (a restart if it ran before).
    /// A node that could not join ([`Sim::can_start`]) stays stopped.
    pub fn start(&mut self, i: usize) {
        if self.is_running(i) {
            return;
        }
        let config = self.start_config(i);
        if config.validate().is_err() {
            return;
        }
        let incarnation = self.rng.random::<u64>();
        let node = &mut self.nodes[i];
        node.admits = config.members.clone();
        node.incarnation = incarnation;
        node.timer = None;
        node.pending_calls.clear();
        node.running = None;
        node.busy = false;
        node.seen_epochs = vec![0; self.config.shard_count as usize];
        node.backlog.clear();
        node.flush_due = false;
        node.core = Some(Core::new(config, incarnation, self.now));
        self.drive(i);
        for peer in 0..self.nodes.len() {
            if peer != i {
                self.schedule_dial(i, peer);
            }
        }
    }

    /// Starts every node, each a few milliseconds after the previous.
    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i);
            let gap = self.draw((Duration::ZERO, Duration::from_millis(10)));
            self.run_for(gap);
        }
    }

    /// Kills node `i` without a word: its application loses its shard with
    /// no callback, its peers notice when their connections break.
    pub fn crash(&mut self, i: usize) {
        let Some(_core) = self.nodes[i].core.take() else {
            return;
        };
        let (id, incarnation) = (self.nodes[i].id.clone(), self.nodes[i].incarnation);
        self.ledger.crashed(self.now, &id, incarnation);
        let node = &mut self.nodes[i];
        node.pending_calls.clear();
        node.running = None;
        node.busy = false;
        node.timer = None;
        // A killed process's kernel closes its sockets at once; a dead host
        // is noticed only when heartbeats stop. Either way, every peer
        // notices alike.
        let t = self.config.timings;
        let killed = self.rng.random_bool(0.5);
        for end in self.close_connections_of(&id) {
            let delay = if killed {
                self.draw((Duration::from_micros(200), Duration::from_millis(2)))
            } else {
                t.heartbeat_timeout + self.draw((Duration::ZERO, t.heartbeat_interval / 2))
            };
            self.tell_lost(end, &id, self.now + delay);
        }
    }

    /// Asks node `i` to leave gracefully.
    pub fn leave(&mut self, i: usize) {
        let (id, incarnation) = (self.nodes[i].id.clone(), self.nodes[i].incarnation);
        if let Some(core) = self.nodes[i].core.as_mut() {
            self.ledger.leaving(self.now, &id, incarnation);
            core.handle(self.now, Event::Leave);
            self.drive(i);
        }
    }

    /// Node `i`'s core set the member list its mesh enforces: the mesh drops
    /// every member-role peer no longer in it at once, telling it why, and
    /// dials the members it may now reach (docs/design.md 6.6).
    fn set_admitted(&mut self, i: usize, list: Vec<NodeId>) {
        self.nodes[i].admits = list;
        for j in 0..self.nodes.len() {
            if j == i {
                continue;
            }
            if self.connected(i, j) && !self.admits(i, j) {
                self.drop_refused(i, j);
            }
            self.schedule_dial(i, j);
        }
    }

    /// Node `i` closes its connection to `j`, which it no longer admits:
    /// both ends lose it once what was sent has arrived, and `j` hears why.
    fn drop_refused(&mut self, i: usize, j: usize) {
        let (idi, idj) = (self.nodes[i].id.clone(), self.nodes[j].id.clone());
        let Some(c) = self.net.conn_mut(&idi, &idj) else {
            return;
        };
        if c.closing {
            return;
        }
        c.closing = true;
        let (conn, at) = (c.id, c.drained_at() + Duration::from_micros(1));
        for (node, peer) in [(i, idj), (j, idi.clone())] {
            let incarnation = self.nodes[node].incarnation;
            self.schedule(
                at,
                Ev::Lost {
                    conn,
                    node,
                    incarnation,
                    peer,
                },
            );
        }
        let incarnation = self.nodes[j].incarnation;
        self.schedule(
            at,
            Ev::Refused {
                node: j,
                incarnation,
                peer: idi,
            },
        );
    }

    /// Cuts the direction `from → to` (messages from `from` stop reaching `to`).
    pub fn cut(&mut self, from: usize, to: usize) {
        let (a, b) = (self.nodes[from].id.clone(), self.nodes[to].id.clone());
        if let Some(conn) = self.net.cut(self.now, &a, &b) {
            let jitter = self.draw((Duration::ZERO, self.config.timings.heartbeat_interval / 2));
            let at = self.now + self.config.timings.heartbeat_timeout + jitter;
            self.schedule(
                at,
                Ev::SilenceCheck {
                    conn,
                    from: a,
                    to: b,
                },
            );
        }
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut_both(&mut self, a: usize, b: usize) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// Cuts every link between different groups.
    pub fn split(&mut self, groups: &[Vec<usize>]) {
        for (gi, group) in groups.iter().enumerate() {
            for other in groups.iter().skip(gi + 1) {
                for &a in group {
                    for &b in other {
                        self.cut_both(a, b);
                    }
                }
            }
        }
    }

    /// Heals the direction `from → to`.
    pub fn heal(&mut self, from: usize, to: usize) {
        let (a, b) = (self.nodes[from].id.clone(), self.nodes[to].id.clone());
        let latency = self.draw(self.behaviour.latency);
        for delivery in self.net.heal(self.now, latency, &a, &b) {
            self.schedule(delivery.at, Ev::Deliver(delivery));
        }
        self.schedule_dial(from, to);
    }

    /// Heals every cut.
    pub fn heal_all(&mut self) {
        for (a, b) in self.net.cuts() {
            let (a, b) = (
                self.index_of(&a).expect("known"),
                self.index_of(&b).expect("known"),
            );
            self.heal(a, b);
        }
    }

    /// Makes the network exactly this: the direction `from → to` passes if
    /// and only if `(from, to)` is in `passing`.
    pub fn set_passing(&mut self, passing: &BTreeSet<(usize, usize)>) {
        let n = self.nodes.len();
        for a in 0..n {
            for b in (0..n).filter(|&b| b != a) {
                let cut = self.net.is_cut(&self.nodes[a].id, &self.nodes[b].id);
                match (passing.contains(&(a, b)), cut) {
                    (true, true) => self.heal(a, b),
                    (false, false) => self.cut(a, b),
                    _ => {}
                }
            }
        }
    }

    /// Whether `a` and `b` can keep a connection as things stand: both run,
    /// both directions pass, one of them is a member, and each admits the
    /// other.
    pub fn linked(&self, a: usize, b: usize) -> bool {
        a != b
            && self.is_running(a)
            && self.is_running(b)
            && self.link_clear(a, b)
            && self.should_connect(a, b)
            && self.admits(a, b)
            && self.admits(b, a)
    }

    /// The groups of running members connected by paths of links between
    /// members, each sorted. Observers watch; they connect no groups
    /// (docs/design.md 6.1: paths of sightings run through members).
    pub fn components(&self) -> Vec<Vec<usize>> {
        let n = self.nodes.len();
        let mut group: Vec<Option<usize>> = vec![None; n];
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let member = |i: usize| self.nodes[i].role == Role::Member;
        for start in (0..n).filter(|&i| self.is_running(i) && member(i)) {
            if group[start].is_some() {
                continue;
            }
            let g = groups.len();
            let mut members = vec![start];
            group[start] = Some(g);
            let mut at = 0;
            while at < members.len() {
                let i = members[at];
                at += 1;
                for (j, in_group) in group.iter_mut().enumerate() {
                    if in_group.is_none() && member(j) && self.linked(i, j) {
                        *in_group = Some(g);
                        members.push(j);
                    }
                }
            }
            members.sort_unstable();
            groups.push(members);
        }
        groups
    }

    /// The most links any news must cross between two members of one group:
    /// the longest of the shortest paths (0 in a full mesh of one node, 1
    /// in any full mesh).
    pub fn diameter(&self) -> usize {
        let member = |i: usize| self.nodes[i].role == Role::Member;
        let mut longest = 0;
        for group in self.components() {
            for &from in &group {
                let mut hops: BTreeMap<usize, usize> = BTreeMap::new();
                hops.insert(from, 0);
                let mut frontier = vec![from];
                while let Some(i) = frontier.first().copied() {
                    frontier.remove(0);
                    let here = hops[&i];
                    for j in (0..self.nodes.len()).filter(|&j| member(j) && self.linked(i, j)) {
                        if let std::collections::btree_map::Entry::Vacant(e) = hops.entry(j) {
                            e.insert(here + 1);
                            frontier.push(j);
                        }
                    }
                }
                longest = longest.max(hops.values().copied().max().unwrap_or(0));
            }
        }
        longest
    }

    /// Whether both directions between `a` and `b` pass.
    pub fn link_clear(&self, a: usize, b: usize) -> bool {
        self.net.clear(&self.nodes[a].id, &self.nodes[b].id)
    }

    /// Whether any link is cut.
    pub fn any_cut(&self) -> bool {
        !self.net.cuts().is_empty()
    }

    /// Whether `a` and `b` have a live connection.
    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.net
            .conn(&self.nodes[a].id, &self.nodes[b].id)
            .is_some_and(|c| !c.closing)
    }

    /// Whether every pair of running nodes that can keep a connection
    /// ([`Sim::linked`]) has one.
    pub fn mesh_complete(&self) -> bool {
        let n = self.nodes.len();
        (0..n).all(|a| (a + 1..n).all(|b| !self.linked(a, b) || self.connected(a, b)))
    }

    fn should_connect(&self, a: usize, b: usize) -> bool {
        // Members dial members; observers dial members; observers ignore each other.
        self.nodes[a].role == Role::Member || self.nodes[b].role == Role::Member
    }

    fn schedule_dial(&mut self, a: usize, b: usize) {
        if !self.should_connect(a, b) || !self.dials.insert((a.min(b), a.max(b))) {
            return;
        }
        let delay = self.draw(self.behaviour.dial);
        self.schedule(self.now + delay, Ev::Dial { a, b });
    }

    /// Runs until `at`.
    pub fn run_until(&mut self, at: Instant) {
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > at {
                break;
            }
            let ((time, _), ev) = entry.remove_entry();
            self.now = time;
            self.step(ev);
        }
        self.now = at;
    }

    /// Runs for `duration`.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(self.now + duration);
    }

    /// Runs until `condition` holds, checking after every event, for at most
    /// `timeout`. Returns whether it held.
    pub fn wait_until(&mut self, timeout: Duration, condition: impl Fn(&Sim) -> bool) -> bool {
        let deadline = self.now + timeout;
        loop {
            if condition(self) {
                return true;
            }
            let next = self.queue.first_key_value().map(|(k, _)| k.0);
            match next {
                Some(t) if t <= deadline => {
                    let ((time, _), ev) = self.queue.pop_first().expect("peeked");
                    self.now = time;
                    self.step(ev);
                }
                _ => {
                    self.now = deadline;
                    return condition(self);
                }
            }
        }
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver(d) => self.deliver(d),
            Ev::Flush { node, incarnation } => self.flush(node, incarnation),
            Ev::Timer {
                node,
                incarnation,
                at,
            } => {
                let n = &mut self.nodes[node];
                if n.incarnation == incarnation && n.timer == Some(at) {
                    n.timer = None;
                    self.feed(node, Event::Timeout);
                }
            }
            Ev::CallDone {
                node,
                incarnation,
                id,
                outcome,
            } => {
                if self.nodes[node].incarnation != incarnation {
                    return;
                }
                self.nodes[node].busy = false;
                self.nodes[node].running = None;
                self.feed(node, Event::CallDone { id, outcome });
                self.start_next_call(node);
            }
            Ev::SilenceCheck { conn, from, to } => {
                let timeout = self.config.timings.heartbeat_timeout;
                let now = self.now;
                let Some(c) = self.net.conn_mut(&from, &to) else {
                    return;
                };
                if c.id != conn || c.closing {
                    return;
                }
                let silent = c
                    .dir_mut(&from)
                    .silent_since
                    .is_some_and(|t| now >= t + timeout);
                if !silent {
                    return;
                }
                c.closing = true;
                let ends = c.ends.clone();
                for (k, (node, incarnation)) in ends.iter().enumerate() {
                    let peer = ends[1 - k].0.clone();
                    let p = self.index_of(node).expect("known");
                    let delay = self.draw((Duration::ZERO, Duration::from_millis(3)));
                    self.schedule(
                        now + delay,
                        Ev::Lost {
                            conn,
                            node: p,
                            incarnation: *incarnation,
                            peer,
                        },
                    );
                }
            }
            Ev::Lost {
                conn,
                node,
                incarnation,
                peer,
            } => {
                let id = self.nodes[node].id.clone();
                self.net.remove(&id, &peer, conn);
                let superseded = self.net.conn(&id, &peer).is_some_and(|c| c.id != conn);
                if self.nodes[node].incarnation == incarnation && !superseded {
                    self.feed(node, Event::Lost { peer: peer.clone() });
                }
                if let Some(p) = self.index_of(&peer) {
                    self.schedule_dial(node, p);
                }
            }
            Ev::Dial { a, b } => self.dial(a, b),
            Ev::Refused {
                node,
                incarnation,
                peer,
            } => {
                if self.nodes[node].incarnation == incarnation {
                    self.feed(
                        node,
                        Event::RefusedBy {
                            peer,
                            reason: RefusalReason::NotAMember,
                            detail: "not in the member list".into(),
                        },
                    );
                }
            }
        }
    }

    fn dial(&mut self, a: usize, b: usize) {
        self.dials.remove(&(a.min(b), a.max(b)));
        let (ida, idb) = (self.nodes[a].id.clone(), self.nodes[b].id.clone());
        if !self.is_running(a)
            || !self.is_running(b)
            || !self.net.clear(&ida, &idb)
            || self.net.conn(&ida, &idb).is_some()
        {
            return;
        }
        // Each end's mesh checks the other's role against its own member
        // list; a refused end hears why, and dials again later, as the real
        // dialer does.
        let refusals: Vec<(usize, usize)> = [(a, b), (b, a)]
            .into_iter()
            .filter(|&(by, of)| !self.admits(by, of))
            .collect();
        if !refusals.is_empty() {
            for (by, of) in refusals {
                let peer = self.nodes[by].id.clone();
                self.feed(
                    of,
                    Event::RefusedBy {
                        peer,
                        reason: RefusalReason::NotAMember,
                        detail: "not in the member list".into(),
                    },
                );
            }
            self.schedule_dial(a, b);
            return;
        }
        let (inc_a, inc_b) = (self.nodes[a].incarnation, self.nodes[b].incarnation);
        self.net.open((ida.clone(), inc_a), (idb.clone(), inc_b));
        let (role_a, role_b) = (self.nodes[a].role, self.nodes[b].role);
        let mut order = [(a, idb, inc_b, role_b), (b, ida, inc_a, role_a)];
        if self.rng.random_bool(0.5) {
            order.swap(0, 1);
        }
        for (node, peer, incarnation, role) in order {
            self.feed(
                node,
                Event::Connected {
                    peer,
                    incarnation,
                    role,
                },
            );
        }
    }

    /// How many messages reached a node so far.
    pub fn messages_delivered(&self) -> Delivered {
        self.delivered
    }

    fn deliver(&mut self, d: Delivery) {
        let Some(conn) = self.net.conn(&d.from, &d.to) else {
            return;
        };
        if conn.id != d.conn {
            return;
        }
        let expected = conn.incarnation_of(&d.to);
        let Some(to) = self.index_of(&d.to) else {
            return;
        };
        if self.nodes[to].incarnation != expected || !self.is_running(to) {
            return;
        }
        match &d.message {
            PeerMessage::Record(_) => self.delivered.records += 1,
            PeerMessage::Relay { .. } => self.delivered.relays += 1,
            PeerMessage::Epochs(_) => self.delivered.epochs += 1,
        }
        let (me, incarnation) = (self.nodes[to].id.clone(), self.nodes[to].incarnation);
        let seen = &mut self.nodes[to].seen_epochs;
        let mut note = |shard: u32, epoch: Epoch| {
            if let Some(e) = seen.get_mut(shard as usize) {
                *e = (*e).max(epoch);
            }
        };
        // A node's own claim coming back to it (a strict-mode proposal is
        // announced before its `allocated`) is not an epoch of another's.
        let own = |node: &NodeId, of: Incarnation| *node == me && of == incarnation;
        match &d.message {
            PeerMessage::Record(record) | PeerMessage::Relay { record, .. } => {
                if !own(&record.node, record.incarnation) {
                    if let Some((shard, epoch)) = record.holding.reserved() {
                        note(shard, epoch);
                    }
                    if let Some(offer) = &record.offer {
                        note(offer.shard, offer.epoch);
                    }
                }
            }
            PeerMessage::Epochs(highest) => {
                for (shard, claim) in highest.iter().enumerate() {
                    if let Some(claim) = claim.as_ref().filter(|c| !own(&c.node, c.incarnation)) {
                        note(shard as u32, claim.epoch);
                    }
                }
            }
        }
        self.feed(
            to,
            Event::Message {
                from: d.from,
                message: d.message,
            },
        );
    }

    fn feed(&mut self, i: usize, event: Event) {
        let now = self.now;
        if self.trace {
            eprintln!("{now} {} <- {event:?}", self.nodes[i].id);
        }
        if self.nodes[i].core.is_none() {
            return;
        }
        if let Some(window) = self.behaviour.batch_window {
            self.nodes[i].backlog.push(event);
            if !std::mem::replace(&mut self.nodes[i].flush_due, true) {
                let delay = self.draw(window);
                let incarnation = self.nodes[i].incarnation;
                self.schedule(
                    now + delay,
                    Ev::Flush {
                        node: i,
                        incarnation,
                    },
                );
            }
            return;
        }
        if let Some(core) = self.nodes[i].core.as_mut() {
            core.handle(now, event);
        }
        self.drive(i);
    }

    fn flush(&mut self, i: usize, incarnation: Incarnation) {
        let node = &mut self.nodes[i];
        if node.incarnation != incarnation || !node.flush_due {
            return;
        }
        node.flush_due = false;
        let batch = std::mem::take(&mut node.backlog);
        if let Some(core) = node.core.as_mut() {
            if self.trace {
                eprintln!(
                    "{} {} handles a batch of {}",
                    self.now,
                    node.id,
                    batch.len()
                );
            }
            core.handle_all(self.now, batch);
        }
        self.drive(i);
    }

    /// Carries out every action node `i`'s core asked for.
    fn drive(&mut self, i: usize) {
        loop {
            self.note_yield(i);
            let Some(action) = self.nodes[i].core.as_mut().and_then(Core::poll_action) else {
                return;
            };
            if self.trace {
                eprintln!("{} {} -> {action:?}", self.now, self.nodes[i].id);
            }
            self.act(i, action);
        }
    }

    fn act(&mut self, i: usize, action: Action) {
        let now = self.now;
        match action {
            Action::Send { to, message } => {
                let from = self.nodes[i].id.clone();
                let mut latency = self.draw(self.behaviour.latency);
                if let Some((probability, extra)) = self.behaviour.spikes {
                    if self.rng.random_bool(probability) {
                        latency += self.draw(extra);
                    }
                }
                if let Some(delivery) = self.net.send(now, latency, &from, &to, message) {
                    self.schedule(delivery.at, Ev::Deliver(delivery));
                }
            }
            Action::SetTimer(at) => {
                let node = &mut self.nodes[i];
                node.timer = Some(at);
                let incarnation = node.incarnation;
                self.schedule(
                    at,
                    Ev::Timer {
                        node: i,
                        incarnation,
                        at,
                    },
                );
            }
            Action::CancelTimer => self.nodes[i].timer = None,
            Action::Call { id, call } => {
                if let Call::Deallocated {
                    shard,
                    epoch,
                    winner: Some(winner),
                    ..
                } = &call
                {
                    let reached = self.index_of(winner).is_some_and(|w| {
                        self.components()
                            .iter()
                            .any(|g| g.contains(&i) && g.contains(&w))
                    });
                    if !reached {
                        let id = self.nodes[i].id.clone();
                        self.cut_off_losses.push((id, *shard, *epoch));
                    }
                }
                if let Call::Allocated { shard, epoch } = call {
                    let node = &mut self.nodes[i];
                    let seen = &mut node.seen_epochs[shard as usize];
                    if epoch <= *seen {
                        self.ledger.violations.push(format!(
                            "t={now} node={}: allocated shard {shard} with epoch {epoch}, not above {} already seen",
                            node.id, *seen
                        ));
                    }
                    *seen = (*seen).max(epoch);
                }
                if let Call::Score { shard, .. } = &call {
                    self.check_rival_exists(i, *shard);
                }
                if let Call::StatusChanged { old, new } = call {
                    let id = self.nodes[i].id.clone();
                    self.health_log.push((now, id, old, new));
                }
                self.nodes[i].pending_calls.push_back((id, call));
                self.start_next_call(i);
            }
            Action::Publish(snapshot) => self.nodes[i].snapshot = Some(snapshot),
            Action::SetMembers(list) => self.set_admitted(i, list.to_vec()),
            Action::Close => self.close(i),
        }
    }

    /// Logs a change of the conflict node `i` publishes it lost, as soon as
    /// its core decides it (whether or not any peer is there to hear it).
    fn note_yield(&mut self, i: usize) {
        let Some(core) = self.nodes[i].core.as_ref() else {
            return;
        };
        let yielded = &core.record().yielded;
        let id = &self.nodes[i].id;
        let known = self
            .yields
            .iter()
            .rev()
            .find(|(_, n, _)| n == id)
            .and_then(|(_, _, y)| y.as_ref());
        if known != yielded.as_ref() {
            if let (Some(withdrawn), None) = (known, yielded) {
                let reached = self.index_of(&withdrawn.winner.node).is_some_and(|w| {
                    self.components()
                        .iter()
                        .any(|g| g.contains(&i) && g.contains(&w))
                });
                let released = !matches!(
                    core.record().holding,
                    Holding::Active { .. } | Holding::Yielding { .. }
                );
                if !reached || released {
                    let entry = (id.clone(), withdrawn.shard, withdrawn.epoch);
                    self.unseen_withdrawals.push(entry);
                }
            }
            let id = id.clone();
            self.yields.push((self.now, id, yielded.clone()));
        }
    }

    /// A node that left closes its connections once its last messages are out.
    fn close(&mut self, i: usize) {
        let id = self.nodes[i].id.clone();
        self.nodes[i].core = None;
        self.nodes[i].timer = None;
        for end in self.close_connections_of(&id) {
            self.tell_lost(end, &id, self.now);
        }
    }

    /// Marks every connection of `id` closing; returns the far ends.
    fn close_connections_of(&mut self, id: &NodeId) -> Vec<FarEnd> {
        let ends: Vec<FarEnd> = self
            .net
            .conns()
            .filter(|c| c.ends.iter().any(|e| e.0 == *id))
            .map(|c| {
                let (node, incarnation) = c
                    .ends
                    .iter()
                    .find(|e| e.0 != *id)
                    .cloned()
                    .expect("two ends");
                FarEnd {
                    conn: c.id,
                    node,
                    incarnation,
                    drained: c.drained_at(),
                }
            })
            .collect();
        for end in &ends {
            if let Some(c) = self.net.conn_mut(id, &end.node) {
                c.closing = true;
            }
        }
        ends
    }

    /// Tells the far end that its connection to `gone` closed, at `at` or
    /// once the messages already sent have arrived (TCP's FIN follows data).
    fn tell_lost(&mut self, end: FarEnd, gone: &NodeId, at: Instant) {
        let Some(node) = self.index_of(&end.node) else {
            return;
        };
        let at = at.max(end.drained + Duration::from_micros(1));
        self.schedule(
            at,
            Ev::Lost {
                conn: end.conn,
                node,
                incarnation: end.incarnation,
                peer: gone.clone(),
            },
        );
    }

    fn start_next_call(&mut self, i: usize) {
        if self.nodes[i].busy {
            return;
        }
        let Some((id, call)) = self.nodes[i].pending_calls.pop_front() else {
            return;
        };
        let b = self.behaviour.clone();
        let slow = b.slow_probability > 0.0 && self.rng.random_bool(b.slow_probability);
        let duration = self.draw(if slow { b.slow } else { b.callback });
        let can_fail = matches!(
            call,
            Call::Allocated { .. } | Call::Score { .. } | Call::Prolonged { .. }
        );
        let failed =
            can_fail && b.fail_probability > 0.0 && self.rng.random_bool(b.fail_probability);
        let score = match self.nodes[i].fixed_score {
            Some(s) => s,
            None => match self.rng.random_range(0..8) {
                0 => i64::MIN,
                1 => i64::MAX,
                2 => 0,
                _ => self.rng.random_range(-3..=3),
            },
        };
        let outcome = match (&call, failed) {
            (_, true) => Outcome::Failed("simulated failure".into()),
            (Call::Score { .. }, false) => Outcome::Score(score),
            (Call::Nodes, false) => Outcome::Members(self.nodes[i].list.clone()),
            _ => Outcome::Done,
        };
        if let (Call::Allocated { shard, .. }, true) = (&call, failed) {
            let failed_at = self.now + duration;
            self.failed_claims
                .push((self.nodes[i].id.clone(), *shard, failed_at));
        }
        let node = &mut self.nodes[i];
        node.busy = true;
        node.running = Some(call.clone());
        if slow {
            node.slow_until = node.slow_until.max(self.now + duration);
        }
        if let (true, Call::Allocated { shard, epoch }) = (self.strict, &call) {
            self.check_sole_holder(i, *shard, *epoch);
        }
        let node = &mut self.nodes[i];
        self.ledger.begin(
            self.now,
            (&node.id, node.incarnation, node.role),
            &call,
            &outcome,
        );
        let incarnation = node.incarnation;
        self.schedule(
            self.now + duration,
            Ev::CallDone {
                node: i,
                incarnation,
                id,
                outcome,
            },
        );
    }

    /// Strict mode: node `i`'s application is about to be told it holds
    /// `shard`, and no other node's application may hold it now (an
    /// allocation is held from its `allocated` to its `deallocated`, or to
    /// its node's crash) — whatever the network did. Excused, and counted:
    /// a holder whose engine gave the shard up in time while its
    /// application, busy with a slow callback, has not heard it yet
    /// (callbacks run one at a time; README says so).
    fn check_sole_holder(&mut self, i: usize, shard: Shard, epoch: Epoch) {
        let me = self.nodes[i].id.clone();
        let other = self
            .ledger
            .open_allocations()
            .find(|a| a.shard == shard && a.node != me)
            .map(|a| (a.node.clone(), a.epoch, a.start));
        let Some((holder, theirs, since)) = other else {
            return;
        };
        let excused = self.index_of(&holder).is_some_and(|h| {
            let released = self.nodes[h].core.as_ref().is_some_and(
                |c| matches!(c.record().holding, Holding::Releasing { shard: s, .. } if s == shard),
            );
            released && self.nodes[h].slow_until > self.now
        });
        if excused {
            self.excused_overlaps += 1;
            return;
        }
        self.ledger.violations.push(format!(
            "t={} node={me}: strict mode: allocated shard {shard} (epoch {epoch}) while {holder} holds it (epoch {theirs}, since {since}): two holders at once",
            self.now
        ));
    }

    /// Strict mode: allocations excused by [`Sim::check_sole_holder`].
    pub fn excused_overlaps(&self) -> u64 {
        self.excused_overlaps
    }

    /// The core asks for a `score` only in a real conflict: another allocation of the
    /// shard is open, about to start (its `allocated` queued or running), or
    /// ended so recently (a crash, a release) that the news may be on its way.
    fn check_rival_exists(&mut self, i: usize, shard: u32) {
        let me = &self.nodes[i].id;
        // A dead host is noticed after a heartbeat timeout (plus jitter); a
        // record confirmed current stays so for twice that once no path
        // leads to its author any more (core::view), so news of an end may
        // take that long to void a claim.
        let t = self.config.timings;
        let news = t.heartbeat_timeout * 3 + t.heartbeat_interval;
        let recent = |a: &Allocation| match &a.end {
            None => true,
            Some(Ending::Deallocated { at, .. } | Ending::Crashed(at)) => *at + news > self.now,
        };
        let open = self
            .ledger
            .allocations
            .iter()
            .any(|a| a.shard == shard && a.node != *me && recent(a))
            || self
                .failed_claims
                .iter()
                .any(|(n, s, at)| *s == shard && n != me && *at + news > self.now);
        let pending = self.nodes.iter().enumerate().any(|(j, n)| {
            j != i
                && n.core.is_some()
                && n.pending_calls
                    .iter()
                    .map(|(_, c)| c)
                    .chain(&n.running)
                    .any(|c| matches!(c, Call::Allocated { shard: s, .. } if *s == shard))
        });
        if !open && !pending {
            self.ledger.violations.push(format!(
                "t={} node={me}: score asked for shard {shard} while no other allocation of it exists",
                self.now
            ));
        }
    }

    /// Running members (in the operator's member list).
    pub fn running_members(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.is_running(i) && self.is_member(i))
            .collect()
    }

    /// Every shard has exactly one open allocation, on a running member;
    /// every running node reports that map and `available`.
    pub fn converged(&self) -> bool {
        self.convergence_problem().is_none()
    }

    /// Why the cluster has not converged, or `None` if it has.
    pub fn convergence_problem(&self) -> Option<String> {
        let everyone: Vec<usize> = (0..self.nodes.len()).collect();
        self.convergence_problem_among(&everyone)
    }

    /// Why `group` (one side of a split, say) has not converged on its own,
    /// or `None` if it has: every shard has exactly one open allocation on
    /// a node of the group, and every running node of it reports that map
    /// and `available`.
    pub fn convergence_problem_among(&self, group: &[usize]) -> Option<String> {
        let ids: BTreeSet<&NodeId> = group.iter().map(|&i| self.id(i)).collect();
        let mut owners: Vec<Vec<&NodeId>> = vec![Vec::new(); self.config.shard_count as usize];
        for a in self.ledger.open_allocations() {
            if ids.contains(&a.node) {
                owners[a.shard as usize].push(&a.node);
            }
        }
        for (shard, list) in owners.iter().enumerate() {
            if list.len() != 1 {
                return Some(format!("shard {shard} is held by {list:?}"));
            }
        }
        for &i in group.iter().filter(|&&i| self.is_running(i)) {
            let Some(snapshot) = self.snapshot(i) else {
                return Some(format!("{} has no snapshot", self.id(i)));
            };
            if snapshot.health != Health::Available {
                return Some(format!("{} is {}", self.id(i), snapshot.health));
            }
            for (shard, list) in owners.iter().enumerate() {
                let reported = snapshot.owners[shard].as_ref().map(|o| &o.node);
                if reported != Some(list[0]) {
                    return Some(format!(
                        "{} reports {reported:?} for shard {shard}, held by {}",
                        self.id(i),
                        list[0]
                    ));
                }
            }
        }
        None
    }
}
