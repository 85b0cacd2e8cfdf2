//! The manager: this node's allocation lifecycle (DESIGN.md 6.2 - 6.4).
//!
//! Standby → claiming (announced, `allocated` running) → active →
//! releasing (`deallocated` running) → standby. A node holds one allocation at
//! most, and a shard stays reserved in its record until `deallocated` has
//! returned, so the next owner's `allocated` never overlaps it.

use std::collections::{BTreeSet, HashSet};

use super::conflict::{self, Episode};
use super::record::{Ack, Claim, Epoch, Holding, ScoreOffer, Shard, Yield};
use super::snapshot::LocalState;
use super::time::Instant;
use super::view::Liveness;
use super::{Action, Call, CallId, Core, Health, NodeId, Outcome, Role};

/// What happens once a `deallocated` has returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum After {
    /// Back to the pool.
    Standby,
    /// The node is leaving: publish that, then close.
    Leave,
}

/// A release decided while `allocated` was still running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PendingRelease {
    lost: Option<Yield>,
    after: After,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Local {
    /// Not taking shards; a member backing off waits for `retry_at`.
    Idle {
        retry_at: Option<Instant>,
    },
    Standby,
    Claiming {
        shard: Shard,
        epoch: Epoch,
        call: CallId,
        release: Option<PendingRelease>,
    },
    Active {
        shard: Shard,
        epoch: Epoch,
        /// Losses already told to the application as `prolonged`: the
        /// losers' claims (a restarted loser may reuse an epoch).
        prolonged: BTreeSet<Claim>,
    },
    /// Lost a conflict and published it; `deallocated(winner)` waits until
    /// the winner acknowledges, so the winner's `prolonged` is certain.
    Yielding {
        shard: Shard,
        epoch: Epoch,
        lost: Yield,
        prolonged: BTreeSet<Claim>,
    },
    Releasing {
        shard: Shard,
        epoch: Epoch,
        call: CallId,
        after: After,
    },
    Left,
}

impl Local {
    /// What this state publishes.
    pub(super) fn holding(&self) -> Holding {
        match *self {
            Local::Idle { .. } => Holding::Idle,
            Local::Standby => Holding::Standby,
            Local::Claiming {
                shard,
                epoch,
                release: None,
                ..
            } => Holding::Claiming { shard, epoch },
            Local::Yielding { shard, epoch, .. } => Holding::Yielding { shard, epoch },
            Local::Claiming { shard, epoch, .. } | Local::Releasing { shard, epoch, .. } => {
                Holding::Releasing { shard, epoch }
            }
            Local::Active { shard, epoch, .. } => Holding::Active { shard, epoch },
            Local::Left => Holding::Left,
        }
    }

    /// What lookups report about this node.
    pub(super) fn state(&self) -> LocalState {
        match *self {
            Local::Active { shard, epoch, .. } | Local::Yielding { shard, epoch, .. } => {
                LocalState::Allocated { shard, epoch }
            }
            Local::Standby | Local::Claiming { .. } => LocalState::Standby,
            Local::Idle { .. } | Local::Releasing { .. } | Local::Left => LocalState::Idle,
        }
    }

    pub(super) fn retry_at(&self) -> Option<Instant> {
        match *self {
            Local::Idle { retry_at } => retry_at,
            _ => None,
        }
    }
}

impl Core {
    /// Applies every manager rule to the current picture.
    pub(super) fn manage(&mut self, now: Instant) {
        if self.leaving {
            self.leave_step(now);
            return;
        }
        let can_hold = self.am_member() && self.watcher.health() != Health::Degraded;
        match &self.local {
            Local::Claiming { .. } | Local::Active { .. } | Local::Yielding { .. } if !can_hold => {
                // DESIGN.md 5: a degraded node holds no shard.
                self.release(now, After::Standby);
            }
            Local::Idle { retry_at } if can_hold && retry_at.is_none_or(|at| now >= at) => {
                self.local = Local::Standby;
                // Peers must see this node on standby before it claims, or
                // they pair shards without it and race it: a new pairing
                // starts its settle now.
                self.paired = None;
            }
            Local::Standby if !can_hold => self.local = Local::Idle { retry_at: None },
            _ => {}
        }
        self.finish_yield(now);
        self.resolve_conflict(now);
        self.tell_prolonged();
        self.try_claim(now);
    }

    fn leave_step(&mut self, now: Instant) {
        self.episode = None;
        match &mut self.local {
            Local::Idle { .. } | Local::Standby => self.finish_leave(now),
            Local::Claiming { release, .. } => match release {
                Some(pending) => pending.after = After::Leave,
                None => {
                    *release = Some(PendingRelease {
                        lost: None,
                        after: After::Leave,
                    })
                }
            },
            Local::Releasing { after, .. } => *after = After::Leave,
            Local::Active { .. } | Local::Yielding { .. } => self.release(now, After::Leave),
            Local::Left => {}
        }
    }

    fn finish_leave(&mut self, now: Instant) {
        self.local = Local::Left;
        // Peers take the shard at once on seeing this (DESIGN.md 6.4).
        self.sync_record(now);
        self.publish_snapshot();
        self.closed = true;
        if self.timer.take().is_some() {
            self.actions.push_back(Action::CancelTimer);
        }
        self.actions.push_back(Action::Close);
    }

    /// Gives up the shard this node holds or claims, with no winner (it is
    /// degraded, leaving or no longer a member) — or, if it already yielded,
    /// to the winner it named: that promise stands.
    fn release(&mut self, now: Instant, after: After) {
        match &mut self.local {
            Local::Claiming { release, .. } => {
                // `allocated` is still running: `deallocated` follows it.
                match release {
                    Some(pending) => pending.after = pending.after.max(after),
                    None => *release = Some(PendingRelease { lost: None, after }),
                }
            }
            Local::Active { shard, epoch, .. } => {
                let (shard, epoch) = (*shard, *epoch);
                self.start_deallocated(shard, epoch, None, after);
            }
            Local::Yielding {
                shard, epoch, lost, ..
            } => {
                let (shard, epoch, winner) = (*shard, *epoch, lost.winner.node.clone());
                self.start_deallocated(shard, epoch, Some(winner), after);
            }
            _ => return,
        }
        self.episode = None;
        self.sync_record(now);
    }

    /// This node lost a conflict: it publishes whom it yields to and waits
    /// for the winner's acknowledgement ([`Core::finish_yield`]).
    fn yield_to(&mut self, now: Instant, lost: Yield) {
        match &mut self.local {
            Local::Claiming { release, .. } => {
                // Published once `allocated` has returned: a claim that fails
                // yields nothing, and its winner must not hear `prolonged`.
                if release.is_none() {
                    *release = Some(PendingRelease {
                        lost: Some(lost),
                        after: After::Standby,
                    });
                }
            }
            Local::Active {
                shard,
                epoch,
                prolonged,
            } => {
                let (shard, epoch, prolonged) = (*shard, *epoch, std::mem::take(prolonged));
                self.last_yield = Some(lost.clone());
                self.local = Local::Yielding {
                    shard,
                    epoch,
                    lost,
                    prolonged,
                };
            }
            _ => return,
        }
        self.episode = None;
        self.sync_record(now);
    }

    /// Ends a yield: `deallocated(winner)` once the winner acknowledged it
    /// (or is gone for good); back into the conflict if the winner's current
    /// record shows it moved on without acknowledging (it lost in turn).
    fn finish_yield(&mut self, now: Instant) {
        let Local::Yielding {
            shard, epoch, lost, ..
        } = &self.local
        else {
            return;
        };
        let (shard, epoch, lost) = (*shard, *epoch, lost.clone());
        let mine = Claim {
            node: self.config.me.clone(),
            incarnation: self.incarnation,
            epoch,
        };
        let winner = self
            .view
            .record(&lost.winner.node)
            .filter(|r| r.incarnation == lost.winner.incarnation);
        if winner.is_some_and(|r| r.acknowledged.contains(&mine)) {
            self.start_deallocated(shard, epoch, Some(lost.winner.node), After::Standby);
            self.sync_record(now);
            return;
        }
        let restarted = self
            .view
            .is_retired(&lost.winner.node, lost.winner.incarnation);
        if restarted || !self.view.liveness(&lost.winner.node).present() {
            // The winner is gone past its grace, or restarted (which voids
            // its claim at once): it may have acknowledged unseen. The
            // promise stands.
            self.start_deallocated(shard, epoch, Some(lost.winner.node), After::Standby);
            self.sync_record(now);
            return;
        }
        // A current record showing the winner no longer holds that claim —
        // it gave it up for good, not merely yields, which it may take back —
        // proves it never will acknowledge.
        let holds = |h: Holding| match h {
            Holding::Claiming { shard: s, epoch: e }
            | Holding::Active { shard: s, epoch: e }
            | Holding::Yielding { shard: s, epoch: e } => (s, e) == (shard, lost.winner.epoch),
            _ => false,
        };
        let moved_on =
            self.view.is_fresh(&lost.winner.node) && winner.is_some_and(|r| !holds(r.holding));
        if moved_on {
            tracing::info!(
                shard,
                winner = %lost.winner.node,
                "the winner moved on before acknowledging: the conflict resumes"
            );
            let Local::Yielding { prolonged, .. } = &mut self.local else {
                return;
            };
            let prolonged = std::mem::take(prolonged);
            self.local = Local::Active {
                shard,
                epoch,
                prolonged,
            };
            self.last_yield = None;
            self.sync_record(now);
        }
    }

    /// Tells the application its allocation ended.
    fn start_deallocated(
        &mut self,
        shard: Shard,
        epoch: Epoch,
        winner: Option<NodeId>,
        after: After,
    ) {
        self.counters.deallocations += 1;
        let call = self.call(Call::Deallocated {
            shard,
            epoch,
            winner,
        });
        self.local = Local::Releasing {
            shard,
            epoch,
            call,
            after,
        };
    }

    /// Claims the free shard paired with this node, once that pairing has
    /// held for `settle` (DESIGN.md 6.2).
    fn try_claim(&mut self, now: Instant) {
        let shard = self.paired_shard(now);
        if shard != self.paired {
            self.paired = shard;
            self.paired_since = now;
        }
        if let Some(shard) = self.paired {
            if now >= self.paired_since + self.config.timings.settle {
                self.claim(now, shard);
            }
        }
    }

    /// The free shard the deterministic pairing gives this node, if it is
    /// on standby and may claim at all.
    fn paired_shard(&self, now: Instant) -> Option<Shard> {
        if self.local != Local::Standby {
            return None;
        }
        // Before its first claim a node waits to meet every member (one
        // that left counts as met), or a heartbeat timeout at most.
        let everyone_met = self.members.iter().all(|m| {
            *m == self.config.me
                || self.view.is_up(m)
                || self
                    .view
                    .record(m)
                    .is_some_and(|r| r.holding == Holding::Left)
        });
        if now < self.claims_from && !everyone_met {
            return None;
        }
        // A peer whose record has not arrived yet may hold anything.
        let unheard = |id: &NodeId| !self.view.is_fresh(id) && self.is_member(id);
        if self.view.up().any(|(id, _)| unheard(id)) {
            return None;
        }
        let reserved: HashSet<Shard> = self
            .view
            .present_records()
            .filter(|(r, _)| self.is_member(&r.node))
            .filter_map(|(r, _)| r.holding.reserved().map(|(shard, _)| shard))
            .collect();
        let free = (0..self.config.shard_count).filter(|s| !reserved.contains(s));
        // Standby members this node can reach or that a peer it sees can.
        let mut standbys: Vec<&NodeId> = self
            .view
            .present_records()
            .filter(|(r, liveness)| {
                matches!(liveness, Liveness::Up | Liveness::Unreachable)
                    && r.holding == Holding::Standby
                    && r.role == Role::Member
                    && self.is_member(&r.node)
            })
            .map(|(r, _)| &r.node)
            .collect();
        standbys.push(&self.config.me);
        standbys.sort();
        let position = standbys.iter().position(|n| **n == self.config.me);
        position.and_then(|p| free.into_iter().nth(p))
    }

    fn claim(&mut self, now: Instant, shard: Shard) {
        // Honest epochs grow by one per allocation and never get near the
        // top; only a peer announcing 2^64-1 brings one there (found by the
        // core_messages fuzz target). Claiming at the same epoch again would
        // break fencing, so the shard stays unclaimed, and the log says why.
        let Some(epoch) = self.epochs[shard as usize].checked_add(1) else {
            tracing::warn!(
                shard,
                "not claiming: a peer announced the largest possible epoch for this shard, so no claim could be fenced above it"
            );
            return;
        };
        self.epochs[shard as usize] = epoch;
        let call = self.next_call_id();
        self.local = Local::Claiming {
            shard,
            epoch,
            call,
            release: None,
        };
        tracing::debug!(shard, epoch, "claiming");
        // The claim goes out to every peer before `allocated` runs.
        self.sync_record(now);
        self.actions.push_back(Action::Call {
            id: call,
            call: Call::Allocated { shard, epoch },
        });
    }

    /// The rivals of this node's claim on `shard` that take part in the
    /// conflict (connected, or reachable through a peer), each with its
    /// published offer for that claim, if any.
    fn rivals(&self, shard: Shard) -> Vec<(Claim, Option<ScoreOffer>)> {
        self.view
            .present_records()
            .filter(|(r, liveness)| {
                matches!(liveness, Liveness::Up | Liveness::Unreachable) && self.is_member(&r.node)
            })
            // A record from before a lost connection is not a claim to
            // contend with until a current copy confirms it.
            .filter(|(r, _)| self.view.is_fresh(&r.node))
            .filter_map(|(r, _)| {
                let (s, epoch) = r.holding.contending()?;
                (s == shard).then(|| {
                    let offer = r
                        .offer
                        .clone()
                        .filter(|o| o.shard == shard && o.epoch == epoch);
                    let claim = Claim {
                        node: r.node.clone(),
                        incarnation: r.incarnation,
                        epoch,
                    };
                    (claim, offer)
                })
            })
            .collect()
    }

    /// Runs this node's side of a conflict over its shard (DESIGN.md 6.3).
    fn resolve_conflict(&mut self, now: Instant) {
        let Some((shard, epoch)) = self.local.holding().contending() else {
            self.episode = None;
            return;
        };
        let rivals = self.rivals(shard);
        let quiet = self.config.timings.heartbeat_timeout;
        let current = self
            .episode
            .as_mut()
            .filter(|e| e.shard == shard && e.epoch == epoch);
        if rivals.is_empty() {
            // Once alone for a while, the episode is over: the next rival
            // starts a new one, with a fresh score.
            if let Some(e) = current {
                e.alone_since.get_or_insert(now);
            }
            return;
        }
        let ongoing =
            current.is_some_and(|e| e.alone_since.take().is_none_or(|since| now < since + quiet));
        let deadline = self.config.timings.score_deadline;
        if !ongoing {
            self.episodes += 1;
            self.episode = Some(Episode::new(self.episodes, shard, epoch, now));
            tracing::debug!(shard, epoch, ?rivals, "a conflict episode starts");
        }
        let episode = self.episode.as_ref().expect("set above");
        if episode.score.is_none() {
            if now >= episode.started + deadline {
                // An owner that cannot produce a score in time ranks last.
                tracing::warn!(shard, "score was not ready in time: this node ranks last");
                self.episode.as_mut().expect("set above").score = Some(None);
                self.counters.failed_callbacks += 1;
            } else if episode.call.is_none() && matches!(self.local, Local::Active { .. }) {
                let id = self.call(Call::Score { shard, epoch });
                self.episode.as_mut().expect("set above").call = Some(id);
            }
        }
        let episode = self.episode.as_ref().expect("set above");
        let Some(my_score) = episode.score else {
            return;
        };
        let mut acks: Vec<Ack> = rivals
            .iter()
            .filter_map(|(claim, offer)| {
                offer.as_ref().map(|o| Ack {
                    node: claim.node.clone(),
                    epoch: claim.epoch,
                    episode: o.episode,
                })
            })
            .collect();
        acks.sort();
        let me_now = Ack {
            node: self.config.me.clone(),
            epoch,
            episode: episode.number,
        };
        // A rival's score counts only if it was made knowing this episode.
        let usable: Vec<(&Claim, Option<i64>)> = rivals
            .iter()
            .filter_map(|(claim, offer)| {
                offer
                    .as_ref()
                    .filter(|o| o.acks.contains(&me_now))
                    .map(|o| (claim, o.score))
            })
            .collect();
        let waited_enough = now >= episode.started + deadline * 2;
        let all_in = usable.len() == rivals.len();
        self.last_offer = Some(ScoreOffer {
            shard,
            epoch,
            episode: episode.number,
            score: my_score,
            acks,
        });
        if !all_in && !waited_enough {
            return;
        }
        let mine = Claim {
            node: self.config.me.clone(),
            incarnation: self.incarnation,
            epoch,
        };
        let Some((winner, winner_score)) = conflict::best(
            std::iter::once((&mine, my_score)).chain(usable.iter().copied()),
        )
        .map(|w| {
            (
                w.clone(),
                usable
                    .iter()
                    .find(|(c, _)| *c == w)
                    .map_or(my_score, |(_, s)| *s),
            )
        }) else {
            return;
        };
        if winner == mine {
            if let Some(e) = &mut self.episode {
                if !std::mem::replace(&mut e.won, true) {
                    self.counters.conflicts_resolved += 1;
                    tracing::info!(
                        shard,
                        rivals = rivals.len(),
                        "this node ranks first in a conflict"
                    );
                }
            }
            return;
        }
        self.counters.conflicts_resolved += 1;
        tracing::info!(shard, winner = %winner.node, "lost a conflict");
        let lost = Yield {
            shard,
            epoch,
            winner,
            winner_score,
            own_score: my_score,
        };
        self.yield_to(now, lost);
    }

    /// Tells the application `prolonged(loser)` once for each loser that
    /// published it yielded this allocation's shard to this node.
    fn tell_prolonged(&mut self) {
        let Local::Active { shard, epoch, .. } = self.local else {
            return;
        };
        let mine = Claim {
            node: self.config.me.clone(),
            incarnation: self.incarnation,
            epoch,
        };
        let losers: Vec<Claim> = self
            .view
            .present_records()
            .filter_map(|(r, _)| r.yielded.as_ref().map(|y| (r, y)))
            .filter(|(_, y)| y.shard == shard && y.winner == mine)
            .map(|(r, y)| Claim {
                node: r.node.clone(),
                incarnation: r.incarnation,
                epoch: y.epoch,
            })
            .collect();
        for loser in losers {
            let Local::Active { prolonged, .. } = &mut self.local else {
                return;
            };
            if prolonged.insert(loser.clone()) {
                self.acknowledged.push(loser.clone());
                self.call(Call::Prolonged {
                    shard,
                    epoch,
                    loser: loser.node,
                });
            }
        }
    }

    /// A callback finished.
    pub(super) fn on_call_done(&mut self, now: Instant, id: CallId, outcome: Outcome) {
        if self.poll_call == Some(id) {
            self.poll_call = None;
            match outcome {
                Outcome::Members(list) => self.on_members(list),
                other => {
                    self.counters.failed_callbacks += 1;
                    tracing::warn!(?other, "nodes callback failed: keeping the member list");
                }
            }
            return;
        }
        match &mut self.local {
            Local::Claiming {
                shard,
                epoch,
                call,
                release,
            } if *call == id => {
                let (shard, epoch, release) = (*shard, *epoch, release.take());
                if let Outcome::Failed(reason) = &outcome {
                    self.counters.failed_callbacks += 1;
                    tracing::warn!(shard, %reason, "allocated failed: releasing the shard and backing off");
                    let retry_at = now + self.config.timings.allocation_retry;
                    self.local = Local::Idle {
                        retry_at: Some(retry_at),
                    };
                    return;
                }
                self.counters.allocations += 1;
                self.acknowledged.clear();
                self.local = Local::Active {
                    shard,
                    epoch,
                    prolonged: BTreeSet::new(),
                };
                match release {
                    Some(PendingRelease {
                        lost: Some(lost),
                        after: After::Standby,
                    }) => self.yield_to(now, lost),
                    Some(PendingRelease { lost, after }) => {
                        let winner = lost.map(|l| l.winner.node);
                        self.start_deallocated(shard, epoch, winner, after);
                    }
                    None => {}
                }
                return;
            }
            Local::Releasing { call, after, .. } if *call == id => {
                // Back to the pool; `manage` makes it standby or finishes a leave.
                self.leaving |= *after == After::Leave;
                self.local = Local::Idle { retry_at: None };
                return;
            }
            _ => {}
        }
        if let Some(episode) = self.episode.as_mut().filter(|e| e.call == Some(id)) {
            episode.call = None;
            if episode.score.is_none() {
                episode.score = Some(match outcome {
                    Outcome::Score(score) => Some(score),
                    other => {
                        self.counters.failed_callbacks += 1;
                        tracing::warn!(
                            shard = episode.shard,
                            ?other,
                            "score failed: this node ranks last"
                        );
                        None
                    }
                });
            }
            return;
        }
        if let Outcome::Failed(reason) = outcome {
            // `prolonged` and `status_changed` failures change nothing.
            self.counters.failed_callbacks += 1;
            tracing::warn!(%reason, "a callback failed");
        }
    }
}
