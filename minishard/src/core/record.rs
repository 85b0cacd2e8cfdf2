//! What nodes tell each other: each node's record of itself.
//!
//! A node is the only author of its own record. It sends it in full on
//! connect and again on every change; peers relay it to nodes that cannot see
//! its author (docs/design.md 6.1, 6.3), unchanged, so the highest `version` of an
//! incarnation is always the truth.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ids::{Incarnation, NodeId, Role};
use super::watcher::Health;

/// A shard number, `0 .. shard_count`.
pub type Shard = u32;

/// Fencing number of an allocation (docs/design.md 2): larger than any epoch its
/// owner had seen for that shard, not issued twice for a shard, and raised
/// above every loser's when the allocation wins a conflict. The high 32 bits
/// count allocations of the shard (and wins); the low [`EPOCH_TAG_BITS`]
/// are the claimant's [`epoch_tag`], so two claims of a shard made at once
/// on the two sides of a split still differ. A store that accepts a write
/// only at an epoch at least the highest it has seen refuses every deposed
/// owner.
pub type Epoch = u64;

/// The small string map a node publishes with its record (its own HTTP
/// address, a zone...): for applications that route with their own
/// transport. Fixed for an incarnation; `Config::validate` bounds its size.
pub type Metadata = BTreeMap<String, String>;
/// The bits of an epoch that hold the claimant's tag.
pub const EPOCH_TAG_BITS: u32 = 32;

/// The low bits of every epoch a node incarnation issues: a hash of its id
/// and its random incarnation. A tag names no list position, so member
/// lists that differ (a member added or removed, a stale list) cannot make
/// two nodes share one, and a restarted node that forgot everything issues
/// other epochs than before; two incarnations share a tag with probability
/// 2^-32.
pub fn epoch_tag(node: &NodeId, incarnation: Incarnation) -> u32 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    node.hash(&mut hasher);
    incarnation.hash(&mut hasher);
    let hash = hasher.finish();
    (hash ^ (hash >> 32)) as u32
}

/// The epoch a claim by a node with `tag` takes when `seen` is the largest
/// it has seen for the shard: one count more, with its tag in the low bits.
/// `None` once the count is exhausted (only a peer announcing a forged
/// epoch gets it there).
pub fn next_epoch(seen: Epoch, tag: u32) -> Option<Epoch> {
    let count = (seen >> EPOCH_TAG_BITS).checked_add(1)?;
    let epoch = count.checked_shl(EPOCH_TAG_BITS)?;
    (epoch >> EPOCH_TAG_BITS == count).then_some(epoch | Epoch::from(tag))
}

/// What a node holds, as it publishes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Holding {
    /// Not taking shards: an observer, a degraded member, or a member backing
    /// off after a failed `allocated`.
    Idle,
    /// A member ready to take a free shard.
    Standby,
    /// Announced a claim; its `allocated` callback is running.
    Claiming {
        /// The claimed shard.
        shard: Shard,
        /// The claim's epoch.
        epoch: Epoch,
    },
    /// Owns the shard: `allocated` returned.
    Active {
        /// The owned shard.
        shard: Shard,
        /// The allocation's epoch.
        epoch: Epoch,
    },
    /// Lost a conflict and waits for the winner to acknowledge it before its
    /// `deallocated` runs; back to `Active` if the winner lost in turn. The
    /// shard stays reserved; the claim no longer contends.
    Yielding {
        /// The shard.
        shard: Shard,
        /// The epoch of the allocation being given up.
        epoch: Epoch,
    },
    /// Giving the shard up: its `deallocated` callback is running. The shard
    /// stays reserved until it returns, so the next owner never overlaps it.
    Releasing {
        /// The shard being released.
        shard: Shard,
        /// The epoch of the allocation being ended.
        epoch: Epoch,
    },
    /// Left the cluster for good (this incarnation): its shard is free now.
    Left,
    /// Strict mode (docs/design.md 6.7): announced a claim that waits, before
    /// its `allocated` runs, for any rival claim made meanwhile to show.
    /// The shard is reserved; the claim does not contend in a conflict
    /// (no callback has run): it is withdrawn if a rival shows.
    Proposing {
        /// The shard proposed.
        shard: Shard,
        /// The epoch the allocation will have.
        epoch: Epoch,
    },
}

impl Holding {
    /// The shard and epoch this holding reserves, if any.
    pub fn reserved(self) -> Option<(Shard, Epoch)> {
        match self {
            Holding::Proposing { shard, epoch }
            | Holding::Claiming { shard, epoch }
            | Holding::Active { shard, epoch }
            | Holding::Yielding { shard, epoch }
            | Holding::Releasing { shard, epoch } => Some((shard, epoch)),
            Holding::Idle | Holding::Standby | Holding::Left => None,
        }
    }

    /// The shard and epoch this holding contends for in a conflict: a claim
    /// or an allocation, not one already being given up.
    pub fn contending(self) -> Option<(Shard, Epoch)> {
        match self {
            Holding::Claiming { shard, epoch } | Holding::Active { shard, epoch } => {
                Some((shard, epoch))
            }
            _ => None,
        }
    }
}

/// One node's claim on a shard, as a participant of a conflict.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Claim {
    /// The claimant.
    pub node: NodeId,
    /// The claimant's incarnation.
    pub incarnation: Incarnation,
    /// The claim's epoch.
    pub epoch: Epoch,
}

/// A rival's score that a node has seen, in the episode it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ack {
    /// The rival.
    pub node: NodeId,
    /// The epoch of the rival's claim.
    pub epoch: Epoch,
    /// The rival's episode whose score was seen.
    pub episode: u64,
}

/// A node's score for its current claim, in one conflict episode.
///
/// A rival may rank this claim by `score` only if `acks` names the rival's own
/// current episode: that proves this score was made while both were in the
/// same conflict, so two owners never rank each other by scores from
/// different episodes and never both give the shard up.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScoreOffer {
    /// The disputed shard.
    pub shard: Shard,
    /// The epoch of the claim it scores.
    pub epoch: Epoch,
    /// The author's episode number (grows within an incarnation).
    pub episode: u64,
    /// The score, or `None` when the `score` callback failed or was late
    /// (which ranks last).
    pub score: Option<i64>,
    /// The rivals' offers seen in this episode, sorted.
    pub acks: Vec<Ack>,
}

/// A conflict a node lost: which allocation it gives up, and to whom. The
/// winner tells its application `prolonged` on seeing it and acknowledges it
/// in its record; only then does the loser's application hear
/// `deallocated(winner)`, so both always name each other.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Yield {
    /// The shard given up.
    pub shard: Shard,
    /// The epoch of the allocation given up.
    pub epoch: Epoch,
    /// The claim that won.
    pub winner: Claim,
    /// The winner's score it was ranked by.
    pub winner_score: Option<i64>,
    /// The loser's own score.
    pub own_score: Option<i64>,
}

/// A peer this node currently sees (connected, handshake done).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sighting {
    /// The peer.
    pub node: NodeId,
    /// Its incarnation on that connection.
    pub incarnation: Incarnation,
}

/// Everything a node publishes about itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Record {
    /// The author.
    pub node: NodeId,
    /// The author's incarnation.
    pub incarnation: Incarnation,
    /// Grows with every change the author publishes in this incarnation.
    pub version: u64,
    /// Member or observer.
    pub role: Role,
    /// The number of shards it keeps (0: an observer still learning it).
    pub shard_count: u32,
    /// Its view of the cluster's health.
    pub health: Health,
    /// What it holds.
    pub holding: Holding,
    /// The peers it sees, sorted.
    pub sees: Vec<Sighting>,
    /// Its score in its latest conflict, kept after the conflict so a peer
    /// that learns of it late still ranks the claim the same way.
    pub offer: Option<ScoreOffer>,
    /// The latest conflict it lost, kept for the same reason as `offer`.
    pub yielded: Option<Yield>,
    /// The losers that yielded to its current (or latest) allocation and
    /// were acknowledged with `prolonged`: a loser calls `deallocated` with
    /// the winner's name only once it sees itself here.
    pub acknowledged: Vec<Claim>,
    /// The node's metadata, as configured (the same in every version of an
    /// incarnation's record).
    pub metadata: Arc<Metadata>,
    /// The allocation its author held last, kept once it ended: a peer
    /// that only sees the record after (relays send the latest version)
    /// still learns its epoch, which a store may have taken writes at.
    pub released: Option<(Shard, Epoch)>,
}

impl Record {
    /// Whether this record says its author sees `node` in `incarnation`.
    pub fn sees_incarnation(&self, node: &NodeId, incarnation: Incarnation) -> bool {
        self.sighting(node)
            .is_some_and(|s| s.incarnation == incarnation)
    }

    fn sighting(&self, node: &NodeId) -> Option<&Sighting> {
        // Sorted by node (checked on receipt: `sightings_sorted`), since a
        // node looks up every peer in every record it holds.
        let at = self.sees.binary_search_by(|s| s.node.cmp(node)).ok()?;
        self.sees.get(at)
    }

    /// Whether `sees` is sorted by node with no node twice, as this crate
    /// writes it; a record that breaks this is refused.
    pub fn sightings_sorted(&self) -> bool {
        self.sees.windows(2).all(|w| w[0].node < w[1].node)
    }
}

/// A message between the cores of two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// The sender's own record.
    Record(Arc<Record>),
    /// Another node's record, passed on to a peer that cannot see its author.
    Relay {
        /// The record, unchanged.
        record: Arc<Record>,
        /// Whether the sender knows it to be current (it sees the author, or
        /// had it confirmed): a stale copy still reserves its shard, but is
        /// no claim to contend with.
        current: bool,
    },
    /// The highest allocation the sender has seen of each shard (who held
    /// it, at which epoch), sent on connect and passed on when it teaches
    /// the receiver something: a restarted node learns the epochs its
    /// previous incarnation used and claims above them, and an owner learns
    /// of a higher epoch a rival had on the other side of a split.
    Epochs(Vec<Option<Claim>>),
}
