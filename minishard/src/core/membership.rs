//! Membership: the member list in force, when to ask for it again, and
//! whether the members still count this node as one of theirs (docs/design.md 2,
//! 6.6).
//!
//! A member dropped from the others' lists is refused by them, and its own
//! list may not say so yet. Its refusals tell it: while some member refuses
//! it as a non-member and no member is connected to it, it does not count
//! itself among the visible members, so it degrades and gives its shard up
//! before the others' grace for it ends, even in a cluster of one shard.
//!
//! A node whose cookie, cluster name or version differs from the members'
//! is refused the same way, and is part of no cluster either (6.8). Those
//! refusals are symmetric (each side refuses the other), so they keep out
//! only a node that has not yet been accepted or available since it last
//! degraded: in a cluster of two, the node that was serving goes on, and
//! the newcomer is the misconfigured one.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::config;
use super::events::{Call, CallId, Outbox, RefusalReason};
use super::ids::{NodeId, Role};
use super::snapshot::PeerRefusals;
use super::time::Instant;
use super::view::PeerView;

/// One member's refusals of this node.
#[derive(Debug)]
struct Refusals {
    count: u64,
    reason: RefusalReason,
    detail: String,
    /// The latest, while it has not accepted this node since.
    last: Option<Instant>,
}

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
    /// Every misconfiguration refusal by a member, per member, since join.
    refusals: BTreeMap<NodeId, Refusals>,
    /// Accepted by a member, or available, since this node last degraded:
    /// symmetric refusals (a cookie, cluster or version mismatch) no longer
    /// keep it out (6.8).
    established: bool,
    /// Since when the node has been out of the cluster (see
    /// [`Membership::misconfigured`]).
    out_since: Option<Instant>,
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
            refusals: BTreeMap::new(),
            established: false,
            out_since: None,
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
    /// by its own list, and is not out of the cluster (see
    /// [`Membership::misconfigured`]).
    pub fn counts_itself(&self, now: Instant, view: &PeerView) -> bool {
        self.am_member() && !self.misconfigured(now, view)
    }

    /// Whether this node is part of no cluster: no member is connected to
    /// it, and some member refuses it lately — as a non-member (6.6), or,
    /// unless it is established, for a cookie, cluster or version mismatch
    /// (6.8). A node refused by some members and accepted by others is part
    /// of the cluster.
    pub fn misconfigured(&self, now: Instant, view: &PeerView) -> bool {
        if self.accepted(view) {
            return false;
        }
        self.turned_away(now) || (!self.established && self.mismatched(now))
    }

    /// Whether some member is connected to this node.
    fn accepted(&self, view: &PeerView) -> bool {
        view.links().any(|(peer, role, _)| {
            role == Role::Member && (self.role == Role::Observer || self.set.contains(peer))
        })
    }

    /// Whether some member refused this node for a misconfiguration lately.
    fn mismatched(&self, now: Instant) -> bool {
        self.refusals
            .values()
            .any(|r| r.last.is_some_and(|at| now < at + self.refusal_memory))
    }

    /// Notes this node's standing after an evaluation: accepted by a member
    /// or available makes it established; degraded ends that.
    pub fn note_standing(
        &mut self,
        now: Instant,
        view: &PeerView,
        available: bool,
        degraded: bool,
    ) {
        if self.accepted(view) || available {
            self.established = true;
        } else if degraded {
            self.established = false;
        }
        if self.misconfigured(now, view) {
            self.out_since.get_or_insert(now);
        } else {
            self.out_since = None;
        }
    }

    /// Whether being out of the cluster is the node's configuration, not a
    /// moment's disagreement, so that waiting for it to become available is
    /// pointless: a cookie, cluster or version mismatch at once; refusals as
    /// a non-member only once they have lasted a member-list poll and a
    /// redial, since members read a new list only at their next poll (a
    /// node added to the list is refused until then).
    pub fn misconfiguration_settled(&self, now: Instant, view: &PeerView) -> bool {
        let Some(since) = self.out_since else {
            return false;
        };
        let mismatch = !self.established
            && self.refusals.values().any(|r| {
                r.reason != RefusalReason::NotAMember
                    && r.last.is_some_and(|at| now < at + self.refusal_memory)
            });
        self.misconfigured(now, view)
            && (mismatch || now >= since + self.poll_every + self.refusal_memory)
    }

    /// Every member's refusals, for the snapshot.
    pub fn refusals(&self, now: Instant) -> Vec<PeerRefusals> {
        self.refusals
            .iter()
            .map(|(peer, r)| PeerRefusals {
                peer: peer.clone(),
                count: r.count,
                reason: r.reason,
                detail: r.detail.clone(),
                refusing: r.last.is_some_and(|at| now < at + self.refusal_memory),
            })
            .collect()
    }

    /// A peer refused this node. Returns true if that can change whether it
    /// counts itself.
    pub fn refused(
        &mut self,
        now: Instant,
        peer: &NodeId,
        reason: RefusalReason,
        detail: String,
    ) -> bool {
        if !reason.is_misconfiguration() || !self.set.contains(peer) {
            return false;
        }
        let first = self.refusals.get(peer).is_none_or(|r| r.last.is_none());
        if first {
            tracing::warn!(%peer, %reason, %detail, "a member refuses this node");
        }
        let entry = self.refusals.entry(peer.clone()).or_insert(Refusals {
            count: 0,
            reason,
            detail: String::new(),
            last: None,
        });
        entry.count += 1;
        entry.reason = reason;
        entry.detail = detail;
        entry.last = Some(now);
        if reason == RefusalReason::NotAMember {
            self.refused_by.insert(peer.clone(), now);
        }
        true
    }

    /// A handshake with `peer` succeeded: it accepts this node now.
    pub fn connected(&mut self, peer: &NodeId) {
        self.refused_by.remove(peer);
        if let Some(r) = self.refusals.get_mut(peer) {
            r.last = None;
        }
    }

    /// When the next remembered refusal runs out.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let settles = self.out_since.map(|at| at + self.poll_every);
        self.refused_by
            .values()
            .copied()
            .chain(self.refusals.values().filter_map(|r| r.last))
            .chain(settles)
            .map(|at| at + self.refusal_memory)
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
        self.refusals.retain(|peer, _| list.contains(peer));
        self.list = list.into();
        true
    }
}
