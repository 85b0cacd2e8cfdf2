//! The allocation lifecycle: this node's one allocation at most
//! (docs/design.md 6.2 - 6.4, 6.6).
//!
//! Standby → claiming (announced, `allocated` running) → active →
//! releasing (`deallocated` running) → standby; a conflict lost makes an
//! active allocation *yielding* until its winner acknowledges. A shard stays
//! reserved in this node's record until `deallocated` has returned, so the
//! next owner's `allocated` never overlaps it.
//!
//! Owns: the lifecycle state, the pairing that decides which free shard to
//! claim, the largest epoch seen for each shard, the losers acknowledged,
//! and the conflict this node published it lost. Reads the peer view and
//! the membership; never touches a connection.

use std::collections::{BTreeSet, HashSet};

use super::config::{CoreConfig, Quorum, Timings};
use super::events::{Call, CallId, Outbox, Outcome, ReleaseReason};
use super::ids::{Incarnation, NodeId, Role};
use super::membership::Membership;
use super::record::{epoch_tag, next_epoch, Claim, Epoch, Holding, Record, Shard, Yield};
use super::snapshot::LocalState;
use super::time::Instant;
use super::view::{Liveness, PeerView};

/// What a rule of the lifecycle may read.
pub(super) struct Ctx<'a> {
    pub now: Instant,
    pub me: &'a NodeId,
    pub incarnation: Incarnation,
    /// The low bits of this node's epochs.
    pub tag: u32,
    pub timings: &'a Timings,
    pub shard_count: u32,
    pub quorum: Quorum,
    pub view: &'a PeerView,
    pub members: &'a Membership,
}

impl<'a> Ctx<'a> {
    /// What the rules may read of a core, at `now`.
    pub fn of(
        now: Instant,
        config: &'a CoreConfig,
        incarnation: Incarnation,
        view: &'a PeerView,
        members: &'a Membership,
    ) -> Ctx<'a> {
        Ctx {
            now,
            me: &config.me,
            incarnation,
            tag: epoch_tag(&config.me, incarnation),
            timings: &config.timings,
            shard_count: config.shard_count,
            quorum: config.quorum,
            view,
            members,
        }
    }

    fn claim(&self, epoch: Epoch) -> Claim {
        Claim {
            node: self.me.clone(),
            incarnation: self.incarnation,
            epoch,
        }
    }

    fn is_member(&self, node: &NodeId) -> bool {
        self.members.is_member(node, self.view)
    }
}

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
struct PendingRelease {
    lost: Option<Yield>,
    reason: ReleaseReason,
    after: After,
}

/// What an allocation knows of the conflicts it won.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Wins {
    /// Losses acknowledged: the losers' claims (a restarted loser may
    /// reuse an epoch).
    acknowledged: BTreeSet<Claim>,
    /// Of those, the ones the application has not been told yet: it is,
    /// once no rival contends any more, with the epoch the win gives.
    untold: Vec<Claim>,
    /// The epochs this allocation had before a win raised it: a late loser
    /// may have yielded to one of them.
    former: Vec<Epoch>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Local {
    /// Not taking shards; a member backing off waits for `retry_at`.
    Idle {
        retry_at: Option<Instant>,
    },
    Standby,
    /// Strict mode: a claim announced, waiting out [`Timings::proposal_window`]
    /// before its `allocated` runs (docs/design.md 6.7).
    Proposing {
        shard: Shard,
        epoch: Epoch,
        since: Instant,
    },
    Claiming {
        shard: Shard,
        epoch: Epoch,
        call: CallId,
        release: Option<PendingRelease>,
    },
    Active {
        shard: Shard,
        epoch: Epoch,
        wins: Wins,
    },
    /// Lost a conflict and published it; `deallocated(winner)` waits until
    /// the winner acknowledges, so the winner's `prolonged` is certain.
    Yielding {
        shard: Shard,
        epoch: Epoch,
        lost: Yield,
        wins: Wins,
    },
    Releasing {
        shard: Shard,
        epoch: Epoch,
        call: CallId,
        after: After,
    },
    Left,
}

/// This node's allocation lifecycle.
#[derive(Debug)]
pub(super) struct Allocation {
    local: Local,
    /// The free shard this standby node's pairing gives it, and since when
    /// (docs/design.md 6.2): it claims once that has held for `settle`. A peer
    /// claiming the shard paired with it leaves this pairing as it is, so a
    /// split that frees several shards does not make their claims queue.
    paired: Option<Shard>,
    paired_since: Instant,
    /// Held shards this node would be paired with if their holder let go
    /// of them alone, with the holder, and since when. When the holder
    /// leaves (its record says so) and this node sees every member, the
    /// pairing has held since then: every standby computed the same
    /// successor from the same records, and a successor that has held it
    /// for `settle` claims with nothing left to settle (docs/design.md 6.4).
    successions: Vec<(Shard, NodeId, Instant)>,
    /// Claims wait until this instant unless every member is connected, so
    /// a node that starts does not claim before it has met its peers.
    claims_from: Instant,
    /// The highest allocation seen of each shard: who held it, at which
    /// epoch. A claim goes above it; an owner that learns of one above its
    /// own (the other side of a healed split) raises its epoch above it.
    highest: Vec<Option<Claim>>,
    /// Losers acknowledged by the current (or latest) allocation.
    acknowledged: Vec<Claim>,
    /// The latest conflict this node lost, as it publishes it; withdrawn
    /// when the conflict turns out void.
    yielded: Option<Yield>,
    /// The allocation this node held last, once `deallocated` started.
    released: Option<(Shard, Epoch)>,
}

impl Allocation {
    pub fn new(now: Instant, shard_count: u32, timings: &Timings) -> Allocation {
        Allocation {
            local: Local::Idle { retry_at: None },
            paired: None,
            paired_since: now,
            successions: Vec::new(),
            claims_from: now + timings.heartbeat_timeout,
            highest: vec![None; shard_count as usize],
            acknowledged: Vec::new(),
            yielded: None,
            released: None,
        }
    }

    /// What this node publishes it holds.
    pub fn holding(&self) -> Holding {
        match self.local {
            Local::Idle { .. } => Holding::Idle,
            Local::Standby => Holding::Standby,
            Local::Proposing { shard, epoch, .. } => Holding::Proposing { shard, epoch },
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
    pub fn state(&self) -> LocalState {
        match self.local {
            Local::Active { shard, epoch, .. } | Local::Yielding { shard, epoch, .. } => {
                LocalState::Allocated { shard, epoch }
            }
            Local::Standby | Local::Proposing { .. } | Local::Claiming { .. } => {
                LocalState::Standby
            }
            Local::Idle { .. } | Local::Releasing { .. } | Local::Left => LocalState::Idle,
        }
    }

    /// Whether `allocated` has returned and no `deallocated` has started.
    pub fn is_active(&self) -> bool {
        matches!(self.local, Local::Active { .. })
    }

    /// The losers this allocation acknowledged, as published.
    pub fn acknowledged(&self) -> &[Claim] {
        &self.acknowledged
    }

    /// The allocation this node held last, as published.
    pub fn released(&self) -> Option<(Shard, Epoch)> {
        self.released
    }

    /// The conflict this node lost, as published.
    pub fn yielded(&self) -> Option<&Yield> {
        self.yielded.as_ref()
    }

    /// The highest allocation seen of each shard.
    pub fn highest(&self) -> &[Option<Claim>] {
        &self.highest
    }

    fn seen(&self, shard: Shard) -> Epoch {
        self.highest
            .get(shard as usize)
            .and_then(|c| c.as_ref())
            .map_or(0, |c| c.epoch)
    }

    /// The instants a lifecycle rule waits for.
    pub fn next_deadline(&self, now: Instant, timings: &Timings) -> Option<Instant> {
        let retry = match self.local {
            Local::Idle { retry_at } => retry_at,
            Local::Proposing { since, .. } => Some(since + timings.proposal_window()),
            _ => None,
        };
        let claims =
            (self.local == Local::Standby && self.claims_from > now).then_some(self.claims_from);
        [
            retry,
            claims,
            self.paired.map(|_| self.paired_since + timings.settle),
        ]
        .into_iter()
        .flatten()
        .filter(|at| *at > now)
        .min()
    }

    /// This node stopped being degraded: like a node that starts, it has
    /// often just been connected to a few peers, and the owners it has not
    /// met yet may hold the shards it would pair with. It waits to meet
    /// every member, or a heartbeat timeout at most, before it claims.
    pub fn met_too_few_until(&mut self, until: Instant) {
        self.claims_from = self.claims_from.max(until);
    }

    /// The shard count became known (an observer learns it from a member).
    pub fn resize(&mut self, shard_count: u32) {
        self.highest = vec![None; shard_count as usize];
    }

    /// Any epoch this node has seen counts, even in a record it does not
    /// take, so its own next claim of that shard is above it.
    pub fn note_epochs(&mut self, record: &Record) {
        let claim = |epoch| Claim {
            node: record.node.clone(),
            incarnation: record.incarnation,
            epoch,
        };
        if let Some((shard, epoch)) = record.holding.reserved() {
            self.note(shard, claim(epoch));
        }
        if let Some(offer) = &record.offer {
            self.note(offer.shard, claim(offer.epoch));
        }
        if let Some((shard, epoch)) = record.released {
            self.note(shard, claim(epoch));
        }
        if let Some(lost) = &record.yielded {
            self.note(lost.shard, claim(lost.epoch));
            self.note(lost.shard, lost.winner.clone());
        }
    }

    /// A peer's table of the highest allocation it has seen of each shard;
    /// true if it taught this node of a higher one (which it passes on).
    pub fn merge_highest(&mut self, theirs: &[Option<Claim>]) -> bool {
        let mut learned = false;
        for (shard, claim) in theirs.iter().enumerate().take(self.highest.len()) {
            if let Some(claim) = claim {
                learned |= self.note(shard as Shard, claim.clone());
            }
        }
        learned
    }

    fn note(&mut self, shard: Shard, claim: Claim) -> bool {
        match self.highest.get_mut(shard as usize) {
            Some(highest) if highest.as_ref().is_none_or(|h| claim.epoch > h.epoch) => {
                *highest = Some(claim);
                true
            }
            _ => false,
        }
    }

    /// Holds, gives up or takes shards: `cannot_hold` says why this node
    /// may hold none now, if so (docs/design.md 5, 6.6).
    pub fn adjust(&mut self, ctx: &Ctx<'_>, cannot_hold: Option<ReleaseReason>, out: &mut Outbox) {
        match (&self.local, cannot_hold) {
            (Local::Claiming { .. } | Local::Active { .. } | Local::Yielding { .. }, Some(why)) => {
                self.release(ctx, After::Standby, why, out);
            }
            (Local::Idle { retry_at }, None) if retry_at.is_none_or(|at| ctx.now >= at) => {
                self.local = Local::Standby;
                // Peers must see this node on standby before it claims, or
                // they pair shards without it and race it: a new pairing
                // starts its settle now.
                self.paired = None;
            }
            (Local::Standby, Some(_)) => self.local = Local::Idle { retry_at: None },
            (Local::Proposing { shard, .. }, Some(why)) => {
                // Nothing ran yet: the proposal is withdrawn, no callback.
                tracing::debug!(shard, %why, "the proposal is withdrawn");
                self.local = Local::Idle { retry_at: None };
            }
            _ => {}
        }
    }

    /// One step of leaving: gives the shard up (no winner) and returns true
    /// once nothing is held any more, so the node can publish that it left.
    pub fn leave_step(&mut self, ctx: &Ctx<'_>, why: ReleaseReason, out: &mut Outbox) -> bool {
        match &mut self.local {
            Local::Idle { .. } | Local::Standby | Local::Proposing { .. } => {
                self.local = Local::Left;
                true
            }
            Local::Releasing { after, .. } => {
                *after = After::Leave;
                false
            }
            Local::Claiming { .. } | Local::Active { .. } | Local::Yielding { .. } => {
                self.release(ctx, After::Leave, why, out);
                false
            }
            Local::Left => false,
        }
    }

    /// Gives up the shard this node holds or claims, with no winner (it is
    /// degraded, leaving or no longer a member) — or, if it had yielded and
    /// the winner acknowledged it (or will, from the last record of a node
    /// that leaves), to that winner. Any other yield is withdrawn: the
    /// winner may never learn of it, and must not be named by a loser it
    /// will not hear `prolonged` for (docs/design.md 6.3).
    fn release(&mut self, ctx: &Ctx<'_>, after: After, reason: ReleaseReason, out: &mut Outbox) {
        match &mut self.local {
            Local::Claiming { release, .. } => {
                // `allocated` is still running: `deallocated` follows it.
                // A yield waiting for it was never published: withdrawn.
                match release {
                    Some(pending) if after > pending.after || pending.lost.is_some() => {
                        pending.after = pending.after.max(after);
                        pending.lost = None;
                        pending.reason = reason;
                    }
                    Some(_) => {}
                    None => {
                        *release = Some(PendingRelease {
                            lost: None,
                            reason,
                            after,
                        })
                    }
                }
            }
            Local::Active { .. } => {
                self.tell_untold(ctx, out);
                if let Local::Active { shard, epoch, .. } = self.local {
                    self.start_deallocated(shard, epoch, None, reason, after, out);
                }
            }
            Local::Yielding {
                shard, epoch, lost, ..
            } => {
                let (shard, epoch, lost) = (*shard, *epoch, lost.clone());
                let mine = ctx.claim(epoch);
                // A node that leaves publishes its yield in its last record,
                // which the winner acknowledges from: that promise stands.
                let (winner, reason) = match WinnerNews::of(ctx, &lost, &mine) {
                    WinnerNews::Acknowledged => {
                        (Some(lost.winner.node), ReleaseReason::LostConflict)
                    }
                    WinnerNews::Pending if after == After::Leave => {
                        (Some(lost.winner.node), ReleaseReason::LostConflict)
                    }
                    _ => {
                        self.yielded = None;
                        (None, reason)
                    }
                };
                self.start_deallocated(shard, epoch, winner, reason, after, out);
            }
            _ => {}
        }
    }

    /// This node lost a conflict: it publishes whom it yields to and waits
    /// for the winner's acknowledgement ([`Allocation::finish_yield`]).
    pub fn yield_to(&mut self, ctx: &Ctx<'_>, mut lost: Yield, out: &mut Outbox) {
        // Losers this allocation beat before losing in turn hear of it now.
        if let Some(epoch) = self.tell_untold(ctx, out) {
            lost.epoch = epoch;
        }
        match &mut self.local {
            // Published once `allocated` has returned: a claim that fails
            // yields nothing, and its winner must not hear `prolonged`.
            Local::Claiming { release, .. } if release.is_none() => {
                *release = Some(PendingRelease {
                    lost: Some(lost),
                    reason: ReleaseReason::LostConflict,
                    after: After::Standby,
                });
            }
            Local::Active { shard, epoch, wins } => {
                let (shard, epoch, wins) = (*shard, *epoch, std::mem::take(wins));
                self.yielded = Some(lost.clone());
                self.local = Local::Yielding {
                    shard,
                    epoch,
                    lost,
                    wins,
                };
            }
            _ => {}
        }
    }

    /// Ends a yield (docs/design.md 6.3): `deallocated(winner)` once the winner
    /// acknowledged it; back to active, keeping the shard with no new
    /// allocation, if the winner left or was removed from the member list
    /// without acknowledging (the conflict is void), if it is gone past its
    /// grace or restarted (a lost owner: this node still holds the shard,
    /// and moving it would only move it again), or if its current record
    /// shows it moved on (it lost in turn).
    pub fn finish_yield(&mut self, ctx: &Ctx<'_>, out: &mut Outbox) {
        let Local::Yielding {
            shard, epoch, lost, ..
        } = &self.local
        else {
            return;
        };
        let (shard, epoch, lost) = (*shard, *epoch, lost.clone());
        let mine = ctx.claim(epoch);
        match WinnerNews::of(ctx, &lost, &mine) {
            WinnerNews::Acknowledged => {
                self.start_deallocated(
                    shard,
                    epoch,
                    Some(lost.winner.node),
                    ReleaseReason::LostConflict,
                    After::Standby,
                    out,
                );
            }
            WinnerNews::Voided(why) | WinnerNews::Lost(why) => {
                // The winner's claim may have carried a higher epoch, which
                // a store saw it write at: `settle` raises this node's above
                // it once no rival contends.
                tracing::info!(shard, winner = %lost.winner.node, why, "the yield is withdrawn: this node keeps its shard");
                self.resume(shard, epoch);
            }
            WinnerNews::MovedOn(why) => {
                tracing::info!(shard, winner = %lost.winner.node, why, "the yield is withdrawn: the conflict goes on");
                self.resume(shard, epoch);
            }
            WinnerNews::Pending => {}
        }
    }

    fn resume(&mut self, shard: Shard, epoch: Epoch) {
        let Local::Yielding { wins, .. } = &mut self.local else {
            return;
        };
        let wins = std::mem::take(wins);
        self.local = Local::Active { shard, epoch, wins };
        self.yielded = None;
    }

    /// Raises the allocation's epoch above every epoch seen for its shard
    /// (so above every loser's and every rival's it outlived), and tells the
    /// application with `prolonged`, once per loser.
    fn raise(&mut self, ctx: &Ctx<'_>, losers: Vec<(NodeId, bool)>, out: &mut Outbox) {
        let Local::Active { shard, epoch, wins } = &mut self.local else {
            return;
        };
        let (shard, old) = (*shard, *epoch);
        let seen = self
            .highest
            .get(shard as usize)
            .and_then(|c| c.as_ref())
            .map_or(0, |c| c.epoch)
            .max(old);
        if seen > old {
            match next_epoch(seen, ctx.tag) {
                Some(new) => {
                    wins.former.push(old);
                    *epoch = new;
                    self.highest[shard as usize] = Some(ctx.claim(new));
                    tracing::debug!(shard, old, new, "the allocation's epoch is raised above every other seen");
                }
                None => tracing::warn!(
                    shard,
                    "the epoch cannot be raised: a peer announced the largest possible epoch for this shard"
                ),
            }
        }
        let epoch = *epoch;
        for (loser, won) in losers {
            out.call(Call::Prolonged {
                shard,
                epoch,
                loser,
                won,
            });
        }
    }

    /// Tells the application its allocation ended.
    fn start_deallocated(
        &mut self,
        shard: Shard,
        epoch: Epoch,
        winner: Option<NodeId>,
        reason: ReleaseReason,
        after: After,
        out: &mut Outbox,
    ) {
        out.counters.deallocations += 1;
        self.released = Some((shard, epoch));
        tracing::debug!(shard, epoch, ?winner, %reason, "deallocating");
        let call = out.call(Call::Deallocated {
            shard,
            epoch,
            winner,
            reason,
        });
        self.local = Local::Releasing {
            shard,
            epoch,
            call,
            after,
        };
    }

    /// Claims the free shard paired with this node once that pairing has
    /// held for `settle` (docs/design.md 6.2), and only while this node sees
    /// members enough to keep it (`may_claim`). Returns the `allocated`
    /// callback to ask for once the claim has been published: the claim
    /// goes out to every peer before `allocated` runs.
    pub fn try_claim(
        &mut self,
        ctx: &Ctx<'_>,
        may_claim: bool,
        out: &mut Outbox,
    ) -> Option<(CallId, Call)> {
        if let Local::Proposing { .. } = self.local {
            return self.advance_proposal(ctx, may_claim, out);
        }
        let pairing = self.paired_shard(ctx).filter(|_| may_claim);
        let shard = pairing.as_ref().and_then(|p| p.paired).map(|(s, _)| s);
        if shard != self.paired {
            self.paired = shard;
            // The successor of a holder that left, seen by every member as
            // this node sees them: the pairing has held since then. (A
            // shard freed any other way, or in a partial view, where
            // standbys may disagree, waits `settle` from now.)
            let sees_everyone = pairing.as_ref().is_some_and(|p| p.sees_everyone);
            let left = |holder: &NodeId| {
                ctx.view
                    .record(holder)
                    .is_some_and(|r| r.holding == Holding::Left)
            };
            self.paired_since = self
                .successions
                .iter()
                .find(|(s, holder, _)| Some(*s) == shard && sees_everyone && left(holder))
                .map_or(ctx.now, |(_, _, since)| *since);
        }
        let succeeds = pairing.as_ref().map_or(&[][..], |p| &p.succeeds[..]);
        self.successions
            .retain(|(s, holder, _)| succeeds.iter().any(|(t, h)| t == s && h == holder));
        for (shard, holder) in succeeds {
            if !self
                .successions
                .iter()
                .any(|(s, h, _)| s == shard && h == holder)
            {
                self.successions.push((*shard, holder.clone(), ctx.now));
            }
        }
        let (shard, free) = pairing?.paired?;
        if !free || ctx.now < self.paired_since + ctx.timings.settle {
            return None;
        }
        // Honest epochs grow by one per allocation and never get near the
        // top; only a peer announcing 2^64-1 brings one there (found by the
        // core_messages fuzz target). Claiming at the same epoch again would
        // break fencing, so the shard stays unclaimed, and the log says why.
        let Some(epoch) = next_epoch(self.seen(shard), ctx.tag) else {
            tracing::warn!(
                shard,
                "not claiming: a peer announced the largest possible epoch for this shard, so no claim could be fenced above it"
            );
            return None;
        };
        self.highest[shard as usize] = Some(ctx.claim(epoch));
        if ctx.quorum == Quorum::Majority {
            tracing::debug!(shard, epoch, "proposing");
            self.local = Local::Proposing {
                shard,
                epoch,
                since: ctx.now,
            };
            return None;
        }
        Some(self.start_claim(shard, epoch, out))
    }

    fn start_claim(&mut self, shard: Shard, epoch: Epoch, out: &mut Outbox) -> (CallId, Call) {
        let call = out.next_call_id();
        self.local = Local::Claiming {
            shard,
            epoch,
            call,
            release: None,
        };
        tracing::debug!(shard, epoch, "claiming");
        (call, Call::Allocated { shard, epoch })
    }

    /// Strict mode (docs/design.md 6.7): two standbys whose views differ
    /// for a moment may pair with the same free shard. Each announces its
    /// claim as a proposal and waits [`Timings::proposal_window`]; a proposal that
    /// sees any other reservation of its shard — a claim or allocation, or
    /// a proposal that ranks above it (higher epoch, then smaller address)
    /// — is withdrawn before any callback runs. Two proposals made within a
    /// message's delay of each other both show before either window ends,
    /// so at most one of them goes on to `allocated`.
    fn advance_proposal(
        &mut self,
        ctx: &Ctx<'_>,
        may_claim: bool,
        out: &mut Outbox,
    ) -> Option<(CallId, Call)> {
        let Local::Proposing {
            shard,
            epoch,
            since,
        } = self.local
        else {
            return None;
        };
        let outranks_mine = |node: &NodeId, holding: Holding| match holding {
            Holding::Proposing { shard: s, epoch: e } => {
                s == shard && (e > epoch || (e == epoch && node < ctx.me))
            }
            other => other.reserved().is_some_and(|(s, _)| s == shard),
        };
        let rival = ctx
            .view
            .present_records()
            .filter(|(r, _)| r.role == Role::Member && r.node != *ctx.me)
            .find(|(r, _)| outranks_mine(&r.node, r.holding))
            .map(|(r, _)| r.node.clone());
        if rival.is_some() || !may_claim {
            tracing::debug!(shard, epoch, ?rival, may_claim, "the proposal is withdrawn");
            self.local = Local::Standby;
            self.paired = None;
            return None;
        }
        if ctx.now < since + ctx.timings.proposal_window() {
            return None;
        }
        // A rival proposal withdrawn meanwhile may have announced a higher
        // epoch: the allocation goes above it.
        let epoch = match self.seen(shard) {
            seen if seen > epoch => {
                let Some(raised) = next_epoch(seen, ctx.tag) else {
                    self.local = Local::Standby;
                    return None;
                };
                self.highest[shard as usize] = Some(ctx.claim(raised));
                raised
            }
            _ => epoch,
        };
        Some(self.start_claim(shard, epoch, out))
    }

    /// The shard the deterministic pairing gives this node, if it is on
    /// standby and may claim at all, whether it is free now (not still
    /// reserved to a suspect holder), and the held shards it would succeed.
    fn paired_shard(&self, ctx: &Ctx<'_>) -> Option<Pairing> {
        if self.local != Local::Standby {
            return None;
        }
        let view = ctx.view;
        // Before its first claim a node waits to meet every member (one
        // that left counts as met), or a heartbeat timeout at most.
        let everyone_met = ctx.members.list().iter().all(|m| {
            m == ctx.me
                || view.is_up(m)
                || view.record(m).is_some_and(|r| r.holding == Holding::Left)
        });
        if ctx.now < self.claims_from && !everyone_met {
            return None;
        }
        // A peer whose record has not arrived yet may hold anything (one
        // whose record says it left, its connection not closed yet, holds
        // nothing).
        let left = |id: &NodeId| view.record(id).is_some_and(|r| r.holding == Holding::Left);
        let unheard = |id: &NodeId| !view.is_fresh(id) && ctx.is_member(id) && !left(id);
        if view.up().any(|(id, _)| unheard(id)) {
            return None;
        }
        // The pairing counts as free every shard no holder this node hears
        // from holds — also one whose holder is suspect, whose grace is
        // still running: nodes that noticed the loss agree on that set for
        // the whole grace, while the instant the grace ends differs from
        // node to node by how each heard of the loss. Paired early, each
        // standby claims its own shard when its grace ends, with nothing
        // left to settle and no race. A member removed from the list keeps
        // its shard reserved like any holder (docs/design.md 6.6).
        let mut held: HashSet<Shard> = HashSet::new();
        let mut pending: HashSet<Shard> = HashSet::new();
        let mut holders: Vec<(Shard, &NodeId)> = Vec::new();
        for (record, liveness) in view.present_records() {
            let Some((shard, _)) = record.holding.reserved() else {
                continue;
            };
            if record.role != Role::Member {
                continue;
            }
            if matches!(liveness, Liveness::Up | Liveness::Unreachable) {
                held.insert(shard);
                holders.push((shard, &record.node));
            } else {
                pending.insert(shard);
            }
        }
        let free: Vec<Shard> = (0..ctx.shard_count).filter(|s| !held.contains(s)).collect();
        // Standby members this node can reach, directly or by a path.
        let mut standbys: Vec<&NodeId> = view
            .present_records()
            .filter(|(r, liveness)| {
                matches!(liveness, Liveness::Up | Liveness::Unreachable)
                    && r.holding == Holding::Standby
                    && r.role == Role::Member
                    && ctx.is_member(&r.node)
            })
            .map(|(r, _)| &r.node)
            .collect();
        standbys.push(ctx.me);
        standbys.sort();
        let position = standbys.iter().position(|n| *n == ctx.me)?;
        // A held shard freed alone would take its place among the free
        // ones; this node succeeds the sole holders of those it would then
        // be paired with.
        let succeeds: Vec<(Shard, NodeId)> = holders
            .iter()
            .filter(|(shard, _)| holders.iter().filter(|(s, _)| s == shard).count() == 1)
            .filter(|(shard, _)| free.iter().filter(|s| *s < shard).count() == position)
            .map(|(shard, holder)| (*shard, (*holder).clone()))
            .collect();
        let paired = free
            .get(position)
            .map(|&shard| (shard, !pending.contains(&shard)));
        let sees_everyone = everyone_met && view.up().all(|(id, _)| view.is_fresh(id) || left(id));
        Some(Pairing {
            paired,
            succeeds,
            sees_everyone,
        })
    }

    /// Acknowledges, in this node's record, each loser that published it
    /// yielded this allocation's shard to this node — also a loser that left
    /// right after yielding, whose last record says so, and one that yielded
    /// to an epoch this allocation had before a win raised it. A loser gives
    /// its shard up once it sees itself acknowledged (docs/design.md 6.3).
    pub fn acknowledge_losers(&mut self, ctx: &Ctx<'_>) {
        let Local::Active { shard, epoch, wins } = &mut self.local else {
            return;
        };
        let shard = *shard;
        let mine = |y: &Yield| {
            y.shard == shard
                && y.winner.node == *ctx.me
                && y.winner.incarnation == ctx.incarnation
                && (y.winner.epoch == *epoch || wins.former.contains(&y.winner.epoch))
        };
        let losers: Vec<Claim> = ctx
            .view
            .present_records()
            .map(|(r, _)| r)
            .chain(ctx.view.left_records())
            .filter_map(|r| r.yielded.as_ref().map(|y| (r, y)))
            .filter(|(_, y)| mine(y))
            .map(|(r, y)| Claim {
                node: r.node.clone(),
                incarnation: r.incarnation,
                epoch: y.epoch,
            })
            .collect();
        for loser in losers {
            if wins.acknowledged.insert(loser.clone()) {
                self.acknowledged.push(loser.clone());
                wins.untold.push(loser);
            }
        }
    }

    /// An allocation that ends, or loses in turn, before its wins settled
    /// still tells the application of each loser that gave up to it (the
    /// losers have called `deallocated(winner)`), with an epoch above
    /// theirs; returns the epoch if there were any.
    fn tell_untold(&mut self, ctx: &Ctx<'_>, out: &mut Outbox) -> Option<Epoch> {
        let Local::Active { wins, .. } = &mut self.local else {
            return None;
        };
        if wins.untold.is_empty() {
            return None;
        }
        let untold = std::mem::take(&mut wins.untold)
            .into_iter()
            .map(|loser| (loser.node, true))
            .collect();
        self.raise(ctx, untold, out);
        match self.local {
            Local::Active { epoch, .. } => Some(epoch),
            _ => None,
        }
    }

    /// Once no rival contends any more, settles what the allocation won or
    /// outlived: its epoch goes above every epoch seen for its shard (a
    /// loser's, a voided winner's, a rival's on the other side of a healed
    /// split that a store may have taken writes from), and the application
    /// hears it as `prolonged`, once per loser acknowledged, or once naming
    /// the rival whose epoch it went above if no loser is left to tell.
    pub fn settle(&mut self, ctx: &Ctx<'_>, rivals_left: bool, out: &mut Outbox) {
        if rivals_left {
            return;
        }
        let Local::Active { shard, epoch, wins } = &mut self.local else {
            return;
        };
        let (shard, epoch) = (*shard, *epoch);
        // A higher epoch whose holder may still hold the shard is a conflict
        // to resolve (or a stale record to outlast), not one outlived: two
        // owners that each raised above the other would never stop.
        let still_held_elsewhere = ctx.view.present_records().any(|(r, _)| {
            r.node != *ctx.me && r.holding.reserved().is_some_and(|(s, _)| s == shard)
        });
        let above = self
            .highest
            .get(shard as usize)
            .and_then(|c| c.as_ref())
            .filter(|c| c.epoch > epoch && !still_held_elsewhere)
            .map(|c| c.node.clone());
        let mut tell: Vec<(NodeId, bool)> = std::mem::take(&mut wins.untold)
            .into_iter()
            .map(|loser| (loser.node, true))
            .collect();
        match above {
            Some(rival) if tell.is_empty() => tell.push((rival, false)),
            None if tell.is_empty() => return,
            _ => {}
        }
        self.raise(ctx, tell, out);
    }

    /// A callback of the lifecycle finished; returns false if `id` is none
    /// of its callbacks. A finished `deallocated` that was part of leaving
    /// sets `leaving`.
    pub fn on_call_done(
        &mut self,
        ctx: &Ctx<'_>,
        id: CallId,
        outcome: &Outcome,
        leaving: &mut Option<ReleaseReason>,
        out: &mut Outbox,
    ) -> bool {
        match &mut self.local {
            Local::Claiming {
                shard,
                epoch,
                call,
                release,
            } if *call == id => {
                let (shard, epoch, release) = (*shard, *epoch, release.take());
                if let Outcome::Failed(reason) = outcome {
                    out.counters.failed_callbacks += 1;
                    tracing::warn!(
                        shard,
                        %reason,
                        callback_failure = true,
                        "allocated failed: releasing the shard and backing off"
                    );
                    let retry_at = ctx.now + ctx.timings.allocation_retry;
                    self.local = Local::Idle {
                        retry_at: Some(retry_at),
                    };
                    return true;
                }
                out.counters.allocations += 1;
                self.acknowledged.clear();
                self.local = Local::Active {
                    shard,
                    epoch,
                    wins: Wins::default(),
                };
                match release {
                    Some(PendingRelease {
                        lost: Some(lost),
                        after: After::Standby,
                        ..
                    }) => self.yield_to(ctx, lost, out),
                    Some(PendingRelease {
                        lost,
                        reason,
                        after,
                    }) => {
                        let winner = lost.map(|l| l.winner.node);
                        self.start_deallocated(shard, epoch, winner, reason, after, out);
                    }
                    None => {}
                }
                true
            }
            Local::Releasing { call, after, .. } if *call == id => {
                // Back to the pool; the next evaluation makes it standby or
                // finishes a leave.
                if *after == After::Leave {
                    leaving.get_or_insert(ReleaseReason::Left);
                }
                self.local = Local::Idle { retry_at: None };
                true
            }
            _ => false,
        }
    }
}

/// What the pairing gives this node (docs/design.md 6.2).
struct Pairing {
    /// The free shard paired with it, if any, and whether that shard is
    /// free now (not still reserved to a suspect).
    paired: Option<(Shard, bool)>,
    /// The held shards it would be paired with if their holder let go of
    /// them alone, with that holder.
    succeeds: Vec<(Shard, NodeId)>,
    /// Whether it is connected to every member (but those that left),
    /// with each one's record in: then every standby pairs alike.
    sees_everyone: bool,
}

/// What this node knows of the winner it yielded to.
enum WinnerNews {
    /// The winner acknowledged the loss: its `prolonged` is certain.
    Acknowledged,
    /// The winner left or was removed from the member list without
    /// acknowledging: the conflict is void.
    Voided(&'static str),
    /// The winner is gone past its grace, or restarted (which voids its
    /// claim at once), without this node seeing an acknowledgement: it is a
    /// lost owner, and this node, which still holds the shard, keeps it.
    Lost(&'static str),
    /// The winner's current record shows it gave that claim up for good (it
    /// lost in turn): it never will acknowledge.
    MovedOn(&'static str),
    /// Nothing yet.
    Pending,
}

impl WinnerNews {
    fn of(ctx: &Ctx<'_>, lost: &Yield, mine: &Claim) -> WinnerNews {
        let winner = &lost.winner.node;
        let record = ctx
            .view
            .record(winner)
            .filter(|r| r.incarnation == lost.winner.incarnation);
        if record.is_some_and(|r| r.acknowledged.contains(mine)) {
            return WinnerNews::Acknowledged;
        }
        if record.is_some_and(|r| r.holding == Holding::Left) {
            return WinnerNews::Voided("the winner left before acknowledging");
        }
        if !ctx.members.listed(winner) {
            return WinnerNews::Voided("the winner was removed from the member list");
        }
        if ctx.view.is_retired(winner, lost.winner.incarnation) {
            return WinnerNews::Lost("the winner restarted before acknowledging");
        }
        if !ctx.view.liveness(winner).present() {
            return WinnerNews::Lost("the winner is gone past its grace, unacknowledged");
        }
        // Given up for good, not merely yielding, which it may take back.
        // (A win raises the winner's epoch: a higher one is still its.)
        let holds = |h: Holding| match h {
            Holding::Claiming { shard, epoch }
            | Holding::Active { shard, epoch }
            | Holding::Yielding { shard, epoch } => {
                shard == lost.shard && epoch >= lost.winner.epoch
            }
            _ => false,
        };
        if ctx.view.is_fresh(winner) && record.is_some_and(|r| !holds(r.holding)) {
            return WinnerNews::MovedOn("the winner moved on before acknowledging");
        }
        WinnerNews::Pending
    }
}
