//! What the fuzz targets in `minishard/fuzz` found, kept as ordinary tests
//! (README: Fuzzing). Each names the target and the seed file that found it.

use std::sync::Arc;

use minishard::core::{
    Core, CoreConfig, Event, Health, Holding, Instant, NodeId, PeerMessage, Record, Role,
    MAX_SHARDS,
};
use minishard::Timings;

fn id(text: &str) -> NodeId {
    NodeId::parse(text).unwrap()
}

fn member_record(node: &str, shard_count: u32) -> PeerMessage {
    PeerMessage::Record(Arc::new(Record {
        node: id(node),
        incarnation: 1,
        version: 1,
        role: Role::Member,
        shard_count,
        health: Health::Available,
        holding: Holding::Standby,
        sees: Vec::new(),
        offer: None,
        yielded: None,
        acknowledged: Vec::new(),
        metadata: Default::default(),
        released: None,
    }))
}

/// core_messages, seeds/core_messages/observer-huge-shard-count: an
/// observer started without a shard count took the first member's, and a
/// member announcing 2^32-1 shards made it allocate 32 GiB. A count over
/// `MAX_SHARDS` is now ignored; a sane one is still learned.
#[test]
fn an_observer_does_not_learn_an_absurd_shard_count() {
    let member = "10.0.0.2:7000";
    let config = CoreConfig {
        me: id("10.0.0.1:7000"),
        role: Role::Observer,
        members: vec![id(member)],
        shard_count: 0,
        timings: Timings::default(),
        metadata: Default::default(),
        quorum: Default::default(),
    };
    config.validate().unwrap();
    let mut core = Core::new(config, 7, Instant::ZERO);
    core.handle(
        Instant::ZERO,
        Event::Connected {
            peer: id(member),
            incarnation: 1,
            role: Role::Member,
        },
    );
    for absurd in [u32::MAX, MAX_SHARDS + 1] {
        core.handle(
            Instant::ZERO,
            Event::Message {
                from: id(member),
                message: member_record(member, absurd),
            },
        );
        assert_eq!(core.snapshot().unwrap().shard_count, 0);
    }
    core.handle(
        Instant::ZERO,
        Event::Message {
            from: id(member),
            message: member_record(member, 1),
        },
    );
    assert_eq!(core.snapshot().unwrap().shard_count, 1);
}

#[test]
fn a_configuration_over_the_shard_limit_is_refused() {
    let members: Vec<NodeId> = (0..=MAX_SHARDS)
        .map(|i| {
            id(&format!(
                "10.{}.{}.{}:7000",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            ))
        })
        .collect();
    let config = CoreConfig {
        me: members[0].clone(),
        role: Role::Member,
        shard_count: MAX_SHARDS + 1,
        members,
        timings: Timings::default(),
        metadata: Default::default(),
        quorum: Default::default(),
    };
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("over the limit"), "{err}");
}

/// core_messages, seeds/core_messages/epoch-at-the-top: a peer announcing
/// epoch 2^64-1 for a shard made this node claim it at 2^64-1 (the
/// increment saturated), not above the epoch it had seen, and then again
/// at the same epoch: epochs no longer fenced anything. Such a shard is now
/// left unclaimed (health shows it) rather than claimed without a fence.
#[test]
fn a_node_never_claims_at_an_epoch_it_cannot_raise() {
    let me = "10.0.0.1:7000";
    let peer = "10.0.0.2:7000";
    let config = CoreConfig {
        me: id(me),
        role: Role::Member,
        members: vec![id(me), id(peer)],
        shard_count: 1,
        timings: Timings::default(),
        metadata: Default::default(),
        quorum: Default::default(),
    };
    let mut core = Core::new(config, 7, Instant::ZERO);
    let mut now = Instant::ZERO;
    core.handle(
        now,
        Event::Connected {
            peer: id(peer),
            incarnation: 1,
            role: Role::Member,
        },
    );
    // The peer holds nothing and will not claim; it says shard 0 has been
    // allocated at the largest epoch there is.
    let mut idle = match member_record(peer, 1) {
        PeerMessage::Record(r) => (*r).clone(),
        _ => unreachable!(),
    };
    idle.holding = Holding::Idle;
    for message in [
        PeerMessage::Record(Arc::new(idle)),
        PeerMessage::Epochs(vec![Some(minishard::core::Claim {
            node: id(peer),
            incarnation: 1,
            epoch: u64::MAX,
        })]),
    ] {
        core.handle(
            now,
            Event::Message {
                from: id(peer),
                message,
            },
        );
    }
    let mut claims = Vec::new();
    for _ in 0..100 {
        now = now + std::time::Duration::from_millis(100);
        core.handle(now, Event::Timeout);
        while let Some(action) = core.poll_action() {
            if let minishard::core::Action::Call {
                call: minishard::core::Call::Allocated { shard, epoch },
                ..
            } = action
            {
                claims.push((shard, epoch));
            }
        }
    }
    assert_eq!(claims, vec![], "claimed without a fence above u64::MAX");
    assert!(core.snapshot().unwrap().owners[0].is_none());
}
