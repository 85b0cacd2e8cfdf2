//! The owner's half of requests: admits what peers send (within the caps),
//! queues it for the handler, and answers "not the owner" for a shard this
//! node does not hold — at once when its snapshot already says so, and on
//! the callback thread when the allocation turns out to be gone by the
//! time the request's turn comes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;

use super::{locked, Lane, ReplyTo, Responder};
use crate::core::{Epoch, NodeId, Shard, Snapshot};
use crate::runtime::calls::CallQueue;
use crate::wire::request::{ReplyOutcome, Request};
use crate::wire::Frame;

/// Requests admitted and not yet answered.
#[derive(Default)]
struct Counts {
    total: usize,
    per_peer: HashMap<NodeId, usize>,
}

/// One admitted request's place under the caps, given back when it is
/// answered (or its job dropped).
pub(crate) struct Ticket {
    counts: Option<(Arc<Mutex<Counts>>, NodeId)>,
}

impl Ticket {
    /// For a request of this node's own: its client already counts it.
    pub(crate) fn uncounted() -> Ticket {
        Ticket { counts: None }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some((counts, peer)) = self.counts.take() {
            let mut counts = locked(&counts);
            counts.total -= 1;
            if let Some(n) = counts.per_peer.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    counts.per_peer.remove(&peer);
                }
            }
        }
    }
}

/// What the owner's view says about a shard, for a "not the owner" answer.
#[derive(Clone)]
pub(crate) struct View {
    me: NodeId,
    snapshot: Arc<ArcSwap<Snapshot>>,
}

impl View {
    pub(crate) fn new(me: NodeId, snapshot: Arc<ArcSwap<Snapshot>>) -> View {
        View { me, snapshot }
    }

    /// The epoch of this node's allocation of `shard` as the core last
    /// published it: a won conflict raises it before `prolonged` tells the
    /// application (which may wait for the loser's hand-off), and a reply
    /// names the allocation as it stands.
    fn my_epoch(&self, shard: Shard) -> Option<Epoch> {
        self.snapshot
            .load()
            .my_shard()
            .filter(|(mine, _)| *mine == shard)
            .map(|(_, epoch)| epoch)
    }

    /// The owner of `shard` this node sees, other than itself.
    fn owner(&self, shard: Shard) -> Option<(NodeId, Epoch)> {
        let snapshot = self.snapshot.load();
        snapshot
            .owner(shard)
            .filter(|o| o.node != self.me)
            .map(|o| (o.node.clone(), o.epoch))
    }
}

/// A request waiting for its turn on the callback thread. Dropped without
/// running (the node stops, or gave the shard up first), it answers "not
/// the owner": the handler did not run, so the sender may go elsewhere.
pub(crate) struct RequestJob {
    shard: Shard,
    payload: Bytes,
    reply: Option<(ReplyTo, Ticket)>,
    view: View,
    max_payload: usize,
}

impl RequestJob {
    pub(crate) fn new(
        shard: Shard,
        payload: Bytes,
        to: ReplyTo,
        ticket: Ticket,
        view: View,
        max_payload: usize,
    ) -> RequestJob {
        RequestJob {
            shard,
            payload,
            reply: Some((to, ticket)),
            view,
            max_payload,
        }
    }

    /// The shard the request is for.
    pub(crate) fn shard(&self) -> Shard {
        self.shard
    }

    /// The payload and a responder for the handler of the allocation at
    /// `epoch` (or above: raised by a won conflict the application has not
    /// been told of yet).
    pub(crate) fn start(mut self, epoch: Epoch) -> (Vec<u8>, Responder) {
        let epoch = self
            .view
            .my_epoch(self.shard)
            .map_or(epoch, |e| e.max(epoch));
        let (to, ticket) = self.reply.take().expect("a job starts once");
        let payload = std::mem::take(&mut self.payload);
        let responder = Responder::new(to, ticket, self.shard, epoch, self.max_payload);
        (payload.into(), responder)
    }
}

impl Drop for RequestJob {
    fn drop(&mut self) {
        if let Some((to, _ticket)) = self.reply.take() {
            to.send(ReplyOutcome::NotOwner {
                owner: self.view.owner(self.shard),
            });
        }
    }
}

/// Admits requests from peers.
pub(crate) struct Server {
    view: View,
    calls: Arc<CallQueue>,
    counts: Arc<Mutex<Counts>>,
    per_peer_cap: usize,
    total_cap: usize,
    max_payload: usize,
    closing: AtomicBool,
}

impl Server {
    pub(crate) fn new(
        view: View,
        calls: Arc<CallQueue>,
        per_peer_cap: usize,
        total_cap: usize,
        max_payload: usize,
    ) -> Server {
        Server {
            view,
            calls,
            counts: Arc::default(),
            per_peer_cap,
            total_cap,
            max_payload,
            closing: AtomicBool::new(false),
        }
    }

    /// This node is leaving: requests waiting for the handler, and those
    /// that come from now on, are answered "not the owner" while the
    /// connections still carry the answers.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.calls.drop_requests();
    }

    /// A peer's request, from its connection's reader.
    pub(crate) fn incoming(&self, from: &NodeId, lane: &Lane, request: Request) {
        let Request { id, shard, payload } = request;
        let reply = |outcome| lane.push(Frame::Reply(crate::wire::request::Reply { id, outcome }));
        let holds = self.view.snapshot.load().my_shard().map(|(s, _)| s) == Some(shard);
        if !holds || self.closing.load(Ordering::Acquire) {
            return reply(ReplyOutcome::NotOwner {
                owner: self.view.owner(shard),
            });
        }
        let ticket = {
            let mut counts = locked(&self.counts);
            let from_peer = counts.per_peer.get(from).copied().unwrap_or(0);
            if counts.total >= self.total_cap || from_peer >= self.per_peer_cap {
                drop(counts);
                return reply(ReplyOutcome::Overloaded);
            }
            counts.total += 1;
            *counts.per_peer.entry(from.clone()).or_insert(0) += 1;
            Ticket {
                counts: Some((self.counts.clone(), from.clone())),
            }
        };
        let to = ReplyTo::Remote {
            lane: lane.clone(),
            id,
            calls: self.calls.clone(),
        };
        self.calls.submit_request(RequestJob::new(
            shard,
            payload,
            to,
            ticket,
            self.view.clone(),
            self.max_payload,
        ));
    }
}
