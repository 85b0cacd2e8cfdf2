//! The peer view: which peers are up, unreachable, suspect or down, and the
//! latest record of each (docs/design.md 6.1).
//!
//! Liveness is derived, never stored by hand: a peer is up while its link is;
//! unreachable while a path of current sightings leads to it ([`reach`]);
//! suspect for `node_grace` after that; down after. A shard stays reserved
//! to its holder while the holder is up, unreachable or suspect.
//!
//! [`reach`]: super::reach

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::ids::{Incarnation, NodeId, Role};
use super::reach::{self, Known};
use super::record::{Holding, Record, Sighting};
use super::time::Instant;

/// How this node currently sees a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Connected, handshake done.
    Up,
    /// Not connected to us, but a path of current sightings leads to it:
    /// its shard stays reserved.
    Unreachable,
    /// No path leads to it, for less than `node_grace`: its shard stays reserved.
    Suspect,
    /// Gone past its grace, never known, or left: it holds nothing.
    Down,
}

impl Liveness {
    /// Whether the peer's holding still counts.
    pub fn present(self) -> bool {
        !matches!(self, Liveness::Down)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Up {
        since: Instant,
        incarnation: Incarnation,
        role: Role,
    },
    Down,
}

/// Why a record from a peer was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A record of this node itself, sent back to it.
    OwnRecord,
    /// The author's incarnation does not match the connection's handshake.
    WrongIncarnation,
    /// An incarnation that a restart already replaced.
    RetiredIncarnation,
    /// A relayed record of a node that is not in the member list.
    NotAMember,
    /// A claim by a node that is not in the member list.
    ObserverClaim,
    /// A shard number outside `0 .. shard_count`.
    ShardOutOfRange,
    /// A member configured with another number of shards.
    ShardCountMismatch,
    /// A message from a peer that is not connected.
    NotConnected,
    /// Sightings not sorted by node, or a node in them twice.
    UnsortedSightings,
}

/// What became of an accepted record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Newer than what we had.
    New,
    /// The version we had, now confirmed current (it was not known to be).
    Confirmed,
    /// A version we already had (relays reach us by several paths).
    Known,
}

#[derive(Debug)]
struct Peer {
    link: Link,
    record: Option<Arc<Record>>,
    /// This version was confirmed current (sent by its author, or relayed
    /// by a peer that reached the author), and since then no connection to
    /// the author was lost or made. It counts only while the author is
    /// reached ([`PeerView::is_fresh`]); once no path has led to the author
    /// for longer than [`PeerView::confirmation_window`], what it holds may
    /// have changed unseen, and the confirmation is void. (A path that
    /// breaks for a moment, as records cross, voids nothing; a confirmation
    /// that arrives before this node knows the path counts once it does.)
    fresh: bool,
    /// The last instant the record was known current: confirmed, or its
    /// author reached while it was fresh.
    known_current_at: Instant,
    just_confirmed: bool,
    liveness: Liveness,
    suspect_since: Option<Instant>,
    /// Incarnations a restart replaced: never taken back from a late relay.
    retired: BTreeSet<Incarnation>,
}

impl Peer {
    fn current(&self) -> bool {
        self.fresh && matches!(self.liveness, Liveness::Up | Liveness::Unreachable)
    }

    fn new() -> Peer {
        Peer {
            link: Link::Down,
            record: None,
            fresh: false,
            known_current_at: Instant::ZERO,
            just_confirmed: false,
            liveness: Liveness::Down,
            suspect_since: None,
            retired: BTreeSet::new(),
        }
    }

    fn replace_incarnation(&mut self, incarnation: Incarnation) -> bool {
        match &self.record {
            Some(old) if old.incarnation != incarnation => {
                self.retired.insert(old.incarnation);
                self.record = None;
                true
            }
            _ => false,
        }
    }
}

/// Every peer this node knows of.
#[derive(Debug)]
pub struct PeerView {
    me: NodeId,
    peers: BTreeMap<NodeId, Peer>,
    /// Something liveness depends on changed since the last `refresh`.
    changed: bool,
    /// Something reachability depends on (links, sightings, which records
    /// are current) changed since it was last worked out; most record
    /// versions change what their author holds, not whom it sees.
    reach_changed: bool,
    /// The peers out of this node's reach that a path led to, as last
    /// worked out, and which peers were asked about.
    reached: BTreeSet<NodeId>,
    asked: BTreeSet<NodeId>,
    confirmation_window: Duration,
}

impl PeerView {
    /// An empty view for node `me`. A confirmation of a record whose
    /// author no known path reaches counts if a path shows up within
    /// `confirmation_window`: the relayer's sightings follow its relays
    /// within a heartbeat timeout.
    pub fn new(me: NodeId, confirmation_window: Duration) -> PeerView {
        PeerView {
            me,
            peers: BTreeMap::new(),
            changed: false,
            reach_changed: false,
            reached: BTreeSet::new(),
            asked: BTreeSet::new(),
            confirmation_window,
        }
    }

    /// A handshake with `node` completed. Returns true if this voided the
    /// record of an earlier incarnation (a restart: its allocation is void).
    pub fn connected(
        &mut self,
        now: Instant,
        node: &NodeId,
        incarnation: Incarnation,
        role: Role,
    ) -> bool {
        self.changed = true;
        self.reach_changed = true;
        let peer = self.peers.entry(node.clone()).or_insert_with(Peer::new);
        peer.link = Link::Up {
            since: now,
            incarnation,
            role,
        };
        peer.retired.remove(&incarnation);
        // What it held before this connection may have changed meanwhile.
        peer.fresh = false;
        peer.replace_incarnation(incarnation)
    }

    /// The connection to `node` is gone.
    pub fn lost(&mut self, node: &NodeId) -> bool {
        match self.peers.get_mut(node) {
            Some(peer) if matches!(peer.link, Link::Up { .. }) => {
                self.changed = true;
                self.reach_changed = true;
                peer.link = Link::Down;
                // From now on its record may go stale unnoticed.
                peer.fresh = false;
                true
            }
            _ => false,
        }
    }

    /// Whether `node` is connected.
    pub fn is_up(&self, node: &NodeId) -> bool {
        self.peers
            .get(node)
            .is_some_and(|p| matches!(p.link, Link::Up { .. }))
    }

    /// Takes a record that `from` sent: its own, or relayed (then `current`
    /// says whether the relayer knows it to be current).
    pub fn accept(
        &mut self,
        from: &NodeId,
        record: Arc<Record>,
        current: bool,
        is_member: impl Fn(&NodeId) -> bool,
        shard_count: u32,
    ) -> Result<Accepted, Refusal> {
        let author = record.node.clone();
        if author == self.me {
            return Err(Refusal::OwnRecord);
        }
        if !self.is_up(from) {
            return Err(Refusal::NotConnected);
        }
        if !record.sightings_sorted() {
            return Err(Refusal::UnsortedSightings);
        }
        if record.role == Role::Member && record.shard_count != shard_count {
            return Err(Refusal::ShardCountMismatch);
        }
        let in_range = |shard| shard < shard_count;
        if record.holding.reserved().is_some_and(|(s, _)| !in_range(s))
            || record.offer.as_ref().is_some_and(|o| !in_range(o.shard))
            || record.yielded.as_ref().is_some_and(|y| !in_range(y.shard))
        {
            return Err(Refusal::ShardOutOfRange);
        }
        // A member removed from the list is still known by the record it
        // published while it was one: its shard stays reserved by that
        // record (docs/design.md 6.6), and its newer versions (it gave the shard
        // up, say) are taken like any member's.
        let known_member = self
            .peers
            .get(&author)
            .and_then(|p| p.record.as_ref())
            .is_some_and(|r| r.role == Role::Member && r.incarnation == record.incarnation);
        if !is_member(&author) && !known_member {
            if from != &author {
                return Err(Refusal::NotAMember);
            }
            if record.holding.reserved().is_some() {
                return Err(Refusal::ObserverClaim);
            }
        }
        let confirms = from == &author || current;
        let peer = self.peers.entry(author.clone()).or_insert_with(Peer::new);
        match peer.link {
            Link::Up { incarnation, .. } if incarnation != record.incarnation => {
                return Err(Refusal::WrongIncarnation);
            }
            _ => {}
        }
        if peer.retired.contains(&record.incarnation) {
            return Err(Refusal::RetiredIncarnation);
        }
        peer.replace_incarnation(record.incarnation);
        match &peer.record {
            Some(known) if known.version >= record.version => {
                // The same version again, from its author or from a peer that
                // knows it current, confirms it.
                let confirmed = known.version == record.version && confirms;
                peer.just_confirmed |= confirmed;
                self.changed |= confirmed;
                let newly = confirmed && !peer.fresh;
                self.reach_changed |= newly;
                peer.fresh |= confirmed;
                // Newly confirmed: peers this node relays it to may be owed
                // the confirmation.
                Ok(if newly {
                    Accepted::Confirmed
                } else {
                    Accepted::Known
                })
            }
            _ => {
                let same_reach = peer.fresh == confirms
                    && peer.record.as_ref().is_some_and(|old| {
                        old.incarnation == record.incarnation
                            && old.role == record.role
                            && old.sees == record.sees
                    });
                self.reach_changed |= !same_reach;
                peer.record = Some(record);
                peer.fresh = confirms;
                peer.just_confirmed = confirms;
                if confirms {
                    // A version newer than ours that a peer knows current:
                    // its author was alive after we last heard of it, so its
                    // grace starts again, whether or not that peer's own
                    // sightings (published later) name it yet.
                    peer.suspect_since = None;
                }
                self.changed = true;
                Ok(Accepted::New)
            }
        }
    }

    /// Whether `incarnation` of `node` was replaced by a restart.
    pub fn is_retired(&self, node: &NodeId, incarnation: Incarnation) -> bool {
        self.peers
            .get(node)
            .is_some_and(|p| p.retired.contains(&incarnation))
    }

    /// Whether a peer's record is known to be current: confirmed, and its
    /// author reached now (see `Peer::fresh`).
    pub fn is_fresh(&self, node: &NodeId) -> bool {
        self.peers.get(node).is_some_and(Peer::current)
    }

    /// Recomputes every peer's liveness. Returns true if any changed.
    /// Cheap when nothing it depends on changed and no grace ended, since
    /// the core asks after every event.
    pub fn refresh(&mut self, now: Instant, grace: Duration) -> bool {
        let grace_ended = self.next_grace_end(grace).is_some_and(|end| end <= now);
        if !std::mem::take(&mut self.changed) && !grace_ended {
            return false;
        }
        // Whom a path of current sightings leads to: an unreachable peer
        // stays reserved instead of going suspect (docs/design.md 6.1). Asked
        // only of the peers out of reach that hold something, and only
        // again when something it depends on changed.
        let asked: BTreeSet<&NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p.link, Link::Down))
            .filter(|(_, p)| {
                p.record
                    .as_ref()
                    .is_some_and(|r| r.holding != Holding::Left)
            })
            .map(|(id, _)| id)
            .collect();
        if std::mem::take(&mut self.reach_changed) || !asked.iter().copied().eq(&self.asked) {
            let peers = &self.peers;
            let linked = peers
                .iter()
                .filter(|(_, p)| matches!(p.link, Link::Up { .. }))
                .map(|(id, _)| id);
            let found = reach::reached(linked, &asked, |node| {
                peers.get(node).map(|p| Known {
                    record: p.record.as_deref(),
                    current: p.fresh,
                })
            });
            self.reached = found.into_iter().cloned().collect();
            self.asked = asked.into_iter().cloned().collect();
        }
        let reached = &self.reached;
        let mut changed = false;
        let mut reach_changed = false;
        for (id, peer) in &mut self.peers {
            let left = peer
                .record
                .as_ref()
                .is_some_and(|r| r.holding == Holding::Left);
            let liveness = match (&peer.link, &peer.record) {
                _ if left => Liveness::Down,
                (Link::Up { .. }, _) => Liveness::Up,
                (Link::Down, None) => Liveness::Down,
                (Link::Down, Some(_)) if reached.contains(id) => Liveness::Unreachable,
                (Link::Down, Some(_)) => {
                    let since = *peer.suspect_since.get_or_insert(now);
                    if now >= since + grace {
                        Liveness::Down
                    } else {
                        Liveness::Suspect
                    }
                }
            };
            let reached = matches!(liveness, Liveness::Up | Liveness::Unreachable);
            let was_reached = matches!(peer.liveness, Liveness::Up | Liveness::Unreachable);
            if reached || left {
                peer.suspect_since = None;
            }
            if std::mem::take(&mut peer.just_confirmed) {
                peer.known_current_at = now;
            }
            if reached
                && peer.fresh
                && !was_reached
                && now > peer.known_current_at + self.confirmation_window
            {
                // Out of reach too long: what it holds may have changed
                // unseen, and a newer version, if any, is on its way.
                peer.fresh = false;
                reach_changed = true;
            }
            // Current until now if reached now, or reached until now.
            if peer.fresh && (reached || was_reached) {
                peer.known_current_at = now;
            }
            if liveness != peer.liveness {
                peer.liveness = liveness;
                changed = true;
            }
        }
        self.reach_changed |= reach_changed;
        changed
    }

    /// When the earliest suspect peer's grace ends.
    pub fn next_grace_end(&self, grace: Duration) -> Option<Instant> {
        self.peers
            .values()
            .filter(|p| p.liveness == Liveness::Suspect)
            .filter_map(|p| p.suspect_since)
            .map(|since| since + grace)
            .min()
    }

    /// A peer's liveness (`Down` for a peer never heard of).
    pub fn liveness(&self, node: &NodeId) -> Liveness {
        self.peers.get(node).map_or(Liveness::Down, |p| p.liveness)
    }

    /// A peer's latest record.
    pub fn record(&self, node: &NodeId) -> Option<&Arc<Record>> {
        self.peers.get(node).and_then(|p| p.record.as_ref())
    }

    /// Peers that are up, with the role they declared and since when.
    pub fn links(&self) -> impl Iterator<Item = (&NodeId, Role, Instant)> {
        self.peers.iter().filter_map(|(id, p)| match p.link {
            Link::Up { since, role, .. } => Some((id, role, since)),
            Link::Down => None,
        })
    }

    /// A peer's liveness and record, in one lookup.
    pub fn peer(&self, node: &NodeId) -> (Liveness, Option<&Arc<Record>>) {
        self.peers
            .get(node)
            .map_or((Liveness::Down, None), |p| (p.liveness, p.record.as_ref()))
    }

    /// Peers that are up, with their record if it arrived.
    pub fn up(&self) -> impl Iterator<Item = (&NodeId, Option<&Arc<Record>>)> {
        self.peers
            .iter()
            .filter(|(_, p)| matches!(p.link, Link::Up { .. }))
            .map(|(id, p)| (id, p.record.as_ref()))
    }

    /// Records of every peer whose holding still counts.
    pub fn present_records(&self) -> impl Iterator<Item = (&Arc<Record>, Liveness)> {
        self.peers
            .values()
            .filter(|p| p.liveness.present())
            .filter_map(|p| p.record.as_ref().map(|r| (r, p.liveness)))
    }

    /// Every peer we know, with its liveness.
    pub fn all(&self) -> impl Iterator<Item = (&NodeId, Liveness)> {
        self.peers.iter().map(|(id, p)| (id, p.liveness))
    }

    /// The member peers this node sees, as it publishes them.
    pub fn sightings(&self) -> Vec<Sighting> {
        self.peers
            .iter()
            .filter_map(|(id, p)| match p.link {
                Link::Up {
                    incarnation,
                    role: Role::Member,
                    ..
                } => Some(Sighting {
                    node: id.clone(),
                    incarnation,
                }),
                _ => None,
            })
            .collect()
    }

    /// Records a peer may need passed on, each with whether it is known
    /// current: those whose holding still counts, and those saying their
    /// author left (a node must hear of both before it claims).
    pub fn records_to_pass_on(&self) -> impl Iterator<Item = (&Arc<Record>, bool)> {
        self.peers
            .values()
            .filter(|p| {
                p.liveness.present()
                    || p.record
                        .as_ref()
                        .is_some_and(|r| r.holding == Holding::Left)
            })
            // Passed on as current only while this node reaches the author
            // itself: a confirmation it merely heard of proves nothing to
            // the next hop.
            .filter_map(|p| p.record.as_ref().map(|r| (r, p.current())))
    }

    /// Records of peers that left for good, as they last published them.
    pub fn left_records(&self) -> impl Iterator<Item = &Arc<Record>> {
        self.peers
            .values()
            .filter_map(|p| p.record.as_ref())
            .filter(|r| r.holding == Holding::Left)
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
    const GRACE: Duration = Duration::from_millis(1500);

    fn view_of_a() -> PeerView {
        let mut view = PeerView::new(id(A), Duration::from_secs(1));
        for peer in [B, C] {
            view.connected(Instant::ZERO, &id(peer), 1, Role::Member);
        }
        view
    }

    #[test]
    fn sightings_out_of_order_or_twice_are_refused() {
        let mut view = view_of_a();
        let member = |_: &NodeId| true;
        for sees in [&[C, A][..], &[A, A]] {
            let refused = view.accept(&id(B), record(B, 1, sees), true, member, 1);
            assert_eq!(refused, Err(Refusal::UnsortedSightings));
        }
        let taken = view.accept(&id(B), record(B, 1, &[A, C]), true, member, 1);
        assert_eq!(taken, Ok(Accepted::New));
    }

    #[test]
    fn a_peer_out_of_reach_but_seen_by_another_is_unreachable_until_nobody_sees_it() {
        let mut view = view_of_a();
        let member = |_: &NodeId| true;
        view.accept(&id(B), record(B, 1, &[A, C]), true, member, 1)
            .unwrap();
        view.accept(&id(C), record(C, 1, &[A, B]), true, member, 1)
            .unwrap();
        view.refresh(Instant::ZERO, GRACE);
        view.lost(&id(C));
        assert!(view.refresh(Instant::from_millis(10), GRACE));
        assert_eq!(view.liveness(&id(C)), Liveness::Unreachable);
        // Nothing changed: nothing to recompute, nothing reported.
        assert!(!view.refresh(Instant::from_millis(20), GRACE));
        // B stops seeing C: suspect, then down once the grace has passed
        // with no other event.
        view.accept(&id(B), record(B, 2, &[A]), true, member, 1)
            .unwrap();
        assert!(view.refresh(Instant::from_millis(30), GRACE));
        assert_eq!(view.liveness(&id(C)), Liveness::Suspect);
        assert!(!view.refresh(Instant::from_millis(1529), GRACE));
        assert!(view.refresh(Instant::from_millis(1530), GRACE));
        assert_eq!(view.liveness(&id(C)), Liveness::Down);
    }

    #[test]
    fn a_newer_record_a_peer_knows_current_restarts_a_down_peers_grace() {
        let mut view = view_of_a();
        let member = |_: &NodeId| true;
        view.connected(Instant::ZERO, &id(D), 1, Role::Member);
        view.accept(&id(D), record(D, 1, &[A, B, C]), true, member, 1)
            .unwrap();
        view.lost(&id(D));
        view.refresh(Instant::ZERO, GRACE);
        assert!(view.refresh(Instant::from_millis(1500), GRACE));
        assert_eq!(view.liveness(&id(D)), Liveness::Down);
        // A stale copy of a newer version proves nothing.
        view.accept(&id(B), record(D, 2, &[B]), false, member, 1)
            .unwrap();
        view.refresh(Instant::from_millis(2000), GRACE);
        assert_eq!(view.liveness(&id(D)), Liveness::Down);
        // B knows version 3 current (B sees D, though its own record does
        // not say so yet): D is present again for a grace.
        view.accept(&id(B), record(D, 3, &[B]), true, member, 1)
            .unwrap();
        assert!(view.refresh(Instant::from_millis(2100), GRACE));
        assert_eq!(view.liveness(&id(D)), Liveness::Suspect);
        view.refresh(Instant::from_millis(3600), GRACE);
        assert_eq!(view.liveness(&id(D)), Liveness::Down);
    }
}
