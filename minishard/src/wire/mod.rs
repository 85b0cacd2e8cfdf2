//! What goes over a connection: frames, their encoding and their limits
//! (docs/design.md 8.2).
//!
//! A frame is a 4-byte big-endian length and then the bincode encoding of a
//! [`Frame`] ([`codec`]); after the handshake that encoding is sealed
//! ([`seal`]: encrypted and authenticated, numbered in each direction)
//! unless TLS protects the connection. Decoding never trusts the peer: the
//! length is checked against the frame limit before anything is read, a
//! sealed frame must open at its place in the sequence, every count inside
//! is bounded by the bytes actually present, trailing bytes and
//! non-canonical encodings are refused, and every failure is a
//! [`WireError`], never a panic.

pub mod codec;
pub mod handshake;
pub mod request;
pub mod seal;

use bincode::config::{self, Config};
use serde::{Deserialize, Serialize};

use crate::core::PeerMessage;
pub use handshake::{Challenge, Hello, Proof};

/// The protocol version this build speaks. Peers must speak the same.
///
/// 2: frames after the handshake are sealed ([`seal`]) unless over TLS.
/// 3: requests and replies ([`request`]); records carry metadata.
/// 4: frames are sealed with AES-256-GCM instead of ChaCha20-Poly1305.
pub const PROTOCOL_VERSION: u16 = 4;

/// The default largest frame, in bytes (docs/design.md 10).
pub const DEFAULT_FRAME_LIMIT: usize = 1 << 20;

/// The largest frame limit a configuration may set.
pub const MAX_FRAME_LIMIT: usize = 64 << 20;

/// The largest frame accepted before the handshake is done, in bytes.
///
/// Handshake frames are small (the longest is a [`Hello`] with a
/// [`MAX_CLUSTER_NAME_LEN`] name and a [`crate::core::ids::MAX_ADDRESS_LEN`]
/// address, well under 1 KiB), and a peer that has proved nothing must not
/// make this node buffer a configured-size frame: with the default caps this
/// bounds what unauthenticated connections can hold to 256 x 16 KiB.
pub const HANDSHAKE_FRAME_LIMIT: usize = 16 << 10;

/// The longest cluster name, in bytes.
pub const MAX_CLUSTER_NAME_LEN: usize = 255;

/// Everything that travels between two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// Handshake, first step: the dialling node introduces itself.
    Hello(Hello),
    /// Handshake, second step: the listening node introduces itself and
    /// proves it knows the cookie.
    Challenge(Challenge),
    /// Handshake, third step: the dialling node proves it knows the cookie.
    Proof(Proof),
    /// Handshake, last step: the listening node accepts.
    Welcome,
    /// The sender refuses the connection, and says why.
    Refused {
        /// What failed, for the peer to act on.
        kind: handshake::RefusalKind,
        /// A reason fit for a log line.
        reason: String,
    },
    /// A heartbeat; the receiver answers some (about one a second) with
    /// [`Frame::HeartbeatAck`].
    Heartbeat {
        /// Echoed back, to measure the round trip.
        sent_micros: u64,
    },
    /// The answer to a heartbeat.
    HeartbeatAck {
        /// The heartbeat's `sent_micros`.
        sent_micros: u64,
    },
    /// A message for the peer's core.
    Peer(PeerMessage),
    /// Asks the peer for its own view of the cluster (`minishard status`);
    /// answered with [`Frame::StatusReport`].
    StatusRequest,
    /// A node's own view, answering [`Frame::StatusRequest`]: the JSON object
    /// `Cluster::status` and its counters make (README, `minishard status`),
    /// as text, so the wire needs no second encoding of every state.
    StatusReport {
        /// The JSON object.
        json: String,
    },
    /// A request for the shard the peer owns (docs/design.md 11).
    Request(request::Request),
    /// The answer to a request the peer sent.
    Reply(request::Reply),
    /// Part of a hand-off to this node (docs/design.md 11.8).
    HandOff(request::HandOff),
}

impl Frame {
    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "hello",
            Frame::Challenge(_) => "challenge",
            Frame::Proof(_) => "proof",
            Frame::Welcome => "welcome",
            Frame::Refused { .. } => "refused",
            Frame::Heartbeat { .. } => "heartbeat",
            Frame::HeartbeatAck { .. } => "heartbeat-ack",
            Frame::Peer(_) => "peer message",
            Frame::StatusRequest => "status request",
            Frame::StatusReport { .. } => "status report",
            Frame::Request(_) => "request",
            Frame::Reply(_) => "reply",
            Frame::HandOff(_) => "hand-off",
        }
    }
}

/// Why bytes could not become a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The frame is longer than the limit.
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes are not a valid frame.
    Malformed(String),
    /// Valid frame, followed by bytes that belong to none.
    TrailingBytes(usize),
    /// The stream ended in the middle of a frame.
    Truncated {
        /// The bytes of it that came.
        have: usize,
    },
    /// A sealed frame did not open at its place in the sequence: forged,
    /// replayed, reordered, cut short or altered on the way.
    Unauthentic {
        /// Its place in the sequence (the frames this side opened before).
        index: u64,
        /// Its length on the wire, tag included.
        len: usize,
    },
    /// This side has sealed as many frames as nonces allow.
    SequenceExhausted,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::TooLarge { len, limit } => {
                write!(f, "frame of {len} bytes is over the limit of {limit}")
            }
            WireError::Malformed(why) => write!(f, "malformed frame: {why}"),
            WireError::TrailingBytes(n) => write!(f, "{n} unexpected bytes after a frame"),
            WireError::Truncated { have } => write!(
                f,
                "truncated frame: the connection closed in the middle of it ({have} bytes came)"
            ),
            WireError::Unauthentic { index, len } => write!(
                f,
                "frame #{index} ({len} bytes) failed authentication: forged, replayed, reordered, truncated or altered on the way"
            ),
            WireError::SequenceExhausted => {
                f.write_str("frame sequence exhausted: the connection must start afresh")
            }
        }
    }
}

impl std::error::Error for WireError {}

// The hard ceiling on what bincode may allocate for one frame; the
// configured frame limit is checked first and is never larger.
fn bincode_config() -> impl Config {
    config::standard().with_limit::<MAX_FRAME_LIMIT>()
}

/// Encodes a frame's body (without the length prefix).
pub fn encode(frame: &Frame) -> Vec<u8> {
    bincode::serde::encode_to_vec(frame, bincode_config())
        .expect("frames always encode: they hold only plain data")
}

/// Decodes a frame's body (without the length prefix), refusing anything
/// over `limit` bytes.
pub fn decode(bytes: &[u8], limit: usize) -> Result<Frame, WireError> {
    if bytes.len() > limit {
        return Err(WireError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let (frame, used) = bincode::serde::decode_from_slice::<Frame, _>(bytes, bincode_config())
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(WireError::TrailingBytes(bytes.len() - used));
    }
    // bincode's varints accept over-long forms (7 as `fc 07 00 00 00`), so
    // one frame would have many encodings. Nothing here computes over a
    // peer's bytes (the handshake MACs re-encode the transcript), but a
    // parser that takes one form only leaves no room for two readers to
    // disagree later. Found by the frame_decode fuzz target.
    if !encodes_to(&frame, bytes) {
        return Err(WireError::Malformed(
            "not in canonical form (an over-long integer encoding)".into(),
        ));
    }
    Ok(frame)
}

/// Encodes `frame` at the end of `dst` (without the length prefix).
pub fn encode_into(frame: &Frame, dst: &mut bytes::BytesMut) {
    bincode::serde::encode_into_writer(frame, Appender(dst), bincode_config())
        .expect("frames always encode: they hold only plain data");
}

/// Whether `frame` encodes to exactly `bytes`. Compares as it encodes, so
/// the canonical-form check of a 64 KiB request neither allocates nor
/// copies its payload a second time: it only reads it once more.
fn encodes_to(frame: &Frame, bytes: &[u8]) -> bool {
    let mut rest = bytes;
    let written =
        bincode::serde::encode_into_writer(frame, Comparer { rest: &mut rest }, bincode_config());
    written.is_ok() && rest.is_empty()
}

/// A bincode writer that appends to a buffer.
struct Appender<'a>(&'a mut bytes::BytesMut);

impl bincode::enc::write::Writer for Appender<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// A bincode writer that checks what it is given against the bytes still
/// expected, and stops at the first difference.
struct Comparer<'a, 'b> {
    rest: &'a mut &'b [u8],
}

impl bincode::enc::write::Writer for Comparer<'_, '_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        match self.rest.strip_prefix(bytes) {
            Some(rest) => {
                *self.rest = rest;
                Ok(())
            }
            None => Err(bincode::error::EncodeError::Other("differs")),
        }
    }
}

#[cfg(test)]
mod seal_tests;
#[cfg(test)]
mod tests;
