//! The sans-IO core: one node's state machine for one cluster.
//!
//! Events go in ([`Core::handle`]), each with the current [`Instant`];
//! actions come out ([`Core::poll_action`]): send this message to that peer,
//! wake me at this instant, run this callback, publish this snapshot. The core
//! never sleeps, reads a clock, spawns a thread or touches a socket, so the
//! tokio engine and the deterministic simulator ([`crate::sim`]) drive the
//! very same code ([`events`] is the whole contract).
//!
//! Inside, each rule lives with the state it owns, and reads the rest:
//!
//! - [`view`]: the peer view — records, links, liveness — with [`reach`],
//!   which peers a path of sightings leads to;
//! - `relays`: what to pass on to whom, so records cross paths of any length;
//! - `membership`: the member list, its polling, refusals by other members;
//! - [`watcher`]: the health;
//! - `allocation`: this node's allocation lifecycle, pairing and epochs;
//! - [`conflict`]: conflict episodes, offers and who lost;
//! - `own_record`: the record this node publishes.
//!
//! [`Core`] routes each event to them and gathers their actions; it owns no
//! rule itself. After every batch of events it re-evaluates the whole
//! picture (level-triggered), so no rule depends on having seen one
//! particular event.

mod allocation;
pub mod config;
pub mod conflict;
pub mod events;
#[cfg(test)]
mod harness;
pub mod ids;
mod membership;
mod own_record;
pub mod reach;
pub mod record;
mod relays;
#[cfg(test)]
mod rules_tests;
pub mod snapshot;
pub mod time;
mod unlisted;
pub mod view;
pub mod watcher;

use std::sync::Arc;

pub use config::{ConfigError, CoreConfig, Quorum, Timings, MAX_SHARDS};
pub use events::{Action, Call, CallId, Event, Outcome, RefusalReason, ReleaseReason};
pub use ids::{AddressError, Incarnation, NodeId, Role};
pub use record::{
    next_epoch, Ack, Claim, Epoch, Holding, Metadata, PeerMessage, Record, ScoreOffer, Shard,
    Sighting, Yield, EPOCH_TAG_BITS,
};
pub use snapshot::{CoreCounters, LocalState, NodeState, Owner, PeerRefusals, Snapshot};
pub use time::Instant;
pub use watcher::Health;

use allocation::{Allocation, Ctx};
use conflict::{Conflicts, Contender};
use events::Outbox;
use membership::Membership;
use own_record::{Draft, OwnRecord};
use relays::Relays;
use view::{Liveness, PeerView};
use watcher::{Observation, Watcher};

/// One node's state machine for one cluster.
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    incarnation: Incarnation,
    membership: Membership,
    view: PeerView,
    relays: Relays,
    watcher: Watcher,
    allocation: Allocation,
    conflicts: Conflicts,
    own: OwnRecord,
    /// Relays refused because their authors were not listed yet.
    unlisted: unlisted::Unlisted,
    /// Leaving, and why (left or shut down).
    leaving: Option<ReleaseReason>,
    closed: bool,
    snapshot: Option<Arc<Snapshot>>,
    timer: Option<Instant>,
    out: Outbox,
}

impl Core {
    /// A node starting at `now` with a fresh `incarnation`. The config must
    /// have passed [`CoreConfig::validate`].
    pub fn new(config: CoreConfig, incarnation: Incarnation, now: Instant) -> Core {
        let t = config.timings;
        // A member that keeps refusing is dialled again within the heartbeat
        // timeout (the dialler's back-off cap): twice that covers a retry.
        let refusal_memory = t.heartbeat_timeout * 2;
        let mut core = Core {
            membership: Membership::new(
                config.me.clone(),
                config.role,
                config.members.clone(),
                now,
                t.member_poll,
                refusal_memory,
            ),
            view: PeerView::new(config.me.clone(), t.heartbeat_timeout * 2),
            relays: Relays::new(config.me.clone(), now, t.heartbeat_timeout),
            watcher: Watcher::new(t.transition_timeout),
            allocation: Allocation::new(now, config.shard_count, &t),
            conflicts: Conflicts::default(),
            own: OwnRecord::new(
                config.me.clone(),
                incarnation,
                config.role,
                config.shard_count,
            ),
            unlisted: unlisted::Unlisted::default(),
            config,
            incarnation,
            leaving: None,
            closed: false,
            snapshot: None,
            timer: None,
            out: Outbox::default(),
        };
        core.out
            .push(Action::SetMembers(core.membership.list().clone()));
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

    /// The record this node last published about itself.
    pub fn highest_seen(&self, shard: Shard) -> Option<&Claim> {
        self.allocation.highest().get(shard as usize)?.as_ref()
    }

    /// This node's record, as it publishes it.
    pub fn record(&self) -> &Arc<Record> {
        self.own.published()
    }

    /// The counters.
    pub fn counters(&self) -> CoreCounters {
        self.out.counters
    }

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop()
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
                self.relays.forget(&peer);
                self.unlisted.forget_relayer(&peer);
                if self.view.lost(&peer) {
                    self.relays.mark_dirty();
                }
            }
            Event::Message { from, message } => self.on_message(&from, message),
            Event::CallDone { id, outcome } => self.on_call_done(now, id, outcome),
            Event::MembersChanged(list) => self.on_members(list),
            Event::RefusedBy {
                peer,
                reason,
                detail,
            } => {
                self.membership.refused(now, &peer, reason, detail);
            }
            Event::Leave => {
                self.leaving.get_or_insert(ReleaseReason::Left);
            }
            Event::Shutdown => {
                self.leaving.get_or_insert(ReleaseReason::Shutdown);
            }
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
        self.membership.connected(&peer);
        self.relays.forget(&peer);
        // Our record in full on connect; changes follow as they happen.
        self.out.send(
            peer.clone(),
            PeerMessage::Record(self.own.published().clone()),
        );
        if self.config.role == Role::Member {
            let (membership, view) = (&self.membership, &self.view);
            self.relays
                .on_connect(view, &peer, |n| membership.listed(n), &mut self.out);
        }
        self.out.send(
            peer,
            PeerMessage::Epochs(self.allocation.highest().to_vec()),
        );
        self.relays.mark_dirty();
    }

    fn on_message(&mut self, from: &NodeId, message: PeerMessage) {
        let (record, current) = match message {
            PeerMessage::Record(record) if record.node == *from => (record, true),
            PeerMessage::Relay { record, current } => (record, current),
            PeerMessage::Epochs(highest) => {
                // Passed on when it taught this node something: an owner
                // beyond the sender may hold a shard below an epoch a store
                // has seen (docs/design.md 7.5).
                if self.allocation.merge_highest(&highest) {
                    let table = self.allocation.highest().to_vec();
                    let peers: Vec<NodeId> = self
                        .view
                        .links()
                        .map(|(peer, _, _)| peer.clone())
                        .filter(|peer| peer != from)
                        .collect();
                    for peer in peers {
                        self.out.send(peer, PeerMessage::Epochs(table.clone()));
                    }
                }
                return;
            }
            PeerMessage::Record(record) => {
                self.out.counters.ignored_messages += 1;
                tracing::debug!(%from, author = %record.node, "ignored another node's record sent as the sender's own");
                return;
            }
        };
        self.learn_shard_count(&record);
        self.allocation.note_epochs(&record);
        // An observer learns who the members are from the members it meets.
        let trusts_relays = self.config.role == Role::Observer && record.role == Role::Member;
        let membership = &self.membership;
        let is_member = |n: &NodeId| membership.listed(n) || trusts_relays;
        match self.view.accept(
            from,
            record.clone(),
            current,
            is_member,
            self.config.shard_count,
        ) {
            Ok(view::Accepted::New | view::Accepted::Confirmed) => self.relays.mark_dirty(),
            Ok(view::Accepted::Known) => {}
            Err(view::Refusal::ShardCountMismatch) => {
                self.out.counters.ignored_messages += 1;
                tracing::warn!(
                    %from,
                    author = %record.node,
                    theirs = record.shard_count,
                    ours = self.config.shard_count,
                    "a member keeps another number of shards: its record is ignored; fix the shard_count callbacks"
                );
            }
            Err(view::Refusal::NotAMember) if *from != record.node => {
                // Listed by the relayer, not yet by this node: kept for
                // when it is (unlisted.rs).
                self.out.counters.ignored_messages += 1;
                tracing::debug!(%from, author = %record.node, "kept a relay of a member not listed here yet");
                self.unlisted.hold(from, record, current);
            }
            Err(refusal) => {
                self.out.counters.ignored_messages += 1;
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
            self.allocation.resize(record.shard_count);
            tracing::info!(shard_count = record.shard_count, "learned the shard count");
        }
    }

    fn on_members(&mut self, list: Vec<NodeId>) {
        if self
            .membership
            .update(list, self.config.shard_count, &mut self.out)
        {
            self.out
                .push(Action::SetMembers(self.membership.list().clone()));
            self.relays.mark_dirty();
            let membership = &self.membership;
            for (from, record, current) in self.unlisted.take_listed(|n| membership.listed(n)) {
                self.on_message(&from, PeerMessage::Relay { record, current });
            }
        }
    }

    fn on_call_done(&mut self, now: Instant, id: CallId, outcome: Outcome) {
        if self.membership.poll_done(id) {
            match outcome {
                Outcome::Members(list) => self.on_members(list),
                other => {
                    self.out.counters.failed_callbacks += 1;
                    tracing::warn!(
                        ?other,
                        callback_failure = true,
                        "nodes callback failed: keeping the member list"
                    );
                }
            }
            return;
        }
        let ctx = Ctx::of(
            now,
            &self.config,
            self.incarnation,
            &self.view,
            &self.membership,
        );
        if self
            .allocation
            .on_call_done(&ctx, id, &outcome, &mut self.leaving, &mut self.out)
            || self.conflicts.on_call_done(id, &outcome, &mut self.out)
        {
            return;
        }
        if let Outcome::Failed(reason) = outcome {
            // `prolonged` and `status_changed` failures change nothing.
            self.out.counters.failed_callbacks += 1;
            tracing::warn!(%reason, callback_failure = true, "a callback failed");
        }
    }

    /// The whole picture again, after any batch of events.
    fn evaluate(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if self.view.refresh(now, self.config.timings.node_grace) {
            self.relays.mark_dirty();
        }
        self.membership.poll(now, &mut self.out);
        self.update_health(now);
        self.manage(now);
        if self.closed {
            return;
        }
        self.update_health(now);
        let health = self.watcher.health();
        self.membership.note_standing(
            now,
            &self.view,
            health == Health::Available,
            health == Health::Degraded,
        );
        self.publish(now);
        if self.config.role == Role::Member {
            let membership = &self.membership;
            self.relays
                .send(now, &self.view, |n| membership.listed(n), &mut self.out);
        }
        self.publish_snapshot(now);
        self.arm_timer(now);
    }

    /// Applies every allocation rule to the current picture: leave, hold or
    /// release, end a yield, resolve a conflict, acknowledge losers, claim.
    fn manage(&mut self, now: Instant) {
        let ctx = Ctx::of(
            now,
            &self.config,
            self.incarnation,
            &self.view,
            &self.membership,
        );
        let out = &mut self.out;
        if let Some(why) = self.leaving {
            if self.allocation.leave_step(&ctx, why, out) {
                self.finish_leave(now);
            }
            return;
        }
        // docs/design.md 5, 6.6: a degraded node, or one that is not a member,
        // holds no shard.
        let cannot_hold = if !self.membership.am_member() {
            Some(ReleaseReason::Removed)
        } else if self.watcher.health() == Health::Degraded {
            // Degraded because every member it reaches refuses it as not
            // theirs: it was removed, whatever its own list says.
            Some(if self.membership.turned_away(now) {
                ReleaseReason::Removed
            } else {
                ReleaseReason::Degraded
            })
        } else {
            None
        };
        self.allocation.adjust(&ctx, cannot_hold, out);
        self.allocation.finish_yield(&ctx, out);
        let contender = self
            .allocation
            .holding()
            .contending()
            .map(|(shard, epoch)| Contender {
                claim: Claim {
                    node: self.config.me.clone(),
                    incarnation: self.incarnation,
                    epoch,
                },
                shard,
                active: self.allocation.is_active(),
            });
        let t = &self.config.timings;
        if let Some(lost) = self.conflicts.resolve(
            now,
            contender,
            &self.view,
            &self.membership,
            (t.heartbeat_timeout, t.score_deadline),
            out,
        ) {
            self.allocation.yield_to(&ctx, lost, out);
        }
        self.allocation.acknowledge_losers(&ctx);
        // The win is settled once no rival contends any more: then the
        // winner takes an epoch above every other seen and is told.
        let rivals_left = self.conflicts.has_rivals();
        self.allocation.settle(&ctx, rivals_left, out);
        let may_claim = !self.watcher.too_few();
        if let Some((id, call)) = self.allocation.try_claim(&ctx, may_claim, out) {
            // The claim goes out to every peer before `allocated` runs.
            self.publish(now);
            self.out.call_with(id, call);
        }
    }

    fn finish_leave(&mut self, now: Instant) {
        // Peers take the shard at once on seeing this (docs/design.md 6.4).
        self.publish(now);
        self.publish_snapshot(now);
        self.closed = true;
        if self.timer.take().is_some() {
            self.out.push(Action::CancelTimer);
        }
        self.out.push(Action::Close);
    }

    fn observe(&self, now: Instant) -> Observation {
        let membership = &self.membership;
        let visible_peers = self
            .view
            .links()
            .filter(|(id, role, _)| *role == Role::Member && membership.is_member(id, &self.view))
            .count();
        let settled_ownership = self.shard_holders().iter().all(|holders| {
            match holders.sole {
                // An owner out of this node's reach that a path of sightings
                // still leads to is an owner all the same (docs/design.md 5, 6.1);
                // a member removed from the list that still holds its shard
                // is not one (6.6).
                Some((node, Holding::Active { .. })) => {
                    node == &self.config.me
                        || (membership.is_member(node, &self.view)
                            && matches!(
                                self.view.liveness(node),
                                Liveness::Up | Liveness::Unreachable
                            ))
                }
                _ => false,
            }
        });
        // An observer that has not learned the shard count yet knows nothing.
        let shard_count = (self.config.shard_count as usize).max(1);
        Observation {
            visible_members: visible_peers
                + usize::from(self.membership.counts_itself(now, &self.view)),
            // docs/design.md 6.7: in strict mode also a majority of the list.
            needed_members: self
                .config
                .quorum
                .members_needed(shard_count, self.membership.list().len()),
            settled_ownership,
        }
    }

    fn update_health(&mut self, now: Instant) {
        let seen = self.observe(now);
        if let Some((old, new)) = self.watcher.update(now, seen) {
            tracing::info!(%old, %new, "health changed");
            if old == Health::Degraded {
                self.allocation
                    .met_too_few_until(now + self.config.timings.heartbeat_timeout);
            }
            self.out.call(Call::StatusChanged { old, new });
        }
    }

    /// Who holds each shard in this view, this node included, gathered in
    /// one pass over the peers. A member removed from the list still counts
    /// while its record does: it may still hold the shard (docs/design.md 6.6).
    fn shard_holders(&self) -> Vec<ShardHolders<'_>> {
        let mut shards = vec![ShardHolders::default(); self.config.shard_count as usize];
        let own = self.allocation.holding();
        let peers = self
            .view
            .present_records()
            .filter(|(r, _)| r.role == Role::Member)
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

    /// Publishes this node's record if something in it changed.
    fn publish(&mut self, now: Instant) {
        let role = if self.membership.am_member() {
            Role::Member
        } else {
            Role::Observer
        };
        let draft = Draft {
            role,
            shard_count: self.config.shard_count,
            health: self.watcher.health(),
            holding: self.allocation.holding(),
            sees: self.view.sightings(),
            offer: self.conflicts.offer().cloned(),
            yielded: self.allocation.yielded().cloned(),
            acknowledged: self.allocation.acknowledged().to_vec(),
            metadata: self.config.metadata.clone(),
            released: self.allocation.released(),
        };
        if self
            .own
            .sync(now, draft, &self.config.timings, &self.view, &mut self.out)
        {
            self.relays.mark_dirty();
        }
    }

    fn publish_snapshot(&mut self, now: Instant) {
        let snapshot = self.build_snapshot(now);
        if self.snapshot.as_deref() != Some(&snapshot) {
            let snapshot = Arc::new(snapshot);
            self.snapshot = Some(snapshot.clone());
            self.out.push(Action::Publish(snapshot));
        }
    }

    fn build_snapshot(&self, now: Instant) -> Snapshot {
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
        let membership = &self.membership;
        let am_member = membership.am_member();
        let mut nodes: Vec<(NodeId, NodeState)> = Vec::new();
        for member in membership
            .known_members(&self.view)
            .iter()
            .filter(|m| **m != self.config.me)
        {
            nodes.push((member.clone(), self.node_state(member)));
        }
        for (id, _) in self.view.up() {
            if !membership.is_member(id, &self.view) {
                nodes.push((id.clone(), NodeState::Connected));
            }
        }
        let own_state = match self.allocation.holding() {
            Holding::Active { shard, .. } => NodeState::Active { shard },
            Holding::Proposing { .. }
            | Holding::Claiming { .. }
            | Holding::Yielding { .. }
            | Holding::Releasing { .. } => NodeState::Transition,
            Holding::Standby => NodeState::Standby,
            Holding::Idle if am_member => NodeState::Standby,
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
        if am_member {
            health_views.push((self.config.me.clone(), self.watcher.health()));
        }
        health_views.sort_by(|a, b| a.0.cmp(&b.0));
        let mut metadata: Vec<(NodeId, Arc<record::Metadata>)> = self
            .view
            .present_records()
            .filter(|(r, _)| !r.metadata.is_empty())
            .map(|(r, _)| (r.node.clone(), r.metadata.clone()))
            .collect();
        if !self.config.metadata.is_empty() {
            metadata.push((self.config.me.clone(), self.config.metadata.clone()));
        }
        metadata.sort_by(|a, b| a.0.cmp(&b.0));
        Snapshot {
            health: self.watcher.health(),
            health_views,
            shard_count: self.config.shard_count,
            owners,
            local: self.allocation.state(),
            nodes,
            members: membership.list().clone(),
            metadata,
            counters: self.out.counters,
            refusals: membership.refusals(now),
            misconfigured: membership.misconfiguration_settled(now, &self.view),
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
                    Holding::Proposing { .. }
                    | Holding::Claiming { .. }
                    | Holding::Yielding { .. }
                    | Holding::Releasing { .. },
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
            self.allocation.next_deadline(now, t),
            self.conflicts.next_deadline(t.score_deadline),
            self.own.next_deadline(),
            self.relays.next_deadline(now, &self.view),
            self.membership.next_deadline(now),
            Some(self.membership.next_poll()),
        ];
        let next = candidates
            .into_iter()
            .flatten()
            .filter(|at| *at > now)
            .min();
        if next != self.timer {
            self.timer = next;
            self.out.push(match next {
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
