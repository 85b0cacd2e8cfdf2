//! Reachability: the peers a path of current sightings leads to from this
//! node (docs/design.md 6.1).
//!
//! A node publishes the peers it sees. A peer this node is not connected to
//! is still part of its cluster when a path of such sightings leads to it —
//! A sees B, whose current record says it sees C, whose current record says
//! it sees D — however many hops long. Such a peer is *unreachable*, not
//! suspect: its shard stays reserved to it, nobody claims it, and conflicts
//! with it are resolved through the peers on the path. Without this, the
//! two ends of a chain each take the other end's shard and keep it.
//!
//! Only a record known to be current is followed: an old copy may name
//! peers its author lost long ago. Paths run through members: observers
//! watch, and what an observer says it sees keeps nothing reserved. A sighting counts only for the
//! incarnation it names, so a restarted peer is not reached through what
//! its previous incarnation was seen doing.

use std::collections::BTreeSet;

use super::ids::{Incarnation, NodeId, Role};
use super::record::Record;

/// What reachability needs to know of one peer.
pub(super) struct Known<'a> {
    /// Its latest record, if any.
    pub record: Option<&'a Record>,
    /// Whether that record is known to be current.
    pub current: bool,
}

/// Which of `wanted` (peers not connected to this node) are reached from
/// it: the peers in `linked` (connected to it) are, and so is every peer
/// whose incarnation a reached peer's current record says it sees. `peer`
/// looks a peer up. The search stops once every wanted peer is found, so
/// the usual question (is a peer just lost still seen by the peers that
/// see this node?) costs one hop, not a walk over every sighting of every
/// peer: at 50 members, that walk at every change of the view was half of
/// a heal's CPU.
pub(super) fn reached<'a>(
    linked: impl IntoIterator<Item = &'a NodeId>,
    wanted: &BTreeSet<&'a NodeId>,
    peer: impl Fn(&NodeId) -> Option<Known<'a>>,
) -> BTreeSet<&'a NodeId> {
    let mut found: BTreeSet<&'a NodeId> = BTreeSet::new();
    if wanted.is_empty() {
        return found;
    }
    let mut reached: BTreeSet<&'a NodeId> = BTreeSet::new();
    let mut to_follow: Vec<&'a Record> = Vec::new();
    let visit = |node: &'a NodeId,
                 incarnation: Option<Incarnation>,
                 reached: &mut BTreeSet<&'a NodeId>,
                 found: &mut BTreeSet<&'a NodeId>,
                 to_follow: &mut Vec<&'a Record>| {
        if reached.contains(node) {
            return;
        }
        let Some(known) = peer(node) else {
            return;
        };
        let named = match (incarnation, known.record) {
            // Seen by a peer: only the incarnation it saw counts.
            (Some(seen), Some(record)) => record.incarnation == seen,
            (Some(_), None) => false,
            // Connected to this node: the handshake vouches for it.
            (None, _) => true,
        };
        if !named {
            return;
        }
        reached.insert(node);
        if wanted.contains(node) {
            found.insert(node);
        }
        if let Some(record) = known
            .record
            .filter(|r| known.current && r.role == Role::Member)
        {
            to_follow.push(record);
        }
    };
    for node in linked {
        visit(node, None, &mut reached, &mut found, &mut to_follow);
    }
    while let Some(record) = to_follow.pop() {
        if found.len() == wanted.len() {
            break;
        }
        for sighting in &record.sees {
            visit(
                &sighting.node,
                Some(sighting.incarnation),
                &mut reached,
                &mut found,
                &mut to_follow,
            );
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::core::record::{Holding, Sighting};
    use crate::core::watcher::Health;

    fn id(n: u8) -> NodeId {
        NodeId::parse(&format!("10.0.0.{n}:1")).unwrap()
    }

    fn record(n: u8, incarnation: Incarnation, sees: &[(u8, Incarnation)]) -> Record {
        Record {
            node: id(n),
            incarnation,
            version: 1,
            role: Role::Member,
            shard_count: 1,
            health: Health::Available,
            holding: Holding::Standby,
            sees: sees
                .iter()
                .map(|&(n, incarnation)| Sighting {
                    node: id(n),
                    incarnation,
                })
                .collect(),
            offer: None,
            yielded: None,
            acknowledged: Vec::new(),
            metadata: Default::default(),
            released: None,
        }
    }

    fn reach(linked: &[u8], records: &BTreeMap<NodeId, (Record, bool)>) -> Vec<NodeId> {
        let linked: Vec<NodeId> = linked.iter().map(|&n| id(n)).collect();
        let wanted: BTreeSet<&NodeId> = records.keys().chain(&linked).collect();
        reached(&linked, &wanted, |node| {
            records.get(node).map(|(record, current)| Known {
                record: Some(record),
                current: *current,
            })
        })
        .into_iter()
        .cloned()
        .collect()
    }

    #[test]
    fn a_chain_is_reached_end_to_end_however_long() {
        // This node (1) sees 2; 2 sees 3; 3 sees 4; 4 sees 5.
        let mut records = BTreeMap::new();
        records.insert(id(2), (record(2, 7, &[(1, 7), (3, 7)]), true));
        records.insert(id(3), (record(3, 7, &[(2, 7), (4, 7)]), true));
        records.insert(id(4), (record(4, 7, &[(3, 7), (5, 7)]), true));
        records.insert(id(5), (record(5, 7, &[(4, 7)]), true));
        assert_eq!(reach(&[2], &records), vec![id(2), id(3), id(4), id(5)]);
    }

    #[test]
    fn an_old_copy_is_not_followed_and_a_restarted_peer_is_not_reached_through_its_past() {
        let mut records = BTreeMap::new();
        // 3's record is not known current: what it sees does not count.
        records.insert(id(2), (record(2, 7, &[(3, 7)]), true));
        records.insert(id(3), (record(3, 7, &[(4, 7)]), false));
        records.insert(id(4), (record(4, 7, &[]), true));
        assert_eq!(reach(&[2], &records), vec![id(2), id(3)]);
        // 2 saw incarnation 7 of 3, which restarted as 8.
        records.insert(id(3), (record(3, 8, &[(4, 7)]), true));
        assert_eq!(reach(&[2], &records), vec![id(2)]);
    }
}
