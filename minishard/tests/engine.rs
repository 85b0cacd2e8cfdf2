//! The running engine over real sockets on loopback: convergence, failover,
//! restarts, leaves, splits and their heal.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use minishard::{Config, Health, NodeId, ReleaseReason};

fn bound(local: &Local) -> Duration {
    // docs/design.md 7.1, with room for a loaded CI machine.
    let t = local.timings;
    (t.heartbeat_timeout + t.node_grace + Duration::from_millis(100)) * 4
}

/// A node_grace far longer than `bound`: a shard that moves within `bound`
/// was not failed over after a grace. That makes "without waiting for the
/// grace" a condition instead of a stopwatch (the times are figures of
/// `minishard bench`).
const LONG_GRACE: Duration = Duration::from_secs(30);

fn with_long_grace() -> Option<Configure> {
    Some(Arc::new(|_, config: &mut Config| {
        config.timings.node_grace = LONG_GRACE
    }))
}

#[test]
fn five_nodes_three_shards_converge_to_one_map() {
    let local = Local::start("converge", 5, 3);
    let map = local.converged(Duration::from_secs(10)).unwrap();
    let owners: HashSet<_> = map.iter().flatten().collect();
    assert_eq!(owners.len(), 3, "three different owners: {map:?}");
    let allocated: usize = local
        .nodes
        .iter()
        .map(|n| n.journal.count(|t| matches!(t, Told::Allocated { .. })))
        .sum();
    assert_eq!(allocated, 3, "one allocated per shard, no churn");
    for node in &local.nodes {
        let status = node.cluster().status();
        assert_eq!(status.allocated, 3);
        assert_eq!(status.nodes.len(), 5);
    }
}

#[test]
fn a_crashed_owner_fails_over_after_the_grace() {
    let mut local = Local::start("failover", 4, 2);
    local.converged(Duration::from_secs(10)).unwrap();
    let victim = local.owner(0, 0).unwrap();
    let viewer = (victim + 1) % 4;
    let crashed_at = Instant::now();
    local.crash(victim);
    let moved = eventually(bound(&local), || {
        local.owner(viewer, 0).is_some_and(|o| o != victim)
    });
    assert!(moved, "shard 0 never left the crashed node");
    let new_owner = local.owner(viewer, 0).unwrap();
    let (at, _) = local.nodes[new_owner]
        .journal
        .timed()
        .into_iter()
        .rfind(|(_, t)| matches!(t, Told::Allocated { shard: 0, .. }))
        .unwrap();
    // The peers notice the close at once; the shard stays reserved for the
    // grace. (An ordering: the grace's end comes first, however slow the
    // machine.)
    assert!(
        at.duration_since(crashed_at) >= local.timings.node_grace,
        "took the shard before the grace ended"
    );
    local.converged(bound(&local)).unwrap();
}

#[test]
fn a_restarted_owner_voids_its_allocation_at_once() {
    let mut local = Local::start_with("restart", 4, 2, with_long_grace());
    local.converged(Duration::from_secs(10)).unwrap();
    let victim = local.owner(0, 1).unwrap();
    local.crash(victim);
    let restarted_at = Instant::now();
    local.restart(victim);
    // Within `bound`, far less than the grace: the new incarnation voided
    // the old allocation at once.
    assert!(bound(&local) * 2 < LONG_GRACE);
    let reallocated = eventually(bound(&local), || {
        local.nodes.iter().any(|n| {
            n.journal
                .timed()
                .into_iter()
                .any(|(at, t)| at > restarted_at && matches!(t, Told::Allocated { shard: 1, .. }))
        })
    });
    assert!(reallocated, "shard 1 was not allocated again");
    local.converged(bound(&local)).unwrap();
}

#[test]
fn a_graceful_leave_hands_over_without_waiting_for_the_grace() {
    let local = Local::start_with("leave", 4, 2, with_long_grace());
    local.converged(Duration::from_secs(10)).unwrap();
    let leaver = local.owner(0, 0).unwrap();
    let viewer = (leaver + 1) % 4;
    local.nodes[leaver].cluster().leave().unwrap();
    assert_eq!(
        local.nodes[leaver]
            .journal
            .all()
            .iter()
            .filter(|t| {
                matches!(
                    t,
                    Told::Deallocated {
                        winner: None,
                        reason: ReleaseReason::Left
                    }
                )
            })
            .count(),
        1,
        "the leaver's application was told deallocated(no winner, left)"
    );
    // Within `bound`, far less than the grace: handed over at once.
    assert!(bound(&local) * 2 < LONG_GRACE);
    assert!(
        eventually(bound(&local), || local
            .owner(viewer, 0)
            .is_some_and(|o| o != leaver)),
        "the shard was not handed over"
    );
}

#[test]
fn split_three_two_degrades_the_small_side_and_the_big_side_keeps_every_shard() {
    let local = Local::start("split32", 5, 3);
    local.converged(Duration::from_secs(10)).unwrap();
    let (big, small) = ([0, 1, 2], [3, 4]);
    local.split(&big, &small);
    let t = local.timings;
    let degrade_bound =
        (t.heartbeat_timeout + t.transition_timeout + Duration::from_millis(100)) * 4;
    for &i in &small {
        let c = local.nodes[i].cluster();
        c.wait_until(Health::Degraded, degrade_bound).unwrap();
        assert_eq!(c.my_shard(), None, "a degraded node holds no shard");
    }
    let everything = eventually(bound(&local), || {
        big.iter().all(|&i| {
            let map = local.nodes[i].cluster().shard_map();
            map.iter()
                .all(|o| o.as_ref().is_some_and(|o| big.contains(&local.index_of(o))))
                && local.nodes[i].cluster().health() == Health::Available
        })
    });
    assert!(everything, "the big side did not end with every shard");
    local.heal();
    local.converged(bound(&local)).unwrap();
}

#[test]
fn split_three_three_both_sides_allocate_and_the_heal_keeps_the_higher_score() {
    let local = Local::start("split33", 6, 2);
    local.converged(Duration::from_secs(10)).unwrap();
    let (left, right) = ([0, 1, 2], [3, 4, 5]);
    for (i, node) in local.nodes.iter().enumerate() {
        // The right side scores higher: it must win every conflict.
        *node.score.lock().unwrap() = if right.contains(&i) {
            100 + i as i64
        } else {
            i as i64
        };
    }
    local.split(&left, &right);
    let both_sides_full = eventually(bound(&local) * 2, || {
        [&left[..], &right[..]].iter().all(|side| {
            let map = local.nodes[side[0]].cluster().shard_map();
            map.iter().all(|o| {
                o.as_ref()
                    .is_some_and(|o| side.contains(&local.index_of(o)))
            })
        })
    });
    assert!(
        both_sides_full,
        "each side should hold both shards during the split"
    );
    local.heal();
    let map = local.converged(bound(&local) * 2).unwrap();
    for owner in map.iter().flatten() {
        assert!(
            right.contains(&local.index_of(owner)),
            "the higher score keeps the shard: {map:?}"
        );
    }
    // Every loser was told who won; every winner was told once per loser.
    for &i in &left {
        let journal = local.nodes[i].journal.all();
        let lost: Vec<&String> = journal
            .iter()
            .filter_map(|t| match t {
                Told::Deallocated {
                    winner: Some(w),
                    reason,
                } => {
                    assert_eq!(*reason, ReleaseReason::LostConflict);
                    Some(w)
                }
                _ => None,
            })
            .collect();
        for winner in lost {
            let w = local.index_of(&NodeId::parse(winner).unwrap());
            let told = local.nodes[w].journal.count(
                |t| matches!(t, Told::Prolonged { loser, .. } if *loser == local.nodes[i].address),
            );
            assert_eq!(
                told, 1,
                "{} should hear prolonged({}) once",
                local.nodes[w].address, local.nodes[i].address
            );
        }
    }
    let losers = left
        .iter()
        .filter(|&&i| {
            local.nodes[i].journal.count(|t| {
                matches!(
                    t,
                    Told::Deallocated {
                        winner: Some(_),
                        ..
                    }
                )
            }) > 0
        })
        .count();
    assert_eq!(losers, 2, "two shards, two losers on the left");
}

#[test]
fn a_member_added_to_the_list_joins_and_a_removed_one_is_dropped() {
    let mut local = Local::start("members", 3, 2);
    local.converged(Duration::from_secs(10)).unwrap();
    // A fourth node: every `nodes` callback answers the longer list from now
    // on; the running nodes learn it at their next poll.
    let extra = free_addresses(1).remove(0);
    local.members.lock().unwrap().push(extra.clone());
    local.nodes.push(Node {
        address: extra.clone(),
        cluster: None,
        journal: Journal::default(),
        score: Default::default(),
    });
    local.restart(3);
    let extra_id = NodeId::parse(&extra).unwrap();
    let seen_as_standby = eventually(bound(&local) * 2, || {
        local.running().all(|c| {
            c.status().nodes.iter().any(|(n, s)| {
                *n == extra_id && (*s == minishard::NodeState::Standby || *n == *c.node_id())
            })
        })
    });
    assert!(
        seen_as_standby,
        "the new member is not a standby everywhere"
    );
    local.converged(bound(&local)).unwrap();

    // Remove a standby from the list: the others stop counting it.
    let standby = (0..3)
        .find(|&i| local.nodes[i].cluster().my_shard().is_none())
        .unwrap();
    let removed = local.nodes[standby].address.clone();
    local.members.lock().unwrap().retain(|m| *m != removed);
    let removed_id = NodeId::parse(&removed).unwrap();
    let dropped = eventually(bound(&local) * 2, || {
        local
            .running()
            .filter(|c| *c.node_id() != removed_id)
            .all(|c| !c.snapshot().members.contains(&removed_id))
    });
    assert!(
        dropped,
        "the removed member is still in someone's member list"
    );
    let others: Vec<usize> = (0..4).filter(|&i| i != standby).collect();
    let still_fine = others
        .iter()
        .all(|&i| local.nodes[i].cluster().health() == Health::Available);
    assert!(
        still_fine,
        "removing a standby must not disturb the cluster"
    );
}
