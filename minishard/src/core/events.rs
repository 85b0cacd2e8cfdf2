//! What goes in and out of the core: events, actions, callbacks and their
//! outcomes. The core's whole contract with its drivers (the tokio engine,
//! the simulator) is written here.

use std::collections::VecDeque;
use std::sync::Arc;

use super::ids::{Incarnation, NodeId, Role};
use super::record::{Epoch, PeerMessage, Shard};
use super::snapshot::{CoreCounters, Snapshot};
use super::time::Instant;
use super::watcher::Health;

/// Identifies one callback request, so its result finds its way back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

/// A callback the application must run. Callbacks of one node run one at a
/// time in the order asked; each reports back with [`Event::CallDone`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// Ask for the member list again.
    Nodes,
    /// This node now owns `shard`: create the application's state.
    Allocated {
        /// The shard.
        shard: Shard,
        /// The allocation's epoch.
        epoch: Epoch,
    },
    /// Score this node's shard for a conflict.
    Score {
        /// The shard.
        shard: Shard,
        /// The allocation's epoch.
        epoch: Epoch,
    },
    /// This node won a conflict against `loser` and keeps its shard.
    Prolonged {
        /// The shard.
        shard: Shard,
        /// The allocation's epoch from now on: above every loser's (it may
        /// be the one it had, if that was above already).
        epoch: Epoch,
        /// The node that gives the shard up (or whose claim on it lapsed
        /// while this node had yielded to it: it left, was removed,
        /// restarted or was lost past its grace before taking it; or whose
        /// allocation of it, on the other side of a split, this one
        /// outlived).
        loser: NodeId,
        /// Whether `loser` yielded to this allocation in a conflict (false:
        /// this allocation outlived its claim, and only the epoch rises).
        won: bool,
    },
    /// This node no longer owns `shard`.
    Deallocated {
        /// The shard.
        shard: Shard,
        /// The allocation's epoch.
        epoch: Epoch,
        /// Who won the shard from it (`reason` is then
        /// [`ReleaseReason::LostConflict`]), or `None`.
        winner: Option<NodeId>,
        /// Why the allocation ended.
        reason: ReleaseReason,
    },
    /// This node's view of the cluster's health changed.
    StatusChanged {
        /// The health before.
        old: Health,
        /// The health now.
        new: Health,
    },
}

impl Call {
    /// The callback's name, as the application knows it.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Nodes => "nodes",
            Call::Allocated { .. } => "allocated",
            Call::Score { .. } => "score",
            Call::Prolonged { .. } => "prolonged",
            Call::Deallocated { .. } => "deallocated",
            Call::StatusChanged { .. } => "status_changed",
        }
    }
}

/// Why an allocation ended, as `deallocated` tells the application: what
/// it should do with what it held differs (hand it over, persist it, drop
/// it), as Kafka's consumer API separates revoked partitions from lost ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReleaseReason {
    /// It lost a conflict after a split healed; `winner` keeps the shard.
    LostConflict,
    /// The application asked to leave (`leave()`).
    Left,
    /// The handle was dropped or freed, or the process is exiting.
    Shutdown,
    /// Too few members were visible for `transition_timeout`.
    Degraded,
    /// This node is no longer in the member list (its own, or every member
    /// it can reach refuses it as not theirs).
    Removed,
}

impl ReleaseReason {
    /// The lower-case name used in logs, JSON and the bindings.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseReason::LostConflict => "lost_conflict",
            ReleaseReason::Left => "left",
            ReleaseReason::Shutdown => "shutdown",
            ReleaseReason::Degraded => "degraded",
            ReleaseReason::Removed => "removed",
        }
    }
}

impl std::fmt::Display for ReleaseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a callback ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It returned normally (callbacks that return no value).
    Done,
    /// `score` returned this.
    Score(i64),
    /// `nodes` returned this member list (already parsed).
    Members(Vec<NodeId>),
    /// It failed: an error, a panic, an exception or an unusable return.
    Failed(String),
}

/// Something that happened to this node.
#[derive(Clone, Debug)]
pub enum Event {
    /// A handshake with a peer completed.
    Connected {
        /// The peer.
        peer: NodeId,
        /// Its incarnation, from the handshake.
        incarnation: Incarnation,
        /// Its role, from the handshake.
        role: Role,
    },
    /// The connection to a peer closed or went silent.
    Lost {
        /// The peer.
        peer: NodeId,
    },
    /// A connected peer sent a message.
    Message {
        /// The peer it came from (not necessarily its author).
        from: NodeId,
        /// The message.
        message: PeerMessage,
    },
    /// A callback finished.
    CallDone {
        /// The request it answers.
        id: CallId,
        /// How it ended.
        outcome: Outcome,
    },
    /// The member list changed (learned other than through [`Call::Nodes`]).
    MembersChanged(Vec<NodeId>),
    /// A peer refused this node's handshake (or closed its connection
    /// saying why).
    RefusedBy {
        /// The peer that refused.
        peer: NodeId,
        /// Why.
        reason: RefusalReason,
    },
    /// The application asked to leave.
    Leave,
    /// The application dropped its handle, or the process is exiting: a
    /// leave, told as such.
    Shutdown,
    /// The timer set by [`Action::SetTimer`] fired.
    Timeout,
}

/// Why a peer refused this node, as far as the rules care.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// This node joined as a member and the peer's member list does not
    /// have it: the peer no longer counts it as one (docs/design.md 6.6).
    NotAMember,
    /// Anything else (a wrong cookie, cluster or version): logged only.
    Other,
}

/// Something the driver must do.
#[derive(Clone, Debug)]
pub enum Action {
    /// Send a message to a connected peer.
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        message: PeerMessage,
    },
    /// Deliver [`Event::Timeout`] at this instant (replaces any earlier timer).
    SetTimer(Instant),
    /// No timer is needed.
    CancelTimer,
    /// Run a callback, then report [`Event::CallDone`].
    Call {
        /// The request's id.
        id: CallId,
        /// The callback.
        call: Call,
    },
    /// Make this the snapshot lookups read.
    Publish(Arc<Snapshot>),
    /// Dial these members and accept handshakes from them (and from observers).
    SetMembers(Arc<[NodeId]>),
    /// The node has left: close every connection and stop.
    Close,
}

/// Where the core's components put what they want done, in order: the
/// actions for the driver, the ids of the callbacks they ask for, and the
/// counters lookups report.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    actions: VecDeque<Action>,
    next_call: u64,
    /// What happened so far, for `stats()`.
    pub counters: CoreCounters,
}

impl Outbox {
    pub fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    pub fn send(&mut self, to: NodeId, message: PeerMessage) {
        self.push(Action::Send { to, message });
    }

    /// An id for a callback asked for later ([`Outbox::call_with`]).
    pub fn next_call_id(&mut self) -> CallId {
        self.next_call += 1;
        CallId(self.next_call)
    }

    /// Asks for a callback; its result comes back with the returned id.
    pub fn call(&mut self, call: Call) -> CallId {
        let id = self.next_call_id();
        self.call_with(id, call);
        id
    }

    pub fn call_with(&mut self, id: CallId, call: Call) {
        self.push(Action::Call { id, call });
    }

    pub fn pop(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
}
