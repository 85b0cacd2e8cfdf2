//! Relays: which records to pass on to which peer (docs/design.md 6.1, 6.3).
//!
//! A peer that does not see a record's author gets the record from this
//! node, unchanged, once per version, with whether this node knows it to be
//! current. That is how a claim, a score or a yield crosses a path of any
//! length: each node on it passes on what its next hop cannot see.
//!
//! Only members relay: an observer watches, and its view of who sees whom
//! decides nothing (paths run through members, see `reach`).
//!
//! Reads the peer view; owns only its bookkeeping of what went where.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::events::Outbox;
use super::ids::{Incarnation, NodeId, Role};
use super::record::{Holding, PeerMessage, Record};
use super::time::Instant;
use super::view::PeerView;

/// What one peer got from this node.
#[derive(Debug, Default)]
struct Sent {
    /// The version of each author's record relayed to it, and its currency.
    stamps: BTreeMap<NodeId, (Incarnation, u64, bool)>,
    /// The candidates' authors it does not see, worked out again only when
    /// its record or the set of authors changes.
    unseen: Option<Unseen>,
}

#[derive(Debug)]
struct Unseen {
    /// Its record (incarnation, version, current) and the authors' generation.
    key: (Option<(Incarnation, u64)>, bool, u64),
    /// Positions in the candidates of that generation.
    authors: Vec<usize>,
}

/// The records some peer may need, and what each peer was sent.
#[derive(Debug)]
pub(super) struct Relays {
    /// This node.
    me: NodeId,
    /// Records some peer may need, each with whether this node knows it
    /// current, as of the last [`Relays::refresh`].
    candidates: Vec<(Arc<Record>, bool)>,
    /// Changes when the candidates' authors do.
    generation: u64,
    sent: BTreeMap<NodeId, Sent>,
    /// Something a relay depends on changed since relays were last sent.
    dirty: bool,
    checked_at: Instant,
    heartbeat_timeout: Duration,
}

impl Relays {
    pub fn new(me: NodeId, now: Instant, heartbeat_timeout: Duration) -> Relays {
        Relays {
            me,
            candidates: Vec::new(),
            generation: 0,
            sent: BTreeMap::new(),
            dirty: false,
            checked_at: now,
            heartbeat_timeout,
        }
    }

    /// Something in the view changed: relays are worked out again.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// A connection to `peer` started or ended: it is owed everything again.
    pub fn forget(&mut self, peer: &NodeId) {
        self.sent.remove(peer);
    }

    /// A member peer takes every relay once it has been connected for a
    /// heartbeat timeout: by then a cold start has connected it to everyone
    /// it can reach, and relaying earlier would send it records it gets
    /// directly. Before that it takes only records that hold a shard (or say
    /// their author left), which it must know before it claims anything —
    /// after a heal, say, before it has reconnected to every owner. Observers
    /// take everything at once: they connect to one node only.
    fn full_relays_from(&self, role: Role, since: Instant) -> Instant {
        match role {
            Role::Observer => Instant::ZERO,
            Role::Member => since + self.heartbeat_timeout,
        }
    }

    /// When a connected peer next becomes due for every relay.
    pub fn next_deadline(&self, now: Instant, view: &PeerView) -> Option<Instant> {
        view.links()
            .map(|(_, role, since)| self.full_relays_from(role, since))
            .filter(|at| *at > now)
            .min()
    }

    /// Gathers every record some peer may need relayed: members' records
    /// whose holding still counts (a suspect owner's shard is still
    /// reserved, and a node that (re)starts must hear of it before it
    /// claims), and those saying their author left.
    pub fn refresh(&mut self, view: &PeerView, is_member: impl Fn(&NodeId) -> bool) {
        let candidates: Vec<(Arc<Record>, bool)> = view
            .records_to_pass_on()
            .filter(|(r, _)| is_member(&r.node))
            .map(|(r, current)| (r.clone(), current))
            .collect();
        let same_authors = candidates.len() == self.candidates.len()
            && candidates
                .iter()
                .zip(&self.candidates)
                .all(|((new, _), (old, _))| new.node == old.node);
        if !same_authors {
            self.generation += 1;
        }
        self.candidates = candidates;
    }

    /// Those of the candidates that `to` should get from this node because
    /// it does not see their authors (and `deferred` does not leave them to
    /// another relayer); each is marked as sent and returned once per
    /// version (and currency). With `claims_only`, only records that hold a
    /// shard or say their author left: what a peer must know before it
    /// claims anything.
    pub fn for_peer(
        &mut self,
        view: &PeerView,
        to: &NodeId,
        claims_only: bool,
        deferred: impl Fn(&NodeId, bool) -> bool,
    ) -> Vec<(Arc<Record>, bool)> {
        if !view.is_up(to) {
            return Vec::new();
        }
        let sent = self.sent.entry(to.clone()).or_default();
        // Whom it sees, by its record on this connection (not an old one).
        // In a settled mesh it sees every author, so a change costs one
        // comparison per peer, not a search per peer and author.
        let current = view.is_fresh(to);
        let record = view.record(to);
        let key = (
            record.map(|r| (r.incarnation, r.version)),
            current,
            self.generation,
        );
        if sent.unseen.as_ref().is_none_or(|u| u.key != key) {
            let no_sightings = Vec::new();
            let sees = record
                .filter(|_| current)
                .map_or(&no_sightings, |r| &r.sees);
            // Both sorted by node: one merge walk.
            let mut sees = sees.iter().peekable();
            let mut authors = Vec::new();
            for (at, (candidate, _)) in self.candidates.iter().enumerate() {
                let author = &candidate.node;
                while sees.next_if(|s| s.node < *author).is_some() {}
                let seen = sees.next_if(|s| s.node == *author).is_some();
                if !seen && author != to {
                    authors.push(at);
                }
            }
            sent.unseen = Some(Unseen { key, authors });
        }
        let unseen = &sent.unseen.as_ref().expect("set above").authors;
        let mut relays = Vec::new();
        for &at in unseen {
            let Some((record, current)) = self.candidates.get(at) else {
                continue;
            };
            if claims_only && record.holding.reserved().is_none() && record.holding != Holding::Left
            {
                continue;
            }
            let stamp = (record.incarnation, record.version, *current);
            // Whether another relayer covers it is asked only of what is
            // new to the peer: the question costs a walk over sightings.
            if sent.stamps.get(&record.node) == Some(&stamp) || deferred(&record.node, *current) {
                continue;
            }
            sent.stamps.insert(record.node.clone(), stamp);
            relays.push((record.clone(), *current));
        }
        relays
    }

    /// Right after this node's record, on the same ordered connection, a
    /// newly connected peer gets every claim it may not know of yet: it
    /// hears of them before it could claim anything.
    pub fn on_connect(
        &mut self,
        view: &PeerView,
        peer: &NodeId,
        is_member: impl Fn(&NodeId) -> bool,
        out: &mut Outbox,
    ) {
        self.refresh(view, is_member);
        for (record, current) in self.for_peer(view, peer, true, |_, _| false) {
            out.send(peer.clone(), PeerMessage::Relay { record, current });
        }
    }

    /// Sends what each connected peer is owed, when something changed or a
    /// peer has just become due for every relay.
    pub fn send(
        &mut self,
        now: Instant,
        view: &PeerView,
        is_member: impl Fn(&NodeId) -> bool,
        out: &mut Outbox,
    ) {
        let newly_due = view
            .links()
            .map(|(_, role, since)| self.full_relays_from(role, since))
            .any(|at| at <= now && at > self.checked_at);
        self.checked_at = now;
        if !std::mem::take(&mut self.dirty) && !newly_due {
            return;
        }
        let targets: Vec<(NodeId, bool)> = view
            .links()
            .filter(|(id, _, _)| view.record(id).is_some())
            .map(|(id, role, since)| (id.clone(), self.full_relays_from(role, since) > now))
            .collect();
        self.refresh(view, is_member);
        // Worked out only if some record is to be relayed at all.
        let relayers = std::cell::OnceCell::new();
        let me = self.me.clone();
        for (to, claims_only) in targets {
            let others = std::cell::OnceCell::new();
            let covered = || {
                others.get_or_init(|| {
                    relayers
                        .get_or_init(|| Relayers::of(view, &me))
                        .for_target(view, &to)
                })
            };
            for (record, current) in self.for_peer(view, &to, claims_only, |author, current| {
                covered().see(author) || (!current && covered().any)
            }) {
                out.send(to.clone(), PeerMessage::Relay { record, current });
            }
        }
    }
}

/// Who else relays to whom. A peer that cannot see an author is told of its
/// record by one relayer, not by every peer it shares with that author: the
/// smallest peer it sees (by its record) that sees the author itself (by
/// that peer's current record). This node leaves an author to a smaller
/// such relayer; every node decides alike from the same records, and when
/// records disagree for a moment a record goes twice, or once a little
/// later, never not at all: the smallest relayer in anyone's view defers to
/// no one. After a heal of 25 nodes to 25, each record had been relayed to
/// each peer by up to 24 others, in every version, and that burst of
/// traffic kept the nodes busy past their heartbeat timeout.
struct Relayers<'v> {
    /// Every peer, sorted: positions in the bit sets below.
    peers: Vec<&'v NodeId>,
    /// For each fresh member peer smaller than this node: the peers its
    /// current record says it sees.
    sees: BTreeMap<&'v NodeId, Vec<u64>>,
}

/// The authors some other relayer passes on to one target.
struct Covered<'a> {
    peers: &'a [&'a NodeId],
    bits: Vec<u64>,
    /// The target sees a smaller relayer, which passes on the records
    /// nobody knows current (a lost owner's, still reserved): they go from
    /// it alone.
    any: bool,
}

impl Covered<'_> {
    fn see(&self, author: &NodeId) -> bool {
        self.peers.binary_search(&author).is_ok_and(|at| {
            self.bits
                .get(at / 64)
                .is_some_and(|w| w & (1 << (at % 64)) != 0)
        })
    }
}

impl<'v> Relayers<'v> {
    fn of(view: &'v PeerView, me: &NodeId) -> Relayers<'v> {
        // Peers and sightings are both sorted by node: one merge walk each.
        let peers: Vec<&NodeId> = view.all().map(|(id, _)| id).collect();
        let words = peers.len().div_ceil(64);
        let mut sees = BTreeMap::new();
        for (id, record) in view.up() {
            let Some(record) = record.filter(|r| r.role == Role::Member) else {
                continue;
            };
            if id >= me || !view.is_fresh(id) {
                continue;
            }
            let mut bits = vec![0u64; words];
            let mut sightings = record.sees.iter().peekable();
            for (at, peer) in peers.iter().enumerate() {
                while sightings.next_if(|s| s.node < **peer).is_some() {}
                if sightings.next_if(|s| s.node == **peer).is_some() {
                    bits[at / 64] |= 1 << (at % 64);
                }
            }
            sees.insert(id, bits);
        }
        Relayers { peers, sees }
    }

    /// The authors a smaller relayer that `to` sees passes on to it.
    fn for_target(&self, view: &PeerView, to: &NodeId) -> Covered<'_> {
        let mut bits = vec![0u64; self.peers.len().div_ceil(64)];
        let mut any = false;
        if let Some(record) = view.record(to).filter(|_| view.is_fresh(to)) {
            // The target's sightings and the relayers are both sorted by
            // node: one merge walk, not a search per sighting (this ran for
            // every target after every change during a heal).
            let mut relayers = self.sees.iter().peekable();
            for sighting in &record.sees {
                while relayers.next_if(|(r, _)| ***r < sighting.node).is_some() {}
                if let Some((_, theirs)) = relayers.next_if(|(r, _)| ***r == sighting.node) {
                    any = true;
                    for (mine, theirs) in bits.iter_mut().zip(theirs) {
                        *mine |= theirs;
                    }
                }
            }
        }
        Covered {
            peers: &self.peers,
            bits,
            any,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::Sighting;
    use crate::core::watcher::Health;

    fn id(text: &str) -> NodeId {
        text.parse().expect("an address")
    }

    fn record(node: &str, version: u64, sees: &[&str]) -> Arc<Record> {
        Arc::new(Record {
            node: id(node),
            incarnation: 1,
            version,
            role: Role::Member,
            shard_count: 1,
            health: Health::Available,
            holding: Holding::Standby,
            sees: sees
                .iter()
                .map(|n| Sighting {
                    node: id(n),
                    incarnation: 1,
                })
                .collect(),
            offer: None,
            yielded: None,
            acknowledged: Vec::new(),
            metadata: Default::default(),
            released: None,
        })
    }

    const A: &str = "127.0.0.1:1";
    const B: &str = "127.0.0.1:2";
    const C: &str = "127.0.0.1:3";
    const D: &str = "127.0.0.1:4";

    #[test]
    fn a_peer_gets_each_record_it_cannot_see_once_per_version() {
        let mut view = PeerView::new(id(A), Duration::from_secs(1));
        for peer in [B, C, D] {
            view.connected(Instant::ZERO, &id(peer), 1, Role::Member);
        }
        let member = |_: &NodeId| true;
        // B sees C but not D; C and D see everyone.
        view.accept(&id(B), record(B, 1, &[A, C]), true, member, 1)
            .unwrap();
        view.accept(&id(C), record(C, 1, &[A, B, D]), true, member, 1)
            .unwrap();
        view.accept(&id(D), record(D, 1, &[A, B, C]), true, member, 1)
            .unwrap();
        view.refresh(Instant::ZERO, Duration::from_millis(1500));
        let mut relays = Relays::new(id(A), Instant::ZERO, Duration::from_millis(500));
        relays.refresh(&view, member);
        let authors = |relays: Vec<(Arc<Record>, bool)>| -> Vec<NodeId> {
            relays.into_iter().map(|(r, _)| r.node.clone()).collect()
        };
        assert_eq!(
            authors(relays.for_peer(&view, &id(B), false, |_, _| false)),
            [id(D)]
        );
        assert!(relays
            .for_peer(&view, &id(B), false, |_, _| false)
            .is_empty());
        assert!(relays
            .for_peer(&view, &id(C), false, |_, _| false)
            .is_empty());
        // A new version of D goes again; once B sees D, nothing more does.
        view.accept(&id(D), record(D, 2, &[A, B, C]), true, member, 1)
            .unwrap();
        relays.refresh(&view, member);
        assert_eq!(
            authors(relays.for_peer(&view, &id(B), false, |_, _| false)),
            [id(D)]
        );
        view.accept(&id(B), record(B, 2, &[A, C, D]), true, member, 1)
            .unwrap();
        view.accept(&id(D), record(D, 3, &[A, B, C]), true, member, 1)
            .unwrap();
        relays.refresh(&view, member);
        assert!(relays
            .for_peer(&view, &id(B), false, |_, _| false)
            .is_empty());
    }
}
