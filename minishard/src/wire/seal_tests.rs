//! Sealed frames: what gets through an attacker on the path (nothing but
//! the genuine frames, in order) and what closes the connection.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

use super::codec::{FrameDecoder, FrameEncoder, StreamError, LENGTH_PREFIX_LEN};
use super::handshake::{Answering, Dialing, Established, Identity, RefusalKind};
use super::seal::{SessionKeys, Side, TAG_LEN};
use super::*;
use crate::core::{NodeId, Role};

const LIMIT: usize = DEFAULT_FRAME_LIMIT;

fn identity(addr: &str, cookie: &[u8]) -> Identity {
    Identity {
        cluster: "sealed".into(),
        node: NodeId::parse(addr).unwrap(),
        incarnation: 1,
        role: Role::Member,
        cookie: Arc::from(cookie),
    }
}

/// Both ends of a real handshake with these nonces: (dialer, listener).
fn connection(nonces: [u8; 2]) -> (Established, Established) {
    let a = identity("10.0.0.1:7000", b"cookie");
    let b = identity("10.0.0.2:7000", b"cookie");
    let (dialing, hello) = Dialing::start(a, b.node.clone(), [nonces[0]; 32]);
    let (answering, challenge) =
        Answering::on_hello(&b, hello, [nonces[1]; 32], |_| Ok(())).unwrap();
    let (awaiting, proof) = dialing.on_challenge(challenge).unwrap();
    let listener = answering.on_proof(proof).unwrap();
    let dialer = awaiting.on_welcome(Frame::Welcome).unwrap();
    (dialer, listener)
}

/// One direction of a sealed connection, as the mesh runs it.
struct Pipe {
    encoder: FrameEncoder,
    decoder: FrameDecoder,
}

/// The dialer-to-listener and listener-to-dialer pipes of one connection.
fn pipes(nonces: [u8; 2]) -> (Pipe, Pipe) {
    let (dialer, listener) = connection(nonces);
    (
        Pipe {
            encoder: FrameEncoder::established(LIMIT, Some(dialer.keys.sealer)),
            decoder: FrameDecoder::established(LIMIT, Some(listener.keys.opener)),
        },
        Pipe {
            encoder: FrameEncoder::established(LIMIT, Some(listener.keys.sealer)),
            decoder: FrameDecoder::established(LIMIT, Some(dialer.keys.opener)),
        },
    )
}

fn heartbeat(n: u64) -> Frame {
    Frame::Heartbeat { sent_micros: n }
}

impl Pipe {
    /// The bytes the sender puts on the wire for `frame`.
    fn seal(&mut self, frame: &Frame) -> Vec<u8> {
        let mut wire = BytesMut::new();
        self.encoder
            .encode(Bytes::from(encode(frame)), &mut wire)
            .unwrap();
        wire.to_vec()
    }

    /// Every frame the receiver gets out of `bytes` (then the end of the
    /// stream), and the error that stopped it, if any.
    fn receive(&mut self, bytes: &[u8]) -> (Vec<Frame>, Option<WireError>) {
        let mut buffer = BytesMut::from(bytes);
        let mut frames = Vec::new();
        loop {
            match self.decoder.decode_eof(&mut buffer) {
                Ok(Some(body)) => frames.push(decode(&body, LIMIT).unwrap()),
                Ok(None) => return (frames, None),
                Err(StreamError::Broken(e)) => return (frames, Some(e)),
                Err(StreamError::Io(e)) => panic!("no socket here: {e}"),
            }
        }
    }
}

fn unauthentic_at(error: Option<WireError>, at: u64) -> bool {
    matches!(error, Some(WireError::Unauthentic { index, .. }) if index == at)
}

#[test]
fn sealed_frames_go_both_ways_in_order() {
    let (mut there, mut back) = pipes([1, 2]);
    let mut stream = Vec::new();
    for n in 0..5 {
        stream.extend(there.seal(&heartbeat(n)));
    }
    let (frames, error) = there.receive(&stream);
    assert_eq!(frames, (0..5).map(heartbeat).collect::<Vec<_>>());
    assert_eq!(error, None);
    let answer = back.seal(&Frame::HeartbeatAck { sent_micros: 4 });
    assert_eq!(
        back.receive(&answer),
        (vec![Frame::HeartbeatAck { sent_micros: 4 }], None)
    );
}

#[test]
fn a_sealed_frame_is_the_frame_plus_a_tag_and_hides_it() {
    let (mut there, _) = pipes([1, 2]);
    let secret = "shard 7 lives on 10.0.0.1:7000";
    let frame = Frame::Refused {
        kind: RefusalKind::Busy,
        reason: secret.into(),
    };
    let plain = encode(&frame);
    let sealed = there.seal(&frame);
    assert_eq!(sealed.len(), LENGTH_PREFIX_LEN + plain.len() + TAG_LEN);
    assert!(!sealed.windows(8).any(|w| secret.as_bytes().starts_with(w)));
}

#[test]
fn a_replayed_frame_is_refused() {
    let (mut there, _) = pipes([1, 2]);
    let first = there.seal(&heartbeat(0));
    let stream = [first.clone(), first].concat();
    let (frames, error) = there.receive(&stream);
    assert_eq!(frames, vec![heartbeat(0)]);
    assert!(unauthentic_at(error, 1));
}

#[test]
fn reordered_or_dropped_frames_are_refused() {
    let (mut there, _) = pipes([1, 2]);
    let zero = there.seal(&heartbeat(0));
    let one = there.seal(&heartbeat(1));
    let (frames, error) = there.receive(&[one.clone(), zero].concat());
    assert!(frames.is_empty());
    assert!(unauthentic_at(error, 0));

    // Frame 1 where frame 0 was due: dropped by the path.
    let (mut there, _) = pipes([1, 2]);
    let _lost = there.seal(&heartbeat(0));
    let one = there.seal(&heartbeat(1));
    assert!(unauthentic_at(there.receive(&one).1, 0));
}

#[test]
fn a_frame_cut_short_is_refused() {
    let (mut there, _) = pipes([1, 2]);
    let sealed = there.seal(&heartbeat(1_000_000));
    // Cut inside the body and the length prefix rewritten to match.
    for cut in 1..=sealed.len() - LENGTH_PREFIX_LEN {
        let (mut there, _) = pipes([1, 2]);
        let sealed = there.seal(&heartbeat(1_000_000));
        let mut short = sealed[..sealed.len() - cut].to_vec();
        let len = (short.len() - LENGTH_PREFIX_LEN) as u32;
        short[..LENGTH_PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
        assert!(unauthentic_at(there.receive(&short).1, 0), "cut {cut}");
    }
    // The stream ends in the middle of the frame.
    let (frames, error) = there.receive(&sealed[..sealed.len() - 1]);
    assert!(frames.is_empty());
    assert!(
        matches!(error, Some(WireError::Truncated { .. })),
        "{error:?}"
    );
}

#[test]
fn injected_frames_are_refused() {
    let (mut there, mut back) = pipes([1, 2]);
    let genuine = there.seal(&heartbeat(0));
    // A plaintext frame, as anyone on the path could write it.
    let plain = encode(&heartbeat(0));
    let mut injected = (plain.len() as u32).to_be_bytes().to_vec();
    injected.extend(plain);
    let (frames, error) = there.receive(&[genuine.clone(), injected].concat());
    assert_eq!(frames, vec![heartbeat(0)]);
    assert!(unauthentic_at(error, 1));
    // The same plaintext padded with a made-up tag.
    let mut padded = encode(&heartbeat(1));
    padded.extend([0u8; TAG_LEN]);
    let mut forged = (padded.len() as u32).to_be_bytes().to_vec();
    forged.extend(padded);
    assert!(unauthentic_at(back.receive(&forged).1, 0));
}

#[test]
fn a_frame_from_another_connection_or_direction_is_refused() {
    // Another connection with the same cookie: other nonces, other keys.
    let (mut other, _) = pipes([3, 4]);
    let (mut there, mut back) = pipes([1, 2]);
    let foreign = other.seal(&heartbeat(0));
    assert!(unauthentic_at(there.receive(&foreign).1, 0));
    // The same nonces but the other way round: another connection too.
    let (mut swapped, _) = pipes([2, 1]);
    assert!(unauthentic_at(
        there.receive(&swapped.seal(&heartbeat(0))).1,
        0
    ));
    // The dialer's own frame reflected back to it.
    let reflected = there.seal(&heartbeat(0));
    assert!(unauthentic_at(back.receive(&reflected).1, 0));
}

#[test]
fn a_wrong_cookie_derives_keys_that_open_nothing() {
    let (dialer, _) = connection([1, 2]);
    let mut sealer = dialer.keys.sealer;
    let mut wrong = SessionKeys::derive(b"guess", &[1; 32], &[2; 32], Side::Listener).opener;
    let sealed = sealer.seal_to_vec(&encode(&heartbeat(0))).unwrap();
    assert!(matches!(
        wrong.open_to_vec(&sealed),
        Err(WireError::Unauthentic { index: 0, .. })
    ));
    // The right keys, derived the same way, open it.
    let mut right = SessionKeys::derive(b"cookie", &[1; 32], &[2; 32], Side::Listener).opener;
    assert_eq!(right.open_to_vec(&sealed).unwrap(), encode(&heartbeat(0)));
}

#[test]
fn a_failed_frame_does_not_move_the_count() {
    let (dialer, listener) = connection([1, 2]);
    let (mut sealer, mut opener) = (dialer.keys.sealer, listener.keys.opener);
    let sealed = sealer.seal_to_vec(b"frame").unwrap();
    let mut flipped = sealed.clone();
    flipped[0] ^= 1;
    assert!(opener.open_to_vec(&flipped).is_err());
    assert_eq!(opener.next_index(), 0);
    assert_eq!(opener.open_to_vec(&sealed).unwrap(), b"frame");
    assert_eq!((sealer.next_index(), opener.next_index()), (1, 1));
}

#[test]
fn the_limit_is_on_the_plaintext_and_checked_before_the_body() {
    let (dialer, listener) = connection([1, 2]);
    let mut encoder = FrameEncoder::established(100, Some(dialer.keys.sealer));
    let mut decoder = FrameDecoder::established(100, Some(listener.keys.opener));
    let mut wire = BytesMut::new();
    encoder
        .encode(Bytes::from(vec![7u8; 100]), &mut wire)
        .unwrap();
    assert_eq!(
        decoder.decode(&mut wire).unwrap().unwrap().as_ref(),
        [7u8; 100]
    );
    assert!(matches!(
        encoder.encode(Bytes::from(vec![7u8; 101]), &mut wire),
        Err(StreamError::Broken(WireError::TooLarge {
            len: 101,
            limit: 100
        }))
    ));
    // Only the length of an over-long frame is read.
    let mut huge = BytesMut::from(&(101 + TAG_LEN as u32).to_be_bytes()[..]);
    assert!(matches!(
        decoder.decode(&mut huge),
        Err(StreamError::Broken(WireError::TooLarge {
            len: 101,
            limit: 100
        }))
    ));
}

#[test]
fn handshake_frames_are_plain_and_under_the_handshake_limit() {
    let mut encoder = FrameEncoder::handshake();
    let mut decoder = FrameDecoder::handshake();
    let mut wire = BytesMut::new();
    encoder
        .encode(Bytes::from(encode(&Frame::Welcome)), &mut wire)
        .unwrap();
    assert_eq!(wire[LENGTH_PREFIX_LEN..], encode(&Frame::Welcome));
    let body = decoder.decode(&mut wire).unwrap().unwrap();
    assert_eq!(decode(&body, LIMIT), Ok(Frame::Welcome));
    let mut big = BytesMut::from(&(HANDSHAKE_FRAME_LIMIT as u32 + 1).to_be_bytes()[..]);
    assert!(matches!(
        decoder.decode(&mut big),
        Err(StreamError::Broken(WireError::TooLarge { .. }))
    ));
}

proptest! {
    /// Whatever single byte of a stream of sealed frames is changed, the
    /// receiver gets the genuine frames before that byte's frame, in order,
    /// and then an error: never a frame the sender did not send.
    #[test]
    fn a_changed_byte_anywhere_stops_the_stream_at_its_frame(
        count in 1usize..6,
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let (mut there, _) = pipes([1, 2]);
        let sealed: Vec<Vec<u8>> = (0..count as u64).map(|n| there.seal(&heartbeat(n))).collect();
        let mut stream = sealed.concat();
        let at = at.index(stream.len());
        stream[at] ^= flip;
        let hit = {
            let mut end = 0;
            sealed.iter().position(|f| { end += f.len(); at < end }).unwrap()
        };
        let (frames, error) = there.receive(&stream);
        prop_assert_eq!(frames, (0..hit as u64).map(heartbeat).collect::<Vec<_>>());
        prop_assert!(error.is_some());
    }
}
