//! Settings the core runs with, their defaults (declared in
//! `crate::settings`, docs/design.md section 10) and the checks that refuse
//! inconsistent ones before anything starts.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use super::ids::{NodeId, Role};
use crate::settings::{self, default_duration as default};

/// A setting, or a combination of settings, that cannot work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> ConfigError {
        ConfigError {
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every timing of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// How often each connection carries a heartbeat.
    pub heartbeat_interval: Duration,
    /// Silence after which a connection is considered lost.
    pub heartbeat_timeout: Duration,
    /// How long too few visible members may last before the node is degraded.
    pub transition_timeout: Duration,
    /// How long a lost peer's shard stays reserved to it.
    pub node_grace: Duration,
    /// How long a standby's pairing with a free shard must hold before it
    /// claims the shard (docs/design.md 6.2).
    pub settle: Duration,
    /// How long a `score` callback may take before its owner loses.
    pub score_deadline: Duration,
    /// How often the member list is asked for again.
    pub member_poll: Duration,
    /// Back-off after a failed `allocated` before this node takes shards again.
    pub allocation_retry: Duration,
}

impl Default for Timings {
    fn default() -> Timings {
        Timings {
            heartbeat_interval: default("heartbeat_interval"),
            heartbeat_timeout: default("heartbeat_timeout"),
            transition_timeout: default("transition_timeout"),
            node_grace: default("node_grace"),
            settle: default("settle"),
            score_deadline: default("score_deadline"),
            member_poll: default("member_poll"),
            allocation_retry: default("allocation_retry"),
        }
    }
}

impl Timings {
    /// The field of timing `name` (a setting of `crate::settings`): the one
    /// place a timing's name meets its field.
    pub fn slot(&mut self, name: &str) -> Option<&mut Duration> {
        Some(match name {
            "heartbeat_interval" => &mut self.heartbeat_interval,
            "heartbeat_timeout" => &mut self.heartbeat_timeout,
            "transition_timeout" => &mut self.transition_timeout,
            "node_grace" => &mut self.node_grace,
            "settle" => &mut self.settle,
            "score_deadline" => &mut self.score_deadline,
            "member_poll" => &mut self.member_poll,
            "allocation_retry" => &mut self.allocation_retry,
            _ => return None,
        })
    }

    /// How long a claim stands announced in strict mode before its
    /// `allocated` runs (docs/design.md 6.7): a rival claim made up to a
    /// message's delay later shows within it — and a message later than a
    /// heartbeat timeout means a lost link, as its heartbeats wait behind it.
    pub fn proposal_window(&self) -> Duration {
        self.heartbeat_timeout * 2
    }

    /// Refuses timings out of their range and orderings that break the
    /// guarantees.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut copy = *self;
        for setting in settings::SETTINGS {
            if let Some(value) = copy.slot(setting.name) {
                let ms = settings::whole_millis(*value);
                setting
                    .check(ms)
                    .map_err(|why| ConfigError::new(format!("{} {why}", setting.name)))?;
            }
        }
        if self.heartbeat_interval >= self.heartbeat_timeout {
            return Err(ConfigError::new(format!(
                "heartbeat_interval ({:?}) must be below heartbeat_timeout ({:?}), or every gap between two heartbeats looks like a lost peer",
                self.heartbeat_interval, self.heartbeat_timeout
            )));
        }
        // docs/design.md 6.5: the small side of a split must give its shards up
        // before the large side's grace ends. Both sides notice the split
        // within one heartbeat of each other, so that is the least margin.
        if self.transition_timeout + self.heartbeat_interval > self.node_grace {
            return Err(ConfigError::new(format!(
                "transition_timeout ({:?}) must be below node_grace ({:?}) by at least heartbeat_interval ({:?}), so a degraded side gives its shards up before the other side takes them",
                self.transition_timeout, self.node_grace, self.heartbeat_interval
            )));
        }
        Ok(())
    }
}

/// Which members a node must see to hold or claim shards
/// (docs/design.md 5, 6.7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Quorum {
    /// At least `shard_count` members: both sides of a split with members
    /// enough keep working, and a conflict is resolved when they meet.
    #[default]
    Any,
    /// A strict majority of the member list as well: at most one side of
    /// any split holds shards, and no two nodes ever hold one at once.
    Majority,
}

impl Quorum {
    /// Every quorum, in the order the settings list names them.
    pub const ALL: [Quorum; 2] = [Quorum::Any, Quorum::Majority];

    /// Its name in settings, flags, logs and the bindings.
    pub fn as_str(self) -> &'static str {
        match self {
            Quorum::Any => "any",
            Quorum::Majority => "majority",
        }
    }

    /// The members (this node included) a node must see to hold or claim
    /// shards, out of a member list of `members` keeping `shard_count`.
    pub fn members_needed(self, shard_count: usize, members: usize) -> usize {
        match self {
            Quorum::Any => shard_count,
            // Strictly more than half: two disjoint sides cannot both have it.
            Quorum::Majority => shard_count.max(members / 2 + 1),
        }
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Quorum {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Quorum, ConfigError> {
        Quorum::ALL
            .into_iter()
            .find(|q| q.as_str() == s)
            .ok_or_else(|| {
                ConfigError::new(format!("quorum must be \"any\" or \"majority\", not {s:?}"))
            })
    }
}

/// What one node's core needs to run in one cluster.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// This node's advertised address.
    pub me: NodeId,
    /// Whether this node joins to host shards or only to watch.
    pub role: Role,
    /// The member list, as the `nodes` callback gave it.
    pub members: Vec<NodeId>,
    /// How many shards the cluster keeps, from the `shard_count` callback.
    /// An observer may give 0 to learn it from the first member it meets.
    pub shard_count: u32,
    /// Protocol timings.
    pub timings: Timings,
    /// What this node publishes about itself for applications (checked by
    /// the engine's `Config::validate`).
    pub metadata: std::sync::Arc<super::record::Metadata>,
    /// The members a node must see to hold shards.
    pub quorum: Quorum,
}

/// The largest number of shards a cluster may keep. A bound the engine can
/// hold a peer to: an observer sizes its tables by the shard count a member
/// announces, and must not be made to allocate gigabytes by one record.
pub const MAX_SHARDS: u32 = 1 << 16;

impl CoreConfig {
    /// Checks the settings and the member list together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.timings.validate()?;
        validate_members(&self.members)?;
        if self.shard_count == 0 && self.role == Role::Member {
            return Err(ConfigError::new("shard_count must be at least 1"));
        }
        if self.shard_count > MAX_SHARDS {
            return Err(ConfigError::new(format!(
                "shard_count ({}) is over the limit of {MAX_SHARDS}",
                self.shard_count
            )));
        }
        if self.shard_count as usize > self.members.len() {
            return Err(ConfigError::new(format!(
                "shard_count ({}) is larger than the member list ({} nodes): one shard per node at most",
                self.shard_count,
                self.members.len()
            )));
        }
        if self.role == Role::Member && !self.members.contains(&self.me) {
            return Err(ConfigError::new(format!(
                "this node ({}) joins as a member but is not in the member list [{}]; add it, or join as an observer",
                self.me,
                join(&self.members)
            )));
        }
        Ok(())
    }
}

/// Refuses an empty member list or one that names a node twice.
pub fn validate_members(members: &[NodeId]) -> Result<(), ConfigError> {
    if members.is_empty() {
        return Err(ConfigError::new("the member list is empty"));
    }
    let mut seen = BTreeSet::new();
    for member in members {
        if !seen.insert(member) {
            return Err(ConfigError::new(format!(
                "the member list names {member} twice"
            )));
        }
    }
    Ok(())
}

fn join(members: &[NodeId]) -> String {
    members
        .iter()
        .map(NodeId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<NodeId> {
        list.iter().map(|s| NodeId::parse(s).unwrap()).collect()
    }

    fn config() -> CoreConfig {
        CoreConfig {
            me: NodeId::parse("a:1").unwrap(),
            role: Role::Member,
            members: ids(&["a:1", "b:1", "c:1"]),
            shard_count: 2,
            timings: Timings::default(),
            metadata: Default::default(),
            quorum: Quorum::Any,
        }
    }

    #[test]
    fn defaults_are_valid_and_match_the_design() {
        let t = Timings::default();
        t.validate().unwrap();
        assert_eq!(t.heartbeat_interval, Duration::from_millis(100));
        assert_eq!(t.heartbeat_timeout, Duration::from_millis(500));
        assert_eq!(t.transition_timeout, Duration::from_millis(1000));
        assert_eq!(t.node_grace, Duration::from_millis(1500));
        assert_eq!(t.settle, Duration::from_millis(20));
        assert_eq!(t.score_deadline, Duration::from_millis(1000));
        assert_eq!(t.member_poll, Duration::from_secs(5));
        config().validate().unwrap();
    }

    #[test]
    fn refuses_zero_timings() {
        let t = Timings {
            settle: Duration::ZERO,
            ..Timings::default()
        };
        assert!(t.validate().unwrap_err().to_string().contains("settle"));
    }

    #[test]
    fn refuses_transition_timeout_not_below_node_grace() {
        let mut t = Timings::default();
        t.transition_timeout = t.node_grace;
        let err = t.validate().unwrap_err().to_string();
        assert!(
            err.contains("transition_timeout") && err.contains("node_grace"),
            "{err}"
        );
    }

    #[test]
    fn refuses_heartbeat_interval_not_below_timeout() {
        let mut t = Timings::default();
        t.heartbeat_interval = t.heartbeat_timeout;
        assert!(t
            .validate()
            .unwrap_err()
            .to_string()
            .contains("heartbeat_interval"));
    }

    #[test]
    fn refuses_more_shards_than_members() {
        let mut c = config();
        c.shard_count = 4;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("larger than the member list"));
        c.shard_count = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn refuses_a_member_missing_from_the_list() {
        let mut c = config();
        c.me = NodeId::parse("z:1").unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not in the member list"));
        c.role = Role::Observer;
        c.validate().unwrap();
    }

    #[test]
    fn a_majority_is_strictly_more_than_half_and_never_below_the_shard_count() {
        assert_eq!(Quorum::Any.members_needed(2, 6), 2);
        assert_eq!(Quorum::Majority.members_needed(2, 6), 4);
        assert_eq!(Quorum::Majority.members_needed(2, 5), 3);
        assert_eq!(Quorum::Majority.members_needed(5, 6), 5);
        assert_eq!(Quorum::Majority.members_needed(1, 1), 1);
        assert_eq!("majority".parse::<Quorum>(), Ok(Quorum::Majority));
        let err = "most".parse::<Quorum>().unwrap_err().to_string();
        assert_eq!(err, "quorum must be \"any\" or \"majority\", not \"most\"");
    }

    #[test]
    fn refuses_duplicate_members() {
        let mut c = config();
        c.members = ids(&["a:1", "b:1", "a:1"]);
        assert!(c.validate().unwrap_err().to_string().contains("twice"));
    }
}
