//! The manager's rules, one core at a time (see [`super::harness`]).

use std::time::Duration;

use super::harness::{e, n, rec, Harness};
use super::{Ack, Call, Epoch, Health, Holding, Quorum, RefusalReason, ReleaseReason, ScoreOffer};

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn allocated(calls: &[Call]) -> Vec<u32> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Allocated { shard, .. } => Some(*shard),
            _ => None,
        })
        .collect()
}

/// This node, 1, on standby in a chain 1 - 2 - 3 - 4 where 4 owns shard 1:
/// 4 is two hops away, reached through the sightings 2 and 3 publish.
fn chain() -> Harness {
    let mut h = Harness::new(1, &[1, 2, 3, 4], 2);
    h.connect(2).record(rec(2).sees(&[1, 3]).active(0, 1));
    h.relay(2, rec(3).sees(&[2, 4]), true)
        .relay(2, rec(4).sees(&[3]).active(1, 1), true);
    h
}

#[test]
fn an_owner_two_hops_away_keeps_its_shard_for_as_long_as_the_path_stands() {
    let mut h = chain();
    h.wait(ms(5000));
    assert_eq!(allocated(&h.answer_all()), Vec::<u32>::new());
    assert_eq!(h.owner(1), Some(n(4)));
    assert_eq!(h.health(), Health::Available);
}

#[test]
fn once_the_path_breaks_the_far_owners_shard_is_claimed_when_its_grace_ends() {
    let mut h = chain();
    h.wait(ms(1000));
    // 3 no longer sees 4: 4 is suspect from now.
    h.relay(2, rec(3).v(2).sees(&[2]), true);
    let grace = h.timings().node_grace;
    h.wait(grace - ms(1));
    assert_eq!(allocated(&h.answer_all()), Vec::<u32>::new());
    // Paired with it throughout the grace: nothing left to settle.
    h.wait(ms(1));
    assert_eq!(allocated(&h.answer_all()), vec![1]);
}

#[test]
fn a_member_removed_from_the_list_keeps_its_shard_reserved_through_its_grace() {
    let mut h = Harness::new(1, &[1, 2, 3], 1);
    h.connect(2).record(rec(2).sees(&[1, 3]).active(0, 1));
    h.connect(3).record(rec(3).sees(&[1, 2]));
    h.wait(ms(1000));
    h.members(&[1, 3]).lose(2).record(rec(3).v(2).sees(&[1]));
    let grace = h.timings().node_grace;
    h.wait(grace - ms(1));
    assert_eq!(allocated(&h.answer_all()), Vec::<u32>::new());
    h.wait(ms(50));
    // Pairing: this node (1) before 3.
    assert_eq!(allocated(&h.answer_all()), vec![0]);
}

#[test]
fn a_member_refused_by_every_member_it_reaches_degrades_and_gives_its_shard_up() {
    // A cluster of one shard: alone, this node counts as enough members.
    let mut h = Harness::new(1, &[1, 2], 1);
    h.wait(ms(1000));
    assert_eq!(allocated(&h.answer_all()), vec![0]);
    assert_eq!(h.health(), Health::Available);
    // Node 2's list no longer has this one: every time this node dials it
    // again, it is refused.
    for _ in 0..4 {
        h.refused_by(2).wait(ms(260));
    }
    assert_eq!(h.health(), Health::Degraded);
    assert!(matches!(
        h.answer_all().as_slice(),
        [Call::Deallocated { winner: None, .. }]
    ));
}

#[test]
fn no_shard_is_claimed_while_too_few_members_are_visible() {
    let mut h = Harness::new(1, &[1, 2, 3], 2);
    h.connect(2).record(rec(2).sees(&[1]));
    h.wait(ms(300)).lose(2).wait(ms(600));
    // Too few for 600 ms, not yet degraded: it holds what it has, takes
    // nothing (its pairing has held long enough to claim otherwise).
    assert_eq!(h.health(), Health::Transition);
    assert_eq!(allocated(&h.answer_all()), Vec::<u32>::new());
}

/// This node, 1, owns shard 0 at its first epoch; node 2, connected,
/// claims it at its second and offers a better score, acknowledging this
/// node's episode: this node loses and yields to 2.
fn yielded_to_2() -> Harness {
    let mut h = Harness::new(1, &[1, 2, 3], 1);
    h.wait(ms(1000));
    assert_eq!(allocated(&h.answer_all()), vec![0]);
    h.connect(2).record(rec(2).sees(&[1]).active(0, e(2, 2)));
    h.answer_all(); // score 0
    let mut offer = rec(2).v(2).sees(&[1]).active(0, e(2, 2));
    offer.set_offer(ScoreOffer {
        shard: 0,
        epoch: e(2, 2),
        episode: 1,
        score: Some(9),
        acks: vec![Ack {
            node: n(1),
            epoch: e(1, 1),
            episode: 1,
        }],
    });
    h.record(offer);
    assert_eq!(
        h.holding(),
        Holding::Yielding {
            shard: 0,
            epoch: e(1, 1)
        }
    );
    assert_eq!(h.yielded().map(|y| y.winner.node.clone()), Some(n(2)));
    h
}

/// The calls that say this allocation kept its shard against `rival`
/// without a conflict won: its new epoch, if exactly one.
fn outlived(calls: &[Call], rival: u8) -> Option<Epoch> {
    match calls {
        [Call::Prolonged {
            loser,
            epoch,
            won: false,
            ..
        }] if *loser == n(rival) => Some(*epoch),
        _ => None,
    }
}

#[test]
fn a_loser_gives_its_shard_up_only_once_the_winner_acknowledged() {
    let mut h = yielded_to_2();
    h.wait(ms(500));
    assert_eq!(h.answer_all(), Vec::<Call>::new());
    h.record(
        rec(2)
            .v(3)
            .sees(&[1])
            .active(0, e(2, 2))
            .acknowledged(&[(1, e(1, 1))]),
    );
    assert!(matches!(
        h.answer_all().as_slice(),
        [Call::Deallocated { winner: Some(w), reason: ReleaseReason::LostConflict, .. }] if *w == n(2)
    ));
}

#[test]
fn a_winner_that_leaves_before_acknowledging_voids_the_conflict_and_the_loser_keeps_its_shard() {
    let mut h = yielded_to_2();
    h.record(rec(2).v(3).holding(Holding::Left));
    assert!(h.yielded().is_none());
    // The same allocation goes on, with no new `allocated`, but above the
    // epoch the winner had claimed at (a store may have taken its writes).
    let raised = outlived(&h.answer_all(), 2).expect("prolonged(2), not a won conflict");
    assert!(raised > e(2, 2));
    assert_eq!(
        h.holding(),
        Holding::Active {
            shard: 0,
            epoch: raised
        }
    );
    h.wait(ms(3000));
    assert_eq!(h.answer_all(), Vec::<Call>::new());
}

#[test]
fn a_winner_lost_past_its_grace_before_acknowledging_leaves_the_loser_its_shard() {
    let mut h = yielded_to_2();
    let grace = h.timings().node_grace;
    h.lose(2).wait(grace + ms(1));
    let raised = outlived(&h.answer_all(), 2).expect("prolonged(2), not a won conflict");
    assert!(raised > e(2, 2));
    assert_eq!(
        h.holding(),
        Holding::Active {
            shard: 0,
            epoch: raised
        }
    );
}

#[test]
fn a_winner_is_told_prolonged_by_a_loser_whose_last_record_says_it_left_after_yielding() {
    let mut h = Harness::new(1, &[1, 2, 3], 1);
    h.wait(ms(1000));
    h.answer_all();
    // The loser had claimed above this node's epoch.
    let left = rec(2)
        .v(5)
        .holding(Holding::Left)
        .yielded(0, e(2, 2), 1, e(1, 1));
    h.connect(2).record(left);
    let calls = h.answer_all();
    assert!(
        matches!(
            calls.as_slice(),
            [Call::Prolonged { loser, epoch, won: true, .. }] if *loser == n(2) && *epoch > e(2, 2)
        ),
        "{calls:?}"
    );
    // Answered once per loss.
    h.wait(ms(100));
    assert_eq!(h.answer_all(), Vec::<Call>::new());
}

#[test]
fn an_owner_that_learns_of_a_higher_epoch_it_outlived_goes_above_it() {
    // Node 2 held shard 0 at a higher epoch beyond a split, and gave it up
    // (degraded) before the heal: a store may have taken its writes.
    let mut h = Harness::new(1, &[1, 2, 3], 1);
    h.wait(ms(1000));
    assert_eq!(allocated(&h.answer_all()), vec![0]);
    h.connect(2).record(rec(2).sees(&[1]).released(0, e(2, 3)));
    let raised = outlived(&h.answer_all(), 2).expect("prolonged(2), not a won conflict");
    assert!(raised > e(2, 3));
    assert_eq!(h.owner(0), Some(n(1)));
    h.wait(ms(1000));
    assert_eq!(h.answer_all(), Vec::<Call>::new(), "raised once");
}

#[test]
fn a_higher_epoch_whose_holder_may_still_hold_the_shard_is_not_outlived() {
    // Node 2's record, relayed by 3 and not known to be current, still
    // holds shard 0 at a higher epoch: a conflict to resolve or a record to
    // outlast, not a rival gone. Raising now, each owner above the other,
    // would never end.
    let mut h = Harness::new(1, &[1, 2, 3], 1);
    h.wait(ms(1000));
    assert_eq!(allocated(&h.answer_all()), vec![0]);
    h.connect(3).record(rec(3).sees(&[1, 2]));
    h.relay(3, rec(2).sees(&[3]).active(0, e(2, 3)), false);
    h.wait(ms(500));
    assert!(h
        .answer_all()
        .iter()
        .all(|c| !matches!(c, Call::Prolonged { won: false, .. })));
}

#[test]
fn an_owner_asked_to_leave_is_told_it_left() {
    let mut h = Harness::new(1, &[1, 2], 1);
    h.wait(ms(1000));
    assert_eq!(allocated(&h.answer_all()), vec![0]);
    let asked = h.now();
    h.leave();
    assert!(matches!(
        h.answer_all().as_slice(),
        [Call::Deallocated {
            winner: None,
            reason: ReleaseReason::Left,
            ..
        }]
    ));
    assert_eq!(h.now(), asked, "at once: a leave waits for no timer");
}

/// 2 owns the only shard; this node, 1, and 3 wait on standby. Freed alone,
/// the shard would be paired with 1 (before 3): 1 is its successor.
fn successor() -> Harness {
    let mut h = Harness::new(1, &[1, 2, 3], 1);
    h.connect(2).record(rec(2).sees(&[1, 3]).active(0, 1));
    h.connect(3).record(rec(3).sees(&[1, 2]));
    h
}

#[test]
fn the_successor_of_an_owner_that_leaves_takes_its_shard_with_nothing_left_to_settle() {
    let mut h = successor();
    h.wait(ms(1000));
    assert_eq!(allocated(&h.answer_all()), Vec::<u32>::new());
    let releasing = Holding::Releasing { shard: 0, epoch: 1 };
    h.record(rec(2).v(2).sees(&[1, 3]).holding(releasing));
    assert_eq!(allocated(&h.answer_all()), Vec::<u32>::new());
    // Its successor for a second, as every standby computes it: claimed
    // on the spot, without a `settle` after the leave.
    h.record(rec(2).v(3).holding(Holding::Left)).lose(2);
    assert_eq!(allocated(&h.answer_all()), vec![0]);
}

#[test]
fn a_successor_of_less_than_settle_still_waits_until_its_pairing_has_held_for_settle() {
    let mut h = successor();
    // 2 leaves at once: 1 has been its successor for no time yet.
    h.record(rec(2).v(2).holding(Holding::Left)).lose(2);
    let left_at = h.now();
    let mut claimed = Vec::new();
    while claimed.is_empty() && h.now() - left_at < ms(1000) {
        h.wait(ms(1));
        claimed = allocated(&h.answer_all());
    }
    assert_eq!(claimed, vec![0]);
    assert_eq!(h.now() - left_at, h.timings().settle);
}

#[test]
fn a_leaving_owner_keeps_its_shard_reserved_until_its_deallocated_has_returned() {
    // What its successor relies on: the shard is free once the record says
    // Left, never while the application still holds it.
    let mut h = Harness::new(1, &[1, 2], 1);
    h.connect(2).record(rec(2).sees(&[1]));
    h.wait(ms(1000));
    assert_eq!(allocated(&h.answer_all()), vec![0]);
    h.leave();
    let calls = h.calls();
    assert!(
        matches!(
            calls[..],
            [(
                _,
                Call::Deallocated {
                    shard: 0,
                    winner: None,
                    ..
                }
            )]
        ),
        "{calls:?}"
    );
    assert_eq!(
        h.holding(),
        Holding::Releasing {
            shard: 0,
            epoch: e(1, 1)
        }
    );
    h.answer(calls[0].0, super::Outcome::Done);
    assert_eq!(h.holding(), Holding::Left);
}

#[test]
fn a_standby_that_is_not_the_successor_never_claims_the_shard_of_an_owner_that_leaves() {
    // The same cluster seen by 3, which the pairing puts after 1.
    let mut h = Harness::new(3, &[1, 2, 3], 1);
    h.connect(1).record(rec(1).sees(&[2, 3]));
    h.connect(2).record(rec(2).sees(&[1, 3]).active(0, 1));
    h.wait(ms(1000));
    h.record(rec(2).v(2).holding(Holding::Left)).lose(2);
    h.wait(ms(5000));
    assert_eq!(allocated(&h.answer_all()), Vec::<u32>::new());
}

#[test]
fn a_member_added_back_is_known_by_the_relay_refused_before_this_node_listed_it() {
    // A chain 1 - 2 - 3 - 4; 4 owns the only shard. 3 was added back to
    // the list: 2 lists it already and relays its record once, before this
    // node's poll lists it. The path to 4 runs through 3.
    let mut h = Harness::new(1, &[1, 2, 4], 1);
    h.connect(2).record(rec(2).sees(&[1, 3]));
    h.relay(2, rec(3).sees(&[2, 4]), true);
    h.relay(2, rec(4).sees(&[3]).active(0, e(4, 1)), true);
    h.members(&[1, 2, 3, 4]);
    h.wait(ms(5000));
    assert_eq!(h.owner(0), Some(n(4)), "4 is reached through 3, not lost");
    assert_eq!(allocated(&h.answer_all()), Vec::<u32>::new());
}

/// Node `peer` refuses this node for `reason` every 200 ms for `for_ms`, as
/// a dialler retrying would see.
fn keep_refused(h: &mut Harness, peer: u8, reason: RefusalReason, for_ms: u64) {
    for _ in 0..for_ms / 200 {
        h.refused_for(peer, reason).wait(ms(200));
    }
}

#[test]
fn a_node_every_member_refuses_for_a_wrong_cookie_takes_no_shard_even_alone_enough() {
    // Two members, one shard: alone, this node would count as enough.
    let mut h = Harness::new(1, &[1, 2], 1);
    keep_refused(&mut h, 2, RefusalReason::WrongCookie, 5000);
    assert_eq!(allocated(&h.answer_all()), Vec::<u32>::new());
    assert_eq!(h.health(), Health::Degraded);
    let snapshot = h.snapshot();
    assert!(snapshot.misconfigured);
    assert_eq!(snapshot.refusals.len(), 1);
    assert_eq!(snapshot.refusals[0].peer, n(2));
    assert_eq!(snapshot.refusals[0].reason, RefusalReason::WrongCookie);
    assert_eq!(snapshot.refusals[0].count, 25);
    assert!(snapshot.refusals[0].refusing);
    let why = snapshot.misconfiguration().expect("explained");
    assert!(
        why.contains("10.0.0.2:1") && why.contains("wrong_cookie"),
        "{why}"
    );
}

#[test]
fn refusals_that_stop_stop_counting_and_the_node_takes_its_shard() {
    let mut h = Harness::new(1, &[1, 2], 1);
    keep_refused(&mut h, 2, RefusalReason::WrongCluster, 1000);
    assert!(h.snapshot().misconfigured);
    // Node 2 is gone (fixed, restarting): nobody refuses any more.
    h.wait(ms(5000));
    assert!(!h.snapshot().misconfigured);
    assert_eq!(allocated(&h.answer_all()), vec![0]);
    let refusals = &h.snapshot().refusals;
    assert_eq!((refusals[0].count, refusals[0].refusing), (5, false));
}

#[test]
fn a_node_serving_before_a_misconfigured_member_came_keeps_its_shard() {
    let mut h = Harness::new(1, &[1, 2], 1);
    h.wait(ms(1000));
    assert_eq!(allocated(&h.answer_all()), vec![0]);
    assert_eq!(h.health(), Health::Available);
    // Node 2 comes up with another cookie: the mismatch is symmetric, and
    // the node that was serving is not the one out of the cluster.
    keep_refused(&mut h, 2, RefusalReason::WrongCookie, 5000);
    assert_eq!(h.health(), Health::Available);
    assert!(h.answer_all().is_empty());
    let snapshot = h.snapshot();
    assert!(!snapshot.misconfigured);
    assert!(snapshot.refusals[0].refusing, "still shown in status");
}

#[test]
fn a_node_refused_by_some_members_and_accepted_by_another_is_in_the_cluster() {
    let mut h = Harness::new(1, &[1, 2, 3], 1);
    h.connect(3).record(rec(3).sees(&[1]));
    keep_refused(&mut h, 2, RefusalReason::WrongVersion, 3000);
    assert!(!h.snapshot().misconfigured);
    assert_eq!(allocated(&h.answer_all()), vec![0]);
    assert_eq!(h.snapshot().refusals[0].count, 15);
}

#[test]
fn other_refusals_are_not_a_misconfiguration() {
    let mut h = Harness::new(1, &[1, 2], 1);
    keep_refused(&mut h, 2, RefusalReason::Other, 2000);
    assert!(!h.snapshot().misconfigured);
    assert!(h.snapshot().refusals.is_empty());
    assert_eq!(allocated(&h.answer_all()), vec![0]);
}

#[test]
fn a_node_refused_as_a_non_member_is_misconfigured_only_after_a_member_poll() {
    // Added to this node's list before the others read theirs again: they
    // refuse it until their next poll, which is no misconfiguration yet.
    let mut h = Harness::new(1, &[1, 2], 1);
    let patience = h.timings().member_poll + h.timings().heartbeat_timeout * 2;
    keep_refused(&mut h, 2, RefusalReason::NotAMember, 1000);
    assert!(!h.snapshot().misconfigured, "not yet: a poll may fix it");
    assert_eq!(allocated(&h.answer_all()), Vec::<u32>::new());
    let ms_left = patience.as_millis() as u64 - 1000;
    keep_refused(&mut h, 2, RefusalReason::NotAMember, ms_left + 200);
    assert!(h.snapshot().misconfigured);
    assert!(h
        .snapshot()
        .misconfiguration()
        .unwrap()
        .contains("not_a_member"));
}

/// This node, 1, of six members keeping two shards, sees 2 (the owner of
/// shard 1), 3 and 4, and has allocated shard 0.
fn four_of_six(quorum: Quorum) -> Harness {
    let mut h = Harness::with_quorum(1, &[1, 2, 3, 4, 5, 6], 2, quorum);
    h.connect(2)
        .record(rec(2).sees(&[1, 3, 4]).active(1, e(2, 1)));
    for i in [3, 4] {
        h.connect(i).record(rec(i).sees(&[1, 2, 3, 4]));
    }
    h.wait(ms(2000));
    assert_eq!(allocated(&h.answer_all()), vec![0]);
    assert_eq!(h.health(), Health::Available);
    h
}

#[test]
fn strict_mode_a_node_that_sees_only_half_the_members_degrades_and_gives_its_shard_up() {
    let mut h = four_of_six(Quorum::Majority);
    // 3 of 6, this node included: enough for two shards, not a majority.
    h.lose(4).wait(ms(999));
    assert_eq!(h.health(), Health::Transition);
    let released = |calls: &[Call]| {
        calls
            .iter()
            .filter(|c| matches!(c, Call::Deallocated { .. }))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(released(&h.answer_all()), [], "it holds on for a while");
    h.wait(ms(1));
    assert_eq!(h.health(), Health::Degraded);
    assert!(matches!(
        released(&h.answer_all()).as_slice(),
        [Call::Deallocated {
            shard: 0,
            winner: None,
            reason: ReleaseReason::Degraded,
            ..
        }]
    ));
}

#[test]
fn by_default_half_the_members_are_enough_when_they_are_shard_count_or_more() {
    let mut h = four_of_six(Quorum::Any);
    h.lose(4).wait(ms(5000));
    assert_eq!(h.health(), Health::Available);
    assert!(h
        .answer_all()
        .iter()
        .all(|c| !matches!(c, Call::Deallocated { .. })));
}

#[test]
fn strict_mode_announces_a_claim_and_waits_before_allocated_runs() {
    let mut h = Harness::with_quorum(1, &[1, 2, 3], 1, Quorum::Majority);
    h.connect(2).record(rec(2).sees(&[1]));
    h.wait(ms(600));
    assert!(matches!(h.holding(), Holding::Proposing { shard: 0, .. }));
    let window = h.timings().proposal_window();
    h.wait(window - ms(100));
    assert_eq!(allocated(&h.answer_all()), Vec::<u32>::new());
    h.wait(ms(100));
    assert_eq!(allocated(&h.answer_all()), vec![0]);
}

#[test]
fn strict_mode_a_proposal_gives_way_to_a_rival_that_ranks_above_it_and_no_other() {
    for (rival_epoch, this_node_allocates) in [(e(2, 2), false), (e(2, 0), true)] {
        let mut h = Harness::with_quorum(1, &[1, 2, 3], 1, Quorum::Majority);
        h.connect(2).record(rec(2).sees(&[1]));
        h.wait(ms(600));
        assert_eq!(
            h.holding(),
            Holding::Proposing {
                shard: 0,
                epoch: e(1, 1)
            }
        );
        // Node 2's view differed for a moment: it proposed the same shard.
        h.record(rec(2).v(2).sees(&[1]).holding(Holding::Proposing {
            shard: 0,
            epoch: rival_epoch,
        }));
        h.wait(ms(3000));
        let calls = allocated(&h.answer_all());
        if this_node_allocates {
            assert_eq!(calls, vec![0], "a rival ranking below gives way");
        } else {
            assert_eq!(calls, Vec::<u32>::new(), "withdrawn before any callback");
            assert_eq!(h.holding(), Holding::Standby);
        }
    }
}

#[test]
fn strict_mode_a_proposal_gives_way_to_a_claim_whatever_its_epoch() {
    let mut h = Harness::with_quorum(1, &[1, 2, 3], 1, Quorum::Majority);
    h.connect(2).record(rec(2).sees(&[1]));
    h.wait(ms(600));
    h.record(rec(2).v(2).sees(&[1]).holding(Holding::Claiming {
        shard: 0,
        epoch: e(2, 0),
    }));
    h.wait(ms(3000));
    assert_eq!(allocated(&h.answer_all()), Vec::<u32>::new());
    assert_eq!(h.holding(), Holding::Standby);
}
