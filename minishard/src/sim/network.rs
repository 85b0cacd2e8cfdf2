//! The simulated network: TCP-like connections between nodes, directed cuts,
//! per-message latency, FIFO delivery per direction.
//!
//! A cut direction holds its messages (TCP retransmits them) and, once the
//! receiver has heard nothing for `heartbeat_timeout`, the connection dies
//! and both ends are told. That is what the real mesh does, so the core sees
//! the same events here as in production.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::core::{Incarnation, Instant, NodeId, PeerMessage};

/// One direction of a connection.
#[derive(Debug, Default)]
pub(super) struct Direction {
    last_delivery: Instant,
    /// Since when the receiver has heard nothing (the direction is cut).
    pub silent_since: Option<Instant>,
    held: Vec<PeerMessage>,
}

/// A connection between two node incarnations.
#[derive(Debug)]
pub(super) struct Conn {
    pub id: u64,
    /// `(node, incarnation)` of each end, the smaller address first.
    pub ends: [(NodeId, Incarnation); 2],
    dirs: [Direction; 2],
    /// Closing: no more messages are accepted; the ends are being told.
    pub closing: bool,
}

impl Conn {
    fn dir_index(&self, from: &NodeId) -> usize {
        usize::from(self.ends[0].0 != *from)
    }

    /// The incarnation at the `node` end.
    pub fn incarnation_of(&self, node: &NodeId) -> Incarnation {
        self.ends[usize::from(self.ends[0].0 != *node)].1
    }

    /// When the last message already sent in either direction arrives.
    pub fn drained_at(&self) -> Instant {
        self.dirs[0].last_delivery.max(self.dirs[1].last_delivery)
    }

    /// The direction from `from`.
    pub fn dir_mut(&mut self, from: &NodeId) -> &mut Direction {
        let i = self.dir_index(from);
        &mut self.dirs[i]
    }
}

/// A message on its way.
#[derive(Debug)]
pub(super) struct Delivery {
    pub at: Instant,
    pub conn: u64,
    pub from: NodeId,
    pub to: NodeId,
    pub message: PeerMessage,
}

/// Links, cuts and connections.
#[derive(Debug, Default)]
pub(super) struct Net {
    cut: BTreeSet<(NodeId, NodeId)>,
    conns: BTreeMap<(NodeId, NodeId), Conn>,
    next_conn: u64,
}

fn key(a: &NodeId, b: &NodeId) -> (NodeId, NodeId) {
    if a < b {
        (a.clone(), b.clone())
    } else {
        (b.clone(), a.clone())
    }
}

impl Net {
    pub fn is_cut(&self, from: &NodeId, to: &NodeId) -> bool {
        self.cut.contains(&(from.clone(), to.clone()))
    }

    /// Both directions pass.
    pub fn clear(&self, a: &NodeId, b: &NodeId) -> bool {
        !self.is_cut(a, b) && !self.is_cut(b, a)
    }

    pub fn conn(&self, a: &NodeId, b: &NodeId) -> Option<&Conn> {
        self.conns.get(&key(a, b))
    }

    pub fn conn_mut(&mut self, a: &NodeId, b: &NodeId) -> Option<&mut Conn> {
        self.conns.get_mut(&key(a, b))
    }

    pub fn conns(&self) -> impl Iterator<Item = &Conn> {
        self.conns.values()
    }

    pub fn open(&mut self, a: (NodeId, Incarnation), b: (NodeId, Incarnation)) -> u64 {
        self.next_conn += 1;
        let (first, second) = if a.0 < b.0 { (a, b) } else { (b, a) };
        let id = self.next_conn;
        self.conns.insert(
            key(&first.0, &second.0),
            Conn {
                id,
                ends: [first, second],
                dirs: Default::default(),
                closing: false,
            },
        );
        id
    }

    pub fn remove(&mut self, a: &NodeId, b: &NodeId, id: u64) -> Option<Conn> {
        let k = key(a, b);
        if self.conns.get(&k).is_some_and(|c| c.id == id) {
            self.conns.remove(&k)
        } else {
            None
        }
    }

    /// Queues a message; returns its delivery if the direction passes now.
    pub fn send(
        &mut self,
        now: Instant,
        latency: Duration,
        from: &NodeId,
        to: &NodeId,
        message: PeerMessage,
    ) -> Option<Delivery> {
        let cut = self.is_cut(from, to);
        let conn = self.conns.get_mut(&key(from, to))?;
        if conn.closing {
            return None;
        }
        let id = conn.id;
        let dir = conn.dir_mut(from);
        if cut {
            dir.held.push(message);
            return None;
        }
        let at = (now + latency).max(dir.last_delivery + Duration::from_micros(1));
        dir.last_delivery = at;
        Some(Delivery {
            at,
            conn: id,
            from: from.clone(),
            to: to.clone(),
            message,
        })
    }

    /// Cuts `from → to`. Returns the connection that now goes silent.
    pub fn cut(&mut self, now: Instant, from: &NodeId, to: &NodeId) -> Option<u64> {
        if !self.cut.insert((from.clone(), to.clone())) {
            return None;
        }
        let conn = self.conns.get_mut(&key(from, to))?;
        let id = conn.id;
        conn.dir_mut(from).silent_since = Some(now);
        Some(id)
    }

    /// Heals `from → to`; returns the held messages, delivered in order.
    pub fn heal(
        &mut self,
        now: Instant,
        latency: Duration,
        from: &NodeId,
        to: &NodeId,
    ) -> Vec<Delivery> {
        if !self.cut.remove(&(from.clone(), to.clone())) {
            return Vec::new();
        }
        let Some(conn) = self.conns.get_mut(&key(from, to)) else {
            return Vec::new();
        };
        let id = conn.id;
        let dir = conn.dir_mut(from);
        dir.silent_since = None;
        let mut out = Vec::new();
        for message in std::mem::take(&mut dir.held) {
            let at = (now + latency).max(dir.last_delivery + Duration::from_micros(1));
            dir.last_delivery = at;
            out.push(Delivery {
                at,
                conn: id,
                from: from.clone(),
                to: to.clone(),
                message,
            });
        }
        out
    }

    /// Every cut direction.
    pub fn cuts(&self) -> Vec<(NodeId, NodeId)> {
        self.cut.iter().cloned().collect()
    }
}
