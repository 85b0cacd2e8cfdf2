//! What the simulated applications were told, checked as it happens.
//!
//! Every callback a node's application receives goes through here; the ledger
//! keeps each allocation's life (`allocated` → `score`/`prolonged`* →
//! `deallocated`) and records a violation the moment the discipline of
//! docs/design.md section 3 breaks.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::{
    Call, Epoch, Health, Incarnation, Instant, NodeId, Outcome, ReleaseReason, Role, Shard,
};

/// How an allocation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// `deallocated` was called, with this winner.
    Deallocated {
        /// When the application was told.
        at: Instant,
        /// The winner, if it lost a conflict.
        winner: Option<NodeId>,
        /// Why, as the application was told.
        reason: ReleaseReason,
    },
    /// The node crashed while holding it.
    Crashed(Instant),
}

/// One allocation, as the application lived it.
#[derive(Clone, Debug)]
pub struct Allocation {
    /// The owner.
    pub node: NodeId,
    /// The owner's incarnation.
    pub incarnation: Incarnation,
    /// The shard.
    pub shard: Shard,
    /// The epoch now: the one it started with, raised by `prolonged`.
    pub epoch: Epoch,
    /// Every epoch it had, in order.
    pub epochs: Vec<Epoch>,
    /// When `allocated` was called.
    pub start: Instant,
    /// When it ended, if it did.
    pub end: Option<Ending>,
    /// Every score the application returned, in order.
    pub scores: Vec<i64>,
    /// Every `prolonged` loser that yielded to it, in order.
    pub prolonged: Vec<NodeId>,
    /// Every `prolonged` naming a rival it only outlived (its epoch rose
    /// above the rival's), in order.
    pub outlived: Vec<NodeId>,
}

impl Allocation {
    /// Whether the application held it at `t`.
    pub fn open_at(&self, t: Instant) -> bool {
        self.start <= t
            && match &self.end {
                None => true,
                Some(Ending::Deallocated { at, .. } | Ending::Crashed(at)) => *at > t,
            }
    }
}

/// The record of every callback of every node.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Every allocation, in the order they started.
    pub allocations: Vec<Allocation>,
    open: BTreeMap<(NodeId, Incarnation), usize>,
    /// Health changes reported through `status_changed`.
    pub health_changes: Vec<(Instant, NodeId, Health, Health)>,
    /// Broken rules, one line each.
    pub violations: Vec<String>,
    /// `allocated` calls whose shard's previous allocation never ended with a
    /// `deallocated`: its owner crashed or was cut off.
    pub failovers: u64,
    /// When each node incarnation was asked to leave.
    leaves: BTreeMap<(NodeId, Incarnation), Instant>,
    /// Every epoch any allocation of a shard had: fencing tokens, which
    /// must never be handed out twice, split or not.
    issued: BTreeMap<Shard, BTreeSet<Epoch>>,
}

impl Ledger {
    fn violation(&mut self, at: Instant, node: &NodeId, what: String) {
        self.violations.push(format!("t={at} node={node}: {what}"));
    }

    /// The open allocation of a node incarnation.
    pub fn open_of(&self, node: &NodeId, incarnation: Incarnation) -> Option<&Allocation> {
        let index = *self.open.get(&(node.clone(), incarnation))?;
        Some(&self.allocations[index])
    }

    /// A callback starts on a node's application, which will end it with
    /// `outcome`.
    pub fn begin(
        &mut self,
        at: Instant,
        (node, incarnation, role): (&NodeId, Incarnation, Role),
        call: &Call,
        outcome: &Outcome,
    ) {
        let succeeded = !matches!(outcome, Outcome::Failed(_));
        let score = match outcome {
            Outcome::Score(score) => Some(*score),
            _ => None,
        };
        let is_observer = role == Role::Observer;
        let key = (node.clone(), incarnation);
        let open = self.open.get(&key).copied();
        match call {
            Call::Allocated { shard, epoch } => {
                if is_observer {
                    self.violation(at, node, format!("an observer was allocated shard {shard}"));
                }
                if let Some(index) = open {
                    let held = self.allocations[index].shard;
                    self.violation(
                        at,
                        node,
                        format!("allocated({shard}) while still holding shard {held}: two allocations at once"),
                    );
                }
                if !succeeded {
                    return;
                }
                self.issue(at, node, *shard, *epoch);
                let previous = self.allocations.iter().rev().find(|a| a.shard == *shard);
                if previous.is_some_and(|p| !matches!(p.end, Some(Ending::Deallocated { .. }))) {
                    self.failovers += 1;
                }
                self.allocations.push(Allocation {
                    node: node.clone(),
                    incarnation,
                    shard: *shard,
                    epoch: *epoch,
                    epochs: vec![*epoch],
                    start: at,
                    end: None,
                    scores: Vec::new(),
                    prolonged: Vec::new(),
                    outlived: Vec::new(),
                });
                self.open.insert(key, self.allocations.len() - 1);
            }
            Call::Score { shard, epoch } => match open.map(|i| &mut self.allocations[i]) {
                Some(a) if a.shard == *shard && a.epoch == *epoch => {
                    if let Some(score) = score {
                        a.scores.push(score);
                    }
                }
                _ => self.violation(
                    at,
                    node,
                    format!("score({shard}, epoch {epoch}) outside of that allocation"),
                ),
            },
            Call::Prolonged {
                shard,
                epoch,
                loser,
                won,
            } => self.prolonged(at, node, open, (*shard, *epoch, loser, *won)),
            Call::Deallocated {
                shard,
                epoch,
                winner,
                reason,
            } => {
                let leaving = self.leaves.contains_key(&key);
                match open.map(|i| &mut self.allocations[i]) {
                    Some(a) if a.shard == *shard && a.epoch == *epoch => {
                        a.end = Some(Ending::Deallocated {
                            at,
                            winner: winner.clone(),
                            reason: *reason,
                        });
                        self.open.remove(&key);
                    }
                    _ => self.violation(
                        at,
                        node,
                        format!("deallocated({shard}, epoch {epoch}) without that allocation"),
                    ),
                }
                if let Some(wrong) = wrong_reason(winner.as_ref(), *reason, leaving) {
                    self.violation(at, node, format!("deallocated({shard}): {wrong}"));
                }
            }
            Call::StatusChanged { old, new } => {
                self.health_changes.push((at, node.clone(), *old, *new));
            }
            Call::Nodes => {}
        }
    }

    /// An epoch is handed to an application: never one handed out before
    /// for the shard.
    fn issue(&mut self, at: Instant, node: &NodeId, shard: Shard, epoch: Epoch) {
        if !self.issued.entry(shard).or_default().insert(epoch) {
            self.violation(
                at,
                node,
                format!("epoch {epoch} of shard {shard} handed out twice: a fenced store could not tell the two owners apart"),
            );
        }
    }

    /// `prolonged(loser)`: the winner's epoch from now on is not below its
    /// own and, if `loser` yielded to it, above the loser's, so a store
    /// fenced by epochs refuses the loser and takes the winner.
    fn prolonged(
        &mut self,
        at: Instant,
        node: &NodeId,
        open: Option<usize>,
        (shard, epoch, loser, won): (Shard, Epoch, &NodeId, bool),
    ) {
        let Some(index) = open.filter(|&i| self.allocations[i].shard == shard) else {
            self.violation(
                at,
                node,
                format!("prolonged({shard}, epoch {epoch}) outside of an allocation of it"),
            );
            return;
        };
        let old = self.allocations[index].epoch;
        if epoch < old {
            self.violation(
                at,
                node,
                format!("prolonged({shard}) lowered the epoch from {old} to {epoch}"),
            );
            return;
        }
        if epoch > old {
            self.issue(at, node, shard, epoch);
        }
        // A rival this allocation only outlived may still hold the shard
        // beyond a split, at an epoch raised since: what the node could know
        // of it is checked once its group settles (`checks::fencing`).
        let losers_epoch = self
            .allocations
            .iter()
            .rev()
            .find(|a| a.node == *loser && a.shard == shard)
            .filter(|_| won)
            .map(|a| a.epoch);
        if let Some(theirs) = losers_epoch.filter(|&e| e >= epoch) {
            self.violation(
                at,
                node,
                format!("prolonged({shard}) against {loser} at epoch {epoch}, not above the loser's {theirs}: a fenced store would still take the loser's writes"),
            );
        }
        let a = &mut self.allocations[index];
        a.epoch = epoch;
        if epoch > old {
            a.epochs.push(epoch);
        }
        if won {
            a.prolonged.push(loser.clone());
        } else {
            a.outlived.push(loser.clone());
        }
    }

    /// A node incarnation was asked to leave.
    pub fn leaving(&mut self, at: Instant, node: &NodeId, incarnation: Incarnation) {
        self.leaves.entry((node.clone(), incarnation)).or_insert(at);
    }

    /// When a node incarnation was asked to leave, if it was.
    pub fn left_at(&self, node: &NodeId, incarnation: Incarnation) -> Option<Instant> {
        self.leaves.get(&(node.clone(), incarnation)).copied()
    }

    /// A node died: whatever it held ends now, with no callback.
    pub fn crashed(&mut self, at: Instant, node: &NodeId, incarnation: Incarnation) {
        if let Some(index) = self.open.remove(&(node.clone(), incarnation)) {
            self.allocations[index].end = Some(Ending::Crashed(at));
        }
    }

    /// Allocations still open.
    pub fn open_allocations(&self) -> impl Iterator<Item = &Allocation> {
        self.open.values().map(|i| &self.allocations[*i])
    }
}

/// What is wrong with the reason `deallocated` gave, if anything: a winner
/// comes exactly with a lost conflict, and "left" only from a node asked to
/// leave. (A node asked to leave may still hear another reason: the call
/// can have been decided before the request, and run after it.)
fn wrong_reason(winner: Option<&NodeId>, reason: ReleaseReason, leaving: bool) -> Option<String> {
    match (winner, reason) {
        (Some(_), ReleaseReason::LostConflict) => None,
        (Some(w), other) => Some(format!("winner {w} named, but the reason is {other}")),
        (None, ReleaseReason::LostConflict) => Some("a lost conflict with no winner".into()),
        (None, ReleaseReason::Left) if !leaving => {
            Some("left, but it was not asked to leave".into())
        }
        (None, ReleaseReason::Shutdown) => Some("shutdown, but nothing shut it down".into()),
        (None, _) => None,
    }
}
