//! A connection's byte stream cut into frames, and frames joined into it:
//! each frame is a 4-byte big-endian length, then its body. After the
//! handshake the body is sealed ([`super::seal`]: ciphertext, then a
//! 16-byte tag) unless TLS already protects the stream.
//!
//! Sans-IO like the rest of `wire` (tokio-util's codec traits take and
//! give buffers); `mesh::conn` runs these over a socket, and tests and the
//! `sealed_stream` fuzz target run them over byte strings.

use std::fmt;
use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::seal::{Opener, Sealer, TAG_LEN};
use super::{Frame, WireError, HANDSHAKE_FRAME_LIMIT};

/// Bytes of the length before each frame.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// Why a stream of frames cannot go on.
#[derive(Debug)]
pub enum StreamError {
    /// The socket failed: the connection ended, nobody misbehaved.
    Io(io::Error),
    /// The peer broke the protocol (or an attacker on the path did).
    Broken(WireError),
}

impl From<io::Error> for StreamError {
    fn from(error: io::Error) -> StreamError {
        StreamError::Io(error)
    }
}

impl From<WireError> for StreamError {
    fn from(error: WireError) -> StreamError {
        StreamError::Broken(error)
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Io(error) => write!(f, "{error}"),
            StreamError::Broken(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for StreamError {}

/// Cuts frame bodies out of a stream and, once keys are set, opens them.
#[derive(Debug)]
pub struct FrameDecoder {
    limit: usize,
    opener: Option<Opener>,
}

impl FrameDecoder {
    /// For the handshake: plain frames, up to [`HANDSHAKE_FRAME_LIMIT`].
    pub fn handshake() -> FrameDecoder {
        FrameDecoder {
            limit: HANDSHAKE_FRAME_LIMIT,
            opener: None,
        }
    }

    /// After the handshake: frames whose plaintext is up to `limit` bytes,
    /// opened with `opener` (`None` when TLS protects the stream).
    pub fn established(limit: usize, opener: Option<Opener>) -> FrameDecoder {
        FrameDecoder { limit, opener }
    }

    /// The largest plaintext accepted.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn overhead(&self) -> usize {
        if self.opener.is_some() {
            TAG_LEN
        } else {
            0
        }
    }
}

impl Decoder for FrameDecoder {
    type Item = BytesMut;
    type Error = StreamError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, StreamError> {
        let Some(prefix) = src.get(..LENGTH_PREFIX_LEN) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
        let overhead = self.overhead();
        // Checked before a byte of the body is awaited or buffered.
        if len > self.limit + overhead {
            return Err(WireError::TooLarge {
                len: len - overhead,
                limit: self.limit,
            }
            .into());
        }
        let whole = LENGTH_PREFIX_LEN + len;
        if src.len() < whole {
            src.reserve(whole - src.len());
            return Ok(None);
        }
        src.advance(LENGTH_PREFIX_LEN);
        let mut body = src.split_to(len);
        if let Some(opener) = &mut self.opener {
            let plain = opener.open(&mut body)?;
            body.truncate(plain);
        }
        Ok(Some(body))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, StreamError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(WireError::Truncated { have: src.len() }.into()),
        }
    }
}

/// Joins frame bodies into a stream and, once keys are set, seals them.
#[derive(Debug)]
pub struct FrameEncoder {
    limit: usize,
    sealer: Option<Sealer>,
    /// Bytes the last frame took on the stream, prefix and tag included.
    last_len: usize,
}

impl FrameEncoder {
    /// For the handshake: plain frames, up to [`HANDSHAKE_FRAME_LIMIT`].
    pub fn handshake() -> FrameEncoder {
        FrameEncoder {
            limit: HANDSHAKE_FRAME_LIMIT,
            sealer: None,
            last_len: 0,
        }
    }

    /// After the handshake: frames of up to `limit` bytes, sealed with
    /// `sealer` (`None` when TLS protects the stream).
    pub fn established(limit: usize, sealer: Option<Sealer>) -> FrameEncoder {
        FrameEncoder {
            limit,
            sealer,
            last_len: 0,
        }
    }

    /// Bytes the last frame encoded took on the stream.
    pub fn last_len(&self) -> usize {
        self.last_len
    }

    /// Seals the body that starts after the length prefix at `start` and
    /// writes the prefix; undoes the frame if it is over the limit.
    fn finish(&mut self, start: usize, dst: &mut BytesMut) -> Result<(), StreamError> {
        let body = dst.len() - start - LENGTH_PREFIX_LEN;
        if body > self.limit {
            dst.truncate(start);
            return Err(WireError::TooLarge {
                len: body,
                limit: self.limit,
            }
            .into());
        }
        let overhead = if self.sealer.is_some() { TAG_LEN } else { 0 };
        // Fits: limits are at most `MAX_FRAME_LIMIT`, 64 MiB.
        dst[start..start + LENGTH_PREFIX_LEN]
            .copy_from_slice(&((body + overhead) as u32).to_be_bytes());
        if let Some(sealer) = &mut self.sealer {
            match sealer.seal(&mut dst[start + LENGTH_PREFIX_LEN..]) {
                Ok(tag) => dst.extend_from_slice(&tag),
                Err(error) => {
                    dst.truncate(start);
                    return Err(error.into());
                }
            }
        }
        self.last_len = dst.len() - start;
        Ok(())
    }
}

/// A frame encoded straight into the stream's buffer: no body of its own
/// is allocated, and a request's payload is copied once, into the buffer
/// the socket is written from.
impl Encoder<&Frame> for FrameEncoder {
    type Error = StreamError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), StreamError> {
        let start = dst.len();
        dst.put_u32(0);
        super::encode_into(frame, dst);
        self.finish(start, dst)
    }
}

impl Encoder<Bytes> for FrameEncoder {
    type Error = StreamError;

    fn encode(&mut self, frame: Bytes, dst: &mut BytesMut) -> Result<(), StreamError> {
        if frame.len() > self.limit {
            return Err(WireError::TooLarge {
                len: frame.len(),
                limit: self.limit,
            }
            .into());
        }
        let overhead = if self.sealer.is_some() { TAG_LEN } else { 0 };
        let start = dst.len();
        dst.reserve(LENGTH_PREFIX_LEN + frame.len() + overhead);
        dst.put_u32(0);
        dst.extend_from_slice(&frame);
        self.finish(start, dst)
    }
}
