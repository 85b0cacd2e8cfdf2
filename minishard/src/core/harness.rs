//! A test harness for one core: build peers' records, feed events at chosen
//! instants, drain and answer the actions. A rule of the manager gets a
//! ten-line test, with no simulator and no sockets.
//!
//! Nodes are named by a number: `n(3)` is `10.0.0.3:1`.

use std::sync::Arc;
use std::time::Duration;

use super::{
    Action, Call, CallId, Claim, Core, CoreConfig, Epoch, Event, Health, Holding, Instant, NodeId,
    Outcome, PeerMessage, Quorum, Record, RefusalReason, Role, ScoreOffer, Shard, Sighting,
    Snapshot, Timings, Yield,
};

/// The address of node `i`.
pub fn n(i: u8) -> NodeId {
    NodeId::parse(&format!("10.0.0.{i}:1")).expect("an address")
}

/// Every node's incarnation in the harness, unless a test says otherwise.
pub const INCARNATION: u64 = 7;

/// The epoch node `i` issues as its `count`-th allocation of a shard (in
/// its harness incarnation).
pub fn e(i: u8, count: u64) -> Epoch {
    (count << super::EPOCH_TAG_BITS) | Epoch::from(super::record::epoch_tag(&n(i), INCARNATION))
}

/// A peer's record, as a test describes it.
#[derive(Clone, Debug)]
pub struct Rec(Record);

/// Node `i`'s record at version 1: a member on standby, seeing no one.
pub fn rec(i: u8) -> Rec {
    Rec(Record {
        node: n(i),
        incarnation: INCARNATION,
        version: 1,
        role: Role::Member,
        shard_count: 0,
        health: Health::Available,
        holding: Holding::Standby,
        sees: Vec::new(),
        offer: None,
        yielded: None,
        acknowledged: Vec::new(),
        metadata: Default::default(),
        released: None,
    })
}

impl Rec {
    /// At this version.
    pub fn v(mut self, version: u64) -> Rec {
        self.0.version = version;
        self
    }

    /// Holding this.
    pub fn holding(mut self, holding: Holding) -> Rec {
        self.0.holding = holding;
        self
    }

    /// Owning `shard` at `epoch`.
    pub fn active(self, shard: Shard, epoch: Epoch) -> Rec {
        self.holding(Holding::Active { shard, epoch })
    }

    /// Seeing these nodes (in their harness incarnation).
    pub fn sees(mut self, nodes: &[u8]) -> Rec {
        let mut sees: Vec<Sighting> = nodes
            .iter()
            .map(|&i| Sighting {
                node: n(i),
                incarnation: INCARNATION,
            })
            .collect();
        sees.sort();
        self.0.sees = sees;
        self
    }

    /// Having yielded this allocation to `winner`'s claim at `winner_epoch`.
    pub fn yielded(mut self, shard: Shard, epoch: Epoch, winner: u8, winner_epoch: Epoch) -> Rec {
        self.0.yielded = Some(Yield {
            shard,
            epoch,
            winner: Claim {
                node: n(winner),
                incarnation: INCARNATION,
                epoch: winner_epoch,
            },
            winner_score: Some(1),
            own_score: Some(0),
        });
        self
    }

    /// Having held `shard` at `epoch` last.
    pub fn released(mut self, shard: Shard, epoch: Epoch) -> Rec {
        self.0.released = Some((shard, epoch));
        self
    }

    /// Offering this score in a conflict.
    pub fn set_offer(&mut self, offer: ScoreOffer) {
        self.0.offer = Some(offer);
    }

    /// Having acknowledged these losers' claims.
    pub fn acknowledged(mut self, losers: &[(u8, Epoch)]) -> Rec {
        self.0.acknowledged = losers
            .iter()
            .map(|&(i, epoch)| Claim {
                node: n(i),
                incarnation: INCARNATION,
                epoch,
            })
            .collect();
        self
    }
}

/// One core at a chosen instant.
pub struct Harness {
    core: Core,
    now: Instant,
    shard_count: u32,
    /// The instant the core asked to be woken at.
    timer: Option<Instant>,
    /// Actions drained but not looked at yet.
    pending: Vec<Action>,
}

impl Harness {
    /// Node `me` of `members` keeping `shards` shards, started at 0 with the
    /// default timings.
    pub fn new(me: u8, members: &[u8], shards: u32) -> Harness {
        Harness::with_quorum(me, members, shards, Quorum::Any)
    }

    /// The same, holding shards only with `quorum` (docs/design.md 6.7).
    pub fn with_quorum(me: u8, members: &[u8], shards: u32, quorum: Quorum) -> Harness {
        let config = CoreConfig {
            me: n(me),
            role: Role::Member,
            members: members.iter().map(|&i| n(i)).collect(),
            shard_count: shards,
            timings: Timings::default(),
            metadata: Default::default(),
            quorum,
        };
        config.validate().expect("a valid harness config");
        let mut h = Harness {
            core: Core::new(config, INCARNATION, Instant::ZERO),
            now: Instant::ZERO,
            shard_count: shards,
            timer: None,
            pending: Vec::new(),
        };
        h.drain();
        h
    }

    /// The default timings.
    pub fn timings(&self) -> Timings {
        Timings::default()
    }

    /// The instant now.
    pub fn now(&self) -> Instant {
        self.now
    }

    fn feed(&mut self, event: Event) {
        self.core.handle(self.now, event);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::SetTimer(at) => self.timer = Some(at),
                Action::CancelTimer => self.timer = None,
                other => self.pending.push(other),
            }
        }
    }

    /// Moves time on by `d`, waking the core whenever its timer says, as a
    /// driver would.
    pub fn wait(&mut self, d: Duration) -> &mut Harness {
        let until = self.now + d;
        while let Some(at) = self.timer.filter(|at| *at <= until) {
            self.timer = None;
            self.now = at;
            self.feed(Event::Timeout);
        }
        self.now = until;
        self
    }

    /// A handshake with node `i` completed.
    pub fn connect(&mut self, i: u8) -> &mut Harness {
        self.feed(Event::Connected {
            peer: n(i),
            incarnation: INCARNATION,
            role: Role::Member,
        });
        self
    }

    /// The connection to node `i` is gone.
    pub fn lose(&mut self, i: u8) -> &mut Harness {
        self.feed(Event::Lost { peer: n(i) });
        self
    }

    /// Node `i` refused this node as not in its member list.
    pub fn refused_by(&mut self, i: u8) -> &mut Harness {
        self.refused_for(i, RefusalReason::NotAMember)
    }

    /// Node `i` refused this node for `reason`.
    pub fn refused_for(&mut self, i: u8, reason: RefusalReason) -> &mut Harness {
        self.feed(Event::RefusedBy {
            peer: n(i),
            reason,
            detail: format!("refused as {reason}"),
        });
        self
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> &Snapshot {
        self.core.snapshot().expect("a core publishes a snapshot")
    }

    /// The member list is now `members`.
    pub fn members(&mut self, members: &[u8]) -> &mut Harness {
        self.feed(Event::MembersChanged(
            members.iter().map(|&i| n(i)).collect(),
        ));
        self
    }

    /// A connected author sends its own record.
    pub fn record(&mut self, r: Rec) -> &mut Harness {
        let mut record = r.0;
        record.shard_count = self.shard_count;
        let from = record.node.clone();
        self.feed(Event::Message {
            from,
            message: PeerMessage::Record(Arc::new(record)),
        });
        self
    }

    /// Node `via` relays a record, knowing it current or not.
    pub fn relay(&mut self, via: u8, r: Rec, current: bool) -> &mut Harness {
        let mut record = r.0;
        record.shard_count = self.shard_count;
        self.feed(Event::Message {
            from: n(via),
            message: PeerMessage::Relay {
                record: Arc::new(record),
                current,
            },
        });
        self
    }

    /// The application asks to leave.
    pub fn leave(&mut self) -> &mut Harness {
        self.feed(Event::Leave);
        self
    }

    /// The callbacks asked for since the last look, in order.
    pub fn calls(&mut self) -> Vec<(CallId, Call)> {
        let (calls, rest): (Vec<Action>, Vec<Action>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|a| matches!(a, Action::Call { .. }));
        self.pending = rest;
        calls
            .into_iter()
            .filter_map(|a| match a {
                Action::Call { id, call } => Some((id, call)),
                _ => None,
            })
            .filter(|(_, call)| !matches!(call, Call::StatusChanged { .. } | Call::Nodes))
            .collect()
    }

    /// Answers a callback.
    pub fn answer(&mut self, id: CallId, outcome: Outcome) -> &mut Harness {
        self.feed(Event::CallDone { id, outcome });
        self
    }

    /// Answers every callback asked for so far as the application would,
    /// successfully (a score of 0); returns them.
    pub fn answer_all(&mut self) -> Vec<Call> {
        let calls = self.calls();
        for (id, call) in &calls {
            let outcome = match call {
                Call::Score { .. } => Outcome::Score(0),
                _ => Outcome::Done,
            };
            self.answer(*id, outcome);
        }
        calls.into_iter().map(|(_, call)| call).collect()
    }

    /// What this node publishes it holds.
    pub fn holding(&self) -> Holding {
        self.core.record().holding
    }

    /// The conflict this node publishes it lost.
    pub fn yielded(&self) -> Option<&Yield> {
        self.core.record().yielded.as_ref()
    }

    /// The health now.
    pub fn health(&self) -> Health {
        self.core.health()
    }

    /// The owner of `shard` in this node's view.
    pub fn owner(&self, shard: Shard) -> Option<NodeId> {
        self.core
            .snapshot()
            .and_then(|s| s.owner(shard).map(|o| o.node.clone()))
    }
}
