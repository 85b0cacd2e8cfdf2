//! Frames after the handshake, sealed: each is encrypted and authenticated
//! with AES-256-GCM under keys only the two ends of this one connection
//! can derive, and under a nonce that is its sequence number in its
//! direction (docs/design.md 8.4).
//!
//! - **Keys.** HKDF-SHA256 with the cookie as the secret and both handshake
//!   nonces as the salt, expanded under two labels into one key per
//!   direction. Both nonces are fresh per connection, so no two connections
//!   share a key, and a frame recorded on one never opens on another; the
//!   two directions differ, so a frame reflected back to its sender does
//!   not open either.
//! - **Sequence.** The nonce of a frame is its index in its direction
//!   (0, 1, 2...), never sent: each side counts. A frame opens only at the
//!   index it was sealed at, so a frame injected (no key), replayed,
//!   dropped, reordered, cut short or altered in a single bit fails, and
//!   the connection closes.
//! - **Why an AEAD rather than a MAC.** The same one pass both authenticates
//!   and hides what the frames carry (the shard map, scores, who sees whom),
//!   which a MAC over plaintext would leave readable on the path; its tag is
//!   16 bytes where HMAC-SHA256's is 32; and a counter nonce under a
//!   per-connection key can never repeat, which is all GCM asks of its
//!   nonces (96 bits, unique per key; never random here).
//! - **Why ring's AES-256-GCM.** ring is already in every build (it is
//!   rustls's crypto provider for TLS), and on the project's machine (an
//!   x86-64 with AES-NI, VAES and VPCLMULQDQ, where ring runs its
//!   VAES/AVX2 code) it seals and opens a 64 KiB frame 4 to 5 times faster
//!   than ring's ChaCha20-Poly1305, which protocol versions 2 and 3 used:
//!   17-21 us against 80-93 us for seal plus open (ring alone, the two
//!   measured in turn in one process), 21.5 against 88.6 us through this
//!   codec (medians of `minishard bench` runs of the two builds in turn),
//!   and that was most of what a 64 KiB request's round trip added to a
//!   bare TCP echo. At 100 B it is 0.33-0.48 against 0.54-0.56 us (0.35
//!   against 0.57 us through the codec). No timing leaks either way: with AES-NI and CLMUL the cipher
//!   and GHASH run in hardware; on an x86 CPU without them ring uses a
//!   vector-permute AES (SSSE3, `vpaes`) and a table-free GHASH, and
//!   without SSSE3 a bitsliced AES, all constant-time (ring 0.17:
//!   `src/aead/aes_gcm.rs`, `crypto/fipsmodule/aes/`,
//!   `src/aead/gcm/fallback.rs`), only slower: on such a CPU
//!   ChaCha20-Poly1305 would be the faster of the two. Its tag check is
//!   constant-time.
//!
//! When the connection runs over TLS, TLS already does all of this, and
//! frames are not sealed twice (`mesh::conn`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use hkdf::Hkdf;
use ring::aead::{Aad, LessSafeKey, Nonce as AeadNonce, UnboundKey, AES_256_GCM};
use sha2::Sha256;

use super::handshake::Nonce;
use super::WireError;

/// Bytes a sealed frame carries beyond its plaintext: the GCM tag.
pub const TAG_LEN: usize = 16;

// Renamed whenever the sealing changes (v2: ChaCha20-Poly1305; v4:
// AES-256-GCM), with the protocol version, which refuses the old nodes
// first.
const DIALER_TO_LISTENER: &[u8] = b"minishard v4 frames: dialer to listener";
const LISTENER_TO_DIALER: &[u8] = b"minishard v4 frames: listener to dialer";

/// Which end of the handshake this node was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// It dialled.
    Dialer,
    /// It listened.
    Listener,
}

/// One end's keys for one connection: one to seal what it sends, one to
/// open what it receives.
#[derive(Debug)]
pub struct SessionKeys {
    /// Seals this end's frames.
    pub sealer: Sealer,
    /// Opens the peer's frames.
    pub opener: Opener,
}

impl SessionKeys {
    /// Derives `side`'s keys from the cookie and both handshake nonces: the
    /// other side derives the same two keys, the other way round.
    pub fn derive(
        cookie: &[u8],
        dialer_nonce: &Nonce,
        listener_nonce: &Nonce,
        side: Side,
    ) -> SessionKeys {
        let mut salt = [0u8; 64];
        salt[..32].copy_from_slice(dialer_nonce);
        salt[32..].copy_from_slice(listener_nonce);
        let hkdf = Hkdf::<Sha256>::new(Some(&salt), cookie);
        let key = |label: &[u8]| {
            let mut key = [0u8; 32];
            hkdf.expand(label, &mut key)
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, &key).expect("AES-256-GCM takes 32-byte keys"),
            )
        };
        let (send, receive) = match side {
            Side::Dialer => (DIALER_TO_LISTENER, LISTENER_TO_DIALER),
            Side::Listener => (LISTENER_TO_DIALER, DIALER_TO_LISTENER),
        };
        SessionKeys {
            sealer: Sealer {
                cipher: key(send),
                next: 0,
            },
            opener: Opener {
                cipher: key(receive),
                next: 0,
            },
        }
    }
}

/// The AEAD nonce of the frame at `index`: 4 zero bytes, then the index.
/// Unique per key, as `assume_unique_for_key` requires: the index only
/// grows, and every connection and direction has keys of its own.
fn nonce(index: u64) -> AeadNonce {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&index.to_be_bytes());
    AeadNonce::assume_unique_for_key(nonce)
}

/// Seals the frames one end sends, numbering them as it goes.
pub struct Sealer {
    cipher: LessSafeKey,
    next: u64,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// Encrypts `frame` in place as the next frame; returns the tag to send
    /// after it.
    pub fn seal(&mut self, frame: &mut [u8]) -> Result<[u8; TAG_LEN], WireError> {
        // Reusing a nonce would give the key away; 2^64 - 1 frames will
        // not be sent, but if they were, the connection ends instead.
        if self.next == u64::MAX {
            return Err(WireError::SequenceExhausted);
        }
        let len = frame.len();
        let tag = self
            .cipher
            .seal_in_place_separate_tag(nonce(self.next), Aad::empty(), frame)
            // Only a frame of 256 GiB or more, far over any frame limit.
            .map_err(|_| WireError::Malformed(format!("cannot seal a frame of {len} bytes")))?;
        self.next += 1;
        let mut bytes = [0u8; TAG_LEN];
        bytes.copy_from_slice(tag.as_ref());
        Ok(bytes)
    }

    /// Seals a copy of `frame`: the ciphertext followed by the tag.
    pub fn seal_to_vec(&mut self, frame: &[u8]) -> Result<Vec<u8>, WireError> {
        let mut sealed = Vec::with_capacity(frame.len() + TAG_LEN);
        sealed.extend_from_slice(frame);
        let tag = self.seal(&mut sealed)?;
        sealed.extend_from_slice(&tag);
        Ok(sealed)
    }

    /// The index the next frame will be sealed at.
    pub fn next_index(&self) -> u64 {
        self.next
    }
}

/// Opens the frames the peer sends, in the order it sealed them.
pub struct Opener {
    cipher: LessSafeKey,
    next: u64,
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// Opens `sealed` (ciphertext then tag) in place as the next frame;
    /// returns the length of the plaintext at its start. A frame that does
    /// not open leaves the count where it was.
    pub fn open(&mut self, sealed: &mut [u8]) -> Result<usize, WireError> {
        let index = self.next;
        let unauthentic = WireError::Unauthentic {
            index,
            len: sealed.len(),
        };
        if sealed.len() < TAG_LEN {
            return Err(unauthentic);
        }
        // ring compares tags in constant time; on failure the buffer holds
        // nothing usable, and nothing of it is used.
        let len = self
            .cipher
            .open_in_place(nonce(index), Aad::empty(), sealed)
            .map_err(|_| unauthentic)?
            .len();
        self.next += 1;
        Ok(len)
    }

    /// Opens a copy of `sealed`.
    pub fn open_to_vec(&mut self, sealed: &[u8]) -> Result<Vec<u8>, WireError> {
        let mut frame = sealed.to_vec();
        let len = self.open(&mut frame)?;
        frame.truncate(len);
        Ok(frame)
    }

    /// The index the next frame must have been sealed at.
    pub fn next_index(&self) -> u64 {
        self.next
    }
}

static UNSEALED_FOR_BENCHMARKS: AtomicBool = AtomicBool::new(false);

/// Leaves the frames of every connection this process sets up from now on
/// unsealed: readable and forgeable by anyone on the path, as before
/// protocol version 2. For `minishard bench` only, to measure what sealing
/// costs; a node in this mode cannot talk to one that seals.
#[doc(hidden)]
pub fn leave_frames_unsealed_for_benchmarks() {
    UNSEALED_FOR_BENCHMARKS.store(true, Ordering::Relaxed);
    tracing::warn!("frames are not sealed in this process: for benchmarks only");
}

/// Whether [`leave_frames_unsealed_for_benchmarks`] was called.
pub(crate) fn unsealed_for_benchmarks() -> bool {
    UNSEALED_FOR_BENCHMARKS.load(Ordering::Relaxed)
}
