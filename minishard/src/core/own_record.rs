//! This node's own record: what it publishes about itself, and when
//! (docs/design.md 8.6: sent in full on connect and as changes after; a node is the
//! only author of its own record).

use std::sync::Arc;

use super::config::Timings;
use super::events::Outbox;
use super::ids::{Incarnation, NodeId, Role};
use super::record::{
    Claim, Epoch, Holding, Metadata, PeerMessage, Record, ScoreOffer, Shard, Sighting, Yield,
};
use super::time::Instant;
use super::view::PeerView;
use super::watcher::Health;

/// Everything a record says, as the components see it now.
pub(super) struct Draft {
    pub role: Role,
    pub shard_count: u32,
    pub health: Health,
    pub holding: Holding,
    pub sees: Vec<Sighting>,
    pub offer: Option<ScoreOffer>,
    pub yielded: Option<Yield>,
    pub acknowledged: Vec<Claim>,
    pub metadata: Arc<Metadata>,
    pub released: Option<(Shard, Epoch)>,
}

/// The record this node last published.
#[derive(Debug)]
pub(super) struct OwnRecord {
    published: Arc<Record>,
    /// When sightings that changed alone go out.
    sees_due: Option<Instant>,
}

impl OwnRecord {
    pub fn new(me: NodeId, incarnation: Incarnation, role: Role, shard_count: u32) -> OwnRecord {
        OwnRecord {
            published: Arc::new(Record {
                node: me,
                incarnation,
                version: 0,
                role,
                shard_count,
                health: Health::Degraded,
                holding: Holding::Idle,
                sees: Vec::new(),
                offer: None,
                yielded: None,
                acknowledged: Vec::new(),
                metadata: Arc::default(),
                released: None,
            }),
            sees_due: None,
        }
    }

    /// The record as last published.
    pub fn published(&self) -> &Arc<Record> {
        &self.published
    }

    /// When sightings waiting to go out are due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.sees_due
    }

    /// Publishes the record to every connected peer: at once when what it
    /// holds, offers or says of itself changed, a little later when only the
    /// peers it sees did (a cold start changes them many times in a few
    /// milliseconds). Returns whether it published.
    pub fn sync(
        &mut self,
        now: Instant,
        draft: Draft,
        timings: &Timings,
        view: &PeerView,
        out: &mut Outbox,
    ) -> bool {
        let old = &self.published;
        let urgent = old.holding != draft.holding
            || old.acknowledged != draft.acknowledged
            || old.released != draft.released
            || old.health != draft.health
            || old.shard_count != draft.shard_count
            || old.offer != draft.offer
            || old.yielded != draft.yielded
            || old.role != draft.role
            || old.metadata != draft.metadata;
        let sees_changed = old.sees != draft.sees;
        if sees_changed && !urgent {
            // A peer no longer seen goes out soon: until it does, the others
            // count that peer unreachable rather than suspect, and its
            // failover waits (this `settle / 2` is most of the 13 ms a
            // failover takes above `node_grace`). New sightings (a cold
            // start makes hundreds) wait for a heartbeat interval, to go
            // out together.
            let sees = &draft.sees;
            let lost_one = old.sees.iter().any(|s| {
                sees.binary_search_by(|new| new.node.cmp(&s.node))
                    .map_or(true, |at| sees[at] != *s)
            });
            let wait = if lost_one {
                timings.settle / 2
            } else {
                timings.heartbeat_interval
            };
            let due = self.sees_due.map_or(now + wait, |due| due.min(now + wait));
            self.sees_due = Some(due);
            if now < due {
                return false;
            }
        }
        if !urgent && !sees_changed {
            return false;
        }
        self.sees_due = None;
        let record = Arc::new(Record {
            node: old.node.clone(),
            incarnation: old.incarnation,
            version: old.version + 1,
            role: draft.role,
            shard_count: draft.shard_count,
            health: draft.health,
            holding: draft.holding,
            sees: draft.sees,
            offer: draft.offer,
            yielded: draft.yielded,
            acknowledged: draft.acknowledged,
            metadata: draft.metadata,
            released: draft.released,
        });
        tracing::trace!(
            version = record.version,
            urgent,
            sees = record.sees.len(),
            "publishing this node's record"
        );
        self.published = record.clone();
        for (to, _) in view.up() {
            out.send(to.clone(), PeerMessage::Record(record.clone()));
        }
        true
    }
}
