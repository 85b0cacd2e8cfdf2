//! Conflicts: two or more nodes that hold the same shard and can reach each
//! other, directly or through the nodes on a path between them, which relay
//! their records (docs/design.md 6.3).
//!
//! Every owner computes its score once per conflict episode (from the moment
//! it sees a rival until it has seen none for a heartbeat timeout, so a
//! reconnection in the middle does not start another) and publishes it in
//! its record, with the rivals' episodes it has seen (`acks`). All owners rank claims by the
//! same total order — score, then older epoch, then smaller node id — and an
//! owner ranks a rival only by an offer that acknowledges its own current
//! episode. An owner gives its shard up only to a claim ranked above its own;
//! once it has, it publishes no newer offer, so the rival can never hold an
//! acknowledgement of a later episode that would rank them the other way: two
//! owners never both give the shard up, and the best-ranked claim stays.

use std::cmp::Reverse;
use std::time::Duration;

use super::events::{Call, CallId, Outbox, Outcome};
use super::membership::Membership;
use super::record::{Ack, Claim, Epoch, ScoreOffer, Shard, Yield};
use super::time::Instant;
use super::view::{Liveness, PeerView};

/// This node's side of one conflict episode.
#[derive(Clone, Debug)]
struct Episode {
    /// This episode's number, unique within the incarnation.
    number: u64,
    /// The disputed shard.
    shard: Shard,
    /// The epoch of this node's claim on it.
    epoch: Epoch,
    /// When this node first saw a rival; the score deadline runs from here.
    started: Instant,
    /// The `score` callback in flight, if any.
    call: Option<CallId>,
    /// This node's score: `None` until known, `Some(None)` if it failed or
    /// was late.
    score: Option<Option<i64>>,
    /// This node found itself the winner (counted once).
    won: bool,
    /// Since when no rival has been in sight.
    alone_since: Option<Instant>,
}

/// This node's conflicts over the shard it claims or holds: the episode
/// under way and the offer it publishes. Reads the peer view; decides
/// whether this node lost, and to whom.
#[derive(Debug, Default)]
pub(super) struct Conflicts {
    episode: Option<Episode>,
    episodes: u64,
    /// The latest score offer, kept after the conflict so a peer that
    /// learns of it late still ranks the claim the same way.
    offer: Option<ScoreOffer>,
    /// The last resolution saw a rival contend.
    rivals: bool,
}

/// This node's claim in a conflict.
pub(super) struct Contender {
    pub claim: Claim,
    pub shard: Shard,
    /// Whether its `allocated` has returned, so `score` can be asked.
    pub active: bool,
}

impl Conflicts {
    /// The offer this node publishes.
    pub fn offer(&self) -> Option<&ScoreOffer> {
        self.offer.as_ref()
    }

    /// Whether a rival still contended at the last resolution.
    pub fn has_rivals(&self) -> bool {
        self.rivals
    }

    /// When the score deadline, or the wait for the rivals' scores, ends.
    pub fn next_deadline(&self, score_deadline: Duration) -> Option<Instant> {
        self.episode.as_ref().map(|e| {
            let waits = if e.score.is_none() { 1 } else { 2 };
            e.started + score_deadline * waits
        })
    }

    /// The rivals of a claim on `shard` that take part in the conflict
    /// (connected, or reached by a path), each with its published offer for
    /// that claim, if any.
    fn rivals(
        view: &PeerView,
        members: &Membership,
        shard: Shard,
    ) -> Vec<(Claim, Option<ScoreOffer>)> {
        view.present_records()
            .filter(|(r, liveness)| {
                matches!(liveness, Liveness::Up | Liveness::Unreachable)
                    && members.is_member(&r.node, view)
            })
            // A record from before a lost connection is not a claim to
            // contend with until a current copy confirms it.
            .filter(|(r, _)| view.is_fresh(&r.node))
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

    /// Runs this node's side of a conflict over its claim (docs/design.md 6.3),
    /// if it has a contending one. Returns the conflict it lost, if it did.
    pub fn resolve(
        &mut self,
        now: Instant,
        me: Option<Contender>,
        view: &PeerView,
        members: &Membership,
        (quiet, deadline): (Duration, Duration),
        out: &mut Outbox,
    ) -> Option<Yield> {
        let Some(me) = me else {
            self.episode = None;
            self.rivals = false;
            return None;
        };
        let (shard, epoch) = (me.shard, me.claim.epoch);
        let rivals = Self::rivals(view, members, shard);
        self.rivals = !rivals.is_empty();
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
            return None;
        }
        let ongoing =
            current.is_some_and(|e| e.alone_since.take().is_none_or(|since| now < since + quiet));
        if !ongoing {
            self.episodes += 1;
            self.episode = Some(Episode {
                number: self.episodes,
                shard,
                epoch,
                started: now,
                call: None,
                score: None,
                won: false,
                alone_since: None,
            });
            tracing::debug!(shard, epoch, ?rivals, "a conflict episode starts");
        }
        let episode = self.episode.as_mut().expect("set above");
        if episode.score.is_none() {
            if now >= episode.started + deadline {
                // An owner that cannot produce a score in time ranks last.
                tracing::warn!(shard, "score was not ready in time: this node ranks last");
                episode.score = Some(None);
                out.counters.failed_callbacks += 1;
            } else if episode.call.is_none() && me.active {
                episode.call = Some(out.call(Call::Score { shard, epoch }));
            }
        }
        let episode = self.episode.as_ref().expect("set above");
        let my_score = episode.score?;
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
            node: me.claim.node.clone(),
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
        self.offer = Some(ScoreOffer {
            shard,
            epoch,
            episode: episode.number,
            score: my_score,
            acks,
        });
        if !all_in && !waited_enough {
            return None;
        }
        let mine = &me.claim;
        let winner = best(std::iter::once((mine, my_score)).chain(usable.iter().copied()))?;
        let winner_score = usable
            .iter()
            .find(|(c, _)| *c == winner)
            .map_or(my_score, |(_, s)| *s);
        if winner == mine {
            if let Some(e) = &mut self.episode {
                if !std::mem::replace(&mut e.won, true) {
                    out.counters.conflicts_resolved += 1;
                    tracing::info!(
                        shard,
                        rivals = rivals.len(),
                        "this node ranks first in a conflict"
                    );
                }
            }
            return None;
        }
        out.counters.conflicts_resolved += 1;
        tracing::info!(shard, winner = %winner.node, "lost a conflict");
        let lost = Yield {
            shard,
            epoch,
            winner: winner.clone(),
            winner_score,
            own_score: my_score,
        };
        self.episode = None;
        Some(lost)
    }

    /// A `score` callback finished; returns false if it is not this
    /// episode's.
    pub fn on_call_done(&mut self, id: CallId, outcome: &Outcome, out: &mut Outbox) -> bool {
        let Some(episode) = self.episode.as_mut().filter(|e| e.call == Some(id)) else {
            return false;
        };
        episode.call = None;
        if episode.score.is_none() {
            episode.score = Some(match outcome {
                Outcome::Score(score) => Some(*score),
                other => {
                    out.counters.failed_callbacks += 1;
                    tracing::warn!(
                        shard = episode.shard,
                        ?other,
                        callback_failure = true,
                        "score failed: this node ranks last"
                    );
                    None
                }
            });
        }
        true
    }
}

/// The rank of a claim: highest score first; a failed score below any real
/// one; then the older (smaller) epoch; then the smaller node id.
pub fn rank(score: Option<i64>, claim: &Claim) -> impl Ord + '_ {
    (
        score.is_some(),
        score.unwrap_or(i64::MIN),
        Reverse(claim.epoch),
        Reverse(&claim.node),
    )
}

/// The best-ranked of scored claims.
pub fn best<'a>(scored: impl IntoIterator<Item = (&'a Claim, Option<i64>)>) -> Option<&'a Claim> {
    scored
        .into_iter()
        .max_by(|(a, sa), (b, sb)| rank(*sa, a).cmp(&rank(*sb, b)))
        .map(|(claim, _)| claim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::NodeId;

    fn claim(node: &str, epoch: u64) -> Claim {
        Claim {
            node: NodeId::parse(node).unwrap(),
            incarnation: 7,
            epoch,
        }
    }

    fn winner(claims: &[(Claim, Option<i64>)]) -> String {
        best(claims.iter().map(|(c, s)| (c, *s)))
            .unwrap()
            .node
            .to_string()
    }

    #[test]
    fn highest_score_wins() {
        assert_eq!(
            winner(&[(claim("a:1", 1), Some(5)), (claim("b:1", 9), Some(6))]),
            "b:1"
        );
    }

    #[test]
    fn a_failed_score_loses_even_to_the_lowest_score() {
        assert_eq!(
            winner(&[(claim("a:1", 1), None), (claim("b:1", 9), Some(i64::MIN))]),
            "b:1"
        );
    }

    #[test]
    fn ties_go_to_the_older_epoch_then_the_smaller_node() {
        assert_eq!(
            winner(&[(claim("a:1", 4), Some(3)), (claim("b:1", 2), Some(3))]),
            "b:1"
        );
        assert_eq!(
            winner(&[(claim("b:1", 2), Some(3)), (claim("a:1", 2), Some(3))]),
            "a:1"
        );
        assert_eq!(
            winner(&[(claim("b:1", 2), None), (claim("a:1", 2), None)]),
            "a:1"
        );
    }

    #[test]
    fn the_ranking_is_a_total_order_so_no_two_claims_beat_each_other() {
        let claims = [
            (claim("a:1", 1), Some(0)),
            (claim("b:1", 1), Some(0)),
            (claim("c:1", 2), None),
            (claim("d:1", 1), Some(i64::MAX)),
        ];
        for (x, sx) in &claims {
            for (y, sy) in &claims {
                if x != y {
                    let xy = rank(*sx, x).cmp(&rank(*sy, y));
                    let yx = rank(*sy, y).cmp(&rank(*sx, x));
                    assert_eq!(xy, yx.reverse());
                    assert_ne!(xy, std::cmp::Ordering::Equal);
                }
            }
        }
        assert_eq!(winner(&claims), "d:1");
    }
}
