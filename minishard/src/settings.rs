//! Every tunable setting of a node, declared once: name, unit, default,
//! range and what it does. The rest comes from this list or is checked
//! against it:
//!
//! - the Rust [`Config`](crate::Config) and [`Timings`](crate::Timings) take
//!   their defaults from it, and `Config::validate` / `Timings::validate`
//!   check each value against its range with one message format;
//!   [`Config::set`](crate::Config::set) sets any setting by name;
//! - the command's flags (`--NAME`, `--NAME-ms` for a timing) are built
//!   from it;
//! - the Python extension takes settings by name and exports this list
//!   (`minishard._minishard.SETTINGS`), which `join` uses for its messages;
//! - README's configuration table is generated from it
//!   (`minishard/tests/settings.rs` fails while it is stale);
//! - tests check that the C header has a setter for each
//!   (`minishard-ffi/tests/settings.rs`) and that `minishard.join` and its
//!   stub have a keyword for each (`bindings/python/tests/test_settings.py`).
//!
//! # Adding a setting
//!
//! 1. Add a [`Setting`] to [`SETTINGS`] below.
//! 2. Add its field to `Config` (or to `Timings`, for a protocol timing),
//!    with its default from here (`settings::default_duration("name")`,
//!    `settings::default_count("name")`), and one arm naming it in
//!    `Config::slot` (or `Timings::slot`). A unit test fails until it has.
//! 3. Use it where it matters.
//! 4. Add the C setter `minishard_config_set_NAME` (`_ms` for a timing)
//!    to `minishard-ffi/src/config.rs` — a one-line body through
//!    `set_setting` — and regenerate the header
//!    (`MINISHARD_BLESS=1 cargo test -p minishard-ffi --test header`).
//! 5. Add the keyword to `minishard.join` in
//!    `bindings/python/python/minishard/_cluster.py` (the extension and its
//!    stub take settings by name and need nothing).
//! 6. Rewrite README's table: `MINISHARD_BLESS=1 cargo test -p minishard
//!    --test settings`.
//!
//! `cargo test` and the Python tests name every surface still missing.
//!
//! A setting that takes one of a few names ([`CHOICES`]: the quorum) goes
//! through the same surfaces: `Config::set_choice`, `--NAME NAME`, a C
//! setter taking an enum, a Python keyword typed as a `Literal`, and a row
//! of README's table. Settings that are neither (the TLS files, the listen
//! address, the cookie) are plain `Config` fields and setters of their own.

use std::time::Duration;

/// What a setting's value counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// A duration, in milliseconds (seconds in Python).
    Millis,
    /// A size in bytes.
    Bytes,
    /// A number of connections.
    Connections,
    /// A number of frames.
    Frames,
    /// A number of requests.
    Requests,
}

impl Unit {
    /// The unit's name in messages and README.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Millis => "ms",
            Unit::Bytes => "bytes",
            Unit::Connections => "connections",
            Unit::Frames => "frames",
            Unit::Requests => "requests",
        }
    }
}

/// One setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// Its name: the `Config` (or `Timings`) field and the Python keyword;
    /// the C setter is `minishard_config_set_` + name (+ `_ms` for a
    /// timing), the command's flag `--` + name with dashes (+ `-ms`).
    pub name: &'static str,
    /// What its value counts.
    pub unit: Unit,
    /// Its default, in `unit`.
    pub default: u64,
    /// The smallest value `join` takes, in `unit`.
    pub min: u64,
    /// The largest value `join` takes, in `unit`.
    pub max: u64,
    /// What it does, in one line (README's table, `--help`).
    pub doc: &'static str,
}

const SECOND: u64 = 1000;
/// The longest timing a configuration may set: a day. Longer ones are
/// mistakes (a unit confused), and would overflow the core's instants.
const DAY: u64 = 24 * 3600 * SECOND;

/// Every numeric setting, in README's order.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "heartbeat_interval",
        unit: Unit::Millis,
        default: 100,
        min: 1,
        max: DAY,
        doc: "every connection carries heartbeats",
    },
    Setting {
        name: "heartbeat_timeout",
        unit: Unit::Millis,
        default: 500,
        min: 1,
        max: DAY,
        doc: "silence after which a connection is lost",
    },
    Setting {
        name: "transition_timeout",
        unit: Unit::Millis,
        default: 1000,
        min: 1,
        max: DAY,
        doc: "too few members for this long ⇒ `degraded`",
    },
    Setting {
        name: "node_grace",
        unit: Unit::Millis,
        default: 1500,
        min: 1,
        max: DAY,
        doc: "a lost peer's shard stays reserved this long",
    },
    Setting {
        name: "settle",
        unit: Unit::Millis,
        default: 20,
        min: 1,
        max: DAY,
        doc: "a standby's pairing with a free shard must hold this long before it claims",
    },
    Setting {
        name: "score_deadline",
        unit: Unit::Millis,
        default: 1000,
        min: 1,
        max: DAY,
        doc: "a later `score` loses",
    },
    Setting {
        name: "member_poll",
        unit: Unit::Millis,
        default: 5 * SECOND,
        min: 1,
        max: DAY,
        doc: "how often `nodes` is asked again",
    },
    Setting {
        name: "allocation_retry",
        unit: Unit::Millis,
        default: 1000,
        min: 1,
        max: DAY,
        doc: "back-off after a failed `allocated`",
    },
    Setting {
        name: "frame_limit",
        unit: Unit::Bytes,
        default: 1 << 20,
        min: 4096,
        max: 64 << 20,
        doc:
            "larger frames close the connection (before the handshake is done the limit is 16 KiB)",
    },
    Setting {
        name: "handshake_timeout",
        unit: Unit::Millis,
        default: 2 * SECOND,
        min: 1,
        max: DAY,
        doc: "a client that has not authenticated by then is dropped",
    },
    Setting {
        name: "max_handshakes",
        unit: Unit::Connections,
        default: 256,
        min: 1,
        max: 1 << 16,
        doc: "concurrent unauthenticated connections per listener",
    },
    Setting {
        name: "max_handshakes_per_source",
        unit: Unit::Connections,
        default: 16,
        min: 1,
        max: 1 << 16,
        doc: "concurrent unauthenticated connections per source IP",
    },
    // A connection starts with a burst (a record, a relay per known node,
    // the epochs): a queue under 64 frames would drop every new peer.
    Setting {
        name: "send_queue",
        unit: Unit::Frames,
        default: 4096,
        min: 64,
        max: 1 << 20,
        doc: "a peer that falls further behind is disconnected",
    },
    Setting {
        name: "max_requests_in_flight",
        unit: Unit::Requests,
        default: 4096,
        min: 1,
        max: 1 << 20,
        doc: "requests of this handle in flight, and from all peers waiting for its handler; \
              beyond it `Overloaded`",
    },
    Setting {
        name: "max_requests_per_peer",
        unit: Unit::Requests,
        default: 1024,
        min: 1,
        max: 1 << 20,
        doc: "requests in flight to one peer, and from one peer waiting here; \
              beyond it `Overloaded`",
    },
    Setting {
        name: "hand_off_wait",
        unit: Unit::Millis,
        default: 1000,
        min: 1,
        max: DAY,
        doc: "how long a next owner's `allocated` or `prolonged` waits for a hand-off under way",
    },
    Setting {
        name: "hand_off_limit",
        unit: Unit::Bytes,
        default: 64 << 20,
        min: 0,
        max: 1 << 30,
        doc: "the largest hand-off this node takes; a larger one is refused (the next owner gets none)",
    },
];

/// A setting that takes one of a few names rather than a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    /// Its name: the `Config` field and the Python keyword; the C setter
    /// is `minishard_config_set_` + name, the command's flag `--` + name
    /// with dashes.
    pub name: &'static str,
    /// The names it takes, the default first.
    pub options: &'static [&'static str],
    /// What it does, in one line (README's table, `--help`).
    pub doc: &'static str,
}

/// Every setting that is a choice of names, in README's order (after the
/// numeric ones).
pub const CHOICES: &[Choice] = &[Choice {
    name: "quorum",
    options: &["any", "majority"],
    doc: "`majority`: hold shards only while seeing a strict majority of the member list too, so no two nodes ever hold a shard at once (docs/design.md 6.7)",
}];

impl Choice {
    /// Its default.
    pub fn default(&self) -> &'static str {
        self.options[0]
    }

    /// Whether `value` is one of its names; if not, what is wrong, to
    /// follow its name ("… must be …").
    pub fn check(&self, value: &str) -> Result<(), String> {
        if self.options.contains(&value) {
            return Ok(());
        }
        let names: Vec<String> = self.options.iter().map(|o| format!("{o:?}")).collect();
        Err(format!("must be {}, not {value:?}", names.join(" or ")))
    }

    /// The command's flag for it, without the dashes in front.
    pub fn flag(&self) -> String {
        self.name.replace('_', "-")
    }

    /// The C setter's name.
    pub fn c_setter(&self) -> String {
        format!("minishard_config_set_{}", self.name)
    }
}

/// The choice called `name`.
pub fn choice(name: &str) -> Option<&'static Choice> {
    CHOICES.iter().find(|c| c.name == name)
}

/// The setting called `name`.
pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

fn declared(name: &str) -> &'static Setting {
    setting(name).unwrap_or_else(|| panic!("{name} is not in settings::SETTINGS"))
}

/// The default of timing `name` (declared in [`SETTINGS`]).
pub fn default_duration(name: &str) -> Duration {
    let s = declared(name);
    debug_assert_eq!(s.unit, Unit::Millis, "{name} is not a timing");
    Duration::from_millis(s.default)
}

/// The default of count `name` (declared in [`SETTINGS`]).
pub fn default_count(name: &str) -> usize {
    let s = declared(name);
    debug_assert_ne!(s.unit, Unit::Millis, "{name} is a timing");
    usize::try_from(s.default).expect("defaults fit a usize")
}

/// A duration in the milliseconds of [`Unit::Millis`], for range checks: a
/// non-zero one shorter than a millisecond counts as one.
pub fn whole_millis(duration: Duration) -> u64 {
    match u64::try_from(duration.as_millis()) {
        Ok(0) if !duration.is_zero() => 1,
        Ok(ms) => ms,
        Err(_) => u64::MAX,
    }
}

impl Setting {
    /// Whether `value` (in the setting's unit) is in range; if not, what is
    /// wrong, to follow the name the user knows it by ("… must be …").
    pub fn check(&self, value: u64) -> Result<(), String> {
        if (self.min..=self.max).contains(&value) {
            return Ok(());
        }
        if value == 0 && self.unit == Unit::Millis {
            return Err("must be greater than zero".into());
        }
        Err(format!(
            "must be between {} and {} {}, not {value}",
            self.min,
            self.max,
            self.unit.name()
        ))
    }

    /// The command's flag for it, without the dashes in front.
    pub fn flag(&self) -> String {
        let stem = self.name.replace('_', "-");
        match self.unit {
            Unit::Millis => format!("{stem}-ms"),
            _ => stem,
        }
    }

    /// The C setter's name.
    pub fn c_setter(&self) -> String {
        match self.unit {
            Unit::Millis => format!("minishard_config_set_{}_ms", self.name),
            _ => format!("minishard_config_set_{}", self.name),
        }
    }
}

/// A value for README: `100 ms`, `5 s`, `1 MiB`, `4096 frames`.
pub fn show(unit: Unit, value: u64) -> String {
    match unit {
        Unit::Millis if value == DAY => "1 day".into(),
        Unit::Millis if value >= 2 * SECOND && value % SECOND == 0 => {
            format!("{} s", value / SECOND)
        }
        Unit::Bytes if value >= 1 << 20 && value % (1 << 20) == 0 => {
            format!("{} MiB", value >> 20)
        }
        Unit::Bytes if value >= 1 << 10 && value % (1 << 10) == 0 => {
            format!("{} KiB", value >> 10)
        }
        _ => format!("{value} {}", unit.name()),
    }
}

/// A range for README: `1 ms to 1 day`, `64 to 1048576 frames`.
pub fn show_range(unit: Unit, min: u64, max: u64) -> String {
    match unit {
        Unit::Millis | Unit::Bytes => format!("{} to {}", show(unit, min), show(unit, max)),
        _ => format!("{min} to {max} {}", unit.name()),
    }
}

/// README's configuration table, one row per setting.
pub fn markdown_table() -> String {
    let mut table = String::from("| setting | default | range | notes |\n|---|---|---|---|\n");
    for s in SETTINGS {
        table.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            s.name,
            show(s.unit, s.default),
            show_range(s.unit, s.min, s.max),
            s.doc
        ));
    }
    for c in CHOICES {
        table.push_str(&format!(
            "| `{}` | `{}` | {} | {} |\n",
            c.name,
            c.default(),
            c.options
                .iter()
                .map(|o| format!("`{o}`"))
                .collect::<Vec<_>>()
                .join(", "),
            c.doc
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_setting_is_named_once_and_its_default_is_in_range() {
        for (i, s) in SETTINGS.iter().enumerate() {
            assert!(
                SETTINGS[..i].iter().all(|t| t.name != s.name),
                "{} is declared twice",
                s.name
            );
            assert!(s.min <= s.default && s.default <= s.max, "{s:?}");
            assert!(s.check(s.default).is_ok());
            assert!(
                !s.doc.is_empty() && s.name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            );
        }
    }

    #[test]
    fn out_of_range_values_get_one_message_format() {
        let queue = setting("send_queue").unwrap();
        assert_eq!(
            queue.check(63).unwrap_err(),
            "must be between 64 and 1048576 frames, not 63"
        );
        assert!(queue.check(64).is_ok() && queue.check(1 << 20).is_ok());
        assert!(queue.check((1 << 20) + 1).is_err());
        let settle = setting("settle").unwrap();
        assert_eq!(settle.check(0).unwrap_err(), "must be greater than zero");
        assert_eq!(
            settle.check(DAY + 1).unwrap_err(),
            format!("must be between 1 and {DAY} ms, not {}", DAY + 1)
        );
    }

    #[test]
    fn choices_are_named_once_among_all_settings_and_refuse_other_names() {
        for (i, c) in CHOICES.iter().enumerate() {
            assert!(
                CHOICES[..i].iter().all(|d| d.name != c.name) && setting(c.name).is_none(),
                "{} is declared twice",
                c.name
            );
            assert!(c.options.len() >= 2 && c.check(c.default()).is_ok());
        }
        let quorum = choice("quorum").unwrap();
        assert_eq!(quorum.default(), "any");
        assert_eq!(
            quorum.check("most").unwrap_err(),
            "must be \"any\" or \"majority\", not \"most\""
        );
        assert_eq!(quorum.flag(), "quorum");
        assert_eq!(quorum.c_setter(), "minishard_config_set_quorum");
        let options: Vec<&str> = crate::core::Quorum::ALL
            .iter()
            .map(|q| q.as_str())
            .collect();
        assert_eq!(
            quorum.options, options,
            "the list names every Quorum, the default first"
        );
        assert_eq!(crate::core::Quorum::default().as_str(), quorum.default());
    }

    #[test]
    fn names_of_the_other_surfaces() {
        let grace = setting("node_grace").unwrap();
        assert_eq!(grace.flag(), "node-grace-ms");
        assert_eq!(grace.c_setter(), "minishard_config_set_node_grace_ms");
        let queue = setting("send_queue").unwrap();
        assert_eq!(queue.flag(), "send-queue");
        assert_eq!(queue.c_setter(), "minishard_config_set_send_queue");
        assert_eq!(show(Unit::Millis, 5000), "5 s");
        assert_eq!(show(Unit::Millis, 1500), "1500 ms");
        assert_eq!(show(Unit::Bytes, 1 << 20), "1 MiB");
        assert_eq!(show(Unit::Bytes, 4096), "4 KiB");
        assert_eq!(show(Unit::Millis, DAY), "1 day");
    }
}
