//! Arbitrary frames fed to both sides of the handshake state machine, next
//! to a genuine peer with the same cookie. Checked for every input:
//! - nothing panics;
//! - a side accepts exactly when the peer's MAC is the genuine one (a
//!   forged frame authenticates only if it carries the right MAC, which the
//!   fuzzer cannot compute without the cookie);
//! - every refusal is fit for a log line (one line, bounded);
//! - a listener that accepts derives the very keys the genuine dialer does.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use minishard::core::{NodeId, Role};
use minishard::wire::handshake::{Answering, Dialing, Identity, Refusal};
use minishard::wire::seal::SessionKeys;
use minishard::wire::{self, Frame, Hello, DEFAULT_FRAME_LIMIT};

const COOKIE: &[u8] = b"fuzz-cookie";

fn identity(address: &str, incarnation: u64) -> Identity {
    Identity {
        cluster: "fuzz".into(),
        node: NodeId::parse(address).unwrap(),
        incarnation,
        role: Role::Member,
        cookie: Arc::from(COOKIE),
    }
}

fn check(refusal: &Refusal) {
    assert!(!refusal.reason.contains('\n'), "{:?}", refusal.reason);
    assert!(
        refusal.reason.len() < 1024,
        "{} bytes",
        refusal.reason.len()
    );
}

/// A frame: the genuine one, the genuine one with a byte flipped, or
/// bytes from the fuzzer.
fn frame(u: &mut Unstructured<'_>, genuine: &Frame) -> Option<Frame> {
    match u.int_in_range(0..=2u8).ok()? {
        0 => Some(genuine.clone()),
        1 => {
            let mut bytes = wire::encode(genuine);
            let at = u.choose_index(bytes.len()).ok()?;
            bytes[at] ^= u8::arbitrary(u).ok()?.max(1);
            wire::decode(&bytes, DEFAULT_FRAME_LIMIT).ok()
        }
        _ => {
            let len = u.int_in_range(0..=512usize).ok()?;
            wire::decode(u.bytes(len).ok()?, DEFAULT_FRAME_LIMIT).ok()
        }
    }
}

/// The keys a dialer that knows the cookie ends up with after `hello`
/// and `challenge`.
fn dialer_keys(hello: &Hello, listener: &Identity, challenge: &Frame) -> SessionKeys {
    let me = Identity {
        cluster: hello.cluster.clone(),
        node: hello.node.clone(),
        incarnation: hello.incarnation,
        role: hello.role,
        cookie: Arc::from(COOKIE),
    };
    let (d, _) = Dialing::start(me, listener.node.clone(), hello.nonce);
    let (awaiting, _) = d.on_challenge(challenge.clone()).expect("genuine");
    awaiting.on_welcome(Frame::Welcome).expect("welcome").keys
}

/// Whatever one side seals, the other opens, both ways.
fn same_keys(dialer: SessionKeys, listener: SessionKeys) {
    let (mut d, mut l) = (dialer, listener);
    let there = d.sealer.seal_to_vec(b"to the listener").unwrap();
    assert_eq!(l.opener.open_to_vec(&there).unwrap(), b"to the listener");
    let back = l.sealer.seal_to_vec(b"to the dialer").unwrap();
    assert_eq!(d.opener.open_to_vec(&back).unwrap(), b"to the dialer");
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let dialer = identity("10.0.0.1:7000", 1);
    let listener = identity("10.0.0.2:7000", 2);
    let nonces: [[u8; 32]; 2] = [[1; 32], [2; 32]];

    // The listener against an arbitrary dialer.
    let (genuine_dialer, genuine_hello) =
        Dialing::start(dialer.clone(), listener.node.clone(), nonces[0]);
    let Some(hello) = frame(&mut u, &genuine_hello) else {
        return;
    };
    match Answering::on_hello(&listener, hello.clone(), nonces[1], |_| Ok(())) {
        Err(refusal) => check(&refusal),
        Ok((answering, challenge)) => {
            // The genuine proof for this very hello and challenge, made by a
            // dialer that knows the cookie (when the hello is well formed).
            let genuine_proof = match &hello {
                Frame::Hello(h) => {
                    let me = Identity {
                        cluster: h.cluster.clone(),
                        node: h.node.clone(),
                        incarnation: h.incarnation,
                        role: h.role,
                        cookie: Arc::from(COOKIE),
                    };
                    let (d, _) = Dialing::start(me, listener.node.clone(), h.nonce);
                    d.on_challenge(challenge.clone())
                        .ok()
                        .map(|(_, proof)| proof)
                }
                _ => None,
            };
            let Some(genuine_proof) = genuine_proof else {
                return;
            };
            let Some(proof) = frame(&mut u, &genuine_proof) else {
                return;
            };
            let right = proof == genuine_proof;
            match answering.on_proof(proof) {
                Ok(established) => {
                    assert!(right, "a forged proof was accepted");
                    let Frame::Hello(h) = &hello else {
                        unreachable!()
                    };
                    assert_eq!(established.peer.node, h.node);
                    assert_eq!(established.peer.incarnation, h.incarnation);
                    // The keys it derived are the genuine dialer's.
                    let dialer = dialer_keys(h, &listener, &challenge);
                    same_keys(dialer, established.keys);
                }
                Err(refusal) => {
                    assert!(!right, "the genuine proof was refused: {refusal}");
                    check(&refusal);
                }
            }
        }
    }

    // The dialer against an arbitrary listener.
    let (_, genuine_challenge) =
        match Answering::on_hello(&listener, genuine_hello, nonces[1], |_| Ok(())) {
            Ok(answer) => answer,
            Err(_) => unreachable!("the genuine hello is accepted"),
        };
    let Some(challenge) = frame(&mut u, &genuine_challenge) else {
        return;
    };
    let forged = challenge != genuine_challenge;
    match genuine_dialer.on_challenge(challenge.clone()) {
        Err(refusal) => check(&refusal),
        Ok((awaiting, _proof)) => {
            // Every field of a challenge is under its MAC: only the genuine
            // one may pass.
            assert!(!forged, "a forged challenge was accepted: {challenge:?}");
            let Some(welcome) = frame(&mut u, &Frame::Welcome) else {
                return;
            };
            match awaiting.on_welcome(welcome.clone()) {
                Ok(_) => assert_eq!(welcome, Frame::Welcome),
                Err(refusal) => check(&refusal),
            }
        }
    }
});
