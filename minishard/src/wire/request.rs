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
