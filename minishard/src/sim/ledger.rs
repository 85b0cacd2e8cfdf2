//! What the simulated applications were told, checked as it happens.
//!
//! Every callback a node's application receives goes through here; the ledger
//! keeps each allocation's life (`allocated` → `score`/`prolonged`* →
//! `deallocated`) and records a violation the moment the discipline of
//! docs/design.md section 3 breaks.

use std::collections::BTreeMap;

use crate::core::{Call, Epoch, Health, Incarnation, Instant, NodeId, Outcome, Role, Shard};

/// How an allocation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// `deallocated` was called, with this winner.
    Deallocated {
        /// When the application was told.
        at: Instant,
        /// The winner, if it lost a conflict.
        winner: Option<NodeId>,
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
    /// The epoch.
    pub epoch: Epoch,
    /// When `allocated` was called.
    pub start: Instant,
    /// When it ended, if it did.
    pub end: Option<Ending>,
    /// Every score the application returned, in order.
    pub scores: Vec<i64>,
    /// Every `prolonged` loser, in order.
    pub prolonged: Vec<NodeId>,
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
                let previous = self.allocations.iter().rev().find(|a| a.shard == *shard);
                if previous.is_some_and(|p| !matches!(p.end, Some(Ending::Deallocated { .. }))) {
                    self.failovers += 1;
                }
                self.allocations.push(Allocation {
                    node: node.clone(),
                    incarnation,
                    shard: *shard,
                    epoch: *epoch,
                    start: at,
                    end: None,
                    scores: Vec::new(),
                    prolonged: Vec::new(),
                });
                self.open.insert(key, self.allocations.len() - 1);
            }
            Call::Score { shard, epoch } | Call::Prolonged { shard, epoch, .. } => {
                let name = call.name();
                match open.map(|i| &mut self.allocations[i]) {
                    Some(a) if a.shard == *shard && a.epoch == *epoch => {
                        if let (Call::Score { .. }, Some(score)) = (call, score) {
                            a.scores.push(score);
                        }
                        if let Call::Prolonged { loser, .. } = call {
                            a.prolonged.push(loser.clone());
                        }
                    }
                    _ => self.violation(
                        at,
                        node,
                        format!("{name}({shard}, epoch {epoch}) outside of that allocation"),
                    ),
                }
            }
            Call::Deallocated {
                shard,
                epoch,
                winner,
            } => match open.map(|i| &mut self.allocations[i]) {
                Some(a) if a.shard == *shard && a.epoch == *epoch => {
                    a.end = Some(Ending::Deallocated {
                        at,
                        winner: winner.clone(),
                    });
                    self.open.remove(&key);
                }
                _ => self.violation(
                    at,
                    node,
                    format!("deallocated({shard}, epoch {epoch}) without that allocation"),
                ),
            },
            Call::StatusChanged { old, new } => {
                self.health_changes.push((at, node.clone(), *old, *new));
            }
            Call::Nodes => {}
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
