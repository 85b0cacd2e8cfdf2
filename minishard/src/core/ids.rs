//! Who is who: node addresses, incarnations and roles.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
// `core::net`: address values only, no sockets (the core does no I/O).
use core::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest accepted node address, in bytes (a DNS name is at most 253).
pub const MAX_ADDRESS_LEN: usize = 261;

/// A node's identity: the address it advertises, `host:port`.
///
/// Cloning is a reference-count increment, so lookups can hand out owners
/// without allocating.
///
/// Node ids are ordered as addresses, not as text: IP addresses first, by
/// their numeric value (`10.0.0.2` before `10.0.0.10`; IPv4 before IPv6),
/// then host names, alphabetically; then by port, numerically. Every node
/// orders ids alike, which the pairing of standbys with shards and the
/// tie-break of conflicts rely on (docs/design.md 6.2, 6.3).
#[derive(Clone)]
pub struct NodeId(Arc<Address>);

#[derive(Debug)]
struct Address {
    text: Box<str>,
    /// The sort order in integers, to compare first: the pairing, relays
    /// and views compare ids in their innermost loops, and a 50-node heal
    /// spent a third of its CPU in address comparisons. `(0, v4, port)`,
    /// `(1, v6, port)`, `(2, 0, 0)` for a name (the name sorts before the
    /// port, so names compare in full).
    key: (u8, u128, u16),
    order: (Host, u16),
}

/// The host part of an address, as it sorts.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Host {
    Ip(IpAddr),
    Name(Box<str>),
}

impl PartialEq for NodeId {
    fn eq(&self, other: &NodeId) -> bool {
        // The key follows from the text: different keys, different texts.
        Arc::ptr_eq(&self.0, &other.0) || (self.0.key == other.0.key && self.0.text == other.0.text)
    }
}

impl Eq for NodeId {}

impl Hash for NodeId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.text.hash(state);
    }
}

impl Ord for NodeId {
    fn cmp(&self, other: &NodeId) -> Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return Ordering::Equal;
        }
        // The key orders as `order` does, up to the host name.
        self.0.key.cmp(&other.0.key).then_with(|| {
            // Text last: two spellings of one host (`Db:1`, `db:1`) still differ.
            (&self.0.order, &self.0.text).cmp(&(&other.0.order, &other.0.text))
        })
    }
}

impl PartialOrd for NodeId {
    fn partial_cmp(&self, other: &NodeId) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Why a string is not a node address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressError {
    /// The rejected text (truncated if very long).
    pub address: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid node address {:?}: {} (expected host:port)",
            self.address, self.reason
        )
    }
}

impl std::error::Error for AddressError {}

impl NodeId {
    /// Parses `host:port` (`[v6]:port` for IPv6). The host is not resolved.
    pub fn parse(text: &str) -> Result<NodeId, AddressError> {
        let fail = |reason| AddressError {
            address: text.chars().take(80).collect(),
            reason,
        };
        if text.len() > MAX_ADDRESS_LEN {
            return Err(fail("too long"));
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(|| fail("no port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| fail("port is not a number 1-65535"))?;
        if port == 0 {
            return Err(fail("port 0 cannot be advertised"));
        }
        if host.is_empty() {
            return Err(fail("empty host"));
        }
        let bare = match host.strip_prefix('[') {
            Some(inner) => inner
                .strip_suffix(']')
                .ok_or_else(|| fail("unclosed '[' in IPv6 host"))?,
            None if host.contains(':') => return Err(fail("IPv6 hosts need brackets")),
            None => host,
        };
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
        if bare.is_empty() || !bare.chars().all(allowed) {
            return Err(fail("host has characters not allowed in a name or IP"));
        }
        let host = match bare.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(bare.to_ascii_lowercase().into()),
        };
        let key = match host {
            Host::Ip(IpAddr::V4(ip)) => (0, u128::from(u32::from(ip)), port),
            Host::Ip(IpAddr::V6(ip)) => (1, u128::from(ip), port),
            // The name sorts before the port: names compare in full.
            Host::Name(_) => (2, 0, 0),
        };
        Ok(NodeId(Arc::new(Address {
            text: text.into(),
            key,
            order: (host, port),
        })))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0.text
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.text)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.text)
    }
}

impl std::str::FromStr for NodeId {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<NodeId, AddressError> {
        NodeId::parse(s)
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.text)
    }
}

// A peer's bytes become a NodeId only if they parse: nothing downstream has to
// defend against an empty or 1 MiB "address".
impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<NodeId, D::Error> {
        deserializer.deserialize_str(AddressVisitor)
    }
}

struct AddressVisitor;

impl serde::de::Visitor<'_> for AddressVisitor {
    type Value = NodeId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a node address, host:port")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<NodeId, E> {
        parse_known(text).map_err(E::custom)
    }
}

/// How many addresses a thread remembers as parsed: a cluster's worth.
const KNOWN_ADDRESSES: usize = 4096;

thread_local! {
    /// Addresses this thread has parsed from peers' messages. Every record
    /// names the peers its author sees, so a node decodes the same few
    /// addresses over and over: at 50 nodes, parsing them took a fifth of
    /// a heal's CPU. A remembered id is also the same allocation as the
    /// others, which makes comparing them a pointer comparison.
    static KNOWN: std::cell::RefCell<std::collections::HashMap<Box<str>, NodeId>> =
        std::cell::RefCell::default();
}

/// [`NodeId::parse`], remembering what parsed.
fn parse_known(text: &str) -> Result<NodeId, AddressError> {
    if let Some(id) = KNOWN.with_borrow(|known| known.get(text).cloned()) {
        return Ok(id);
    }
    let id = NodeId::parse(text)?;
    KNOWN.with_borrow_mut(|known| {
        if known.len() >= KNOWN_ADDRESSES {
            known.clear();
        }
        known.insert(text.into(), id.clone());
    });
    Ok(id)
}

/// A random number drawn at each start of a node, so a restarted node is new.
pub type Incarnation = u64;

/// What a node is in a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// In the member list: can host a shard.
    Member,
    /// Not in the member list: sees the shard map, never hosts a shard.
    Observer,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_as_addresses_not_as_text() {
        let id = |s: &str| NodeId::parse(s).unwrap();
        assert!(id("10.0.0.2:7000") < id("10.0.0.10:7000"));
        assert!(id("10.0.0.2:7000") < id("10.0.0.2:10000"));
        assert!(id("9.255.0.1:1") < id("10.0.0.1:1"));
        assert!(id("10.0.0.1:1") < id("[::1]:1"), "IPv4 before IPv6");
        assert!(id("[::1]:1") < id("a.example:1"), "addresses before names");
        assert!(id("a.example:1") < id("b.example:1"));
        assert!(
            id("a.example:2") < id("b.example:1"),
            "the name before the port"
        );
        assert!(id("a.example:1") < id("a.example:2"));
        assert!(id("[::1]:2") < id("[::2]:1"), "the address before the port");
        assert_eq!(id("10.0.0.2:7000"), id("10.0.0.2:7000"));
        assert_ne!(id("Db:1"), id("db:1"));
    }

    #[test]
    fn accepts_hosts_ipv4_and_bracketed_ipv6() {
        for ok in ["127.0.0.1:7000", "node-3.example:1", "[::1]:65535", "a_b:9"] {
            assert_eq!(NodeId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_what_cannot_be_dialled() {
        for bad in [
            "",
            "host",
            ":80",
            "host:",
            "host:0",
            "host:65536",
            "host:x",
            "::1:80",
            "[::1:80",
            "a b:80",
            "h\u{e9}:80",
        ] {
            let err = NodeId::parse(bad).unwrap_err();
            assert!(err.to_string().contains("host:port"), "{bad}: {err}");
        }
        assert!(NodeId::parse(&format!("{}:1", "a".repeat(300))).is_err());
    }
}
