//! Misconfiguration speaks (docs/design.md 6.8): a node that no member
//! accepts, because its cookie or cluster name differs, is part of no
//! cluster. It never becomes available nor takes a shard, even where it
//! would count as enough members alone; `wait_until` fails at once with
//! [`Error::Misconfigured`] naming the member that refuses it; status counts
//! the refusals per member. The member that was serving keeps its shard.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, Local, Told};
use minishard::{Cluster, Error, Health, RefusalReason};

const BOUND: Duration = Duration::from_secs(10);

/// Two members, one shard, both up and agreeing; then node 1 restarts with
/// `configure` applied: its cookie or cluster name no longer matches.
/// Returns when it restarted.
fn second_node_restarted_misconfigured(
    name: &str,
    configure: common::Configure,
) -> (Local, Instant) {
    let mut local = Local::start(name, 2, 1);
    local.converged(BOUND).expect("the two members agree");
    local.crash(1);
    // Node 0 takes the shard if node 1 had it, and is the only owner.
    assert!(eventually(BOUND, || {
        let c = local.nodes[0].cluster();
        c.health() == Health::Available && c.my_shard().is_some()
    }));
    local.configure = Some(configure);
    let restarted = Instant::now();
    local.restart(1);
    (local, restarted)
}

fn allocations_since(local: &Local, i: usize, since: Instant) -> usize {
    local.nodes[i]
        .journal
        .timed()
        .iter()
        .filter(|(at, told)| *at >= since && matches!(told, Told::Allocated { .. }))
        .count()
}

#[test]
fn a_node_with_another_cookie_never_becomes_available_and_says_why() {
    let (local, restarted) = second_node_restarted_misconfigured(
        "misconfigured-cookie",
        Arc::new(|i, config| {
            if i == 1 {
                config.cookie = b"another-cookie".to_vec();
            }
        }),
    );
    let (good, bad) = (local.nodes[0].cluster(), local.nodes[1].cluster());
    let waited = bad.wait_until(Health::Available, Duration::from_secs(30));
    let Err(Error::Misconfigured(why)) = waited else {
        panic!("expected a misconfiguration, got {waited:?}");
    };
    assert!(why.contains(good.node_id().as_str()), "{why}");
    assert!(why.contains("wrong_cookie"), "{why}");
    let status = bad.status();
    assert!(status.misconfigured);
    assert_ne!(status.health, Health::Available);
    assert!(eventually(BOUND, || bad.health() == Health::Degraded));
    let refusal = &status.refusals[0];
    assert_eq!(
        (&refusal.peer, refusal.reason),
        (good.node_id(), RefusalReason::WrongCookie)
    );
    assert!(refusal.count >= 1 && refusal.refusing, "{refusal:?}");
    // More refusals come as it keeps dialling: they are counted.
    let first = refusal.count;
    assert!(eventually(BOUND, || bad.status().refusals[0].count > first));

    // The member that was serving is not the one out of the cluster: it
    // keeps the shard, and its status shows who it keeps refusing.
    assert_eq!(good.health(), Health::Available);
    assert_eq!(good.get_node(0).as_ref(), Some(good.node_id()));
    assert!(!good.status().misconfigured);
    assert!(eventually(BOUND, || good.status().refusals.iter().any(
        |r| &r.peer == bad.node_id() && r.reason == RefusalReason::WrongCookie
    )));
    assert_eq!(allocations_since(&local, 1, restarted), 0);
    assert!(bad.my_shard().is_none());
}

#[test]
fn a_node_in_another_cluster_is_refused_as_such() {
    // Three members, one shard; node 2 restarts under another cluster name.
    let mut local = Local::start("misconfigured-name", 3, 1);
    local.converged(BOUND).expect("the three members agree");
    local.crash(2);
    let app = common::App {
        members: local.members.clone(),
        shards: 1,
        score: Default::default(),
        journal: Default::default(),
    };
    let stray = Cluster::join("another-cluster", app, local.config(2)).expect("join");
    let waited = stray.wait_until(Health::Available, Duration::from_secs(30));
    let Err(Error::Misconfigured(why)) = waited else {
        panic!("expected a misconfiguration, got {waited:?}");
    };
    assert!(why.contains("wrong_cluster"), "{why}");
    // It fails at the first refusal; the other member's follows.
    assert!(
        eventually(BOUND, || stray.status().refusals.len() == 2),
        "both members refuse it: {:?}",
        stray.status().refusals
    );
    assert!(stray
        .status()
        .refusals
        .iter()
        .all(|r| r.reason == RefusalReason::WrongCluster && r.refusing));
    assert!(stray.my_shard().is_none());
    // The two others are a cluster of two for one shard, and say who they
    // refuse.
    for good in [local.nodes[0].cluster(), local.nodes[1].cluster()] {
        assert!(eventually(BOUND, || good.health() == Health::Available));
        assert!(!good.status().misconfigured);
    }
}
