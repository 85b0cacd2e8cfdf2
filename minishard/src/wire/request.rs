//! Request frames: a request for a shard's owner and its reply (docs/design.md
//! 11). They travel on a connection's request lane, behind heartbeats and
//! the cores' messages, so a burst of requests never delays either.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::core::{Epoch, NodeId, Shard};

/// A request for whoever owns `shard`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the sender, unique among its requests in flight.
    pub id: u64,
    /// The shard it is for.
    pub shard: Shard,
    /// The application's bytes.
    pub payload: Bytes,
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The request's id.
    pub id: u64,
    /// What became of it.
    pub outcome: ReplyOutcome,
}

/// What became of a request at the node it was sent to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplyOutcome {
    /// The handler answered, inside the allocation of this epoch.
    Answered {
        /// The epoch of the answering allocation.
        epoch: Epoch,
        /// The handler's bytes.
        payload: Bytes,
    },
    /// The handler failed, inside the allocation of this epoch.
    Failed {
        /// The epoch of the allocation.
        epoch: Epoch,
        /// What the handler said.
        message: String,
    },
    /// This node does not hold the shard: the handler did not run. The
    /// owner in this node's view, if it knows one, so the sender can go
    /// there without waiting for its own view to change.
    NotOwner {
        /// The owner this node sees, and its epoch.
        owner: Option<(NodeId, Epoch)>,
    },
    /// Too many requests are waiting here already: the handler did not run.
    Overloaded,
}

/// Part of a hand-off (docs/design.md 11.8): the data a node's `deallocated`
/// gave for the shard's next owner. `Start` goes on the connection's core
/// lane, ahead of the record that frees the shard; the data follows in
/// `Chunk`s on the request lane, in order, behind heartbeats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandOff {
    /// A hand-off of `len` bytes for `shard` begins, from the sender's
    /// allocation at `epoch`; `None`: the sender has nothing to hand off
    /// (a conflict's loser tells its winner so, which then stops waiting).
    Start {
        /// The shard.
        shard: Shard,
        /// The epoch of the sender's allocation that ended.
        epoch: Epoch,
        /// The data's length, or none.
        len: Option<u64>,
    },
    /// The next bytes of the hand-off for `shard` at `epoch`.
    Chunk {
        /// The shard.
        shard: Shard,
        /// The epoch its `Start` named.
        epoch: Epoch,
        /// The bytes.
        bytes: Bytes,
    },
}
