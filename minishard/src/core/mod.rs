//! The sans-IO core: one node's state machine for one cluster.
//!
//! Events go in ([`Core::handle`]), each with the current [`Instant`];
//! actions come out ([`Core::poll_action`]): send this message to that peer,
//! wake me at this instant, run this callback, publish this snapshot. The core
//! never sleeps, reads a clock, spawns a thread or touches a socket, so the
//! tokio engine and the deterministic simulator ([`crate::sim`]) drive the
//! very same code.
//!
//! Inside: the peer view ([`view`]), the watcher ([`watcher`]), the manager
//! (the allocation lifecycle in `manager`) and conflicts ([`conflict`]).
//! After every event the core re-evaluates the whole picture (level-
//! triggered), so no rule depends on having seen one particular event.

pub mod config;
pub mod conflict;
pub mod ids;
mod manager;
pub mod record;
pub mod snapshot;
pub mod time;
pub mod view;
pub mod watcher;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

pub use config::{ConfigError, CoreConfig, Timings, MAX_SHARDS};
pub use ids::{AddressError, Incarnation, NodeId, Role};
pub use record::{
    Ack, Claim, Epoch, Holding, PeerMessage, Record, ScoreOffer, Shard, Sighting, Yield,
};
pub use snapshot::{CoreCounters, LocalState, NodeState, Owner, Snapshot};
pub use time::Instant;
pub use watcher::Health;

use conflict::Episode;
use manager::Local;
use view::{Liveness, PeerView};
use watcher::{Observation, Watcher};

/// Identifies one callback request, so its result finds its way back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

/// A callback the application must run. Callbacks of one node run one at a
/// time in the order asked; each reports back with [`Event::CallDone`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// Ask for the member list again.
    Nodes,
    /// This node now owns `shard`: create the application's state.
    Allocated {
        /// The shard.
        shard: Shard,
        /// The allocation's epoch.
        epoch: Epoch,
    },
    /// Score this node's shard for a conflict.
    Score {
        /// The shard.
        shard: Shard,
        /// The allocation's epoch.
        epoch: Epoch,
    },
    /// This node won a conflict against `loser` and keeps its shard.
    Prolonged {
        /// The shard.
        shard: Shard,
        /// The allocation's epoch.
        epoch: Epoch,
        /// The node that gives the shard up.
        loser: NodeId,
    },
    /// This node no longer owns `shard`.
    Deallocated {
        /// The shard.
        shard: Shard,
        /// The allocation's epoch.
        epoch: Epoch,
        /// Who won the shard from it, or `None` (degraded, leave, shutdown).
        winner: Option<NodeId>,
    },
    /// This node's view of the cluster's health changed.
    StatusChanged {
        /// The health before.
        old: Health,
        /// The health now.
        new: Health,
    },
}

impl Call {
    /// The callback's name, as the application knows it.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Nodes => "nodes",
            Call::Allocated { .. } => "allocated",
            Call::Score { .. } => "score",
            Call::Prolonged { .. } => "prolonged",
            Call::Deallocated { .. } => "deallocated",
            Call::StatusChanged { .. } => "status_changed",
        }
    }
}

/// How a callback ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It returned normally (callbacks that return no value).
    Done,
    /// `score` returned this.
    Score(i64),
    /// `nodes` returned this member list (already parsed).
    Members(Vec<NodeId>),
    /// It failed: an error, a panic, an exception or an unusable return.
    Failed(String),
}

/// Something that happened to this node.
#[derive(Clone, Debug)]
pub enum Event {
    /// A handshake with a peer completed.
    Connected {
        /// The peer.
        peer: NodeId,
        /// Its incarnation, from the handshake.
        incarnation: Incarnation,
        /// Its role, from the handshake.
        role: Role,
    },
    /// The connection to a peer closed or went silent.
    Lost {
        /// The peer.
        peer: NodeId,
    },
    /// A connected peer sent a message.
    Message {
        /// The peer it came from (not necessarily its author).
        from: NodeId,
        /// The message.
        message: PeerMessage,
    },
    /// A callback finished.
    CallDone {
        /// The request it answers.
        id: CallId,
        /// How it ended.
        outcome: Outcome,
    },
    /// The member list changed (learned other than through [`Call::Nodes`]).
    MembersChanged(Vec<NodeId>),
    /// A peer refused this node's handshake (or closed its connection
    /// saying why).
    RefusedBy {
        /// The peer that refused.
        peer: NodeId,
        /// Why.
        reason: RefusalReason,
    },
    /// The application asked to leave (or dropped its handle).
    Leave,
    /// The timer set by [`Action::SetTimer`] fired.
    Timeout,
}

/// Why a peer refused this node, as far as the rules care.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// This node joined as a member and the peer's member list does not
    /// have it: the peer no longer counts it as one (DESIGN.md 6.6).
    NotAMember,
    /// Anything else (a wrong cookie, cluster or version): logged only.
    Other,
}

/// Something the driver must do.
#[derive(Clone, Debug)]
pub enum Action {
    /// Send a message to a connected peer.
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        message: PeerMessage,
    },
    /// Deliver [`Event::Timeout`] at this instant (replaces any earlier timer).
    SetTimer(Instant),
    /// No timer is needed.
    CancelTimer,
    /// Run a callback, then report [`Event::CallDone`].
    Call {
        /// The request's id.
        id: CallId,
        /// The callback.
        call: Call,
    },
    /// Make this the snapshot lookups read.
    Publish(Arc<Snapshot>),
    /// Dial these members and accept handshakes from them (and from observers).
    SetMembers(Arc<[NodeId]>),
    /// The node has left: close every connection and stop.
    Close,
}

/// One node's state machine for one cluster.
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    incarnation: Incarnation,
    members: Arc<[NodeId]>,
    /// The same, to look up: every evaluation asks of every peer.
    member_set: HashSet<NodeId>,
    view: PeerView,
    watcher: Watcher,
    local: Local,
    episode: Option<Episode>,
    episodes: u64,
    last_offer: Option<ScoreOffer>,
    last_yield: Option<Yield>,
    /// Losers acknowledged by this node's current (or latest) allocation.
    acknowledged: Vec<Claim>,
    /// Claims wait until this instant unless every member is connected, so
    /// a node that starts does not claim before it has met its peers.
    claims_from: Instant,
    /// The largest epoch seen for each shard.
    epochs: Vec<Epoch>,
    published: Arc<Record>,
    sees_due: Option<Instant>,
    /// The free shard this standby node's pairing gives it, and since when
    /// (DESIGN.md 6.2): it claims once that has held for `settle`. A peer
    /// claiming the shard paired with it leaves this pairing as it is, so a
    /// split that frees several shards does not make their claims queue.
    paired: Option<Shard>,
    paired_since: Instant,
    relays_dirty: bool,
    relays_checked_at: Instant,
    next_poll: Instant,
    poll_call: Option<CallId>,
    next_call: u64,
    leaving: bool,
    closed: bool,
    counters: CoreCounters,
    snapshot: Option<Arc<Snapshot>>,
    timer: Option<Instant>,
    actions: VecDeque<Action>,
}

impl Core {
    /// A node starting at `now` with a fresh `incarnation`. The config must
    /// have passed [`CoreConfig::validate`].
    pub fn new(config: CoreConfig, incarnation: Incarnation, now: Instant) -> Core {
        let members: Arc<[NodeId]> = config.members.clone().into();
        let published = Arc::new(Record {
            node: config.me.clone(),
            incarnation,
            version: 0,
            role: config.role,
            shard_count: config.shard_count,
            health: Health::Degraded,
            holding: Holding::Idle,
            sees: Vec::new(),
            offer: None,
            yielded: None,
            acknowledged: Vec::new(),
        });
        let mut core = Core {
            view: PeerView::new(config.me.clone()),
            watcher: Watcher::new(config.timings.transition_timeout),
            epochs: vec![0; config.shard_count as usize],
            next_poll: now + config.timings.member_poll,
            claims_from: now + config.timings.heartbeat_timeout,
            config,
            incarnation,
            member_set: members.iter().cloned().collect(),
            members,
            local: Local::Idle { retry_at: None },
            episode: None,
            episodes: 0,
            last_offer: None,
            last_yield: None,
            acknowledged: Vec::new(),
            published,
            sees_due: None,
            paired: None,
            paired_since: now,
            relays_dirty: false,
            relays_checked_at: now,
            poll_call: None,
            next_call: 0,
            leaving: false,
            closed: false,
            counters: CoreCounters::default(),
            snapshot: None,
            timer: None,
            actions: VecDeque::new(),
        };
        core.actions
            .push_back(Action::SetMembers(core.members.clone()));
        core.evaluate(now);
        core
    }

    /// This node's address.
    pub fn me(&self) -> &NodeId {
        &self.config.me
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// The health as of the last event.
    pub fn health(&self) -> Health {
        self.watcher.health()
    }

    /// Whether the node has left and closed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Option<&Arc<Snapshot>> {
        self.snapshot.as_ref()
    }

    /// The counters.
    pub fn counters(&self) -> CoreCounters {
        self.counters
    }

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Takes an event that happened at `now`.
    pub fn handle(&mut self, now: Instant, event: Event) {
        self.handle_all(now, std::iter::once(event));
    }

    /// Takes several events at `now` (in order), then looks at the whole
    /// picture once. A driver hands over what queued up while it was busy,
    /// so a burst (a heal, a cold start of many nodes) costs one evaluation
    /// per batch instead of one per message.
    pub fn handle_all(&mut self, now: Instant, events: impl IntoIterator<Item = Event>) {
        for event in events {
            if self.closed {
                return;
            }
            self.apply(now, event);
        }
        self.evaluate(now);
    }

    fn apply(&mut self, now: Instant, event: Event) {
        match event {
            Event::Connected {
                peer,
                incarnation,
                role,
            } => self.on_connected(now, peer, incarnation, role),
            Event::Lost { peer } => {
                if self.view.lost(&peer) {
                    self.view_changed();
                }
            }
            Event::Message { from, message } => self.on_message(&from, message),
            Event::CallDone { id, outcome } => self.on_call_done(now, id, outcome),
            Event::MembersChanged(list) => self.on_members(list),
            Event::RefusedBy { .. } => {}
            Event::Leave => self.leaving = true,
            Event::Timeout => {}
        }
    }

    fn on_connected(&mut self, now: Instant, peer: NodeId, incarnation: Incarnation, role: Role) {
        if peer == self.config.me {
            return;
        }
        if self.view.connected(now, &peer, incarnation, role) {
            tracing::info!(%peer, "peer restarted: its earlier allocation is void");
        }
        // Our record in full on connect; changes follow as they happen.
        self.actions.push_back(Action::Send {
            to: peer.clone(),
            message: PeerMessage::Record(self.published.clone()),
        });
        // Right behind it, on the same ordered connection, every claim it may
        // not know of yet: it hears of them before it could claim anything.
        self.view
            .refresh_relay_candidates(|n| self.member_set.contains(n));
        for (record, current) in self.view.relays_for(&peer, true) {
            self.actions.push_back(Action::Send {
                to: peer.clone(),
                message: PeerMessage::Relay { record, current },
            });
        }
        self.actions.push_back(Action::Send {
            to: peer,
            message: PeerMessage::Epochs(self.epochs.clone()),
        });
        self.view_changed();
    }

    fn on_message(&mut self, from: &NodeId, message: PeerMessage) {
        let (record, current) = match message {
            PeerMessage::Record(record) if record.node == *from => (record, true),
            PeerMessage::Relay { record, current } => (record, current),
            PeerMessage::Epochs(epochs) => {
                for (seen, theirs) in self.epochs.iter_mut().zip(epochs) {
                    *seen = (*seen).max(theirs);
                }
                return;
            }
            PeerMessage::Record(record) => {
                self.counters.ignored_messages += 1;
                tracing::debug!(%from, author = %record.node, "ignored another node's record sent as the sender's own");
                return;
            }
        };
        self.learn_shard_count(&record);
        // Any epoch this node has seen counts, even in a record it does not
        // take, so its own next claim of that shard is above it.
        self.note_epochs(&record);
        // An observer learns who the members are from the members it meets.
        let trusts_relays = self.config.role == Role::Observer && record.role == Role::Member;
        let members = &self.member_set;
        let is_member = |n: &NodeId| members.contains(n) || trusts_relays;
        match self.view.accept(
            from,
            record.clone(),
            current,
            is_member,
            self.config.shard_count,
        ) {
            Ok(view::Accepted::New) => self.view_changed(),
            Ok(view::Accepted::Known) => {}
            Err(view::Refusal::ShardCountMismatch) => {
                self.counters.ignored_messages += 1;
                tracing::warn!(
                    %from,
                    author = %record.node,
                    theirs = record.shard_count,
                    ours = self.config.shard_count,
                    "a member keeps another number of shards: its record is ignored; fix the shard_count callbacks"
                );
            }
            Err(refusal) => {
                self.counters.ignored_messages += 1;
                tracing::debug!(%from, author = %record.node, ?refusal, "ignored a record");
            }
        }
    }

    /// An observer started without a shard count takes the first member's
    /// (within [`config::MAX_SHARDS`]: found by the core_messages fuzz
    /// target, a record announcing 2^32-1 shards made it allocate 32 GiB).
    fn learn_shard_count(&mut self, record: &Record) {
        if self.config.shard_count == 0
            && record.role == Role::Member
            && (1..=config::MAX_SHARDS).contains(&record.shard_count)
        {
            self.config.shard_count = record.shard_count;
            self.epochs = vec![0; record.shard_count as usize];
            tracing::info!(shard_count = record.shard_count, "learned the shard count");
        }
    }

    fn note_epochs(&mut self, record: &Record) {
        let mut note = |shard: Shard, epoch: Epoch| {
            if let Some(seen) = self.epochs.get_mut(shard as usize) {
                *seen = (*seen).max(epoch);
            }
        };
        if let Some((shard, epoch)) = record.holding.reserved() {
            note(shard, epoch);
        }
        if let Some(offer) = &record.offer {
            note(offer.shard, offer.epoch);
        }
    }

    fn on_members(&mut self, list: Vec<NodeId>) {
        if let Err(error) = config::validate_members(&list) {
            self.counters.failed_callbacks += 1;
            tracing::warn!(%error, "ignored an unusable member list");
            return;
        }
        if *self.members == *list {
            return;
        }
        if (self.config.shard_count as usize) > list.len() {
            tracing::warn!(
                shard_count = self.config.shard_count,
                members = list.len(),
                "the member list is shorter than shard_count: the cluster will be degraded"
            );
        }
        self.member_set = list.iter().cloned().collect();
        self.members = list.into();
        self.actions
            .push_back(Action::SetMembers(self.members.clone()));
        self.view_changed();
    }

    fn view_changed(&mut self) {
        self.relays_dirty = true;
    }

    fn next_call_id(&mut self) -> CallId {
        self.next_call += 1;
        CallId(self.next_call)
    }

    fn call(&mut self, call: Call) -> CallId {
        let id = self.next_call_id();
        self.actions.push_back(Action::Call { id, call });
        id
    }

    /// Whether this node takes part as a member (in the list, joined as one).
    fn am_member(&self) -> bool {
        self.config.role == Role::Member && self.member_set.contains(&self.config.me)
    }

    /// Whether `node` is a member. An observer also counts the members it
    /// learned of through relays, since it may know only the one it dialled.
    fn is_member(&self, node: &NodeId) -> bool {
        self.member_set.contains(node)
            || (self.config.role == Role::Observer
                && self
                    .view
                    .record(node)
                    .is_some_and(|r| r.role == Role::Member))
    }

    /// The member list, plus for an observer the members it learned of.
    fn known_members(&self) -> Vec<NodeId> {
        let mut list = self.members.to_vec();
        if self.config.role == Role::Observer {
            let learned = self
                .view
                .all()
                .map(|(id, _)| id)
                .filter(|id| self.is_member(id));
            let learned: Vec<NodeId> = learned
                .filter(|id| !self.member_set.contains(*id))
                .cloned()
                .collect();
            list.extend(learned);
        }
        list
    }

    /// The whole picture again, after any event.
    fn evaluate(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if self.view.refresh(now, self.config.timings.node_grace) {
            self.view_changed();
        }
        self.poll_members(now);
        self.update_health(now);
        self.manage(now);
        if self.closed {
            return;
        }
        self.update_health(now);
        self.sync_record(now);
        self.send_relays(now);
        self.publish_snapshot();
        self.arm_timer(now);
    }

    fn poll_members(&mut self, now: Instant) {
        if now >= self.next_poll && self.poll_call.is_none() {
            self.next_poll = now + self.config.timings.member_poll;
            self.poll_call = Some(self.call(Call::Nodes));
        }
    }

    fn observe(&self) -> Observation {
        let visible_peers = self
            .view
            .links()
            .filter(|(id, role, _)| *role == Role::Member && self.is_member(id))
            .count();
        let settled_ownership = self.shard_holders().iter().all(|holders| {
            match holders.sole {
                // An owner out of this node's reach that a peer still sees
                // is an owner all the same (DESIGN.md 5, 6.1).
                Some((node, Holding::Active { .. })) => {
                    node == &self.config.me
                        || matches!(
                            self.view.liveness(node),
                            Liveness::Up | Liveness::Unreachable
                        )
                }
                _ => false,
            }
        });
        Observation {
            visible_members: visible_peers + usize::from(self.am_member()),
            // An observer that has not learned the shard count yet knows nothing.
            shard_count: (self.config.shard_count as usize).max(1),
            settled_ownership,
        }
    }

    fn update_health(&mut self, now: Instant) {
        let seen = self.observe();
        if let Some((old, new)) = self.watcher.update(now, seen) {
            tracing::info!(%old, %new, "health changed");
            self.call(Call::StatusChanged { old, new });
        }
    }

    /// Who holds each shard in this view, this node included, gathered in
    /// one pass over the peers.
    fn shard_holders(&self) -> Vec<ShardHolders<'_>> {
        let mut shards = vec![ShardHolders::default(); self.config.shard_count as usize];
        let own = self.local.holding();
        let peers = self
            .view
            .present_records()
            .filter(|(r, _)| self.is_member(&r.node))
            .map(|(r, _)| (&r.node, r.holding));
        for (node, holding) in std::iter::once((&self.config.me, own)).chain(peers) {
            let Some((shard, _)) = holding.reserved() else {
                continue;
            };
            if let Some(holders) = shards.get_mut(shard as usize) {
                holders.add(node, holding);
            }
        }
        shards
    }

    /// Publishes this node's record: at once when what it holds or offers
    /// changed, a little later when only the peers it sees did (a cold start
    /// changes them many times in a few milliseconds).
    fn sync_record(&mut self, now: Instant) {
        let holding = self.local.holding();
        let sees = self.view.sightings();
        let role = if self.am_member() {
            Role::Member
        } else {
            Role::Observer
        };
        let old = &self.published;
        let health = self.watcher.health();
        let urgent = old.holding != holding
            || old.acknowledged != self.acknowledged
            || old.health != health
            || old.shard_count != self.config.shard_count
            || old.offer != self.last_offer
            || old.yielded != self.last_yield
            || old.role != role;
        let sees_changed = old.sees != sees;
        if sees_changed && !urgent {
            // A peer no longer seen goes out soon: until it does, the others
            // count that peer unreachable rather than suspect, and its
            // failover waits. New sightings (a cold start makes hundreds)
            // wait for a heartbeat interval, to go out together.
            let lost_one = old.sees.iter().any(|s| {
                sees.binary_search_by(|new| new.node.cmp(&s.node))
                    .map_or(true, |at| sees[at] != *s)
            });
            let t = &self.config.timings;
            let wait = if lost_one {
                t.settle / 2
            } else {
                t.heartbeat_interval
            };
            let due = self.sees_due.map_or(now + wait, |due| due.min(now + wait));
            self.sees_due = Some(due);
            if now < due {
                return;
            }
        }
        if !urgent && !sees_changed {
            return;
        }
        self.sees_due = None;
        let record = Arc::new(Record {
            node: self.config.me.clone(),
            incarnation: self.incarnation,
            version: old.version + 1,
            role,
            shard_count: self.config.shard_count,
            health,
            holding,
            sees,
            offer: self.last_offer.clone(),
            yielded: self.last_yield.clone(),
            acknowledged: self.acknowledged.clone(),
        });
        tracing::trace!(
            version = record.version,
            urgent,
            sees = record.sees.len(),
            "publishing this node's record"
        );
        self.published = record.clone();
        let peers: Vec<NodeId> = self.view.up().map(|(id, _)| id.clone()).collect();
        for to in peers {
            self.actions.push_back(Action::Send {
                to,
                message: PeerMessage::Record(record.clone()),
            });
        }
        self.relays_dirty = true;
    }

    /// A member peer takes every relay once it has been connected for a
    /// heartbeat timeout: by then a cold start has connected it to everyone
    /// it can reach, and relaying earlier would send it records it gets
    /// directly. Before that it takes only records that hold a shard (or say
    /// their author left), which it must know before it claims anything —
    /// after a heal, say, before it has reconnected to every owner. Observers
    /// take everything at once: they connect to one node only.
    fn relay_from(&self, role: Role, since: Instant) -> Instant {
        match role {
            Role::Observer => Instant::ZERO,
            Role::Member => since + self.config.timings.heartbeat_timeout,
        }
    }

    fn send_relays(&mut self, now: Instant) {
        let newly_eligible = self
            .view
            .links()
            .map(|(_, role, since)| self.relay_from(role, since))
            .any(|at| at <= now && at > self.relays_checked_at);
        self.relays_checked_at = now;
        if !self.relays_dirty && !newly_eligible {
            return;
        }
        self.relays_dirty = false;
        let targets: Vec<(NodeId, bool)> = self
            .view
            .links()
            .filter(|(id, _, _)| self.view.record(id).is_some())
            .map(|(id, role, since)| (id.clone(), self.relay_from(role, since) > now))
            .collect();
        self.view
            .refresh_relay_candidates(|n| self.member_set.contains(n));
        for (to, claims_only) in targets {
            let relays = self.view.relays_for(&to, claims_only);
            for (record, current) in relays {
                self.actions.push_back(Action::Send {
                    to: to.clone(),
                    message: PeerMessage::Relay { record, current },
                });
            }
        }
    }

    fn publish_snapshot(&mut self) {
        let snapshot = self.build_snapshot();
        if self.snapshot.as_deref() != Some(&snapshot) {
            let snapshot = Arc::new(snapshot);
            self.snapshot = Some(snapshot.clone());
            self.actions.push_back(Action::Publish(snapshot));
        }
    }

    fn build_snapshot(&self) -> Snapshot {
        let owners = self
            .shard_holders()
            .into_iter()
            .map(|holders| {
                holders.owner.map(|(epoch, node)| Owner {
                    node: node.clone(),
                    epoch,
                })
            })
            .collect();
        let mut nodes: Vec<(NodeId, NodeState)> = Vec::new();
        for member in self
            .known_members()
            .iter()
            .filter(|m| **m != self.config.me)
        {
            nodes.push((member.clone(), self.node_state(member)));
        }
        for (id, _) in self.view.up() {
            if !self.is_member(id) {
                nodes.push((id.clone(), NodeState::Connected));
            }
        }
        let own_state = match self.local.holding() {
            Holding::Active { shard, .. } => NodeState::Active { shard },
            Holding::Claiming { .. } | Holding::Yielding { .. } | Holding::Releasing { .. } => {
                NodeState::Transition
            }
            Holding::Standby => NodeState::Standby,
            Holding::Idle if self.am_member() => NodeState::Standby,
            Holding::Idle | Holding::Left => NodeState::Connected,
        };
        nodes.push((self.config.me.clone(), own_state));
        nodes.sort_by(|a, b| a.0.cmp(&b.0));
        let mut health_views: Vec<(NodeId, Health)> = self
            .view
            .present_records()
            .filter(|(r, _)| r.role == Role::Member)
            .map(|(r, _)| (r.node.clone(), r.health))
            .collect();
        if self.am_member() {
            health_views.push((self.config.me.clone(), self.watcher.health()));
        }
        health_views.sort_by(|a, b| a.0.cmp(&b.0));
        Snapshot {
            health: self.watcher.health(),
            health_views,
            shard_count: self.config.shard_count,
            owners,
            local: self.local.state(),
            nodes,
            members: self.members.clone(),
            counters: self.counters,
        }
    }

    fn node_state(&self, node: &NodeId) -> NodeState {
        let (liveness, record) = self.view.peer(node);
        let holding = record.map(|r| r.holding);
        match (liveness, holding) {
            (Liveness::Down, _) => NodeState::Unavailable,
            (Liveness::Up, Some(Holding::Active { shard, .. })) => NodeState::Active { shard },
            (
                Liveness::Up,
                Some(
                    Holding::Claiming { .. } | Holding::Yielding { .. } | Holding::Releasing { .. },
                ),
            ) => NodeState::Transition,
            (Liveness::Up, _) => NodeState::Standby,
            (_, Some(h)) if h.reserved().is_some() => NodeState::Transition,
            _ => NodeState::Unavailable,
        }
    }

    fn arm_timer(&mut self, now: Instant) {
        let t = &self.config.timings;
        let candidates = [
            self.watcher.deadline(),
            self.view.next_grace_end(t.node_grace),
            self.paired.map(|_| self.paired_since + t.settle),
            (matches!(self.local, Local::Standby) && self.claims_from > now)
                .then_some(self.claims_from),
            self.episode.as_ref().map(|e| {
                // The score deadline, then the wait for rivals' scores.
                let waits = if e.score.is_none() { 1 } else { 2 };
                e.started + t.score_deadline * waits
            }),
            self.local.retry_at(),
            self.sees_due,
            self.view
                .links()
                .map(|(_, role, since)| self.relay_from(role, since))
                .filter(|at| *at > now)
                .min(),
            Some(self.next_poll),
        ];
        let next = candidates
            .into_iter()
            .flatten()
            .filter(|at| *at > now)
            .min();
        if next != self.timer {
            self.timer = next;
            self.actions.push_back(match next {
                Some(at) => Action::SetTimer(at),
                None => Action::CancelTimer,
            });
        }
    }
}

/// The holders of one shard, as [`Core::shard_holders`] gathers them.
#[derive(Clone, Copy, Default)]
struct ShardHolders<'a> {
    /// The holder, if there is exactly one.
    sole: Option<(&'a NodeId, Holding)>,
    count: usize,
    /// The active owner a tie would keep, while two claims stand.
    owner: Option<(Epoch, &'a NodeId)>,
}

impl<'a> ShardHolders<'a> {
    fn add(&mut self, node: &'a NodeId, holding: Holding) {
        self.count += 1;
        self.sole = (self.count == 1).then_some((node, holding));
        if let Holding::Active { epoch, .. } = holding {
            if self.owner.is_none_or(|best| (epoch, node) < best) {
                self.owner = Some((epoch, node));
            }
        }
    }
}
