//! `minishard_health`: the cluster's health as one node sees it.

use minishard::Health;

/// The health of the cluster as this node sees it (docs/design.md section 5).
///
/// In C the type is a `uint32_t`; functions that take one refuse values
/// outside this list.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum minishard_health {
    /// Fewer members visible than shards for `transition_timeout` (and at
    /// start-up): this node holds no shard.
    MINISHARD_HEALTH_DEGRADED = 0,
    /// In between: too few members for a short while, an allocation in
    /// progress, a conflict being resolved.
    MINISHARD_HEALTH_TRANSITION = 1,
    /// Enough members visible, every shard has exactly one owner, no
    /// conflict.
    MINISHARD_HEALTH_AVAILABLE = 2,
}

/// A `minishard_health` as C passes it in: any `uint32_t`.
#[allow(non_camel_case_types)]
pub type minishard_health_code = u32;

impl From<Health> for minishard_health {
    fn from(health: Health) -> minishard_health {
        match health {
            Health::Degraded => minishard_health::MINISHARD_HEALTH_DEGRADED,
            Health::Transition => minishard_health::MINISHARD_HEALTH_TRANSITION,
            Health::Available => minishard_health::MINISHARD_HEALTH_AVAILABLE,
        }
    }
}

/// The health a C caller asked for, if the value is one.
pub(crate) fn health_from_code(code: minishard_health_code) -> Option<Health> {
    [Health::Degraded, Health::Transition, Health::Available]
        .into_iter()
        .find(|h| minishard_health::from(*h) as u32 == code)
}
