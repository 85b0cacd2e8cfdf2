//! Random fault schedules, each checked against docs/design.md section 7.
//!
//! A schedule starts a cluster of random shape and applies a random sequence
//! of phases. Most change the network or the member list and then hold it
//! still: splits into two or more groups; chains, rings, stars and random
//! graphs with missing and one-way links; single cuts; heals; crashes,
//! restarts and leaves; a member removed from the list (its own list
//! updated, or stale) and added back; and the heal of a split timed so that
//! a winner or a loser leaves or crashes in the middle of the conflict it
//! starts. Others make the world misbehave for a while: links and nodes
//! that flap faster than the grace, slow and failing callbacks, latency,
//! single messages held back.
//!
//! Every phase that holds the world still long enough, with well-behaved
//! callbacks, is checked: members that see too few members degrade (7.2);
//! every group of nodes connected by paths converges within the bound
//! (7.1, 7.9), then nothing moves and no health changes; from a steady
//! start each shard moves at most once, and not at all when the change
//! cannot require it (7.7); where 6.5 or 6.6 forbid it, no two nodes ever
//! hold one shard. Callback discipline and epochs are checked as they
//! happen, and every conflict's outcome at the end (7.3).

mod checks;
mod topology;

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use super::ledger::Ending;
use super::{Behaviour, Sim, SimConfig};
use crate::core::{Health, Instant, NodeId, Quorum, Timings};
use checks::{convergence_bound, degradation_bound};

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
    /// Graceful leaves in the fault phases.
    pub leaves: u64,
    /// Checked phases in which some group's nodes reached each other only
    /// through others (a chain, a ring, a partial mesh).
    pub multi_hop: u64,
    /// Member-list changes (a member removed, or the removed added back).
    pub member_changes: u64,
    /// Leaves and crashes of a winner or a loser timed into a conflict.
    pub conflict_races: u64,
    /// Heals that merged three or more groups that each held every shard.
    pub three_way_merges: u64,
    /// Run in strict mode (`quorum = majority`): no two holders of a shard
    /// at any instant is checked at every `allocated`.
    pub strict: bool,
    /// Strict mode: allocations that began while a node whose engine had
    /// given the shard up had not told its application yet, held up by a
    /// slow callback of its own (see `Sim::excused_overlaps`).
    pub excused_overlaps: u64,
    /// Simulated time.
    pub simulated: Duration,
    /// The cluster's shape and the faults applied, for a failure report.
    pub script: Vec<String>,
}

/// How long a busy engine lets events queue before it takes them in one
/// batch: within the slack the bounds of section 7 allow.
const BUSY: (Duration, Duration) = (Duration::from_micros(100), Duration::from_millis(5));

/// Runs the schedule of `seed`.
pub fn run(seed: u64) -> Report {
    run_with(seed, false)
}

/// The quorum the schedule of `seed` runs with: strict mode for one seed
/// in three. Chosen by the seed, not drawn, so that the others replay as
/// they did before strict mode.
pub fn quorum_of(seed: u64) -> Quorum {
    if seed % 3 == 0 {
        Quorum::Majority
    } else {
        Quorum::Any
    }
}

/// Runs the schedule of `seed`, printing every step to stderr if `trace`.
pub fn run_with(seed: u64, trace: bool) -> Report {
    run_in(seed, quorum_of(seed), trace)
}

/// Runs the schedule of `seed` with `quorum` whatever the seed: a seed
/// that found a fault before strict mode existed replays it as it did.
pub fn run_in(seed: u64, quorum: Quorum, trace: bool) -> Report {
    let mut rng = StdRng::seed_from_u64(seed);
    let members = rng.random_range(3..=8);
    let shard_count = rng.random_range(1..members) as u32;
    let observers = usize::from(rng.random_bool(0.3));
    let mut sim = Sim::new(SimConfig {
        members,
        observers,
        shard_count,
        timings: Timings::default(),
        quorum,
        seed: rng.random(),
    });
    sim.set_trace(trace);
    // Every score equal, sometimes: conflicts then go by epoch and node id.
    let equal_scores = rng.random_bool(0.25);
    if equal_scores {
        for i in 0..sim.len() {
            sim.set_score(i, Some(0));
        }
    }
    // Busy engines, sometimes: events wait a few milliseconds and are taken
    // in batches, as the engine takes what queued up while it was busy.
    let busy = rng.random_bool(0.3);
    if busy {
        sim.behaviour.batch_window = Some(BUSY);
    }
    let mut run = Run {
        report: Report {
            seed,
            strict: quorum == Quorum::Majority,
            ..Report::default()
        },
        rng,
        sim,
        steady: false,
        tainted_until: Instant::ZERO,
        removed: BTreeMap::new(),
    };
    run.note(format!(
        "{members} members, {observers} observers, {shard_count} shards, quorum {quorum}{}{}",
        if equal_scores { ", equal scores" } else { "" },
        if busy { ", busy engines" } else { "" }
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
    let (conflicts, problems) = checks::conflict_problems(&run.sim, &run.removed);
    run.report.conflicts = conflicts;
    for problem in problems {
        run.violation(problem);
    }
    let Run {
        mut report, sim, ..
    } = run;
    report
        .violations
        .extend(sim.ledger().violations.iter().cloned());
    report.failovers = sim.ledger().failovers;
    report.excused_overlaps = sim.excused_overlaps();
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
    /// The previous phase was checked and left every group as it must be,
    /// with nothing moving.
    steady: bool,
    /// Until when misbehaviour (slow callbacks, held messages, latency) may
    /// still be felt: no timing rule is checked before.
    tainted_until: Instant,
    /// When each node was taken out of the member list.
    removed: BTreeMap<NodeId, Vec<Instant>>,
}

/// How the world stood when a phase began.
struct Phase {
    start: Instant,
    /// Steady (see [`Run::steady`]), with well-behaved callbacks.
    steady: bool,
    /// Steady, and every shard had exactly one holder in the whole cluster.
    settled: bool,
    /// The holder of each shard then.
    owners: Vec<Option<usize>>,
    /// Every running member was in one group, connected by paths.
    one_group: bool,
    /// The phase itself stops, starts or removes a node: shards may move
    /// even where the network alone would move none.
    injected: bool,
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

    fn convergence_bound(&self) -> Duration {
        convergence_bound(&self.timings(), self.sim.config().quorum)
    }

    fn shard_count(&self) -> usize {
        self.sim.config().shard_count as usize
    }

    fn pick(&mut self, list: &[usize]) -> Option<usize> {
        list.choose(&mut self.rng).copied()
    }

    fn running_members(&self) -> Vec<usize> {
        self.sim
            .running_members()
            .into_iter()
            .filter(|&i| !self.sim.is_observer(i))
            .collect()
    }

    /// How long a phase holds: usually long enough to be checked, sometimes
    /// not, so the next phase starts in the middle of a change.
    fn hold(&mut self) -> Duration {
        let bound = self.convergence_bound();
        if self.rng.random_bool(0.25) {
            Duration::from_millis(self.rng.random_range(50..bound.as_millis() as u64))
        } else {
            bound + Duration::from_millis(self.rng.random_range(100..4000))
        }
    }

    /// Callbacks behave and the network is fast: timing rules apply.
    fn calm(&self) -> bool {
        let b = &self.sim.behaviour;
        let default = Behaviour::default();
        b.slow_probability == 0.0
            && b.fail_probability == 0.0
            && b.latency == default.latency
            && b.spikes.is_none()
    }

    fn holders(&self) -> Vec<Vec<usize>> {
        let mut holders = vec![Vec::new(); self.shard_count()];
        for a in self.sim.ledger().open_allocations() {
            if let Some(i) = (0..self.sim.len()).find(|&i| self.sim.id(i) == &a.node) {
                holders[a.shard as usize].push(i);
            }
        }
        holders
    }

    fn begin(&self, injected: bool) -> Phase {
        let steady = self.steady && self.calm();
        let holders = self.holders();
        let settled = steady && holders.iter().all(|h| h.len() == 1);
        Phase {
            start: self.sim.now(),
            steady,
            settled,
            owners: holders.iter().map(|h| h.first().copied()).collect(),
            one_group: self.sim.components().len() <= 1,
            injected,
        }
    }

    fn fault_phase(&mut self) {
        let hold = self.hold();
        let n = self.sim.len();
        match self.rng.random_range(0..100) {
            0..=13 => self.split(2, hold),
            14..=19 => {
                let k = self.rng.random_range(3..=4).min(n);
                self.split(k, hold)
            }
            20..=31 => {
                let phase = self.begin(false);
                let shape = topology::random_shape(&mut self.rng, n);
                self.note(format!("topology: {}", shape.name));
                self.sim.set_passing(&shape.passing);
                self.hold_still(&phase, phase.start + hold);
            }
            32..=36 => {
                let phase = self.begin(false);
                let (a, b) = self.pair();
                self.note(format!("cut one way {a} -> {b}"));
                self.sim.cut(a, b);
                self.hold_still(&phase, phase.start + hold);
            }
            37..=41 => {
                let phase = self.begin(false);
                let (a, b) = self.pair();
                self.note(format!("cut both ways {a} <-> {b}"));
                self.sim.cut_both(a, b);
                self.hold_still(&phase, phase.start + hold);
            }
            42..=47 => self.heal_all(hold),
            48..=53 => {
                let phase = self.begin(true);
                if let Some(i) = self.pick(&self.running_members()) {
                    self.note(format!("crash {i}"));
                    self.sim.crash(i);
                }
                self.hold_still(&phase, phase.start + hold);
            }
            54..=59 => {
                let phase = self.begin(true);
                let stopped: Vec<usize> = (0..n)
                    .filter(|&i| !self.sim.is_running(i) && self.sim.can_start(i))
                    .collect();
                if let Some(i) = self.pick(&stopped) {
                    self.note(format!("restart {i}"));
                    self.sim.start(i);
                }
                // A node that starts knows nothing of the owners it cannot
                // reach yet: no rule keeps it from taking their shards.
                let phase = Phase {
                    one_group: false,
                    ..phase
                };
                self.hold_still(&phase, phase.start + hold);
            }
            60..=65 => {
                let phase = self.begin(true);
                if let Some(i) = self.pick(&self.running_members()) {
                    self.note(format!("leave {i}"));
                    self.sim.leave(i);
                    self.report.leaves += 1;
                }
                self.hold_still(&phase, phase.start + hold);
            }
            66..=72 => self.change_members(),
            73..=82 => self.conflict_race(hold),
            83..=86 => {
                let on = self.rng.random_bool(0.6);
                self.note(format!("callback chaos {}", if on { "on" } else { "off" }));
                self.sim.behaviour = Behaviour {
                    slow_probability: if on { 0.1 } else { 0.0 },
                    fail_probability: if on { 0.1 } else { 0.0 },
                    ..self.sim.behaviour.clone()
                };
                self.misbehaved(hold);
            }
            87 => {
                // Busy engines: events wait a few milliseconds and are taken
                // in batches, as the engine takes what queued up while it
                // was busy. The timing rules allow for it.
                let on = self.rng.random_bool(0.6);
                self.note(format!("busy engines {on}"));
                self.sim.behaviour.batch_window = on.then_some(BUSY);
                let phase = self.begin(false);
                self.hold_still(&phase, phase.start + hold);
            }
            88..=91 => {
                let high = self.rng.random_bool(0.5);
                self.note(format!("latency {}", if high { "high" } else { "normal" }));
                self.sim.behaviour.latency = if high {
                    (Duration::from_millis(5), Duration::from_millis(80))
                } else {
                    Behaviour::default().latency
                };
                self.misbehaved(hold);
            }
            92..=94 => {
                let on = self.rng.random_bool(0.6);
                self.note(format!("single messages held back: {on}"));
                self.sim.behaviour.spikes =
                    on.then_some((0.05, (Duration::from_millis(5), Duration::from_millis(300))));
                self.misbehaved(hold);
            }
            95..=97 => self.flap_node(hold),
            _ => self.flap_link(hold),
        }
    }

    /// A phase that changed how the network or the applications behave:
    /// nothing is checked against the timing rules until its effects are
    /// over.
    fn misbehaved(&mut self, hold: Duration) {
        let phase = self.begin(false);
        let linger = Duration::from_millis(400);
        let slow = (0..self.sim.len())
            .map(|i| self.sim.slow_until(i))
            .max()
            .unwrap_or(Instant::ZERO);
        self.tainted_until = self.tainted_until.max(slow).max(phase.start + linger);
        self.hold_still(&phase, phase.start + hold);
    }

    fn pair(&mut self) -> (usize, usize) {
        let n = self.sim.len();
        let a = self.rng.random_range(0..n);
        let b = (a + self.rng.random_range(1..n)) % n;
        (a, b)
    }

    fn split(&mut self, k: usize, hold: Duration) {
        let phase = self.begin(false);
        let groups = topology::partition(&mut self.rng, self.sim.len(), k);
        self.note(format!("split {groups:?}"));
        self.sim.set_passing(&topology::groups(&groups));
        self.hold_still(&phase, phase.start + hold);
    }

    fn heal_all(&mut self, hold: Duration) {
        let phase = self.begin(false);
        let sc = self.shard_count();
        let holders = self.holders();
        let holding_all = self
            .sim
            .components()
            .iter()
            .filter(|g| (0..sc).all(|s| g.iter().any(|i| holders[s].contains(i))))
            .count();
        if holding_all >= 3 {
            self.report.three_way_merges += 1;
        }
        self.note(format!(
            "heal all ({holding_all} groups holding every shard meet)"
        ));
        self.sim.set_passing(&topology::full(self.sim.len()));
        self.hold_still(&phase, phase.start + hold);
    }

    /// The operator removes a running member from the list (its own
    /// `nodes` callback updated too, or left stale), or adds back every
    /// member removed earlier. Each node picks the change up at its next
    /// poll; the world stands still once all of them have.
    fn change_members(&mut self) {
        let phase = self.begin(true);
        let full: Vec<NodeId> = (0..self.sim.config().members)
            .map(|i| self.sim.id(i).clone())
            .collect();
        let current = self.sim.member_list().to_vec();
        let running = self.running_members();
        if current.len() < full.len() && (self.rng.random_bool(0.5) || running.len() < 2) {
            self.note("members: every removed member added back".into());
            self.sim.set_member_list(full, &[]);
        } else if let Some(r) = self.pick(&running).filter(|_| running.len() >= 2) {
            let stale = self.rng.random_bool(0.5);
            let id = self.sim.id(r).clone();
            self.note(format!(
                "members: {r} removed from the list{}",
                if stale { ", its own list stale" } else { "" }
            ));
            self.removed
                .entry(id.clone())
                .or_default()
                .push(phase.start);
            let list: Vec<NodeId> = current.into_iter().filter(|m| *m != id).collect();
            let stale_nodes = if stale { vec![r] } else { Vec::new() };
            self.sim.set_member_list(list, &stale_nodes);
        } else {
            let end = phase.start + self.hold();
            self.hold_still(&phase, end);
            return;
        }
        self.report.member_changes += 1;
        let poll = self.timings().member_poll + Duration::from_millis(100);
        let picked_up = self.sim.wait_until(poll, |s| {
            (0..s.len())
                .filter(|&i| s.is_running(i) && s.list_of(i) == s.member_list())
                .all(|i| s.admitted_by(i) == s.list_of(i))
        });
        if !picked_up && self.calm() {
            self.violation(format!(
                "a node did not pick the new member list up within a poll ({poll:?})"
            ));
        }
        let end = self.sim.now() + self.hold().max(self.convergence_bound());
        self.hold_still(&phase, end);
    }

    /// Splits the members into two groups that can each hold every shard,
    /// lets both converge, heals, and makes the winner or a loser of the
    /// conflict leave or crash at a moment of it: when a loser publishes
    /// its yield, when a `score` runs, or a few milliseconds in.
    fn conflict_race(&mut self, hold: Duration) {
        let sc = self.shard_count();
        let mut members = self.running_members();
        let phase = self.begin(false);
        if members.len() < 2 * sc || !phase.settled {
            return self.heal_all(hold);
        }
        members.shuffle(&mut self.rng);
        let cut = self.rng.random_range(sc..=members.len() - sc);
        let mut groups = vec![members[..cut].to_vec(), members[cut..].to_vec()];
        for i in (0..self.sim.len()).filter(|&i| !members.contains(&i)) {
            groups[self.rng.random_range(0..2)].push(i);
        }
        self.note(format!("split {groups:?} before a conflict race"));
        self.sim.set_passing(&topology::groups(&groups));
        let both_hold = phase.start + self.convergence_bound() + Duration::from_millis(200);
        self.hold_still(&phase, both_hold);
        if !self.steady {
            return;
        }
        let phase = self.begin(true);
        let yields_before = self.sim.yields().len();
        let scores_before = self.scores_given();
        self.note("heal all, for the race".into());
        self.sim.set_passing(&topology::full(self.sim.len()));
        let bound = self.convergence_bound();
        let moment = self.rng.random_range(0..3);
        let seen = match moment {
            0 => self.sim.wait_until(bound, |s| {
                s.yields()[yields_before..]
                    .iter()
                    .any(|(_, _, y)| y.is_some())
            }),
            1 => self
                .sim
                .wait_until(bound, |s| scores_given(s) > scores_before),
            _ => {
                let wait = Duration::from_millis(self.rng.random_range(0..40));
                self.sim.run_for(wait);
                true
            }
        };
        if seen {
            let yielded =
                self.sim.yields()[yields_before..]
                    .iter()
                    .rev()
                    .find_map(|(_, loser, y)| {
                        y.as_ref().map(|y| (loser.clone(), y.winner.node.clone()))
                    });
            let contenders: Vec<usize> = self
                .holders()
                .into_iter()
                .filter(|h| h.len() > 1)
                .flatten()
                .collect();
            let target = match yielded {
                Some((loser, winner)) => {
                    let node = if self.rng.random_bool(0.7) {
                        winner
                    } else {
                        loser
                    };
                    (0..self.sim.len()).find(|&i| *self.sim.id(i) == node)
                }
                None => self.pick(&contenders),
            };
            if let Some(i) = target.filter(|&i| self.sim.is_running(i)) {
                let how = if self.rng.random_bool(0.6) {
                    "leave"
                } else {
                    "crash"
                };
                let at = ["a loser yielded", "a score ran", "a few ms in"][moment];
                self.note(format!("{how} {i} when {at}"));
                if how == "leave" {
                    self.sim.leave(i);
                    self.report.leaves += 1;
                } else {
                    self.sim.crash(i);
                }
                self.report.conflict_races += 1;
            }
        }
        let end = self.sim.now() + hold.max(bound + Duration::from_millis(200));
        self.hold_still(&phase, end);
    }

    fn scores_given(&self) -> usize {
        scores_given(&self.sim)
    }

    /// The network and the member lists stand still from now until `end`.
    /// If the world is calm, checks what docs/design.md section 7 promises of a
    /// world that stands still (see the module's documentation).
    fn hold_still(&mut self, phase: &Phase, end: Instant) {
        let t = self.timings();
        let still = self.sim.now();
        let converge_by = still + self.convergence_bound() + checks::path_allowance(&self.sim);
        let checkable = self.calm() && still >= self.tainted_until && end >= converge_by;
        let before = self.report.violations.len();
        let groups = self.sim.components();
        let mut converged = false;
        if checkable {
            if groups.iter().any(|g| self.reached_through_others(g)) {
                self.report.multi_hop += 1;
            }
            // 7.2: members that see too few members are degraded and hold
            // nothing by the degradation bound, and stay so.
            self.sim.run_until(still + degradation_bound(&t));
            let degraded_problem = (0..self.sim.len())
                .filter(|&i| checks::must_degrade(&self.sim, i))
                .find_map(|i| {
                    let id = self.sim.id(i);
                    if self.sim.health(i) != Some(Health::Degraded) {
                        return Some(format!(
                            "{id} sees {} members, fewer than the {} it needs, but is {:?} at the degradation bound",
                            checks::visible_members(&self.sim, i),
                            checks::members_needed(&self.sim, self.sim.admitted_by(i).len()),
                            self.sim.health(i)
                        ));
                    }
                    let held = self.sim.ledger().open_of(id, self.sim.incarnation(i));
                    held.map(|a| format!("{id} is degraded but holds shard {}", a.shard))
                });
            if let Some(problem) = degraded_problem {
                self.violation(problem);
            }
            // 7.1, 7.9: every group as it must be by the convergence bound...
            let wait = converge_by.saturating_since(self.sim.now());
            if self
                .sim
                .wait_until(wait, |s| checks::groups_problem(s).is_none())
            {
                converged = true;
                // ...and from then on nothing moves and no health changes.
                let since = self.sim.now();
                let changes = self.sim.health_log().len();
                self.sim.run_until(end);
                // (The allocation that completed the picture started at
                // `since` itself.)
                if checks::moves_since(&self.sim, since + Duration::from_micros(1)) > 0 {
                    self.violation(format!(
                        "a shard moved after every group had converged (at {since}) while the network stood still"
                    ));
                }
                let observers: Vec<&NodeId> = (0..self.sim.len())
                    .filter(|&i| self.sim.is_observer(i))
                    .map(|i| self.sim.id(i))
                    .collect();
                let later: Vec<String> = self.sim.health_log()[changes..]
                    .iter()
                    .filter(|(_, node, _, _)| !observers.contains(&node))
                    .map(|(at, node, old, new)| format!("{node} {old} -> {new} at {at}"))
                    .collect();
                if !later.is_empty() {
                    self.violation(format!(
                        "health changed after every group had converged (at {since}) while the network stood still: {later:?}"
                    ));
                }
                if let Some(problem) = checks::groups_problem(&self.sim) {
                    self.violation(format!("converged, then diverged: {problem}"));
                }
            } else {
                let problem = checks::groups_problem(&self.sim).unwrap_or_default();
                self.violation(format!(
                    "not converged within {:?} of the network standing still: {problem}",
                    converge_by.saturating_since(still)
                ));
            }
        }
        self.sim.run_until(end);
        if checkable && phase.steady {
            // Claims made before every node can have noticed the change come
            // from views that disagree, and may race once; from then on each
            // shard moves at most once. A cut shows after the heartbeat
            // timeout; a new link is dialled within the dial delay, and what
            // it brings crosses further links once they have been up for a
            // heartbeat timeout (relays before then carry claims only).
            let dial = self.sim.behaviour.dial.1;
            let noticed = still + dial + t.heartbeat_timeout + t.heartbeat_interval;
            let groups = self.sim.components();
            for problem in checks::churn_problems(&self.sim, noticed, &groups) {
                self.violation(problem);
            }
            if self.nothing_may_move(phase) && checks::moves_since(&self.sim, phase.start) > 0 {
                self.violation(
                    "a shard moved though every owner kept members enough and no other group could take a shard".into(),
                );
            }
        }
        // docs/design.md 6.5 and 6.6: from a settled cluster in one group, when
        // the change leaves at most one group with members enough to hold
        // every shard, no shard ever has two holders at once. (Nodes that
        // were cut off before the change knew nothing current of the
        // owners, and may take their shards as any side of a split does.)
        if phase.settled
            && phase.one_group
            && self.calm()
            && self.at_most_one_group_holds_every_shard()
        {
            for overlap in checks::overlaps(&self.sim, phase.start) {
                self.violation(format!(
                    "at most one group could hold every shard, yet {overlap}"
                ));
            }
        }
        self.steady = checkable && converged && self.report.violations.len() == before;
    }

    /// Whether at most one group (as the network stands now, with every
    /// leave and crash done) has members enough to hold every shard.
    fn at_most_one_group_holds_every_shard(&self) -> bool {
        let enough = |g: &&Vec<usize>| {
            let members = g
                .iter()
                .filter(|&&i| checks::acts_as_member(&self.sim, i))
                .count();
            members >= checks::members_needed(&self.sim, self.sim.member_list().len())
        };
        self.sim.components().iter().filter(enough).count() <= 1
    }

    /// Whether some two members of `group` are connected only through
    /// others.
    fn reached_through_others(&self, group: &[usize]) -> bool {
        let members: Vec<usize> = group
            .iter()
            .copied()
            .filter(|&i| self.sim.is_member(i))
            .collect();
        members
            .iter()
            .any(|&a| members.iter().any(|&b| a < b && !self.sim.linked(a, b)))
    }

    /// From a settled start, nothing may move when the phase stopped no node
    /// and every owner still sees members enough and shares one group, and
    /// no other group has a member that could take a shard.
    fn nothing_may_move(&self, phase: &Phase) -> bool {
        if phase.injected || !phase.settled {
            return false;
        }
        let groups = self.sim.components();
        let owners: Vec<usize> = phase.owners.iter().flatten().copied().collect();
        let Some(home) = owners
            .first()
            .and_then(|o| groups.iter().find(|g| g.contains(o)))
        else {
            return false;
        };
        owners
            .iter()
            .all(|&o| home.contains(&o) && checks::capable(&self.sim, o))
            && (0..self.sim.len())
                .filter(|&i| checks::capable(&self.sim, i))
                .all(|i| home.contains(&i))
    }

    /// docs/design.md 7.7: a node cut off from everyone again and again, each
    /// time for less than `node_grace`, makes no shard move.
    fn flap_node(&mut self, hold: Duration) {
        let phase = self.begin(false);
        let Some(i) = self.pick(&self.running_members()) else {
            self.sim.run_for(hold);
            self.steady = false;
            return;
        };
        self.note(format!("flap node {i} for {hold:?}"));
        let others: Vec<usize> = (0..self.sim.len()).filter(|j| *j != i).collect();
        let links: Vec<(usize, usize)> = others
            .iter()
            .filter(|&&j| self.sim.link_clear(i, j))
            .map(|&j| (i, j))
            .collect();
        self.flap(&phase, &links, hold, &format!("node {i}"));
    }

    /// docs/design.md 7.7: a link that goes down for longer than the heartbeat
    /// timeout (so the connection dies) but shorter than the grace, again
    /// and again, makes no shard move.
    fn flap_link(&mut self, hold: Duration) {
        let phase = self.begin(false);
        let (a, b) = self.pair();
        self.note(format!("flap link {a} <-> {b} for {hold:?}"));
        let links = if self.sim.link_clear(a, b) {
            vec![(a, b)]
        } else {
            Vec::new()
        };
        self.flap(&phase, &links, hold, &format!("link {a} <-> {b}"));
    }

    fn flap(&mut self, phase: &Phase, links: &[(usize, usize)], hold: Duration, what: &str) {
        let end = phase.start + hold;
        let mut flaps = 0;
        while self.sim.now() < end {
            for &(a, b) in links {
                self.sim.cut_both(a, b);
            }
            // Long enough for the connections to die, short enough to come
            // back within the grace and the transition timeout.
            let down = Duration::from_millis(self.rng.random_range(550..800));
            self.sim.run_for(down);
            for &(a, b) in links {
                self.sim.heal(a, b);
                self.sim.heal(b, a);
            }
            flaps += 1;
            let up = Duration::from_millis(self.rng.random_range(300..600));
            self.sim.run_for(up);
        }
        let t = self.timings();
        self.sim.run_for(t.heartbeat_timeout + t.node_grace);
        let moved = checks::members_moves_since(&self.sim, phase.start);
        if phase.steady && self.calm() && !links.is_empty() && moved > 0 {
            self.violation(format!(
                "{moved} shard changes while the {what} flapped {flaps} times, each time for less than node_grace"
            ));
        }
        self.steady = false;
    }

    /// Heals everything, restores the member list, and checks convergence
    /// (7.1) and no churn (7.7).
    fn quiet_phase(&mut self) {
        self.note(
            "quiet: heal all, every member listed, callbacks well-behaved, restart nodes".into(),
        );
        let full: Vec<NodeId> = (0..self.sim.config().members)
            .map(|i| self.sim.id(i).clone())
            .collect();
        self.sim.set_member_list(full, &[]);
        self.sim.set_passing(&topology::full(self.sim.len()));
        self.sim.behaviour = Behaviour::default();
        // Let slow callbacks from the fault phase finish (and with them any
        // leave in progress) before deciding who must be restarted.
        self.sim.wait_until(Duration::from_secs(5), |s| {
            (0..s.len()).all(|i| s.slow_until(i) <= s.now())
        });
        self.sim.run_for(Duration::from_millis(400));
        // Members enough to hold every shard stay up: in strict mode, a
        // majority of the list.
        let needed = checks::members_needed(&self.sim, self.sim.config().members);
        for i in 0..self.sim.len() {
            let keep_down = self.rng.random_bool(0.2)
                && !self.sim.is_observer(i)
                && self.running_members().len() >= needed;
            if !self.sim.is_running(i) && !keep_down {
                self.sim.start(i);
            }
        }
        while self.running_members().len() < needed {
            let stopped: Vec<usize> = (0..self.sim.config().members)
                .filter(|&i| !self.sim.is_running(i))
                .collect();
            let i = self.pick(&stopped).expect("some member is down");
            self.sim.start(i);
        }
        let poll = self.timings().member_poll;
        let ready = self.sim.wait_until(poll + Duration::from_secs(5), |s| {
            let listed = (0..s.len())
                .filter(|&i| s.is_running(i))
                .all(|i| s.admitted_by(i) == s.member_list());
            listed && s.mesh_complete() && (0..s.len()).all(|i| s.slow_until(i) <= s.now())
        });
        if !ready {
            self.violation("the mesh did not reconnect within a poll and 5 s of the heal".into());
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
}

/// `score` callbacks the applications have answered so far.
fn scores_given(sim: &Sim) -> usize {
    sim.ledger()
        .allocations
        .iter()
        .map(|a| a.scores.len())
        .sum()
}
