//! The peer view: which peers are up, unreachable, suspect or down, and the
//! latest record of each (DESIGN.md 6.1).
//!
//! Liveness is derived, never stored by hand: a peer is up while its link is;
//! unreachable while some peer we see says it sees it; suspect for
//! `node_grace` after that; down after. A shard stays reserved to its holder
//! while the holder is up, unreachable or suspect.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::ids::{Incarnation, NodeId, Role};
use super::record::{Holding, Record, Sighting};
use super::time::Instant;

/// How this node currently sees a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Connected, handshake done.
    Up,
    /// Not connected to us, but a peer we see sees it: its shard stays reserved.
    Unreachable,
    /// Nobody we see sees it, for less than `node_grace`: its shard stays reserved.
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
}

/// What became of an accepted record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Newer than what we had.
    New,
    /// A version we already had (relays reach us by several paths).
    Known,
}

#[derive(Debug)]
struct Peer {
    link: Link,
    record: Option<Arc<Record>>,
    /// The record is known to be current: false from a lost connection or a
    /// reconnection until a current copy arrives (from the author, or relayed).
    fresh: bool,
    liveness: Liveness,
    suspect_since: Option<Instant>,
    /// Incarnations a restart replaced: never taken back from a late relay.
    retired: BTreeSet<Incarnation>,
    /// The version of each record last relayed to this peer.
    relayed: BTreeMap<NodeId, (Incarnation, u64, bool)>,
}

impl Peer {
    fn new() -> Peer {
        Peer {
            link: Link::Down,
            record: None,
            fresh: false,
            liveness: Liveness::Down,
            suspect_since: None,
            retired: BTreeSet::new(),
            relayed: BTreeMap::new(),
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
}

impl PeerView {
    /// An empty view for node `me`.
    pub fn new(me: NodeId) -> PeerView {
        PeerView {
            me,
            peers: BTreeMap::new(),
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
        let peer = self.peers.entry(node.clone()).or_insert_with(Peer::new);
        peer.link = Link::Up {
            since: now,
            incarnation,
            role,
        };
        peer.retired.remove(&incarnation);
        peer.relayed.clear();
        // What it held before this connection may have changed meanwhile.
        peer.fresh = false;
        peer.replace_incarnation(incarnation)
    }

    /// The connection to `node` is gone.
    pub fn lost(&mut self, node: &NodeId) -> bool {
        match self.peers.get_mut(node) {
            Some(peer) if matches!(peer.link, Link::Up { .. }) => {
                peer.link = Link::Down;
                peer.relayed.clear();
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
        if !is_member(&author) {
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
                peer.fresh |= known.version == record.version && confirms;
                Ok(Accepted::Known)
            }
            _ => {
                peer.record = Some(record);
                peer.fresh = confirms;
                Ok(Accepted::New)
            }
        }
    }

    /// Whether a peer's record is known to be current (see `Peer::fresh`).
    pub fn is_fresh(&self, node: &NodeId) -> bool {
        self.peers.get(node).is_some_and(|p| p.fresh)
    }

    /// Recomputes every peer's liveness. Returns true if any changed.
    pub fn refresh(&mut self, now: Instant, grace: Duration) -> bool {
        // Who the peers we see say they see: an unreachable peer stays
        // reserved instead of going suspect (DESIGN.md 6.1).
        let seen_by_others: BTreeSet<(NodeId, Incarnation)> = self
            .peers
            .values()
            .filter(|p| matches!(p.link, Link::Up { .. }))
            .filter_map(|p| p.record.as_ref())
            .flat_map(|r| r.sees.iter().map(|s| (s.node.clone(), s.incarnation)))
            .collect();
        let mut changed = false;
        for (id, peer) in &mut self.peers {
            let left = peer
                .record
                .as_ref()
                .is_some_and(|r| r.holding == Holding::Left);
            let liveness = match (&peer.link, &peer.record) {
                _ if left => Liveness::Down,
                (Link::Up { .. }, _) => Liveness::Up,
                (Link::Down, None) => Liveness::Down,
                (Link::Down, Some(r)) if seen_by_others.contains(&(id.clone(), r.incarnation)) => {
                    Liveness::Unreachable
                }
                (Link::Down, Some(_)) => {
                    let since = *peer.suspect_since.get_or_insert(now);
                    if now >= since + grace {
                        Liveness::Down
                    } else {
                        Liveness::Suspect
                    }
                }
            };
            if matches!(liveness, Liveness::Up | Liveness::Unreachable) || left {
                peer.suspect_since = None;
            } else {
                // Nobody it can hear from sees it: whatever it held may change
                // unseen, however the record was learned.
                peer.fresh = false;
            }
            if liveness != peer.liveness {
                peer.liveness = liveness;
                changed = true;
            }
        }
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

    /// The role a connected peer declared in its handshake.
    pub fn connected_role(&self, node: &NodeId) -> Option<Role> {
        match self.peers.get(node)?.link {
            Link::Up { role, .. } => Some(role),
            Link::Down => None,
        }
    }

    /// Since when a peer has been connected.
    pub fn up_since(&self, node: &NodeId) -> Option<Instant> {
        match self.peers.get(node)?.link {
            Link::Up { since, .. } => Some(since),
            Link::Down => None,
        }
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

    /// Records of members that `to` should get from us because it does not
    /// see their authors, each with whether this node knows it current; each
    /// is marked as sent and returned once per version (and currency). With
    /// `claims_only`, only records that hold a shard or say their author
    /// left: what a peer must know before it claims anything.
    pub fn relays_for(
        &mut self,
        to: &NodeId,
        is_member: impl Fn(&NodeId) -> bool,
        claims_only: bool,
    ) -> Vec<(Arc<Record>, bool)> {
        let Some(target) = self.peers.get(to) else {
            return Vec::new();
        };
        // Whom it sees, by its record on this connection (not an old one).
        let target_sees = target.record.clone().filter(|_| target.fresh);
        // Stale copies go too: a suspect owner's shard is still reserved,
        // and a node that (re)starts must hear of it before it claims.
        let candidates: Vec<(Arc<Record>, bool)> = self
            .peers
            .iter()
            .filter(|(id, p)| {
                *id != to
                    && (p.liveness.present()
                        || p.record
                            .as_ref()
                            .is_some_and(|r| r.holding == Holding::Left))
            })
            .filter_map(|(_, p)| p.record.clone().map(|r| (r, p.fresh)))
            .filter(|(r, _)| is_member(&r.node))
            .filter(|(r, _)| {
                !claims_only || r.holding.reserved().is_some() || r.holding == Holding::Left
            })
            .filter(|(r, _)| target_sees.as_ref().is_none_or(|t| !t.sees_node(&r.node)))
            .collect();
        let target = self.peers.get_mut(to).expect("checked above");
        candidates
            .into_iter()
            .filter(|(r, current)| {
                let stamp = (r.incarnation, r.version, *current);
                target.relayed.insert(r.node.clone(), stamp) != Some(stamp)
            })
            .collect()
    }
}
