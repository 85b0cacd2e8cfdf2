//! Membership: the member list in force, when to ask for it again, and
//! whether the members still count this node as one of theirs (docs/design.md 2,
//! 6.6).
//!
//! A member dropped from the others' lists is refused by them, and its own
//! list may not say so yet. Its refusals tell it: while some member refuses
//! it as a non-member and no member is connected to it, it does not count
//! itself among the visible members, so it degrades and gives its shard up
//! before the others' grace for it ends, even in a cluster of one shard.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::config;
use super::events::{Call, CallId, Outbox, RefusalReason};
use super::ids::{NodeId, Role};
use super::time::Instant;
use super::view::PeerView;

/// The member list and what this node knows of its own place in it.
#[derive(Debug)]
pub(super) struct Membership {
    me: NodeId,
    role: Role,
    list: Arc<[NodeId]>,
    /// The same, to look up: every evaluation asks of every peer.
    set: HashSet<NodeId>,
    /// Members that refused this node as a non-member, and when they last
    /// did; forgotten on connecting to them.
    refused_by: BTreeMap<NodeId, Instant>,
    /// How long a refusal counts: a peer that keeps refusing is dialled
    /// again well within this.
    refusal_memory: Duration,
    next_poll: Instant,
    poll: Option<CallId>,
    poll_every: Duration,
}

impl Membership {
    pub fn new(
        me: NodeId,
        role: Role,
        list: Vec<NodeId>,
        now: Instant,
        poll_every: Duration,
        refusal_memory: Duration,
    ) -> Membership {
        Membership {
            me,
            role,
            set: list.iter().cloned().collect(),
            list: list.into(),
            refused_by: BTreeMap::new(),
            refusal_memory,
            next_poll: now + poll_every,
            poll: None,
            poll_every,
        }
    }

    /// The member list in force.
    pub fn list(&self) -> &Arc<[NodeId]> {
        &self.list
    }

    /// Whether this node takes part as a member (in the list, joined as one).
    pub fn am_member(&self) -> bool {
        self.role == Role::Member && self.set.contains(&self.me)
    }

    /// Whether some member refused this node as not theirs lately, and no
    /// member is connected to it: it is out of the cluster (docs/design.md 6.6).
    pub fn turned_away(&self, now: Instant) -> bool {
        self.refused_by
            .values()
            .any(|at| now < *at + self.refusal_memory)
    }

    /// Whether `node` is in the member list.
    pub fn listed(&self, node: &NodeId) -> bool {
        self.set.contains(node)
    }

    /// Whether `node` is a member. An observer also counts the members it
    /// learned of through relays, since it may know only the one it dialled.
    pub fn is_member(&self, node: &NodeId, view: &PeerView) -> bool {
        self.set.contains(node)
            || (self.role == Role::Observer
                && view.record(node).is_some_and(|r| r.role == Role::Member))
    }

    /// The member list, plus for an observer the members it learned of.
    pub fn known_members(&self, view: &PeerView) -> Vec<NodeId> {
        let mut list = self.list.to_vec();
        if self.role == Role::Observer {
            let learned = view
                .all()
                .map(|(id, _)| id)
                .filter(|id| !self.set.contains(*id) && self.is_member(id, view));
            list.extend(learned.cloned());
        }
        list
    }

    /// Whether this node counts itself among the visible members: it is one
    /// by its own list, and the members do not all turn it away — while some
    /// member refuses it as a non-member and none is connected to it, it is
    /// out of the cluster, whatever its own list says (docs/design.md 6.6).
    pub fn counts_itself(&self, now: Instant, view: &PeerView) -> bool {
        if !self.am_member() {
            return false;
        }
        let turned_away = self.turned_away(now);
        let accepted = view
            .links()
            .any(|(peer, role, _)| role == Role::Member && self.set.contains(peer));
        accepted || !turned_away
    }

    /// A peer refused this node. Returns true if that can change whether it
    /// counts itself.
    pub fn refused(&mut self, now: Instant, peer: &NodeId, reason: RefusalReason) -> bool {
        if reason != RefusalReason::NotAMember || !self.set.contains(peer) {
            return false;
        }
        let first = self.refused_by.insert(peer.clone(), now).is_none();
        if first {
            tracing::warn!(%peer, "a member refused this node as not in its member list");
        }
        true
    }

    /// A handshake with `peer` succeeded: it accepts this node now.
    pub fn connected(&mut self, peer: &NodeId) {
        self.refused_by.remove(peer);
    }

    /// When the next remembered refusal runs out.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.refused_by
            .values()
            .map(|at| *at + self.refusal_memory)
            .filter(|at| *at > now)
            .min()
    }

    /// Asks for the member list when it is time to.
    pub fn poll(&mut self, now: Instant, out: &mut Outbox) {
        if now >= self.next_poll && self.poll.is_none() {
            self.next_poll = now + self.poll_every;
            self.poll = Some(out.call(Call::Nodes));
        }
    }

    /// When the member list is asked for next.
    pub fn next_poll(&self) -> Instant {
        self.next_poll
    }

    /// Whether `id` is the poll in flight; it is done if so.
    pub fn poll_done(&mut self, id: CallId) -> bool {
        if self.poll == Some(id) {
            self.poll = None;
            true
        } else {
            false
        }
    }

    /// Takes a new member list. Returns true if it changed.
    pub fn update(&mut self, list: Vec<NodeId>, shard_count: u32, out: &mut Outbox) -> bool {
        if let Err(error) = config::validate_members(&list) {
            out.counters.failed_callbacks += 1;
            tracing::warn!(%error, "ignored an unusable member list");
            return false;
        }
        if *self.list == *list {
            return false;
        }
        if (shard_count as usize) > list.len() {
            tracing::warn!(
                shard_count,
                members = list.len(),
                "the member list is shorter than shard_count: the cluster will be degraded"
            );
        }
        if !list.contains(&self.me) && self.am_member() {
            tracing::warn!("this node is no longer in its own member list: it gives its shard up");
        }
        self.set = list.iter().cloned().collect();
        self.refused_by.retain(|peer, _| list.contains(peer));
        self.list = list.into();
        true
    }
}
