//! Conflicts: two or more nodes that hold the same shard and can reach each
//! other, directly or through a relay (DESIGN.md 6.3).
//!
//! Every owner computes its score once per conflict episode (from the moment
//! it sees a rival until it has seen none for a heartbeat timeout, so a
//! reconnection in the middle does not start another) and publishes it in
//! its record, with
//! the rivals' episodes it has seen (`acks`). All owners rank claims by the
//! same total order — score, then older epoch, then smaller node id — and an
//! owner ranks a rival only by an offer that acknowledges its own current
//! episode. An owner gives its shard up only to a claim ranked above its own;
//! once it has, it publishes no newer offer, so the rival can never hold an
//! acknowledgement of a later episode that would rank them the other way: two
//! owners never both give the shard up, and the best-ranked claim stays.

use std::cmp::Reverse;

use super::record::{Claim, Epoch, Shard};
use super::time::Instant;
use super::CallId;

/// This node's side of one conflict episode.
#[derive(Clone, Debug)]
pub struct Episode {
    /// This episode's number, unique within the incarnation.
    pub number: u64,
    /// The disputed shard.
    pub shard: Shard,
    /// The epoch of this node's claim on it.
    pub epoch: Epoch,
    /// When this node first saw a rival; the score deadline runs from here.
    pub started: Instant,
    /// The `score` callback in flight, if any.
    pub call: Option<CallId>,
    /// This node's score: `None` until known, `Some(None)` if it failed or
    /// was late.
    pub score: Option<Option<i64>>,
    /// This node found itself the winner (counted once).
    pub won: bool,
    /// Since when no rival has been in sight.
    pub alone_since: Option<Instant>,
}

impl Episode {
    /// An episode starting now.
    pub fn new(number: u64, shard: Shard, epoch: Epoch, now: Instant) -> Episode {
        Episode {
            number,
            shard,
            epoch,
            started: now,
            call: None,
            score: None,
            won: false,
            alone_since: None,
        }
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
