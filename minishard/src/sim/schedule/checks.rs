//! docs/design.md section 7 as checks on the simulated world: what must hold of
//! every group of connected nodes once the network has stood still for the
//! bound, what must never happen at any instant, and how every conflict must
//! have ended. Each returns the problems it found, one line each.

use std::collections::BTreeMap;
use std::time::Duration;

use super::super::ledger::{Allocation, Ending};
use super::super::Sim;
use crate::core::{Claim, Epoch, Health, Instant, NodeId, Quorum, Shard, Timings, Yield};

/// 7.1 and 7.9: once faults stop, every group that can converges within
/// this; in strict mode a claim also waits out its proposal window
/// (docs/design.md 6.7).
pub(super) fn convergence_bound(t: &Timings, quorum: Quorum) -> Duration {
    let base = t.heartbeat_timeout + t.node_grace + Duration::from_millis(100);
    match quorum {
        Quorum::Any => base,
        Quorum::Majority => base + t.proposal_window(),
    }
}

/// 7.9: in a group whose members reach each other only through others,
/// news of a change crosses one link per hop, each in a message's time (the
/// worst latency, and the wait of a busy engine); and a link that came up
/// with the change passes on what the peer might see for itself (a
/// standby's sightings, say) only once it has been up for a heartbeat
/// timeout. The bound grows by that much.
pub(super) fn path_allowance(sim: &Sim) -> Duration {
    let diameter = sim.diameter();
    if diameter <= 1 {
        return Duration::ZERO;
    }
    let b = &sim.behaviour;
    let per_hop = b.latency.1 + b.batch_window.map_or(Duration::ZERO, |w| w.1);
    sim.config().timings.heartbeat_timeout + per_hop * (diameter - 1) as u32
}

/// 7.2: a member that sees too few members is degraded within this.
pub(super) fn degradation_bound(t: &Timings) -> Duration {
    t.heartbeat_timeout + t.transition_timeout + Duration::from_millis(100)
}

/// Whether node `i` takes part as a member: it is in the operator's list,
/// or it was removed but its own list still names it and no member it can
/// reach refuses it — cut off by the network, it cannot know it was
/// removed, and acts as any member cut off would (docs/design.md 6.6).
pub(super) fn acts_as_member(sim: &Sim, i: usize) -> bool {
    if !sim.is_running(i) || sim.is_observer(i) {
        return false;
    }
    if sim.is_member(i) {
        return true;
    }
    let refused = (0..sim.len()).any(|j| {
        j != i && sim.is_running(j) && sim.is_member(j) && sim.link_clear(i, j) && !sim.admits(j, i)
    });
    sim.list_of(i).contains(sim.id(i)) && !refused
}

/// The members node `i` sees directly, itself included if it takes part as
/// one: what its health counts (docs/design.md 5, 6.1).
pub(super) fn visible_members(sim: &Sim, i: usize) -> usize {
    let peers = (0..sim.len())
        .filter(|&j| sim.is_member(j) && sim.linked(i, j))
        .count();
    peers + usize::from(acts_as_member(sim, i))
}

/// The members a node with a member list of `listed` must see to hold
/// shards: the shard count, or a strict majority too (docs/design.md 6.7).
pub(super) fn members_needed(sim: &Sim, listed: usize) -> usize {
    let config = sim.config();
    config
        .quorum
        .members_needed(config.shard_count as usize, listed)
}

/// What node `i` must see, by the member list its core has in force.
fn needed_by(sim: &Sim, i: usize) -> usize {
    members_needed(sim, sim.admitted_by(i).len())
}

/// Whether node `i` takes part as a member and sees members enough to
/// hold shards (so it is never degraded).
pub(super) fn capable(sim: &Sim, i: usize) -> bool {
    acts_as_member(sim, i) && visible_members(sim, i) >= needed_by(sim, i)
}

/// Whether node `i` sees too few members to hold shards, so it must be
/// degraded and hold nothing (docs/design.md 5, 6.7, 7.2).
pub(super) fn must_degrade(sim: &Sim, i: usize) -> bool {
    sim.is_running(i) && !sim.is_observer(i) && visible_members(sim, i) < needed_by(sim, i)
}

fn index_of(sim: &Sim, node: &NodeId) -> Option<usize> {
    (0..sim.len()).find(|&i| sim.id(i) == node)
}

/// When an allocation ended (far in the future while it is open).
pub(super) fn end_of(a: &Allocation) -> Instant {
    match &a.end {
        Some(Ending::Deallocated { at, .. } | Ending::Crashed(at)) => *at,
        None => Instant::from_micros(u64::MAX),
    }
}

/// What must hold of one group of connected nodes once the network has
/// stood still for the bound (7.1, 7.2, 7.9): members that see too few
/// members are degraded and hold nothing; no shard has two holders in the
/// group; and if it has members enough that see enough members, every
/// shard has exactly one holder among them, they are all `available`, and
/// every node of the group reports that map.
pub(super) fn group_problem(sim: &Sim, group: &[usize]) -> Option<String> {
    let shard_count = sim.config().shard_count as usize;
    for &i in group.iter().filter(|&&i| must_degrade(sim, i)) {
        let id = sim.id(i);
        let health = sim.health(i);
        if health != Some(Health::Degraded) {
            return Some(format!(
                "{id} sees {} members (fewer than the {} it needs) but is {health:?}, not degraded",
                visible_members(sim, i),
                needed_by(sim, i)
            ));
        }
        if let Some(a) = sim.ledger().open_of(id, sim.incarnation(i)) {
            return Some(format!("{id} is degraded but holds shard {}", a.shard));
        }
    }
    let mut holders: Vec<Vec<usize>> = vec![Vec::new(); shard_count];
    for a in sim.ledger().open_allocations() {
        if let Some(i) = index_of(sim, &a.node).filter(|i| group.contains(i)) {
            holders[a.shard as usize].push(i);
        }
    }
    for (shard, list) in holders.iter().enumerate() {
        if list.len() > 1 {
            let ids: Vec<&NodeId> = list.iter().map(|&i| sim.id(i)).collect();
            return Some(format!("shard {shard} is held by {ids:?} in one group"));
        }
    }
    let able: Vec<usize> = group.iter().copied().filter(|&i| capable(sim, i)).collect();
    if able.len() < shard_count {
        // Too few to hold every shard: each of them holds one (the shards
        // held elsewhere are free to them once their holders' grace ends).
        let idle = able.iter().find(|&&i| {
            sim.ledger()
                .open_of(sim.id(i), sim.incarnation(i))
                .is_none()
        });
        return idle.map(|&i| {
            format!(
                "{} sees members enough but holds nothing, in a group too small for every shard",
                sim.id(i)
            )
        });
    }
    for (shard, list) in holders.iter().enumerate() {
        match list.first() {
            None => return Some(format!("shard {shard} has no holder in the group")),
            Some(&i) if !able.contains(&i) => {
                return Some(format!(
                    "shard {shard} is held by {}, which sees too few members",
                    sim.id(i)
                ))
            }
            Some(_) => {}
        }
    }
    for &i in group {
        let Some(snapshot) = sim.snapshot(i) else {
            return Some(format!("{} has no snapshot", sim.id(i)));
        };
        if able.contains(&i) && snapshot.health != Health::Available {
            return Some(format!("{} is {}", sim.id(i), snapshot.health));
        }
        for (shard, list) in holders.iter().enumerate() {
            let reported = snapshot.owners[shard].as_ref().map(|o| &o.node);
            let holder = sim.id(list[0]);
            if reported != Some(holder) {
                return Some(format!(
                    "{} reports {reported:?} for shard {shard}, held by {holder}",
                    sim.id(i)
                ));
            }
        }
    }
    fencing_problem(sim, group, &holders)
}

/// docs/design.md 7.5, as a store fenced by epochs sees it (it takes a
/// write only at an epoch at least the highest it has seen): once a group
/// has settled, each shard's owner holds it at an epoch no node of the
/// group knows to be exceeded — every allocation of it the group heard of
/// (a loser's, the other side of a healed split's, a paused owner's) is
/// below, so its writes are taken and theirs refused. An allocation no
/// running node ever heard of (alone on its side of a split, and crashed
/// since) is out of anyone's reach.
fn fencing_problem(sim: &Sim, group: &[usize], holders: &[Vec<usize>]) -> Option<String> {
    for (shard, list) in holders.iter().enumerate() {
        let holder = sim.id(list[0]);
        let held = sim.ledger().open_of(holder, sim.incarnation(list[0]))?;
        let reported = sim.snapshot(list[0]).and_then(|s| s.owners[shard].as_ref());
        if reported.map(|o| o.epoch) != Some(held.epoch) {
            return Some(format!(
                "{holder} reports shard {shard} at epoch {:?}; its application holds it at {}",
                reported.map(|o| o.epoch),
                held.epoch
            ));
        }
        // A store sees the writes of allocations only: a strict-mode
        // proposal withdrawn before its `allocated` announced an epoch
        // nobody wrote with.
        let allocated = |epoch: Epoch| {
            sim.ledger()
                .allocations
                .iter()
                .any(|a| a.shard == shard as Shard && a.epochs.contains(&epoch))
        };
        for &i in group {
            if let Some(seen) = sim
                .highest_seen(i, shard as Shard)
                .filter(|seen| seen.epoch > held.epoch && allocated(seen.epoch))
            {
                return Some(format!(
                    "fencing: {holder} holds shard {shard} at epoch {}, below epoch {} of {}'s allocation, which {} knows of: a fenced store would refuse the owner",
                    held.epoch,
                    seen.epoch,
                    seen.node,
                    sim.id(i)
                ));
            }
        }
    }
    None
}

/// The first problem of any group, if any.
pub(super) fn groups_problem(sim: &Sim) -> Option<String> {
    sim.components()
        .iter()
        .find_map(|group| group_problem(sim, group))
}

/// Shard changes at or after `since`: allocations that started or ended.
pub(super) fn moves_since(sim: &Sim, since: Instant) -> usize {
    let allocations = &sim.ledger().allocations;
    allocations.iter().filter(|a| a.start >= since).count()
        + allocations
            .iter()
            .filter(|a| a.end.is_some() && end_of(a) >= since)
            .count()
}

/// The same, on the operator's members only: a node removed from the list
/// that cannot hear the members refuse it acts on its own (docs/design.md 6.6).
pub(super) fn members_moves_since(sim: &Sim, since: Instant) -> usize {
    let listed = |a: &&Allocation| sim.member_list().contains(&a.node);
    let allocations = &sim.ledger().allocations;
    allocations
        .iter()
        .filter(listed)
        .filter(|a| a.start >= since)
        .count()
        + allocations
            .iter()
            .filter(listed)
            .filter(|a| a.end.is_some() && end_of(a) >= since)
            .count()
}

/// docs/design.md 7.7: while the network stands still, each shard moves at most
/// once — in each group at most one new allocation of it, and no
/// allocation that both starts and ends meanwhile.
pub(super) fn churn_problems(sim: &Sim, since: Instant, groups: &[Vec<usize>]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut starts: BTreeMap<(usize, Shard), usize> = BTreeMap::new();
    for a in sim.ledger().allocations.iter().filter(|a| a.start >= since) {
        if a.end.is_some() {
            problems.push(format!(
                "{} was allocated shard {} at {} and lost it again at {} while the network stood still",
                a.node,
                a.shard,
                a.start,
                end_of(a)
            ));
        }
        let group = index_of(sim, &a.node)
            .and_then(|i| groups.iter().position(|g| g.contains(&i)))
            .unwrap_or(usize::MAX);
        *starts.entry((group, a.shard)).or_default() += 1;
    }
    for ((_, shard), count) in starts {
        if count > 1 {
            problems.push(format!(
                "shard {shard} was allocated {count} times in one group while the network stood still"
            ));
        }
    }
    problems
}

/// docs/design.md 6.5, 6.6: no two allocations of a shard open at one instant
/// after `since`.
pub(super) fn overlaps(sim: &Sim, since: Instant) -> Vec<String> {
    let allocations = &sim.ledger().allocations;
    let mut found = Vec::new();
    for (i, a) in allocations.iter().enumerate() {
        for b in &allocations[i + 1..] {
            let recent = end_of(a) > since && end_of(b) > since;
            if recent && a.shard == b.shard && a.start < end_of(b) && b.start < end_of(a) {
                found.push(format!(
                    "{} and {} both held shard {} (from {} and {})",
                    a.node, b.node, a.shard, a.start, b.start
                ));
            }
        }
    }
    found
}

/// The conflict node `node` published it lost, standing at `at`.
fn standing_yield<'a>(
    yields: &'a [(Instant, NodeId, Option<Yield>)],
    node: &NodeId,
    at: Instant,
) -> Option<&'a Yield> {
    yields
        .iter()
        .rev()
        .find(|(t, n, _)| *t <= at && n == node)
        .and_then(|(_, _, y)| y.as_ref())
}

/// docs/design.md 7.3 and 6.3: each loser lost to a better-ranked claim, by
/// scores the applications returned; a loser is told `deallocated(winner)`
/// exactly when its winner was told `prolonged(loser)`, except where the
/// winner crashed or was cut off before it could be; a winner that left or
/// was removed from the member list before acknowledging voided the
/// conflict, so its loser was never told it lost; and an allocation that
/// stood yielded never ended with `deallocated` naming no winner.
/// `removed` holds when each node was taken out of the member list.
/// Returns how many conflicts were lost, and the problems.
pub(super) fn conflict_problems(
    sim: &Sim,
    removed: &BTreeMap<NodeId, Vec<Instant>>,
) -> (u64, Vec<String>) {
    let ledger = sim.ledger();
    let yields = sim.yields();
    let mut problems = Vec::new();
    // (winner allocation, loser node) -> deallocated(winner) seen
    let mut expected: BTreeMap<(usize, NodeId), usize> = BTreeMap::new();
    // Of those, the losses told after the winner's allocation had ended
    // because it crashed or was cut off: it could not be told.
    let mut untellable: BTreeMap<(usize, NodeId), usize> = BTreeMap::new();
    let mut conflicts = 0;
    let removed_before = |node: &NodeId, at: Instant| {
        removed
            .get(node)
            .is_some_and(|times| times.iter().any(|t| *t <= at))
    };
    for loser in &ledger.allocations {
        let at = end_of(loser);
        let standing = standing_yield(yields, &loser.node, at)
            .filter(|y| y.shard == loser.shard && y.epoch == loser.epoch);
        let winner = match &loser.end {
            Some(Ending::Deallocated {
                winner: Some(winner),
                ..
            }) => winner,
            Some(Ending::Deallocated { winner: None, .. }) => {
                if let Some(y) = standing {
                    problems.push(format!(
                        "{} yielded shard {} to {} but was told deallocated with no winner",
                        loser.node, loser.shard, y.winner.node
                    ));
                }
                continue;
            }
            _ => continue,
        };
        conflicts += 1;
        let Some(lost) = standing else {
            problems.push(format!(
                "{} lost shard {} to {winner} but had no standing yield then",
                loser.node, loser.shard
            ));
            continue;
        };
        if lost.winner.node != *winner {
            problems.push(format!(
                "{} yielded to {:?} but was told it lost to {winner}",
                loser.node, lost.winner
            ));
            continue;
        }
        // The winning claim's allocation (its `allocated` may have started
        // after the loser gave up, or failed).
        let won = ledger.allocations.iter().enumerate().find(|(_, a)| {
            a.node == *winner
                && a.incarnation == lost.winner.incarnation
                && a.shard == loser.shard
                && a.epochs.contains(&lost.winner.epoch)
        });
        let Some((wi, w)) = won else {
            continue;
        };
        *expected.entry((wi, loser.node.clone())).or_default() += 1;
        let cut_off =
            sim.cut_off_losses()
                .contains(&(loser.node.clone(), loser.shard, loser.epoch));
        if cut_off {
            // Told once the winner's grace ended, with no path to it: the
            // winner may never learn of the loss.
            *untellable.entry((wi, loser.node.clone())).or_default() += 1;
        } else if end_of(w) <= at {
            let left = ledger
                .left_at(&w.node, w.incarnation)
                .is_some_and(|t| t <= end_of(w));
            if left || removed_before(&w.node, at) {
                if !w.prolonged.contains(&loser.node) {
                    problems.push(format!(
                        "{} was told it lost shard {} to {winner}, which {} before acknowledging: the conflict was void",
                        loser.node,
                        loser.shard,
                        if left { "left" } else { "was removed from the member list" }
                    ));
                }
            } else {
                *untellable.entry((wi, loser.node.clone())).or_default() += 1;
            }
        }
        let own = Claim {
            node: loser.node.clone(),
            incarnation: loser.incarnation,
            epoch: loser.epoch,
        };
        if !outranks((lost.winner_score, &lost.winner), (lost.own_score, &own)) {
            problems.push(format!(
                "{} (score {:?}, epoch {}) yielded shard {} to {winner} (score {:?}, epoch {}), which ranks lower",
                loser.node, lost.own_score, loser.epoch, loser.shard, lost.winner_score, lost.winner.epoch
            ));
        }
        for (a, score) in [(loser, lost.own_score), (w, lost.winner_score)] {
            if let Some(score) = score {
                if !a.scores.contains(&score) {
                    problems.push(format!(
                        "{} was ranked by score {score}, which its application never returned",
                        a.node
                    ));
                }
            }
        }
    }
    for (wi, w) in ledger.allocations.iter().enumerate() {
        // A winner that crashed was told whatever it was told; its
        // application is gone, and its losers kept their shards.
        if matches!(w.end, Some(Ending::Crashed(_))) {
            continue;
        }
        let mut losers: BTreeMap<&NodeId, (usize, usize)> = BTreeMap::new();
        for loser in &w.prolonged {
            losers.entry(loser).or_default().0 += 1;
        }
        for ((index, loser), lost) in &expected {
            if *index == wi {
                losers.entry(loser).or_default().1 = *lost;
            }
        }
        for (loser, (told, lost)) in losers {
            // A loser calls `deallocated(winner)` only once the winner has
            // acknowledged it with `prolonged`, so the two match, except for
            // a loser that crashed in between...
            let crashed = ledger
                .allocations
                .iter()
                .filter(|a| a.node == *loser && a.shard == w.shard)
                .filter(|a| matches!(a.end, Some(Ending::Crashed(_))))
                .count();
            // ...and a loser that withdrew its yield before it saw the
            // acknowledgement (it lost its winner and kept its shard, or it
            // degraded and gave the shard up to no one), though the winner
            // may have acknowledged unseen...
            let withdrawn = sim
                .unseen_withdrawals()
                .iter()
                .filter(|(n, s, _)| n == loser && *s == w.shard)
                .count();
            // ...and a winner cut off before it learned of the loss: it can
            // no longer be told.
            let untold = untellable.get(&(wi, loser.clone())).copied().unwrap_or(0);
            if told > lost + crashed + withdrawn || told + untold < lost {
                problems.push(format!(
                    "{} (shard {}) got prolonged({loser}) {told} times for {lost} lost conflicts",
                    w.node, w.shard
                ));
            }
        }
    }
    (conflicts, problems)
}

/// docs/design.md 6.3's rule, written again independently of the core's: the
/// highest score wins, a failed score loses, a tie goes to the older epoch,
/// then to the smaller node id.
fn outranks(a: (Option<i64>, &Claim), b: (Option<i64>, &Claim)) -> bool {
    use std::cmp::Ordering::*;
    let by_score = match (a.0, b.0) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Greater,
        (None, Some(_)) => Less,
        (None, None) => Equal,
    };
    match by_score {
        Greater => true,
        Less => false,
        Equal => match a.1.epoch.cmp(&b.1.epoch) {
            Less => true,
            Greater => false,
            Equal => a.1.node < b.1.node,
        },
    }
}
