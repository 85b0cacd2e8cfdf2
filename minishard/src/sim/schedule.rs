//! Random fault schedules, each checked against DESIGN.md section 7.
//!
//! A schedule starts a cluster of random shape, applies a random sequence of
//! faults (splits, one-way cuts, flapping links, crashes, restarts, graceful
//! leaves, latency spikes, slow and failing callbacks), then heals everything
//! and checks convergence within its bound, the absence of churn once
//! converged, degradation of every side too small to hold the shards, the
//! outcome of every conflict, callback discipline and epochs.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::ledger::Ending;
use super::{Behaviour, Sim, SimConfig};
use crate::core::{Health, Instant, NodeId, Timings};

/// What one schedule did and found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The schedule's seed: `run(seed)` replays it exactly.
    pub seed: u64,
    /// Broken invariants, one line each.
    pub violations: Vec<String>,
    /// Conflicts resolved (one per loser).
    pub conflicts: u64,
    /// Shards allocated again after their owner crashed or was cut off.
    pub failovers: u64,
    /// Times a node became degraded.
    pub degradations: u64,
    /// Graceful leaves in the fault phase.
    pub leaves: u64,
    /// Simulated time.
    pub simulated: Duration,
    /// The cluster's shape and the faults applied, for a failure report.
    pub script: Vec<String>,
}

/// Runs the schedule of `seed`.
pub fn run(seed: u64) -> Report {
    run_with(seed, false)
}

/// Runs the schedule of `seed`, printing every step to stderr if `trace`.
pub fn run_with(seed: u64, trace: bool) -> Report {
    let mut rng = StdRng::seed_from_u64(seed);
    let members = rng.random_range(3..=8);
    let shard_count = rng.random_range(1..members) as u32;
    let observers = usize::from(rng.random_bool(0.3));
    let mut sim = Sim::new(SimConfig {
        members,
        observers,
        shard_count,
        timings: Timings::default(),
        seed: rng.random(),
    });
    sim.set_trace(trace);
    let mut run = Run {
        report: Report {
            seed,
            ..Report::default()
        },
        rng,
        sim,
    };
    run.note(format!(
        "{members} members, {observers} observers, {shard_count} shards"
    ));
    run.sim.start_all();
    let warm = run.rng.random_range(0..4000);
    run.sim.run_for(Duration::from_millis(warm));
    let phases = run.rng.random_range(4..=10);
    for _ in 0..phases {
        run.fault_phase();
    }
    run.quiet_phase();
    run.shutdown();
    run.check_conflicts();
    let Run {
        mut report, sim, ..
    } = run;
    report
        .violations
        .extend(sim.ledger().violations.iter().cloned());
    report.failovers = sim.ledger().failovers;
    report.degradations = sim
        .ledger()
        .health_changes
        .iter()
        .filter(|(_, _, _, new)| *new == Health::Degraded)
        .count() as u64;
    report.simulated = sim.now().saturating_since(Instant::ZERO);
    report
}

struct Run {
    report: Report,
    rng: StdRng,
    sim: Sim,
}

impl Run {
    fn note(&mut self, line: String) {
        let t = self.sim.now();
        self.report.script.push(format!("t={t} {line}"));
    }

    fn violation(&mut self, line: String) {
        let t = self.sim.now();
        self.report.violations.push(format!("t={t} {line}"));
    }

    fn timings(&self) -> Timings {
        self.sim.config().timings
    }

    fn pick_member(&mut self, running: bool) -> Option<usize> {
        let list: Vec<usize> = (0..self.sim.config().members)
            .filter(|i| self.sim.is_running(*i) == running)
            .collect();
        list.get(self.rng.random_range(0..list.len().max(1)))
            .copied()
    }

    fn hold(&mut self) -> Duration {
        Duration::from_millis(self.rng.random_range(100..6000))
    }

    fn fault_phase(&mut self) {
        let hold = self.hold();
        let n = self.sim.len();
        match self.rng.random_range(0..100) {
            0..=19 => {
                let mut all: Vec<usize> = (0..n).collect();
                all.shuffle(&mut self.rng);
                let cut = self.rng.random_range(1..n);
                let groups = vec![all[..cut].to_vec(), all[cut..].to_vec()];
                self.note(format!("split {groups:?}"));
                let settled = self.settled();
                let lopsided =
                    settled && groups.iter().filter(|g| self.holds_every_shard(g)).count() <= 1;
                let start = self.sim.now();
                self.sim.split(&groups);
                let bound = self.convergence_bound();
                if settled && hold >= bound {
                    self.hold_and_check_degradation(bound);
                    self.check_sides_converged(&groups);
                    self.sim.run_for(hold - bound);
                } else {
                    self.hold_and_check_degradation(hold);
                }
                if lopsided {
                    self.check_no_duplicates(start);
                }
            }
            20..=29 => {
                let (a, b) = self.pair();
                self.note(format!("cut one way {a} -> {b}"));
                self.sim.cut(a, b);
                self.hold_and_check_degradation(hold);
            }
            30..=37 => {
                let (a, b) = self.pair();
                self.note(format!("cut both ways {a} <-> {b}"));
                // Each end still sees enough members not to degrade, and a
                // third node sees both.
                let enough =
                    self.sim.running_members().len() > self.sim.config().shard_count as usize;
                let witness = (0..n).any(|i| i != a && i != b && self.sim.is_running(i));
                let checked = enough && witness && self.settled();
                let before = self.moves();
                self.sim.cut_both(a, b);
                self.hold_and_check_degradation(hold);
                // DESIGN.md 6.1: both still see everyone else, who see both:
                // each is unreachable to the other, not suspect, and nothing moves.
                if checked && self.moves() != before {
                    self.violation(format!(
                        "a shard moved while only the link {a} <-> {b} was cut"
                    ));
                }
            }
            38..=43 => self.flap_node(hold),
            44..=49 => {
                self.note("heal all".into());
                self.sim.heal_all();
                self.sim.run_for(hold);
            }
            50..=59 => {
                if let Some(i) = self.pick_member(true) {
                    self.note(format!("crash {i}"));
                    self.sim.crash(i);
                }
                self.sim.run_for(hold);
            }
            60..=69 => {
                let i = self
                    .pick_member(false)
                    .or_else(|| (self.sim.config().members..n).find(|i| !self.sim.is_running(*i)));
                if let Some(i) = i {
                    self.note(format!("restart {i}"));
                    self.sim.start(i);
                }
                self.sim.run_for(hold);
            }
            70..=77 => {
                if let Some(i) = self.pick_member(true) {
                    self.note(format!("leave {i}"));
                    self.sim.leave(i);
                    self.report.leaves += 1;
                }
                self.sim.run_for(hold);
            }
            78..=85 => {
                let on = self.rng.random_bool(0.6);
                self.note(format!("callback chaos {}", if on { "on" } else { "off" }));
                // Busy engines too: events wait up to 10 ms and are taken
                // in batches (within the 100 ms the bounds allow).
                self.sim.behaviour = Behaviour {
                    slow_probability: if on { 0.1 } else { 0.0 },
                    fail_probability: if on { 0.1 } else { 0.0 },
                    batch_window: on
                        .then_some((Duration::from_micros(100), Duration::from_millis(10))),
                    ..self.sim.behaviour.clone()
                };
                self.sim.run_for(hold);
            }
            86..=91 => {
                let high = self.rng.random_bool(0.5);
                self.note(format!("latency {}", if high { "high" } else { "normal" }));
                self.sim.behaviour.latency = if high {
                    (Duration::from_millis(5), Duration::from_millis(80))
                } else {
                    Behaviour::default().latency
                };
                self.sim.run_for(hold);
            }
            _ => {
                let (a, b) = self.pair();
                self.note(format!("flap {a} <-> {b} for {hold:?}"));
                let end = self.sim.now() + hold;
                while self.sim.now() < end {
                    self.sim.cut_both(a, b);
                    let down = Duration::from_millis(self.rng.random_range(50..400));
                    self.sim.run_for(down);
                    self.sim.heal(a, b);
                    self.sim.heal(b, a);
                    let up = Duration::from_millis(self.rng.random_range(50..400));
                    self.sim.run_for(up);
                }
            }
        }
    }

    /// Allocations started and ended so far.
    fn moves(&self) -> usize {
        let ledger = self.sim.ledger();
        ledger.allocations.len()
            + ledger
                .allocations
                .iter()
                .filter(|a| a.end.is_some())
                .count()
    }

    /// Callbacks behave and the network is fast: timing rules apply.
    fn calm(&self) -> bool {
        let b = &self.sim.behaviour;
        b.slow_probability == 0.0
            && b.fail_probability == 0.0
            && b.latency == Behaviour::default().latency
    }

    /// Calm, no link cut, and converged: what a fault needs to start from
    /// for its outcome to be checked against the rules.
    fn settled(&self) -> bool {
        self.calm() && !self.sim.any_cut() && self.sim.converged()
    }

    /// Whether `group` has running members enough to hold every shard.
    fn holds_every_shard(&self, group: &[usize]) -> bool {
        let members = group
            .iter()
            .filter(|&&i| !self.sim.is_observer(i) && self.sim.is_running(i))
            .count();
        members >= self.sim.config().shard_count as usize
    }

    /// DESIGN.md 7.1: the convergence bound, counted from a full mesh.
    fn convergence_bound(&self) -> Duration {
        let t = self.timings();
        t.heartbeat_timeout + t.node_grace + Duration::from_millis(100)
    }

    /// DESIGN.md 7.1 within a partition: a side with members enough for
    /// every shard converges on its own, within the bound counted from the
    /// split (its nodes stayed connected to each other).
    fn check_sides_converged(&mut self, groups: &[Vec<usize>]) {
        for group in groups {
            if !self.holds_every_shard(group) {
                continue;
            }
            if let Some(problem) = self.sim.convergence_problem_among(group) {
                self.violation(format!(
                    "side {group:?} of a split has not converged within its bound: {problem}"
                ));
            }
        }
    }

    /// DESIGN.md 6.5: when at most one side of a split can hold every
    /// shard, no two nodes ever hold the same shard at the same time.
    fn check_no_duplicates(&mut self, since: Instant) {
        let allocations = &self.sim.ledger().allocations;
        let ends = |a: &super::Allocation| match &a.end {
            Some(Ending::Deallocated { at, .. } | Ending::Crashed(at)) => *at,
            None => Instant::from_micros(u64::MAX),
        };
        let mut overlaps = Vec::new();
        for (i, a) in allocations.iter().enumerate() {
            for b in &allocations[i + 1..] {
                let recent = ends(a) > since && ends(b) > since;
                if recent && a.shard == b.shard && a.start < ends(b) && b.start < ends(a) {
                    overlaps.push(format!(
                        "{} and {} both held shard {} (from {} and {})",
                        a.node, b.node, a.shard, a.start, b.start
                    ));
                }
            }
        }
        for o in overlaps {
            self.violation(format!("split with one side too small: {o}"));
        }
    }

    /// DESIGN.md 7.7: a node cut off from everyone again and again, each
    /// time for less than `node_grace`, makes no shard move.
    fn flap_node(&mut self, hold: Duration) {
        let Some(i) = self.pick_member(true) else {
            self.sim.run_for(hold);
            return;
        };
        let checked = self.settled();
        self.note(format!("flap node {i} for {hold:?}"));
        let before = self.moves();
        let start = self.sim.now();
        let end = start + hold;
        let others: Vec<usize> = (0..self.sim.len()).filter(|j| *j != i).collect();
        while self.sim.now() < end {
            for &j in &others {
                self.sim.cut_both(i, j);
            }
            // Long enough for the connections to die, short enough to come
            // back within the grace and the transition timeout.
            let down = Duration::from_millis(self.rng.random_range(550..800));
            self.sim.run_for(down);
            for &j in &others {
                self.sim.heal(i, j);
                self.sim.heal(j, i);
            }
            let up = Duration::from_millis(self.rng.random_range(300..600));
            self.sim.run_for(up);
        }
        let t = self.timings();
        self.sim.run_for(t.heartbeat_timeout + t.node_grace);
        if checked && self.moves() != before {
            self.violation(format!(
                "a shard moved while node {i} flapped faster than node_grace"
            ));
        }
    }

    fn pair(&mut self) -> (usize, usize) {
        let n = self.sim.len();
        let a = self.rng.random_range(0..n);
        let b = (a + self.rng.random_range(1..n)) % n;
        (a, b)
    }

    /// Holds the network as it is; if long enough, checks that every member
    /// that can see fewer than `shard_count` members (itself included)
    /// degraded and gave its shard up in time (DESIGN.md 7.2).
    fn hold_and_check_degradation(&mut self, hold: Duration) {
        let t = self.timings();
        let bound = t.heartbeat_timeout + t.transition_timeout + Duration::from_millis(100);
        let start = self.sim.now();
        let shard_count = self.sim.config().shard_count as usize;
        let members = self.sim.config().members;
        let cut_off: Vec<(usize, u64)> = self
            .sim
            .running_members()
            .into_iter()
            .filter(|&i| {
                let reachable = (0..members)
                    .filter(|&j| j != i && self.sim.is_running(j) && self.sim.link_clear(i, j))
                    .count();
                reachable + 1 < shard_count
            })
            .map(|i| (i, self.sim.incarnation(i)))
            .collect();
        if hold < bound || cut_off.is_empty() {
            self.sim.run_for(hold);
            return;
        }
        self.sim.run_until(start + bound);
        for (i, incarnation) in cut_off {
            // A callback that was slow around the split may still hold the
            // callback thread; the rule is about a responsive application.
            if self.sim.incarnation(i) != incarnation || self.sim.slow_until(i) > start {
                continue;
            }
            let id = self.sim.id(i).clone();
            if self.sim.health(i) != Some(Health::Degraded) {
                let health = self.sim.health(i);
                self.violation(format!(
                    "{id} sees fewer than {shard_count} members but is {health:?}, not degraded"
                ));
            }
            if let Some(a) = self.sim.ledger().open_of(&id, incarnation) {
                let shard = a.shard;
                self.violation(format!("{id} is degraded but still holds shard {shard}"));
            }
        }
        self.sim.run_until(start + hold);
    }

    /// Heals everything and checks convergence (7.1) and no churn (7.7).
    fn quiet_phase(&mut self) {
        self.note("quiet: heal all, callbacks well-behaved, restart nodes".into());
        self.sim.heal_all();
        self.sim.behaviour = Behaviour::default();
        // Let slow callbacks from the fault phase finish (and with them any
        // leave in progress) before deciding who must be restarted.
        self.sim.wait_until(Duration::from_secs(5), |s| {
            (0..s.len()).all(|i| s.slow_until(i) <= s.now())
        });
        self.sim.run_for(Duration::from_millis(50));
        let shard_count = self.sim.config().shard_count as usize;
        for i in 0..self.sim.len() {
            let keep_down = self.rng.random_bool(0.2)
                && !self.sim.is_observer(i)
                && self.sim.running_members().len() >= shard_count;
            if !self.sim.is_running(i) && !keep_down {
                self.sim.start(i);
            }
        }
        while self.sim.running_members().len() < shard_count {
            let i = self.pick_member(false).expect("some member is down");
            self.sim.start(i);
        }
        let ready = self.sim.wait_until(Duration::from_secs(10), |s| {
            s.mesh_complete() && (0..s.len()).all(|i| s.slow_until(i) <= s.now())
        });
        if !ready {
            self.violation("the mesh did not reconnect within 10 s of the heal".into());
            return;
        }
        let bound = self.convergence_bound();
        if !self.sim.wait_until(bound, Sim::converged) {
            let problem = self.sim.convergence_problem().unwrap_or_default();
            self.violation(format!(
                "not converged within {bound:?} of a full mesh: {problem}"
            ));
            return;
        }
        let converged_at = self.sim.now();
        self.sim.run_for(Duration::from_secs(3));
        if let Some(problem) = self.sim.convergence_problem() {
            self.violation(format!("converged, then diverged: {problem}"));
        }
        let churn = self.sim.ledger().allocations.iter().any(|a| {
            a.start > converged_at
                || matches!(a.end, Some(Ending::Deallocated { at, .. } | Ending::Crashed(at)) if at > converged_at)
        });
        if churn {
            self.violation("a shard moved after the cluster converged, with no fault".into());
        }
    }

    /// Every node leaves; every allocation must end with `deallocated`.
    fn shutdown(&mut self) {
        for i in 0..self.sim.len() {
            self.sim.leave(i);
        }
        let all_left = self.sim.wait_until(Duration::from_secs(5), |s| {
            (0..s.len()).all(|i| !s.is_running(i))
        });
        if !all_left {
            let stuck: Vec<String> = (0..self.sim.len())
                .filter(|i| self.sim.is_running(*i))
                .map(|i| self.sim.id(i).to_string())
                .collect();
            self.violation(format!("nodes did not finish leaving: {stuck:?}"));
        }
        self.sim.run_for(Duration::from_secs(1));
        let open: Vec<String> = self
            .sim
            .ledger()
            .open_allocations()
            .map(|a| format!("{}:{}", a.node, a.shard))
            .collect();
        if !open.is_empty() {
            self.violation(format!(
                "allocations never deallocated after leave: {open:?}"
            ));
        }
    }

    /// DESIGN.md 7.3: each loser lost to the best score, and the winner was
    /// told once per loser.
    fn check_conflicts(&mut self) {
        let ledger = self.sim.ledger();
        let yields = self.sim.yields();
        let mut problems = Vec::new();
        // (winner allocation, loser node) -> deallocated(winner) seen
        let mut expected: BTreeMap<(usize, NodeId), usize> = BTreeMap::new();
        // Of those, the losses told after the winner's allocation had ended.
        let mut after_winner_ended: BTreeMap<(usize, NodeId), usize> = BTreeMap::new();
        let mut conflicts = 0;
        for loser in &ledger.allocations {
            let Some(Ending::Deallocated {
                at,
                winner: Some(winner),
            }) = &loser.end
            else {
                continue;
            };
            conflicts += 1;
            // The loser must have yielded to a claim ranked above its own,
            // by scores their applications returned.
            let lost = yields
                .iter()
                .rev()
                .find(|(t, n, y)| {
                    *t <= *at
                        && *n == loser.node
                        && y.shard == loser.shard
                        && y.epoch == loser.epoch
                })
                .map(|(_, _, y)| y);
            let Some(lost) = lost else {
                problems.push(format!(
                    "{} lost shard {} to {winner} but never published why",
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
                    && a.epoch == lost.winner.epoch
            });
            let Some((wi, w)) = won else {
                continue;
            };
            *expected.entry((wi, loser.node.clone())).or_default() += 1;
            let winner_end = match &w.end {
                Some(Ending::Deallocated { at, .. } | Ending::Crashed(at)) => Some(*at),
                None => None,
            };
            if winner_end.is_some_and(|end| end <= *at) {
                *after_winner_ended
                    .entry((wi, loser.node.clone()))
                    .or_default() += 1;
            }
            let own = crate::core::Claim {
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
                // acknowledged it with `prolonged`, so the two match, except
                // for a loser that crashed in between.
                let crashed = ledger
                    .allocations
                    .iter()
                    .filter(|a| a.node == *loser && a.shard == w.shard)
                    .filter(|a| matches!(a.end, Some(Ending::Crashed(_))))
                    .count();
                // And a winner that crashed, or was cut off and gave the
                // shard up, before it learned of the loss: its losers wait
                // out its grace and keep their promise, but it can no
                // longer be told.
                let winner_crashed = matches!(w.end, Some(Ending::Crashed(_)));
                let untellable = after_winner_ended
                    .get(&(wi, loser.clone()))
                    .copied()
                    .unwrap_or(0);
                if told > lost + crashed || (told + untellable < lost && !winner_crashed) {
                    problems.push(format!(
                        "{} (shard {}) got prolonged({loser}) {told} times for {lost} lost conflicts",
                        w.node, w.shard
                    ));
                }
            }
        }
        self.report.conflicts = conflicts;
        for p in problems {
            self.violation(p);
        }
    }
}

/// DESIGN.md 6.3's rule, written again independently of the core's: the
/// highest score wins, a failed score loses, a tie goes to the older epoch,
/// then to the smaller node id.
fn outranks(a: (Option<i64>, &crate::core::Claim), b: (Option<i64>, &crate::core::Claim)) -> bool {
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
