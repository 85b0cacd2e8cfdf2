//! What lookups read: an immutable picture of this node's view, rebuilt by
//! the core after every step that changes it and swapped in by the driver.

use std::sync::Arc;

use serde::Serialize;

use super::events::RefusalReason;
use super::ids::NodeId;
use super::record::{Epoch, Metadata, Shard};
use super::watcher::Health;

/// The owner of a shard in this node's view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Owner {
    /// The owning node.
    pub node: NodeId,
    /// Its allocation's epoch.
    pub epoch: Epoch,
}

/// What this node itself is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LocalState {
    /// Not taking shards (observer, degraded, backing off, left).
    Idle,
    /// Ready to take a shard.
    Standby,
    /// Owns a shard: its `allocated` returned and no `deallocated` was sent.
    Allocated {
        /// The shard.
        shard: Shard,
        /// The allocation's epoch.
        epoch: Epoch,
    },
}

/// How this node sees another node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NodeState {
    /// Not connected and holding nothing in this view.
    Unavailable,
    /// Connected, but not in the member list (an observer).
    Connected,
    /// A member without a shard.
    Standby,
    /// A member that owns a shard.
    Active {
        /// The shard.
        shard: Shard,
    },
    /// Claiming or releasing a shard, or out of reach while still holding one.
    Transition,
}

/// The core's own counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CoreCounters {
    /// `allocated` callbacks that returned successfully.
    pub allocations: u64,
    /// `deallocated` callbacks sent.
    pub deallocations: u64,
    /// Conflicts this node decided (won or lost).
    pub conflicts_resolved: u64,
    /// Callbacks that failed or were late.
    pub failed_callbacks: u64,
    /// Peer messages ignored because they made no sense in the current state.
    pub ignored_messages: u64,
}

/// The refusals of this node by one member, since join (docs/design.md 6.8).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerRefusals {
    /// The member that refused this node.
    pub peer: NodeId,
    /// How many of this node's handshakes it refused for a misconfiguration.
    pub count: u64,
    /// The latest refusal's kind.
    pub reason: RefusalReason,
    /// What the latest refusal said.
    pub detail: String,
    /// Whether it refused lately and has not accepted this node since.
    pub refusing: bool,
}

/// Everything a lookup may ask, at one instant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// This node's view of the cluster's health.
    pub health: Health,
    /// The configured number of shards.
    pub shard_count: u32,
    /// The owner of each shard, `None` where there is none.
    pub owners: Vec<Option<Owner>>,
    /// What this node is doing.
    pub local: LocalState,
    /// Every member and connected node, sorted, with this node among them.
    pub nodes: Vec<(NodeId, NodeState)>,
    /// The member list in force.
    pub members: Arc<[NodeId]>,
    /// Each reachable node's own view of the health, as it last published it
    /// (this node's included): what a status tool shows for a cluster.
    pub health_views: Vec<(NodeId, Health)>,
    /// The metadata of every node in view that published some (this
    /// node's included), sorted by node.
    pub metadata: Vec<(NodeId, Arc<Metadata>)>,
    /// Counters.
    pub counters: CoreCounters,
    /// Every member that refused this node for a misconfiguration, sorted.
    pub refusals: Vec<PeerRefusals>,
    /// Whether no member accepts this node and some refuse it — for a
    /// cookie, cluster or version mismatch, or as not in their member list
    /// for longer than a member-list poll and a redial: it is part of no
    /// cluster, and cannot become available (docs/design.md 6.8).
    pub misconfigured: bool,
}

impl Snapshot {
    /// The owner of `shard`, if any.
    pub fn owner(&self, shard: Shard) -> Option<&Owner> {
        self.owners.get(shard as usize)?.as_ref()
    }

    /// How many shards have an owner.
    pub fn allocated_count(&self) -> usize {
        self.owners.iter().flatten().count()
    }

    /// Why this node is part of no cluster, when it is misconfigured: the
    /// members that refuse it and what they said.
    pub fn misconfiguration(&self) -> Option<String> {
        if !self.misconfigured {
            return None;
        }
        let refusing: Vec<String> = self
            .refusals
            .iter()
            .filter(|r| r.refusing)
            .map(|r| format!("{} refuses it ({}: {})", r.peer, r.reason, r.detail))
            .collect();
        Some(format!(
            "no member accepts this node: {}; check the cluster name, the cookie, the member list and the version on both sides",
            refusing.join("; ")
        ))
    }

    /// The metadata `node` published, if it is in view and published some.
    pub fn metadata(&self, node: &NodeId) -> Option<&Arc<Metadata>> {
        let at = self.metadata.binary_search_by(|(n, _)| n.cmp(node)).ok()?;
        Some(&self.metadata[at].1)
    }

    /// This node's shard and epoch, if it owns one.
    pub fn my_shard(&self) -> Option<(Shard, Epoch)> {
        match self.local {
            LocalState::Allocated { shard, epoch } => Some((shard, epoch)),
            _ => None,
        }
    }
}
