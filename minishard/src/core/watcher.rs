//! The watcher: this node's view of the cluster's health (docs/design.md 5).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::time::Instant;

/// The health of the cluster as one node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Too few members visible for `transition_timeout` (and at start-up):
    /// this node holds no shard.
    Degraded,
    /// In between: too few members for a short while, an allocation in
    /// progress, a conflict being resolved.
    Transition,
    /// Enough members visible, every shard has exactly one owner, no conflict.
    Available,
}

impl Health {
    /// The lower-case name used in logs, JSON and the bindings.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Degraded => "degraded",
            Health::Transition => "transition",
            Health::Available => "available",
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Health {
    type Err = String;
    fn from_str(s: &str) -> Result<Health, String> {
        match s {
            "degraded" => Ok(Health::Degraded),
            "transition" => Ok(Health::Transition),
            "available" => Ok(Health::Available),
            other => Err(format!(
                "unknown health {other:?}: expected degraded, transition or available"
            )),
        }
    }
}

/// What the watcher needs to know about the view at one instant.
#[derive(Clone, Copy, Debug)]
pub struct Observation {
    /// Members visible: connected with handshake done, plus this node if it is one.
    pub visible_members: usize,
    /// How many members must be visible to hold shards: the shard count,
    /// or more in strict mode (docs/design.md 6.7).
    pub needed_members: usize,
    /// Every shard has exactly one holder, that holder is an active owner
    /// this node can reach, and no claim or release is in flight.
    pub settled_ownership: bool,
}

/// The health state machine.
#[derive(Debug)]
pub struct Watcher {
    health: Health,
    too_few_since: Option<Instant>,
    transition_timeout: Duration,
}

impl Watcher {
    /// A watcher in its start-up state, `degraded`.
    pub fn new(transition_timeout: Duration) -> Watcher {
        Watcher {
            health: Health::Degraded,
            too_few_since: None,
            transition_timeout,
        }
    }

    /// The current health.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Applies an observation; returns `(old, new)` if the health changed.
    pub fn update(&mut self, now: Instant, seen: Observation) -> Option<(Health, Health)> {
        let next = if seen.visible_members < seen.needed_members {
            let since = *self.too_few_since.get_or_insert(now);
            if self.health == Health::Degraded || now >= since + self.transition_timeout {
                Health::Degraded
            } else {
                Health::Transition
            }
        } else {
            self.too_few_since = None;
            if seen.settled_ownership {
                Health::Available
            } else {
                Health::Transition
            }
        };
        let old = std::mem::replace(&mut self.health, next);
        (old != next).then_some((old, next))
    }

    /// Whether fewer members are visible than holding shards needs: a
    /// node in this state holds on to its shard for a while (a member that
    /// flaps comes back) but takes no new one, which it would likely give up
    /// again when it degrades.
    pub fn too_few(&self) -> bool {
        self.health == Health::Degraded || self.too_few_since.is_some()
    }

    /// When too few members will have lasted `transition_timeout`.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.health, self.too_few_since) {
            (Health::Degraded, _) | (_, None) => None,
            (_, Some(since)) => Some(since + self.transition_timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TT: Duration = Duration::from_millis(1000);

    fn seen(visible: usize, settled: bool) -> Observation {
        Observation {
            visible_members: visible,
            needed_members: 3,
            settled_ownership: settled,
        }
    }

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn starts_degraded_and_stays_so_until_enough_members_are_visible() {
        let mut w = Watcher::new(TT);
        assert_eq!(w.health(), Health::Degraded);
        assert_eq!(w.update(at(0), seen(2, false)), None);
        assert_eq!(w.update(at(5000), seen(2, false)), None);
        assert_eq!(
            w.update(at(5001), seen(3, false)),
            Some((Health::Degraded, Health::Transition))
        );
        assert_eq!(
            w.update(at(5002), seen(3, true)),
            Some((Health::Transition, Health::Available))
        );
    }

    #[test]
    fn too_few_members_is_transition_then_degraded_after_the_timeout() {
        let mut w = Watcher::new(TT);
        w.update(at(0), seen(3, true));
        assert_eq!(
            w.update(at(100), seen(2, true)),
            Some((Health::Available, Health::Transition))
        );
        assert_eq!(w.deadline(), Some(at(1100)));
        assert_eq!(w.update(at(1099), seen(2, true)), None);
        assert_eq!(
            w.update(at(1100), seen(2, true)),
            Some((Health::Transition, Health::Degraded))
        );
        assert_eq!(w.deadline(), None);
    }

    #[test]
    fn members_coming_back_within_the_timeout_avoid_degradation() {
        let mut w = Watcher::new(TT);
        w.update(at(0), seen(3, true));
        w.update(at(100), seen(2, true));
        w.update(at(900), seen(3, true));
        assert_eq!(w.health(), Health::Available);
        // A new shortage starts a new timeout.
        w.update(at(1000), seen(2, true));
        assert_eq!(w.update(at(1500), seen(2, true)), None);
        assert_eq!(w.health(), Health::Transition);
    }
}
