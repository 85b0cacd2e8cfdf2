//! The engine's configuration: where to listen, the cookie, timings and
//! limits. Every numeric setting's name, unit, default and range is declared
//! once, in [`crate::settings`]; this file holds the fields.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::core::{Metadata, NodeId, Quorum, Timings};
use crate::error::Error;
use crate::settings::{self, default_count, default_duration, Unit};

// The public bounds below are the settings' ranges (checked by a test).

/// The smallest per-peer send queue a configuration may set.
pub const MIN_SEND_QUEUE: usize = 64;
/// The largest send queue, in frames: beyond it a slow peer would hold
/// gigabytes before it is dropped (and the queue could not be allocated).
pub const MAX_SEND_QUEUE: usize = 1 << 20;
/// The most connections a listener lets handshake at once, in all or from
/// one address: more sockets than a process may usually open.
pub const MAX_HANDSHAKES: usize = 1 << 16;

/// The most bytes of metadata (keys and values together) a node publishes.
pub const MAX_METADATA_BYTES: usize = 4096;
/// The most metadata entries a node publishes.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// The longest metadata key, in bytes.
pub const MAX_METADATA_KEY_LEN: usize = 128;
/// The most requests a handle may have in flight, and a peer in its queue
/// here, that a configuration may set.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 1 << 20;

/// Where callbacks run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dispatch {
    /// On a callback thread of the handle's own (the default).
    #[default]
    Thread,
    /// On the host's thread: `nodes` and `shard_count` inside
    /// [`crate::Cluster::join`], the others only inside
    /// [`crate::Cluster::dispatch`] (and `leave`); the descriptor from
    /// [`crate::Cluster::event_fd`] becomes readable when callbacks are
    /// pending.
    Host,
}

/// Something the mesh did, reported for logs and tools (not a callback).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeshNotice {
    /// A handshake with a peer completed.
    PeerUp {
        /// The peer.
        peer: NodeId,
    },
    /// A connection to a peer ended.
    PeerDown {
        /// The peer.
        peer: NodeId,
        /// Why.
        reason: String,
    },
    /// A connection was refused or closed for misbehaving.
    Refused {
        /// Who it claimed to be, or its socket address.
        peer: String,
        /// Why.
        reason: String,
    },
}

/// A function told about every [`MeshNotice`], on the engine's network
/// thread: it must return quickly.
pub type NoticeHook = Arc<dyn Fn(&MeshNotice) + Send + Sync>;

/// The PEM files for mutual TLS between the nodes (see README's Security
/// section). Every node of a cluster uses a certificate signed by the same
/// CA; the cookie is still checked on top.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate chain (its own certificate first). A member's
    /// certificate must be valid for the host of its advertised address (an
    /// IP SAN for an IP address).
    pub cert: PathBuf,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The cluster's CA certificate(s): peers must present a certificate it
    /// signed.
    pub ca: PathBuf,
}

/// Settings for one node in one cluster.
#[derive(Clone)]
pub struct Config {
    /// The address to listen on, `host:port`. Port 0 picks a free port (then
    /// the advertised address is the one bound).
    pub listen: String,
    /// The address peers know this node by, if not `listen`.
    pub advertise: Option<String>,
    /// The cluster's shared secret. Must not be empty.
    pub cookie: Vec<u8>,
    /// Protocol timings.
    pub timings: Timings,
    /// The members this node must see to hold shards: `shard_count` of
    /// them, or in [`Quorum::Majority`] a strict majority of the member
    /// list too (docs/design.md 6.7).
    pub quorum: Quorum,
    /// Join as an observer: see the shard map, never host a shard.
    pub observer: bool,
    /// Where callbacks run.
    pub dispatch: Dispatch,
    /// The largest frame accepted, in bytes.
    pub frame_limit: usize,
    /// How long a connection may take to authenticate.
    pub handshake_timeout: Duration,
    /// Connections allowed to be in their handshake at once (at most
    /// [`MAX_HANDSHAKES`]).
    pub max_handshakes: usize,
    /// Of those, from one source address (at most [`MAX_HANDSHAKES`]).
    pub max_handshakes_per_source: usize,
    /// Frames queued for one peer before it is considered too slow and
    /// disconnected (at least [`MIN_SEND_QUEUE`], at most [`MAX_SEND_QUEUE`]).
    pub send_queue: usize,
    /// Told about connections coming and going and refusals.
    pub notice_hook: Option<NoticeHook>,
    /// Mutual TLS between the nodes, if set; plain TCP otherwise.
    pub tls: Option<TlsFiles>,
    /// A small string map published with this node's record (e.g. the
    /// address of its own HTTP endpoint), for applications that route with
    /// their own transport: see [`crate::Cluster::node_metadata`]. At most
    /// [`MAX_METADATA_ENTRIES`] entries and [`MAX_METADATA_BYTES`] bytes;
    /// keys are 1 to [`MAX_METADATA_KEY_LEN`] bytes without control
    /// characters.
    pub metadata: Metadata,
    /// Requests this handle may have in flight at once (waiting for an
    /// owner, sent, or queued for its own handler); beyond it a request
    /// fails `Overloaded` at once. Also the most requests from all peers
    /// that may wait here for this node's handler.
    pub max_requests_in_flight: usize,
    /// Requests in flight to one peer, and from one peer waiting here for
    /// this node's handler; beyond it `Overloaded`.
    pub max_requests_per_peer: usize,
    /// How long a next owner's `allocated` (or a winner's `prolonged`)
    /// waits for a hand-off still arriving (docs/design.md 11.8).
    pub hand_off_wait: Duration,
    /// The largest hand-off this node takes, in bytes.
    pub hand_off_limit: usize,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("cookie", &format_args!("<{} bytes>", self.cookie.len()))
            .field("timings", &self.timings)
            .field("quorum", &self.quorum)
            .field("observer", &self.observer)
            .field("dispatch", &self.dispatch)
            .field("frame_limit", &self.frame_limit)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_handshakes", &self.max_handshakes)
            .field("max_handshakes_per_source", &self.max_handshakes_per_source)
            .field("send_queue", &self.send_queue)
            .field("tls", &self.tls)
            .field("metadata", &self.metadata)
            .field("max_requests_in_flight", &self.max_requests_in_flight)
            .field("max_requests_per_peer", &self.max_requests_per_peer)
            .field("hand_off_wait", &self.hand_off_wait)
            .field("hand_off_limit", &self.hand_off_limit)
            .finish()
    }
}

impl Config {
    /// Defaults for a node listening on `listen` with `cookie`.
    pub fn new(listen: impl Into<String>, cookie: impl Into<Vec<u8>>) -> Config {
        Config {
            listen: listen.into(),
            advertise: None,
            cookie: cookie.into(),
            timings: Timings::default(),
            quorum: Quorum::default(),
            observer: false,
            dispatch: Dispatch::Thread,
            frame_limit: default_count("frame_limit"),
            handshake_timeout: default_duration("handshake_timeout"),
            max_handshakes: default_count("max_handshakes"),
            max_handshakes_per_source: default_count("max_handshakes_per_source"),
            send_queue: default_count("send_queue"),
            notice_hook: None,
            tls: None,
            metadata: Metadata::new(),
            max_requests_in_flight: default_count("max_requests_in_flight"),
            max_requests_per_peer: default_count("max_requests_per_peer"),
            hand_off_wait: default_duration("hand_off_wait"),
            hand_off_limit: default_count("hand_off_limit"),
        }
    }

    /// Checks everything that can be checked before touching the network.
    pub fn validate(&self) -> Result<(), Error> {
        if self.cookie.is_empty() {
            return Err(Error::Config(
                "the cookie is empty: every node of a cluster needs the same non-empty secret"
                    .into(),
            ));
        }
        listen_port(&self.listen)?;
        if let Some(advertise) = &self.advertise {
            NodeId::parse(advertise)?;
        }
        self.timings.validate()?;
        for setting in settings::SETTINGS {
            let value = self.get(setting.name).ok_or_else(|| {
                Error::Config(format!("setting {} has no field in Config", setting.name))
            })?;
            setting
                .check(value)
                .map_err(|why| Error::Config(format!("{} {why}", setting.name)))?;
        }
        validate_metadata(&self.metadata)
    }

    /// Sets the numeric setting `name` (one of [`crate::settings::SETTINGS`])
    /// to `value`, in its unit (milliseconds for a timing), refusing an
    /// unknown name or a value out of range with the message `join` would
    /// give.
    pub fn set(&mut self, name: &str, value: u64) -> Result<(), Error> {
        let setting = settings::setting(name)
            .ok_or_else(|| Error::Config(format!("there is no setting {name:?}")))?;
        setting
            .check(value)
            .map_err(|why| Error::Config(format!("{name} {why}")))?;
        match self.slot(name) {
            Some(Slot::Duration(field)) => *field = Duration::from_millis(value),
            Some(Slot::Count(field)) => {
                *field = usize::try_from(value).map_err(|_| {
                    Error::Config(format!("{name} does not fit this machine's usize"))
                })?
            }
            None => {
                return Err(Error::Config(format!(
                    "setting {name} has no field in Config"
                )))
            }
        }
        Ok(())
    }

    /// Sets the choice `name` (one of [`crate::settings::CHOICES`]) to the
    /// option called `value`, refusing an unknown name or option with the
    /// message `join` would give.
    pub fn set_choice(&mut self, name: &str, value: &str) -> Result<(), Error> {
        let choice = settings::choice(name)
            .ok_or_else(|| Error::Config(format!("there is no setting {name:?}")))?;
        choice
            .check(value)
            .map_err(|why| Error::Config(format!("{name} {why}")))?;
        match name {
            "quorum" => self.quorum = value.parse()?,
            _ => {
                return Err(Error::Config(format!(
                    "setting {name} has no field in Config"
                )))
            }
        }
        Ok(())
    }

    /// The option the choice `name` is set to.
    pub fn get_choice(&self, name: &str) -> Option<&'static str> {
        match name {
            "quorum" => Some(self.quorum.as_str()),
            _ => None,
        }
    }

    /// Sets the timing `name` to `value` exactly (below a millisecond too),
    /// refusing what [`Config::set`] refuses.
    pub fn set_duration(&mut self, name: &str, value: Duration) -> Result<(), Error> {
        self.set(name, settings::whole_millis(value))?;
        match self.slot(name) {
            Some(Slot::Duration(field)) => *field = value,
            _ => return Err(Error::Config(format!("{name} is not a timing"))),
        }
        Ok(())
    }

    /// The value of the numeric setting `name`, in its unit (whole
    /// milliseconds for a timing).
    pub fn get(&self, name: &str) -> Option<u64> {
        match self.clone().slot(name)? {
            Slot::Duration(field) => Some(settings::whole_millis(*field)),
            Slot::Count(field) => Some(u64::try_from(*field).unwrap_or(u64::MAX)),
        }
    }

    /// The field of setting `name`: the one place, with `Timings::slot`,
    /// where a setting's name meets its field.
    fn slot(&mut self, name: &str) -> Option<Slot<'_>> {
        let slot = match name {
            "frame_limit" => Slot::Count(&mut self.frame_limit),
            "handshake_timeout" => Slot::Duration(&mut self.handshake_timeout),
            "max_handshakes" => Slot::Count(&mut self.max_handshakes),
            "max_handshakes_per_source" => Slot::Count(&mut self.max_handshakes_per_source),
            "send_queue" => Slot::Count(&mut self.send_queue),
            "max_requests_in_flight" => Slot::Count(&mut self.max_requests_in_flight),
            "max_requests_per_peer" => Slot::Count(&mut self.max_requests_per_peer),
            "hand_off_wait" => Slot::Duration(&mut self.hand_off_wait),
            "hand_off_limit" => Slot::Count(&mut self.hand_off_limit),
            _ => Slot::Duration(self.timings.slot(name)?),
        };
        // A field of the wrong kind for its unit would convert wrongly.
        let timing = settings::setting(name).is_some_and(|s| s.unit == Unit::Millis);
        debug_assert_eq!(timing, matches!(slot, Slot::Duration(_)), "{name}");
        Some(slot)
    }
}

/// A setting's field, by kind.
enum Slot<'a> {
    Duration(&'a mut Duration),
    Count(&'a mut usize),
}

/// Checks a node's metadata against the limits of [`Config::metadata`].
pub fn validate_metadata(metadata: &Metadata) -> Result<(), Error> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(Error::Config(format!(
            "metadata has {} entries; at most {MAX_METADATA_ENTRIES} are allowed",
            metadata.len()
        )));
    }
    let mut total = 0;
    for (key, value) in metadata {
        if key.is_empty() || key.len() > MAX_METADATA_KEY_LEN {
            return Err(Error::Config(format!(
                "metadata key {key:?} must be 1 to {MAX_METADATA_KEY_LEN} bytes long"
            )));
        }
        if key.chars().any(char::is_control) {
            return Err(Error::Config(format!(
                "metadata key {key:?} contains a control character"
            )));
        }
        total += key.len() + value.len();
    }
    if total > MAX_METADATA_BYTES {
        return Err(Error::Config(format!(
            "metadata is {total} bytes (keys and values); at most {MAX_METADATA_BYTES} are allowed"
        )));
    }
    Ok(())
}

/// The port of a `host:port` listen address (0 allowed).
pub(crate) fn listen_port(listen: &str) -> Result<u16, Error> {
    let bad = |why: &str| {
        Error::Config(format!(
            "invalid listen address {listen:?}: {why} (expected host:port)"
        ))
    };
    let (host, port) = listen.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    port.parse()
        .map_err(|_| bad("port is not a number 0-65535"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        Config::new("127.0.0.1:7000", b"secret".to_vec())
            .validate()
            .unwrap();
        Config::new("localhost:0", b"s".to_vec())
            .validate()
            .unwrap();
    }

    #[test]
    fn every_setting_has_a_field_with_its_declared_default() {
        let config = Config::new("127.0.0.1:7000", b"secret".to_vec());
        for s in settings::SETTINGS {
            assert_eq!(config.get(s.name), Some(s.default), "{}", s.name);
        }
        assert_eq!(config.get("no_such_setting"), None);
    }

    #[test]
    fn set_takes_any_setting_in_range_and_refuses_the_rest() {
        for s in settings::SETTINGS {
            let mut config = Config::new("127.0.0.1:7000", b"secret".to_vec());
            for good in [s.min, s.max] {
                config.set(s.name, good).unwrap();
                assert_eq!(config.get(s.name), Some(good));
            }
            for bad in [s.min.wrapping_sub(1), s.max + 1] {
                let before = config.get(s.name);
                let err = config.set(s.name, bad).unwrap_err().to_string();
                assert!(err.contains(s.name) && err.contains("must be"), "{err}");
                assert_eq!(
                    config.get(s.name),
                    before,
                    "a refused value changes nothing"
                );
            }
        }
        let err = Config::new("127.0.0.1:7000", b"s".to_vec()).set("sendqueue", 100);
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("no setting \"sendqueue\""));
    }

    #[test]
    fn every_choice_has_a_field_set_by_name_and_refuses_other_names() {
        for c in settings::CHOICES {
            let mut config = Config::new("127.0.0.1:7000", b"secret".to_vec());
            assert_eq!(config.get_choice(c.name), Some(c.default()), "{}", c.name);
            for option in c.options {
                config.set_choice(c.name, option).unwrap();
                assert_eq!(config.get_choice(c.name), Some(*option));
            }
            let before = config.get_choice(c.name);
            let err = config
                .set_choice(c.name, "nonsense")
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("{} must be", c.name)), "{err}");
            assert_eq!(
                config.get_choice(c.name),
                before,
                "a refused value changes nothing"
            );
        }
        let mut config = Config::new("127.0.0.1:7000", b"s".to_vec());
        config.set_choice("quorum", "majority").unwrap();
        assert_eq!(config.quorum, Quorum::Majority);
        assert!(config.set_choice("quorom", "majority").is_err());
    }

    #[test]
    fn the_public_bounds_are_the_declared_ranges() {
        let range = |name| {
            let s = settings::setting(name).unwrap();
            (s.min, s.max, s.default)
        };
        assert_eq!(range("send_queue").0, MIN_SEND_QUEUE as u64);
        assert_eq!(range("send_queue").1, MAX_SEND_QUEUE as u64);
        assert_eq!(range("max_handshakes").1, MAX_HANDSHAKES as u64);
        assert_eq!(range("max_handshakes_per_source").1, MAX_HANDSHAKES as u64);
        assert_eq!(range("frame_limit").1, crate::wire::MAX_FRAME_LIMIT as u64);
        assert_eq!(
            range("max_requests_in_flight").1,
            MAX_REQUESTS_IN_FLIGHT as u64
        );
        assert_eq!(
            range("max_requests_per_peer").1,
            MAX_REQUESTS_IN_FLIGHT as u64
        );
        assert_eq!(
            range("frame_limit").2,
            crate::wire::DEFAULT_FRAME_LIMIT as u64
        );
    }

    #[test]
    fn bad_settings_are_refused_with_a_clear_message() {
        let ok = Config::new("127.0.0.1:7000", b"secret".to_vec());
        let cases: Vec<(Config, &str)> = vec![
            (
                Config {
                    cookie: vec![],
                    ..ok.clone()
                },
                "cookie is empty",
            ),
            (
                Config {
                    listen: "nowhere".into(),
                    ..ok.clone()
                },
                "invalid listen address",
            ),
            (
                Config {
                    listen: "h:99999".into(),
                    ..ok.clone()
                },
                "invalid listen address",
            ),
            (
                Config {
                    advertise: Some("h:0".into()),
                    ..ok.clone()
                },
                "port 0",
            ),
            (
                Config {
                    frame_limit: 10,
                    ..ok.clone()
                },
                "frame_limit",
            ),
            (
                Config {
                    send_queue: 0,
                    ..ok.clone()
                },
                "send_queue",
            ),
            (
                Config {
                    send_queue: usize::MAX,
                    ..ok.clone()
                },
                "send_queue must be between 64 and 1048576 frames",
            ),
            (
                Config {
                    max_handshakes: usize::MAX,
                    ..ok.clone()
                },
                "max_handshakes must be between 1 and 65536 connections",
            ),
            (
                Config {
                    metadata: [("".to_owned(), "x".to_owned())].into_iter().collect(),
                    ..ok.clone()
                },
                "metadata key",
            ),
            (
                Config {
                    metadata: [("k".to_owned(), "x".repeat(MAX_METADATA_BYTES))]
                        .into_iter()
                        .collect(),
                    ..ok.clone()
                },
                "at most 4096",
            ),
            (
                Config {
                    metadata: (0..=MAX_METADATA_ENTRIES)
                        .map(|i| (format!("k{i}"), String::new()))
                        .collect(),
                    ..ok.clone()
                },
                "entries",
            ),
            (
                Config {
                    max_requests_per_peer: 0,
                    ..ok.clone()
                },
                "max_requests_per_peer",
            ),
            (
                Config {
                    timings: Timings {
                        node_grace: Duration::from_millis(900),
                        ..Timings::default()
                    },
                    ..ok.clone()
                },
                "node_grace",
            ),
        ];
        for (config, expected) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }
}
