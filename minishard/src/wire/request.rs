//! Request frames: a request for a shard's owner and its reply (docs/design.md
//! 11). They travel on a connection's request lane, behind heartbeats and
//! the cores' messages, so a burst of requests never delays either.

use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess};
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
    #[serde(deserialize_with = "payload")]
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
        #[serde(deserialize_with = "payload")]
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
        #[serde(deserialize_with = "payload")]
        bytes: Bytes,
    },
}

/// Decodes an application's bytes with one copy, into an allocation of
/// their length. `Bytes`' own `Deserialize` asks for a byte buffer, which
/// bincode makes by zero-filling a vector and then copying into it: a
/// 64 KiB payload was written twice, and the zeroing alone took about a
/// fifth of the time opening its frame did (perf over `minishard bench
/// --only-requests`). Asked for bytes instead, bincode's slice decoder
/// lends the frame's own, copied once; the encoding is the same.
fn payload<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
    struct Payload;

    impl<'de> de::Visitor<'de> for Payload {
        type Value = Bytes;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Bytes, E> {
            Ok(Bytes::copy_from_slice(bytes))
        }

        fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Bytes, E> {
            Ok(Bytes::from(bytes))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(byte) = seq.next_element()? {
                bytes.push(byte);
            }
            Ok(Bytes::from(bytes))
        }
    }

    deserializer.deserialize_bytes(Payload)
}
