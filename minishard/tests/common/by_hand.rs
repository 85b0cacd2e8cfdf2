//! Playing a node by hand over a blocking socket: plain frames for the
//! handshake, then frames sealed with the keys it derived, as a node does.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use minishard::core::NodeId;
use minishard::wire::handshake::{Dialing, Established, Identity};
use minishard::wire::seal::{Opener, Sealer};
use minishard::wire::{self, Frame};

/// A handshake frame with its length prefix.
pub fn framed(frame: &Frame) -> Vec<u8> {
    let body = wire::encode(frame);
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend(body);
    bytes
}

/// The next frame's body, or None once the stream has ended.
pub fn read_body(stream: &mut impl Read) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut body = vec![0; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(body)
}

/// The next plain frame (handshake frames; every frame over TLS).
pub fn read_plain(stream: &mut impl Read) -> Option<Frame> {
    wire::decode(&read_body(stream)?, wire::DEFAULT_FRAME_LIMIT).ok()
}

/// Runs the dialer's side of the handshake with `target` over `stream`.
/// Returns the keys, or the frame that came instead of the welcome.
pub fn dial_by_hand(
    stream: &mut (impl Read + Write),
    me: Identity,
    target: &str,
    nonce: [u8; 32],
) -> Result<Established, Frame> {
    let (dialing, hello) = Dialing::start(me, NodeId::parse(target).unwrap(), nonce);
    stream.write_all(&framed(&hello)).unwrap();
    let challenge = read_plain(stream).expect("a challenge");
    let (awaiting, proof) = dialing
        .on_challenge(challenge)
        .expect("the node knows the cookie");
    stream.write_all(&framed(&proof)).unwrap();
    let answer = read_plain(stream).expect("an answer to the proof");
    awaiting.on_welcome(answer.clone()).map_err(|_| answer)
}

/// Seals frames onto a stream.
pub struct SealedWriter {
    pub stream: TcpStream,
    pub sealer: Sealer,
}

impl SealedWriter {
    pub fn send(&mut self, frame: &Frame) -> io::Result<()> {
        let sealed = self
            .sealer
            .seal_to_vec(&wire::encode(frame))
            .expect("sealed");
        let mut bytes = (sealed.len() as u32).to_be_bytes().to_vec();
        bytes.extend(sealed);
        self.stream.write_all(&bytes)
    }
}

/// Opens frames from a stream.
pub struct SealedReader {
    pub stream: TcpStream,
    pub opener: Opener,
}

impl SealedReader {
    /// The next frame, or None once the stream has ended (or a frame does
    /// not open, which a node never sends).
    pub fn receive(&mut self) -> Option<Frame> {
        let body = read_body(&mut self.stream)?;
        let plain = self.opener.open_to_vec(&body).ok()?;
        wire::decode(&plain, wire::DEFAULT_FRAME_LIMIT).ok()
    }
}

/// Both halves of an established connection.
pub fn sealed_halves(stream: TcpStream, established: Established) -> (SealedWriter, SealedReader) {
    let keys = established.keys;
    (
        SealedWriter {
            stream: stream.try_clone().unwrap(),
            sealer: keys.sealer,
        },
        SealedReader {
            stream,
            opener: keys.opener,
        },
    )
}
