//! The authenticated frame decoder a connection runs after the handshake
//! (`wire::codec::FrameDecoder` with a connection's keys, then
//! `wire::decode`), fed a genuine stream of sealed frames that an attacker
//! on the path has edited: bytes flipped, inserted or cut, frames dropped,
//! repeated, swapped or made up, the stream cut anywhere and delivered in
//! arbitrary pieces. Checked for every input:
//! - nothing panics, and nothing larger than the frame limit is taken;
//! - what comes out is the genuine frames from the first on, in order:
//!   never a frame the sender did not seal, never one out of its place;
//! - an untouched stream comes out whole.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use minishard::wire::codec::{FrameDecoder, FrameEncoder, StreamError};
use minishard::wire::seal::{SessionKeys, Side};
use minishard::wire::{self, Frame};
use tokio_util::codec::{Decoder, Encoder};

const LIMIT: usize = 4096;

/// An edit of the stream, as frames (whole, length prefix included).
#[derive(Debug)]
enum Edit {
    FlipByte {
        frame: u8,
        at: u16,
        mask: u8,
    },
    InsertBytes {
        frame: u8,
        at: u16,
        bytes: Vec<u8>,
    },
    CutBytes {
        frame: u8,
        at: u16,
        len: u8,
    },
    DropFrame {
        frame: u8,
    },
    RepeatFrame {
        frame: u8,
    },
    SwapFrames {
        a: u8,
        b: u8,
    },
    /// A frame of the fuzzer's own: a length prefix and any body.
    MakeUpFrame {
        before: u8,
        body: Vec<u8>,
    },
}

fn edit(u: &mut Unstructured<'_>) -> arbitrary::Result<Edit> {
    Ok(match u.int_in_range(0..=6u8)? {
        0 => Edit::FlipByte {
            frame: u.arbitrary()?,
            at: u.arbitrary()?,
            mask: u.arbitrary()?,
        },
        1 => Edit::InsertBytes {
            frame: u.arbitrary()?,
            at: u.arbitrary()?,
            bytes: u.arbitrary()?,
        },
        2 => Edit::CutBytes {
            frame: u.arbitrary()?,
            at: u.arbitrary()?,
            len: u.arbitrary()?,
        },
        3 => Edit::DropFrame {
            frame: u.arbitrary()?,
        },
        4 => Edit::RepeatFrame {
            frame: u.arbitrary()?,
        },
        5 => Edit::SwapFrames {
            a: u.arbitrary()?,
            b: u.arbitrary()?,
        },
        _ => Edit::MakeUpFrame {
            before: u.arbitrary()?,
            body: u.arbitrary()?,
        },
    })
}

fn keys() -> (SessionKeys, SessionKeys) {
    let cookie = b"fuzz-cookie";
    let (d, l) = ([1u8; 32], [2u8; 32]);
    (
        SessionKeys::derive(cookie, &d, &l, Side::Dialer),
        SessionKeys::derive(cookie, &d, &l, Side::Listener),
    )
}

fn frame_of(u: &mut Unstructured<'_>, n: u64) -> Frame {
    match u.int_in_range(0..=2u8).unwrap_or(0) {
        0 => Frame::Heartbeat { sent_micros: n },
        1 => Frame::HeartbeatAck { sent_micros: n },
        _ => Frame::Refused {
            kind: minishard::wire::handshake::RefusalKind::Busy,
            reason: String::arbitrary(u).unwrap_or_default(),
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let (dialer, listener) = keys();
    let mut encoder = FrameEncoder::established(LIMIT, Some(dialer.sealer));
    let mut decoder = FrameDecoder::established(LIMIT, Some(listener.opener));

    // The genuine stream, frame by frame.
    let count = u.int_in_range(0..=8u64).unwrap_or(0);
    let mut genuine = Vec::new();
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for n in 0..count {
        let frame = frame_of(&mut u, n);
        let mut sealed = BytesMut::new();
        if encoder
            .encode(Bytes::from(wire::encode(&frame)), &mut sealed)
            .is_err()
        {
            // Over the limit: the sender would not send it either.
            continue;
        }
        genuine.push(frame);
        frames.push(sealed.to_vec());
    }

    // The attacker's edits.
    let count = u.int_in_range(0..=8u8).unwrap_or(0);
    let edits: Vec<Edit> = (0..count).map_while(|_| edit(&mut u).ok()).collect();
    let touched = !edits.is_empty();
    for edit in edits {
        let pick = |i: u8, len: usize| (len > 0).then(|| i as usize % len);
        // A frame cut down to nothing has no byte to flip or cut.
        frames.retain(|f| !f.is_empty());
        match edit {
            Edit::FlipByte { frame, at, mask } => {
                if let Some(f) = pick(frame, frames.len()) {
                    let at = at as usize % frames[f].len();
                    frames[f][at] ^= mask.max(1);
                }
            }
            Edit::InsertBytes { frame, at, bytes } => {
                if let Some(f) = pick(frame, frames.len()) {
                    let at = at as usize % (frames[f].len() + 1);
                    frames[f].splice(at..at, bytes);
                }
            }
            Edit::CutBytes { frame, at, len } => {
                if let Some(f) = pick(frame, frames.len()) {
                    let at = at as usize % frames[f].len();
                    let end = (at + len.max(1) as usize).min(frames[f].len());
                    frames[f].drain(at..end);
                }
            }
            Edit::DropFrame { frame } => {
                if let Some(f) = pick(frame, frames.len()) {
                    frames.remove(f);
                }
            }
            Edit::RepeatFrame { frame } => {
                if let Some(f) = pick(frame, frames.len()) {
                    let copy = frames[f].clone();
                    frames.insert(f + 1, copy);
                }
            }
            Edit::SwapFrames { a, b } => {
                if let (Some(a), Some(b)) = (pick(a, frames.len()), pick(b, frames.len())) {
                    frames.swap(a, b);
                }
            }
            Edit::MakeUpFrame { before, body } => {
                let at = before as usize % (frames.len() + 1);
                let mut made = (body.len() as u32).to_be_bytes().to_vec();
                made.extend(body);
                frames.insert(at, made);
            }
        }
    }
    let stream = frames.concat();

    // Delivered in pieces of arbitrary sizes, then the end of the stream.
    let mut buffer = BytesMut::new();
    let mut received = Vec::new();
    let mut rest = &stream[..];
    let mut failed = false;
    let mut take = |buffer: &mut BytesMut, eof: bool| -> bool {
        loop {
            let next = if eof {
                decoder.decode_eof(buffer)
            } else {
                decoder.decode(buffer)
            };
            match next {
                Ok(Some(body)) => {
                    assert!(body.len() <= LIMIT, "{} bytes taken", body.len());
                    let frame = wire::decode(&body, LIMIT).expect("a sealed frame decodes");
                    received.push(frame);
                }
                Ok(None) => return true,
                Err(StreamError::Broken(_)) => return false,
                Err(StreamError::Io(e)) => panic!("no socket here: {e}"),
            }
        }
    };
    while !rest.is_empty() && !failed {
        let piece = (u.int_in_range(1..=512usize).unwrap_or(512)).min(rest.len());
        buffer.extend_from_slice(&rest[..piece]);
        rest = &rest[piece..];
        failed = !take(&mut buffer, false);
    }
    if !failed {
        failed = !take(&mut buffer, true);
    }

    assert!(
        genuine.starts_with(&received),
        "frames the sender did not send, or out of their place: {received:?} vs {genuine:?}"
    );
    if !touched {
        assert!(!failed, "an untouched stream failed");
        assert_eq!(received, genuine, "an untouched stream came out short");
    }
});
