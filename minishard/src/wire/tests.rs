use std::sync::Arc;

use proptest::prelude::*;

use super::handshake::{Answering, Dialing, Identity, PeerFacts, RefusalKind, Refuser};
use super::*;
use crate::core::{
    Ack, Claim, Health, Holding, NodeId, PeerMessage, Record, Role, ScoreOffer, Sighting, Yield,
};

fn node() -> impl Strategy<Value = NodeId> {
    (1u8..=254, 1u16..=65535).prop_map(|(h, p)| NodeId::parse(&format!("10.0.0.{h}:{p}")).unwrap())
}

fn holding() -> impl Strategy<Value = Holding> {
    prop_oneof![
        Just(Holding::Idle),
        Just(Holding::Standby),
        Just(Holding::Left),
        (any::<u32>(), any::<u64>()).prop_map(|(shard, epoch)| Holding::Claiming { shard, epoch }),
        (any::<u32>(), any::<u64>()).prop_map(|(shard, epoch)| Holding::Proposing { shard, epoch }),
        (any::<u32>(), any::<u64>()).prop_map(|(shard, epoch)| Holding::Active { shard, epoch }),
        (any::<u32>(), any::<u64>()).prop_map(|(shard, epoch)| Holding::Releasing { shard, epoch }),
        (any::<u32>(), any::<u64>()).prop_map(|(shard, epoch)| Holding::Yielding { shard, epoch }),
    ]
}

fn claim() -> impl Strategy<Value = Claim> {
    (node(), any::<u64>(), any::<u64>()).prop_map(|(node, incarnation, epoch)| Claim {
        node,
        incarnation,
        epoch,
    })
}

fn record() -> impl Strategy<Value = Record> {
    let offer = (
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<Option<i64>>(),
        prop::collection::vec((node(), any::<u64>(), any::<u64>()), 0..4),
    )
        .prop_map(|(shard, epoch, episode, score, acks)| ScoreOffer {
            shard,
            epoch,
            episode,
            score,
            acks: acks
                .into_iter()
                .map(|(node, epoch, episode)| Ack {
                    node,
                    epoch,
                    episode,
                })
                .collect(),
        });
    let yielded = (
        any::<u32>(),
        any::<u64>(),
        claim(),
        any::<Option<i64>>(),
        any::<Option<i64>>(),
    )
        .prop_map(|(shard, epoch, winner, winner_score, own_score)| Yield {
            shard,
            epoch,
            winner,
            winner_score,
            own_score,
        });
    (
        node(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        holding(),
        prop::collection::vec((node(), any::<u64>()), 0..6),
        prop::option::of(offer),
        prop::option::of(yielded),
        (any::<u32>(), 0..3usize),
    )
        .prop_map(
            |(
                node,
                incarnation,
                version,
                member,
                holding,
                sees,
                offer,
                yielded,
                (shards, health),
            )| Record {
                node,
                incarnation,
                version,
                role: if member { Role::Member } else { Role::Observer },
                shard_count: shards,
                health: [Health::Degraded, Health::Transition, Health::Available][health],
                holding,
                sees: sees
                    .into_iter()
                    .map(|(node, incarnation)| Sighting { node, incarnation })
                    .collect(),
                offer,
                yielded,
                acknowledged: Vec::new(),
                metadata: Default::default(),
                released: None,
            },
        )
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (
            any::<u16>(),
            "[a-z]{0,12}",
            node(),
            any::<u64>(),
            any::<[u8; 32]>()
        )
            .prop_map(
                |(version, cluster, node, incarnation, nonce)| Frame::Hello(Hello {
                    version,
                    cluster,
                    node,
                    incarnation,
                    role: Role::Member,
                    nonce,
                })
            ),
        (node(), any::<u64>(), any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(
            |(node, incarnation, nonce, mac)| Frame::Challenge(Challenge {
                node,
                incarnation,
                role: Role::Observer,
                nonce,
                mac,
            })
        ),
        any::<[u8; 32]>().prop_map(|mac| Frame::Proof(Proof { mac })),
        Just(Frame::Welcome),
        ".{0,40}".prop_map(|reason| Frame::Refused {
            kind: RefusalKind::NotAMember,
            reason
        }),
        any::<u64>().prop_map(|sent_micros| Frame::Heartbeat { sent_micros }),
        any::<u64>().prop_map(|sent_micros| Frame::HeartbeatAck { sent_micros }),
        record().prop_map(|r| Frame::Peer(PeerMessage::Record(Arc::new(r)))),
        (
            record(),
            any::<bool>(),
            prop::collection::vec(claim(), 0..3)
        )
            .prop_map(|(mut r, current, acknowledged)| {
                r.acknowledged = acknowledged;
                r.metadata = Arc::new(
                    [("http".to_owned(), format!("{}", r.node))]
                        .into_iter()
                        .collect(),
                );
                Frame::Peer(PeerMessage::Relay {
                    record: Arc::new(r),
                    current,
                })
            }),
        prop::collection::vec(prop::option::of(claim()), 0..16)
            .prop_map(|e| Frame::Peer(PeerMessage::Epochs(e))),
        Just(Frame::StatusRequest),
        ".{0,80}".prop_map(|json| Frame::StatusReport { json }),
        (
            any::<u64>(),
            any::<u32>(),
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(id, shard, payload)| Frame::Request(request::Request {
                id,
                shard,
                payload: payload.into(),
            })),
        (any::<u64>(), reply_outcome())
            .prop_map(|(id, outcome)| Frame::Reply(request::Reply { id, outcome })),
    ]
}

fn reply_outcome() -> impl Strategy<Value = request::ReplyOutcome> {
    use request::ReplyOutcome;
    prop_oneof![
        (any::<u64>(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(epoch, payload)| {
            ReplyOutcome::Answered {
                epoch,
                payload: payload.into(),
            }
        }),
        (any::<u64>(), ".{0,20}")
            .prop_map(|(epoch, message)| ReplyOutcome::Failed { epoch, message }),
        proptest::option::of((node(), any::<u64>()))
            .prop_map(|owner| ReplyOutcome::NotOwner { owner }),
        Just(ReplyOutcome::Overloaded),
    ]
}

proptest! {
    #[test]
    fn every_frame_round_trips(frame in frame()) {
        let bytes = encode(&frame);
        prop_assert_eq!(decode(&bytes, DEFAULT_FRAME_LIMIT), Ok(frame));
    }

    #[test]
    fn arbitrary_bytes_decode_to_a_frame_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        // Must return, not panic, not allocate without bound.
        let _ = decode(&bytes, DEFAULT_FRAME_LIMIT);
    }

    #[test]
    fn a_truncated_frame_is_an_error(frame in frame(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&frame);
        let cut = cut.index(bytes.len());
        prop_assert!(decode(&bytes[..cut], DEFAULT_FRAME_LIMIT).is_err());
    }
}

#[test]
fn a_frame_over_the_limit_is_refused_before_decoding() {
    let bytes = vec![0u8; 100];
    assert_eq!(
        decode(&bytes, 99),
        Err(WireError::TooLarge {
            len: 100,
            limit: 99
        })
    );
}

#[test]
fn trailing_bytes_are_refused() {
    let mut bytes = encode(&Frame::Welcome);
    bytes.push(0);
    assert_eq!(
        decode(&bytes, DEFAULT_FRAME_LIMIT),
        Err(WireError::TrailingBytes(1))
    );
}

#[test]
fn a_huge_length_inside_a_frame_does_not_allocate_it() {
    // A Refused frame whose string claims 2^60 bytes.
    let mut bytes = vec![4u8]; // variant index of Refused
    bytes.push(255); // bincode varint marker for a u64
    bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(matches!(
        decode(&bytes, DEFAULT_FRAME_LIMIT),
        Err(WireError::Malformed(_))
    ));
}

fn identity(addr: &str, cookie: &[u8]) -> Identity {
    Identity {
        cluster: "sessions".into(),
        node: NodeId::parse(addr).unwrap(),
        incarnation: 42,
        role: Role::Member,
        cookie: Arc::from(cookie),
    }
}

fn handshake(dialer: &Identity, listener: &Identity) -> Result<(PeerFacts, PeerFacts), String> {
    let (dialing, hello) = Dialing::start(dialer.clone(), listener.node.clone(), [1; 32]);
    let (answering, challenge) =
        Answering::on_hello(listener, hello, [2; 32], |_| Ok(())).map_err(|r| r.reason)?;
    let (awaiting, proof) = dialing.on_challenge(challenge).map_err(|r| r.reason)?;
    let seen_by_listener = answering.on_proof(proof).map_err(|r| r.reason)?;
    let seen_by_dialer = awaiting.on_welcome(Frame::Welcome).map_err(|r| r.reason)?;
    Ok((seen_by_dialer.peer, seen_by_listener.peer))
}

#[test]
fn nodes_sharing_the_cookie_authenticate_each_other() {
    let a = identity("10.0.0.1:7000", b"secret");
    let b = identity("10.0.0.2:7000", b"secret");
    let (seen_by_a, seen_by_b) = handshake(&a, &b).unwrap();
    assert_eq!(seen_by_a.node, b.node);
    assert_eq!(seen_by_b.node, a.node);
}

#[test]
fn a_wrong_cookie_is_refused_by_the_side_that_checks_first() {
    let a = identity("10.0.0.1:7000", b"secret");
    let b = identity("10.0.0.2:7000", b"other");
    let err = handshake(&a, &b).unwrap_err();
    assert!(err.contains("cookie"), "{err}");
}

#[test]
fn the_cookie_is_never_on_the_wire() {
    let cookie = b"a-very-recognisable-cookie";
    let a = identity("10.0.0.1:7000", cookie);
    let b = identity("10.0.0.2:7000", cookie);
    let (dialing, hello) = Dialing::start(a, b.node.clone(), [1; 32]);
    let (_, challenge) = Answering::on_hello(&b, hello.clone(), [2; 32], |_| Ok(())).unwrap();
    let (_, proof) = dialing.on_challenge(challenge.clone()).unwrap();
    for frame in [hello, challenge, proof] {
        let bytes = encode(&frame);
        assert!(!bytes.windows(cookie.len()).any(|w| w == cookie));
    }
}

#[test]
fn a_replayed_proof_fails_against_a_fresh_nonce() {
    let a = identity("10.0.0.1:7000", b"secret");
    let b = identity("10.0.0.2:7000", b"secret");
    let (dialing, hello) = Dialing::start(a, b.node.clone(), [1; 32]);
    let (answering, challenge) =
        Answering::on_hello(&b, hello.clone(), [2; 32], |_| Ok(())).unwrap();
    let (_, proof) = dialing.on_challenge(challenge).unwrap();
    answering.on_proof(proof.clone()).unwrap();
    // An eavesdropper replays the recorded hello and proof on a new connection.
    let (again, _) = Answering::on_hello(&b, hello, [3; 32], |_| Ok(())).unwrap();
    let err = again.on_proof(proof).unwrap_err();
    assert!(err.reason.contains("cookie"), "{err}");
}

#[test]
fn wrong_version_cluster_self_and_unknown_nodes_are_refused_with_a_reason() {
    let b = identity("10.0.0.2:7000", b"secret");
    let hello = |version: u16, cluster: &str, node: &str| {
        Frame::Hello(Hello {
            version,
            cluster: cluster.into(),
            node: NodeId::parse(node).unwrap(),
            incarnation: 1,
            role: Role::Member,
            nonce: [0; 32],
        })
    };
    let refuse = |frame| Answering::on_hello(&b, frame, [2; 32], |_| Ok(())).unwrap_err();
    let version = refuse(hello(99, "sessions", "10.0.0.1:7000"));
    assert_eq!(version.kind, RefusalKind::WrongVersion);
    assert!(version.reason.contains("protocol version 99"));
    let cluster = refuse(hello(PROTOCOL_VERSION, "other", "10.0.0.1:7000"));
    assert_eq!(cluster.kind, RefusalKind::WrongCluster);
    assert!(cluster.reason.contains("wrong cluster"));
    let own = refuse(hello(PROTOCOL_VERSION, "sessions", "10.0.0.2:7000"));
    assert_eq!(own.kind, RefusalKind::WrongNode);
    assert!(own.reason.contains("own address"));
    let unknown = Answering::on_hello(
        &b,
        hello(PROTOCOL_VERSION, "sessions", "10.0.0.9:7000"),
        [2; 32],
        |p| {
            Err((
                RefusalKind::NotAMember,
                format!("{} is not in the member list", p.node),
            ))
        },
    )
    .unwrap_err();
    assert!(unknown.reason.contains("not in the member list"));
    // The peer is told, and told why in a form it can act on.
    assert!(matches!(
        unknown.frame(),
        Some(Frame::Refused {
            kind: RefusalKind::NotAMember,
            ..
        })
    ));
}

#[test]
fn a_dialer_refuses_a_listener_that_is_not_who_it_dialled() {
    let a = identity("10.0.0.1:7000", b"secret");
    let b = identity("10.0.0.2:7000", b"secret");
    let (dialing, hello) = Dialing::start(a, NodeId::parse("10.0.0.3:7000").unwrap(), [1; 32]);
    let (_, challenge) = Answering::on_hello(&b, hello, [2; 32], |_| Ok(())).unwrap();
    let err = dialing.on_challenge(challenge).unwrap_err();
    assert!(err.reason.contains("says it is"), "{err}");
}

// The handshake checks MACs with `Mac::verify_slice`, which compares in
// constant time (`subtle::ConstantTimeEq`). This pins down the rest of what
// the handshake relies on from that API: it is a check of the whole tag, not
// of a prefix, and a tag wrong in any one bit fails.
#[test]
fn the_mac_check_takes_only_the_whole_exact_tag() {
    use hmac::{Hmac, Mac};
    use sha2::Sha256;
    let mac = || {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"cookie").unwrap();
        mac.update(b"transcript");
        mac
    };
    let tag: [u8; 32] = mac().finalize().into_bytes().into();
    assert!(mac().verify_slice(&tag).is_ok());
    for byte in [0, 15, 31] {
        for bit in [0, 7] {
            let mut wrong = tag;
            wrong[byte] ^= 1 << bit;
            assert!(mac().verify_slice(&wrong).is_err());
        }
    }
    // A prefix of the right tag, even a single byte, is not a match.
    for len in [0, 1, 16, 31] {
        assert!(mac().verify_slice(&tag[..len]).is_err());
    }
    let mut longer = tag.to_vec();
    longer.push(0);
    assert!(mac().verify_slice(&longer).is_err());
}

#[test]
fn a_proof_for_another_cluster_or_listener_does_not_verify() {
    // The transcript binds the cluster, both identities and both nonces: a
    // proof made for one listener is useless against another.
    let a = identity("10.0.0.1:7000", b"secret");
    let b = identity("10.0.0.2:7000", b"secret");
    let c = identity("10.0.0.3:7000", b"secret");
    let (dialing, hello) = Dialing::start(a, b.node.clone(), [1; 32]);
    let (_, challenge) = Answering::on_hello(&b, hello.clone(), [2; 32], |_| Ok(())).unwrap();
    let (_, proof) = dialing.on_challenge(challenge).unwrap();
    // Same hello and even the same listener nonce, but another listener.
    let (at_c, _) = Answering::on_hello(&c, hello, [2; 32], |_| Ok(())).unwrap();
    assert!(at_c.on_proof(proof).unwrap_err().reason.contains("cookie"));
}

#[test]
fn a_listener_cannot_reflect_its_own_mac_as_a_proof() {
    // The two MACs carry different labels: echoing the challenge's MAC back
    // as the proof fails.
    let a = identity("10.0.0.1:7000", b"secret");
    let b = identity("10.0.0.2:7000", b"secret");
    let (_, hello) = Dialing::start(a, b.node.clone(), [1; 32]);
    let (answering, challenge) = Answering::on_hello(&b, hello, [2; 32], |_| Ok(())).unwrap();
    let Frame::Challenge(challenge) = challenge else {
        unreachable!()
    };
    let reflected = Frame::Proof(Proof { mac: challenge.mac });
    assert!(answering.on_proof(reflected).is_err());
}

#[test]
fn a_peers_refusal_is_made_fit_for_a_log_line() {
    let a = identity("10.0.0.1:7000", b"secret");
    let (dialing, _) = Dialing::start(a, NodeId::parse("10.0.0.2:7000").unwrap(), [1; 32]);
    let forged = format!("nope\n2026-01-01 INFO all is well{}", "x".repeat(10_000));
    let refusal = dialing
        .on_challenge(Frame::Refused {
            kind: RefusalKind::WrongCookie,
            reason: forged,
        })
        .unwrap_err();
    assert!(!refusal.reason.contains('\n'), "{}", refusal.reason);
    assert!(refusal.reason.contains("nope\\n2026"));
    assert!(refusal.reason.len() < 300, "{}", refusal.reason.len());
    assert!(refusal.frame().is_none(), "a refusal is not answered");
    assert_eq!(refusal.kind, RefusalKind::WrongCookie);
    assert_eq!(refusal.refuser, Refuser::Peer);
}

#[test]
fn every_handshake_frame_fits_the_handshake_limit() {
    let longest = Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        cluster: "c".repeat(MAX_CLUSTER_NAME_LEN),
        node: NodeId::parse(&format!("{}:65535", "h".repeat(255))).unwrap(),
        incarnation: u64::MAX,
        role: Role::Observer,
        nonce: [255; 32],
    });
    assert!(encode(&longest).len() < HANDSHAKE_FRAME_LIMIT / 8);
}

#[test]
fn an_over_long_integer_encoding_is_refused() {
    // Found by the frame_decode fuzz target (fuzz/seeds/frame_decode/
    // overlong-varint): a heartbeat whose 7 is written in the 4-byte form.
    let overlong = [5, 0xfc, 7, 0, 0, 0];
    assert!(matches!(
        decode(&overlong, DEFAULT_FRAME_LIMIT),
        Err(WireError::Malformed(why)) if why.contains("canonical")
    ));
    let canonical = encode(&Frame::Heartbeat { sent_micros: 7 });
    assert_eq!(canonical, [5, 7]);
    assert_eq!(
        decode(&canonical, DEFAULT_FRAME_LIMIT),
        Ok(Frame::Heartbeat { sent_micros: 7 })
    );
}
