//! Relayed records of authors this node does not list (yet).
//!
//! Member lists are polled, so for a while two nodes can disagree on who is
//! a member: a member added back is listed by its neighbours before this
//! node's next poll. A record relayed in that window is refused (a
//! non-member's claim must not reserve a shard), and its relayer, having
//! sent that version, does not send it again. Without a copy kept here,
//! this node would never learn of that member until its record changes, and
//! a path through it (docs/design.md 6.1) would stay invisible: found by the
//! simulator, a chain whose middle member was added back lost sight of the
//! owner at its far end and stayed in `transition`.
//!
//! Only the latest relay of each author is kept, with its relayer and
//! whether the relayer knew it current, and at most [`CAPACITY`] authors:
//! a relayer sends a record again whenever its version or currency
//! changes, so the copy is as current as an accepted record would be.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::ids::NodeId;
use super::record::Record;

/// Authors kept at most: a hostile peer relaying made-up authors cannot
/// make this grow.
pub const CAPACITY: usize = 256;

/// A refused relay: who relayed it, the record, and whether it was current.
pub type Held = (NodeId, Arc<Record>, bool);

#[derive(Debug, Default)]
pub(super) struct Unlisted {
    held: BTreeMap<NodeId, Held>,
}

impl Unlisted {
    /// Keeps a relay refused because its author is not listed, in place of
    /// any older one of the same author.
    pub fn hold(&mut self, from: &NodeId, record: Arc<Record>, current: bool) {
        let newer = self.held.get(&record.node).is_none_or(|(_, old, _)| {
            (old.incarnation, old.version) <= (record.incarnation, record.version)
                || old.incarnation != record.incarnation
        });
        if newer && (self.held.len() < CAPACITY || self.held.contains_key(&record.node)) {
            self.held
                .insert(record.node.clone(), (from.clone(), record, current));
        }
    }

    /// The relays of authors now listed, taken out.
    pub fn take_listed(&mut self, listed: impl Fn(&NodeId) -> bool) -> Vec<Held> {
        let authors: Vec<NodeId> = self.held.keys().filter(|a| listed(a)).cloned().collect();
        authors.iter().filter_map(|a| self.held.remove(a)).collect()
    }

    /// A relayer gone: what it said can no longer be taken as current.
    pub fn forget_relayer(&mut self, relayer: &NodeId) {
        self.held.retain(|_, (from, _, _)| from != relayer);
    }
}
