//! The handshake, as a sans-IO state machine: mutual authentication of two
//! nodes with the cluster's cookie (docs/design.md 8.3).
//!
//! ```text
//! dialer                                  listener
//!   Hello {version, cluster, id, incarnation, role, nonce_d}  ->
//!                     <-  Challenge {id, incarnation, role, nonce_l, mac_l}
//!   Proof {mac_d}                                             ->
//!                     <-  Welcome            (or Refused {reason} at any step)
//! ```
//! `mac_l` and `mac_d` are HMAC-SHA256 with the cookie as key over the whole
//! transcript (both nonces, both identities) with a different label each, so
//! the cookie never crosses the wire, each side proves it knows it, and a
//! recorded handshake is useless: the other side's fresh nonce differs.
//!
//! MACs are checked with `hmac`'s `Mac::verify_slice`, which compares with
//! `subtle::ConstantTimeEq`: how long a refusal takes says nothing about how
//! many bytes of a forged MAC were right. Never compare tags with `==`.
//!
//! Each side also comes out with the connection's keys ([`Established`]),
//! derived from the cookie and both nonces ([`super::seal`]): every frame
//! after the handshake is sealed with them, so nobody on the path can read,
//! inject, replay or reorder frames once the connection is up.
//!
//! What the handshake does not do: the listener sends its MAC before the
//! dialer has proved anything, so anyone who can connect can get one MAC to
//! attack the cookie offline: cookies must be long and random.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::seal::{SessionKeys, Side};
use super::{Frame, PROTOCOL_VERSION};
use crate::core::{Incarnation, NodeId, Role};

/// A fresh random value, one per handshake per side.
pub type Nonce = [u8; 32];

/// A message authentication code.
pub type Tag = [u8; 32];

/// The dialling node's introduction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version it speaks.
    pub version: u16,
    /// The cluster it wants to join.
    pub cluster: String,
    /// Its advertised address.
    pub node: NodeId,
    /// Its incarnation.
    pub incarnation: Incarnation,
    /// Member or observer.
    pub role: Role,
    /// Its fresh nonce.
    pub nonce: Nonce,
}

/// The listening node's introduction and proof of the cookie.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// Its advertised address.
    pub node: NodeId,
    /// Its incarnation.
    pub incarnation: Incarnation,
    /// Member or observer.
    pub role: Role,
    /// Its fresh nonce.
    pub nonce: Nonce,
    /// HMAC over the transcript, labelled for the listener.
    pub mac: Tag,
}

/// The dialling node's proof of the cookie.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// HMAC over the transcript, labelled for the dialer.
    pub mac: Tag,
}

/// Who this node is, for handshakes.
#[derive(Clone)]
pub struct Identity {
    /// The cluster's name.
    pub cluster: String,
    /// This node's advertised address.
    pub node: NodeId,
    /// This node's incarnation.
    pub incarnation: Incarnation,
    /// Member or observer.
    pub role: Role,
    /// The shared secret. Never printed, never sent.
    pub cookie: Arc<[u8]>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("cluster", &self.cluster)
            .field("node", &self.node)
            .field("incarnation", &self.incarnation)
            .field("role", &self.role)
            .field("cookie", &"<secret>")
            .finish()
    }
}

/// What the handshake established about the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerFacts {
    /// Its advertised address.
    pub node: NodeId,
    /// Its incarnation.
    pub incarnation: Incarnation,
    /// Member or observer.
    pub role: Role,
}

/// A handshake that succeeded: who the peer is, and this side's keys for
/// the frames that follow.
#[derive(Debug)]
pub struct Established {
    /// What the handshake established about the peer.
    pub peer: PeerFacts,
    /// Seals what this side sends and opens what it receives.
    pub keys: SessionKeys,
}

/// Why a handshake was refused. A node acts on this, never on the text: a
/// member refused as not in the list stops counting itself (docs/design.md 6.6),
/// and refusals are counted per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefusalKind {
    /// The dialer joins as a member and the listener's member list does not
    /// have it.
    NotAMember,
    /// The dialer joins as an observer under a member's address.
    ObserverAtMemberAddress,
    /// A proof did not match: the two nodes' cookies differ.
    WrongCookie,
    /// The dialer wants another cluster.
    WrongCluster,
    /// The dialer speaks another protocol version.
    WrongVersion,
    /// The node answering at an address is another node, or the dialer
    /// claims the listener's own address.
    WrongNode,
    /// Another incarnation of the dialer is still connected.
    SecondIncarnation,
    /// Too many handshakes under way.
    Busy,
    /// TLS failed, or the certificate does not name the node.
    Tls,
    /// The handshake broke the protocol (an unexpected or malformed frame).
    Protocol,
    /// The connection failed or timed out during the handshake.
    Connection,
    /// Cut off on purpose by the test hooks.
    Cut,
}

/// Who ended a handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refuser {
    /// This node refused the peer (and tells it why).
    ThisNode,
    /// The peer refused this node.
    Peer,
    /// Nobody: the connection failed or timed out.
    Neither,
}

/// A handshake that failed, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// What failed.
    pub kind: RefusalKind,
    /// A reason fit for a log line on both sides.
    pub reason: String,
    /// Who ended it.
    pub refuser: Refuser,
    /// The node the dialer said it was, once its hello was read (not yet
    /// proven: for logs).
    pub claimed: Option<NodeId>,
}

impl Refusal {
    /// This node refuses the peer, and tells it why.
    pub fn ours(kind: RefusalKind, reason: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            reason: reason.into(),
            refuser: Refuser::ThisNode,
            claimed: None,
        }
    }

    /// The handshake failed with nobody to tell (the connection broke).
    pub fn failed(kind: RefusalKind, reason: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            reason: reason.into(),
            refuser: Refuser::Neither,
            claimed: None,
        }
    }

    fn unexpected(expected: &str, got: Frame) -> Refusal {
        match got {
            Frame::Refused { kind, reason } => Refusal {
                kind,
                reason: format!("refused by the peer: {}", peer_text(&reason)),
                refuser: Refuser::Peer,
                claimed: None,
            },
            other => Refusal::ours(
                RefusalKind::Protocol,
                format!(
                    "expected {expected} during the handshake, got {}",
                    other.kind()
                ),
            ),
        }
    }

    fn claimed_by(mut self, node: &NodeId) -> Refusal {
        self.claimed = Some(node.clone());
        self
    }

    /// The frame that tells the peer, if it should be told.
    pub fn frame(&self) -> Option<Frame> {
        (self.refuser == Refuser::ThisNode).then(|| Frame::Refused {
            kind: self.kind,
            reason: self.reason.clone(),
        })
    }
}

/// The longest piece of a peer's text that goes into a log line.
pub const PEER_TEXT_MAX: usize = 200;

/// A peer's free text (a refusal's reason, a cluster name), made fit for a
/// log line: at most [`PEER_TEXT_MAX`] characters, control characters
/// escaped, so a peer can neither forge log lines nor flood them.
pub fn peer_text(text: &str) -> String {
    let mut shown = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == PEER_TEXT_MAX {
            shown.push_str("...");
            break;
        }
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

#[derive(Serialize)]
struct Transcript<'a> {
    label: &'static str,
    hello: &'a Hello,
    node: &'a NodeId,
    incarnation: Incarnation,
    role: Role,
    nonce: &'a Nonce,
}

fn mac(
    cookie: &[u8],
    label: &'static str,
    hello: &Hello,
    listener: &PeerFacts,
    nonce: &Nonce,
) -> Hmac<Sha256> {
    let transcript = Transcript {
        label,
        hello,
        node: &listener.node,
        incarnation: listener.incarnation,
        role: listener.role,
        nonce,
    };
    let bytes = bincode::serde::encode_to_vec(&transcript, bincode::config::standard())
        .expect("a transcript always encodes");
    let mut mac = Hmac::<Sha256>::new_from_slice(cookie).expect("HMAC takes keys of any length");
    mac.update(b"minishard handshake v1\0");
    mac.update(&bytes);
    mac
}

const LISTENER: &str = "listener";
const DIALER: &str = "dialer";

/// The dialer, after sending its [`Hello`].
#[derive(Debug)]
pub struct Dialing {
    me: Identity,
    target: NodeId,
    hello: Hello,
}

impl Dialing {
    /// Starts a handshake with the node advertised as `target`.
    pub fn start(me: Identity, target: NodeId, nonce: Nonce) -> (Dialing, Frame) {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            cluster: me.cluster.clone(),
            node: me.node.clone(),
            incarnation: me.incarnation,
            role: me.role,
            nonce,
        };
        let frame = Frame::Hello(hello.clone());
        (Dialing { me, target, hello }, frame)
    }

    /// Checks the listener's [`Challenge`]; answers with a [`Proof`].
    pub fn on_challenge(self, frame: Frame) -> Result<(AwaitingWelcome, Frame), Refusal> {
        let Frame::Challenge(challenge) = frame else {
            return Err(Refusal::unexpected("a challenge", frame));
        };
        let listener = PeerFacts {
            node: challenge.node.clone(),
            incarnation: challenge.incarnation,
            role: challenge.role,
        };
        if listener.node != self.target {
            return Err(Refusal::ours(
                RefusalKind::WrongNode,
                format!(
                    "dialled {} but the node there says it is {}",
                    self.target, listener.node
                ),
            ));
        }
        mac(
            &self.me.cookie,
            LISTENER,
            &self.hello,
            &listener,
            &challenge.nonce,
        )
        // Constant time (see the module's doc).
        .verify_slice(&challenge.mac)
        .map_err(|_| {
            Refusal::ours(
                RefusalKind::WrongCookie,
                "the listener does not know the cluster's cookie",
            )
        })?;
        let proof = mac(
            &self.me.cookie,
            DIALER,
            &self.hello,
            &listener,
            &challenge.nonce,
        )
        .finalize()
        .into_bytes()
        .into();
        let keys = SessionKeys::derive(
            &self.me.cookie,
            &self.hello.nonce,
            &challenge.nonce,
            Side::Dialer,
        );
        Ok((
            AwaitingWelcome {
                peer: listener,
                keys,
            },
            Frame::Proof(Proof { mac: proof }),
        ))
    }
}

/// The dialer, after sending its [`Proof`].
#[derive(Debug)]
pub struct AwaitingWelcome {
    peer: PeerFacts,
    keys: SessionKeys,
}

impl AwaitingWelcome {
    /// The listener accepted: the handshake is done.
    pub fn on_welcome(self, frame: Frame) -> Result<Established, Refusal> {
        match frame {
            Frame::Welcome => Ok(Established {
                peer: self.peer,
                keys: self.keys,
            }),
            other => Err(Refusal::unexpected("welcome", other)),
        }
    }
}

/// The listener, after answering a [`Hello`] with a [`Challenge`].
#[derive(Debug)]
pub struct Answering {
    hello: Hello,
    me: PeerFacts,
    nonce: Nonce,
    cookie: Arc<[u8]>,
}

impl Answering {
    /// Checks a dialer's [`Hello`]: protocol version, cluster, identity, and
    /// `admit`, which says whether this node may join (the member list).
    /// Answers with a [`Challenge`].
    pub fn on_hello(
        me: &Identity,
        frame: Frame,
        nonce: Nonce,
        admit: impl FnOnce(&PeerFacts) -> Result<(), (RefusalKind, String)>,
    ) -> Result<(Answering, Frame), Refusal> {
        let Frame::Hello(hello) = frame else {
            return Err(Refusal::unexpected("hello", frame));
        };
        if hello.version != PROTOCOL_VERSION {
            return Err(Refusal::ours(
                RefusalKind::WrongVersion,
                format!(
                    "protocol version {} is not supported (this node speaks {PROTOCOL_VERSION})",
                    hello.version
                ),
            ));
        }
        if hello.cluster != me.cluster {
            return Err(Refusal::ours(
                RefusalKind::WrongCluster,
                format!(
                    "wrong cluster \"{}\" (this node is in \"{}\")",
                    peer_text(&hello.cluster),
                    peer_text(&me.cluster)
                ),
            ));
        }
        if hello.node == me.node {
            return Err(Refusal::ours(
                RefusalKind::WrongNode,
                format!("{} is this node's own address", hello.node),
            )
            .claimed_by(&hello.node));
        }
        let dialer = PeerFacts {
            node: hello.node.clone(),
            incarnation: hello.incarnation,
            role: hello.role,
        };
        admit(&dialer)
            .map_err(|(kind, reason)| Refusal::ours(kind, reason).claimed_by(&dialer.node))?;
        let mine = PeerFacts {
            node: me.node.clone(),
            incarnation: me.incarnation,
            role: me.role,
        };
        let tag = mac(&me.cookie, LISTENER, &hello, &mine, &nonce)
            .finalize()
            .into_bytes()
            .into();
        let challenge = Frame::Challenge(Challenge {
            node: mine.node.clone(),
            incarnation: mine.incarnation,
            role: mine.role,
            nonce,
            mac: tag,
        });
        let answering = Answering {
            hello,
            me: mine,
            nonce,
            cookie: me.cookie.clone(),
        };
        Ok((answering, challenge))
    }

    /// Checks the dialer's [`Proof`]; on success send [`Frame::Welcome`].
    pub fn on_proof(self, frame: Frame) -> Result<Established, Refusal> {
        let Frame::Proof(proof) = frame else {
            return Err(Refusal::unexpected("a proof", frame));
        };
        // Constant time (see the module's doc).
        mac(&self.cookie, DIALER, &self.hello, &self.me, &self.nonce)
            .verify_slice(&proof.mac)
            .map_err(|_| {
                Refusal::ours(
                    RefusalKind::WrongCookie,
                    "wrong cookie: the proof does not match",
                )
                .claimed_by(&self.hello.node)
            })?;
        let keys =
            SessionKeys::derive(&self.cookie, &self.hello.nonce, &self.nonce, Side::Listener);
        Ok(Established {
            peer: PeerFacts {
                node: self.hello.node,
                incarnation: self.hello.incarnation,
                role: self.hello.role,
            },
            keys,
        })
    }
}

/// A fresh nonce from the operating system's generator.
pub fn fresh_nonce() -> Nonce {
    rand::random()
}
