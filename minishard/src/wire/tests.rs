use std::sync::Arc;

use proptest::prelude::*;

use super::handshake::{Answering, Dialing, Identity, PeerFacts};
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
        ".{0,40}".prop_map(|reason| Frame::Refused { reason }),
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
                Frame::Peer(PeerMessage::Relay {
                    record: Arc::new(r),
                    current,
                })
            }),
        prop::collection::vec(any::<u64>(), 0..16)
            .prop_map(|e| Frame::Peer(PeerMessage::Epochs(e))),
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
    Ok((seen_by_dialer, seen_by_listener))
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
    let refuse = |frame| {
        Answering::on_hello(&b, frame, [2; 32], |_| Ok(()))
            .unwrap_err()
            .reason
    };
    assert!(refuse(hello(99, "sessions", "10.0.0.1:7000")).contains("protocol version 99"));
    assert!(refuse(hello(PROTOCOL_VERSION, "other", "10.0.0.1:7000")).contains("wrong cluster"));
    assert!(refuse(hello(PROTOCOL_VERSION, "sessions", "10.0.0.2:7000")).contains("own address"));
    let unknown = Answering::on_hello(
        &b,
        hello(PROTOCOL_VERSION, "sessions", "10.0.0.9:7000"),
        [2; 32],
        |p| Err(format!("{} is not in the member list", p.node)),
    )
    .unwrap_err();
    assert!(unknown.reason.contains("not in the member list"));
    assert!(matches!(unknown.frame(), Some(Frame::Refused { .. })));
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
